"""The candidates of the stacked default: each fitted on the inner folds of the training
part, with its out-of-fold risks and its inner models' risks on new patients.

Why a module of its own: ``train.stacking`` (steps 1 and 2 of its protocol) only needs
of a candidate that it fits on the inner folds, gives every training row the risk of an
inner model that did not train on it (:meth:`Candidate.oof`), predicts with every inner
model (:meth:`Candidate.model_risks`) and saves and restores itself. A network candidate
(:class:`NeuralCandidate`) is a ModalSurv seed ensemble whose members rotate over the
inner folds, so its out-of-fold risks come free; a classical peer (Coxnet, RSF, ridge
Cox on the clinical variables) subclasses :class:`PerFoldCandidate` and writes only its
one-fold fit, storage and prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig
from modalsurv.errors import DataError
from modalsurv.train.baselines import (
    RSF_LEAF,
    RSF_TREES,
    FeatureMatrix,
    fit_ridge_cox,
    linear_predictor,
    select_coxnet,
)
from modalsurv.train.estimator import ModalSurv, inner_split, member_splits
from modalsurv.train.forest import ARRAYS as FOREST_ARRAYS
from modalsurv.train.forest import FlatForest, grow_forest
from modalsurv.utils import Progress

#: every name ``model.stack`` may list
CANDIDATES = ("modalsurv", "modalsurv_clinical", "modalsurv_cox", "coxph_clinical", "coxnet",
              "rsf")
#: the default stack
DEFAULT_STACK = ("modalsurv", "modalsurv_cox", "modalsurv_clinical", "coxph_clinical", "coxnet",
                 "rsf")


def n_inner_folds(config: RunConfig) -> int:
    """The inner folds of the stack: ``round(1 / train.val_fraction)`` (5 by default)."""
    return int(max(2, round(1.0 / config.train.val_fraction)))


def stack_names(config: RunConfig) -> list[str]:
    """The candidates ``model.stack`` asks for ([] for ``none``)."""
    stack = config.model.stack
    return [] if stack in (None, "none") else list(stack)


# ---------------------------------------------------------------------- candidates
class Candidate:
    """One model of the stack: fitted on the training part, with out-of-fold risks."""

    name: str
    kind: str

    def fit(self, train: Cohort, features: FeatureMatrix | None,
            splits: list[tuple[np.ndarray, np.ndarray]], seed: int,
            progress: Progress | None) -> None:  # fmt: skip
        raise NotImplementedError

    def oof(self, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per inner model: (training rows it did not train on, its risks there)."""
        raise NotImplementedError

    def model_risks(self, cohort: Cohort) -> np.ndarray:
        """``J x N``: every inner model's risk on ``cohort``."""
        raise NotImplementedError

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        raise NotImplementedError


class NeuralCandidate(Candidate):
    """A ModalSurv seed ensemble (the run's config, restricted or with another head)."""

    kind = "neural"

    def __init__(self, name: str, config: RunConfig,
                 model: ModalSurv | None = None) -> None:  # fmt: skip
        self.name, self.config, self.model = name, config, model
        self.val_rows: list[np.ndarray] = []

    def fit(self, train: Cohort, features: FeatureMatrix | None,
            splits: list[tuple[np.ndarray, np.ndarray]], seed: int,
            progress: Progress | None) -> None:  # fmt: skip
        cfg = self.config.model_copy(deep=True)
        cfg.seed = seed
        self.config = cfg
        self.model = ModalSurv(cfg).fit(train, progress=progress)
        tc = cfg.train
        if tc.member_splits == "rotate" and tc.n_init > 1:
            parts = member_splits(train.event, tc.val_fraction, seed, tc.n_init)
            self.val_rows = [va for _, va in parts]
        else:  # every member validates on the one inner split
            va = inner_split(train.event, tc.val_fraction, seed)[1]
            self.val_rows = [va] * tc.n_init

    def oof(self, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self.model is not None and self.model.fit_results_, "fit the candidate first"
        results = self.model.fit_results_
        best = [r.best_epoch for r in results]
        out = []
        for k, (rows, res) in enumerate(zip(self.val_rows, results)):
            if not res.val_risks:
                raise DataError(f"stack candidate {self.name}: member {k} kept no validation"
                                " risks", field="model.stack")  # fmt: skip
            epoch = best[k]
            if mode == "cross" and len(best) > 1:
                epoch = round(float(np.median([b for j, b in enumerate(best) if j != k])))
            epoch = min(max(epoch, 0), len(res.val_risks) - 1)
            out.append((rows, np.asarray(res.val_risks[epoch], dtype=np.float64)))
        return out

    def model_risks(self, cohort: Cohort) -> np.ndarray:
        """``J x N``: each member's risk scored as the trainer scored its validation rows
        (the out-of-fold risks): ``family.risk`` with nothing fitted after training. Not
        with the members' fitted offsets (``ModalSurv.members_fitted``): they centre a Cox
        member on its training mean, an offset the out-of-fold risks lack, which shifted
        every new patient's stacked score away from the scores the Breslow baseline was
        fitted on (miscalibrated curves)."""
        m = self.model
        assert m is not None
        score = m.config.train.risk_score
        return np.stack([m.family.risk(out, m.cuts, m.t_ref_, score, {})
                         for out in m.predict_member_outputs(cohort)])  # fmt: skip

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        assert self.model is not None
        weights, meta, arrays = self.model.export_state()
        return weights, {"model": meta}, arrays

    @classmethod
    def restore(cls, name: str, weights: dict[str, torch.Tensor], meta: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> NeuralCandidate:  # fmt: skip
        model = ModalSurv.from_state(weights, meta["model"], arrays)
        return cls(name, model.config, model)


class PerFoldCandidate(Candidate):
    """A classical peer refitted on each inner fold's training rows: one model per inner
    fold, its risks on the fold's held-out rows kept at fit time (the out-of-fold risks)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._oof: list[tuple[np.ndarray, np.ndarray]] = []
        self.features: FeatureMatrix | None = None

    def _matrix(self, train: Cohort, features: FeatureMatrix | None) -> FeatureMatrix:
        """The fitted feature matrix this candidate reads: the stack's shared one."""
        assert features is not None
        return features

    def _fit_fold(self, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                  seed: int) -> tuple[Any, np.ndarray]:  # fmt: skip
        """One inner fold: (the fitted model, its risks on the held-out rows)."""
        raise NotImplementedError

    def _keep(self, models: list[Any]) -> None:
        """Store the inner models in the form :meth:`_predict` and ``export`` read."""
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """``J x N``: every inner model's risk on the feature rows ``x``."""
        raise NotImplementedError

    def fit(self, train: Cohort, features: FeatureMatrix | None,
            splits: list[tuple[np.ndarray, np.ndarray]], seed: int,
            progress: Progress | None) -> None:  # fmt: skip
        self.features = self._matrix(train, features)
        x, y = self.features.transform(train), train.survival_array()
        models, self._oof = [], []
        for j, (tr, va) in enumerate(splits):
            model, risk = self._fit_fold(x[tr], y[tr], x[va], seed + j)
            models.append(model)
            self._oof.append((va, risk))
        self._keep(models)

    def oof(self, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return self._oof

    def model_risks(self, cohort: Cohort) -> np.ndarray:
        assert self.features is not None
        return self._predict(self.features.transform(cohort))


class CoxnetCandidate(PerFoldCandidate):
    """Elastic-net Cox (the ``coxnet`` baseline's path and inner-CV penalty) per inner fold."""

    kind = "coxnet"

    def __init__(self, name: str = "coxnet") -> None:
        super().__init__(name)
        self.coef = np.zeros((0, 0))
        self.offset = np.zeros(0)

    def _fit_fold(self, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                  seed: int) -> tuple[Any, np.ndarray]:  # fmt: skip
        path, alpha = select_coxnet(x_tr, y_tr, seed, baseline=False)
        coef, off = linear_predictor(path, alpha, x_tr.shape[1])
        return (coef, off), x_va @ coef - off

    def _keep(self, models: list[Any]) -> None:
        self.coef = np.asarray([c for c, _ in models])
        self.offset = np.asarray([o for _, o in models])

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.coef.T - self.offset).T

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}, {"coef": self.coef, "offset": self.offset}

    @classmethod
    def restore(cls, name: str, arrays: dict[str, np.ndarray],
                features: FeatureMatrix | None) -> CoxnetCandidate:  # fmt: skip
        out = cls(name)
        out.coef, out.offset = np.asarray(arrays["coef"]), np.asarray(arrays["offset"])
        out.features = features
        return out


class ForestCandidate(PerFoldCandidate):
    """A random survival forest (the ``rsf`` baseline's settings) per inner fold, kept as
    plain arrays (``train.forest``)."""

    kind = "rsf"

    def __init__(self, name: str = "rsf", n_jobs: int = 2) -> None:
        super().__init__(name)
        self.n_jobs = n_jobs
        self.forests: list[FlatForest] = []

    def _fit_fold(self, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                  seed: int) -> tuple[Any, np.ndarray]:  # fmt: skip
        forest = grow_forest(x_tr, y_tr, n_estimators=RSF_TREES, min_samples_leaf=RSF_LEAF,
                             seed=seed, n_jobs=self.n_jobs)  # fmt: skip
        return forest, forest.predict(x_va)

    def _keep(self, models: list[Any]) -> None:
        self.forests = list(models)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([f.predict(x) for f in self.forests])

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"{j}/{k}": v for j, f in enumerate(self.forests) for k, v in f.arrays().items()}
        meta = {"n_forests": len(self.forests),
                "n_features": self.forests[0].n_features if self.forests else 0}  # fmt: skip
        return {}, meta, arrays

    @classmethod
    def restore(cls, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                features: FeatureMatrix | None) -> ForestCandidate:  # fmt: skip
        out = cls(name)
        out.forests = [FlatForest({k: arrays[f"{j}/{k}"] for k in FOREST_ARRAYS},
                                  int(meta["n_features"]))
                       for j in range(int(meta["n_forests"]))]  # fmt: skip
        out.features = features
        return out


class ClinicalCoxCandidate(PerFoldCandidate):
    """Ridge-penalised Cox on the clinical modality (the ``coxph_clinical`` baseline's
    model and encoding) per inner fold: the classical clinical score, kept as its
    coefficients over its own clinical feature matrix."""

    kind = "coxph"

    def __init__(self, name: str = "coxph_clinical") -> None:
        super().__init__(name)
        self.coef = np.zeros((0, 0))

    def _matrix(self, train: Cohort, features: FeatureMatrix | None) -> FeatureMatrix:
        """Its own matrix over the clinical modalities only, fitted on ``train``."""
        assert features is not None
        return FeatureMatrix(features.config, clinical_modalities(features.config, train)).fit(train)

    def _fit_fold(self, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
                  seed: int) -> tuple[Any, np.ndarray]:  # fmt: skip
        coef = np.asarray(fit_ridge_cox(x_tr, y_tr).coef_, dtype=np.float64)
        return coef, x_va @ coef

    def _keep(self, models: list[Any]) -> None:
        self.coef = np.asarray(models)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.coef.T).T

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        assert self.features is not None
        fmeta, farrays = self.features.get_state()
        return {}, {"features": fmeta}, {"coef": self.coef,
                                         **{f"features/{k}": v for k, v in farrays.items()}}

    @classmethod
    def restore(cls, name: str, config: RunConfig, meta: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> ClinicalCoxCandidate:  # fmt: skip
        out = cls(name)
        out.coef = np.asarray(arrays["coef"])
        sub = {k[len("features/"):]: v for k, v in arrays.items() if k.startswith("features/")}
        out.features = FeatureMatrix.from_state(config, meta["features"], sub)
        return out


def clinical_modalities(config: RunConfig, cohort: Cohort) -> list[str]:
    """The clinical modalities a run may use: in the cohort and in ``model.modalities``."""
    allowed = config.model.modalities or cohort.modalities
    return [m for m in config.preprocess.clinical_modalities
            if m in cohort.features and m in allowed]  # fmt: skip


def candidate_configs(config: RunConfig, cohort: Cohort) -> dict[str, RunConfig | None]:
    """Which candidates of ``model.stack`` this cohort can use, and each network's config
    (None for a classical peer). Every candidate sees only ``model.modalities``: the
    clinical ones (``modalsurv_clinical``, ``coxph_clinical``) are left out when the run
    excludes the clinical modality (a modality ablation must not get it back through the
    stack), ``modalsurv_clinical`` also when clinical is all there is (it would repeat
    ``modalsurv``), ``modalsurv_cox`` when the run's head is already Cox."""
    out: dict[str, RunConfig | None] = {}
    mods = list(config.model.modalities or cohort.modalities)
    clinical = clinical_modalities(config, cohort)
    for name in stack_names(config):
        cfg = config.model_copy(deep=True)
        if name == "modalsurv":
            out[name] = cfg
        elif name == "modalsurv_clinical":
            if clinical and sorted(clinical) != sorted(mods):
                cfg.model = cfg.model.model_copy(update={"modalities": clinical})
                out[name] = cfg
        elif name == "modalsurv_cox":
            if config.model.head != "cox":
                cfg.model = cfg.model.model_copy(update={"head": "cox"})
                out[name] = cfg
        elif name == "coxph_clinical":
            if clinical:
                out[name] = None
        else:
            out[name] = None
    return out


def make_candidate(name: str, config: RunConfig | None) -> Candidate:
    if name == "coxnet":
        return CoxnetCandidate(name)
    if name == "rsf":
        return ForestCandidate(name)
    if name == "coxph_clinical":
        return ClinicalCoxCandidate(name)
    assert config is not None
    return NeuralCandidate(name, config)
