import json

import numpy as np
import pytest

from modalsurv.config import PreprocessConfig
from modalsurv.train.preprocess import BagScaler, Preprocessor, join_arrays, split_arrays


def test_pipeline_per_modality_and_absent_rows_stay_zero(cohort):
    pp = Preprocessor(PreprocessConfig(rna_top_variance_genes=20, rna_pca=4)).fit(cohort)
    assert pp.kinds == {"clinical": "clinical", "rna": "rna", "slide": "vector", "wsi": "bag"}
    out = pp.transform(cohort)
    assert out.features["rna"].shape == (len(cohort), 4)
    absent = ~cohort.present["rna"]
    assert absent.any() and np.all(out.features["rna"][absent] == 0)
    assert all(np.isfinite(x).all() for x in out.features.values())
    # training statistics: present slide rows are standardised
    s = out.features["slide"][cohort.present["slide"]]
    np.testing.assert_allclose(s.mean(0), 0, atol=1e-5)


def test_vector_pca_only_above_min_dim(cohort):
    cfg = PreprocessConfig(
        rna_pca=4, rna_top_variance_genes=20, vector_pca=3, vector_pca_min_dim=10
    )
    assert Preprocessor(cfg).fit(cohort).dims["slide"] == 3  # slide is 12-d > 10
    cfg = PreprocessConfig(
        rna_pca=4, rna_top_variance_genes=20, vector_pca=3, vector_pca_min_dim=12
    )
    assert Preprocessor(cfg).fit(cohort).dims["slide"] == 12


def test_bag_scaler_uses_valid_training_tiles_only():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4, 3))
    mask = np.ones((5, 4), dtype=bool)
    mask[:, 3] = False
    x[:, 3] = 1e6  # padding: must not move the statistics
    present = np.array([True, True, True, True, False])
    x[4] = -1e6  # absent patient
    sc = BagScaler().fit(x, mask, present)
    tiles = x[:4, :3].reshape(-1, 3)
    np.testing.assert_allclose(sc.mean_, tiles.mean(0))
    np.testing.assert_allclose(sc.scale_, tiles.std(0))
    out = sc.transform(x, mask, present)
    assert np.all(out[:, 3] == 0) and np.all(out[4] == 0)


def test_state_round_trip_is_json_and_plain_arrays(cohort):
    pp = Preprocessor(PreprocessConfig(rna_top_variance_genes=20, rna_pca=4)).fit(cohort)
    meta, arrays = pp.get_state()
    meta = json.loads(json.dumps(meta))
    assert all(a.dtype != object for a in arrays.values())
    back = Preprocessor.from_state(meta, arrays)
    a, b = pp.transform(cohort), back.transform(cohort)
    for m in a.features:
        np.testing.assert_array_equal(a.features[m], b.features[m])


def test_transform_rejects_other_width(cohort, make_cohort):
    pp = Preprocessor(PreprocessConfig(rna_top_variance_genes=20, rna_pca=4)).fit(cohort)
    other = cohort.with_modality("slide", np.zeros((len(cohort), 5)))
    with pytest.raises(ValueError, match="slide"):
        pp.transform(other)


def test_split_join_arrays_nested():
    state = {"a": np.arange(3), "b": [np.ones(2), "x"], "c": {"d": 1.5, "e": np.float32(2)}}
    arrays: dict = {}
    meta = split_arrays(state, arrays, "p/")
    json.dumps(meta)
    back = join_arrays(meta, arrays)
    np.testing.assert_array_equal(back["a"], state["a"])
    np.testing.assert_array_equal(back["b"][0], np.ones(2))
    assert back["b"][1] == "x" and back["c"] == {"d": 1.5, "e": 2.0}


def test_auto_log1p_only_for_raw_scale_training_data(cohort):
    raw = Preprocessor(PreprocessConfig(rna_top_variance_genes=20, rna_pca=4)).fit(cohort)
    assert raw.steps["rna"].log1p is True  # gamma counts, max > 50
    logged = cohort.with_modality(
        "rna", np.log2(cohort.features["rna"] + 1) - 3, cohort.present["rna"]
    )
    pp = Preprocessor(PreprocessConfig(rna_top_variance_genes=20, rna_pca=4)).fit(logged)
    assert pp.steps["rna"].log1p is False
    assert np.isfinite(pp.transform(logged).features["rna"]).all()
