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
        try:
            got = M.brier_score(tt, te, time, event, surv, times)
        except ValueError:
            return  # both refuse
        # defined here only through patients whose own G(T) no weight uses (followed past
        # the last time point): moved inside the training follow-up, still after every
        # time point, scikit-survival scores them and agrees
        assert times[-1] < tt.max()
        moved = np.where(time > times[-1], (times[-1] + tt.max()) / 2, time)
        ref = skm.brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(event, moved), surv,
                              times)  # fmt: skip
        np.testing.assert_allclose(got, ref[1], atol=1e-12)
        return
    np.testing.assert_allclose(M.brier_score(tt, te, time, event, surv, times), ref[1],
                               atol=1e-12)
    if times.size >= 2:
        ibs = skm.integrated_brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(event, time),
                                         surv, times)
        got = M.integrated_brier_score(tt, te, time, event, surv, times)
        assert got == pytest.approx(ibs, abs=1e-12)


def test_brier_needs_no_censoring_weight_past_the_last_time_point():
    """A test patient followed past the training follow-up (the longest training time an
    event) leaves the score defined: no weight uses G at its own time."""
    tt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    te = np.array([True, False, True, False, True, True])
    time = np.array([1.5, 2.5, 3.5, 4.5, 9.0, 8.0])  # 9.0 censored, 8.0 an event: both > 6
    event = np.array([True, False, True, True, False, True])
    times = np.array([2.0, 3.0, 4.0])
    surv = np.linspace(0.9, 0.2, 18).reshape(6, 3)
    with pytest.raises(ValueError):  # scikit-survival refuses the whole score
        skm.brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(event, time), surv, times)
    moved = np.where(time > 5.0, 5.5, time)  # after every time point, inside the follow-up
    ref = skm.brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(event, moved), surv, times)
    np.testing.assert_allclose(M.brier_score(tt, te, time, event, surv, times), ref[1],
                               atol=1e-12)
    ibs = M.integrated_brier_score(tt, te, time, event, surv, times)
    assert ibs == pytest.approx(skm.integrated_brier_score(
        Surv.from_arrays(te, tt), Surv.from_arrays(event, moved), surv, times), abs=1e-12)
    with pytest.raises(M.UndefinedMetricError):  # a time point past the follow-up: undefined
        M.brier_score(tt, te, time, event, surv, np.array([2.0, 3.0, 8.5]))


def test_censoring_all_events_in_train_gives_unit_weights():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([True, False, True, True, False])
    risk = np.array([5.0, 4.0, 3.0, 1.0, 2.0])
    tt, te = np.array([1.0, 2.0, 3.0, 6.0]), np.ones(4, dtype=bool)
    got = M.uno_concordance(tt, te, time, event, risk)
    assert got == pytest.approx(M.concordance_index(time, event, risk), abs=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_censoring_lookup_error_names_the_patients_index():
    """An event past the training follow-up is named by its index in ``time``, not by its
    place among the events (the subset the censoring curve is looked up on)."""
    tt, te = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1], dtype=bool)
    time = np.array([1.0, 2.0, 2.5, 9.0])
    event = np.array([0, 1, 0, 1], dtype=bool)
    risk = np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(M.UndefinedMetricError, match=r"^time\[3\] = 9.0 is beyond"):
        M.uno_concordance(tt, te, time, event, risk)
    with pytest.raises(M.UndefinedMetricError, match=r"^time\[3\] = 9.0 is beyond"):
        M.time_dependent_auc(tt, te, time, event, risk, [1.5])


@pytest.mark.parametrize("bad", [np.nan, -1e-3, np.inf, "x"])
def test_tied_tol_must_be_a_finite_non_negative_number(bad):
    """A NaN tolerance used to tie every pair silently (Harrell's C = 0.5)."""
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([True, True, False, True])
    risk = np.array([4.0, 3.0, 2.0, 1.0])
    tt, te = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1, 0, 1, 0], dtype=bool)
    with pytest.raises(ValueError, match="tied_tol"):
        M.concordance_index(time, event, risk, tied_tol=bad)
    with pytest.raises(ValueError, match="tied_tol"):
        M.uno_concordance(tt, te, time, event, risk, tied_tol=bad)
    with pytest.raises(ValueError, match="tied_tol"):
        M.time_dependent_auc(tt, te, time, event, risk, [2.5], tied_tol=bad)
    assert M.concordance_index(time, event, risk, tied_tol=0) == 1.0


def test_uno_tau_nan_is_named():
    """tau = NaN truncated every pair away and read as "no comparable pair"."""
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([True, True, False, True])
    tt, te = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1, 0, 1, 0], dtype=bool)
    risk = np.array([4.0, 3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"tau = nan"):
        M.uno_concordance(tt, te, time, event, risk, tau=float("nan"))
    with pytest.raises(ValueError, match=r"tau = 'late'"):
        M.uno_concordance(tt, te, time, event, risk, tau="late")
    assert M.uno_concordance(tt, te, time, event, risk, tau=np.inf) == 1.0


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


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_ci_is_the_percentile_interval_of_the_resampled_metric(level):
    """The interval is the (1 - level) / 2 and (1 + level) / 2 quantiles of the metric over
    patient resamples drawn by ``default_rng(seed).integers``: replayed here with
    scikit-survival's C-index, so the bounds (not only their order) are checked."""
    from sksurv.metrics import concordance_index_censored

    rng = np.random.default_rng(5)
    n = 60
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))
    event = rng.random(n) < 0.7
    res = M.bootstrap_ci(M.concordance_index, time, event, risk, n=150, seed=3, level=level)
    replay = np.random.default_rng(3)
    values = []
    for _ in range(150):
        idx = replay.integers(0, n, n)
        values.append(concordance_index_censored(event[idx], time[idx], risk[idx])[0])
    tail = 100 * (1 - level) / 2
    expected = np.percentile(values, [tail, 100 - tail])
    assert res.n_used == 150 and res.n_skipped == 0
    np.testing.assert_allclose([res.low, res.high], expected, rtol=0, atol=1e-12)


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


# ---------------------------------------------------------------------------- calibration
def _weibull(n, seed, beta=1.0, k=1.5, lam=5.0, cmax=12.0):
    """Weibull PH data, H(t | x) = (t / lam)^k exp(beta x), uniform censoring on [0, cmax].

    Built from ``rng.random`` only (Box–Muller, inverse CDFs), so the same seed gives the
    same data in the scratch environment the SurvivalEVAL reference numbers came from.
    """
    rng = np.random.default_rng(seed)
    x = np.sqrt(-2 * np.log(rng.random(n))) * np.cos(2 * np.pi * rng.random(n))
    t_event = lam * (-np.log(rng.random(n)) / np.exp(beta * x)) ** (1 / k)
    t_cens = cmax * rng.random(n)
    return x, np.minimum(t_event, t_cens), t_event <= t_cens


def _weibull_surv(t, x, beta=1.0, k=1.5, lam=5.0):
    return np.exp(-((np.asarray(t) / lam) ** k) * np.exp(beta * x))


@pytest.fixture(scope="module")
def big_cohort():
    return _weibull(5000, 0)


def test_survival_at_own_time_step_and_linear():
    times = np.array([1.0, 2.0, 4.0])
    surv = np.array([[0.9, 0.6, 0.2], [0.8, 0.8, 0.5], [0.9, 0.6, 0.2], [0.9, 0.6, 0.2]])
    own = np.array([0.5, 2.0, 3.0, 9.0])
    step = M.survival_at_own_time(surv, times, own, "step")
    np.testing.assert_allclose(step, [1.0, 0.8, 0.6, 0.2])
    lin = M.survival_at_own_time(surv, times, own, "linear")
    # from S(0) = 1 to S(1) = 0.9; exactly on a grid time; halfway 2 -> 4; held past 4
    np.testing.assert_allclose(lin, [0.95, 0.8, 0.4, 0.2])


@pytest.mark.parametrize("interpolation", ["linear", "step"])
def test_survival_at_own_time_is_the_diagonal_of_curves(interpolation):
    from modalsurv.survival import curves

    rng = np.random.default_rng(0)
    pmf = rng.dirichlet(np.ones(6), size=7)
    cuts = np.array([0.0, 1.0, 2.5, 3.0, 5.0, 8.0])
    own = np.array([0.0, 0.4, 1.0, 2.7, 5.0, 7.9, 12.0])
    grid = np.linspace(0.0, 10.0, 41)
    ref = np.diag(curves.survival_at(pmf, cuts, own, interpolation))
    on_cuts = curves.survival_at(pmf, cuts, cuts, interpolation)
    got = M.survival_at_own_time(on_cuts, cuts, own, interpolation)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    if interpolation == "step":  # a finer grid holding the same steps changes nothing
        fine = curves.survival_at(pmf, cuts, grid, "step")
        np.testing.assert_allclose(M.survival_at_own_time(fine, grid, own, "step"), ref)


def test_survival_at_own_time_bad_input():
    with pytest.raises(ValueError, match="expected 3 columns"):
        M.survival_at_own_time(np.ones((2, 2)), [1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        M.survival_at_own_time(np.ones((2, 2)), [2.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="mismatched lengths"):
        M.survival_at_own_time(np.ones((2, 2)), [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="interpolation"):
        M.survival_at_own_time(np.ones((2, 2)), [1.0, 2.0], [1.0, 2.0], "cubic")


def test_d_calibration_hand_example():
    """Four bins; censored mass spread by hand as in Haider et al. 2020."""
    s = np.array([0.1, 0.6, 0.9, 0.5, 0.3, 1.0])
    e = np.array([True, True, True, False, False, False])
    # events: bins [0, .25), [.5, .75), [.75, 1] get 1 each
    # censored S = 0.5 (bin [.5, .75)): own (0.5 - 0.5) / 0.5 = 0, below 0.25 / 0.5 = 0.5 each
    # censored S = 0.3 (bin [.25, .5)): own 0.05 / 0.3 = 1/6, below 0.25 / 0.3 = 5/6
    # censored S = 1 (top bin): 1/4 everywhere
    want = np.array([1 + 0.5 + 5 / 6 + 0.25, 0.5 + 1 / 6 + 0.25, 1 + 0 + 0.25, 1 + 0.25])
    res = M.d_calibration(e, s, n_bins=4)
    np.testing.assert_allclose(res.counts, want)
    assert res.counts.sum() == pytest.approx(6.0)
    stat = float(((want - 1.5) ** 2).sum() / 1.5)
    assert res.statistic == pytest.approx(stat)
    assert res.p_value == pytest.approx(float(stats_chi2_sf(stat, 3)))
    assert res.df == 3
    np.testing.assert_allclose(res.edges, [0, 0.25, 0.5, 0.75, 1.0])


def stats_chi2_sf(x, df):
    from scipy import stats

    return stats.chi2.sf(x, df)


def test_d_calibration_equals_survivaleval():
    """Expected numbers: SurvivalEVAL 0.9.0 ``evaluations.calibration.distributional.
    distribution_calibration.d_calibration(pred_probs, event_indicators, 10)``, run on
    this data in a scratch venv (numpy 2.4.6); its histogram lists the highest-S bin first,
    ours the lowest, hence the reversal."""
    rng = np.random.default_rng(11)
    s = rng.random(300)
    e = rng.random(300) < 0.6
    s[:4] = [0.0, 1.0, 0.0, 1.0]  # the edge cases: S = 0 / 1, event / censored
    e[:4] = [True, True, False, False]
    res = M.d_calibration(e, s)
    assert res.statistic == pytest.approx(68.58773234209346, rel=1e-12)
    assert res.p_value == pytest.approx(2.878940085727346e-11, rel=1e-9)
    hist = [17.606493347964204, 17.964289479983982, 20.44701384480954, 17.183293987663195,
            26.3817282232174, 23.666588295360526, 34.67832147447933, 33.67858348231888,
            43.15035212148233, 65.24333574272062]
    np.testing.assert_allclose(res.counts[::-1], hist, rtol=1e-12)

    x, time, event = _weibull(400, 3)
    res = M.d_calibration(event, _weibull_surv(time, x, beta=1.4, lam=6.0))
    assert res.statistic == pytest.approx(11.474607764926295, rel=1e-12)
    assert res.p_value == pytest.approx(0.24457347302060067, rel=1e-9)
    hist = [56.137308267965665, 43.25232406509747, 37.46895378881826, 37.689121064067464,
            43.30403409407157, 41.361018352671834, 29.37847610365107, 34.9044469749833,
            35.20361122909827, 41.300706059575106]
    np.testing.assert_allclose(res.counts[::-1], hist, rtol=1e-12)


def test_d_calibration_accepts_true_curves_and_rejects_wrong_ones(big_cohort):
    x, time, event = big_cohort
    good = M.d_calibration(event, _weibull_surv(time, x))
    assert good.p_value > 0.01
    assert good.counts.sum() == pytest.approx(len(time))
    bad = M.d_calibration(event, _weibull_surv(time, x, beta=2.0))
    assert bad.p_value < 1e-6 and bad.statistic > 10 * good.statistic


def test_d_calibration_bad_input():
    with pytest.raises(ValueError, match=r"surv_at_time\[1\].*not a probability"):
        M.d_calibration([1, 0], [0.5, 1.2])
    with pytest.raises(ValueError, match="mismatched lengths"):
        M.d_calibration([1, 0, 1], [0.5, 0.2])
    with pytest.raises(ValueError, match="n_bins"):
        M.d_calibration([1, 0], [0.5, 0.2], n_bins=1)
    with pytest.raises(ValueError, match=r"surv_at_time\[0\].*not finite"):
        M.d_calibration([1, 0], [np.nan, 0.2])
    with pytest.raises(M.UndefinedMetricError, match="no patients"):
        M.d_calibration(np.array([], dtype=bool), np.array([]))


def _slope_inputs(x, time, beta=1.0, shift=0.0, t=4.0):
    """Predicted S(t) and S(min(T, t)) of a model whose cumulative hazard is the true one
    with log-hazard ``beta * x`` and an extra factor exp(shift)."""
    s_t = _weibull_surv(t, x, beta) ** np.exp(shift)
    s_own = _weibull_surv(np.minimum(time, t), x, beta) ** np.exp(shift)
    return s_t, s_own


def test_calibration_slope_of_the_true_model_is_one(big_cohort):
    x, time, event = big_cohort
    s_t, s_own = _slope_inputs(x, time)
    res = M.calibration_slope(time, event, s_t, 4.0, s_own)
    assert abs(res.slope - 1.0) < 3 * res.slope_se and res.slope_se < 0.05
    assert abs(res.intercept) < 3 * res.intercept_se and res.intercept_se < 0.05
    assert res.observed == float((event & (time <= 4.0)).sum())
    assert res.t == 4.0


def test_calibration_slope_of_doubled_log_hazard_is_half(big_cohort):
    x, time, event = big_cohort
    s_t, s_own = _slope_inputs(x, time, beta=2.0)
    res = M.calibration_slope(time, event, s_t, 4.0, s_own)
    assert res.slope == pytest.approx(0.5, abs=0.05)
    s_t, s_own = _slope_inputs(x, time, beta=0.5)  # too moderate: slope about 2
    assert M.calibration_slope(time, event, s_t, 4.0, s_own).slope == pytest.approx(2.0, abs=0.15)


def test_calibration_intercept_recovers_a_hazard_shift(big_cohort):
    """Predicted cumulative hazard exp(-0.5) times the truth: intercept ~ 0.5, slope ~ 1."""
    x, time, event = big_cohort
    s_t, s_own = _slope_inputs(x, time, shift=-0.5)
    res = M.calibration_slope(time, event, s_t, 4.0, s_own)
    assert res.intercept == pytest.approx(0.5, abs=3 * res.intercept_se)
    assert res.slope == pytest.approx(1.0, abs=3 * res.slope_se)
    assert res.intercept == pytest.approx(np.log(res.observed / res.expected))


def test_calibration_slope_equals_lifelines_cox():
    """The slope is lifelines' CoxPHFitter coefficient on the data censored at t."""
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    x, time, event = _weibull(300, 5)
    s_t, s_own = _slope_inputs(x, time, beta=1.3, shift=0.2, t=3.0)
    res = M.calibration_slope(time, event, s_t, 3.0, s_own)
    df = pd.DataFrame({"cll": np.log(-np.log(s_t)), "T": np.minimum(time, 3.0),
                       "E": (event & (time <= 3.0)).astype(int)})
    cph = lifelines.CoxPHFitter().fit(df, "T", "E")
    assert res.slope == pytest.approx(float(cph.params_["cll"]), rel=1e-6)
    assert res.slope_se == pytest.approx(float(cph.standard_errors_["cll"]), rel=1e-5)


def test_cox_fit_equals_sksurv_breslow_with_ties():
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    rng = np.random.default_rng(4)
    n = 120
    xs = rng.normal(size=(n, 3))
    time = rng.integers(1, 15, n).astype(float)  # many tied times
    event = rng.random(n) < 0.7
    beta, cov, center, eta = M._cox_fit(time, event, xs)
    ref = CoxPHSurvivalAnalysis(ties="breslow", tol=1e-12).fit(xs, Surv.from_arrays(event, time))
    np.testing.assert_allclose(beta, ref.coef_, rtol=1e-7)
    np.testing.assert_allclose(eta, (xs - center) @ beta)
    h0 = M._breslow_at(time, event, eta, 7.0)
    want = np.array([f(7.0) for f in ref.predict_survival_function(xs)])
    np.testing.assert_allclose(np.exp(-h0 * np.exp(eta)), want, rtol=1e-6)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_rcs_basis_matches_harrell_formula_and_is_linear_in_the_tails():
    knots = np.array([-1.0, 0.5, 2.0])
    x = np.linspace(-4.0, 5.0, 301)
    b = M._rcs_basis(x, knots)
    k1, k2, k3 = knots
    pos = lambda v: np.maximum(v, 0.0) ** 3  # noqa: E731
    f = (pos(x - k1) - pos(x - k2) * (k3 - k1) / (k3 - k2) + pos(x - k3) * (k2 - k1) / (k3 - k2))
    np.testing.assert_allclose(b, np.stack([x, f / (k3 - k1) ** 2], 1), atol=1e-12)
    b5 = M._rcs_basis(x, np.array([-2.0, -0.5, 0.5, 1.5, 3.0]))
    assert b5.shape == (301, 4)
    for tail in (x < -2.0, x > 3.0):  # linear beyond the outer knots: no curvature
        assert tail.sum() > 10
        np.testing.assert_allclose(np.diff(b5[tail], 2, axis=0), 0.0, atol=1e-9)
    inner = (x > -2.0) & (x < 3.0)
    assert np.abs(np.diff(b5[inner][:, 1:], 2, axis=0)).max() > 1e-6  # cubic inside


def test_ici_equals_survivaleval():
    """Expected numbers: SurvivalEVAL 0.9.0 ``evaluations.calibration.single_time.
    integrated_calibration_index(1 - S(4), time, event, 4.0, knots=k)`` in a scratch venv
    (Cox on a natural-cubic-spline basis of the same space, Efron ties = Breslow here as no
    time is tied). Agreement to ~1e-8: the two Newton fits stop at different tolerances.
    SurvivalEVAL clips predictions to [1e-10, 1 - 1e-10] before the cloglog (we only move
    exact 0 and 1), so both get the clipped curve; some S here are below 1e-10."""
    x, time, event = _weibull(400, 3)
    s = _weibull_surv(4.0, x, beta=1.4, lam=6.0)
    assert s.min() < 1e-10
    s = np.clip(s, 1e-10, 1 - 1e-10)
    want = {3: (0.08704813629749727, 0.09197091960754983, 0.14653301026896054,
                0.14802309249161727),
            4: (0.08563781234994337, 0.09372809765282192, 0.14151877650169814,
                0.14368385500663955)}
    for knots, ref in want.items():
        res = M.integrated_calibration_index(time, event, s, 4.0, knots=knots)
        np.testing.assert_allclose([res.ici, res.e50, res.e90, res.emax], ref, rtol=1e-6)


def test_ici_small_for_the_true_model_large_for_a_wrong_one(big_cohort):
    x, time, event = big_cohort
    good = M.integrated_calibration_index(time, event, _weibull_surv(4.0, x), 4.0)
    assert good.ici < 0.015 and good.e90 < 0.03
    assert good.e50 <= good.e90 <= good.emax
    np.testing.assert_allclose(good.predicted, 1 - _weibull_surv(4.0, x))
    for beta in (2.0, 0.5):
        bad = M.integrated_calibration_index(time, event, _weibull_surv(4.0, x, beta), 4.0)
        assert bad.ici > 0.06 > 4 * good.ici
    trunc = M.integrated_calibration_index(time, event, _weibull_surv(4.0, x), 4.0,
                                           truncate=True)
    assert trunc.ici < 0.015


def test_ici_equals_a_hand_fitted_lifelines_cox_on_the_spline_basis():
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    x, time, event = _weibull(500, 8)
    s = _weibull_surv(3.0, x, beta=0.7, lam=4.0)
    for truncate in (False, True):
        res = M.integrated_calibration_index(time, event, s, 3.0, knots=4, truncate=truncate)
        cll = np.log(-np.log(s))
        basis = M._rcs_basis(cll, np.quantile(cll, [0.05, 0.35, 0.65, 0.95]))
        df = pd.DataFrame(basis, columns=[f"b{j}" for j in range(basis.shape[1])])
        df["T"] = np.minimum(time, 3.0) if truncate else time
        df["E"] = (event & (time <= 3.0)) if truncate else event
        cph = lifelines.CoxPHFitter().fit(df, "T", "E")
        observed = 1 - cph.predict_survival_function(df, times=[3.0]).to_numpy()[0]
        np.testing.assert_allclose(res.observed, observed, atol=1e-6)
        assert res.ici == pytest.approx(np.mean(np.abs(1 - s - observed)), abs=1e-6)


def test_calibration_table_equals_lifelines_kaplan_meier(big_cohort):
    lifelines = pytest.importorskip("lifelines")
    x, time, event = big_cohort
    x, time, event = x[:800], time[:800], event[:800]
    s = _weibull_surv(4.0, x)
    tab = M.calibration_table(time, event, s, 4.0, groups=8)
    assert list(tab.columns) == ["group", "n", "events", "at_risk", "predicted", "observed",
                                 "lower", "upper"]
    assert tab["n"].tolist() == [100] * 8 and tab["group"].tolist() == list(range(1, 9))
    order = np.argsort(-s, kind="stable")
    for g, idx in enumerate(np.array_split(order, 8)):
        row = tab.iloc[g]
        kmf = lifelines.KaplanMeierFitter().fit(time[idx], event[idx])
        assert row["observed"] == pytest.approx(float(kmf.survival_function_at_times(4.0)[4.0]))
        ci = kmf.confidence_interval_survival_function_.loc[:4.0].iloc[-1]
        assert row["lower"] == pytest.approx(float(ci.iloc[0]), rel=1e-9)
        assert row["upper"] == pytest.approx(float(ci.iloc[1]), rel=1e-9)
        assert row["predicted"] == pytest.approx(float(s[idx].mean()))
        assert row["events"] == int((event[idx] & (time[idx] <= 4.0)).sum())
        assert row["at_risk"] == int((time[idx] > 4.0).sum())
    assert tab["predicted"].is_monotonic_decreasing
    assert (tab["lower"] <= tab["observed"]).all() and (tab["observed"] <= tab["upper"]).all()
    # the true model: every group's interval covers its mean prediction, or nearly so
    assert (tab["predicted"].between(tab["lower"] - 0.03, tab["upper"] + 0.03)).all()


def test_calibration_table_edge_groups():
    time = np.array([1.0, 2.0, 5.0, 6.0, 1.0, 2.0, 3.0, 7.0])
    event = np.array([0, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    s = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    tab = M.calibration_table(time, event, s, 4.0, groups=2)
    assert tab.loc[0, ["observed", "lower", "upper"]].tolist() == [1.0, 1.0, 1.0]  # no event
    assert tab.loc[1, "observed"] == pytest.approx(0.25)
    with pytest.raises(M.UndefinedMetricError, match="group 1: follow-up ends"):
        M.calibration_table(time, event, s, 6.5, groups=2)
    dead = M.calibration_table([1.0, 2.0], [1, 1], [0.2, 0.1], 3.0, groups=1)
    assert dead.loc[0, ["observed", "lower", "upper"]].tolist() == [0.0, 0.0, 0.0]


def test_calibration_functions_bad_input(big_cohort):
    x, time, event = big_cohort
    s = _weibull_surv(4.0, x)
    with pytest.raises(ValueError, match=r"t = -1.0"):
        M.calibration_slope(time, event, s, -1.0, s)
    with pytest.raises(ValueError, match=r"surv_at_t\[2\].*not a probability"):
        bad = s.copy()
        bad[2] = 1.5
        M.integrated_calibration_index(time, event, bad, 4.0)
    with pytest.raises(ValueError, match="mismatched lengths"):
        M.calibration_slope(time, event, s, 4.0, s[:-1])
    with pytest.raises(M.UndefinedMetricError, match="no event at or before"):
        M.calibration_slope(time, event, s, 1e-9, s)
    with pytest.raises(M.UndefinedMetricError, match="all predicted S"):
        M.calibration_slope(time, event, np.full(time.size, 0.5), 4.0, s)
    with pytest.raises(M.UndefinedMetricError, match="distinct predictions"):
        M.integrated_calibration_index(time, event, np.round(s, 0), 4.0)
    with pytest.raises(ValueError, match="knots"):
        M.integrated_calibration_index(time, event, s, 4.0, knots=2)
    with pytest.raises(ValueError, match="groups = 0"):
        M.calibration_table(time, event, s, 4.0, groups=0)
    with pytest.raises(ValueError, match="more than the 3 patients"):
        M.calibration_table(time[:3], event[:3], s[:3], 4.0, groups=4)


def test_calibration_table_keeps_equal_predictions_in_one_group():
    """Split by input order, two patients with the same predicted S(t) could fall in two
    groups, so the observed survival of each depended on how the rows were sorted."""
    rng = np.random.default_rng(3)
    n = 60
    s = np.repeat([0.9, 0.7, 0.5, 0.3], [20, 13, 17, 10]).astype(float)  # a clinical-only model
    time = rng.exponential(5.0, n) + 0.1
    event = rng.random(n) < 0.7
    tab = M.calibration_table(time, event, s, 2.0, groups=3)
    assert tab["n"].sum() == n
    # cuts at 20 and 40; the 0.5 block spans 33..49, 10 of it after the cut: moved whole
    assert tab["n"].tolist() == [20, 13, 17 + 10]
    np.testing.assert_allclose(tab["predicted"], [0.9, 0.7, (17 * 0.5 + 10 * 0.3) / 27])
    perm = rng.permutation(n)
    again = M.calibration_table(time[perm], event[perm], s[perm], 2.0, groups=3)
    np.testing.assert_allclose(tab.to_numpy(float), again.to_numpy(float), rtol=1e-12)
    one = M.calibration_table(time, event, np.full(n, 0.5), 2.0, groups=4)  # all tied
    assert one["n"].tolist() == [n] and one["group"].tolist() == [1]
