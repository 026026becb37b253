import json

import numpy as np
import pytest

from modalsurv.cohort import Cohort
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


def _bags(rng, n=40, k=12, d=10):
    # tiles with a dominant 3-d structure, so the leading axes are well separated
    basis = rng.normal(size=(3, d)) * np.array([[5.0], [3.0], [2.0]])
    x = rng.normal(size=(n, k, 3)) @ basis + 0.3 * rng.normal(size=(n, k, d))
    mask = np.arange(k)[None, :] < rng.integers(3, k + 1, n)[:, None]
    return x, mask


def test_bag_pca_matches_scikit_learn_on_valid_training_tiles():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    x, mask = _bags(rng)
    present = np.ones(len(x), dtype=bool)
    present[-3:] = False
    x[~mask] = 1e6  # padding must not reach the components
    x[~present] = -1e6  # nor absent patients
    sc = BagScaler(pca=3).fit(x, mask, present)
    tiles = x[mask & present[:, None]]
    z = (tiles - tiles.mean(0)) / tiles.std(0)
    ref = PCA(n_components=3, svd_solver="full").fit(z)
    # same axes up to sign, in the same order
    np.testing.assert_allclose(np.abs(sc.components_ @ ref.components_.T), np.eye(3), atol=1e-8)
    out = sc.transform(x, mask, present)
    assert out.shape == (len(x), x.shape[1], 3) and out.dtype == np.float32
    valid = mask & present[:, None]
    np.testing.assert_allclose(
        np.abs(out[valid]), np.abs(ref.transform(z)), rtol=1e-4, atol=1e-4
    )
    assert np.all(out[~valid] == 0)
    assert sc.out_dim == 3


def test_bag_pca_auto_keeps_the_tile_axes_above_the_noise():
    """Tiles as frozen encoders give them: unit noise in 50-d plus two tile-level factors
    (variances 4 and 2) along unit directions spread over all dimensions."""
    rng = np.random.default_rng(4)
    n, k, d = 200, 12, 50
    dirs = rng.normal(size=(2, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    factors = rng.normal(size=(n, k, 2)) * np.sqrt([4.0, 2.0])
    x = rng.normal(size=(n, k, d)) + factors @ dirs
    mask = np.arange(k)[None, :] < rng.integers(3, k + 1, n)[:, None]
    present = np.ones(n, dtype=bool)
    sc = BagScaler(pca="auto").fit(x, mask, present)
    assert sc.out_dim == 2
    ref = BagScaler(pca=2).fit(x, mask, present)
    np.testing.assert_array_equal(sc.components_, ref.components_)
    assert np.all(np.abs(np.sum(sc.components_ * dirs, axis=1)) > 0.95)  # the true axes


def test_bag_pca_subsample_is_seeded_and_close_to_the_full_fit():
    rng = np.random.default_rng(3)
    x, mask = _bags(rng, n=80)
    present = np.ones(len(x), dtype=bool)
    full = BagScaler(pca=2).fit(x, mask, present)
    a = BagScaler(pca=2, max_fit_tiles=300).fit(x, mask, present)
    b = BagScaler(pca=2, max_fit_tiles=300).fit(x, mask, present)
    assert int((mask & present[:, None]).sum()) > 300
    np.testing.assert_array_equal(a.components_, b.components_)
    assert np.all(np.abs(np.sum(a.components_ * full.components_, axis=1)) > 0.99)


def test_bag_pca_state_round_trip_and_bundles_without_components():
    rng = np.random.default_rng(4)
    x, mask = _bags(rng)
    present = np.ones(len(x), dtype=bool)
    sc = BagScaler(pca=4).fit(x, mask, present)
    meta, arrays = {}, {}
    meta = split_arrays(sc.get_state(), arrays, prefix="wsi/")
    back = BagScaler.from_state(join_arrays(json.loads(json.dumps(meta)), arrays))
    np.testing.assert_array_equal(back.transform(x, mask, present), sc.transform(x, mask, present))
    # a bag scaler saved before bag PCA existed had only mean and scale: standardises only
    old = BagScaler.from_state({"mean": sc.mean_, "scale": sc.scale_})
    assert old.out_dim == x.shape[-1] and old.transform(x, mask, present).shape == x.shape


def test_preprocessor_bag_width_follows_bag_pca(cohort):
    wsi_dim = cohort.features["wsi"].shape[-1]
    narrow = Preprocessor(PreprocessConfig(bag_pca=4, rna_pca=4)).fit(cohort)
    assert narrow.dims["wsi"] == 4
    assert narrow.transform(cohort).features["wsi"].shape[-1] == 4
    wide = Preprocessor(PreprocessConfig(bag_pca=wsi_dim + 1, rna_pca=4)).fit(cohort)
    assert wide.dims["wsi"] == wsi_dim  # no wider than bag_pca: standardised only
    off = Preprocessor(PreprocessConfig(bag_pca=None, rna_pca=4)).fit(cohort)
    assert off.dims["wsi"] == wsi_dim


def _rna_cohort(rng: np.random.Generator, n: int = 20, g: int = 8) -> Cohort:
    """RNA counts where patients 0-4 come from another gene naming: they measure only
    genes 6 and 7, which nobody else does (below the coverage a gene needs)."""
    x = rng.gamma(2.0, 50.0, size=(n, g))
    x[:5, :6] = np.nan
    x[5:, 6:] = np.nan
    return Cohort([f"p{i}" for i in range(n)], rng.uniform(1, 5, n), rng.random(n) < 0.5,
                  features={"rna": x}, feature_names={"rna": [f"g{j}" for j in range(g)]})


def test_an_rna_profile_measuring_no_kept_gene_comes_out_absent():
    """A patient whose profile has none of the genes the training part kept has no RNA
    after preprocessing (present False, a zero row), in the training cohort and in a
    new one; the others keep theirs."""
    rng = np.random.default_rng(5)
    cohort = _rna_cohort(rng)
    assert cohort.present["rna"].all()
    pp = Preprocessor(PreprocessConfig(rna_top_variance_genes=None, rna_pca=None)).fit(cohort)
    np.testing.assert_array_equal(pp.steps["rna"].genes_, np.arange(6))
    out = pp.transform(cohort)
    np.testing.assert_array_equal(out.present["rna"], np.arange(20) >= 5)
    assert not out.features["rna"][:5].any() and out.features["rna"][5:].any()
    new = _rna_cohort(np.random.default_rng(6))
    np.testing.assert_array_equal(pp.transform(new).present["rna"], np.arange(20) >= 5)


def test_the_same_arrays_with_another_present_mask_are_fitted_again():
    """Two cohorts with byte-identical feature arrays (the absent rows hold zeros either
    way) but different present masks: each fit uses its own present rows (means by hand),
    so the fit cache must not hand the second the first one's steps."""
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 1.0, size=(30, 4)).astype(np.float32)
    x[:10] = 0.0
    ids, time, event = [f"p{i}" for i in range(30)], rng.uniform(1, 5, 30), rng.random(30) < 0.5
    all_rows = Cohort(ids, time, event, features={"slide": x})
    some = Cohort(ids, time, event, features={"slide": x}, present={"slide": np.arange(30) >= 10})
    np.testing.assert_array_equal(all_rows.features["slide"], some.features["slide"])
    cfg = PreprocessConfig(vector_pca=None)
    a = Preprocessor(cfg).fit(all_rows).steps["slide"]
    b = Preprocessor(cfg).fit(some).steps["slide"]
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(a.mean_, x64.mean(0))
    np.testing.assert_allclose(b.mean_, x64[10:].mean(0))
    np.testing.assert_allclose(b.scale_, x64[10:].std(0))


def test_a_step_error_names_the_modality_not_its_kind():
    """Two vector modalities, one measured for a single training patient: the PCA step's
    error used to say field 'vector', not which modality."""
    from modalsurv.errors import DataError

    rng = np.random.default_rng(0)
    present = np.zeros(6, dtype=bool)
    present[0] = True
    c = Cohort([f"P{i}" for i in range(6)], np.arange(1.0, 7.0), np.arange(6) % 2 == 0,
               features={"slide": rng.normal(size=(6, 300)), "mri": rng.normal(size=(6, 300))},
               present={"mri": present})  # fmt: skip
    with pytest.raises(DataError, match="at least 2 present training rows") as err:
        Preprocessor(PreprocessConfig()).fit(c)
    assert err.value.field == "mri"


def test_negative_rna_at_prediction_names_patient_gene_and_modality():
    """Fitted on raw counts (log1p), given log-scaled RNA: the error named a row number and
    field 'x4', and advised a setting a fitted model cannot change."""
    from modalsurv.errors import DataError

    counts = np.random.default_rng(1).gamma(2.0, 50.0, size=(10, 20))
    train = Cohort([f"T{i}" for i in range(10)], np.arange(1.0, 11.0), np.arange(10) % 2 == 0,
                   features={"rna": counts})  # fmt: skip
    pp = Preprocessor(PreprocessConfig(rna_pca=4, rna_top_variance_genes=10)).fit(train)
    logged = np.log2(counts[:3] + 1) - 5.0  # centred log values: some negative
    test = Cohort(["A", "B", "C"], np.ones(3), np.ones(3, dtype=bool), features={"rna": logged})
    said = r"of gene 'x\d+': .*give this cohort's RNA on that scale"
    with pytest.raises(DataError, match=said) as err:
        pp.transform(test)
    row = int(np.flatnonzero((logged < 0).any(axis=1))[0])
    assert err.value.field == "rna" and err.value.patient == ["A", "B", "C"][row]


def test_a_slide_unit_dead_on_the_training_rows_does_not_move_a_test_risk(make_cohort,
                                                                          make_config):  # fmt: skip
    """A slide-embedding unit 0 on every training patient (and an RNA gene never
    expressed there) took another value on a test patient: the narrow vector is not
    PCA-reduced, so the value reached the network unscaled and moved that patient's risk
    through weights no training row trained (by a third of the risks' spread). Constant
    training columns are now 0 for every row, as clinical ones already were."""
    from modalsurv.train.estimator import ModalSurv

    base = make_cohort(n=60, seed=1, missing=0.0)
    slide, rna = base.features["slide"].copy(), base.features["rna"].copy()
    slide[:40, 3], rna[:40, 5] = 0.0, 0.0

    def with_values(v: float) -> Cohort:
        s, r = slide.copy(), rna.copy()
        s[40:, 3], r[40:, 5] = v, 50 * v
        return Cohort(base.ids, base.time, base.event, dict(base.features, slide=s, rna=r),
                      base.present, bag_mask=base.bag_mask)  # fmt: skip

    cfg = make_config(train__epochs=2, preprocess__rna_pca=None,
                      preprocess__rna_top_variance_genes=None)  # fmt: skip
    train = with_values(0.0).subset(np.arange(40))
    model = ModalSurv(cfg).fit(train)
    a, b = with_values(1.0).subset(np.arange(40, 60)), with_values(3.0).subset(np.arange(40, 60))
    pa, pb = model.preprocessor_.transform(a), model.preprocessor_.transform(b)
    for m in ("slide", "rna"):
        np.testing.assert_array_equal(pa.features[m], pb.features[m], err_msg=m)
    np.testing.assert_array_equal(model.predict_risk(a), model.predict_risk(b))


@pytest.mark.parametrize("pca", [None, 3])
def test_a_tile_dimension_constant_on_the_training_tiles_is_zero_in_every_tile(pca):
    """A tile dimension that holds one value on every valid training tile (a unit that
    never fired there) or is all NaN there was passed on unscaled when it took another
    value in a test tile (without bag PCA straight into the attention pooling, through
    weights no training tile moved). It is now 0 in every tile, before any PCA."""
    rng = np.random.default_rng(6)
    x, mask = _bags(rng)
    x[:30, :, 4], x[:30, :, 7] = 0.0, np.nan  # the training patients: the first 30
    present = np.arange(len(x)) < 30
    sc = BagScaler(pca=pca).fit(x, mask, present)
    test = ~present
    a, b = x.copy(), x.copy()
    a[30:, :, [4, 7]], b[30:, :, [4, 7]] = 2.0, -6.0
    np.testing.assert_array_equal(sc.transform(a, mask, test), sc.transform(b, mask, test))
    np.testing.assert_array_equal(sc.constant_, [4, 7])
    if pca is None:
        assert np.all(sc.transform(a, mask, test)[..., [4, 7]] == 0)
    ref = BagScaler(pca=pca, zero_constant=False).fit(x, mask, present)
    keep = [j for j in range(x.shape[-1]) if j not in (4, 7)]
    if pca is None:  # the other dimensions exactly as before
        np.testing.assert_array_equal(sc.transform(a, mask, test)[..., keep],
                                      ref.transform(a, mask, test)[..., keep])  # fmt: skip
    # saved and read back; a bag scaler saved before zeroes nothing
    arrays: dict[str, np.ndarray] = {}
    meta = split_arrays(sc.get_state(), arrays, prefix="wsi/")
    back = BagScaler.from_state(join_arrays(json.loads(json.dumps(meta)), arrays))
    np.testing.assert_array_equal(back.transform(a, mask, test), sc.transform(a, mask, test))
    old = {k: v for k, v in ref.get_state().items() if k != "constant"}
    np.testing.assert_array_equal(BagScaler.from_state(old).transform(a, mask, test),
                                  ref.transform(a, mask, test))  # fmt: skip
