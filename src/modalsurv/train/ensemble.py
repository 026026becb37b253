"""FoldEnsemble: the fold models of a cross-validation run as one predictor.

Each member keeps its own preprocessors and time bins (fitted on its own training part),
so members' bin grids differ. The ensemble is the equal-weight *mixture* of the members'
predicted distributions: ``S(t) = mean_k S_k(t)``. When all members share one grid this
is exactly the average of their PMFs; in general the ensemble PMF is reported on the
element-wise mean of the members' cuts, derived from the averaged survival curves.

* risk: DeepHit members: ``1 - S(t_ref)`` of the mixture with ``t_ref`` the median of the
  members' reference times, or (``train.risk_score="rmst"``) minus the mixture's
  restricted mean survival time up to the mean last cut (the mean of the members' RMSTs
  at that time, exact for a mixture); Cox members: the mean log-risk.
* expected time: the mean of the members' expected times (exact for a mixture).

A saved bundle is plain data: ``model_k.safetensors``, ``state_k.json`` / ``state_k.npz``
per member and ``bundle.json`` (members, resolved config, library versions). Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.survival import curves
from modalsurv.train.estimator import (
    ModalSurv,
    library_versions,
    pmf_from_survival,
    read_state,
    write_state,
)
from modalsurv.utils import atomic_write_text


class FoldEnsemble:
    """Several fitted :class:`ModalSurv` models predicting as one."""

    def __init__(self, members: Sequence[ModalSurv]) -> None:
        if not members:
            raise ValueError("a FoldEnsemble needs at least one fitted model")
        heads = {m.head for m in members}
        if len(heads) != 1:
            raise ValueError(f"ensemble members must share one head; found {sorted(heads)}")
        self.members = list(members)
        self.config = self.members[0].config

    @property
    def head(self) -> str:
        return self.members[0].head

    @property
    def cuts(self) -> np.ndarray:
        """Element-wise mean of the members' cuts (monotone, as each member's is)."""
        return np.mean([m.cuts for m in self.members], axis=0)

    @property
    def t_ref(self) -> float:
        return float(np.median([m.t_ref for m in self.members]))

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``N x T`` mixture survival: the mean of the members' curves at ``times``."""
        return np.mean([m.predict_survival(cohort, times) for m in self.members], axis=0)

    def predict_pmf(self, cohort: Cohort) -> np.ndarray:
        """``N x (K+1)`` PMF on :attr:`cuts` from the mixture survival."""
        return pmf_from_survival(self.predict_survival(cohort, self.cuts))

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Mixture ``1 - S(t_ref)`` or ``-RMST`` (DeepHit) or mean log-risk (Cox)."""
        if self.head == "cox":
            return np.mean([m.predict_risk(cohort) for m in self.members], axis=0)
        if self.config.train.risk_score == "rmst":
            tau = float(self.cuts[-1])
            return -np.mean([curves.rmst(m.predict_pmf(cohort), m.cuts, tau)
                             for m in self.members], axis=0)  # fmt: skip
        return 1.0 - self.predict_survival(cohort, np.array([self.t_ref]))[:, 0]

    def predict_expected_time(self, cohort: Cohort) -> np.ndarray:
        return np.mean([m.predict_expected_time(cohort) for m in self.members], axis=0)

    def gate_weights(self, cohort: Cohort) -> pd.DataFrame:
        """Mean of the members' per-patient modality weights."""
        frames = [m.gate_weights(cohort) for m in self.members]
        return sum(frames[1:], frames[0]) / len(frames)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write one model/state triple per member, then ``bundle.json`` (last)."""
        directory = Path(directory)
        for k, member in enumerate(self.members):
            write_state(directory, f"model_{k}", f"state_{k}", *member.export_state())
        bundle = {
            "format": 1,
            "kind": "FoldEnsemble",
            "n_members": len(self.members),
            "head": self.head,
            "config": self.config.model_dump(mode="json"),
            "versions": library_versions(),
        }
        atomic_write_text(directory / "bundle.json", json.dumps(bundle, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FoldEnsemble:
        directory = Path(directory)
        path = directory / "bundle.json"
        if not path.exists():
            raise FileNotFoundError(f"no ensemble bundle {path}")
        bundle = json.loads(path.read_text(encoding="utf-8"))
        if bundle.get("kind") != "FoldEnsemble":
            raise ValueError(f"{path} does not describe a FoldEnsemble")
        members = [
            ModalSurv.from_state(*read_state(directory, f"model_{k}", f"state_{k}"))
            for k in range(int(bundle["n_members"]))
        ]
        return cls(members)
