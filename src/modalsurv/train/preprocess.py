"""Per-modality preprocessing, fitted on training rows only.

The pipeline for each modality follows ``config.preprocess``: modalities named in
``clinical_modalities`` get ``train.transforms.ClinicalEncoder`` (imputation, scaling),
those in ``rna_modalities`` get ``RnaTransform`` (log1p — with ``rna_log1p="auto"`` only
for raw-scale training data, see :func:`looks_raw` — variance filter, PCA), every
other vector gets ``VectorScaler`` (standardisation, optional PCA for wide embeddings),
and bags of tiles get :class:`BagScaler` (per-dimension standardisation over the valid
tiles of present training patients, then PCA to ``bag_pca`` components). Only present
rows are used to fit, and rows of absent patients stay zero after transforming, so a
missing modality never turns into a fake measurement.

The fitted state is exported as JSON-able metadata plus named numpy arrays
(:meth:`Preprocessor.get_state`), so a saved model never needs pickle.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from modalsurv.cohort import Cohort
from modalsurv.config import PreprocessConfig
from modalsurv.errors import DataError, DataWarning, FeatureError
from modalsurv.train.align import align_columns
from modalsurv.train.transforms import ClinicalEncoder, RnaTransform, VectorScaler, fit_pca


class BagScaler:
    """Standardise each tile dimension with mean/std of the valid training tiles, then
    (``pca``) project the tiles onto their top principal components.

    Why PCA: every training step embeds every valid tile, so the tile width sets most of
    a multimodal step's cost, and wide frozen-encoder tiles (512-1536-d) give attention
    pooling the most room to memorise patients. The components are those of the
    standardised valid tiles of present training patients (at most ``max_fit_tiles`` of
    them, a seeded random subset: the covariance of 10^5 tiles is already exact to a few
    parts per thousand), by :func:`~modalsurv.train.transforms.fit_pca` on their D×D
    covariance, so fitting is deterministic and costs one D×D eigendecomposition.

    ``zero_constant`` (default): a tile dimension constant (or all NaN) over those
    training tiles is 0 in every tile before the PCA (``constant_``), as in
    ``ClinicalEncoder``: without a PCA another value of it in a test tile would reach the
    model unscaled, through weights no training tile moved.
    """

    def __init__(self, pca: int | str | None = None, max_fit_tiles: int = 100_000,
                 zero_constant: bool = True) -> None:  # fmt: skip
        self.pca = pca
        self.max_fit_tiles = max_fit_tiles
        self.zero_constant = zero_constant
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # k×D, or 0×D without PCA
        self.constant_: np.ndarray = np.zeros(0, dtype=np.int64)

    def fit(self, x: np.ndarray, mask: np.ndarray, present: np.ndarray) -> BagScaler:
        valid = mask & present[:, None]
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ValueError("cannot fit a bag scaler without a single valid training tile")
        rows, cols = np.nonzero(valid)
        if n_valid > self.max_fit_tiles:
            keep = np.sort(np.random.default_rng(0).choice(n_valid, self.max_fit_tiles, False))
            rows, cols = rows[keep], cols[keep]
        tiles = x[rows, cols].astype(np.float64)
        with warnings.catch_warnings():  # an all-NaN dimension: NaN (mean 0, scale 1), constant
            warnings.simplefilter("ignore", RuntimeWarning)
            self.mean_ = np.nan_to_num(np.nanmean(tiles, axis=0))
            std = np.nanstd(tiles, axis=0)
            varies = np.nanmax(tiles, axis=0) > np.nanmin(tiles, axis=0)
        self.scale_ = np.where(std > 1e-8, std, 1.0)
        self.constant_ = np.flatnonzero(~varies & self.zero_constant).astype(np.int64)
        d = tiles.shape[1]
        self.components_ = np.zeros((0, d))
        if self.pca == "auto" or (self.pca is not None and self.pca < d):
            z = np.nan_to_num((tiles - self.mean_) / self.scale_)
            self.components_ = fit_pca(z, self.pca, solver="covariance_eigh")[1]
        return self

    @property
    def out_dim(self) -> int:
        assert self.components_ is not None and self.mean_ is not None, "BagScaler is not fitted"
        return int(self.components_.shape[0] or self.mean_.shape[0])

    def transform(self, x: np.ndarray, mask: np.ndarray, present: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.scale_ is not None, "BagScaler is not fitted"
        assert self.components_ is not None
        out = ((x - self.mean_) / self.scale_).astype(np.float32)
        out = np.nan_to_num(out, nan=0.0)
        out[..., self.constant_] = 0.0  # nothing learnt from them: no value reaches the model
        if self.components_.shape[0]:
            # tiles were centred by the standardisation, so the projection needs no shift
            out = out @ self.components_.T.astype(np.float32)
        out[~(mask & present[:, None])] = 0.0
        return np.ascontiguousarray(out)

    def get_state(self) -> dict[str, Any]:
        return {"mean": self.mean_, "scale": self.scale_, "components": self.components_,
                "constant": self.constant_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BagScaler:
        out = cls()
        out.mean_ = np.asarray(state["mean"], dtype=np.float64)
        out.scale_ = np.asarray(state["scale"], dtype=np.float64)
        comps = state.get("components")  # absent in bundles saved before bag PCA existed
        out.components_ = (
            np.zeros((0, out.mean_.shape[0])) if comps is None else np.asarray(comps, np.float64)
        )
        out.pca = int(out.components_.shape[0]) or None
        # absent in bundles saved before it existed: nothing zeroed
        out.constant_ = np.asarray(state.get("constant", np.zeros(0)), dtype=np.int64)
        return out


_KINDS = {
    "clinical": ClinicalEncoder,
    "rna": RnaTransform,
    "vector": VectorScaler,
    "bag": BagScaler,
}


RAW_SCALE_MIN_MAX = 50.0


def looks_raw(x: np.ndarray, present: np.ndarray) -> bool:
    """True when expression values look unlogged (counts/TPM): none < 0 and max > 50.

    Log2 microarray or log-TPM data stay below ~20 and may be negative; raw counts reach
    the thousands. Decided on the training rows only, like everything else here.
    """
    vals = x[present]
    if vals.size == 0 or np.isnan(vals).all():
        return False
    return bool(np.nanmin(vals) >= 0 and np.nanmax(vals) > RAW_SCALE_MIN_MAX)


def _used_columns(step: Any) -> np.ndarray | None:
    """The input columns a fitted step reads (RNA: the top-variance genes); None: all."""
    return getattr(step, "genes_", None)


def _make(kind: str, cfg: PreprocessConfig, x: np.ndarray, present: np.ndarray) -> Any:
    if kind == "clinical":
        return ClinicalEncoder(standardize=cfg.standardize, numeric=cfg.clinical_numeric,
                               integer_levels=cfg.clinical_integer_levels)  # fmt: skip
    if kind == "rna":
        log1p = cfg.rna_log1p
        return RnaTransform(
            log1p=looks_raw(x, present) if log1p == "auto" else bool(log1p),
            top_variance_genes=cfg.rna_top_variance_genes,
            pca=cfg.rna_pca,
            standardize=cfg.standardize,
        )
    if kind == "vector":
        wide = cfg.vector_pca is not None and x.shape[-1] > cfg.vector_pca_min_dim
        return VectorScaler(pca=cfg.vector_pca if wide else None, standardize=cfg.standardize)
    return BagScaler(pca=cfg.bag_pca)


#: fitted steps by content (modality kind, preprocessing config, the training arrays'
#: bytes): within one outer fold the network, its clinical-only twin, the stack's peers
#: and every baseline fit the same preprocessing on the same rows; fitting is
#: deterministic, so each is fitted once. Bounded, least recently used first out.
_FIT_CACHE: OrderedDict[str, tuple[Any, int]] = OrderedDict()
FIT_CACHE_SIZE = 32


def _fingerprint(kind: str, cfg: PreprocessConfig, *arrays: np.ndarray | None) -> str:
    h = hashlib.sha1(f"{kind}|{cfg.model_dump_json()}".encode())
    for a in arrays:
        if a is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1))
    return h.hexdigest()


def _fit_step(kind: str, cfg: PreprocessConfig, x: np.ndarray, present: np.ndarray,
              mask: np.ndarray | None, names: list[str] | None) -> tuple[Any, int]:  # fmt: skip
    """(fitted step, output width) for one modality, from the cache when the same
    preprocessing was already fitted on the same arrays."""
    key = _fingerprint(kind, cfg, x, present, mask,
                       None if names is None else np.array(names, dtype=str))  # fmt: skip
    hit = _FIT_CACHE.get(key)
    if hit is not None:
        _FIT_CACHE.move_to_end(key)
        return hit
    step = _make(kind, cfg, x, present)
    if kind == "bag":
        step.fit(x, mask, present)
        width = step.out_dim
    else:
        step.fit(x, present=present, feature_names=names)
        width = int(step.transform(x[present][:1], present=present[present][:1]).shape[1])
    _FIT_CACHE[key] = (step, width)
    while len(_FIT_CACHE) > FIT_CACHE_SIZE:
        _FIT_CACHE.popitem(last=False)
    return step, width


def _naming(err: DataError, modality: str) -> DataError:
    """A step's error as one about ``modality``: a step names its kind ('vector', 'pca') or
    a column, and a cohort may hold several modalities of one kind (slide, mri)."""
    if err.field == modality:
        return err
    return type(err)(err.reason, path=err.path, patient=err.patient, field=modality)


def _check_kind(modality: str, kind: str, x: np.ndarray) -> None:
    """A modality given in another shape than it was fitted on (tile bags as one vector a
    patient, or the reverse) is refused by name before any transform reads it."""
    want, have = (3, "tile bags (patients x tiles x features)") if kind == "bag" else (
        2, "one vector a patient (patients x features)")
    if x.ndim != want:
        got = "tile bags" if x.ndim == 3 else "vectors" if x.ndim == 2 else f"{x.ndim}-d"
        raise FeatureError(f"modality {modality!r} was fitted as {have}; this cohort gives"
                           f" it as {got} of shape {x.shape}: extract it as at training"
                           " time", field=modality)  # fmt: skip


class Preprocessor:
    """Fits one transformer per modality on a training cohort and applies them."""

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        self.kinds: dict[str, str] = {}
        self.steps: dict[str, Any] = {}
        self.dims: dict[str, int] = {}
        self.in_dims: dict[str, int] = {}

    def kind_of(self, cohort: Cohort, modality: str) -> str:
        if cohort.is_bag(modality):
            return "bag"
        if modality in self.config.clinical_modalities:
            return "clinical"
        if modality in self.config.rna_modalities:
            return "rna"
        return "vector"

    @property
    def modalities(self) -> list[str]:
        return list(self.steps)

    @property
    def bag(self) -> dict[str, bool]:
        return {m: k == "bag" for m, k in self.kinds.items()}

    def fit(self, cohort: Cohort) -> Preprocessor:
        """Fit on ``cohort`` (training rows only: the caller's responsibility)."""
        self.kinds, self.steps, self.dims, self.in_dims = {}, {}, {}, {}
        for m in cohort.modalities:
            kind = self.kind_of(cohort, m)
            x, p = cohort.features[m], cohort.present[m]
            if not p.any():
                raise DataError(f"modality {m!r} is absent for every one of the"
                                f" {len(cohort)} training patients: nothing to fit it on;"
                                " leave it out of model.modalities", field=m)  # fmt: skip
            try:
                step, self.dims[m] = _fit_step(kind, self.config, x, p, cohort.bag_mask.get(m),
                                               cohort.feature_names.get(m))  # fmt: skip
            except DataError as err:
                raise _naming(err, m) from None
            self.kinds[m], self.steps[m] = kind, step
            self.in_dims[m] = int(x.shape[-1])
        return self

    def transform(self, cohort: Cohort) -> Cohort:
        """The cohort with every fitted modality transformed; others are dropped.

        A fitted modality the cohort lacks is simply left out (the model treats it as
        absent for every patient). Vector columns are matched to the fitted ones by name
        (``train.align``): reordered, one-hot categories fixed at fit time, unknown
        categories imputed with a warning, and missing columns refused by name.
        """
        feats: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        lacking = [m for m in self.steps if m not in cohort.features]
        if lacking and len(lacking) == len(self.steps):
            raise FeatureError(f"the cohort has none of the modalities the model was fitted on"
                               f" ({lacking}); it has {cohort.modalities}",
                               field="modalities")  # fmt: skip
        for m in lacking:
            warnings.warn(f"modality {m!r}, which the model was fitted on, is absent from this"
                          " cohort: every patient is predicted without it", DataWarning,
                          stacklevel=2)  # fmt: skip
        for m, step in self.steps.items():
            if m not in cohort.features:
                continue
            x, p = cohort.features[m], cohort.present[m]
            _check_kind(m, self.kinds[m], x)
            if self.kinds[m] != "bag":  # by name: reordered, or refused naming the columns
                x = align_columns(x, cohort.feature_names.get(m), step.feature_names_in_, m,
                                  cohort.ids, p, used=_used_columns(step))  # fmt: skip
            elif x.shape[-1] != self.in_dims[m]:
                raise FeatureError(
                    f"modality {m!r} has {x.shape[-1]} features; the preprocessor was "
                    f"fitted on {self.in_dims[m]}", field=m,
                )
            try:
                if self.kinds[m] == "rna":  # a profile none of whose genes training kept
                    p = step.measured_rows(x, present=p)
                if self.kinds[m] == "bag":
                    feats[m] = step.transform(x, cohort.bag_mask[m], p)
                    masks[m] = cohort.bag_mask[m]
                else:
                    named = {"ids": cohort.ids} if self.kinds[m] == "rna" else {}
                    out = np.asarray(step.transform(x, present=p, **named), dtype=np.float32)
                    feats[m] = np.nan_to_num(out, nan=0.0)
            except DataError as err:
                raise _naming(err, m) from None
            present[m] = p
        return Cohort(
            cohort.ids,
            cohort.time,
            cohort.event,
            features=feats,
            present=present,
            meta=cohort.meta,
            bag_mask=masks,
        )

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays) describing every fitted step."""
        meta: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "kinds": dict(self.kinds),
            "dims": dict(self.dims),
            "in_dims": dict(self.in_dims),
            "steps": {},
        }
        arrays: dict[str, np.ndarray] = {}
        for m, step in self.steps.items():
            meta["steps"][m] = split_arrays(step.get_state(), arrays, prefix=f"{m}/")
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        out = cls(PreprocessConfig.model_validate(meta["config"]))
        out.kinds = dict(meta["kinds"])
        out.dims = {m: int(d) for m, d in meta["dims"].items()}
        out.in_dims = {m: int(d) for m, d in meta["in_dims"].items()}
        for m, kind in out.kinds.items():
            state = join_arrays(meta["steps"][m], arrays)
            out.steps[m] = _KINDS[kind].from_state(state)
        return out


_ARRAY_TAG = "__array__"


def split_arrays(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """Move every numpy array of a nested state into ``arrays``; leave a tag in its place."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {
                "__list__": [
                    split_arrays(v, arrays, f"{prefix}{i}/") for i, v in enumerate(obj.tolist())
                ]
            }
        key = prefix.rstrip("/")
        arrays[key] = obj
        return {_ARRAY_TAG: key}
    if isinstance(obj, dict):
        return {str(k): split_arrays(v, arrays, f"{prefix}{k}/") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [split_arrays(v, arrays, f"{prefix}{i}/") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_arrays`."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_TAG}:
            return np.asarray(arrays[obj[_ARRAY_TAG]])
        if set(obj) == {"__list__"}:
            return np.asarray([join_arrays(v, arrays) for v in obj["__list__"]], dtype=object)
        return {k: join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, arrays) for v in obj]
    return obj
