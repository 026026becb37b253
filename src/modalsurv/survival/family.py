"""Survival model families: what a network's output means, and everything computed from it.

A family owns, for one kind of output layer, its loss, its risk score, its PMF and
survival curve, how seed-ensemble members and late-fused modalities are combined in
output space, what is fitted after training (Cox: the Breslow baseline) and how fold
members are combined into one risk. The trainer, the estimator, the fold ensemble and the
network call the family instead of branching on the head's name, so a new family is one
module plus one line in :data:`FAMILIES` (see ``deephit.py``, ``cox.py``,
``logistic_hazard.py``).

Families take plain tensors (training) and numpy arrays (prediction): ``survival/`` still
imports nothing above it.

Conventions: ``out`` is the network output, ``B x n_outputs``; ``cuts`` the time-bin edges
(K+1 values from 0, ``bins.TimeBins``); ``fitted`` what :meth:`fit_after` returned (plain
arrays, saved with the model); ``score`` the risk score (``train.risk_score``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from modalsurv.survival import curves

Fitted = dict[str, np.ndarray]


def masked_mean(z: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``z`` (B×M×K) over the ``True`` slots of ``mask`` (B×M); zeros if none."""
    zeroed = z.masked_fill(~mask.unsqueeze(-1), 0.0)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
    return zeroed.sum(dim=1) / count


class SurvivalFamily:
    """Base class (see module docstring). Subclasses set the class attributes and the
    methods that differ; the defaults are those of a discrete-time family whose output
    maps to a PMF over the bins plus the mass beyond the last cut."""

    name: ClassVar[str]
    discrete: ClassVar[bool] = True  # the loss needs time-bin indices
    bias: ClassVar[bool] = True  # the output layer has a bias
    loss_needs_events: ClassVar[bool] = False  # undefined on a batch without events

    # ------------------------------------------------------------------ network side
    def n_outputs(self, n_bins: int) -> int:
        return int(n_bins)

    def loss(self, out: Tensor, time: Tensor, event: Tensor, bin_index: Tensor | None,
             **params: Any) -> Tensor:  # fmt: skip
        raise NotImplementedError

    def mix(self, outs: Tensor) -> Tensor:
        """M×B×K outputs of seed-ensemble members → the B×K output of their mixture."""
        raise NotImplementedError

    def combine(self, outs: Tensor, present: Tensor) -> Tensor:
        """B×M×K per-modality outputs (late fusion) + B×M presence → B×K."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prediction side
    def pmf(self, out: np.ndarray, cuts: np.ndarray, fitted: Fitted) -> np.ndarray:
        """``N x (K+1)``: the K bins plus the mass beyond the last cut."""
        raise NotImplementedError

    def survival(self, out: np.ndarray, cuts: np.ndarray, times: np.ndarray, fitted: Fitted
                 ) -> np.ndarray:  # fmt: skip
        """``N x T`` survival at ``times`` (linear between cuts for discrete families)."""
        return np.asarray(curves.survival_at(self.pmf(out, cuts, fitted), cuts, times,
                                             interpolation="linear"), dtype=np.float64)  # fmt: skip

    def risk(self, out: np.ndarray, cuts: np.ndarray, t_ref: float, score: str,
             fitted: Fitted) -> np.ndarray:  # fmt: skip
        """Higher = worse: :func:`curves.risk_score` of the PMF (``1 - S(t_ref)`` or
        ``-RMST``)."""
        pmf = self.pmf(out, cuts, fitted)
        return np.asarray(curves.risk_score(pmf, cuts, t_ref, score), dtype=np.float64).reshape(-1)

    #: whether :meth:`fit_after` uses each seed member's own output (one more pass)
    fits_members: bool = False

    def fit_after(self, time: np.ndarray, event: np.ndarray, out: np.ndarray,
                  member_outs: Sequence[np.ndarray] | None = None) -> Fitted:  # fmt: skip
        """What is fitted on the training rows after the network (nothing by default);
        ``out`` is the seed members' mixture, ``member_outs`` each member's own output."""
        return {}

    def member_fitted(self, fitted: Fitted, k: int) -> Fitted:
        """What seed member ``k``'s own output is read with (by default the model's)."""
        return fitted

    # ------------------------------------------------------------------ fold ensembles
    def ensemble_risk(self, outs: Sequence[np.ndarray], cuts: Sequence[np.ndarray],
                      fitted: Sequence[Fitted], t_ref: float, score: str) -> np.ndarray:  # fmt: skip
        """One risk for equal-weight fold members (each with its own bins): the mean of
        :meth:`member_risks` (``1 - S(t_ref)`` of the mixture of their curves; minus the
        mean of their RMSTs up to the mean last cut, exact for a mixture; Cox: the mean
        log-risk)."""
        return self.member_risks(outs, cuts, fitted, t_ref, score).mean(axis=0)

    def member_risks(self, outs: Sequence[np.ndarray], cuts: Sequence[np.ndarray],
                     fitted: Sequence[Fitted], t_ref: float, score: str) -> np.ndarray:  # fmt: skip
        """``M x N``: each member's own risk on the scale of :meth:`ensemble_risk`, whose
        mean over equal-weight members it is: ``1 - S_m(t_ref)`` (the mixture's survival
        is the members' mean), or (``rmst``) minus each member's RMST up to the mean last
        cut. Why: the spread of these over the members is a per-patient uncertainty."""
        if score == "rmst":
            tau = float(np.mean([c[-1] for c in cuts]))
            return -np.stack([curves.rmst(self.pmf(o, c, f), c, tau)
                              for o, c, f in zip(outs, cuts, fitted)]).reshape(len(outs), -1)  # fmt: skip
        return 1.0 - np.stack([self.survival(o, c, np.array([t_ref]), f)[:, 0]
                               for o, c, f in zip(outs, cuts, fitted)])  # fmt: skip

    def reference_survival(self, risk: np.ndarray, t_ref: float,
                           fitted: Sequence[Fitted]) -> np.ndarray:  # fmt: skip
        """S(t_ref) as a strictly decreasing function of the ``survival`` risk score (what
        a challenge answer is derived from): ``1 - risk``."""
        return 1.0 - np.asarray(risk, dtype=np.float64)

    def reference_log_hazard(self, risk: np.ndarray, t_ref: float,
                             fitted: Sequence[Fitted]) -> np.ndarray:  # fmt: skip
        """``log(-ln S(t_ref))``, strictly increasing in the risk, computed without forming
        S (which rounds to 0 or 1 for extreme risks and would tie them): here
        ``log(-log1p(-risk))`` with the risk ``1 - S(t_ref)`` kept in [0, 1]."""
        r = np.clip(np.asarray(risk, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            return np.log(-np.log1p(-r))

    def monitor(self, prefer: str, has_events: bool, has_pair: bool, validation: bool) -> str:
        """The early-stopping criterion: the validation C-index when a pair is comparable
        (or the loss when preferred and defined), else a loss that is defined."""
        if not validation:
            return "train_loss"
        loss_ok = has_events or not self.loss_needs_events
        if prefer == "loss" and loss_ok:
            return "val_loss"
        if has_pair:
            return "val_cindex"
        # a discrete likelihood is defined without events; Cox's partial likelihood needs one
        return "val_loss" if loss_ok else "train_loss"


FAMILIES: dict[str, type[SurvivalFamily]] = {}


def register(cls: type[SurvivalFamily]) -> type[SurvivalFamily]:
    """Class decorator: add a family to :data:`FAMILIES` under its ``name``."""
    FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> SurvivalFamily:
    """The family registered as ``name`` (``model.head``); a ValueError lists the known."""
    from modalsurv.survival import cox, deephit, logistic_hazard  # noqa: F401  (registration)

    try:
        return FAMILIES[name]()
    except KeyError:
        raise ValueError(f"unknown survival family {name!r}; known: {sorted(FAMILIES)}") from None


def family_names() -> list[str]:
    """Every registered family name (``model.head`` values)."""
    from modalsurv.survival import cox, deephit, logistic_hazard  # noqa: F401

    return sorted(FAMILIES)
