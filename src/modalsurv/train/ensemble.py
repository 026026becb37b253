"""FoldEnsemble: the fold models of a cross-validation run as one predictor.

Each member keeps its own preprocessors and time bins (fitted on its own training part),
so members' bin grids differ. The ensemble is the equal-weight *mixture* of the members'
predicted distributions: ``S(t) = mean_k S_k(t)``. When all members share one grid this
is exactly the average of their PMFs; in general the ensemble PMF is reported on the
element-wise mean of the members' cuts, derived from the averaged survival curves.

* risk: the family's ``ensemble_risk`` (``survival.family``): for DeepHit and logistic
  hazard ``1 - S(t_ref)`` of the mixture with ``t_ref`` the median of the members'
  reference times, or (``train.risk_score="rmst"``) minus the mixture's restricted mean
  survival time up to the mean last cut (the mean of the members' RMSTs at that time,
  exact for a mixture); for Cox the mean log-risk.
* expected time: the mixture's restricted mean survival time up to the mean last cut
  (:attr:`FoldEnsemble.cuts`), i.e. the mean of the members' RMSTs at that one horizon:
  the area under :meth:`FoldEnsemble.predict_survival` for the discrete heads (DeepHit,
  logistic hazard; a Cox curve is a step function inside each bin, which the RMST reads
  as linear: ~2 % longer), and minus the ``rmst`` risk. (The
  mean of the members' expected times, each restricted at its own last cut, is the
  expected time of no curve when the folds' last cuts differ, as they do when one fold
  held out the longest follow-up.)
* per-member predictions (:meth:`FoldEnsemble.predict_member_risk` / ``_survival``): every
  network of every fold (folds × ``train.n_init`` seeds), on the scale of the ensemble's
  own risk (``family.member_risks``); their spread is a per-patient uncertainty
  (``train.members``).

A saved bundle is plain data: ``model_k.safetensors``, ``state_k.json`` / ``state_k.npz``
per member and ``bundle.json`` (members, resolved config, library versions, and the
SHA-256 of every member file). Loading never unpickles anything, and verifies each file's
hash, so swapped or edited member files are refused by name instead of loading silently
(bundles saved before hashes existed still load).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.errors import FeatureError
from modalsurv.survival.curves import pmf_from_survival, rmst
from modalsurv.survival.family import SurvivalFamily
from modalsurv.train.estimator import ModalSurv, library_versions, rebuild, write_state
from modalsurv.utils import atomic_write_text


class FoldEnsemble:
    """Several fitted :class:`ModalSurv` models predicting as one."""

    def __init__(self, members: Sequence[ModalSurv]) -> None:
        if not members:
            raise ValueError("a FoldEnsemble needs at least one fitted model")
        heads = {m.head for m in members}
        if len(heads) != 1:
            raise ValueError(f"ensemble members must share one head; found {sorted(heads)}")
        _check_alike(members)
        self.members = list(members)
        # the resolved config ("auto" values settled) in both cases: a freshly fitted member
        # keeps the requested one beside it, a loaded member only has the resolved one, so a
        # resumed run would otherwise write another bundle.json than an uninterrupted one
        first = self.members[0]
        self.config = getattr(first, "fitted_config_", None) or first.config

    @property
    def head(self) -> str:
        return self.members[0].head

    @property
    def family(self) -> SurvivalFamily:
        return self.members[0].family

    @property
    def cuts(self) -> np.ndarray:
        """Element-wise mean of the members' cuts (monotone, as each member's is)."""
        return np.mean([m.cuts for m in self.members], axis=0)

    @property
    def t_ref(self) -> float:
        return float(np.median([m.t_ref_ for m in self.members]))

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``N x T`` mixture survival: the mean of the members' curves at ``times``."""
        return np.mean([m.predict_survival(cohort, times) for m in self.members], axis=0)

    def predict_pmf(self, cohort: Cohort) -> np.ndarray:
        """``N x (K+1)`` PMF on :attr:`cuts` from the mixture survival."""
        return pmf_from_survival(self.predict_survival(cohort, self.cuts))

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """The family's risk of the members (module docstring)."""
        outs = [m.predict_outputs(cohort) for m in self.members]
        return self.family.ensemble_risk(outs, [m.cuts for m in self.members],
                                         [m.fitted_ for m in self.members], self.t_ref,
                                         self.config.train.risk_score)  # fmt: skip

    def predict_expected_time(self, cohort: Cohort) -> np.ndarray:
        """The mixture's RMST up to the mean last cut (module docstring): one horizon for
        every member, so it is the area under :meth:`predict_survival` (discrete heads;
        Cox: see the module docstring)."""
        tau = float(self.cuts[-1])
        return np.mean([rmst(m.predict_pmf(cohort), m.cuts, tau) for m in self.members], axis=0)

    @property
    def n_members(self) -> int:
        """Networks in the ensemble: folds × seed members (a stacked fold model counts its
        inner models: ``StackedSurv.n_members``)."""
        return sum(getattr(m, "n_members", m.config.train.n_init) for m in self.members)

    def predict_member_risk(self, cohort: Cohort) -> np.ndarray:
        """``M x N`` risks of every network (fold × seed member) on the scale of
        :meth:`predict_risk`, of which they are the mean (up to the clamping of mixed
        seed members' logits)."""
        outs, cuts, fitted = [], [], []
        for m in self.members:
            own = list(m.predict_member_outputs(cohort))
            outs += own
            cuts += [m.cuts] * len(own)
            fitted += m.members_fitted(len(own))
        return self.family.member_risks(outs, cuts, fitted, self.t_ref,
                                        self.config.train.risk_score)  # fmt: skip

    def predict_member_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``M x N x T`` survival of every network (fold × seed member) at ``times``."""
        return np.concatenate([m.predict_member_survival(cohort, times) for m in self.members])

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
            "sha256": {name: sha256_file(directory / name)
                       for k in range(len(self.members)) for name in member_files(k)},
        }  # fmt: skip
        atomic_write_text(directory / "bundle.json", json.dumps(bundle, indent=1))
        for k in _member_indices(directory):  # an earlier, larger ensemble's members
            if k >= len(self.members):
                for name in member_files(k):
                    (directory / name).unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FoldEnsemble:
        directory = Path(directory)
        n = _check_bundle(directory)
        members = [rebuild(directory, f"model_{k}", f"state_{k}") for k in range(n)]
        try:
            return cls(members)
        except ValueError as err:  # members of other runs (a bundle saved without hashes)
            raise FeatureError(str(err), path=directory / "bundle.json") from None


def _settings(model: ModalSurv) -> dict[str, Any]:
    """What fold models must share to be averaged: the kind of model, the number of time
    bins (:attr:`FoldEnsemble.cuts` averages the members' cuts element-wise), the risk
    score (the ensemble reads every member with the first one's) and the modalities."""
    config = getattr(model, "fitted_config_", None) or model.config
    return {"kind": type(model).__name__, "time bins (model.n_bins)": len(model.cuts) - 1,
            "train.risk_score": config.train.risk_score,
            "modalities": getattr(model, "modalities_", None)}  # fmt: skip


def _check_alike(members: Sequence[ModalSurv]) -> None:
    """Refuse, naming the member and the setting, fold models that cannot be averaged:
    models of another kind or settings gave an unrelated numpy error (another bin count)
    or a silently wrong ensemble (another risk score was read with the first's)."""
    first = _settings(members[0])
    for k, member in enumerate(members[1:], start=1):
        for what, value in _settings(member).items():
            if value != first[what]:
                raise ValueError(f"ensemble member {k} differs from member 0 in its {what}:"
                                 f" {value!r}, not {first[what]!r}; a FoldEnsemble averages"
                                 " the fold models of one run")  # fmt: skip


def member_files(k: int) -> tuple[str, str, str]:
    """The files of ensemble member ``k``."""
    return f"model_{k}.safetensors", f"state_{k}.json", f"state_{k}.npz"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _member_indices(directory: Path) -> list[int]:
    """The member numbers whose ``state_k.json`` lie in ``directory``, sorted."""
    return sorted(int(p.stem.split("_")[1]) for p in directory.glob("state_*.json")
                  if p.stem.split("_")[1].isdigit())  # fmt: skip


def _check_bundle(directory: Path) -> int:
    """Read bundle.json, check the member count and every recorded hash; the member count.

    Each failure is a FeatureError naming the file at fault."""
    path = directory / "bundle.json"
    if not path.is_file():
        raise FeatureError("no ensemble bundle (bundle.json) in this folder", path=path)
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        n = int(bundle["n_members"])
        kind = bundle.get("kind")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FeatureError(f"cannot read the ensemble bundle: {err}", path=path) from None
    if kind != "FoldEnsemble":
        raise FeatureError(f"does not describe a FoldEnsemble (kind {kind!r})", path=path)
    saved = _member_indices(directory)
    if n < 1 or saved != list(range(n)):
        raise FeatureError(f"bundle.json says {n} members but the folder holds {len(saved)}"
                           f" members' files ({saved}); was bundle.json edited?",
                           path=path)  # fmt: skip
    hashes = bundle.get("sha256")
    if hashes is None:  # saved before hashes were recorded
        return n
    expected = {name for k in range(n) for name in member_files(k)}
    if set(hashes) != expected:
        raise FeatureError(f"bundle.json lists {n} members but records the hashes of"
                           f" {sorted(hashes)}; was it edited?", path=path)  # fmt: skip
    for name in sorted(expected):
        file = directory / name
        if not file.is_file():
            raise FeatureError("member file is missing", path=file)
        if sha256_file(file) != hashes[name]:
            raise FeatureError("SHA-256 differs from the one bundle.json recorded when the"
                               " model was saved: the file was changed, truncated or swapped",
                               path=file)  # fmt: skip
    return n
