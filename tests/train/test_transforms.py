"""Tabular transformers: agreement with scikit-learn, masks, state round trip, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modalsurv.errors import DataError
from modalsurv.train.transforms import (
    ClinicalEncoder,
    RnaTransform,
    VectorScaler,
    fit_pca,
    marchenko_pastur_median,
    signal_rank,
    transformer_from_state,
)


def _clinical(rng, n=40):
    x = rng.normal(size=(n, 5))
    x[:, 3] = 2.0  # constant in training
    x[rng.random(n) < 0.3, 0] = np.nan
    x[rng.random(n) < 0.2, 2] = np.nan
    x[:, 4] = (rng.random(n) < 0.5).astype(float)  # a one-hot column
    return x


def _rna(rng, n=30, g=50):
    return rng.gamma(2.0, 50.0, size=(n, g)) * rng.uniform(0.1, 5, size=g)


def test_clinical_matches_sklearn_pipeline():
    rng = np.random.default_rng(0)
    x = _clinical(rng)
    ref = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    ).fit(x[:30])
    names = ["age", "psa", "grade", "c", "t=1"]
    enc = ClinicalEncoder(zero_constant=False).fit(x[:30], feature_names=names)
    out = enc.transform(x[30:])
    np.testing.assert_allclose(out, ref.transform(x[30:]), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert list(enc.get_feature_names_out()) == [
        "age", "psa", "grade", "c", "t=1", "age__missing", "grade__missing"
    ]  # fmt: skip
    # the constant column maps to 0, not NaN/inf
    assert np.all(out[:, 3] == 0)
    # by default the same numbers, the constant column 0 whatever a test row holds
    default = ClinicalEncoder().fit(x[:30], feature_names=names)
    np.testing.assert_array_equal(default.transform(x[30:]), out)
    odd = x[30:].copy()
    odd[:, 3] = 7.0
    assert np.all(default.transform(odd)[:, 3] == 0) and np.any(enc.transform(odd)[:, 3] != 0)


def test_a_level_seen_only_at_test_time_reaches_no_untrained_weight():
    """A one-hot column all zero in training (its level only in the test fold, the
    vocabulary built from every row at load time) is 0 for every row: the test patient
    with that level gets the same features as one with no known level, and the training
    rows' features are what they were."""
    rng = np.random.default_rng(3)
    age = rng.normal(60, 8, 12)
    levels = np.array([[1.0, 0.0, 0.0]] * 6 + [[0.0, 1.0, 0.0]] * 6)  # level c: never
    train = np.column_stack([age, levels])
    names = ["age", "g=a", "g=b", "g=c"]
    enc = ClinicalEncoder().fit(train, feature_names=names)
    plain = ClinicalEncoder(zero_constant=False).fit(train, feature_names=names)
    np.testing.assert_array_equal(enc.transform(train), plain.transform(train))
    level_c, neither = np.array([[60.0, 0, 0, 1]]), np.array([[60.0, 0, 0, 0]])
    np.testing.assert_array_equal(enc.transform(level_c), enc.transform(neither))
    assert plain.transform(level_c)[0, 3] != 0
    back = ClinicalEncoder.from_state(enc.get_state())
    np.testing.assert_array_equal(back.transform(level_c), enc.transform(level_c))


def test_clinical_all_nan_column_and_width_check():
    x = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]])
    enc = ClinicalEncoder().fit(x)
    out = enc.transform(np.array([[2.0, 5.0]]))
    assert out.shape == (1, 3) and np.isfinite(out).all()
    assert np.all(out[:, 1:] == 0)  # the all-NaN column and its always-on indicator
    with pytest.raises(DataError, match="fitted on 2 features"):
        enc.transform(np.ones((1, 3)))


def test_present_mask_fit_and_zero_rows():
    rng = np.random.default_rng(1)
    x = _clinical(rng)
    present = rng.random(len(x)) < 0.7
    x[~present] = 1e9  # garbage in absent rows must be ignored
    for t in (ClinicalEncoder(), VectorScaler(pca=3), RnaTransform(top_variance_genes=3, pca=2)):
        xx = np.abs(x) if isinstance(t, RnaTransform) else x
        a = t.fit(xx, present=present).get_state()
        b = type(t)(**t.get_params()).fit(xx[present]).get_state()
        for k, v in a.items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(b[k]), err_msg=k)
        out = t.transform(xx, present=present)
        assert not out[~present].any() and np.isfinite(out).all()


def test_rna_matches_manual_sklearn():
    rng = np.random.default_rng(2)
    x = _rna(rng)
    x[3, 7] = np.nan
    tr, te = x[:24], x[24:]
    t = RnaTransform(top_variance_genes=10, pca=4).fit(tr)
    # reference: log1p, median impute, top-10 variance, StandardScaler, PCA
    lt = np.log1p(tr)
    med = np.nanmedian(lt, axis=0)
    lt = np.where(np.isnan(lt), med, lt)
    genes = np.sort(np.argsort(-lt.var(axis=0))[:10])
    sc = StandardScaler().fit(lt[:, genes])
    pca = PCA(4, svd_solver="full").fit(sc.transform(lt[:, genes]))
    ref = pca.transform(sc.transform(np.log1p(te)[:, genes]))
    np.testing.assert_array_equal(t.genes_, genes)
    np.testing.assert_allclose(t.transform(te), ref, rtol=1e-4, atol=1e-4)
    assert list(t.get_feature_names_out()) == ["pc1", "pc2", "pc3", "pc4"]


def test_rna_pca_cap_and_no_pca():
    rng = np.random.default_rng(3)
    x = _rna(rng, n=6, g=20)
    t = RnaTransform(top_variance_genes=2000, pca=64).fit(x)
    assert t.components_.shape == (5, 20)  # min(n_train - 1, genes)
    assert t.transform(x).shape == (6, 5)
    t = RnaTransform(top_variance_genes=4, pca=None).fit(
        x, feature_names=[f"g{i}" for i in range(20)]
    )
    assert t.transform(x).shape == (6, 4)
    assert len(t.get_feature_names_out()) == 4
    with pytest.raises(DataError, match="at least 2"):
        RnaTransform(pca=4).fit(x[:1])


def test_rna_rejects_negative_values_with_log1p():
    x = np.abs(_rna(np.random.default_rng(4), n=5, g=4))
    x[2, 1] = -0.5
    with pytest.raises(DataError, match="negative") as e:
        RnaTransform(pca=None).fit(x, feature_names=["A", "B", "C", "D"])
    assert e.value.field == "B"
    RnaTransform(log1p=False, pca=None).fit(x)  # already log-scaled data: fine
    t = RnaTransform(pca=None).fit(np.abs(x))
    with pytest.raises(DataError, match="negative"):
        t.transform(x)


def test_rna_negative_value_in_fit_names_its_own_row():
    """The row of a negative training value is the caller's numbering, not its position
    among the present rows (row 1 was reported for row 2 when row 0 was absent)."""
    x = np.abs(_rna(np.random.default_rng(4), n=5, g=4))
    x[2, 1] = -0.5
    present = np.array([False, True, True, True, True])
    with pytest.raises(DataError, match=r"-0.5 of gene 'x1' at row 2:"):
        RnaTransform(pca=None).fit(x, present=present)
    x[0, 0] = -7.0  # an absent row's values are ignored
    with pytest.raises(DataError, match="at row 2:"):
        RnaTransform(pca=None).fit(x, present=present)


def test_vector_scaler_imputes_and_standardises():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(50, 6))
    x[0, 0] = np.nan
    out = VectorScaler().fit(x).transform(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out[1:, 1:].std(0), 1, atol=0.05)
    assert VectorScaler(pca=3).fit(x).transform(x).shape == (50, 3)


def _round_trip(state, tmp_path):
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    save_file(arrays, str(tmp_path / "state.safetensors"))
    (tmp_path / "state.json").write_text(json.dumps(rest))
    return {
        **load_file(str(tmp_path / "state.safetensors")),
        **json.loads((tmp_path / "state.json").read_text()),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClinicalEncoder(),
        lambda: ClinicalEncoder(add_indicator=False),
        lambda: RnaTransform(top_variance_genes=8, pca=3),
        lambda: RnaTransform(pca=None),
        lambda: VectorScaler(),
        lambda: VectorScaler(pca=2),
        lambda: VectorScaler(pca="auto"),
    ],
)
def test_state_round_trip_without_pickle(make, tmp_path):
    rng = np.random.default_rng(6)
    x = np.abs(_clinical(rng))
    t = make().fit(x[:30])
    back = transformer_from_state(_round_trip(t.get_state(), tmp_path))
    assert type(back) is type(t) and back.get_params() == t.get_params()
    np.testing.assert_array_equal(back.transform(x[30:]), t.transform(x[30:]))
    with pytest.raises(DataError, match="state is for"):
        VectorScaler.from_state(ClinicalEncoder().fit(x).get_state())


@pytest.mark.parametrize(
    "make",
    [lambda: ClinicalEncoder(), lambda: RnaTransform(top_variance_genes=5, pca=3),
     lambda: VectorScaler(pca=2)],
)  # fmt: skip
def test_leakage_guard_canary_in_test_rows(make):
    """Extreme canary values only in test rows never reach the fitted parameters."""
    rng = np.random.default_rng(7)
    x = np.abs(_rna(rng, n=40, g=12))
    train, test = x[:30].copy(), x[30:].copy()
    test[:, :] = 1e12  # canary
    test[0, 2] = np.nan
    alone = make().fit(train).get_state()

    t = make().fit(train)
    out = t.transform(test)  # transforming extreme rows must not update anything
    assert np.isfinite(out).all()
    after = t.get_state()
    # fitting on all rows with the test rows masked out equals fitting on train alone
    masked = (
        make().fit(np.vstack([train, test]), present=np.r_[np.ones(30), np.zeros(10)]).get_state()
    )
    for k, v in alone.items():
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(v), err_msg=k)
        np.testing.assert_array_equal(np.asarray(masked[k]), np.asarray(v), err_msg=k)
    # and a fit that *does* see the canary differs (the test can fail)
    leaky = make().fit(np.vstack([train, test])).get_state()
    assert any(
        isinstance(v, np.ndarray) and v.shape == leaky[k].shape and not np.allclose(v, leaky[k])
        for k, v in alone.items()
    )


@pytest.mark.parametrize("n,p", [(3000, 3000), (4000, 1000), (20000, 100)])
def test_marchenko_pastur_median_matches_pure_noise_spectra(n, p):
    """Reference: the median eigenvalue of a simulated pure-noise sample covariance."""
    x = np.random.default_rng(1).normal(size=(n, p))
    simulated = np.median(np.linalg.eigvalsh(x.T @ x / n))
    assert marchenko_pastur_median(p / n) == pytest.approx(simulated, rel=0.01)
    with pytest.raises(ValueError, match="beta"):
        marchenko_pastur_median(1.5)


def _spiked(rng, n, p, spikes, scale=1.0):
    """n x p noise of variance ``scale`` plus one independent direction per spike variance."""
    x = rng.normal(size=(n, p)) * np.sqrt(scale)
    for v in spikes:
        u = rng.normal(size=p)
        x += np.sqrt(v) * rng.normal(size=(n, 1)) * (u / np.linalg.norm(u))
    return x


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_signal_rank_finds_the_spikes_above_the_noise_edge(scale):
    rng = np.random.default_rng(2)
    # many samples (tiles): the edge is (1 + sqrt(200/20000))^2 = 1.21 x the noise level
    x = _spiked(rng, 20000, 200, [2.0 * scale, 1.0 * scale, 0.5 * scale], scale)
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    assert signal_rank(lam, 20000) == 3
    # a spike below the edge (0.1 x the noise) is indistinguishable from noise
    weak = _spiked(rng, 20000, 200, [0.1 * scale], scale)
    assert signal_rank(np.linalg.eigvalsh(np.cov(weak, rowvar=False)), 20000) == 1  # floor
    # wider than tall (patients x 768-d embedding): only the nonzero spectrum counts
    wide = _spiked(rng, 150, 768, [3000.0 * scale, 1500.0 * scale], scale)
    mean, comps = fit_pca(wide, "auto")
    assert comps.shape == (2, 768) and mean.shape == (768,)


def test_auto_pca_keeps_the_leading_axes_of_a_full_pca():
    rng = np.random.default_rng(3)
    x = _spiked(rng, 5000, 60, [4.0, 2.0])
    _, auto = fit_pca(x, "auto", solver="covariance_eigh")
    _, full = fit_pca(x, 2, solver="covariance_eigh")
    np.testing.assert_array_equal(auto, full)
    vs = VectorScaler(pca="auto").fit(x)
    assert vs.transform(x).shape == (5000, 2)


def test_rank_gauss_matches_scikit_learn_and_integer_levels():
    from sklearn.preprocessing import QuantileTransformer

    from modalsurv.train.transforms import rank_gauss, rank_gauss_quantiles

    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 2, 400)
    q = rank_gauss_quantiles(x, 400)
    ref = QuantileTransformer(n_quantiles=400, output_distribution="normal").fit(x[:, None])
    new = np.array([-1.0, 0.3, 2.0, 1e6, np.nan])
    np.testing.assert_allclose(rank_gauss(new[:4], q), ref.transform(new[:4, None])[:, 0])
    assert np.isnan(rank_gauss(new, q)[4])
    data = np.c_[x, rng.integers(0, 5, 400), rng.normal(size=400), rng.integers(0, 2, 400)]
    data[3, 0] = np.nan
    enc = ClinicalEncoder(numeric="auto", integer_levels=6).fit(
        data, feature_names=["lab", "code", "normal", "flag"])
    assert enc.rank_columns_.tolist() == [0]  # only the heavy-tailed column
    assert enc.level_columns_.tolist() == [1] * 5  # the 0-4 code, not the 0/1 flag
    names = list(enc.get_feature_names_out())
    assert names[-5:] == ["code=0", "code=1", "code=2", "code=3", "code=4"]
    z = enc.transform(data)
    assert z.shape == (400, 4 + 1 + 5) and np.allclose(z.mean(0), 0, atol=1e-5)
    code = data[:, 1]
    np.testing.assert_array_equal(z[:, 5 + 2] > 0, code == 2)
    back = ClinicalEncoder.from_state(enc.get_state())
    np.testing.assert_array_equal(back.transform(data), z)
    every = ClinicalEncoder(numeric="rank_gauss").fit(data)
    assert every.rank_columns_.tolist() == [0, 1, 2]  # every column with > 2 values
    with pytest.raises(DataError, match="numeric"):
        ClinicalEncoder(numeric="log").fit(data)
    plain = ClinicalEncoder().fit(data)  # the default: the encoder as it was
    old_state = {k: v for k, v in plain.get_state().items() if not k.startswith(("rank", "level"))}
    np.testing.assert_array_equal(ClinicalEncoder.from_state(old_state).transform(data),
                                  plain.transform(data))


def test_a_clinical_state_saved_before_zero_constant_zeroes_nothing():
    import json

    x = _clinical(np.random.default_rng(5))
    full = ClinicalEncoder(zero_constant=False).fit(x[:30])
    state = dict(full.get_state())
    del state["constant_"]  # as saved before the option existed
    params = json.loads(state["params"])
    del params["zero_constant"]
    state["params"] = json.dumps(params)
    old = ClinicalEncoder.from_state(state)
    np.testing.assert_array_equal(old.transform(x[30:]), full.transform(x[30:]))


def test_rank_gauss_ties_take_the_middle_of_their_quantile_levels_as_scikit_learn():
    """Rounded lab values repeat: a tied value spans several training quantiles and maps
    to the mean of the forward and backward interpolation (scikit-learn's rule), not to
    the first level it reaches. Compared on scikit-learn's own quantiles (its percentile
    in % may put a tied quantile off by 1e-14, which splits a tie), inside the training
    range: at a tied training minimum scikit-learn sends every tie to the lower bound."""
    from sklearn.preprocessing import QuantileTransformer

    from modalsurv.train.transforms import rank_gauss, rank_gauss_quantiles

    rng = np.random.default_rng(8)
    x = np.round(rng.lognormal(0, 1, 300))
    values, counts = np.unique(x, return_counts=True)
    assert counts[1:4].min() > 10  # 1, 2, 3: heavily tied values
    ref = QuantileTransformer(n_quantiles=300, output_distribution="normal").fit(x[:, None])
    np.testing.assert_allclose(rank_gauss_quantiles(x, 300), ref.quantiles_[:, 0], atol=1e-12)
    new = np.r_[values[1:], 0.5, 1.5, 2.5, 100.0, -1.0]
    np.testing.assert_allclose(rank_gauss(new, ref.quantiles_[:, 0]),
                               ref.transform(new[:, None])[:, 0], rtol=1e-7)  # fmt: skip
    # the training rows themselves: ranks kept, ties equal
    z = rank_gauss(x, rank_gauss_quantiles(x, 300))
    assert len(np.unique(z)) == len(values)
    assert (np.diff(z[np.argsort(x, kind="stable")]) >= 0).all()


def test_auto_rank_gauss_flags_left_skewed_columns_too():
    """A heavy left tail (a negated lognormal: skewness well below -1) is heavy-tailed as
    much as a right one; a symmetric column is not."""
    from scipy.stats import skew

    rng = np.random.default_rng(9)
    x = np.c_[rng.lognormal(0, 1, 300), -rng.lognormal(0, 1, 300), rng.normal(size=300)]
    assert skew(x[:, 0]) > 1 and skew(x[:, 1]) < -1 and abs(skew(x[:, 2])) < 1
    enc = ClinicalEncoder(numeric="auto").fit(x)
    assert enc.rank_columns_.tolist() == [0, 1]


def test_vector_scaler_matches_sklearn_mean_imputation_and_scaling():
    """Skewed embedding columns with NaN in training and test rows: the mean (not the
    median) of the training rows fills a gap, then the columns are standardised."""
    rng = np.random.default_rng(10)
    x = rng.lognormal(0, 1, size=(60, 4))
    x[rng.random((60, 4)) < 0.2] = np.nan
    ref = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()).fit(x[:45])
    t = VectorScaler().fit(x[:45])
    np.testing.assert_allclose(t.fill_, ref[0].statistics_)
    assert np.isnan(x[45:]).any()
    np.testing.assert_allclose(t.transform(x[45:]), ref.transform(x[45:]), rtol=1e-5, atol=1e-5)


def test_rna_rows_measuring_no_covered_gene_are_not_fitted_on():
    """Profiles from another gene naming (they measure only genes too rare to be covered)
    have no RNA: the fit (medians, scaling) equals a fit on the measuring rows alone,
    computed here by hand, and they are not measured rows."""
    rng = np.random.default_rng(11)
    x = _rna(rng, n=20, g=8)
    x[:5, :6] = np.nan  # five profiles measure only genes 6 and 7 ...
    x[5:, 6:] = np.nan  # ... which nobody else measures (coverage 25 % < 50 %)
    t = RnaTransform(top_variance_genes=None, pca=None).fit(x)
    np.testing.assert_array_equal(t.genes_, np.arange(6))
    logged = np.log1p(x[5:, :6])
    np.testing.assert_allclose(t.mean_, logged.mean(0))
    np.testing.assert_allclose(t.scale_, logged.std(0))
    alone = RnaTransform(top_variance_genes=None, pca=None).fit(x[5:])
    for k in ("median_", "genes_", "mean_", "scale_"):
        np.testing.assert_array_equal(getattr(t, k), getattr(alone, k), err_msg=k)
    np.testing.assert_array_equal(t.measured_rows(x), np.arange(20) >= 5)


def test_rank_gauss_keeps_a_tied_training_minimum_off_the_extreme_unlike_scikit_learn():
    """The documented difference: 4 of 12 values at a floor of 0 get the middle of their
    levels (-1.097), where scikit-learn sends them to the bound (-5.199)."""
    from sklearn.preprocessing import QuantileTransformer

    from modalsurv.train.transforms import rank_gauss, rank_gauss_quantiles

    x = np.array([0, 0, 0, 0, 1, 2, 3, 4, 5, 5, 5, 6.0])
    ours = rank_gauss(x, rank_gauss_quantiles(x, 12))
    ref = QuantileTransformer(n_quantiles=12, output_distribution="normal").fit(x[:, None])
    theirs = ref.transform(x[:, None])[:, 0]
    np.testing.assert_allclose(ours[:4], -1.0968, atol=1e-3)
    np.testing.assert_allclose(theirs[:4], -5.1993, atol=1e-3)
    np.testing.assert_allclose(ours[4:], theirs[4:], atol=1e-9)  # elsewhere the same


@pytest.mark.parametrize(
    "make", [lambda **kw: VectorScaler(**kw),
             lambda **kw: RnaTransform(log1p=False, top_variance_genes=None, pca=None, **kw)],
)  # fmt: skip
def test_a_column_constant_on_the_training_rows_reaches_no_untrained_weight(make):
    """A vector or RNA column that holds one value on every training row (an encoder unit
    that never fired, a gene at 0 counts, a column all NaN there) carries nothing to learn
    from: its other value in a test row came out unscaled (scale 1) and moved that
    patient's risk through a weight no training row moved (ModalSurv's risk by a third of
    its spread). Now it is 0 for every row, as ClinicalEncoder does; the rest unchanged."""
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(size=(40, 6)))
    x[:30, 2] = 0.0  # constant on the training rows
    x[:30, 4] = np.nan  # never measured on them
    x[30:, 2] = rng.uniform(1.0, 9.0, size=10)
    x[30:, 4] = rng.uniform(1.0, 9.0, size=10)
    t = make().fit(x[:30])
    cols = list(getattr(t, "genes_", range(6)))  # RNA keeps only the genes measured
    dead = [cols.index(j) for j in (2, 4) if j in cols]
    assert cols.index(2) in dead
    np.testing.assert_array_equal(t.transform(x[30:])[:, dead], 0.0)
    np.testing.assert_array_equal(t.transform(x[:30])[:, dead], 0.0)
    other = x[30:].copy()
    other[:, [2, 4]] = 0.5
    np.testing.assert_array_equal(t.transform(other), t.transform(x[30:]))
    kept = [cols.index(j) for j in (0, 1, 3, 5)]
    off = make(zero_constant=False).fit(x[:30])
    np.testing.assert_array_equal(t.transform(x[30:])[:, kept], off.transform(x[30:])[:, kept])
    # saved and read back without pickle; a state saved before the option zeroes nothing
    state = t.get_state()
    np.testing.assert_array_equal(type(t).from_state(state).transform(x[30:]), t.transform(x[30:]))
    old = {k: v for k, v in off.get_state().items() if k != "constant_"}
    params = json.loads(old["params"])
    del params["zero_constant"]
    old["params"] = json.dumps(params)
    np.testing.assert_array_equal(type(t).from_state(old).transform(x[30:]), off.transform(x[30:]))


@pytest.mark.parametrize(
    "make", [lambda: ClinicalEncoder(zero_constant=False), lambda: VectorScaler(zero_constant=False)],
)  # fmt: skip
def test_a_constant_column_off_zero_is_not_divided_by_its_rounding_error(make):
    """The mean of 30 copies of 37.3 is one ulp off, so the column's std is 7e-15, not 0:
    scikit-learn's StandardScaler counts it constant (scale 1). It was the divisor here,
    so the training rows got +/-1 and a test value of 37.4 became 1e13."""
    rng = np.random.default_rng(12)
    x = np.c_[rng.normal(size=40), np.full(40, 37.3)]
    x[30:, 1] = 37.4
    ref = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()).fit(x[:30])
    assert ref[1].scale_[1] == 1.0
    t = make().fit(x[:30])
    np.testing.assert_allclose(t.transform(x), ref.transform(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make", [lambda: ClinicalEncoder(), lambda: RnaTransform(top_variance_genes=3, pca=2),
             lambda: VectorScaler(pca=2)],
)  # fmt: skip
def test_fit_transform_applies_the_present_mask_as_fit_then_transform(make):
    """scikit-learn's fit_transform passed ``present`` to fit only: absent rows came out
    as transformed placeholders (and an absent RNA row's -1 was refused as negative)."""
    rng = np.random.default_rng(13)
    x = np.abs(_rna(rng, n=12, g=6))
    present = np.arange(12) % 4 != 0
    x[~present] = -1.0  # an absent patient's placeholder
    out = make().fit_transform(x, present=present)
    np.testing.assert_array_equal(out, make().fit(x, present=present).transform(x, present))
    assert not out[~present].any() and out[present].any()
