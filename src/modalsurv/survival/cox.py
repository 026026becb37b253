"""Cox proportional hazards: the network outputs one log-risk (no bias: the partial
likelihood is invariant to a shift); loss: the partial likelihood with Efron or Breslow
ties (``losses.cox_loss``). After training, a Breslow baseline cumulative hazard is fitted
on the training rows; survival curves are ``exp(-H0(t) exp(eta))``, step functions in t.
Members and late-fused modalities are combined by their mean log-risk (a geometric mean of
hazard ratios)."""

from __future__ import annotations

import math
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
    """``S(t | x) = exp(-H0(t) exp(eta))`` as an ``N x T`` array (step function in t).
    Where ``H0(t) = 0`` (before the first event) S is 1 for every patient, also one whose
    ``exp(eta)`` overflows (there ``inf * 0`` was NaN, and one patient with a far-out
    value, e.g. a unit error, stopped the whole run with "pmf contains NaN")."""
    h0 = step_at(base_time, base_cumhaz, times, before=0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        cum = np.outer(np.exp(np.asarray(log_risk, dtype=np.float64)), h0)
    cum[:, h0 == 0] = 0.0
    return np.exp(-cum)


def baseline_at(fitted: Fitted, t: float) -> float:
    """H0(t) of a fitted Breslow baseline (a step function)."""
    return float(step_at(fitted["breslow/time"], fitted["breslow/cumhaz"], [t], before=0.0)[0])


#: fitted keys: the mixture's mean training log-risk, and each seed member's
CENTRE, MEMBER_CENTRES = "cox/centre", "cox/member_centres"


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
                                self.risk(out, cuts, 0.0, "survival", fitted), times)  # fmt: skip

    def pmf(self, out: np.ndarray, cuts: np.ndarray, fitted: Fitted) -> np.ndarray:
        return pmf_from_survival(self.survival(out, cuts, cuts, fitted))

    def risk(self, out: np.ndarray, cuts: np.ndarray, t_ref: float, score: str,
             fitted: Fitted) -> np.ndarray:  # fmt: skip
        """The log-risk relative to the training rows' mean (``cox/centre``; whatever
        ``score``: the curves are proportional)."""
        return np.asarray(out, dtype=np.float64)[:, 0] - float(fitted.get(CENTRE, 0.0))

    fits_members = True

    def fit_after(self, time: np.ndarray, event: np.ndarray, out: np.ndarray,
                  member_outs: Sequence[np.ndarray] | None = None) -> Fitted:  # fmt: skip
        """The Breslow baseline of the log-risk centred on the training rows.

        Why centre: the partial likelihood cannot see a constant added to a log-risk and the
        head has no bias, so each network (each seed member, each fold's model) lands on its
        own arbitrary offset. Centred, two models' log-risks (and seed members', each on its
        own training mean: ``cox/member_centres``) compare as risks, so their spread is
        disagreement, not offsets; the curves are unchanged (the baseline absorbs the
        centre: ``H0_c = H0 exp(c)``)."""
        raw = np.asarray(out, dtype=np.float64)[:, 0]
        centre = float(raw.mean())
        t, h = breslow(time, event, raw - centre)
        fitted: Fitted = {"breslow/time": t, "breslow/cumhaz": h, CENTRE: np.asarray(centre)}
        if member_outs is not None:
            fitted[MEMBER_CENTRES] = np.array([float(np.asarray(o, dtype=np.float64)[:, 0].mean())
                                               for o in member_outs])  # fmt: skip
        return fitted

    def member_fitted(self, fitted: Fitted, k: int) -> Fitted:
        """Member ``k``'s output is centred on its own training mean (the mixture's
        baseline): member log-risks compare as risks, not as offsets."""
        if MEMBER_CENTRES not in fitted:
            return fitted
        return {**fitted, CENTRE: np.asarray(fitted[MEMBER_CENTRES][k])}

    def member_risks(self, outs: Sequence[np.ndarray], cuts: Sequence[np.ndarray],
                     fitted: Sequence[Fitted], t_ref: float, score: str) -> np.ndarray:  # fmt: skip
        """``M x N``: each member's log-risk (their mean is :meth:`ensemble_risk`: the mean
        log-risk)."""
        return np.stack([self.risk(o, c, t_ref, score, f) for o, c, f in zip(outs, cuts, fitted)])

    def reference_survival(self, risk: np.ndarray, t_ref: float,
                           fitted: Sequence[Fitted]) -> np.ndarray:  # fmt: skip
        """``exp(-H0(t_ref) exp(risk))`` with the members' mean baseline at t_ref."""
        return np.exp(-np.exp(self.reference_log_hazard(risk, t_ref, fitted)))

    def reference_log_hazard(self, risk: np.ndarray, t_ref: float,
                             fitted: Sequence[Fitted]) -> np.ndarray:  # fmt: skip
        """``log H0(t_ref) + risk`` (``-ln S(t_ref)`` in log space: no rounding of S ties
        the highest risks)."""
        h0 = float(np.mean([baseline_at(f, t_ref) for f in fitted]))
        return math.log(max(h0, 1e-12)) + np.asarray(risk, dtype=np.float64)
