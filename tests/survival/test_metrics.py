"""Metrics equal scikit-survival on random data with ties; bad input raises ValueError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sksurv import metrics as skm
from sksurv.util import Surv

from modalsurv.survival import metrics as M

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def survival_data(draw, min_n=2, max_n=40):
    """(time, event, risk) with frequent ties in time and in risk."""
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    tied_time = draw(st.booleans())
    tied_risk = draw(st.booleans())
    time = rng.integers(1, 6, n).astype(float) if tied_time else rng.exponential(5.0, n) + 0.01
    event = rng.random(n) < draw(st.floats(0.2, 0.9))
    risk = rng.integers(0, 4, n).astype(float) if tied_risk else rng.normal(size=n)
    return time, event, risk


def _sk_or_none(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kw)
        except ValueError:
            return None
    return out


@SETTINGS
@given(survival_data())
def test_harrell_equals_sksurv(data):
    time, event, risk = data
    ref = _sk_or_none(skm.concordance_index_censored, event, time, risk)
    if ref is None or not np.isfinite(ref[0]):
        with pytest.raises(ValueError):
            M.concordance_index(time, event, risk)
    else:
        assert M.concordance_index(time, event, risk) == pytest.approx(ref[0], abs=1e-12)


def test_harrell_near_ties_use_tolerance():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([True, True, False, True])
    risk = np.array([1.0, 1.0 + 5e-9, 0.5, 0.2])
    ref = skm.concordance_index_censored(event, time, risk)[0]
    assert M.concordance_index(time, event, risk) == pytest.approx(ref, abs=1e-12)


def test_later_smaller_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 64, 65, 300):
        seq = rng.permutation(n)
        ref = np.array([(seq[i + 1:] < seq[i]).sum() for i in range(n)])
        np.testing.assert_array_equal(M._later_smaller(seq), ref)


def _train_from(time, event, rng):
    """Training labels covering the test follow-up (one censored patient past the end)."""
    extra = rng.exponential(5.0, 15)
    tt = np.concatenate([time, extra, [time.max() + 1.0]])
    te = np.concatenate([event, rng.random(15) < 0.5, [False]])
    return tt, te


@SETTINGS
@given(survival_data(min_n=5), st.booleans())
def test_uno_equals_sksurv(data, use_tau):
    time, event, risk = data
    rng = np.random.default_rng(int(time.sum() * 1000) % 2**31)
    tt, te = _train_from(time, event, rng)
    tau = float(np.median(time)) if use_tau else None
    ref = _sk_or_none(skm.concordance_index_ipcw, Surv.from_arrays(te, tt),
                      Surv.from_arrays(event, time), risk, tau=tau)
    if ref is None or not np.isfinite(ref[0]):
        with pytest.raises(ValueError):
            M.uno_concordance(tt, te, time, event, risk, tau=tau)
    else:
        got = M.uno_concordance(tt, te, time, event, risk, tau=tau)
        assert got == pytest.approx(ref[0], abs=1e-12)


def _grid(time, k):
    lo, hi = time.min(), time.max()
    return np.unique(np.quantile(time[(time >= lo) & (time < hi)], np.linspace(0.1, 0.8, k)))


@SETTINGS
@given(survival_data(min_n=8), st.integers(1, 4), st.booleans())
def test_auc_equals_sksurv(data, k, per_time):
    time, event, risk = data
    if time.min() == time.max():
        return
    rng = np.random.default_rng(len(time))
    tt, te = _train_from(time, event, rng)
    times = _grid(time, k)
    est = np.stack([risk + rng.integers(0, 2, risk.size) * j for j in range(times.size)], 1) \
        if per_time else risk
    ref = _sk_or_none(skm.cumulative_dynamic_auc, Surv.from_arrays(te, tt),
                      Surv.from_arrays(event, time), est, times)
    if ref is None or not np.all(np.isfinite(ref[0])) or not np.isfinite(ref[1]):
        with pytest.raises(ValueError):
            M.time_dependent_auc(tt, te, time, event, est, times)
        return
    auc, mean = M.time_dependent_auc(tt, te, time, event, est, times)
    np.testing.assert_allclose(auc, ref[0], atol=1e-12)
    assert mean == pytest.approx(ref[1], abs=1e-12)


@SETTINGS
@given(survival_data(min_n=6), st.integers(2, 5))
def test_brier_and_ibs_equal_sksurv(data, k):
    time, event, _ = data
    if time.min() == time.max():
        return
    rng = np.random.default_rng(len(time) + 1)
    tt, te = _train_from(time, event, rng)
    times = _grid(time, k)
    surv = np.sort(rng.random((time.size, times.size)), axis=1)[:, ::-1]
    ref = _sk_or_none(skm.brier_score, Surv.from_arrays(te, tt), Surv.from_arrays(event, time),
                      surv, times)
    if ref is None:
        with pytest.raises(ValueError):
            M.brier_score(tt, te, time, event, surv, times)
        return
    np.testing.assert_allclose(M.brier_score(tt, te, time, event, surv, times), ref[1],
                               atol=1e-12)
    if times.size >= 2:
        ibs = skm.integrated_brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(event, time),
                                         surv, times)
        got = M.integrated_brier_score(tt, te, time, event, surv, times)
        assert got == pytest.approx(ibs, abs=1e-12)


def test_censoring_all_events_in_train_gives_unit_weights():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([True, False, True, True, False])
    risk = np.array([5.0, 4.0, 3.0, 1.0, 2.0])
    tt, te = np.array([1.0, 2.0, 3.0, 6.0]), np.ones(4, dtype=bool)
    got = M.uno_concordance(tt, te, time, event, risk)
    assert got == pytest.approx(M.concordance_index(time, event, risk), abs=1e-12)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("time", "event", "risk", "match"),
    [
        ([1.0, np.nan, 2.0], [1, 0, 1], [0.1, 0.2, 0.3], r"time\[1\].*not finite"),
        ([1.0, 2.0, np.inf], [1, 0, 1], [0.1, 0.2, 0.3], r"time\[2\].*not finite"),
        ([1.0, -2.0, 3.0], [1, 0, 1], [0.1, 0.2, 0.3], r"time\[1\].*negative"),
        ([1.0, 2.0, 3.0], [1, 0, 1], [0.1, np.nan, 0.3], r"risk\[1\].*not finite"),
        ([1.0, 2.0, 3.0], [1, 2, 1], [0.1, 0.2, 0.3], r"event\[1\]"),
        ([1.0, 2.0, 3.0], [1, 0], [0.1, 0.2, 0.3], r"mismatched lengths.*event has 2"),
        ([1.0, 2.0, 3.0], [0, 0, 0], [0.1, 0.2, 0.3], r"all patients are censored"),
        ([1.0, 1.0, 1.0], [1, 1, 1], [0.1, 0.2, 0.3], r"no comparable pair"),
        ([1.0], [1], [0.1], r"at least two"),
    ],
)
def test_concordance_bad_input(time, event, risk, match):
    with pytest.raises(ValueError, match=match):
        M.concordance_index(np.asarray(time), np.asarray(event), np.asarray(risk))


def test_time_metrics_bad_input():
    rng = np.random.default_rng(0)
    time = rng.exponential(5.0, 30) + 0.1
    event = rng.random(30) < 0.6
    tt, te = _train_from(time, event, rng)
    surv = np.full((30, 2), 0.5)
    ok = [float(np.quantile(time, 0.3)), float(np.quantile(time, 0.6))]
    with pytest.raises(ValueError, match="within the test follow-up"):
        M.brier_score(tt, te, time, event, surv, [ok[0], time.max() + 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        M.brier_score(tt, te, time, event, surv, [ok[1], ok[0]])
    with pytest.raises(ValueError, match=r"surv\[\(3, 1\)\].*not finite"):
        bad = surv.copy()
        bad[3, 1] = np.nan
        M.brier_score(tt, te, time, event, bad, ok)
    with pytest.raises(ValueError, match="expected 2 columns"):
        M.brier_score(tt, te, time, event, np.full((30, 3), 0.5), ok)
    with pytest.raises(ValueError, match=r"train_time\[0\].*negative"):
        M.uno_concordance(-tt, te, time, event, time)
    with pytest.raises(ValueError, match="beyond the largest training time"):
        M.uno_concordance([0.05, 0.1, 0.2], [1, 0, 1], time, event, time)
    with pytest.raises(ValueError, match="at least two time points"):
        M.integrated_brier_score(tt, te, time, event, surv[:, :1], ok[:1])
    with pytest.raises(ValueError, match=r"mismatched lengths"):
        M.time_dependent_auc(tt, te, time, event, time[:-1], ok)


# ------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_brackets_estimate_and_counts_skips():
    rng = np.random.default_rng(1)
    n = 200
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))
    event = rng.random(n) < 0.7
    res = M.bootstrap_ci(M.concordance_index, time, event, risk, n=200, seed=3)
    est, low, high = res
    assert low <= est <= high
    assert 0.5 < low < high < 1.0
    assert res.n_used + res.n_skipped == 200
    again = M.bootstrap_ci(M.concordance_index, time, event, risk, n=200, seed=3)
    assert tuple(again) == tuple(res)


def test_bootstrap_ci_skips_undefined_resamples():
    # one event among 3: many resamples contain no event or no comparable pair
    time = np.array([1.0, 2.0, 3.0])
    event = np.array([True, False, False])
    risk = np.array([0.9, 0.1, 0.5])
    res = M.bootstrap_ci(M.concordance_index, time, event, risk, n=300, seed=0)
    assert res.n_skipped > 0
    assert res.n_used + res.n_skipped == 300
    assert np.isfinite([res.estimate, res.low, res.high]).all()


def test_bootstrap_ci_bad_arguments():
    with pytest.raises(ValueError, match="mismatched lengths"):
        M.bootstrap_ci(M.concordance_index, np.ones(3), np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_ci(M.concordance_index, np.ones(3), np.ones(3), np.ones(3), level=1.5)
