"""Reference models from scikit-survival, run by ``cross_validate`` on the very same folds.

Every baseline is an estimator with ``fit(cohort)``, ``predict_risk(cohort)`` and
``predict_survival(cohort, times)``, and, like ModalSurv, fits its preprocessing on the
training part only (a :class:`~modalsurv.train.preprocess.Preprocessor` built from the
run's ``config.preprocess``, so wide modalities such as RNA are reduced exactly as for
ModalSurv).

* ``coxph_clinical``: Cox proportional hazards on the encoded clinical modality, with a
  small ridge penalty (``alpha=0.1``) so one-hot columns and rare categories cannot make
  the fit diverge.
* ``coxnet``: elastic-net Cox (``l1_ratio=0.5``) on all features; bags are mean-pooled
  over their valid tiles and each modality with missing patients gets a 0/1 indicator
  column. The penalty is chosen by an inner 3-fold CV (Harrell C) over a 30-point path
  computed on the training part only; the model is then refitted on the whole training
  part and evaluated at the chosen path point.
* ``rsf``: random survival forest (100 trees, ``min_samples_leaf=10``) on the same
  features as coxnet.
* ``modalsurv_clinical``: ModalSurv with the run's config restricted to the clinical
  modality.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from sklearn.model_selection import StratifiedKFold

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig
from modalsurv.errors import ConfigError
from modalsurv.survival.curves import step_at
from modalsurv.survival.metrics import UndefinedMetricError, concordance_index
from modalsurv.train.estimator import ModalSurv
from modalsurv.train.forest import check_distinct_times
from modalsurv.train.preprocess import Preprocessor

COXPH_ALPHA = 0.1
COXNET_L1_RATIO = 0.5
COXNET_N_ALPHAS = 30
COXNET_INNER_FOLDS = 3
RSF_TREES = 100
RSF_LEAF = 10


class SurvivalModel(Protocol):
    def fit(self, cohort: Cohort) -> Any: ...
    def predict_risk(self, cohort: Cohort) -> np.ndarray: ...
    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray: ...


def step_survival(unique_times: np.ndarray, surv: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Evaluate right-continuous step curves (``N x U`` at ``unique_times``) at ``times``."""
    return step_at(unique_times, surv, times, before=1.0)


class FeatureMatrix:
    """Train-fitted preprocessing → one flat matrix (bags mean-pooled, missing indicators).

    ``modalities``: which modalities to use; default ``config.model.modalities`` (None: all
    of the cohort's), so a baseline in a modality-ablation trial sees the same modalities
    as that trial's ModalSurv.
    """

    def __init__(self, config: RunConfig, modalities: list[str] | None = None) -> None:
        self.config = config
        self.modalities = modalities if modalities is not None else config.model.modalities
        self.pre: Preprocessor | None = None
        self.indicators: list[str] = []

    def fit(self, cohort: Cohort) -> FeatureMatrix:
        mods = [m for m in (self.modalities or cohort.modalities) if m in cohort.features]
        if not mods:
            raise ValueError(f"none of the modalities {self.modalities} is in the cohort")
        cohort = cohort.select(mods)
        self.pre = Preprocessor(self.config.preprocess).fit(cohort)
        self.indicators = [m for m in mods if not cohort.present[m].all()]
        return self

    def transform(self, cohort: Cohort) -> np.ndarray:
        assert self.pre is not None, "FeatureMatrix is not fitted"
        done = self.pre.transform(cohort)
        cols = []
        for m in self.pre.modalities:
            if m not in done.features:
                cols.append(np.zeros((len(cohort), self.pre.dims[m])))
                continue
            x = done.features[m].astype(np.float64)
            if self.pre.kinds[m] == "bag":
                mk = done.bag_mask[m]
                x = x.sum(axis=1) / np.maximum(mk.sum(axis=1, keepdims=True), 1)
            cols.append(x)
        for m in self.indicators:
            p = done.present.get(m, np.zeros(len(cohort), dtype=bool))
            cols.append((~p).astype(np.float64)[:, None])
        return np.concatenate(cols, axis=1)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON metadata, arrays) of the fitted preprocessing (no pickle)."""
        assert self.pre is not None, "FeatureMatrix is not fitted"
        meta, arrays = self.pre.get_state()
        return {"preprocess": meta, "indicators": list(self.indicators),
                "modalities": self.modalities}, arrays  # fmt: skip

    @classmethod
    def from_state(cls, config: RunConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
                   ) -> FeatureMatrix:  # fmt: skip
        out = cls(config, meta.get("modalities"))
        out.pre = Preprocessor.from_state(meta["preprocess"], arrays)
        out.indicators = [str(m) for m in meta["indicators"]]
        return out


def fit_ridge_cox(x: np.ndarray, y: np.ndarray) -> Any:
    """scikit-survival's ridge Cox (``COXPH_ALPHA``, Efron ties) on ``x``.

    Its Newton steps halve the step when a trial step makes the likelihood worse; such a
    trial can overflow ``exp(x w)`` on small folds and numpy then warns although the
    fit recovers. The overflow is silenced here and the result checked instead."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    with np.errstate(over="ignore"):
        model = CoxPHSurvivalAnalysis(alpha=COXPH_ALPHA, ties="efron").fit(x, y)
    if not np.all(np.isfinite(model.coef_)):
        raise FloatingPointError(f"the ridge Cox fit on {x.shape[0]} rows x {x.shape[1]}"
                                 " features diverged (non-finite coefficients)")  # fmt: skip
    return model


class _SksurvOnFeatures:
    """A scikit-survival estimator on a train-fitted FeatureMatrix (shared predict code)."""

    def __init__(self, features: FeatureMatrix) -> None:
        self.features = features
        self.model: Any = None

    def _new_model(self) -> Any:
        raise NotImplementedError

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self._new_model().fit(x, y)

    def fit(self, cohort: Cohort) -> _SksurvOnFeatures:
        x = self.features.fit(cohort).transform(cohort)
        self.model = self._fit_model(x, cohort.survival_array())
        return self

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        return np.asarray(self.model.predict(self.features.transform(cohort)), dtype=np.float64)

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        surv = self.model.predict_survival_function(
            self.features.transform(cohort), return_array=True
        )
        return step_survival(self.model.unique_times_, surv, times)


class CoxPHClinical(_SksurvOnFeatures):
    """Ridge-penalised CoxPH on the clinical modality (ClinicalEncoder output)."""

    def __init__(self, config: RunConfig, seed: int = 0) -> None:
        super().__init__(FeatureMatrix(config, list(config.preprocess.clinical_modalities)))

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> Any:
        return fit_ridge_cox(x, y)


class Coxnet:
    """Elastic-net Cox on all features; penalty chosen by inner CV on the training part."""

    def __init__(self, config: RunConfig, seed: int = 0) -> None:
        self.features = FeatureMatrix(config)
        self.seed = seed
        self.model: Any = None
        self.alpha_: float | None = None

    def fit(self, cohort: Cohort) -> Coxnet:
        x = self.features.fit(cohort).transform(cohort)
        self.model, self.alpha_ = select_coxnet(x, cohort.survival_array(), self.seed)
        return self

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        x = self.features.transform(cohort)
        return np.asarray(self.model.predict(x, alpha=self.alpha_), dtype=np.float64)

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        x = self.features.transform(cohort)
        fns = self.model.predict_survival_function(x, alpha=self.alpha_)
        grid = fns[0].x
        surv = np.stack([f(grid) for f in fns])
        return step_survival(grid, surv, times)


def _coxnet(alphas: np.ndarray | None = None, baseline: bool = False) -> Any:
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    return CoxnetSurvivalAnalysis(
        l1_ratio=COXNET_L1_RATIO,
        n_alphas=COXNET_N_ALPHAS,
        alphas=alphas,
        alpha_min_ratio=0.01,
        fit_baseline_model=baseline,
        max_iter=100_000,
    )


def select_coxnet(x: np.ndarray, y: np.ndarray, seed: int, baseline: bool = True
                  ) -> tuple[Any, float]:  # fmt: skip
    """(the fitted elastic-net path, the chosen penalty): the path on all of ``x``, the
    penalty by inner ``COXNET_INNER_FOLDS``-fold CV (Harrell C, stratified on the event)."""
    event, time = y["event"], y["time"]
    path = _coxnet(baseline=baseline).fit(x, y)
    alphas = np.asarray(path.alphas_)
    scores = np.full((COXNET_INNER_FOLDS, len(alphas)), np.nan)
    skf = StratifiedKFold(COXNET_INNER_FOLDS, shuffle=True, random_state=seed)
    for i, (tr, va) in enumerate(skf.split(x, event)):
        if not event[va].any() or not event[tr].any():
            continue
        try:
            inner = _coxnet(alphas=alphas).fit(x[tr], y[tr])
        except ArithmeticError:
            continue  # a failed inner fit leaves its row NaN
        for j, a in enumerate(inner.alphas_):
            try:
                scores[i, j] = concordance_index(time[va], event[va],
                                                 inner.predict(x[va], alpha=a))  # fmt: skip
            except UndefinedMetricError:  # no comparable pair in this part: it cannot vote
                break
    mean = np.nanmean(np.where(np.isnan(scores).all(axis=0), -np.inf, scores), axis=0)
    return path, float(alphas[int(np.argmax(mean))])


def linear_predictor(path: Any, alpha: float, n_features: int) -> tuple[np.ndarray, float]:
    """(coef, offset) with ``path.predict(x, alpha) == x @ coef - offset``, read through the
    public ``predict`` (the model is linear), so it can be saved as two plain arrays."""
    offset = -float(path.predict(np.zeros((1, n_features)), alpha=alpha)[0])
    coef = np.asarray(path.predict(np.eye(n_features), alpha=alpha), dtype=np.float64) + offset
    return coef, offset


class RSF(_SksurvOnFeatures):
    """Random survival forest on the coxnet feature matrix."""

    def __init__(self, config: RunConfig, seed: int = 0) -> None:
        super().__init__(FeatureMatrix(config))
        self.seed = seed

    def _new_model(self) -> Any:
        from sksurv.ensemble import RandomSurvivalForest

        return RandomSurvivalForest(
            n_estimators=RSF_TREES, min_samples_leaf=RSF_LEAF, n_jobs=2, random_state=self.seed
        )

    def fit(self, cohort: Cohort) -> RSF:
        """Trees are grown in parallel (deterministic given the seed); predictions then sum
        the trees in one thread, because threads finishing in another order change the
        sum in its last bit, and the same seed must give byte-identical numbers."""
        check_distinct_times(cohort.time)
        super().fit(cohort)
        self.model.n_jobs = 1
        return self


class ModalSurvClinical(ModalSurv):
    """ModalSurv restricted to the clinical modality (same config otherwise)."""

    def __init__(self, config: RunConfig, seed: int = 0) -> None:
        mods = list(config.preprocess.clinical_modalities)
        cfg = config.model_copy(deep=True)
        cfg.model = cfg.model.model_copy(update={"modalities": mods})
        cfg.seed = seed
        super().__init__(cfg)

    def fit(
        self, cohort: Cohort, y: Any = None, *, val_cohort: Cohort | None = None,
        progress: Any = None,
    ) -> ModalSurvClinical:
        wanted = list(self.config.preprocess.clinical_modalities)
        mods = [m for m in wanted if m in cohort.features]
        if not mods:
            raise ValueError(f"no clinical modality {wanted} in the cohort")
        self.config.model = self.config.model.model_copy(update={"modalities": mods})
        super().fit(cohort, y, val_cohort=val_cohort, progress=progress)
        return self


BASELINES: dict[str, type] = {
    "coxph_clinical": CoxPHClinical,
    "coxnet": Coxnet,
    "rsf": RSF,
    "modalsurv_clinical": ModalSurvClinical,
}


def make_baseline(name: str, config: RunConfig, seed: int) -> SurvivalModel:
    """A fresh, unfitted baseline from the registry."""
    if name not in BASELINES:
        raise ConfigError(f"baselines: unknown baseline {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](config, seed)
