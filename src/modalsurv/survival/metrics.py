"""Survival metrics: Harrell / Uno concordance, time-dependent AUC, Brier score, bootstrap CIs.

Every score equals its scikit-survival namesake (``concordance_index_censored``,
``concordance_index_ipcw``, ``cumulative_dynamic_auc``, ``brier_score``,
``integrated_brier_score``) on valid input; the tests check this on random data with ties.
The implementations are our own and vectorised: Harrell's C runs in O(n log n) without a
Python loop per patient (see :func:`_later_smaller`), and the inverse-probability-of-censoring
weights come from our own Kaplan–Meier estimate of the censoring distribution
(:class:`_KaplanMeier`, mirroring ``sksurv.nonparametric.CensoringDistributionEstimator``).

Calibration (is the predicted survival *probability* right, not only the ranking):
:func:`d_calibration` (whole curves, Haider et al. 2020; equals SurvivalEVAL),
:func:`calibration_slope` (Cox slope on the predicted cloglog and the Poisson observed /
expected intercept at a time t), :func:`integrated_calibration_index` (ICI / E50 / E90,
Austin et al. 2020; equals SurvivalEVAL) and :func:`calibration_table` (grouped
Kaplan–Meier against mean predictions, for calibration plots). They take predicted
survival at t, or at each patient's own time (:func:`survival_at_own_time`).

Bad input (NaN/inf, negative times, mismatched lengths) raises ``ValueError`` naming the
argument and the first bad index; data on which a score is undefined (all censored, no
comparable pair, no case at a time point) raise :class:`UndefinedMetricError`. No metric
returns a silent NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "BootstrapCI",
    "CalibrationFit",
    "DCalibration",
    "IntegratedCalibration",
    "UndefinedMetricError",
    "bootstrap_ci",
    "brier_score",
    "calibration_slope",
    "calibration_table",
    "concordance_index",
    "d_calibration",
    "integrated_brier_score",
    "integrated_calibration_index",
    "survival_at_own_time",
    "time_dependent_auc",
    "uno_concordance",
]

TIED_TOL = 1e-8  # scikit-survival's default: risks closer than this count as tied


# ----------------------------------------------------------------------------- validation
class UndefinedMetricError(ValueError):
    """The data are valid but the metric is undefined on them (all censored, no comparable
    pair, no case at a time point, ...). :func:`bootstrap_ci` skips resamples that raise it."""


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(-1))[0])


def _as_float(name: str, x: Any, ndim: int | None = 1) -> np.ndarray:
    """float64 array of finite values with the given dimensionality."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected numbers, could not convert ({exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_bad(bad)
        where = tuple(int(v) for v in np.unravel_index(i, arr.shape)) if arr.ndim > 1 else i
        raise ValueError(f"{name}[{where}] = {float(arr.reshape(-1)[i])!r} is not finite")
    return arr


def _as_time(name: str, x: Any) -> np.ndarray:
    """1-d float64 array of finite, non-negative times."""
    arr = _as_float(name, x)
    neg = arr < 0
    if neg.any():
        i = _first_bad(neg)
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is negative; times must be >= 0")
    return arr


def _as_event(name: str, x: Any) -> np.ndarray:
    """1-d bool array from bool or numeric 0/1 (other values are an error, not a cast)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected bool or 0/1 values, got dtype {arr.dtype}") from None
    bad = ~((num == 0) | (num == 1))
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{name}[{i}] = {arr[i].item()!r}; event indicators must be 0/1 or bool")
    return num == 1


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"mismatched lengths: {desc}")
    return next(iter(lengths.values()))


def _as_grid(name: str, x: Any) -> np.ndarray:
    """Evaluation times: finite, >= 0, strictly increasing (so ``surv`` columns line up)."""
    arr = _as_time(name, np.atleast_1d(np.asarray(x, dtype=np.float64)))
    if arr.size == 0:
        raise ValueError(f"{name}: need at least one time point")
    bad = np.diff(arr) <= 0
    if bad.any():
        i = _first_bad(bad) + 1
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not greater than {name}[{i - 1}] = "
                         f"{float(arr[i - 1])!r}; time points must be strictly increasing")
    return arr


def _as_tol(tied_tol: Any) -> float:
    """``tied_tol`` as a finite float >= 0: a NaN would silently tie every pair (C = 0.5)."""
    try:
        tol = float(tied_tol)
    except (TypeError, ValueError):
        raise ValueError(f"tied_tol = {tied_tol!r}: expected one number") from None
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tied_tol = {tol!r}: must be finite and >= 0")
    return tol


def _labels(prefix: str, time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_time(f"{prefix}time", time)
    e = _as_event(f"{prefix}event", event)
    _same_length(**{f"{prefix}time": t, f"{prefix}event": e})
    return t, e


def _test_inputs(time: Any, event: Any, risk: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, e = _labels("", time, event)
    r = _as_float("risk", risk)
    n = _same_length(time=t, event=e, risk=r)
    if n < 2:
        raise UndefinedMetricError(f"need at least two patients, got {n}")
    if not e.any():
        raise UndefinedMetricError("all patients are censored (event is all False)")
    return t, e, r


# ---------------------------------------------------------------- O(n log n) pair counting
def _later_smaller(seq: np.ndarray) -> np.ndarray:
    """For a permutation ``seq`` of ``0..n-1``: ``out[p] = #{q > p : seq[q] < seq[p]}``.

    Why not a Fenwick tree: that needs a Python loop per element. Instead a most-significant-
    bit-first radix partition, one vectorised pass per bit (log2 n passes of O(n)): at the
    pass for bit b the array is ordered by (value >> (b+1), position), so each aligned block
    of 2^(b+1) slots holds exactly the values sharing that prefix, in position order. An
    element whose bit b is 1 is greater than every element of its block whose bit b is 0;
    those after it are ``2^b - (zeros up to it)``. A stable partition (zeros first) then
    yields the order for the next bit. Value and running count share one int64
    (value << 32 | count) so each pass moves one array. Padding to a power of two with
    larger values at the end changes no count.
    """
    n = seq.size
    bits = max(1, int(n - 1).bit_length())
    size = 1 << bits
    x = np.empty(size, dtype=np.int64)
    x[:n] = seq
    x[n:] = np.arange(n, size)
    x <<= 32
    y = np.empty_like(x)
    half = np.arange(size // 2, dtype=np.int64)
    for b in range(bits - 1, -1, -1):
        block, h = 1 << (b + 1), 1 << b
        is_one = (x & (1 << (32 + b))) != 0
        i1 = np.flatnonzero(is_one)
        i0 = np.flatnonzero(~is_one)
        ones = x.take(i1)
        # zeros after a one = h - (its slot in the block - its index among the block's ones)
        i1 &= block - 1
        ones += h
        ones -= i1
        ones += half & (h - 1)
        yv = y.reshape(-1, block)
        yv[:, :h] = x.take(i0).reshape(-1, h)
        yv[:, h:] = ones.reshape(-1, h)
        x, y = y, x
    # fully partitioned: slot == value
    return (x & 0xFFFFFFFF)[seq]


def _run_end(key: np.ndarray) -> np.ndarray:
    """For each position, the end (exclusive) of its run of equal consecutive ``key`` values."""
    change = np.empty(key.size, dtype=bool)
    change[-1] = True
    np.not_equal(key[1:], key[:-1], out=change[:-1])
    ends = np.flatnonzero(change) + 1
    run_id = np.zeros(key.size, dtype=np.int64)
    run_id[1:] = np.cumsum(change[:-1])
    return ends[run_id]


def _concordance(time: np.ndarray, event: np.ndarray, risk: np.ndarray,
                 weight: np.ndarray | None, tied_tol: float) -> float:
    """Weighted Harrell-type concordance with scikit-survival's exact tie rules.

    A pair (i, j) is comparable when i had an event and ``T_j > T_i``, or ``T_j == T_i`` and
    j is censored. It scores 1 when ``risk_i > risk_j``, 0.5 when ``|risk_i - risk_j| <=
    tied_tol``. Each pair is weighted by ``weight[i]`` (1 for Harrell, IPCW^2 for Uno).

    Order patients by (time, events before censored, risk cluster). Then the comparable set
    of event i is everything after the block of events sharing its time, and
    ``sum_j 1{r_j < r_i} + 0.5 1{r_j ~ r_i}`` over later patients comes from one inversion
    count (:func:`_later_smaller`) plus tie-run arithmetic; pairs inside an event block are
    tied-or-ordered by construction and removed. Risks are grouped into clusters whose
    consecutive sorted values differ by at most ``tied_tol``; this equals scikit-survival's
    pairwise rule whenever a cluster spans at most ``tied_tol`` (always, unless near-ties
    chain across more than ``tied_tol``, where sksurv's rule is not transitive).
    """
    n = time.size
    ro = np.argsort(risk)
    gap = np.diff(risk[ro]) > tied_tol
    risk_ties = not gap.all()
    rank = np.empty(n, dtype=np.int64)
    rank[ro] = np.arange(n)
    if risk_ties:
        cluster_sorted = np.zeros(n, dtype=np.int64)
        np.cumsum(gap, out=cluster_sorted[1:])
        n_clusters = int(cluster_sorted[-1]) + 1
        cluster = np.empty(n, dtype=np.int64)
        cluster[ro] = cluster_sorted
    else:
        n_clusters = n
        cluster = None

    order = np.argsort(time)
    ts = time[order]
    tie = ts[1:] == ts[:-1]
    time_ties = bool(tie.any())
    if time_ties:
        tkey = np.zeros(n, dtype=np.int64)
        np.cumsum(~tie, out=tkey[1:])
        tkey = tkey * 2 + ~event[order]  # events first within a tied time
        # then by risk (cluster), so pairs inside an event block are never counted as ordered
        tkey = tkey * n_clusters + (rank if cluster is None else cluster)[order]
        perm = np.argsort(tkey, kind="stable")
        order = order[perm]
        tkey = tkey[perm]
    ev = event[order]

    if cluster is not None:
        # inside a risk cluster, re-deal its rank slots by position, so later tied patients
        # rank higher; only members of clusters with more than one patient move
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        size = np.bincount(cluster_sorted, minlength=n_clusters)
        slots = np.flatnonzero(size[cluster_sorted] > 1)
        members = ro[slots]
        rank[members[np.lexsort((pos[members], cluster_sorted[slots]))]] = slots
    seq = rank[order]
    idx = np.flatnonzero(ev)
    score = _later_smaller(seq)[idx].astype(np.float64)
    if cluster is not None:
        cluster_end = np.cumsum(np.bincount(cluster, minlength=n_clusters))
        score += 0.5 * (cluster_end[cluster[order[idx]]] - seq[idx] - 1)
    if time_ties:
        block_end = _run_end(tkey // n_clusters)[idx]
        if cluster is not None:  # tied-risk pairs inside one event block are not comparable
            score -= 0.5 * (_run_end(tkey)[idx] - idx - 1)
    else:
        block_end = idx + 1
    w = None if weight is None else weight[order][idx]
    comparable = (n - block_end).astype(np.float64)
    numerator = score.sum() if w is None else w @ score
    denominator = comparable.sum() if w is None else w @ comparable
    if denominator == 0:
        raise UndefinedMetricError("no comparable pair: no patient with an event has a later "
                                   "(or tied censored) patient to compare with")
    return float(numerator / denominator)


def concordance_index(time: Any, event: Any, risk: Any, tied_tol: float = TIED_TOL) -> float:
    """Harrell's C: higher ``risk`` = earlier event. Equals
    ``sksurv.metrics.concordance_index_censored(event, time, risk)[0]``, ties included."""
    t, e, r = _test_inputs(time, event, risk)
    return _concordance(t, e, r, None, _as_tol(tied_tol))


# --------------------------------------------------------------------- Kaplan–Meier / IPCW
class _KaplanMeier:
    """Kaplan–Meier step function, of survival or (``reverse=True``) of censoring.

    Censoring version as in sksurv's ``CensoringDistributionEstimator``: at a tied time,
    events happen before censorings, so the censoring risk set excludes that time's events.
    """

    def __init__(self, time: np.ndarray, event: np.ndarray, reverse: bool = False) -> None:
        uniq, inv = np.unique(time, return_inverse=True)
        total = np.bincount(inv)
        deaths = np.bincount(inv, weights=event.astype(np.float64))
        at_risk = time.size - np.concatenate(([0], np.cumsum(total)[:-1]))
        if reverse:
            at_risk = at_risk - deaths
            deaths = total - deaths
        ratio = np.divide(deaths, at_risk, out=np.zeros(uniq.size), where=deaths != 0)
        self.times = uniq
        self.prob = np.cumprod(1.0 - ratio)
        self.all_events = bool(reverse and event.all())
        if self.all_events:  # no censoring seen: G == 1 (sksurv does the same)
            self.prob = np.ones(uniq.size)

    def __call__(self, t: np.ndarray, name: str, index: np.ndarray | None = None) -> np.ndarray:
        """S(t) (right-continuous). Beyond the last time: 0 if the curve reached 0, else an
        error (the estimate is undefined there) naming ``name[index[i]]``: ``index`` maps a
        subset ``t`` back to positions in the caller's array, so the message points at the
        patient, not at a place in the subset."""
        t = np.asarray(t, dtype=np.float64)
        beyond = t > self.times[-1]
        if beyond.any() and self.prob[-1] > 0:
            i = _first_bad(beyond)
            where = i if index is None else int(index[i])
            raise UndefinedMetricError(
                f"{name}[{where}] = {float(t.reshape(-1)[i])!r} is beyond the largest training "
                f"time {float(self.times[-1])!r}; the censoring distribution is unknown there")
        idx = np.searchsorted(self.times, t, side="right") - 1
        out = np.where(idx >= 0, self.prob[np.clip(idx, 0, None)], 1.0)
        out[beyond] = 0.0
        return out


def _ipcw_events(train_time: Any, train_event: Any, time: np.ndarray, event: np.ndarray,
                 use: np.ndarray) -> np.ndarray:
    """1 / G(T_i) for events with ``use``; 0 elsewhere (sksurv ``predict_ipcw``)."""
    tt, te = _labels("train_", train_time, train_event)
    cens = _KaplanMeier(tt, te, reverse=True)
    sel = event & use
    g = cens(time[sel], "time", np.flatnonzero(sel))
    if (g == 0).any():
        raise UndefinedMetricError("the censoring survival function is zero at an event time "
                                   f"({float(time[sel][g == 0][0])!r}); IPCW weights are undefined")
    w = np.zeros(time.size)
    w[sel] = 1.0 / g
    return w


def uno_concordance(train_time: Any, train_event: Any, time: Any, event: Any, risk: Any,
                    tau: float | None = None, tied_tol: float = TIED_TOL) -> float:
    """Uno's IPCW C-index (= ``sksurv.metrics.concordance_index_ipcw(...)[0]``).

    Censoring weights are learned from the training labels; only events before ``tau`` are
    weighted (later patients still serve as the longer-lived member of a pair).
    """
    t, e, r = _test_inputs(time, event, risk)
    tol = _as_tol(tied_tol)
    if tau is None:
        use = np.ones(t.size, dtype=bool)
    else:
        try:
            cut = float(tau)
        except (TypeError, ValueError):
            raise ValueError(f"tau = {tau!r}: expected one number or None") from None
        if np.isnan(cut):  # t < nan is all False: it would read as "no comparable pair"
            raise ValueError("tau = nan: expected a number (or None for no truncation)")
        use = t < cut
    w = _ipcw_events(train_time, train_event, t, e, use)
    return _concordance(t, e, r, np.square(w), tol)


# --------------------------------------------------------------- time-dependent metrics
def _check_grid(times: Any, t: np.ndarray) -> np.ndarray:
    grid = _as_grid("times", times)
    if grid[0] < t.min() or grid[-1] >= t.max():
        raise UndefinedMetricError(
            f"times must lie within the test follow-up [{float(t.min())!r}, "
            f"{float(t.max())!r}); got [{float(grid[0])!r}, {float(grid[-1])!r}]")
    return grid


def time_dependent_auc(train_time: Any, train_event: Any, time: Any, event: Any, risk: Any,
                       times: Any, tied_tol: float = TIED_TOL) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC(t) with IPCW (= ``sksurv.metrics.cumulative_dynamic_auc``).

    ``risk`` is ``N`` (one score) or ``N x T`` (a score per time point). Cases at t: events
    with ``T <= t``, weighted by 1/G(T); controls: ``T > t``. Returns ``(auc_t, mean_auc)``;
    the mean weights AUC(t) by the test Kaplan–Meier drop between time points.
    """
    t, e = _labels("", time, event)
    tol = _as_tol(tied_tol)
    r = np.asarray(risk, dtype=np.float64)
    r = _as_float("risk", r, ndim=r.ndim if r.ndim in (1, 2) else 1)
    _same_length(time=t, event=e, risk=r)
    if not e.any():
        raise UndefinedMetricError("all patients are censored (event is all False)")
    grid = _check_grid(times, t)
    if r.ndim == 2 and r.shape[1] != grid.size:
        raise ValueError(f"risk: expected {grid.size} columns (one per time), got {r.shape[1]}")
    w = _ipcw_events(train_time, train_event, t, e, np.ones(t.size, dtype=bool))
    scores = np.empty(grid.size)
    for k, tk in enumerate(grid):
        est = r if r.ndim == 1 else r[:, k]
        o = np.argsort(-est)
        est_o = est[o]
        case = (t[o] <= tk) & e[o]
        control = t[o] > tk
        tp = np.cumsum(case * w[o])
        fp = np.cumsum(control)
        if tp[-1] == 0:
            raise UndefinedMetricError(f"no event at or before times[{k}] = {float(tk)!r}; AUC undefined")
        keep = np.ones(est.size, dtype=bool)  # keep the last of each run of tied scores
        keep[:-1] = np.abs(np.diff(est_o)) > tol
        tpr = np.concatenate(([0.0], tp[keep] / tp[-1]))
        fpr = np.concatenate(([0.0], fp[keep] / fp[-1]))
        scores[k] = np.trapezoid(tpr, fpr)
    if grid.size == 1:
        return scores, float(scores[0])
    s = _KaplanMeier(t, e)(grid, "times")
    drop = -np.diff(np.concatenate(([1.0], s)))
    if s[-1] == 1.0:
        raise UndefinedMetricError("no test event before the last time point; mean AUC undefined")
    return scores, float((scores * drop).sum() / (1.0 - s[-1]))


def brier_score(train_time: Any, train_event: Any, time: Any, event: Any, surv: Any,
                times: Any) -> np.ndarray:
    """IPCW Brier score at each of ``times`` (= ``sksurv.metrics.brier_score(...)[1]``).

    ``surv`` is ``N x T``: predicted P(T > times[k]). Patients with an event by t count
    ``S^2 / G(T_i)``, those still at risk ``(1 - S)^2 / G(t)``; censored-before-t count 0.

    G is looked up only where a weight uses it: at ``times`` and at the events up to the
    last of them. A test patient followed beyond the training follow-up (censored, or with
    an event after the last time point) needs no G at its own time, so it does not make the
    score undefined, as it does in scikit-survival (which looks G up at every test time and
    refuses); wherever scikit-survival gives a score, the two are equal (tested)."""
    t, e = _labels("", time, event)
    if not e.any():  # as scikit-survival: IPCW scores need at least one observed event
        raise UndefinedMetricError("all patients are censored (event is all False)")
    grid = _check_grid(times, t)
    s = np.asarray(surv, dtype=np.float64)
    if s.ndim == 1 and grid.size == 1:
        s = s.reshape(-1, 1)
    s = _as_float("surv", s, ndim=2)
    _same_length(time=t, event=e, surv=s)
    if s.shape[1] != grid.size:
        raise ValueError(f"surv: expected {grid.size} columns (one per time), got {s.shape[1]}")
    tt, te = _labels("train_", train_time, train_event)
    cens = _KaplanMeier(tt, te, reverse=True)
    g_t = cens(grid, "times")
    weighted = e & (t <= grid[-1])  # the only rows whose own G(T_i) enters a term
    g_y = np.ones_like(t)
    g_y[weighted] = cens(t[weighted], "time", np.flatnonzero(weighted))
    g_t[g_t == 0] = np.inf  # sksurv: zero censoring survival -> weight 0
    g_y[g_y == 0] = np.inf
    case = (t[:, None] <= grid[None, :]) & e[:, None]
    control = t[:, None] > grid[None, :]
    terms = np.square(s) * case / g_y[:, None] + np.square(1.0 - s) * control / g_t[None, :]
    return terms.mean(axis=0)


def integrated_brier_score(train_time: Any, train_event: Any, time: Any, event: Any,
                           surv: Any, times: Any) -> float:
    """Trapezoidal integral of :func:`brier_score` over ``times``, divided by its span
    (= ``sksurv.metrics.integrated_brier_score``)."""
    grid = _as_grid("times", times)
    if grid.size < 2:
        raise ValueError("times: the integrated Brier score needs at least two time points")
    bs = brier_score(train_time, train_event, time, event, surv, grid)
    return float(np.trapezoid(bs, grid) / (grid[-1] - grid[0]))


# ---------------------------------------------------------------------------- calibration
def _as_prob(name: str, x: Any) -> np.ndarray:
    """1-d float64 array of probabilities in [0, 1]."""
    arr = _as_float(name, x)
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not a probability in [0, 1]")
    return arr


def _as_horizon(t: Any) -> float:
    try:
        val = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"t = {t!r}: expected one number (the calibration time)") from None
    if not np.isfinite(val) or val <= 0:
        raise ValueError(f"t = {val!r}: the calibration time must be finite and > 0")
    return val


def _calibration_inputs(time: Any, event: Any, surv_at_t: Any,
                        t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    tm, e = _labels("", time, event)
    s = _as_prob("surv_at_t", surv_at_t)
    _same_length(time=tm, event=e, surv_at_t=s)
    horizon = _as_horizon(t)
    if not (e & (tm <= horizon)).any():
        raise UndefinedMetricError(f"no event at or before t = {horizon!r}; calibration at t "
                                   "is undefined")
    return tm, e, s, horizon


def _cloglog_risk(surv: np.ndarray) -> np.ndarray:
    """``log(-log S)`` = cloglog of the event probability ``1 - S``. Only exact 0 and 1 are
    moved (to the nearest floats that keep it finite): clipping at a visible level such
    as 1e-10 would shift real predictions of very high risk and bias the fits."""
    return np.log(-np.log(np.clip(surv, np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0))))


def survival_at_own_time(surv: Any, times: Any, time: Any,
                         interpolation: str = "step") -> np.ndarray:
    """Each patient's predicted survival at its own time: curve ``surv[i]`` at ``time[i]``.

    Why: D-calibration and the observed/expected intercept need one value per patient,
    S_i(T_i), not the ``N x N`` table that evaluating every curve at every time would give.
    ``surv`` is ``N x G`` on the increasing grid ``times``. ``"step"``: right-continuous
    (Cox/Breslow curves), 1 before the first grid time; ``"linear"``: straight lines between
    grid points, from S(0) = 1 if the grid starts after 0 (DeepHit curves, as
    ``curves.survival_at``). Past the last grid time the last value is held.
    """
    grid = _as_grid("times", times)
    s = _as_float("surv", surv, ndim=2)
    t = _as_time("time", time)
    n = _same_length(surv=s, time=t)
    if s.shape[1] != grid.size:
        raise ValueError(f"surv: expected {grid.size} columns (one per time), got {s.shape[1]}")
    if interpolation not in ("step", "linear"):
        raise ValueError(f"interpolation = {interpolation!r}: use 'step' or 'linear'")
    if grid[0] > 0:
        grid = np.concatenate(([0.0], grid))
        s = np.concatenate([np.ones((n, 1)), s], axis=1)
    rows = np.arange(n)
    k = np.searchsorted(grid, t, side="right") - 1  # >= 0: grid[0] == 0 <= t
    if interpolation == "step" or grid.size == 1:
        return s[rows, k]
    k0 = np.minimum(k, grid.size - 2)
    frac = np.clip((t - grid[k0]) / (grid[k0 + 1] - grid[k0]), 0.0, 1.0)
    return s[rows, k0] + (s[rows, k0 + 1] - s[rows, k0]) * frac


@dataclass(frozen=True)
class DCalibration:
    """:func:`d_calibration`: Pearson's chi-square against uniform bins, its p-value, the
    (fractional) patient count per bin (lowest S first) and the ``n_bins + 1`` bin edges."""

    statistic: float
    p_value: float
    counts: np.ndarray
    edges: np.ndarray
    df: int


def d_calibration(event: Any, surv_at_time: Any, n_bins: int = 10) -> DCalibration:
    """D-calibration (Haider et al. 2020, JMLR 21(85), "Effective ways to build and evaluate
    individual survival distributions").

    Why: if the predicted curves are the true distributions, ``S_i(T_i)`` is uniform on
    [0, 1], so each of ``n_bins`` equal-width bins should hold ``N / n_bins`` patients;
    unlike a one-time-point calibration this checks the whole curve. ``surv_at_time[i]`` is
    patient i's predicted survival at its own observed time (:func:`survival_at_own_time`).
    Bin ``[k/B, (k+1)/B)`` (the top bin also holds S = 1). An uncensored patient adds 1 to
    its bin. A censored one with ``S = S_i(c_i)`` only tells us that ``S_i(T_i)`` lies
    below S, uniformly (the paper's assumption): its own bin ``[l, h)`` gets
    ``(S - l) / S`` and every bin wholly below S gets ``1 / (B S)`` (S = 0: all in the
    lowest bin). The statistic is Pearson's chi-square against ``N / B`` per bin with
    ``B - 1`` degrees of freedom (= ``scipy.stats.chisquare``); a small p-value rejects
    calibration. Equals SurvivalEVAL's ``d_calibration`` away from bin edges (tested).
    """
    e = _as_event("event", event)
    s = _as_prob("surv_at_time", surv_at_time)
    n = _same_length(event=e, surv_at_time=s)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins = {n_bins!r}: need an integer >= 2")
    if n == 0:
        raise UndefinedMetricError("no patients: D-calibration is undefined")
    b = np.minimum(np.floor(s * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(b[e], minlength=n_bins).astype(np.float64)
    sc, bc = s[~e], b[~e]
    zero = sc == 0
    safe = np.where(zero, 1.0, sc)
    own = np.where(zero, 1.0, (sc - bc / n_bins) / safe)
    counts += np.bincount(bc, weights=own, minlength=n_bins)
    # a censored patient in bin k gives 1 / (B S) to each of bins 0..k-1: bin j receives
    # the sum over censored patients in bins above it (a suffix sum)
    below = np.bincount(bc, weights=np.where(zero, 0.0, 1.0 / (n_bins * safe)),
                        minlength=n_bins)
    counts[:-1] += np.cumsum(below[::-1])[::-1][1:]
    expected = n / n_bins
    stat = float(np.square(counts - expected).sum() / expected)
    return DCalibration(statistic=stat, p_value=float(stats.chi2.sf(stat, n_bins - 1)),
                        counts=counts, edges=np.linspace(0.0, 1.0, n_bins + 1), df=n_bins - 1)


def cox_partial_likelihood(time: np.ndarray, event: np.ndarray, x: np.ndarray,
                           information: bool = True
                           ) -> Callable[[np.ndarray], tuple[float, np.ndarray, Any]]:  # fmt: skip
    """The Cox log partial likelihood (Breslow ties) of covariates ``x`` as a function of
    the coefficients: ``beta -> (loglik, gradient, observed information or None)``.

    One descending sort of the times up front; each call is prefix sums over it (the risk
    set of ``T`` is everyone up to the end of ``T``'s tie group), shifted by the largest
    linear predictor so ``exp`` cannot overflow. Shared by the calibration models here and
    the stack's weights (``train.stacking``)."""
    order = np.argsort(-np.asarray(time, dtype=np.float64), kind="stable")
    xo = np.asarray(x, dtype=np.float64)[order]
    ev = np.asarray(event, dtype=bool)[order]
    last = _run_end(np.asarray(time, dtype=np.float64)[order]) - 1
    outer = xo[:, :, None] * xo[:, None, :] if information else None

    def parts(beta: np.ndarray) -> tuple[float, np.ndarray, Any]:
        eta = xo @ beta
        top = eta.max()
        w = np.exp(eta - top)
        s0 = np.cumsum(w)[last][ev]
        s1 = np.cumsum(w[:, None] * xo, axis=0)[last][ev]
        mean = s1 / s0[:, None]
        loglik = float((eta[ev] - top - np.log(s0)).sum())
        grad = (xo[ev] - mean).sum(axis=0)
        if outer is None:
            return loglik, grad, None
        s2 = np.cumsum(w[:, None, None] * outer, axis=0)[last][ev]
        info = (s2 / s0[:, None, None] - mean[:, :, None] * mean[:, None, :]).sum(axis=0)
        return loglik, grad, info

    return parts


def _cox_fit(time: np.ndarray, event: np.ndarray, x: np.ndarray, max_iter: int = 100,
             tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cox proportional hazards by Newton–Raphson (Breslow ties), for a few covariates.

    Returns ``(beta, covariance, center, eta)``: the coefficients, the inverse observed
    information, the covariate means the fit was centred on and the centred linear predictor
    ``(x - center) @ beta`` of each patient (in input order). Non-convergence or a singular
    information matrix raise :class:`UndefinedMetricError`.
    """
    p = x.shape[1]
    center = x.mean(axis=0)
    parts = cox_partial_likelihood(time, event, x - center)
    beta = np.zeros(p)
    loglik, grad, info = parts(beta)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            raise UndefinedMetricError("the calibration Cox model is singular (too few "
                                       "distinct predictions or events)") from None
        scale = 1.0
        while True:
            new = beta + scale * step
            new_ll, new_grad, new_info = parts(new)
            if (np.isfinite(new_ll) and new_ll >= loglik - 1e-12) or scale < 1e-6:
                break
            scale /= 2
        done = (abs(new_ll - loglik) < tol * (abs(loglik) + 1.0)
                and np.abs(scale * step).max() < 1e-6)
        beta, loglik, grad, info = new, new_ll, new_grad, new_info
        if done:
            break
    else:
        raise UndefinedMetricError(f"the calibration Cox model did not converge in {max_iter} "
                                   "Newton steps (predictions perfectly separating events?)")
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        raise UndefinedMetricError("the calibration Cox model is singular") from None
    return beta, cov, center, (x - center) @ beta


def _breslow_at(time: np.ndarray, event: np.ndarray, eta: np.ndarray, t: float) -> float:
    """Breslow baseline cumulative hazard (at linear predictor 0) at ``t``:
    ``sum over events T_i <= t of 1 / sum_{T_j >= T_i} exp(eta_j)``."""
    order = np.argsort(-time, kind="stable")
    last = _run_end(time[order]) - 1
    s0 = np.cumsum(np.exp(eta[order]))[last]
    use = event[order] & (time[order] <= t)
    return float((1.0 / s0[use]).sum())


def _truncate(time: np.ndarray, event: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Administrative censoring at t: events after t say nothing about calibration at t."""
    return np.minimum(time, t), event & (time <= t)


@dataclass(frozen=True)
class CalibrationFit:
    """:func:`calibration_slope`: slope (1 = ideal) and intercept (0 = ideal) at ``t`` with
    their standard errors, the observed events by ``t`` and the expected number."""

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float
    observed: float
    expected: float
    t: float


def calibration_slope(time: Any, event: Any, surv_at_t: Any, t: float,
                      surv_at_followup: Any) -> CalibrationFit:
    """Calibration slope and intercept of predicted survival at time ``t``.

    Slope: the coefficient of a Cox model, fitted on the test data administratively
    censored at ``t``, whose only covariate is the predicted ``log(-log S_i(t))`` (the
    complementary log-log of the predicted event probability; for a proportional-hazards
    model it is the linear predictor plus a constant). 1 is ideal, < 1 means predictions
    too extreme (overfitting), > 1 too moderate (van Houwelingen 2000, Stat Med 19:3401;
    Crowson, Atkinson & Therneau 2016, Stat Methods Med Res 25:1692).

    Intercept ("calibration in the large", Crowson et al. 2016): ``log(O / E)``, the
    intercept of the Poisson model ``d_i ~ offset(log e_i)``, with ``O`` the events by
    ``t`` and ``E = sum_i -log S_i(min(T_i, t))`` the cumulative hazard each patient was
    predicted to accrue over its own follow-up up to ``t``. Why this and not the Kaplan–Meier
    O/E at t: E uses every patient's own follow-up, so censoring needs no model at all
    (``O - E`` is a martingale at the true model), and if the true cumulative hazard is
    ``exp(a)`` times the predicted one the intercept is exactly ``a`` on the same
    cloglog scale as the slope. Its standard error is ``1 / sqrt(O)``.

    ``surv_at_t``: predicted S_i(t); ``surv_at_followup``: predicted S_i(min(T_i, t))
    (:func:`survival_at_own_time` with ``np.minimum(time, t)``).
    """
    tm, e, s, horizon = _calibration_inputs(time, event, surv_at_t, t)
    s_own = _as_prob("surv_at_followup", surv_at_followup)
    _same_length(time=tm, surv_at_followup=s_own)
    tt, et = _truncate(tm, e, horizon)
    if np.ptp(s) == 0:
        raise UndefinedMetricError("all predicted S(t) are equal: the calibration slope is "
                                   "undefined")
    beta, cov, _, _ = _cox_fit(tt, et, _cloglog_risk(s)[:, None])
    observed = float(et.sum())
    expected = float(-np.log(np.clip(s_own, 1e-12, 1.0)).sum())
    if expected <= 0:
        raise UndefinedMetricError("every predicted S(min(T, t)) is 1: no expected events, "
                                   "the intercept is undefined")
    return CalibrationFit(slope=float(beta[0]), slope_se=float(np.sqrt(cov[0, 0])),
                          intercept=float(np.log(observed / expected)),
                          intercept_se=float(1.0 / np.sqrt(observed)),
                          observed=observed, expected=expected, t=horizon)


# Harrell's default knot quantiles for restricted cubic splines (rms::rcspline.eval)
_RCS_QUANTILES = {
    3: (0.10, 0.50, 0.90),
    4: (0.05, 0.35, 0.65, 0.95),
    5: (0.05, 0.275, 0.50, 0.725, 0.95),
    6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
    7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975),
}


def _rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Restricted cubic spline basis (Harrell's parametrisation, ``rms::rcs``, norm 2):
    ``x`` and, for ``j < K - 1``, ``[(x - k_j)+^3 - (x - k_{K-1})+^3 (k_K - k_j) / (k_K -
    k_{K-1}) + (x - k_K)+^3 (k_{K-1} - k_j) / (k_K - k_{K-1})] / (k_K - k_1)^2``: cubic
    between the knots, linear beyond the outer ones. ``N x (K - 1)``."""
    k = knots
    kk, km = k[-1], k[-2]
    cols = [x]
    for kj in k[:-2]:
        f = (np.maximum(x - kj, 0.0) ** 3
             - np.maximum(x - km, 0.0) ** 3 * (kk - kj) / (kk - km)
             + np.maximum(x - kk, 0.0) ** 3 * (km - kj) / (kk - km))
        cols.append(f / (kk - k[0]) ** 2)
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class IntegratedCalibration:
    """:func:`integrated_calibration_index`: mean (ICI), median (E50), 90th percentile (E90)
    and maximum (Emax) of ``|predicted - observed|``, with the per-patient predicted event
    probability by ``t`` and the smoothed observed one (for a calibration curve)."""

    ici: float
    e50: float
    e90: float
    emax: float
    predicted: np.ndarray
    observed: np.ndarray
    t: float


def integrated_calibration_index(time: Any, event: Any, surv_at_t: Any, t: float,
                                 knots: int = 3, truncate: bool = False) -> IntegratedCalibration:
    """Integrated calibration index at ``t`` (Austin, Harrell & van Klaveren 2020, Stat Med
    39:2714, "Graphical calibration curves and the integrated calibration index (ICI) for
    survival models").

    Why: one number for how far predicted risks are from observed ones across the whole
    range of predictions, on the probability scale (a slope and an intercept can be ideal
    while the curve bends). As the paper's Cox variant: fit a Cox model of the outcome on a
    restricted cubic spline (``knots`` knots at Harrell's default quantiles) of the
    predicted ``log(-log S_i(t))``; its Breslow survival at ``t`` gives each patient's
    smoothed observed event probability ``P_i``; ICI = mean ``|1 - S_i(t) - P_i|``. The
    model uses the whole follow-up, as the paper (and SurvivalEVAL's
    ``integrated_calibration_index``, which this equals on untied times: tested);
    ``truncate=True`` censors it at ``t`` instead, so the smoother's proportional hazards
    need only hold up to ``t`` (as :func:`calibration_slope`). Ties: Breslow.
    """
    tm, e, s, horizon = _calibration_inputs(time, event, surv_at_t, t)
    if knots not in _RCS_QUANTILES:
        raise ValueError(f"knots = {knots!r}: use one of {sorted(_RCS_QUANTILES)}")
    cll = _cloglog_risk(s)
    k = np.quantile(cll, _RCS_QUANTILES[knots])
    if (np.diff(k) <= 0).any():
        raise UndefinedMetricError(f"too few distinct predictions for {knots} spline knots "
                                   f"(knot values {k.tolist()})")
    tt, et = _truncate(tm, e, horizon) if truncate else (tm, e)
    _, _, _, eta = _cox_fit(tt, et, _rcs_basis(cll, k))
    h0 = _breslow_at(tt, et, eta, horizon)
    observed = 1.0 - np.exp(-h0 * np.exp(eta))
    predicted = 1.0 - s
    err = np.abs(predicted - observed)
    return IntegratedCalibration(ici=float(err.mean()), e50=float(np.median(err)),
                                 e90=float(np.quantile(err, 0.9)), emax=float(err.max()),
                                 predicted=predicted, observed=observed, t=horizon)


def _km_greenwood(time: np.ndarray, event: np.ndarray, t: float) -> tuple[float, float, int]:
    """Kaplan–Meier S(t), Greenwood's ``sum d / (n (n - d))`` up to t, and the number still
    at risk just after t."""
    uniq, inv = np.unique(time, return_inverse=True)
    deaths = np.bincount(inv, weights=event.astype(np.float64))
    at_risk = time.size - np.concatenate(([0], np.cumsum(np.bincount(inv))[:-1]))
    use = (uniq <= t) & (deaths > 0)
    d, r = deaths[use], at_risk[use]
    surv = float(np.prod(1.0 - d / r))
    var = float(np.sum(np.divide(d, r * (r - d), out=np.full(d.size, np.inf), where=r > d)))
    return surv, var, int((time > t).sum())


def _tie_kept_groups(s: np.ndarray, groups: int) -> list[np.ndarray]:
    """Patients by descending ``s`` in ``groups`` equal-size groups (``np.array_split``),
    except that a block of equal predictions is never split: it goes whole to the side of
    the boundary holding more of it (the earlier on a draw), and a group left empty is
    dropped. Why: split by input order, patients with the same prediction landed in two
    groups, whose observed survival then depended on how the rows were sorted. Without
    ties the groups are exactly ``np.array_split``'s."""
    order = np.argsort(-s, kind="stable")
    v = s[order]
    cuts = np.cumsum([len(p) for p in np.array_split(order, groups)])[:-1]
    moved = []
    for b in cuts:
        if 0 < b < v.size and v[b - 1] == v[b]:
            lo = int(np.searchsorted(-v, -v[b], side="left"))
            hi = int(np.searchsorted(-v, -v[b], side="right"))
            b = lo if hi - b > b - lo else hi
        moved.append(max(int(b), moved[-1] if moved else 0))
    return [p for p in np.split(order, moved) if p.size]


def calibration_table(time: Any, event: Any, surv_at_t: Any, t: float, groups: int = 10,
                      level: float = 0.95) -> pd.DataFrame:
    """Calibration-plot data at ``t``: patients in ``groups`` equal-size groups of predicted
    risk (group 1 = highest predicted S(t); equal predictions kept in one group, so sizes
    can differ and fewer groups come back when ties fill one), each with its mean predicted S(t) and the
    Kaplan–Meier S(t) of the group with a ``level`` confidence interval.

    Why: the classic grouped calibration plot; each group's observed survival handles
    censoring by Kaplan–Meier instead of dropping the censored. The interval is Greenwood's
    variance on the log(-log S) scale (Kalbfleisch–Prentice; lifelines'
    ``KaplanMeierFitter`` default), which stays inside [0, 1]; it is [1, 1] for a group
    without events by t and [0, 0] once S reaches 0. Columns: ``group, n, events`` (by t),
    ``at_risk`` (after t), ``predicted, observed, lower, upper``. A group whose follow-up
    ends before t with S > 0 raises :class:`UndefinedMetricError` (its S(t) is unknown):
    use fewer groups or an earlier t.
    """
    tm, e = _labels("", time, event)
    s = _as_prob("surv_at_t", surv_at_t)
    n = _same_length(time=tm, event=e, surv_at_t=s)
    horizon = _as_horizon(t)
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
        raise ValueError(f"groups = {groups!r}: need an integer >= 1")
    if groups > n:
        raise ValueError(f"groups = {groups} is more than the {n} patients")
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1)")
    z = float(stats.norm.ppf(0.5 + level / 2))
    rows = []
    for g, idx in enumerate(_tie_kept_groups(s, groups), start=1):
        tg, eg = tm[idx], e[idx]
        obs, var, at_risk = _km_greenwood(tg, eg, horizon)
        if tg.max() < horizon and obs > 0:
            raise UndefinedMetricError(
                f"group {g}: follow-up ends at {float(tg.max())!r} < t = {horizon!r} with "
                f"S = {obs:.3g}; its S(t) is unknown (use fewer groups or an earlier t)")
        if obs in (0.0, 1.0):
            low = high = obs
        else:
            half = z * np.sqrt(var) / abs(np.log(obs))
            low, high = obs ** np.exp(half), obs ** np.exp(-half)
        rows.append({"group": g, "n": int(idx.size), "events": int((eg & (tg <= horizon)).sum()),
                     "at_risk": at_risk, "predicted": float(s[idx].mean()), "observed": obs,
                     "lower": float(low), "upper": float(high)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ bootstrap
class BootstrapCI(tuple):
    """``(estimate, low, high)``; also ``.n_used`` and ``.n_skipped`` resamples."""

    n_used: int
    n_skipped: int

    def __new__(cls, estimate: float, low: float, high: float, n_used: int,
                n_skipped: int) -> BootstrapCI:
        obj = super().__new__(cls, (estimate, low, high))
        obj.n_used = n_used
        obj.n_skipped = n_skipped
        return obj

    @property
    def estimate(self) -> float:
        return self[0]

    @property
    def low(self) -> float:
        return self[1]

    @property
    def high(self) -> float:
        return self[2]


def bootstrap_ci(metric: Callable[..., float], *arrays: Any, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric(*arrays)``, resampling patients (rows).

    Every array is indexed along its first axis by the same resample. A resample on which
    the metric is undefined (it raises :class:`UndefinedMetricError`, or returns a
    non-finite value) is skipped and counted in ``.n_skipped``, never averaged in as NaN.
    """
    if not arrays:
        raise ValueError("bootstrap_ci: pass at least one array to resample")
    if n < 1:
        raise ValueError(f"n = {n}: need at least one resample")
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1)")
    arrs = [np.asarray(a) for a in arrays]
    size = _same_length(**{f"arrays[{i}]": a for i, a in enumerate(arrs)})
    estimate = float(metric(*arrs))
    if not np.isfinite(estimate):
        raise UndefinedMetricError(f"metric returned {estimate!r} on the full data")
    rng = np.random.default_rng(seed)
    values = []
    skipped = 0
    for _ in range(n):
        idx = rng.integers(0, size, size)
        try:
            v = float(metric(*(a[idx] for a in arrs)))
        except UndefinedMetricError:
            skipped += 1
            continue
        if np.isfinite(v):
            values.append(v)
        else:
            skipped += 1
    if not values:
        raise UndefinedMetricError(f"the metric was undefined on all {n} bootstrap resamples")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return BootstrapCI(estimate, float(low), float(high), len(values), skipped)
