import numpy as np
import pytest
import tiffslide
import torch

from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import DataError
from modalsurv.io.chimera import read_chimera


def _small(task=1, n=12, seed=3):
    return make_cohort(
        n,
        seed,
        task=task,
        max_tiles=12,
        tile_dim=16,
        slide_dim=8,
        mri_dim=8,
        n_genes=30,
        missing={"wsi": 0.2, "rna": 0.2, "mri": 0.2},
    )[0]


def _same(a, b):
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.event, b.event)
    np.testing.assert_array_equal(a.features["clinical"], b.features["clinical"])
    assert a.feature_names["clinical"] == b.feature_names["clinical"]
    for m in ("wsi", "rna"):
        np.testing.assert_array_equal(a.present[m], b.present[m])
    for i in np.flatnonzero(a.present["wsi"]):
        np.testing.assert_array_equal(
            a.features["wsi"][i][a.bag_mask["wsi"][i]], b.features["wsi"][i][b.bag_mask["wsi"][i]]
        )
    np.testing.assert_array_equal(a.features["rna"], b.features["rna"])


@pytest.mark.parametrize("task", [1, 3])
def test_write_read_round_trip(tmp_path, task):
    cohort = _small(task)
    write_chimera(cohort, tmp_path, task=task, slide_px=512, mri_shape=(4, 16, 16))
    out = read_chimera(tmp_path, task=task)
    _same(cohort, out.cohort)
    assert out.errors == []
    assert {p.reason for p in out.problems} <= {"label leak column ignored"}
    row = out.paths.iloc[int(np.flatnonzero(cohort.present["wsi"])[0])]
    assert row["slides"] and len(row["masks"]) == len(row["slides"])
    slide = tiffslide.TiffSlide(row["slides"][0])
    assert float(slide.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
    assert slide.level_count == 3
    if task == 1:
        have = out.paths["mri_t2w"].notna().to_numpy()
        np.testing.assert_array_equal(have, cohort.present["mri"])
        assert out.paths["mri_mask"].notna().sum() == have.sum()
    else:
        assert set(out.cohort.meta["site"]) == {"3A"}


def test_slide_policies(tmp_path):
    cohort = _small()
    write_chimera(cohort, tmp_path, images=False, max_slides=3)
    first = read_chimera(tmp_path, slide_policy="first").cohort
    mean = read_chimera(tmp_path, slide_policy="mean").cohort
    assert mean.features["wsi"].ndim == 2
    i = int(np.flatnonzero(cohort.present["wsi"])[0])
    bag = cohort.features["wsi"][i][cohort.bag_mask["wsi"][i]]
    np.testing.assert_allclose(mean.features["wsi"][i], bag.mean(0), rtol=1e-5, atol=1e-6)
    assert first.bag_mask["wsi"][i].sum() <= len(bag)
    capped = read_chimera(tmp_path, max_tiles=3).cohort
    assert capped.bag_mask["wsi"].sum(1).max() <= 3


def test_bad_files_reported_not_skipped(tmp_path):
    cohort = _small()
    write_chimera(cohort, tmp_path, images=False)
    ids = list(cohort.ids)
    (tmp_path / "clinical_data" / f"{ids[0]}.json").write_text("{broken")
    pt = sorted((tmp_path / "pathology/features/embeddings").glob(f"{ids[1]}_*.pt"))
    if pt:
        torch.save(torch.zeros(2, 3, 4), pt[0])
    (tmp_path / "pathology/images/9999").mkdir(parents=True)  # images, no clinical file
    out = read_chimera(tmp_path)
    reasons = {(p.patient, p.severity): p.reason for p in out.problems}
    assert "corrupt JSON" in reasons[(ids[0], "error")]
    assert "clinical file missing" in reasons[("9999", "error")]
    assert ids[0] not in out.cohort.ids and "9999" not in out.cohort.ids
    if pt:
        assert any(p.patient == ids[1] and "shape" in p.reason for p in out.problems)
    with pytest.raises(DataError, match="problem"):
        read_chimera(tmp_path, strict=True)
