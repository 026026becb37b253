"""Paired comparison of two models scored on the very same cross-validation folds.

Why: fold scores of two models on identical folds are strongly correlated, so comparing
their means ± std overstates the uncertainty of the *difference*; a plain paired t-test
over folds understates it, because the training sets of different folds overlap and the
fold differences are not independent. The corrected resampled t-test (Nadeau & Bengio
2003, "Inference for the generalization error"; Bouckaert & Frank 2004 for repeated
k-fold) keeps the pairing and inflates the variance of the mean difference by the
overlap: ``Var = (1/J + n_test/n_train) * s^2`` over the J fold × repeat differences, with
a t distribution on J - 1 degrees of freedom. With ``n_test/n_train = 0`` it is exactly
the ordinary paired t-test (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy import stats

MAIN = "modalsurv"  # the model a run is about (its ModalSurv: the stack by default)


@dataclass(frozen=True)
class PairedComparison:
    """``model`` minus ``reference`` on ``metric`` over ``n_pairs`` shared folds."""

    model: str
    reference: str
    metric: str
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, H0: no difference in expected score
    n_pairs: int
    test_train_ratio: float
    level: float


def corrected_resampled_ttest(
    differences: np.ndarray | list[float], test_train_ratio: float, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean difference, CI low, CI high, two-sided p) of paired fold differences.

    ``test_train_ratio``: n_test / n_train of the folds (``1 / (k - 1)`` for k-fold CV).
    NaN differences (a fold where either model failed) are dropped. Fewer than two
    differences give NaNs; identical differences (zero spread) give a zero-width interval
    and p = 1 if the mean is 0, else p = 0.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if test_train_ratio < 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    j = d.size
    if j < 2:
        mean = float(d.mean()) if j else math.nan
        return mean, math.nan, math.nan, math.nan
    mean = float(d.mean())
    se = math.sqrt((1.0 / j + test_train_ratio) * float(d.var(ddof=1)))
    if se == 0.0:
        return mean, mean, mean, 1.0 if mean == 0.0 else 0.0
    t = mean / se
    half = float(stats.t.ppf(0.5 + level / 2.0, df=j - 1)) * se
    p = float(2.0 * stats.t.sf(abs(t), df=j - 1))
    return mean, mean - half, mean + half, p


def compare_models(
    metrics: pd.DataFrame,
    model: str,
    reference: str,
    metric: str = "harrell_c",
    test_train_ratio: float | None = None,
    level: float = 0.95,
) -> PairedComparison:
    """Compare two models of a ``cross_validate`` metrics table (one row per model, repeat
    and fold) on the folds both were scored on.

    ``test_train_ratio`` defaults to ``1 / (k - 1)`` with k the number of folds per repeat
    in the table, which is right for plain k-fold CV; pass n_test / n_train yourself when
    the training parts were subsampled.
    """
    need = {"model", "repeat", "fold", metric}
    missing = sorted(need - set(metrics.columns))
    if missing:
        raise ValueError(f"metrics table lacks columns {missing}; it has {list(metrics.columns)}")
    known = sorted(metrics["model"].astype(str).unique())
    for name in (model, reference):
        if name not in known:
            raise ValueError(f"model {name!r} is not in the metrics table; it has {known}")

    def scores(name: str) -> pd.Series:
        rows = metrics[metrics["model"] == name]
        if rows.duplicated(["repeat", "fold"]).any():
            raise ValueError(f"model {name!r} has more than one row for a (repeat, fold)")
        return rows.set_index(["repeat", "fold"])[metric].astype(float)

    a, b = scores(model), scores(reference)
    shared = a.index.intersection(b.index)
    _refuse_other_splits(metrics, model, reference, shared)
    diff = (a.loc[shared] - b.loc[shared]).to_numpy()
    if test_train_ratio is None:
        k = int(metrics.groupby("repeat")["fold"].nunique().max())
        test_train_ratio = fold_ratio(k) if k > 1 else 0.0
    stats4 = corrected_resampled_ttest(diff, test_train_ratio, level)  # mean, lo, hi, p
    n_pairs = int(np.isfinite(diff).sum())
    return PairedComparison(model, reference, metric, *stats4, n_pairs, float(test_train_ratio),
                            level)  # fmt: skip


def _refuse_other_splits(metrics: pd.DataFrame, model: str, reference: str,
                         shared: pd.Index) -> None:  # fmt: skip
    """Pairing by (repeat, fold) labels assumes both models were tested on the same
    patients (true inside one run). Tables pasted from runs with other splits carry the
    same labels on other folds: where the fold's size or event count says so, refuse."""
    cols = [c for c in ("n_test", "n_events_test") if c in metrics.columns]
    if not cols or shared.empty:
        return
    rows = {name: metrics[metrics["model"] == name].set_index(["repeat", "fold"]).loc[shared, cols]
            for name in (model, reference)}  # fmt: skip
    differ = (rows[model] != rows[reference]).any(axis=1)
    if differ.any():
        rep, fold = differ[differ].index[0]
        seen = {name: ", ".join(f"{c} {r.loc[(rep, fold), c]}" for c in cols)
                for name, r in rows.items()}  # fmt: skip
        raise ValueError(f"models {model!r} and {reference!r} were not tested on the same"
                         f" folds: repeat {rep}, fold {fold} has {seen[model]} for {model!r}"
                         f" and {seen[reference]} for {reference!r} (tables of runs with"
                         " other splits cannot be paired)")


def fold_ratio(n_folds: int, train_fraction: float = 1.0) -> float:
    """n_test / n_train of k-fold CV whose training parts keep ``train_fraction``:
    ``1 / ((k - 1) * fraction)`` (the variance correction of the resampled t-test)."""
    return 1.0 / (max(int(n_folds) - 1, 1) * float(train_fraction))


def fold_overlap_ratio(metrics: pd.DataFrame, n_folds: int, train_fraction: float = 1.0,
                       grouped: bool = False, model: str = MAIN) -> float:  # fmt: skip
    """n_test / n_train of a run's folds, for the corrected resampled t-test: ``fold_ratio``
    for k stratified folds; for leave-one-group-out folds (``cv.groups``), whose sizes
    follow the groups, the mean of each fold's own n_test / n_train (``model``'s rows)."""
    if grouped:
        rows = metrics[metrics["model"] == model]
        return float((rows["n_test"] / rows["n_train"]).mean())
    return fold_ratio(n_folds, train_fraction)


def compare_all(metrics: pd.DataFrame, model: str, metric: str = "harrell_c",
                test_train_ratio: float | None = None, level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """``model`` minus every other model of the table (in table order), one row each:
    the :class:`PairedComparison` fields."""
    others = [m for m in dict.fromkeys(metrics["model"].astype(str)) if m != model]
    return pd.DataFrame([asdict(compare_models(metrics, model, other, metric,
                                               test_train_ratio, level))
                         for other in others],
                        columns=[f.name for f in fields(PairedComparison)])  # fmt: skip


def corrected_standard_error(differences: np.ndarray | list[float], test_train_ratio: float
                             ) -> float:  # fmt: skip
    """The standard error of the mean paired difference under the corrected resampled
    t-test: ``sqrt((1/J + n_test/n_train) * s^2)`` (NaN with fewer than two differences)."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    return math.sqrt((1.0 / d.size + test_train_ratio) * float(d.var(ddof=1)))


@dataclass(frozen=True)
class MetaAnalysis:
    """A random-effects pooled difference over cohorts (:func:`random_effects`)."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    tau2: float  # between-cohort variance of the true differences
    i2: float  # share of the spread that is between cohorts, not sampling noise
    k: int  # cohorts pooled
    level: float


def random_effects(effects: np.ndarray | list[float], standard_errors: np.ndarray | list[float],
                   level: float = 0.95) -> MetaAnalysis:  # fmt: skip
    """Pool per-cohort differences (e.g. ModalSurv minus the best peer, each with its
    corrected standard error) by a random-effects meta-analysis.

    The between-cohort variance is DerSimonian & Laird's (1986) moment estimate; the
    interval is Hartung & Knapp's (2001; Sidik & Jonkman 2002): the weighted residual
    variance with a t distribution on k - 1 degrees of freedom, which keeps its coverage
    with the handful of cohorts a benchmark has, where the normal interval is too
    narrow. Its scale factor is floored at 1 (Knapp & Hartung's 2003 ad hoc correction;
    Röver et al. 2015), so the interval is never narrower than the DerSimonian-Laird
    standard error allows: cohorts that agree by chance (or exactly) must not give a
    zero-width interval and p = 0. Cohorts without a finite effect and standard error are
    left out.
    """
    if not 0.0 < level < 1.0:  # else a NaN or inverted interval, reported as if valid
        raise ValueError(f"level must be in (0, 1), got {level}")
    y = np.asarray(effects, dtype=np.float64).reshape(-1)
    s = np.asarray(standard_errors, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} effects for {s.size} standard errors")
    ok = np.isfinite(y) & np.isfinite(s) & (s > 0)
    y, s = y[ok], s[ok]
    k = int(y.size)
    if k < 2:
        mean = float(y[0]) if k else math.nan
        return MetaAnalysis(mean, math.nan, math.nan, math.nan, math.nan, math.nan, k, level)
    w = 1.0 / s**2
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    wr = 1.0 / (s**2 + tau2)
    mean = float((wr * y).sum() / wr.sum())
    scale = float((wr * (y - mean) ** 2).sum() / (k - 1))  # Hartung-Knapp's q
    se = math.sqrt(max(scale, 1.0) / float(wr.sum()))  # > 0: every s > 0
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2.0, df=k - 1)) * se
    p = float(2.0 * stats.t.sf(abs(mean / se), df=k - 1))
    return MetaAnalysis(mean, mean - half, mean + half, p, tau2, i2, k, level)
