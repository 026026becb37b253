"""Tabular preprocessing (clinical, RNA-seq, embedding vectors) as scikit-learn transformers.

Everything here is *learned*, so everything is fitted on the training rows of a fold only:
``fit(X_train, present=...)`` then ``transform(X_any, present=...)``. ``present`` is the
Cohort's modality mask: absent patients are ignored by ``fit`` and get zero rows from
``transform`` (the network masks them out anyway). NaN inside present rows is a missing
value, imputed with training statistics.

A fitted transformer is saved without pickle: ``get_state()`` returns plain arrays,
lists, numbers and strings (arrays → safetensors, the rest → JSON) and
``from_state(state)`` rebuilds it with identical output.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import integrate, optimize
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

from modalsurv.errors import DataError
from modalsurv.train.align import align_columns

State = dict[str, np.ndarray | list | float | int | str]


# ---------------------------------------------------------------------------- helpers
def _matrix(X: Any, name: str) -> np.ndarray:
    arr = X.to_numpy(dtype=np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X)
    try:
        arr = np.array(arr, dtype=np.float64)  # a copy: callers' arrays are never touched
    except (TypeError, ValueError) as exc:
        raise DataError(f"features must be numeric: {exc}", field=name) from None
    if arr.ndim != 2:
        raise DataError(f"features must be N x D; found shape {arr.shape}", field=name)
    if np.isinf(arr).any():
        r, c = np.argwhere(np.isinf(arr))[0]
        raise DataError(f"+/-inf at row {r}, column {c}", field=name)
    return arr


def _present(present: Any, n: int, name: str) -> np.ndarray:
    if present is None:
        return np.ones(n, dtype=bool)
    p = np.asarray(present).astype(bool).ravel()
    if p.shape[0] != n:
        raise DataError(f"present mask has {p.shape[0]} entries for {n} rows", field=name)
    return p


def _train_rows(X: np.ndarray, p: np.ndarray, name: str, need: int = 1) -> np.ndarray:
    Xt = X[p]
    if Xt.shape[0] < need:
        raise DataError(
            f"need at least {need} present training rows to fit; found {Xt.shape[0]}", field=name
        )
    return Xt


def _nanmedian(X: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN; an all-NaN column gets 0 (nothing to learn from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(X, axis=0) if X.shape[0] else np.full(X.shape[1], np.nan)
    return np.where(np.isnan(med), 0.0, med)


def _fill(X: np.ndarray, values: np.ndarray) -> np.ndarray:
    nan = np.isnan(X)
    if nan.any():
        X = np.where(nan, values[None, :], X)
    return X


def _scale(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof=0); a (near-)constant column gets scale 1, never a 0 divisor:
    a std below 10 eps, or (scikit-learn's StandardScaler rule, ``_is_constant_feature``)
    a variance within the rounding error of the mean. Why the second: the mean of 30
    copies of 37.3 is one ulp off, so that column's std is 7e-15, not 0; as the divisor it
    sent the training rows to +/-1 and a test value of 37.4 to 1e13."""
    mean = Z.mean(axis=0)
    var = Z.var(axis=0)
    n, eps = Z.shape[0], np.finfo(np.float64).eps
    std = np.sqrt(var)
    constant = (std < 10 * eps) | (var <= n * eps * var + (n * mean * eps) ** 2)
    return mean, np.where(constant, 1.0, std)


def constant_columns(Z: np.ndarray, on: bool = True) -> np.ndarray:
    """Indices of the columns of ``Z`` (training rows, no NaN) that hold one value, or none
    when ``on`` is False: what ``zero_constant`` zeroes at transform time."""
    constant = Z.max(axis=0, initial=-np.inf) <= Z.min(axis=0, initial=np.inf)
    return np.flatnonzero(constant & on).astype(np.int64)


def marchenko_pastur_median(beta: float) -> float:
    """Median of the Marchenko–Pastur law (unit variance, aspect ratio ``beta`` in (0, 1]):
    where the eigenvalues of a pure-noise sample covariance sit, half below, half above."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(x: float) -> float:
        return math.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * math.pi * beta * x)

    def cdf(t: float) -> float:
        return integrate.quad(density, lo, t, limit=200)[0]

    return float(optimize.brentq(lambda t: cdf(t) - 0.5, lo, hi, xtol=1e-12))


def signal_rank(eigenvalues: np.ndarray, n_samples: int, n_features: int | None = None) -> int:
    """How many principal components stand above the noise (at least 1).

    Keeps the sample-covariance eigenvalues above the Marchenko–Pastur upper edge
    ``sigma^2 (1 + sqrt(beta))^2`` (beta = min(n, p) / max(n, p)), the largest eigenvalue
    pure noise reaches; the noise level is estimated from the median of the nonzero
    eigenvalues divided by the Marchenko–Pastur median, as in Gavish & Donoho (2014)
    "The optimal hard threshold for singular values is 4/sqrt(3)". Why: a learned
    projection of a few hundred patients cannot estimate hundreds of input directions
    that carry only noise; this rule drops them without a number to tune. It assumes
    noise of about equal variance in every direction; noise that is not (a few
    standardised columns of very different make-up) only makes it keep more components.
    ``eigenvalues``: at least the min(n, p) largest of the p features' spectrum.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    p = int(n_features) if n_features is not None else lam.size
    m = min(int(n_samples), p, lam.size)
    if m < 2:
        return 1
    lam = lam[:m]  # the nonzero part of the spectrum when p > n
    beta = m / max(int(n_samples), p)
    noise = float(np.median(lam)) / marchenko_pastur_median(beta)
    edge = noise * (1.0 + math.sqrt(beta)) ** 2
    return max(1, int((lam > edge).sum()))


def fit_pca(
    Z: np.ndarray, n_components: int | str | None, solver: str = "full"
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components k×G) of an exact PCA, k capped at min(n-1, G); deterministic
    (exact LAPACK decomposition + scikit-learn's sign convention). ``solver``: scikit-learn's
    ``"full"`` SVD, or ``"covariance_eigh"`` (the G×G covariance's eigendecomposition:
    the same axes, far cheaper when rows vastly outnumber features, as tiles do).
    ``n_components="auto"``: the components above the noise (:func:`signal_rank`)."""
    auto = n_components == "auto"
    cap = min(Z.shape[0] - 1, Z.shape[1])
    k = cap if auto else min(int(n_components or 0), cap)
    if k < 1:
        raise DataError(
            f"PCA needs at least 2 training rows and 1 feature; found shape {Z.shape}",
            field="pca",
        )
    pca = PCA(n_components=k, svd_solver=solver, random_state=0).fit(Z)
    components = pca.components_
    if auto:
        components = components[: signal_rank(pca.explained_variance_, Z.shape[0] - 1, Z.shape[1])]
    return pca.mean_.astype(np.float64), components.astype(np.float64)


def _output(Z: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.asarray(Z, dtype=np.float32)
    out[~p] = 0.0
    return np.ascontiguousarray(out)


class _Stateful(TransformerMixin, BaseEstimator):
    """get_state / from_state for transformers whose fitted attributes are arrays."""

    _arrays: ClassVar[tuple[str, ...]] = ()
    _lists: ClassVar[tuple[str, ...]] = ("feature_names_in_",)
    #: arrays added after states were first saved: name -> its value when a state lacks it
    _optional: ClassVar[dict[str, np.ndarray]] = {}

    def get_state(self) -> State:
        check_is_fitted(self)
        state: State = {
            "type": type(self).__name__,
            "params": json.dumps(self.get_params()),
            "n_features_in_": int(self.n_features_in_),
        }
        for a in self._arrays:
            state[a] = np.ascontiguousarray(getattr(self, a))
        for a in self._lists:
            state[a] = [str(v) for v in getattr(self, a)]
        for a in self._optional:
            state[a] = np.ascontiguousarray(getattr(self, a))
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Stateful:
        if state.get("type") != cls.__name__:
            raise DataError(f"state is for {state.get('type')!r}, not {cls.__name__}", field="type")
        obj = cls(**json.loads(str(state["params"])))
        obj.n_features_in_ = int(state["n_features_in_"])
        for a in cls._arrays:
            setattr(obj, a, np.asarray(state[a]))
        for a in cls._lists:
            setattr(obj, a, [str(v) for v in state[a]])
        for a, empty in cls._optional.items():  # absent from states saved before it existed
            setattr(obj, a, np.asarray(state[a]) if a in state else empty.copy())
        return obj

    def fit_transform(self, X: Any, y: Any = None, present: Any = None,
                      feature_names: Sequence[str] | None = None) -> np.ndarray:  # fmt: skip
        """``fit`` then ``transform`` with the same ``present`` mask. Why: scikit-learn's
        own ``fit_transform`` passes it to ``fit`` only, so absent rows came out nonzero
        (and an absent RNA row's placeholder was refused as a negative value)."""
        fitted = self.fit(X, y, present=present, feature_names=feature_names)  # type: ignore[attr-defined]
        return fitted.transform(X, present=present)

    def _start_fit(
        self, X: Any, present: Any, feature_names: Sequence[str] | None, what: str, need: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shared start of every fit: (all rows, present mask, training rows); sets the
        input width and feature names."""
        A = _matrix(X, what)
        p = _present(present, A.shape[0], what)
        Xt = _train_rows(A, p, what, need=need)
        self.n_features_in_ = A.shape[1]
        self.feature_names_in_ = self._names(X, feature_names, A.shape[1])
        return A, p, Xt

    def _names(self, X: Any, feature_names: Sequence[str] | None, d: int) -> list[str]:
        if feature_names is not None:
            names = [str(s) for s in feature_names]
        elif isinstance(X, pd.DataFrame):
            names = [str(s) for s in X.columns]
        else:
            names = [f"x{j}" for j in range(d)]
        if len(names) != d:
            raise DataError(f"{len(names)} feature names for {d} columns", field="feature_names")
        return names

    def _start_transform(self, X: Any, present: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Shared start of every transform: (rows as float64, present mask), width checked.
        A DataFrame's columns are matched to the fitted names (``train.align``)."""
        check_is_fitted(self)
        A = _matrix(X, what)
        p = _present(present, A.shape[0], what)
        if isinstance(X, pd.DataFrame):
            A = align_columns(A, [str(c) for c in X.columns], self.feature_names_in_, what,
                              [str(i) for i in X.index], p, used=getattr(self, "genes_", None))
        self._check_width(A)
        return A, p

    def _check_width(self, X: np.ndarray) -> None:
        check_is_fitted(self)
        if X.shape[1] != self.n_features_in_:
            raise DataError(
                f"fitted on {self.n_features_in_} features; transform got {X.shape[1]}",
                field=type(self).__name__,
            )


# ---------------------------------------------------------------------------- clinical
RANK_GAUSS_QUANTILES = 1000
HEAVY_TAIL_SKEW = 1.0
HEAVY_TAIL_MIN_VALUES = 20


def rank_gauss_quantiles(x: np.ndarray, n_quantiles: int) -> np.ndarray:
    """The training quantiles of one column (NaN ignored) at ``n_quantiles`` evenly spaced
    probabilities from 0 to 1: the state :func:`rank_gauss` maps new values with."""
    x = x[~np.isnan(x)]
    if not len(x):
        return np.zeros(n_quantiles)
    return np.quantile(x, np.linspace(0.0, 1.0, n_quantiles))


def rank_gauss(x: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Rank-Gauss: a value's training quantile level, mapped through the standard normal
    quantile function, as scikit-learn's ``QuantileTransformer(output_distribution=
    "normal")`` does: tied quantiles take the mean of the forward and backward
    interpolation; levels are clipped to [1e-7, 1 - 1e-7], so new values beyond the
    training range map to about ±5.2. One deliberate difference: scikit-learn sends a
    value equal to the training minimum (maximum) to the extreme level even when several
    patients share it (a lab value's detection limit: 4 of 12 at 0 become -5.2), while
    here such a tie gets the middle of its levels like any other tie (-1.1), so a common
    floor value is not made an outlier. Monotone, so ranks are kept; heavy tails and
    outliers stop dominating a standardised column. NaN stays NaN."""
    from scipy.special import ndtri

    refs = np.linspace(0.0, 1.0, len(quantiles))
    fwd = np.interp(x, quantiles, refs)
    bwd = -np.interp(-x, -quantiles[::-1], -refs[::-1])
    level = np.clip(0.5 * (fwd + bwd), 1e-7, 1.0 - 1e-7)
    return np.where(np.isnan(x), np.nan, ndtri(level))


def heavy_tailed(x: np.ndarray) -> bool:
    """Whether a column looks heavy-tailed: at least ``HEAVY_TAIL_MIN_VALUES`` distinct
    values and |sample skewness| above ``HEAVY_TAIL_SKEW`` (lab values, counts, doses)."""
    x = x[~np.isnan(x)]
    if len(np.unique(x)) < HEAVY_TAIL_MIN_VALUES:
        return False
    sd = x.std()
    return bool(sd > 0 and abs(np.mean(((x - x.mean()) / sd) ** 3)) > HEAVY_TAIL_SKEW)


def integer_coded(x: np.ndarray, max_levels: int) -> np.ndarray:
    """The levels of a column that looks like integer-coded categories (every value an
    integer, 3 to ``max_levels`` distinct values), else an empty array. Two levels are a
    binary column, already a single indicator."""
    x = x[~np.isnan(x)]
    levels = np.unique(x)
    if len(levels) < 3 or len(levels) > max_levels or not np.all(levels == np.round(levels)):
        return np.zeros(0)
    return levels


class ClinicalEncoder(_Stateful):
    """Median imputation + missing-indicator columns + standard scaling, optionally with
    rank-Gauss numeric columns and one-hot integer-coded categories.

    With the defaults this is ``SimpleImputer(strategy="median", add_indicator=True,
    keep_empty_features=True)`` followed by ``StandardScaler()``: indicators are added
    for the columns that had NaN in the training rows, and the indicators are scaled
    like every other column. Input columns are already numeric (one-hot ``name=category``
    columns expanded by io/clinical.py).

    * ``numeric="rank_gauss"``: every column with more than two distinct training values
      goes through :func:`rank_gauss` (fitted training quantiles) before scaling;
      ``"auto"``: only the columns :func:`heavy_tailed` flags. Why: a lab value with a
      long right tail puts most patients in a narrow band of a standardised column, which
      a linear term or a small network resolves poorly.
    * ``integer_levels=k``: a column whose training values are integers with 3..k
      distinct values (:func:`integer_coded`: a category stored as a code, e.g. race
      0-6) also gets one indicator column per level (``name=level``; a level unseen in
      training matches none), beside the code itself, so the model can use both the
      order and the categories.
    * ``zero_constant`` (default): an output column that is constant on the training rows
      is 0 for every row (``constant_``). Why: it carries nothing to learn from, and at
      test time a value the training rows never had (a one-hot level seen only in the test
      fold, of a vocabulary built from every row at load time) would otherwise reach the
      model through weights that no training row ever moved; zeroed, such a level matches
      no column, as an unseen level does. The column stays, so the network's shape (and
      with it the draw of its initial weights) follows the cohort's vocabulary, not the
      training part's; on the training rows a constant column is 0 after scaling anyway,
      so training is unchanged.
    """

    _arrays = ("median_", "indicator_", "mean_", "scale_")
    _optional: ClassVar[dict[str, np.ndarray]] = {
        "rank_columns_": np.zeros(0, np.int64), "rank_quantiles_": np.zeros((0, 2)),
        "level_columns_": np.zeros(0, np.int64), "level_values_": np.zeros(0),
        "constant_": np.zeros(0, np.int64)}  # fmt: skip

    def __init__(self, add_indicator: bool = True, standardize: bool = True,
                 numeric: str = "standard", integer_levels: int | None = None,
                 zero_constant: bool = True) -> None:  # fmt: skip
        self.add_indicator = add_indicator
        self.standardize = standardize
        self.numeric = numeric
        self.integer_levels = integer_levels
        self.zero_constant = zero_constant

    def fit(
        self,
        X: Any,
        y: Any = None,
        present: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> ClinicalEncoder:
        if self.numeric not in ("standard", "rank_gauss", "auto"):
            raise DataError(f"numeric must be 'standard', 'rank_gauss' or 'auto'; found"
                            f" {self.numeric!r}", field="numeric")  # fmt: skip
        _, _, Xt = self._start_fit(X, present, feature_names, "clinical")
        self.median_ = _nanmedian(Xt)
        had_nan = np.isnan(Xt).any(axis=0)
        self.indicator_ = (
            np.flatnonzero(had_nan).astype(np.int64)
            if self.add_indicator
            else np.zeros(0, dtype=np.int64)
        )
        rank, quantiles, level_cols, level_vals = [], [], [], []
        n_q = max(2, min(RANK_GAUSS_QUANTILES, Xt.shape[0]))
        for j in range(Xt.shape[1]):
            col = Xt[:, j]
            levels = integer_coded(col, self.integer_levels) if self.integer_levels else ()
            level_cols += [j] * len(levels)
            level_vals += list(levels)
            many = len(np.unique(col[~np.isnan(col)])) > 2
            if (self.numeric == "rank_gauss" and many) or (
                self.numeric == "auto" and heavy_tailed(col)
            ):
                rank.append(j)
                quantiles.append(rank_gauss_quantiles(col, n_q))
        self.rank_columns_ = np.asarray(rank, dtype=np.int64)
        self.rank_quantiles_ = np.asarray(quantiles, dtype=np.float64).reshape(len(rank), n_q)
        self.level_columns_ = np.asarray(level_cols, dtype=np.int64)
        self.level_values_ = np.asarray(level_vals, dtype=np.float64)
        Z = self._encode(Xt)
        if self.standardize:
            self.mean_, self.scale_ = _scale(Z)
        else:
            self.mean_, self.scale_ = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        self.constant_ = constant_columns(Z, self.zero_constant)
        return self

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClinicalEncoder:
        obj = super().from_state(state)
        assert isinstance(obj, ClinicalEncoder)
        assert obj.rank_columns_.max(initial=-1) < len(obj.median_)
        return obj

    def _encode(self, A: np.ndarray) -> np.ndarray:
        ind = np.isnan(A[:, self.indicator_]).astype(np.float64)
        onehot = (A[:, self.level_columns_] == self.level_values_).astype(np.float64)
        X = _fill(A, self.median_)
        if len(self.rank_columns_):
            X = X.copy()
            for j, q in zip(self.rank_columns_, self.rank_quantiles_):
                X[:, j] = rank_gauss(X[:, j], q)
        return np.hstack([X, ind, onehot])

    def transform(self, X: Any, present: Any = None) -> np.ndarray:
        A, p = self._start_transform(X, present, "clinical")
        Z = (self._encode(A) - self.mean_) / self.scale_
        Z[:, self.constant_] = 0.0  # nothing learnt from them: no value reaches the model
        return _output(Z, p)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        names = list(self.feature_names_in_)
        return np.array(names + [f"{names[j]}__missing" for j in self.indicator_]
                        + [f"{names[j]}={v:g}" for j, v in
                           zip(self.level_columns_, self.level_values_)], dtype=object)  # fmt: skip


# ---------------------------------------------------------------------------- RNA-seq
class RnaTransform(_Stateful):
    """log1p → genes measured by enough training patients → median imputation → top-k
    genes by training variance → scaling → PCA.

    ``min_coverage``: a gene is a candidate only when at least this share of the training
    patients measured it (non-NaN); profiles aligned on the union of genes
    (``io.rnaseq.shared_genes``) differ in which genes they have, and this choice, like
    every other, is made on training rows only. A patient measuring none of the kept
    genes has no RNA (:meth:`measured_rows`). ``top_variance_genes`` / ``pca`` may be None
    (off). PCA components are capped at min(n_train - 1, genes kept). ``log1p`` rejects
    negative values: they mean the data are already log-scaled or centred (set
    ``log1p=False`` then). ``zero_constant`` (default): a kept gene constant on the
    training rows is 0 for every row before the PCA (``constant_``), as in
    :class:`ClinicalEncoder`: a test profile's other value of it would otherwise reach
    the model through weights no training row moved.
    """

    _arrays = ("median_", "genes_", "mean_", "scale_", "pca_mean_", "components_")
    _optional: ClassVar[dict[str, np.ndarray]] = {"constant_": np.zeros(0, np.int64)}

    def __init__(
        self,
        log1p: bool = True,
        top_variance_genes: int | None = 2000,
        pca: int | None = 64,
        standardize: bool = True,
        min_coverage: float = 0.5,
        zero_constant: bool = True,
    ) -> None:
        self.log1p = log1p
        self.top_variance_genes = top_variance_genes
        self.pca = pca
        self.standardize = standardize
        self.min_coverage = min_coverage
        self.zero_constant = zero_constant

    def _log(self, A: np.ndarray, p: np.ndarray, ids: Sequence[str] | None = None,
             fitting: bool = False) -> np.ndarray:  # fmt: skip
        """log1p of ``A``; a negative value in a present row is refused, naming the patient
        (``ids``, else the row) and the gene. At prediction the fitted log1p cannot be
        switched off: the cohort's RNA is on another scale than the training data's."""
        if not self.log1p:
            return A
        neg = (A < 0) & p[:, None]
        if neg.any():
            r, c = np.argwhere(neg)[0]
            gene = self.feature_names_in_[c] if hasattr(self, "feature_names_in_") else c
            fix = ("set log1p=False (preprocess.rna_log1p: false) for data that are already"
                   " log-scaled" if fitting else "the model was fitted on raw values and"
                   " applies log1p: give this cohort's RNA on that scale, not log-scaled or"
                   " centred")  # fmt: skip
            raise DataError(
                f"negative expression value {float(A[r, c]):g} of gene {str(gene)!r}"
                f"{'' if ids is not None else f' at row {r}'}: log1p needs raw non-negative"
                f" values (counts/TPM); {fix}",
                patient=None if ids is None else str(ids[r]),
                field=str(gene),
            )
        return np.log1p(A)

    def fit(
        self,
        X: Any,
        y: Any = None,
        present: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> RnaTransform:
        A, p, Xt = self._start_fit(X, present, feature_names, "rna", need=2 if self.pca else 1)
        if self.log1p:  # rows numbered as given, absent ones ignored
            Xt = self._log(np.where(p[:, None], A, 0.0), p, fitting=True)[p]
        covered = (~np.isnan(Xt)).mean(axis=0) >= self.min_coverage
        if not covered.any():
            raise DataError(f"no gene is measured in at least {self.min_coverage:.0%} of the"
                            " training patients' RNA profiles; check gene naming (symbols"
                            " vs Ensembl ids)", field="rna")  # fmt: skip
        # rows measuring none of those genes (another naming) have no RNA: not fitted on
        Xt = Xt[(~np.isnan(Xt[:, covered])).any(axis=1)]
        self.median_ = _nanmedian(Xt)
        Xt = _fill(Xt, self.median_)
        k = self.top_variance_genes
        if k is None or k >= int(covered.sum()):
            genes = np.flatnonzero(covered)
        else:
            var = np.where(covered, Xt.var(axis=0), -np.inf)
            order = np.argsort(-var, kind="stable")  # ties: lower index first
            genes = np.sort(order[:k])
        self.genes_ = genes.astype(np.int64)
        Z = Xt[:, self.genes_]
        self.constant_ = constant_columns(Z, self.zero_constant)
        if self.standardize:
            self.mean_, self.scale_ = _scale(Z)
        else:
            self.mean_, self.scale_ = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        Z = (Z - self.mean_) / self.scale_
        if self.pca:
            self.pca_mean_, self.components_ = fit_pca(Z, self.pca)
        else:
            self.pca_mean_ = np.zeros(0)
            self.components_ = np.zeros((0, Z.shape[1]))
        return self

    def measured_rows(self, X: Any, present: Any = None) -> np.ndarray:
        """Which rows have RNA: present and measuring at least one of the kept genes."""
        A, p = self._start_transform(X, present, "rna")
        return p & (~np.isnan(A[:, self.genes_])).any(axis=1)

    def transform(self, X: Any, present: Any = None, ids: Sequence[str] | None = None
                  ) -> np.ndarray:  # fmt: skip
        """``ids``: the rows' patients, named by an error (else the row number)."""
        A, p = self._start_transform(X, present, "rna")
        A = np.where(p[:, None], A, 0.0)  # absent rows: ignore whatever they hold
        Z = _fill(self._log(A, p, ids), self.median_)[:, self.genes_]
        Z = (Z - self.mean_) / self.scale_
        Z[:, self.constant_] = 0.0  # nothing learnt from them: no value reaches the model
        if self.components_.shape[0]:
            Z = (Z - self.pca_mean_) @ self.components_.T
        return _output(Z, p)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        if self.components_.shape[0]:
            return np.array([f"pc{i + 1}" for i in range(self.components_.shape[0])], dtype=object)
        return np.array([self.feature_names_in_[j] for j in self.genes_], dtype=object)


# ---------------------------------------------------------------------------- vectors
class VectorScaler(_Stateful):
    """Embedding vectors: mean imputation of NaN, standardisation, optional PCA.

    ``zero_constant`` (default): a column constant on the training rows (a unit of the
    encoder that never fired on them, a column all NaN there) is 0 for every row before
    the PCA (``constant_``), as in :class:`ClinicalEncoder`. Why: without a PCA its
    test-time value would reach the model unscaled, through weights that no training row
    ever moved, and shift that patient's risk by chance.
    """

    _arrays = ("fill_", "mean_", "scale_", "pca_mean_", "components_")
    _optional: ClassVar[dict[str, np.ndarray]] = {"constant_": np.zeros(0, np.int64)}

    def __init__(self, pca: int | str | None = None, standardize: bool = True,
                 zero_constant: bool = True) -> None:  # fmt: skip
        self.pca = pca  # components, "auto" (those above the noise: signal_rank) or None
        self.standardize = standardize
        self.zero_constant = zero_constant

    def fit(
        self,
        X: Any,
        y: Any = None,
        present: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> VectorScaler:
        _, _, Xt = self._start_fit(X, present, feature_names, "vector", need=2 if self.pca else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(Xt, axis=0)
        self.fill_ = np.where(np.isnan(fill), 0.0, fill)
        Z = _fill(Xt, self.fill_)
        self.constant_ = constant_columns(Z, self.zero_constant)
        if self.standardize:
            self.mean_, self.scale_ = _scale(Z)
        else:
            self.mean_, self.scale_ = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        if self.pca:
            self.pca_mean_, self.components_ = fit_pca((Z - self.mean_) / self.scale_, self.pca)
        else:
            self.pca_mean_ = np.zeros(0)
            self.components_ = np.zeros((0, Z.shape[1]))
        return self

    def transform(self, X: Any, present: Any = None) -> np.ndarray:
        A, p = self._start_transform(X, present, "vector")
        Z = (_fill(A, self.fill_) - self.mean_) / self.scale_
        Z[:, self.constant_] = 0.0  # nothing learnt from them: no value reaches the model
        if self.components_.shape[0]:
            Z = (Z - self.pca_mean_) @ self.components_.T
        return _output(Z, p)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        if self.components_.shape[0]:
            return np.array([f"pc{i + 1}" for i in range(self.components_.shape[0])], dtype=object)
        return np.array(self.feature_names_in_, dtype=object)


TRANSFORMERS: dict[str, type[_Stateful]] = {
    c.__name__: c for c in (ClinicalEncoder, RnaTransform, VectorScaler)
}


def transformer_from_state(state: dict[str, Any]) -> _Stateful:
    """Rebuild any fitted transformer of this module from its ``get_state()``."""
    cls = TRANSFORMERS.get(str(state.get("type")))
    if cls is None:
        raise DataError(f"unknown transformer type {state.get('type')!r}", field="type")
    return cls.from_state(state)
