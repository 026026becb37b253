"""The numbers the challenge asks for, derived from the fold ensemble so that they rank
patients exactly as the risk score the model was selected on.

Why not the expected time? On a long-tailed 30-bin grid the expected time and the risk
``1 - S(t_ref)`` can rank patients differently (C 0.50 against 0.57 was seen on one
held-out set): a submitted time must order patients as the score that early stopping
and every reported C-index used.

* Task 1, a time in months (the organisers score Harrell's C on minus it):
  - ``train.risk_score: rmst`` — the restricted mean survival time up to the last bin
    edge: exactly minus the risk;
  - ``train.risk_score: survival`` (DeepHit, default) and the Cox head — the median of
    the constant-hazard curve through the ensemble's predicted ``S(t_ref)``:
    ``t_ref · ln 2 / -ln S(t_ref)``, strictly decreasing in the risk ``1 - S(t_ref)``
    (Cox: ``S(t_ref) = exp(-H0(t_ref) · exp(risk))`` with the members' mean baseline).
* Task 3, a likelihood of recurrence in [0, 1] that rises with the risk: ``1 - S(t_ref)``
  (``rmst``: ``1 - RMST / τ``, the share of the horizon expected after recurrence).
  ``direction="time"`` writes the task-1 style time instead (the organisers' published
  task-3 evaluation reads the value as a time: Harrell's C on minus it).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from modalsurv.cohort import Cohort
from modalsurv.train.ensemble import FoldEnsemble

Direction = Literal["risk", "time"]
_LOG_H = 700.0  # |log(-ln S)| beyond this: no finite float time to tell apart


def _survival_at_reference(ensemble: FoldEnsemble, risk: np.ndarray) -> np.ndarray:
    """The ensemble's S(t_ref) as a strictly decreasing function of its risk score."""
    return ensemble.family.reference_survival(risk, ensemble.t_ref,
                                              [m.fitted_ for m in ensemble.members])  # fmt: skip


def _risk(ensemble: FoldEnsemble, cohort: Cohort, risk: np.ndarray | None) -> np.ndarray:
    out = ensemble.predict_risk(cohort) if risk is None else risk
    return np.asarray(out, dtype=np.float64)


def predicted_time(ensemble: FoldEnsemble, cohort: Cohort, risk: np.ndarray | None = None
                   ) -> np.ndarray:  # fmt: skip
    """Months to recurrence, strictly decreasing in ``ensemble.predict_risk`` (see module
    docstring); ``risk``: that prediction when already computed."""
    risk = _risk(ensemble, cohort, risk)
    if ensemble.config.train.risk_score == "rmst" and ensemble.family.discrete:
        return -risk
    # t_ref ln 2 / -ln S(t_ref), from log(-ln S) so that no rounding of S ties the highest
    # (or lowest) risks; the bound keeps the time a finite float (e^±700)
    log_h = ensemble.family.reference_log_hazard(risk, ensemble.t_ref,
                                                 [m.fitted_ for m in ensemble.members])  # fmt: skip
    return float(ensemble.t_ref) * math.log(2.0) * np.exp(-np.clip(log_h, -_LOG_H, _LOG_H))


def recurrence_likelihood(ensemble: FoldEnsemble, cohort: Cohort,
                          risk: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A likelihood in [0, 1] rising with ``ensemble.predict_risk``."""
    risk = _risk(ensemble, cohort, risk)
    if ensemble.config.train.risk_score == "rmst" and ensemble.family.discrete:
        tau = float(ensemble.cuts[-1])
        return np.clip(1.0 + risk / tau, 0.0, 1.0)
    return 1.0 - _survival_at_reference(ensemble, risk)


def challenge_value(ensemble: FoldEnsemble, cohort: Cohort, task: str,
                    direction: Direction = "risk", risk: np.ndarray | None = None
                    ) -> np.ndarray:  # fmt: skip
    """The value each case's output JSON holds (task 1: a time; task 3: see ``direction``)."""
    if direction not in ("risk", "time"):
        raise ValueError(f"direction must be 'risk' or 'time'; found {direction!r}")
    if task == "task1" or direction == "time":
        return predicted_time(ensemble, cohort, risk)
    return recurrence_likelihood(ensemble, cohort, risk)
