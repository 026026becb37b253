"""The numbers behind the run report's figures, from out-of-fold predictions (pure
functions: arrays in, DataFrames out; each DataFrame is what a figure shows and what is
written beside the page as CSV).

Out-of-fold predictions are pooled over the folds of repeat 0: every patient is predicted
by the fold model that did not train on it. IPCW weights (time-dependent AUC, Brier)
use the Kaplan–Meier censoring distribution of the whole cohort, which the model never
sees. Undefined scores (no event by a time, too few patients in a group) are left out
with the reason in the returned notes, never silently NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from modalsurv.survival import metrics as M
from modalsurv.train.compare import corrected_resampled_ttest


def _arrays(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)


# ---------------------------------------------------------------------- risk groups
def risk_groups(risk: Any, groups: int = 3) -> np.ndarray:
    """Group 0 (lowest risk) .. ``groups - 1`` (highest): equal-size groups by rank (tied
    risks in one group, so sizes can differ by the ties).

    A non-finite risk is refused (ValueError naming it), as the metrics refuse it: it has
    no rank, and left in it became a garbage group and shifted every group's boundaries."""
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise ValueError(f"risk[{bad[0]}] = {r[bad[0]]} is not finite ({bad.size} of"
                         f" {r.size} risks): risk groups need a ranked risk for every"
                         " patient")  # fmt: skip
    # tied risks share their mean rank, so equal predictions fall in one group (by order
    # of appearance, two patients with the same risk could be called low and high risk)
    rank = pd.Series(r).rank(method="average").to_numpy() - 1
    return np.minimum((rank * groups // len(r)).astype(int), groups - 1)


def group_name(g: int, groups: int) -> str:
    return {0: "low risk", groups - 1: "high risk"}.get(g, f"group {g + 1}")


def logrank(time: Any, event: Any, labels: Any) -> tuple[float, float]:
    """Log-rank test across the groups (``sksurv.compare.compare_survival``): (χ², p)."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    t, e = _arrays(time, event)
    chisq, p = compare_survival(Surv.from_arrays(e, t), np.asarray(labels))
    return float(chisq), float(p)


def km_by_group(time: Any, event: Any, labels: Any, groups: int) -> pd.DataFrame:
    """Kaplan–Meier step points per group: ``group, name, time, survival, n, events``
    (each curve starts at time 0, survival 1)."""
    t, e = _arrays(time, event)
    lab = np.asarray(labels)
    rows = []
    for g in range(groups):
        sel = lab == g
        if not sel.any():
            continue
        kt, ks = kaplan_meier_estimator(e[sel], t[sel])
        name = group_name(g, groups)
        for tt, ss in zip(np.r_[0.0, kt], np.r_[1.0, ks]):
            rows.append({"group": g, "name": name, "time": float(tt), "survival": float(ss),
                         "n": int(sel.sum()), "events": int(e[sel].sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "name", "time", "survival", "n", "events"])


# ---------------------------------------------------------------------- over time
def auc_times(time: Any, event: Any, n: int = 20) -> np.ndarray:
    """Times for AUC(t): from the 10th to the 80th percentile of the event times, inside
    the follow-up (an AUC needs events before t and patients still at risk after it)."""
    t, e = _arrays(time, event)
    if e.sum() < 2:
        return np.empty(0)
    lo, hi = np.quantile(t[e], [0.1, 0.8])
    hi = min(hi, np.nextafter(t.max(), 0))
    if not hi > lo:
        return np.empty(0)
    return np.linspace(lo, hi, n)


def td_auc_table(time: Any, event: Any, risk: Any, times: Any) -> tuple[pd.DataFrame, float,
                                                                        list[str]]:  # fmt: skip
    """Cumulative/dynamic AUC(t) of the risk (``survival.metrics.time_dependent_auc``):
    ``(time, auc)`` rows, the mean AUC, and notes."""
    t, e = _arrays(time, event)
    grid = np.asarray(times, dtype=np.float64)
    try:
        auc, mean = M.time_dependent_auc(t, e, t, e, np.asarray(risk, float), grid)
    except ValueError as err:
        return pd.DataFrame(columns=["time", "auc"]), math.nan, [f"AUC(t): {err}"]
    return pd.DataFrame({"time": grid, "auc": auc}), float(mean), []


def km_survival(time: Any, event: Any, times: Any) -> np.ndarray:
    """The cohort's Kaplan–Meier S at ``times`` (a step function, 1 before the first)."""
    t, e = _arrays(time, event)
    kt, ks = kaplan_meier_estimator(e, t)
    idx = np.searchsorted(kt, np.asarray(times, float), side="right") - 1
    return np.where(idx >= 0, ks[np.maximum(idx, 0)], 1.0)


def brier_table(time: Any, event: Any, surv: np.ndarray, times: Any
                ) -> tuple[pd.DataFrame, dict[str, float], list[str]]:  # fmt: skip
    """IPCW Brier score over ``times`` of the predicted curves (``N x T``) and of the
    cohort's Kaplan–Meier curve given to everyone (the no-skill reference): ``(time,
    brier, brier_km)`` rows, the two integrated scores (``ibs``, ``ibs_km``), notes."""
    t, e = _arrays(time, event)
    grid = np.asarray(times, dtype=np.float64)
    ref = np.tile(km_survival(t, e, grid), (len(t), 1))
    try:
        bs = M.brier_score(t, e, t, e, surv, grid)
        bk = M.brier_score(t, e, t, e, ref, grid)
    except ValueError as err:
        return pd.DataFrame(columns=["time", "brier", "brier_km"]), {}, [f"Brier: {err}"]
    span = grid[-1] - grid[0]
    ibs = {"ibs": float(np.trapezoid(bs, grid) / span), "ibs_km": float(np.trapezoid(bk, grid) / span)}
    return pd.DataFrame({"time": grid, "brier": bs, "brier_km": bk}), ibs, []


# ---------------------------------------------------------------------- calibration
def reference_times(time: Any, event: Any, k: int = 3) -> list[float]:
    """``k`` calibration times: the quartiles of the event times (k = 3), rounded to 3
    significant digits, distinct, inside the follow-up."""
    t, e = _arrays(time, event)
    if not e.any():
        return []
    qs = np.linspace(0, 1, k + 2)[1:-1]
    out: list[float] = []
    for q in np.quantile(t[e], qs):
        v = float(f"{q:.3g}")
        if 0 < v < t.max() and v not in out:
            out.append(v)
    return out


def calibration_at(time: Any, event: Any, surv_t: np.ndarray, surv_follow: np.ndarray,
                   times: list[float], groups: int = 10
                   ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:  # fmt: skip
    """Grouped calibration at each reference time (predicted S(t) against the Kaplan–Meier
    S(t) per risk decile, ``survival.metrics.calibration_table``; fewer groups when a
    decile's follow-up ends before t), and per time the calibration slope and intercept
    and the integrated calibration index. ``surv_t``: ``N x len(times)`` predicted S(t);
    ``surv_follow``: the same at ``min(T_i, t)``. Returns (groups table, statistics
    table, notes)."""
    t, e = _arrays(time, event)
    tables, stats, notes = [], [], []
    for j, tt in enumerate(times):
        s = np.clip(surv_t[:, j], 0.0, 1.0)
        table, last = None, ""
        # the groups asked for, then whichever of 5 and 3 is fewer (asked for 3 or 4, it
        # once tried 5 first and drew 5 groups)
        tries = {min(groups, len(t)), *(g for g in (5, 3) if g < groups)}
        for g in sorted(tries, reverse=True):
            try:
                table = M.calibration_table(t, e, s, tt, groups=g)
                break
            except ValueError as err:
                last = str(err)
        if table is None:
            notes.append(f"calibration at t = {tt:g}: {last}")
        else:
            tables.append(table.assign(t=tt))
        row: dict[str, Any] = {"t": tt}
        try:
            fit = M.calibration_slope(t, e, s, tt, np.clip(surv_follow[:, j], 0.0, 1.0))
            row.update(slope=fit.slope, slope_se=fit.slope_se, intercept=fit.intercept,
                       observed=fit.observed, expected=fit.expected)  # fmt: skip
        except ValueError as err:
            notes.append(f"calibration slope at t = {tt:g}: {err}")
        try:
            ici = M.integrated_calibration_index(t, e, s, tt)
            row.update(ici=ici.ici, e50=ici.e50, e90=ici.e90)
        except ValueError as err:
            notes.append(f"ICI at t = {tt:g}: {err}")
        stats.append(row)
    cols = ["t", "group", "n", "events", "at_risk", "predicted", "observed", "lower", "upper"]
    groups_table = pd.concat(tables, ignore_index=True)[cols] if tables else pd.DataFrame(columns=cols)
    stat_cols = ["t", "slope", "slope_se", "intercept", "observed", "expected", "ici", "e50", "e90"]
    return groups_table, pd.DataFrame(stats).reindex(columns=stat_cols), notes


def d_calibration_table(event: Any, surv_own: Any, n_bins: int = 10
                        ) -> tuple[pd.DataFrame, float, float]:  # fmt: skip
    """D-calibration (Haider et al. 2020, ``survival.metrics.d_calibration``): per bin of
    S_i(T_i) the observed (fractional) count and the expected ``N / bins``; (table, χ², p)."""
    res = M.d_calibration(event, np.clip(np.asarray(surv_own, float), 0.0, 1.0), n_bins)
    n = len(np.asarray(event))
    table = pd.DataFrame({"low": res.edges[:-1], "high": res.edges[1:], "observed": res.counts,
                          "expected": np.full(n_bins, n / n_bins)})  # fmt: skip
    return table, res.statistic, res.p_value


# ---------------------------------------------------------------------- intervals
def cv_interval(scores: Any, test_train_ratio: float, level: float = 0.95
                ) -> tuple[float, float, float]:  # fmt: skip
    """Mean of fold scores with the corrected resampled t interval (Nadeau & Bengio 2003:
    the variance of the mean inflated by the overlap of training parts)."""
    mean, lo, hi, _ = corrected_resampled_ttest(scores, test_train_ratio, level)
    return mean, lo, hi


def ranked(table: pd.DataFrame, risk: str = "risk") -> pd.DataFrame:
    """The table sorted by ``risk`` (lowest first) with a ``rank`` column (1 = lowest)."""
    out = table.sort_values(risk, kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out
