"""From a discrete-time PMF to survival curves, risk scores and expected times.

Layout (see ``bins.TimeBins``): ``pmf`` is ``N x (K+1)``: mass in bin k = ``(cuts[k],
cuts[k+1]]`` for k < K, and in column K the mass beyond the last cut. ``cuts`` has K+1
entries with ``cuts[0] = 0``. Between cut points the curve is either piecewise linear
("linear": constant density inside a bin, the default) or a right-continuous step ("step":
S(t) = S(cuts[k]) for ``cuts[k] <= t < cuts[k+1]``). Past the last cut the last value is held:
the model says nothing about when the mass beyond the last cut falls.

Functions accept numpy arrays; :func:`pmf_from_logits` and :func:`survival_from_pmf` also keep
torch tensors as tensors (so they can sit inside a training graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "cumulative_hazard_at",
    "expected_time",
    "pmf_from_logits",
    "pmf_from_survival",
    "risk_at",
    "rmst",
    "step_at",
    "survival_at",
    "survival_from_pmf",
]


def pmf_from_logits(logits: Any) -> Any:
    """``softmax([logits, 0])``: B x K logits -> B x (K+1) PMF (pycox ``pad_col`` convention)."""
    if isinstance(logits, torch.Tensor):
        padded = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
        return torch.softmax(padded, dim=1)
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits: expected a 2-d array (N x K), got shape {x.shape}")
    padded = np.concatenate([x, np.zeros((x.shape[0], 1))], axis=1)
    padded -= padded.max(axis=1, keepdims=True)
    ex = np.exp(padded)
    return ex / ex.sum(axis=1, keepdims=True)


def step_at(grid: Any, values: Any, times: Any, before: float) -> np.ndarray:
    """A right-continuous step function given at ``grid`` (``values[..., j]`` from
    ``grid[j]`` on; ``before`` left of ``grid[0]``) evaluated at ``times``: the one step
    evaluator for Breslow baselines and scikit-survival's curves."""
    g = np.asarray(grid, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    pos = np.searchsorted(g, check_times(times), side="right") - 1
    if not len(g):
        return np.full((*v.shape[:-1], len(pos)), float(before))
    out = v[..., np.clip(pos, 0, None)]
    out[..., pos < 0] = before
    return out


def pmf_from_survival(surv_at_cuts: Any) -> np.ndarray:
    """PMF over the bins (plus the mass beyond the last cut) from ``S`` at cuts[0..K]
    (N x (K+1)): the inverse of :func:`survival_from_pmf`, clipped at 0 for curves that
    are not exactly monotone."""
    s = np.asarray(surv_at_cuts, dtype=np.float64)
    pmf = np.concatenate([s[:, :-1] - s[:, 1:], s[:, -1:]], axis=1)
    return np.clip(pmf, 0.0, None)


def survival_from_pmf(pmf: Any) -> Any:
    """S at cuts[0..K]: ``S[:, 0] = 1``, ``S[:, k] = 1 - sum(pmf[:, :k])`` (N x (K+1)).

    Computed as a reverse cumulative sum of the mass still to come, so it is exactly
    non-increasing, never negative and ``S[:, K]`` is the mass beyond the last cut. The
    numpy result is capped at 1: a softmax's mass sums to 1 only up to rounding, and a
    survival probability of 1.0000000000000004 at t = 0 reached the written predictions.
    """
    if isinstance(pmf, torch.Tensor):
        return pmf.flip(1).cumsum(1).flip(1)
    p = _as_pmf(pmf)
    return np.minimum(np.cumsum(p[:, ::-1], axis=1)[:, ::-1], 1.0)


def _as_pmf(pmf: Any) -> np.ndarray:
    p = np.asarray(pmf.detach().cpu().numpy() if isinstance(pmf, torch.Tensor) else pmf,
                   dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"pmf: expected an N x (K+1) array with K >= 1, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("pmf: contains NaN or inf")
    return p


def _as_cuts(cuts: Any, k1: int) -> np.ndarray:
    c = np.asarray(cuts, dtype=np.float64).reshape(-1)
    if c.size != k1:
        raise ValueError(f"cuts: expected {k1} values (one more than the number of bins), "
                         f"got {c.size}")
    if c[0] != 0 or not np.isfinite(c).all() or (np.diff(c) <= 0).any():
        raise ValueError("cuts: must start at 0 and increase strictly")
    return c


def check_times(times: Any, name: str = "times") -> np.ndarray:
    """``times`` as a 1-d float array; NaN, inf or a negative time is refused by index
    (every prediction at user-given times goes through here, whatever the head)."""
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a scalar or 1-d array, got shape {t.shape}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {float(t[i])!r}: times must be finite and >= 0")
    return t


def survival_at(pmf: Any, cuts: Any, times: Any, interpolation: str = "linear") -> np.ndarray:
    """S(t) for each patient and each of ``times``: N x T."""
    p = _as_pmf(pmf)
    c = _as_cuts(cuts, p.shape[1])
    t = check_times(times)
    s = survival_from_pmf(p)
    last = c.size - 1
    k = np.clip(np.searchsorted(c, t, side="right") - 1, 0, last)
    if interpolation == "step":
        return s[:, k]
    if interpolation != "linear":
        raise ValueError(f"interpolation = {interpolation!r}: use 'linear' or 'step'")
    k0 = np.minimum(k, last - 1)
    frac = np.clip((t - c[k0]) / (c[k0 + 1] - c[k0]), 0.0, 1.0)
    return s[:, k0] + (s[:, k0 + 1] - s[:, k0]) * frac


def cumulative_hazard_at(pmf: Any, cuts: Any, times: Any, interpolation: str = "linear",
                         eps: float = 1e-12) -> np.ndarray:
    """``-log S(t)``, with S clipped to ``[eps, 1]`` so a curve reaching 0 stays finite."""
    return -np.log(np.clip(survival_at(pmf, cuts, times, interpolation), eps, 1.0))


def risk_at(pmf: Any, cuts: Any, t_ref: float) -> np.ndarray:
    """The project's risk score for concordance: ``1 - S(t_ref)`` (linear interpolation)."""
    return 1.0 - survival_at(pmf, cuts, [t_ref])[:, 0]


RISK_SCORES = ("survival", "rmst")


def risk_score(pmf: Any, cuts: Any, t_ref: float, kind: str = "survival") -> np.ndarray:
    """Higher = worse: ``"survival"``: ``1 - S(t_ref)``; ``"rmst"``: ``-RMST(cuts[-1])``,
    minus the area under the linearly interpolated curve over the whole bin grid.

    Why both: one time point ranks patients by their early (or late) risk only, while the
    restricted mean uses the whole predicted curve. It is restricted at the grid's end,
    so mass beyond the last cut counts as surviving to it and a long tail cannot reverse
    rankings the way an unrestricted expected time can.
    """
    if kind == "survival":
        return risk_at(pmf, cuts, t_ref)
    if kind == "rmst":
        c = np.asarray(cuts, dtype=np.float64).reshape(-1)
        return -rmst(pmf, c, float(c[-1]))
    raise ValueError(f"risk score {kind!r}: use one of {RISK_SCORES}")


def rmst(pmf: Any, cuts: Any, tau: float) -> np.ndarray:
    """Restricted mean survival time: area under the linear-interpolated S from 0 to ``tau``.

    Past the last cut S is held at its last value, so for ``tau > cuts[-1]`` the area keeps
    growing at rate ``S(cuts[-1])``.
    """
    p = _as_pmf(pmf)
    c = _as_cuts(cuts, p.shape[1])
    tau = float(check_times(tau, "tau")[0])
    s = survival_from_pmf(p)
    width = np.diff(c)
    seg = np.clip(tau - c[:-1], 0.0, width)  # portion of each bin below tau
    # area of a trapezoid cut at tau: S_k * x - (S_k - S_{k+1}) * x^2 / (2 w)
    area = s[:, :-1] * seg - (s[:, :-1] - s[:, 1:]) * seg**2 / (2 * width)
    total = area.sum(axis=1)
    if tau > c[-1]:
        total += s[:, -1] * (tau - c[-1])
    return total


def expected_time(pmf: Any, cuts: Any) -> np.ndarray:
    """Mean time with the mass beyond the last cut placed at the last cut.

    Equal to ``rmst(pmf, cuts, cuts[-1])``: a restricted mean, hence a lower bound of the
    true mean whenever mass lies beyond the last cut. Within a bin the mass sits at the bin
    midpoint (constant density, as in the linear curve).
    """
    p = _as_pmf(pmf)
    c = _as_cuts(cuts, p.shape[1])
    mid = 0.5 * (c[:-1] + c[1:])
    return p[:, :-1] @ mid + p[:, -1] * c[-1]
