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


def test_a_task3_parent_folder_names_what_was_looked_for_and_the_folders_below(tmp_path):
    """`--data chimera-task3:PARENT` said only "no patient found"."""
    (tmp_path / "site" / "data" / "3A_000").mkdir(parents=True)
    (tmp_path / "site" / "data" / "3A_000" / "3A_000_CD.json").write_text("{}")
    with pytest.raises(DataError, match="looked for data/{case}/{case}_CD.json") as err:
        read_chimera(tmp_path, task=3)
    assert f"one level down: {tmp_path / 'site'})" in str(err.value)


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
    assert out.problems == []  # the declared leak column (BCR_PSA) is a note, not a problem
    if task == 1:
        assert [(n.severity, n.field) for n in out.notes] == [("note", "BCR_PSA")]
        assert f"present in {int(cohort.event.sum())} of {len(cohort)} record(s)" in out.notes[0].reason
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
    (tmp_path / "rna" / "8888_RNA.json").write_text("{}")  # RNA only, no clinical file
    (tmp_path / "radiology/mpMRI/7777").mkdir(parents=True)  # MRI only, no clinical file
    (tmp_path / "radiology/mpMRI/7777/7777_0001_t2w.mha").write_bytes(b"")
    out = read_chimera(tmp_path)
    reasons = {(p.patient, p.severity): p.reason for p in out.problems}
    assert "corrupt JSON" in reasons[(ids[0], "error")]
    for case in ("9999", "8888", "7777"):  # the last two used to be dropped silently
        assert "clinical file missing" in reasons[(case, "error")], case
    assert ids[0] not in out.cohort.ids and "9999" not in out.cohort.ids
    if pt:
        assert any(p.patient == ids[1] and "shape" in p.reason for p in out.problems)
    with pytest.raises(DataError, match="problem"):
        read_chimera(tmp_path, strict=True)


def _store_for(root, ids, tmp_path, dim=6, slide_ids=None):
    """A feature store as `modalsurv extract` leaves it: wsi bags, slide and mri vectors."""
    from modalsurv.io.store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    bags = {p: rng.normal(size=(int(rng.integers(3, 9)), dim)).astype(np.float32) for p in ids}
    store.write_many("wsi", bags, encoder="enc", checksum="c")
    slide_ids = ids if slide_ids is None else slide_ids
    store.write_many("slide", {p: bags[p].mean(0) for p in slide_ids if p in bags} |
                     {p: rng.normal(size=dim).astype(np.float32) for p in slide_ids if p not in bags},
                     encoder="mean[enc]", checksum="c")  # fmt: skip
    store.write_many("mri", {p: rng.normal(size=4).astype(np.float32) for p in ids[::2]},
                     encoder="vol", checksum="v")  # fmt: skip
    for m in store.modalities():
        store.pack(m)
    return store, bags


def test_chimera_folder_joined_with_a_feature_store(tmp_path):
    """The route from a CHIMERA folder + the store extract wrote to every modality: clinical
    and RNA from the folder's files, wsi/slide/mri from the store, joined by patient id,
    with presence masks; mismatches are problems, never silent drops."""
    cohort = _small(task=1, n=10)
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    ids = [str(i) for i in cohort.ids]
    # the store has a patient the folder lacks and lacks two the folder has
    store_ids = [*ids[2:], "9999"]
    store, bags = _store_for(root, store_ids, tmp_path)
    out = read_chimera(root, task=1, features=store.root, max_tiles=5, seed=1)
    c = out.cohort
    assert set(c.modalities) == {"clinical", "wsi", "slide", "mri", "rna"}
    assert list(c.ids) == ids
    np.testing.assert_array_equal(c.present["wsi"], [p in store_ids for p in ids])
    np.testing.assert_array_equal(c.present["mri"], [p in store_ids[::2] for p in ids])
    for i, p in enumerate(ids):
        if p in bags:  # the bag is the store's, capped at 5 tiles (a seeded subset)
            k = int(c.bag_mask["wsi"][i].sum())
            assert k == min(5, len(bags[p]))
            got = {tuple(r) for r in c.features["wsi"][i][: k]}
            assert got <= {tuple(r) for r in bags[p]}
    assert c.features["wsi"].shape[1] == 5
    warned = {(p.patient, p.field) for p in out.problems if p.severity == "warning"}
    assert ("9999", "features") in warned  # in the store, not in the folder
    # the folder's organiser .pt features were replaced by the store's (no mixing)
    assert c.dim("wsi") == 6


def test_store_ids_that_match_nothing_are_an_error_with_examples(tmp_path):
    cohort = _small(task=1, n=4)
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    store, _ = _store_for(root, [f"00{p}" for p in cohort.ids], tmp_path)
    with pytest.raises(DataError, match="no patient id of the CHIMERA folder matches the feature store") as err:
        read_chimera(root, task=1, features=store.root)
    assert "001000" in str(err.value) and "'1000'" in str(err.value)


def test_load_data_keeps_problems_and_strict_refuses_them(tmp_path):
    from modalsurv.data.sources import load_data
    from modalsurv.data.summary import data_summary, headline

    cohort = _small(task=1, n=8)
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    (root / "clinical_data" / f"{cohort.ids[0]}.json").write_text("{not json")
    loaded = load_data(f"chimera-task1:{root}")
    assert len(loaded.cohort) == 7
    bad = [p for p in loaded.problems if p.patient == str(cohort.ids[0])]
    assert bad and bad[0].severity == "error" and "corrupt JSON" in bad[0].reason
    summary = data_summary(loaded)
    assert summary["patients"] == 7 and summary["n_errors"] >= 1
    assert "7 patients" in headline(summary) and "clinical 100%" in headline(summary)
    with pytest.raises(DataError, match="--strict"):
        loaded.check_strict()


def test_one_odd_rna_file_neither_shrinks_nor_breaks_the_others(tmp_path):
    """A truncated profile keeps every gene (its own gaps imputed later); a profile named in
    another gene vocabulary is kept as read and noted against its own file: which genes a
    model uses, and so whether that profile counts, is decided on each training part."""
    import json

    cohort = _small(task=3, n=10)
    write_chimera(cohort, tmp_path, task=3, images=False)
    files = sorted(tmp_path.rglob("*_RNA.json"))
    short, other = files[0], files[1]
    full = json.loads(short.read_text())
    short.write_text(json.dumps(dict(list(full.items())[:2])))
    other.write_text(json.dumps({f"ENSG{i:011d}": 1.0 for i in range(30)}))
    out = read_chimera(tmp_path, task=3)
    assert out.cohort.features["rna"].shape[1] == len(full) + 30  # the union: nothing learnt
    pid_short = short.name.removesuffix("_RNA.json")
    pid_other = other.name.removesuffix("_RNA.json")
    ids = list(out.cohort.ids)
    names = out.cohort.feature_names["rna"]
    mine = [i for i, g in enumerate(names) if g in full]
    row = ids.index(pid_short)
    assert out.cohort.present["rna"][row]
    assert np.isnan(out.cohort.features["rna"][row, mine]).sum() == len(full) - 2
    # on a training part, the genes most of its patients have are kept: the odd profile
    # measures none of them and has no RNA there
    from modalsurv.train.transforms import RnaTransform

    x, p = out.cohort.features["rna"], out.cohort.present["rna"]
    rna = RnaTransform(top_variance_genes=None, pca=None).fit(x, present=p)
    assert set(rna.genes_) == set(mine)
    has = rna.measured_rows(x, present=p)
    assert not has[ids.index(pid_other)] and has[row] and has.sum() == p.sum() - 1
    notes = {p.patient: p for p in out.problems if p.field == "rna"}
    assert "missing" in notes[pid_short].reason and notes[pid_short].path == str(short)
    assert "none of the" in notes[pid_other].reason and notes[pid_other].path == str(other)


def test_test_patients_rna_files_do_not_shape_the_training_columns(tmp_path):
    """Which genes the RNA has is decided on the training rows: rewriting only held-out
    patients' RNA files (fewer genes, another naming) leaves the training rows' fitted
    preprocessing and features exactly as they were."""
    import json

    from modalsurv.config import PreprocessConfig
    from modalsurv.train.preprocess import Preprocessor

    cohort = _small(task=3, n=12)
    write_chimera(cohort, tmp_path, task=3, images=False)
    files = sorted(tmp_path.rglob("*_RNA.json"))
    held = files[:5]  # five of twelve patients are the test part

    def training_rna() -> np.ndarray:
        c = read_chimera(tmp_path, task=3).cohort.select(["rna"])
        test = {f.name.removesuffix("_RNA.json") for f in held}
        train = c.subset(np.flatnonzero([i not in test for i in c.ids]))
        pre = Preprocessor(PreprocessConfig(rna_pca=3, rna_top_variance_genes=10)).fit(train)
        return pre.transform(train).features["rna"]

    before = training_rna()
    for i, f in enumerate(held):
        full = json.loads(f.read_text())
        kept = dict(list(full.items())[:3]) if i % 2 else {f"ENSG{j:011d}": 1.0 for j in range(9)}
        f.write_text(json.dumps(kept))
    np.testing.assert_array_equal(training_rna(), before)


def test_the_patient_id_a_slide_name_carries():
    """What seeds a capped bag's tile subset in the challenge path (the store's key)."""
    from modalsurv.io.chimera import case_of_slide

    assert case_of_slide(1, "1000_0.tif") == case_of_slide(1, "1000_11.TIF") == "1000"
    assert case_of_slide(3, "3A_000_HE.tif") == "3A_000"
    assert case_of_slide(1, "9f2c1d.tif") is None  # renamed by the platform: no id


def _fingerprinted_store(root, store_root, modalities=("wsi", "slide", "mri")):
    """A store whose patients carry the fingerprint of ``root``'s files, as extract writes."""
    from modalsurv.features.extract import discover_patients, patient_fingerprint
    from modalsurv.io.store import FeatureStore

    store = FeatureStore(store_root)
    pfs = discover_patients("chimera-task1", root)
    for m in modalities:
        group = "mri" if m == "mri" else "slides"
        have = [pf for pf in pfs if (pf.slides if group == "slides" else any(pf.mri.values()))]
        store.write_many(m, {pf.patient: np.ones((2, 4) if m == "wsi" else 4, np.float32)
                             for pf in have}, encoder="enc", checksum="c",
                         fingerprints={pf.patient: patient_fingerprint(pf, group) for pf in have})  # fmt: skip
    return store


def test_a_store_of_another_cohort_with_the_same_ids_is_not_joined(tmp_path):
    """Features extracted from other files than the folder's (another cohort whose ids
    coincide) are an error naming the patient and the store, and never reach the cohort;
    the store made from this very folder joins without a word."""
    missing = {m: 0.0 for m in ("wsi", "rna", "mri")}
    cohort = make_cohort(4, 3, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=10, missing=missing)[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=256, mri_shape=(4, 8, 8),
                         max_slides=1)  # fmt: skip
    other = write_chimera(cohort, tmp_path / "o", task=1, slide_px=256, mri_shape=(4, 8, 8),
                          max_slides=1, seed=7)  # same ids, other images  # fmt: skip
    own = _fingerprinted_store(root, tmp_path / "own")
    out = read_chimera(root, task=1, features=own.root)
    assert out.errors == [] and not [p for p in out.problems if "source files" in p.reason]
    assert out.cohort.present["wsi"].all() and out.cohort.present["mri"].all()

    foreign = _fingerprinted_store(other, tmp_path / "foreign")
    out = read_chimera(root, task=1, features=foreign.root)
    errors = [p for p in out.errors if "other source files" in p.reason]
    ids = [str(i) for i in cohort.ids]
    assert sorted({p.patient for p in errors}) == ids
    assert all(p.path == str(foreign.root) for p in errors)
    assert {p.field for p in errors} == {"wsi", "mri"}  # one per patient and source group
    assert "wsi/slide" in next(p.reason for p in errors if p.field == "wsi")
    for m in ("wsi", "slide", "mri"):
        assert not out.cohort.present[m].any(), m
        assert not out.cohort.features[m].any(), m
    assert not out.cohort.bag_mask["wsi"].any()


def test_a_store_without_fingerprints_is_joined_with_a_warning(tmp_path):
    """Stores written before fingerprints existed cannot be checked: joined, said once."""
    cohort = make_cohort(3, 3, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=10, missing={m: 0.0 for m in ("wsi", "rna", "mri")})[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=256, mri_shape=(4, 8, 8),
                         max_slides=1)  # fmt: skip
    store, _ = _store_for(root, [str(i) for i in cohort.ids], tmp_path)
    out = read_chimera(root, task=1, features=store.root)
    assert out.errors == [] and out.cohort.present["wsi"].all()
    unchecked = [p for p in out.problems if "no record of their source files" in p.reason]
    assert sorted(p.field for p in unchecked) == ["mri", "slide", "wsi"]


def test_hidden_files_and_folders_are_ignored_with_a_warning(tmp_path):
    """An editor's ``clinical_data/.ipynb_checkpoints/{case}-checkpoint.json`` was read as
    one more patient with that case's labels (a silent duplicate across folds); a macOS
    ``._{case}.json`` and a hidden folder among the cases were errors of a fake case."""
    import shutil

    cohort = _small(n=4)
    write_chimera(cohort, tmp_path, images=False)
    case = cohort.ids[0]
    checkpoints = tmp_path / "clinical_data" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy(tmp_path / "clinical_data" / f"{case}.json",
                checkpoints / f"{case}-checkpoint.json")  # fmt: skip
    (tmp_path / "clinical_data" / f"._{case}.json").write_bytes(b"\0\x05\x16\x07Mac OS X")
    (tmp_path / "pathology" / "images" / ".cache").mkdir(parents=True)
    out = read_chimera(tmp_path)
    assert list(out.cohort.ids) == list(cohort.ids) and out.errors == []
    hidden = sorted(p.path for p in out.problems if "hidden" in p.reason)
    assert hidden == sorted(str(p) for p in (checkpoints, checkpoints.parent / f"._{case}.json",
                                             tmp_path / "pathology/images/.cache"))  # fmt: skip


def test_a_slides_features_under_both_folders_are_read_once(tmp_path):
    """The organisers' tiles may sit in features/embeddings/ or features/features/; a copy
    in both went into the bag twice, silently. Now the first is read and the second named."""
    import shutil

    cohort = _small()
    write_chimera(cohort, tmp_path, images=False)
    once = read_chimera(tmp_path).cohort
    emb = tmp_path / "pathology/features/embeddings"
    pt = sorted(emb.glob("*.pt"))[0]
    case = pt.stem.rsplit("_", 1)[0]
    (tmp_path / "pathology/features/features").mkdir()
    shutil.copy(pt, tmp_path / "pathology/features/features" / pt.name)
    res = read_chimera(tmp_path)
    i = list(res.cohort.ids).index(case)
    assert res.cohort.bag_mask["wsi"][i].sum() == once.bag_mask["wsi"][i].sum()
    (p,) = [p for p in res.problems if "second feature file" in p.reason]
    assert p.patient == case and p.path.endswith(f"features/features/{pt.name}")


def test_a_file_given_as_the_root_is_named_as_a_file(tmp_path):
    """Was 'CHIMERA root folder does not exist' for a file that exists."""
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        read_chimera(f)
    with pytest.raises(DataError, match="does not exist"):
        read_chimera(tmp_path / "nowhere")


def test_an_mri_volume_under_both_radiology_folders_is_named(tmp_path):
    """radiology/mpMRI/ and radiology/images/ are both read; a volume in both took the
    first without a word. Now the second copy is named in a warning."""
    import shutil

    cohort = _small()
    write_chimera(cohort, tmp_path, task=1, slide_px=256, mri_shape=(4, 8, 8))
    vols = sorted((tmp_path / "radiology/mpMRI").rglob("*_t2w.mha"))
    assert vols
    v = vols[0]
    case = v.parent.name
    second = tmp_path / "radiology/images" / case / v.name
    second.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(v, second)
    res = read_chimera(tmp_path)
    (p,) = [p for p in res.problems if p.reason.startswith("also found here")]
    assert p.patient == case and p.field == "mri_t2w" and p.path == str(second)
    assert str(v) in p.reason


def test_upper_case_extensions_are_found(tmp_path):
    """Slides, masks and MRI saved as ``1000_0.TIF`` / ``.MHA`` (a Windows copy, a scanner's
    export) were not found: the case was read without its images and nothing was said."""
    from pathlib import Path

    missing = {m: 0.0 for m in ("wsi", "rna", "mri")}
    cohort = make_cohort(2, 3, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=10, missing=missing)[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path, task=1, slide_px=256, mri_shape=(4, 8, 8),
                         max_slides=1)  # fmt: skip
    case = str(cohort.ids[0])
    before = read_chimera(root).paths.loc[case]
    renamed = [*(root / "pathology/images" / case).glob("*.tif"),
               *(root / "radiology/mpMRI" / case).glob("*.mha"),
               root / "radiology/prostate_mask_t2w" / f"{case}_0001_mask.mha",
               root / "rna" / f"{case}_RNA.json", root / "clinical_data" / f"{case}.json"]  # fmt: skip
    for f in renamed:
        f.rename(f.with_suffix(f.suffix.upper()))
    out = read_chimera(root)
    assert out.problems == [] and case in out.cohort.ids
    row = out.paths.loc[case]
    upper = lambda p: str(Path(p).with_suffix(Path(p).suffix.upper()))  # noqa: E731
    assert row["slides"] == [upper(p) for p in before["slides"]]
    assert row["masks"] == [upper(p) for p in before["masks"]]  # a mask, not a second slide
    for col in ("mri_t2w", "mri_adc", "mri_hbv", "mri_mask", "rna", "clinical"):
        assert row[col] == upper(before[col]), col


def test_slides_without_organiser_features_are_not_warned_when_a_store_holds_them(tmp_path):
    """Read with the store `modalsurv extract` wrote, each raw slide without an organiser
    ``.pt`` was still warned 'no feature file for slide (extract features first); slide not
    in the wsi bag', though its tiles are in the store's bag."""
    import shutil

    missing = {m: 0.0 for m in ("wsi", "rna", "mri")}
    cohort = make_cohort(2, 3, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=10, missing=missing)[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=256, mri_shape=(4, 8, 8),
                         max_slides=1)  # fmt: skip
    shutil.rmtree(root / "pathology" / "features")
    alone = read_chimera(root)  # no store: the slides are indeed left out, said per slide
    assert len([p for p in alone.problems if p.reason.startswith("no feature file")]) == 2
    store = _fingerprinted_store(root, tmp_path / "store")
    out = read_chimera(root, features=store.root)
    assert out.problems == [] and out.cohort.present["wsi"].all()


def test_a_slide_added_since_extraction_is_the_file_named(tmp_path):
    """Fingerprints were compared position by position: a slide added to a case after
    extraction was reported as 'stored 1000_0_tissue.tif...; the folder has 1000_1.tif...',
    as if the mask had become the new slide."""
    import shutil

    missing = {m: 0.0 for m in ("wsi", "rna", "mri")}
    cohort = make_cohort(2, 3, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=10, missing=missing)[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=256, mri_shape=(4, 8, 8),
                         max_slides=1)  # fmt: skip
    store = _fingerprinted_store(root, tmp_path / "store")
    case = str(cohort.ids[0])
    folder = root / "pathology/images" / case
    shutil.copy(folder / f"{case}_0.tif", folder / f"{case}_1.tif")
    shutil.copy(folder / f"{case}_0_tissue.tif", folder / f"{case}_1_tissue.tif")
    out = read_chimera(root, features=store.root)
    (err,) = out.errors
    assert err.patient == case and err.field == "wsi"
    assert f"(the folder has {case}_1.tif:" in err.reason and "_tissue" not in err.reason


def test_a_slide_filed_off_the_pattern_is_named_not_dropped(tmp_path):
    """A slide misfiled under another case's folder, a name off the pattern and an orphan
    mask were left out without a word; now each is a warning naming the case and file.
    The case's own slides, their masks and an unrelated notes file give none."""
    import shutil

    cohort = _small(n=4)
    write_chimera(cohort, tmp_path, slide_px=256, mri_shape=(4, 8, 8), max_slides=1)
    out = read_chimera(tmp_path)
    a, b = (str(i) for i in list(out.cohort.ids)[:2])
    fa = tmp_path / "pathology/images" / a
    fa.mkdir(parents=True, exist_ok=True)
    tif = next((tmp_path / "pathology/images").rglob("*_0.tif"))
    odd = [fa / f"{b}_1.tif", fa / f"{a}-2.TIF", fa / f"{a}_3_tissue.tif"]
    for f in odd:
        shutil.copy(tif, f)
    (fa / "notes.txt").write_text("scanned twice")
    before = {p.reason for p in out.problems}
    res = read_chimera(tmp_path)
    new = [p for p in res.problems if p.reason not in before]
    assert sorted(p.path for p in new) == sorted(str(f) for f in odd)
    assert {(p.severity, p.patient, p.field) for p in new} == {("warning", a, "wsi")}
    assert "not read" in new[0].reason and f"{a}_*.tif" in new[0].reason
