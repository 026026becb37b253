"""Survival metrics: Harrell / Uno concordance, time-dependent AUC, Brier score, bootstrap CIs.

Every score equals its scikit-survival namesake (``concordance_index_censored``,
``concordance_index_ipcw``, ``cumulative_dynamic_auc``, ``brier_score``,
``integrated_brier_score``) on valid input; the tests check this on random data with ties.
The implementations are our own and vectorised: Harrell's C runs in O(n log n) without a
Python loop per patient (see :func:`_later_smaller`), and the inverse-probability-of-censoring
weights come from our own Kaplan–Meier estimate of the censoring distribution
(:class:`_KaplanMeier`, mirroring ``sksurv.nonparametric.CensoringDistributionEstimator``).

Bad input (NaN/inf, negative times, mismatched lengths) raises ``ValueError`` naming the
argument and the first bad index; data on which a score is undefined (all censored, no
comparable pair, no case at a time point) raise :class:`UndefinedMetricError`. No metric
returns a silent NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "BootstrapCI",
    "UndefinedMetricError",
    "bootstrap_ci",
    "brier_score",
    "concordance_index",
    "integrated_brier_score",
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
    return _concordance(t, e, r, None, tied_tol)


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

    def __call__(self, t: np.ndarray, name: str) -> np.ndarray:
        """S(t) (right-continuous). Beyond the last time: 0 if the curve reached 0, else an
        error (the estimate is undefined there)."""
        t = np.asarray(t, dtype=np.float64)
        beyond = t > self.times[-1]
        if beyond.any() and self.prob[-1] > 0:
            i = _first_bad(beyond)
            raise UndefinedMetricError(
                f"{name}[{i}] = {float(t.reshape(-1)[i])!r} is beyond the largest training "
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
    g = cens(time[sel], "time (events)")
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
    use = np.ones(t.size, dtype=bool) if tau is None else t < float(tau)
    w = _ipcw_events(train_time, train_event, t, e, use)
    return _concordance(t, e, r, np.square(w), tied_tol)


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
        keep[:-1] = np.abs(np.diff(est_o)) > tied_tol
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
    """
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
    g_y = cens(t, "time")
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
