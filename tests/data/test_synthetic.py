import numpy as np
import pytest

from modalsurv.data.synthetic import (
    make_cohort,
    measurement_oracle_cindex,
    observable_oracle_cindex,
    oracle_cindex,
)

SMALL = {"max_tiles": 16, "tile_dim": 32, "slide_dim": 32, "mri_dim": 32, "n_genes": 200}


def test_deterministic_in_seed():
    a, ra = make_cohort(60, 5, **SMALL)
    b, rb = make_cohort(60, 5, **SMALL)
    c, _ = make_cohort(60, 6, **SMALL)
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(a.time, b.time)
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])
    assert not np.array_equal(a.time, c.time)


def test_default_cohort_shapes_and_oracle():
    cohort, risk = make_cohort()  # defaults: N=200
    assert len(cohort) == 200 and cohort.modalities == ["clinical", "wsi", "slide", "mri", "rna"]
    assert cohort.features["wsi"].shape[1:] == (64, 512) and cohort.dim("slide") == 768
    assert cohort.dim("mri") == 2048 and cohort.dim("rna") == 2000
    assert (cohort.features["rna"] >= 0).all()  # counts: log1p applies
    assert oracle_cindex(cohort, risk) > 0.7
    assert oracle_cindex(cohort, -risk) < 0.3
    assert abs((1 - cohort.event.mean()) - 0.6) < 0.05  # censoring calibrated
    assert cohort.time.max() <= 120.0 + 1e-9


def test_missingness_rates_and_clinical_values():
    rates = {"wsi": 0.3, "rna": 0.5, "mri": 0.0}
    cohort, _ = make_cohort(1000, 1, missing=rates, **SMALL)
    miss = cohort.missingness()
    for m, r in rates.items():
        assert miss[m] == pytest.approx(r, abs=0.05)
    x = cohort.features["clinical"]
    names = cohort.feature_names["clinical"]
    lymph = x[:, names.index("positive_lymph_nodes")]
    assert np.isnan(lymph).mean() == pytest.approx(0.3, abs=0.05)
    assert np.nanmax(x[:, names.index("ISUP")]) == 4  # ranks 0..4
    raw = cohort.meta["clinical:positive_lymph_nodes"]
    assert set(raw) <= {"0", "1", "x"}


def test_signal_follows_weights():
    only_wsi = {"clinical": 0, "wsi": 1.5, "slide": 0, "mri": 0, "rna": 0, "interaction": 0}
    cohort, risk = make_cohort(300, 2, weights=only_wsi, noise=0.0, **SMALL)
    x, mk = cohort.features["wsi"], cohort.bag_mask["wsi"]
    # hot tiles carry +3 along a prototype: their squared norm is larger
    score = ((x**2).sum(2) * mk).sum(1) / np.maximum(mk.sum(1), 1)
    ok = cohort.present["wsi"]
    assert np.corrcoef(score[ok], risk[ok])[0, 1] > 0.3
    assert oracle_cindex(cohort, risk) > 0.75


def test_external_shift():
    a, _ = make_cohort(300, 0, **SMALL)
    b, rb = make_cohort(300, 0, external=True, **SMALL)
    assert set(b.meta["site"]) == {"external"} and set(a.meta["site"]) == {"internal"}
    assert (1 - b.event.mean()) > (1 - a.event.mean()) + 0.05  # more censoring
    assert b.time.max() < a.time.max()  # shorter follow-up
    ma = a.features["slide"][a.present["slide"]].mean(0)
    mb = b.features["slide"][b.present["slide"]].mean(0)
    assert np.abs(mb - ma).mean() > 0.2  # feature offset
    assert oracle_cindex(b, rb) > 0.7


def test_task3_fields():
    cohort, _ = make_cohort(40, 0, task=3, **SMALL)
    assert cohort.ids[0] == "3A_000"
    assert "stage" in cohort.feature_names["clinical"]
    assert make_cohort(10, 0, task=3, external=True, **SMALL)[0].ids[0] == "3B_000"


def test_observable_oracle_drops_the_risk_of_missing_modalities():
    none_missing = dict.fromkeys(["clinical", "wsi", "slide", "mri", "rna"], 0.0)
    full, risk = make_cohort(n=300, seed=5, missing=none_missing, max_tiles=4, n_genes=50)
    # nothing missing: the observable oracle is the oracle itself
    assert observable_oracle_cindex(full, seed=5) == oracle_cindex(full, risk)
    lots = {"wsi": 0.5, "slide": 0.5, "mri": 0.5, "rna": 0.5}
    holey, risk = make_cohort(n=300, seed=5, missing=lots, max_tiles=4, n_genes=50)
    np.testing.assert_array_equal(holey.time, full.time)  # same patients, same truth
    assert observable_oracle_cindex(holey, seed=5) < oracle_cindex(holey, risk) - 0.02
    # a wrong seed regenerates other latents: the bound collapses towards chance
    assert abs(observable_oracle_cindex(holey, seed=6) - 0.5) < 0.1


def test_measurement_oracle_sits_below_the_observable_one_and_needs_the_true_world():
    cohort, _ = make_cohort(n=600, seed=3, n_genes=200)
    observable = observable_oracle_cindex(cohort, seed=3)
    measured = measurement_oracle_cindex(cohort, seed=3)
    # noisy measurements cost concordance, but the generator-aware estimator stays close
    assert observable - 0.06 < measured < observable
    # another world (prototype, directions, loadings) leaves only the clinical term
    clinical_only = measurement_oracle_cindex(cohort, seed=3, world_seed=1)
    assert clinical_only < measured - 0.03
