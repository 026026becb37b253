"""Cox proportional hazards: the network outputs one log-risk (no bias: the partial
likelihood is invariant to a shift); loss: the partial likelihood with Efron or Breslow
ties (``losses.cox_loss``). After training, a Breslow baseline cumulative hazard is fitted
on the training rows; survival curves are ``exp(-H0(t) exp(eta))``, step functions in t.
Members and late-fused modalities are combined by their mean log-risk (a geometric mean of
hazard ratios)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from modalsurv.survival import losses
from modalsurv.survival.curves import pmf_from_survival, step_at
from modalsurv.survival.family import Fitted, SurvivalFamily, masked_mean, register


def breslow(time: np.ndarray, event: np.ndarray, log_risk: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Breslow baseline cumulative hazard at the distinct event times.

    ``H0(t) = sum_{t_j <= t} d_j / sum_{i: T_i >= t_j} exp(eta_i)``.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    w = np.exp(np.asarray(log_risk, dtype=np.float64))
    uniq = np.unique(time[event])
    order = np.argsort(time)
    t_sorted, w_sorted = time[order], w[order]
    at_risk = np.cumsum(w_sorted[::-1])[::-1]  # sum of w over T_i >= t_sorted[k]
    first = np.searchsorted(t_sorted, uniq, side="left")
    deaths = np.array([np.sum(event & (time == t)) for t in uniq], dtype=np.float64)
    return uniq, np.cumsum(deaths / at_risk[first])


def breslow_survival(base_time: np.ndarray, base_cumhaz: np.ndarray, log_risk: np.ndarray,
                     times: np.ndarray) -> np.ndarray:  # fmt: skip
    """``S(t | x) = exp(-H0(t) exp(eta))`` as an ``N x T`` array (step function in t)."""
    h0 = step_at(base_time, base_cumhaz, times, before=0.0)
    return np.exp(-np.outer(np.exp(np.asarray(log_risk, dtype=np.float64)), h0))


def baseline_at(fitted: Fitted, t: float) -> float:
    """H0(t) of a fitted Breslow baseline (a step function)."""
    return float(step_at(fitted["breslow/time"], fitted["breslow/cumhaz"], [t], before=0.0)[0])


@register
class Cox(SurvivalFamily):
    name = "cox"
    discrete = False
    bias = False
    loss_needs_events = True

    def n_outputs(self, n_bins: int) -> int:
        return 1

    def loss(self, out: Tensor, time: Tensor, event: Tensor, bin_index: Tensor | None,
             **params: Any) -> Tensor:  # fmt: skip
        return losses.cox_loss(out.reshape(-1), time, event, ties=params.get("ties", "efron"))

    def mix(self, outs: Tensor) -> Tensor:
        return outs.mean(dim=0)

    def combine(self, outs: Tensor, present: Tensor) -> Tensor:
        return masked_mean(outs, present)

    def survival(self, out: np.ndarray, cuts: np.ndarray, times: np.ndarray, fitted: Fitted
                 ) -> np.ndarray:  # fmt: skip
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        return breslow_survival(fitted["breslow/time"], fitted["breslow/cumhaz"],
                                np.asarray(out)[:, 0], times)  # fmt: skip

    def pmf(self, out: np.ndarray, cuts: np.ndarray, fitted: Fitted) -> np.ndarray:
        return pmf_from_survival(self.survival(out, cuts, cuts, fitted))

    def risk(self, out: np.ndarray, cuts: np.ndarray, t_ref: float, score: str,
             fitted: Fitted) -> np.ndarray:  # fmt: skip
        """The log-risk itself (whatever ``score``: the curves are proportional)."""
        return np.asarray(out, dtype=np.float64)[:, 0]

    def fit_after(self, time: np.ndarray, event: np.ndarray, out: np.ndarray) -> Fitted:
        t, h = breslow(time, event, np.asarray(out)[:, 0])
        return {"breslow/time": t, "breslow/cumhaz": h}

    def member_risks(self, outs: Sequence[np.ndarray], cuts: Sequence[np.ndarray],
                     fitted: Sequence[Fitted], t_ref: float, score: str) -> np.ndarray:  # fmt: skip
        """``M x N``: each member's log-risk (their mean is :meth:`ensemble_risk`: the mean
        log-risk)."""
        return np.stack([self.risk(o, c, t_ref, score, f) for o, c, f in zip(outs, cuts, fitted)])

    def reference_survival(self, risk: np.ndarray, t_ref: float,
                           fitted: Sequence[Fitted]) -> np.ndarray:  # fmt: skip
        """``exp(-H0(t_ref) exp(risk))`` with the members' mean baseline at t_ref."""
        h0 = float(np.mean([baseline_at(f, t_ref) for f in fitted]))
        return np.exp(-max(h0, 1e-12) * np.exp(np.asarray(risk, dtype=np.float64)))
