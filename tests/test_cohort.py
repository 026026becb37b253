import numpy as np
import pandas as pd
import pytest

from modalsurv.cohort import Cohort, coerce_events
from modalsurv.errors import DataError, LabelError


def _cohort(n=6, seed=0):
    rng = np.random.default_rng(seed)
    present = np.array([True, False, True, True, True, False])[:n]
    bag_mask = np.ones((n, 4), dtype=bool)
    bag_mask[0, 2:] = False
    return Cohort(
        ids=[f"p{i}" for i in range(n)],
        time=rng.uniform(1, 50, n),
        event=rng.integers(0, 2, n),
        features={
            "clinical": rng.normal(size=(n, 3)),
            "wsi": rng.normal(size=(n, 4, 5)),
        },
        present={"wsi": present},
        bag_mask={"wsi": bag_mask},
        meta=pd.DataFrame({"site": list("aabbcc")[:n]}),
        feature_names={"clinical": ["age", "psa", "isup"]},
    )


def test_basic_views():
    c = _cohort()
    assert len(c) == 6
    assert c.modalities == ["clinical", "wsi"]
    assert c.is_bag("wsi") and not c.is_bag("clinical")
    assert c.dim("wsi") == 5
    assert c.features["clinical"].dtype == np.float32
    assert c.present["clinical"].all()
    assert c.n_events == int(c.event.sum())
    r = repr(c)
    assert "N=6" in r and "wsi[4x5, 33% missing]" in r and "events=" in r


def test_absent_rows_and_masked_tiles_are_zeroed():
    c = _cohort()
    assert np.all(c.features["wsi"][1] == 0)
    assert np.all(c.features["wsi"][0, 2:] == 0)
    assert not c.bag_mask["wsi"][1].any()  # absent patient: no valid tiles


def test_subset_and_select_keep_alignment():
    c = _cohort()
    s = c.subset([4, 0])
    assert list(s.ids) == ["p4", "p0"]
    np.testing.assert_array_equal(s.features["clinical"], c.features["clinical"][[4, 0]])
    assert list(s.meta["site"]) == ["c", "a"]
    np.testing.assert_array_equal(s.bag_mask["wsi"], c.bag_mask["wsi"][[4, 0]])
    b = c.subset(np.array([True, False, False, False, False, True]))
    assert list(b.ids) == ["p0", "p5"]
    only = c.select(["wsi"])
    assert only.modalities == ["wsi"] and "clinical" not in only.feature_names
    with pytest.raises(DataError, match="rna"):
        c.select(["rna"])


def test_with_modality_and_index_of():
    c = _cohort()
    c2 = c.with_modality("mri", np.ones((6, 2)), present=np.array([1, 1, 0, 1, 1, 1]))
    assert "mri" not in c.features
    assert c2.missingness()["mri"] == pytest.approx(1 / 6)
    np.testing.assert_array_equal(c.index_of(["p3", "p1"]), [3, 1])
    with pytest.raises(DataError, match="p9"):
        c.index_of(["p9"])


def test_survival_array_for_sksurv():
    c = _cohort()
    y = c.survival_array()
    assert y.dtype.names == ("event", "time")
    np.testing.assert_array_equal(y["event"], c.event)


@pytest.mark.parametrize(
    "raw, expected",
    [([0, 1], [False, True]), ([True, False], [True, False]), (["0", "1.0", "0.0", "1"], [0, 1, 0, 1]),
     (np.array([0.0, 1.0]), [False, True])],
)
def test_event_coercion(raw, expected):
    np.testing.assert_array_equal(coerce_events(raw), np.asarray(expected, dtype=bool))


@pytest.mark.parametrize("bad", [[2], ["yes"], [0.5], [None]])
def test_bad_events_name_the_patient(bad):
    with pytest.raises(LabelError, match="patient 'x'.*event"):
        Cohort(["x"], [1.0], bad)


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf])
def test_bad_times(t):
    with pytest.raises(LabelError, match="patient 'b'"):
        Cohort(["a", "b"], [1.0, t], [0, 1])


def test_validation_errors():
    with pytest.raises(DataError, match="unique"):
        Cohort(["a", "a"], [1, 2], [0, 1])
    with pytest.raises(LabelError, match="time has 1 values for 2"):
        Cohort(["a", "b"], [1], [0, 1])
    with pytest.raises(DataError, match="shape"):
        Cohort(["a", "b"], [1, 2], [0, 1], features={"x": np.ones((3, 2))})
    with pytest.raises(DataError, match="present mask"):
        Cohort(["a", "b"], [1, 2], [0, 1], features={"x": np.ones((2, 2))}, present={"x": [1]})
    with pytest.raises(DataError, match="inf"):
        Cohort(["a", "b"], [1, 2], [0, 1], features={"x": np.array([[1, np.inf], [0, 0]])})
    with pytest.raises(DataError, match="at least one valid instance"):
        Cohort(["a"], [1], [0], features={"w": np.ones((1, 2, 3))}, bag_mask={"w": np.zeros((1, 2))})
    with pytest.raises(DataError, match="feature names"):
        Cohort(["a"], [1], [0], features={"x": np.ones((1, 2))}, feature_names={"x": ["one"]})


def test_nan_values_kept_in_present_rows():
    c = Cohort(["a", "b"], [1, 2], [0, 1], features={"x": np.array([[np.nan, 1.0], [2.0, 3.0]])})
    assert np.isnan(c.features["x"][0, 0])


def test_stack_patients_vectors_and_padded_bags():
    from modalsurv.cohort import stack_patients

    x, present, mask = stack_patients([np.ones(3), None], 3)
    assert x.shape == (2, 3) and mask is None
    np.testing.assert_array_equal(present, [True, False])
    assert not x[1].any()
    x, present, mask = stack_patients([np.ones((2, 3)), None, np.ones((4, 3))], 3)
    assert x.shape == (3, 4, 3)
    np.testing.assert_array_equal(mask.sum(axis=1), [2, 0, 4])
    assert not x[0, 2:].any()
    x, present, mask = stack_patients([None, None], 3, bag=True)
    assert x.shape == (2, 1, 3) and not mask.any() and not present.any()


def test_copy_false_adopts_fresh_arrays_and_default_copies():
    x = np.ones((3, 2, 4), dtype=np.float32)
    mask = np.array([[True, False], [True, True], [True, True]])
    present = np.array([True, True, False])
    kept = Cohort(["a", "b", "c"], [1, 2, 3], [1, 0, 1], features={"w": x}, present={"w": present},
                  bag_mask={"w": mask})  # fmt: skip
    assert not np.shares_memory(kept.features["w"], x) and x.min() == 1.0  # caller's array intact
    adopted = Cohort(["a", "b", "c"], [1, 2, 3], [1, 0, 1], features={"w": x},
                     present={"w": present}, bag_mask={"w": mask}, copy=False)  # fmt: skip
    assert np.shares_memory(adopted.features["w"], x)
    np.testing.assert_array_equal(adopted.features["w"], kept.features["w"])
    assert x[0, 1].max() == 0.0 and x[2].max() == 0.0  # zeroed in place
    frozen = np.ones((2, 3), dtype=np.float32)
    frozen.flags.writeable = False  # e.g. a read-only memory map: copied, never written
    co = Cohort(["a", "b"], [1, 2], [1, 0], features={"v": frozen},
                present={"v": np.array([True, False])}, copy=False)  # fmt: skip
    assert not np.shares_memory(co.features["v"], frozen) and frozen.min() == 1.0
    sub = kept.subset([2, 0])
    assert not np.shares_memory(sub.features["w"], kept.features["w"])
    np.testing.assert_array_equal(sub.features["w"], kept.features["w"][[2, 0]])


def test_inf_found_in_a_later_chunk_names_its_patient():
    d = 1 << 21  # 8 MiB rows: the inf scan works in chunks of 8 rows
    x = np.zeros((11, d), dtype=np.float32)
    x[9, 5] = -np.inf
    ids = [f"P{i}" for i in range(11)]
    with pytest.raises(DataError, match="inf") as err:
        Cohort(ids, np.ones(11), np.zeros(11), features={"big": x}, copy=False)
    assert err.value.patient == "P9"


def test_concat_cohorts_pads_bags_and_keeps_meta():
    from modalsurv.cohort import concat_cohorts

    a = _cohort()
    b = Cohort(["q0", "q1"], [3.0, 4.0], [1, 0],
               features={"clinical": np.ones((2, 3)), "wsi": np.ones((2, 6, 5))},
               meta=pd.DataFrame({"site": ["z", "z"]}),
               feature_names={"clinical": ["age", "psa", "isup"]})  # fmt: skip
    c = concat_cohorts([a, b])
    assert list(c.ids) == [*a.ids, "q0", "q1"] and list(c.meta["site"]) == [*"aabbcc", "z", "z"]
    assert c.features["wsi"].shape == (8, 6, 5)
    np.testing.assert_array_equal(c.bag_mask["wsi"][:6, :4], a.bag_mask["wsi"])
    assert not c.bag_mask["wsi"][:6, 4:].any() and c.bag_mask["wsi"][6:].all()
    np.testing.assert_array_equal(c.features["wsi"][:6, :4], a.features["wsi"])
    np.testing.assert_array_equal(c.present["wsi"], [*a.present["wsi"], True, True])
    np.testing.assert_array_equal(c.time, [*a.time, 3.0, 4.0])
    assert c.feature_names["clinical"] == ["age", "psa", "isup"]
    with pytest.raises(DataError, match="duplicated: p0"):
        concat_cohorts([a, a])
    with pytest.raises(DataError, match="modalities"):
        concat_cohorts([a, b.select(["clinical"])])
    renamed = Cohort(["r0"], [1.0], [1], features={"clinical": np.ones((1, 3)),
                                                   "wsi": np.ones((1, 2, 5))})  # fmt: skip
    with pytest.raises(DataError, match="feature names of 'clinical' differ"):
        concat_cohorts([a, renamed])
    narrow = Cohort(["r0"], [1.0], [1], features={"clinical": np.ones((1, 2)),
                                                  "wsi": np.ones((1, 2, 5))})  # fmt: skip
    with pytest.raises(DataError, match="'clinical' has shape"):
        concat_cohorts([a, narrow])
    with pytest.raises(DataError, match="no cohort"):
        concat_cohorts([])


@pytest.mark.parametrize("events", [[1, 2], ["1", "2"], [1.0, 2.0]])
def test_events_coded_1_2_point_to_rs_survival_convention(events):
    with pytest.raises(LabelError, match=r"patient 'b'.*1 = censored, 2 = event.*status == 2"):
        Cohort(["a", "b"], [1.0, 2.0], events)


def test_indexing_empty_selection_and_a_mask_of_another_length():
    c = _cohort()
    for empty in ([], np.array([], dtype=np.int64), np.zeros(6, dtype=bool)):
        e = c[empty]
        assert len(e) == 0 and e.features["wsi"].shape == (0, 4, 5) and len(e.meta) == 0
    assert len(c.subset([])) == 0  # an empty list is float64 to NumPy: was an IndexError
    # a mask of another cohort's length used to select silently (flatnonzero of it)
    with pytest.raises(IndexError, match="6 patients"):
        c[np.array([True, False, True])]
    with pytest.raises(IndexError, match="6 patients"):
        c.subset(np.ones(8, dtype=bool))
    last = c[-1]
    assert list(last.ids) == ["p5"] and list(last.meta["site"]) == ["c"]


def test_with_modality_of_another_width_drops_the_old_feature_names():
    c = _cohort()
    same = c.with_modality("clinical", c.features["clinical"] + 1.0)
    assert same.feature_names["clinical"] == ["age", "psa", "isup"]  # same columns: kept
    wider = c.with_modality("clinical", np.zeros((6, 5)))
    # the 3 old names used to stay on 5 columns
    assert "clinical" not in wider.feature_names
    named = c.with_modality("clinical", np.zeros((6, 2)), feature_names=["a", "b"])
    assert named.feature_names["clinical"] == ["a", "b"]


def test_meta_indexed_by_patient_in_another_order_is_joined_by_id() -> None:
    """A meta frame indexed by patient id is matched by id, not taken row by row: in
    another order each patient used to get another patient's site."""
    meta = pd.DataFrame({"site": ["b", "a", "c"]}, index=["p2", "p1", "p3"])
    c = Cohort(["p1", "p2", "p3"], [1.0, 2.0, 3.0], [1, 0, 1], meta=meta)
    assert c.meta["site"].tolist() == ["a", "b", "c"]
    assert c.meta.index.tolist() == ["p1", "p2", "p3"]
    # a plain positional frame keeps its order
    c = Cohort(["p1", "p2", "p3"], [1.0, 2.0, 3.0], [1, 0, 1],
               meta=pd.DataFrame({"site": ["x", "y", "z"]}))  # fmt: skip
    assert c.meta["site"].tolist() == ["x", "y", "z"]
    assert c[[2, 0]].meta["site"].tolist() == ["z", "x"]
