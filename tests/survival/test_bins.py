"""TimeBins: fitted on training data only, past-last-cut censored, quantile cuts monotone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modalsurv.survival.bins import TimeBins


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    time = rng.exponential(20.0, n) + 0.1
    event = rng.random(n) < 0.6
    return time, event


def test_equidistant_cuts_and_bin_membership():
    bins = TimeBins(n_bins=4).fit([1.0, 2.0, 8.0], [1, 0, 1])
    np.testing.assert_allclose(bins.cuts, [0, 2, 4, 6, 8])
    idx, ev = bins.transform([0.0, 2.0, 2.0001, 8.0, 3.0], [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(idx, [0, 0, 1, 3, 1])  # bins are (cuts[k], cuts[k+1]]
    np.testing.assert_array_equal(ev, [True, True, False, True, True])
    assert idx.dtype == np.int64 and ev.dtype == np.bool_


def test_time_past_last_cut_is_censored_in_last_bin():
    bins = TimeBins(n_bins=5).fit(*_data())
    idx, ev = bins.transform([bins.cuts[-1] + 1.0, bins.cuts[-1] * 3], [1, 1])
    np.testing.assert_array_equal(idx, [4, 4])
    np.testing.assert_array_equal(ev, [False, False])


def test_fit_uses_training_data_only():
    train_t, train_e = _data(seed=1)
    bins = TimeBins(n_bins=10, scheme="quantile").fit(train_t, train_e)
    cuts = bins.cuts.copy()
    bins.transform(train_t * 5, train_e)  # transforming other data changes nothing
    np.testing.assert_array_equal(bins.cuts, cuts)
    other = TimeBins(n_bins=10, scheme="quantile").fit(train_t * 5, train_e)
    assert not np.allclose(other.cuts, cuts)
    assert bins.cuts[-1] == pytest.approx(train_t.max())


@pytest.mark.parametrize("n_bins", [1, 5, 30])
def test_quantile_cuts_strictly_increasing_and_balanced(n_bins):
    time, event = _data(n=2000, seed=2)
    bins = TimeBins(n_bins=n_bins, scheme="quantile").fit(time, event)
    assert bins.cuts.size == n_bins + 1
    assert bins.cuts[0] == 0 and np.all(np.diff(bins.cuts) > 0)
    if n_bins == 5:  # without censoring, KM quantiles = equal numbers of events per bin
        all_events = np.ones_like(event)
        idx, _ = TimeBins(n_bins=5, scheme="quantile").fit_transform(time, all_events)
        counts = np.bincount(idx, minlength=n_bins)
        assert counts.min() >= 0.9 * counts.mean()


def test_quantile_with_few_distinct_event_times_keeps_n_bins():
    time = np.array([1.0, 1.0, 2.0, 2.0, 10.0, 3.0])
    event = np.array([1, 1, 1, 1, 0, 0])
    bins = TimeBins(n_bins=6, scheme="quantile").fit(time, event)
    assert bins.cuts.size == 7
    assert np.all(np.diff(bins.cuts) > 0)
    assert bins.cuts[-1] == 10.0
    # the KM quantiles give [0, 1, 2, 10]; the widest bin is halved until there are six
    # (ties: the earlier bin first): (2, 10] -> 6, (2, 6] -> 4, (6, 10] -> 8
    np.testing.assert_array_equal(bins.cuts, [0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0])


def test_round_trip_through_json():
    bins = TimeBins(n_bins=7, scheme="quantile").fit(*_data())
    back = TimeBins.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert back.n_bins == 7 and back.scheme == "quantile"
    np.testing.assert_array_equal(back.cuts, bins.cuts)
    t, e = _data(seed=5)
    np.testing.assert_array_equal(back.transform(t, e)[0], bins.transform(t, e)[0])


def test_bad_input():
    with pytest.raises(ValueError, match="scheme"):
        TimeBins(scheme="log")
    with pytest.raises(ValueError, match="n_bins"):
        TimeBins(n_bins=0)
    with pytest.raises(ValueError, match=r"time\[1\] = -1.0"):
        TimeBins().fit([1.0, -1.0], [1, 1])
    with pytest.raises(ValueError, match=r"time\[0\] = nan"):
        TimeBins().fit([np.nan, 1.0], [1, 1])
    with pytest.raises(ValueError, match=r"event\[1\]"):
        TimeBins().fit([1.0, 2.0], [1, 3])
    with pytest.raises(ValueError, match="mismatched lengths"):
        TimeBins().fit([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="at least one training event"):
        TimeBins(scheme="quantile").fit([1.0, 2.0], [0, 0])
    with pytest.raises(RuntimeError, match="before fit"):
        TimeBins().transform([1.0], [1])
    with pytest.raises(ValueError, match="cuts"):
        TimeBins.from_dict({"n_bins": 2, "scheme": "equidistant", "cuts": [0.0, 2.0, 1.0]})
    for cuts in ([0.0, float("nan"), 2.0], [0.0, 1.0, float("inf")]):  # NaN passed diff > 0
        with pytest.raises(ValueError, match="finite"):
            TimeBins.from_dict({"n_bins": 2, "scheme": "equidistant", "cuts": cuts})
