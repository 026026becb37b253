"""Extraction end to end on a CHIMERA-layout folder of real-format files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import ConfigError
from modalsurv.features.extract import run_extract
from modalsurv.features.mri import MriConfig
from modalsurv.io.store import FeatureStore

FAST = {"tile_encoder": "timm:resnet10t", "tile_size": 64, "max_tiles": 6, "batch_size": 4,
        "workers": 2, "mri": MriConfig(size=(8, 16, 16)), "allow_random_weights": True}  # fmt: skip


@pytest.fixture(scope="module")
def chimera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cohort, _ = make_cohort(n=3, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})  # fmt: skip
    return write_chimera(cohort, tmp_path_factory.mktemp("chimera"), task=1, slide_px=1024,
                         mpp=0.5, mri_shape=(8, 24, 24), max_slides=1)  # fmt: skip


def test_extract_writes_every_modality_with_provenance(chimera: Path, tmp_path: Path) -> None:
    events: list[str] = []
    rep = run_extract("chimera-task1", chimera, tmp_path / "store", **FAST,
                      volume_encoder="medicalnet_resnet10",
                      progress=lambda e, **kw: events.append(e))  # fmt: skip
    assert rep.ok and len(rep.done) == 3 and rep.n_tiles > 0 and rep.tiles_per_s > 0
    store = FeatureStore(tmp_path / "store")
    assert store.modalities() == ["mri", "rna", "slide", "wsi"]
    meta = store.meta("wsi")
    assert (meta["encoder"], meta["dim"]) == ("timm:resnet10t", 512)
    assert meta["checksum"].startswith("random-init:")
    assert store.meta("mri")["dim"] == 1536 and store.meta("rna")["dim"] == 12
    for pid in rep.done:
        x, c = store.read("wsi", pid)
        assert x.shape[1] == 512 and 1 <= len(x) <= 6 and c.shape == (len(x), 2)
        assert np.all(c >= 0) and np.all(c + 64 <= 1024)  # 64-px tiles inside the 1024-px slide
        s, _ = store.read("slide", pid)
        np.testing.assert_allclose(s, x.mean(0), rtol=1e-5)
    assert (tmp_path / "store" / "rna_genes.txt").read_text().count("\n") == 12
    assert events[0] == "start" and events[-1] == "finish" and "slide" in events
    for m in store.modalities():  # packed at the end: one memory-mappable dataset each
        with h5py.File(store.path(m), "r") as f:
            assert f["packed/features"].shape[0] == 3 and f["packed"].attrs["exact"]
    inodes = {m: store.path(m).stat().st_ino for m in store.modalities()}
    # a second run finds everything complete and does nothing (no repack either)
    again = run_extract("chimera-task1", chimera, tmp_path / "store", **FAST,
                        volume_encoder="medicalnet_resnet10")  # fmt: skip
    assert sorted(again.skipped) == sorted(rep.done) and again.done == []
    assert {m: store.path(m).stat().st_ino for m in store.modalities()} == inodes


def test_mixing_encoders_in_one_store_is_refused(chimera: Path, tmp_path: Path) -> None:
    run_extract("chimera-task1", chimera, tmp_path / "s", **FAST, limit=1)
    other = {**FAST, "tile_encoder": "timm:resnet14t"}
    with pytest.raises(ConfigError, match="^--tile-encoder.*refusing to mix"):  # exit 2
        run_extract("chimera-task1", chimera, tmp_path / "s", **other)
    assert FeatureStore(tmp_path / "s").patients("wsi") == ["1000"]


def test_corrupt_slide_is_reported_and_the_rest_finish(chimera: Path, tmp_path: Path) -> None:
    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    bad = sorted((root / "pathology/images/1001").glob("1001_*.tif"))[0]
    bad = bad if not bad.name.endswith("_tissue.tif") else bad.with_name("1001_0.tif")
    bad.write_bytes(b"II*\x00garbage" * 10)
    failed: list[dict] = []
    rep = run_extract("chimera-task1", root, tmp_path / "s", **FAST, rna=False,
                      progress=lambda e, **kw: failed.append(kw) if e == "failed" else None)  # fmt: skip
    assert sorted(rep.done) == ["1000", "1002"]
    assert len(rep.failures) == 1 and rep.failures[0].patient == "1001"
    assert rep.failures[0].path == str(bad) and "cannot open slide" in rep.failures[0].reason
    assert failed and failed[0]["path"] == str(bad)
    assert rep.failed_patients == ["1001"] and rep.unusable_inputs == []


def test_a_bad_rna_file_is_an_unusable_input_not_a_failed_patient(chimera: Path,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    """The slides of a patient whose RNA file is corrupt are extracted: the command counted
    that patient as failed ('done 3, failed 1'); now it says one unusable input."""
    from typer.testing import CliRunner

    from modalsurv.cli import app

    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    (root / "rna" / "1001_RNA.json").write_text("{cut sho")
    args = ["extract", str(root), "--layout", "chimera-task1", "--out", str(tmp_path / "s"),
            "--tile-encoder", "timm:resnet10t", "--tile-size", "64", "--max-tiles", "6",
            "--batch-size", "4", "--random-weights"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    text = " ".join(res.output.split())
    assert res.exit_code == 1  # an input could not be used: a script must still notice
    assert "done 3" in text and "failed 0" in text
    assert "1 unusable input(s) of patients otherwise extracted" in text
    assert "unusable input patient '1001'" in text or "unusable input file" in text


def test_an_rna_profile_in_another_gene_vocabulary_is_noted_and_kept(chimera: Path,
                                                                    tmp_path: Path) -> None:
    """One RNA file with Ensembl ids instead of symbols: noted against its file; every
    profile is stored on the union of genes (NaN: not measured), and which genes a model
    uses is decided on each training part (the intersection would have had none)."""
    import json

    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    odd = root / "rna" / "1001_RNA.json"
    odd.write_text(json.dumps({f"ENSG{i:011d}": 1.0 for i in range(12)}))
    rep = run_extract("chimera-task1", root, tmp_path / "s", **FAST)
    assert not rep.failures
    notes = [p for p in rep.problems if p.field == "rna"]
    assert [(p.patient, p.path) for p in notes] == [("1001", str(odd))]
    assert "none of the 12 genes" in notes[0].reason
    store = FeatureStore(tmp_path / "s")
    assert store.meta("rna")["dim"] == 24
    assert store.has("rna", "1000") and store.has("rna", "1001")
    genes = (tmp_path / "s" / "rna_genes.txt").read_text().split()
    odd_row = store.read("rna", "1001")[0]
    assert np.isnan(odd_row[[not g.startswith("ENSG") for g in genes]]).all()
    assert not np.isnan(odd_row[[g.startswith("ENSG") for g in genes]]).any()


def test_resume_after_a_crash_inside_the_writer(chimera: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "s"
    real = FeatureStore.write_many
    calls = {"n": 0}

    def crashing(self, modality, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # patient 2: its wsi bag written, crash before its slide vector
            raise KeyboardInterrupt("killed")
        return real(self, modality, *a, **kw)

    monkeypatch.setattr(FeatureStore, "write_many", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_extract("chimera-task1", chimera, out, **FAST, flush_every=1, rna=False)
    monkeypatch.setattr(FeatureStore, "write_many", real)
    store = FeatureStore(out)
    assert store.patients("slide") == ["1000"] and store.patients("wsi") == ["1000", "1001"]
    rep = run_extract("chimera-task1", chimera, out, **FAST, rna=False)
    assert rep.skipped == ["1000"] and sorted(rep.done) == ["1001", "1002"]
    assert store.patients("slide") == ["1000", "1001", "1002"]
    with h5py.File(store.path("wsi"), "r") as f:  # the resumed run packed everyone
        assert list(f["packed/patients"].asstr()[()]) == ["1000", "1001", "1002"]


def test_resume_after_sigkill(chimera: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    script = textwrap.dedent(f"""
        import os, signal
        from modalsurv.features.extract import run_extract
        from modalsurv.features.mri import MriConfig
        def progress(event, **kw):
            if event == "batch" and kw["patient"] == "1001":
                os.kill(os.getpid(), signal.SIGKILL)  # mid-patient, after patient 1 was written
        run_extract("chimera-task1", {str(chimera)!r}, {str(out)!r}, tile_encoder="timm:resnet10t",
                    tile_size=64, max_tiles=6, batch_size=4, flush_every=1, rna=False,
                    progress=progress, allow_random_weights=True)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert FeatureStore(out).patients("wsi") == ["1000"]
    rep = run_extract("chimera-task1", chimera, out, **FAST, rna=False)
    assert rep.skipped == ["1000"] and sorted(rep.done) == ["1001", "1002"]


def test_limit_titan_check_and_manifest_layout(chimera: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--slide-encoder: .*CONCH v1.5"):
        run_extract("chimera-task1", chimera, tmp_path / "t", **FAST, slide_encoder="titan")
    assert not (tmp_path / "t").exists()  # refused before anything was written
    slides = sorted(p for p in (chimera / "pathology/images").rglob("*.tif")
                    if not p.name.endswith("_tissue.tif"))  # fmt: skip
    lines = ["patient,wsi_path,wsi_mask_path"]
    for s in slides[:2]:
        lines.append(f"{s.parent.name},{s},{s.with_name(s.stem + '_tissue.tif')}")
    man = tmp_path / "manifest.csv"
    man.write_text("\n".join(lines) + "\n")
    rep = run_extract("manifest", man, tmp_path / "m", **FAST, limit=1)
    assert rep.done == [slides[0].parent.name] and rep.ok


def test_a_missing_source_file_fails_its_patient_alone(chimera: Path, tmp_path: Path) -> None:
    slide = next(p for p in (chimera / "pathology/images/1000").glob("1000_*.tif")
                 if not p.name.endswith("_tissue.tif"))  # fmt: skip
    gone = tmp_path / "gone.tif"
    man = tmp_path / "manifest.csv"
    man.write_text(f"patient,wsi_path\n1000,{slide}\n1001,{gone}\n")
    rep = run_extract("manifest", man, tmp_path / "m", **FAST, rna=False)
    assert rep.done == ["1000"]
    assert [(f.patient, f.path) for f in rep.failures] == [("1001", str(gone))]
    assert "cannot read the source file" in rep.failures[0].reason


def test_nan_features_fail_their_patient_and_the_batch_is_written(chimera: Path,
                                                                  tmp_path: Path) -> None:
    """A NaN inside one patient's MRI: that patient fails (named), the others' MRI features
    in the same write batch are stored (before, the batch write raised and lost them)."""
    import SimpleITK as sitk

    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    adc = next((root / "radiology").rglob("1001_*adc*.mha"))
    img = sitk.ReadImage(str(adc), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[:] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(adc))
    rep = run_extract("chimera-task1", root, tmp_path / "s", **FAST, rna=False,
                      volume_encoder="medicalnet_resnet10", flush_every=3)  # fmt: skip
    assert [(f.patient, "NaN" in f.reason) for f in rep.failures] == [("1001", True)]
    store = FeatureStore(tmp_path / "s")
    assert [store.has("mri", p) for p in ("1000", "1001", "1002")] == [True, False, True]
    assert all(store.has("wsi", p) for p in ("1000", "1001", "1002"))


def test_a_dicom_series_folder_has_a_fingerprint(tmp_path: Path) -> None:
    from modalsurv.io.fingerprint import file_fingerprint

    series = tmp_path / "t2w"
    series.mkdir()
    for i in range(3):
        (series / f"{i:03d}.dcm").write_bytes(bytes([i]) * (10 + i))
    first = file_fingerprint(series)
    assert first.startswith("t2w/:33:")
    (series / "002.dcm").write_bytes(b"x" * 40)
    assert file_fingerprint(series) != first


def test_a_dicom_series_fingerprint_ignores_hidden_files(tmp_path: Path) -> None:
    """Finder's .DS_Store / ._* files, added after extraction, are no slices: the store's
    MRI features still match the folder; a clean folder's fingerprint is unchanged."""
    from modalsurv.io.fingerprint import file_fingerprint

    series = tmp_path / "t2w"
    series.mkdir()
    for i in range(3):
        (series / f"{i:03d}.dcm").write_bytes(bytes([i]) * (10 + i))
    first = file_fingerprint(series)
    (series / ".DS_Store").write_bytes(b"finder" * 100)
    (series / "._000.dcm").write_bytes(b"resource fork")
    (series / ".cache").mkdir()
    (series / ".cache" / "x").write_bytes(b"y")
    assert file_fingerprint(series) == first


def test_extraction_record_and_settings_are_kept(chimera: Path, tmp_path: Path) -> None:
    import json

    from modalsurv.io.store import read_extraction_record

    out = tmp_path / "s"
    run_extract("chimera-task1", chimera, out, **FAST, volume_encoder="medicalnet_resnet10",
                limit=1)  # fmt: skip
    rec = read_extraction_record(out)
    assert rec is not None and rec["layout"] == "chimera-task1"
    assert rec["tile_encoder"]["spec"] == "timm:resnet10t" and rec["tile_encoder"]["random_weights"]
    assert rec["tiles"]["mpp"] == 0.5 and rec["tiles"]["tile_size"] == 64
    assert rec["tiles"]["max_tiles_per_slide"] == 6
    assert rec["mri"]["size"] == [8, 16, 16] and rec["volume_encoder"]["spec"] == "medicalnet_resnet10"
    assert set(rec["random_weights"]) == {"timm:resnet10t", "medicalnet_resnet10"}
    assert set(rec["modalities"]) == {"wsi", "slide", "mri", "rna"}
    json.dumps(rec)  # plain JSON
    store = FeatureStore(out)
    assert store.meta("wsi")["settings"]["tile_size"] == 64
    assert store.meta("mri")["settings"]["size"] == [8, 16, 16]
    # slides only this time: the MRI features stored before are still random-init ones
    run_extract("chimera-task1", chimera, out, **FAST, limit=2)
    rec = read_extraction_record(out)
    assert rec["volume_encoder"]["spec"] == "medicalnet_resnet10"
    assert set(rec["random_weights"]) == {"timm:resnet10t", "medicalnet_resnet10"}


def test_same_encoder_other_tile_geometry_is_refused(chimera: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    run_extract("chimera-task1", chimera, out, **FAST, limit=1)
    for change, option in (({"mpp": 1.0}, "--mpp"), ({"tile_size": 96}, "--tile-size"),
                           ({"max_tiles": 3}, "--max-tiles"),
                           ({"tile_encoder_kwargs": {"input_size": 32}}, "--timm-kwargs")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"^{option}: .*other extraction settings"):
            run_extract("chimera-task1", chimera, out, **{**FAST, **change})
    assert FeatureStore(out).patients("wsi") == ["1000"]


def test_random_weights_need_the_flag(chimera: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--random-weights"):
        run_extract("chimera-task1", chimera, tmp_path / "s", **{**FAST, "allow_random_weights": False})
    assert not (tmp_path / "s" / "wsi.h5").exists()


def test_overlapping_ids_from_another_cohort_are_not_reused(chimera: Path, tmp_path: Path) -> None:
    """Resume is keyed by patient *and* source files: a second cohort whose ids overlap is
    refused patient by patient (or re-extracted on request), never silently reused."""
    out = tmp_path / "s"
    first = run_extract("chimera-task1", chimera, out, **FAST, rna=False)
    assert sorted(first.done) == ["1000", "1001", "1002"]
    other = tmp_path / "other"
    cohort, _ = make_cohort(n=2, seed=5, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})  # fmt: skip
    write_chimera(cohort, other, task=1, slide_px=1024, mpp=0.5, mri_shape=(8, 24, 24),
                  max_slides=1, seed=9)  # ids 1000, 1001 again, other slides
    store = FeatureStore(out)
    before = store.read("wsi", "1000")[0]
    rep = run_extract("chimera-task1", other, out, **FAST, rna=False)
    assert rep.done == [] and sorted(f.patient for f in rep.failures) == ["1000", "1001"]
    assert "other source files" in rep.failures[0].reason
    np.testing.assert_array_equal(store.read("wsi", "1000")[0], before)
    again = run_extract("chimera-task1", other, out, **FAST, rna=False, reextract_changed=True)
    assert sorted(again.done) == ["1000", "1001"] and not again.failures
    assert not np.array_equal(store.read("wsi", "1000")[0], before)
    # the same files again: nothing to do
    assert sorted(run_extract("chimera-task1", other, out, **FAST, rna=False).skipped) == [
        "1000", "1001"]


def test_no_patient_in_a_parent_folder_names_the_task_folders_below(tmp_path: Path) -> None:
    """`extract runs/demo/chimera` (the folder above train/) said only "no patient found"."""
    from modalsurv.errors import LayoutError

    (tmp_path / "cohort" / "train" / "clinical_data").mkdir(parents=True)
    (tmp_path / "cohort" / "train" / "clinical_data" / "1000.json").write_text("{}")
    with pytest.raises(LayoutError, match="looked for clinical_data/{case}.json") as err:
        run_extract("chimera-task1", tmp_path / "cohort", tmp_path / "s", **FAST)
    assert f"one level down: {tmp_path / 'cohort' / 'train'}" in str(err.value)


def test_no_patient_is_an_error_and_a_second_process_is_locked_out(tmp_path: Path) -> None:
    from modalsurv.errors import LayoutError, LockedError
    from modalsurv.utils import exclusive_lock

    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="no patient found"):
        run_extract("chimera-task1", tmp_path / "empty", tmp_path / "s", **FAST)
    with exclusive_lock(tmp_path / "s2", "feature store"):
        with pytest.raises(LockedError, match="feature store"):
            run_extract("chimera-task1", tmp_path / "empty", tmp_path / "s2", **FAST)


def test_a_manifest_with_a_duplicated_patient_id_is_refused(tmp_path: Path) -> None:
    """Two rows of one id would be extracted one over the other: refused, naming the rows."""
    from modalsurv.errors import LayoutError
    from modalsurv.features.extract import discover_patients

    man = tmp_path / "manifest.csv"
    man.write_text("patient,wsi_path\n1000,a.tif\n1001,b.tif\n1000,c.tif\n")
    with pytest.raises(LayoutError, match=r"duplicate patient id on rows \[2, 4\]") as err:
        discover_patients("manifest", man)
    assert err.value.patient == "1000" and err.value.path == str(man)
    man.write_text("patient,wsi_path\n1000,a.tif\n,b.tif\n")
    with pytest.raises(LayoutError, match="empty patient id"):
        discover_patients("manifest", man)


def test_option_errors_are_usage_errors_and_leave_no_folder(chimera: Path, tmp_path: Path) -> None:
    """What the command line got wrong is a ConfigError (exit 2) naming the option, found
    before work starts; the --out folder it would have made is not left behind."""
    from modalsurv.errors import DataError

    cases = [({"tile_encoder": "nope"}, "^--tile-encoder: unknown tile encoder 'nope'"),
             ({"volume_encoder": "nope"}, "^--volume-encoder: unknown volume encoder 'nope'"),
             ({"tile_encoder_kwargs": {"bogus_kw": 1}}, "^--timm-kwargs.*'bogus_kw'")]  # fmt: skip
    for i, (change, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=message):
            run_extract("chimera-task1", chimera, tmp_path / f"s{i}", **{**FAST, **change}, limit=1)
        assert not (tmp_path / f"s{i}").exists(), change
    with pytest.raises(ConfigError, match="--layout"):
        run_extract("chimera-task2", chimera, tmp_path / "l", **FAST)
    with pytest.raises(DataError, match="does not exist"):
        run_extract("chimera-task1", tmp_path / "nowhere", tmp_path / "r", **FAST)
    assert not (tmp_path / "l").exists() and not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    with pytest.raises(DataError, match="does not exist"):
        run_extract("chimera-task1", tmp_path / "nowhere", tmp_path / "mine", **FAST)
    assert (tmp_path / "mine").is_dir()


def test_a_killed_runs_cache_temporaries_are_removed(chimera: Path, tmp_path: Path) -> None:
    """An image-cache file being written when the run was killed stayed beside the cache
    forever (a patient's tiles: up to hundreds of MB); the entry itself never counted."""
    out = tmp_path / "s"
    stale = out / "image_cache" / "wsi" / ".1000.tiles.npy.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 64)
    rep = run_extract("chimera-task1", chimera, out, **FAST, rna=False, limit=1, tile_cache=True)
    assert rep.done == ["1000"] and not stale.exists()
    assert (out / "image_cache" / "wsi" / "1000.tiles.npy").is_file()


def test_a_slide_smaller_than_one_tile_is_named_as_such(tmp_path: Path) -> None:
    """It was reported as 'no tile with ≥ 50% tissue', which sends one looking at the mask."""
    import tifffile

    img = np.full((100, 100, 3), 120, np.uint8)
    tifffile.imwrite(tmp_path / "small.tif", img, photometric="rgb", resolution=(4e4, 4e4),
                     resolutionunit="CENTIMETER")  # 0.25 µm/px  # fmt: skip
    man = tmp_path / "manifest.csv"
    man.write_text(f"patient,wsi_path\np1,{tmp_path / 'small.tif'}\n")
    rep = run_extract("manifest", man, tmp_path / "s", **FAST, rna=False)
    assert [(f.patient, f.path) for f in rep.failures] == [("p1", str(tmp_path / "small.tif"))]
    assert ("the slide (100 × 100 px at 0.25 µm/px) is smaller than one 64-px tile at 0.5 µm/px"
            " (128 px at its resolution)") == rep.failures[0].reason  # fmt: skip


def test_an_empty_tissue_mask_is_named_not_the_slide(tmp_path: Path) -> None:
    """A provided mask that marks nothing was reported as 'no tile with ≥ 50 % tissue'
    against the slide; now the warning names the mask and says it is empty."""
    import tifffile

    img = np.full((512, 512, 3), 120, np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", img, photometric="rgb", resolution=(4e4, 4e4),
                     resolutionunit="CENTIMETER")  # 0.25 µm/px  # fmt: skip
    tifffile.imwrite(tmp_path / "s_tissue.tif", np.zeros((64, 64), np.uint8))
    man = tmp_path / "manifest.csv"
    man.write_text(f"patient,wsi_path,wsi_mask_path\np1,{tmp_path / 's.tif'},"
                   f"{tmp_path / 's_tissue.tif'}\n")  # fmt: skip
    rep = run_extract("manifest", man, tmp_path / "st", **FAST, rna=False)
    said = [p for p in rep.problems if "marks no tissue" in p.reason]
    assert said and said[0].path == str(tmp_path / "s_tissue.tif") and said[0].patient == "p1"


def test_a_slide_beyond_the_mask_list_is_extracted_not_dropped(chimera: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """PatientFiles with two slides and one mask: the slides were zipped with the masks, so
    the second slide was silently left out of the patient's bag."""
    from modalsurv.features.extract import discover_patients

    pf = discover_patients("chimera-task1", chimera)[0]
    assert len(pf.slides) == 1 and pf.masks[0] is not None
    second = tmp_path / f"{pf.slides[0].stem}_b.tif"
    shutil.copy(pf.slides[0], second)
    pf.slides.append(second)  # no mask for it: Otsu
    rep = run_extract("chimera-task1", chimera, tmp_path / "s", **FAST, patients=[pf], rna=False)
    assert rep.ok and rep.done == [pf.patient]
    x, _ = FeatureStore(tmp_path / "s").read("wsi", pf.patient)
    assert len(x) == rep.n_tiles > 6  # both slides (at most 6 tiles each)


def test_an_mri_without_a_mask_among_masked_patients_is_warned(chimera: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """A patient without a prostate mask was embedded silently from the whole field of view
    (another crop and normalisation region than the masked patients of the same cohort)."""
    from modalsurv.features.extract import discover_patients

    def mri_only(drop_mask: str | None) -> list:
        pfs = discover_patients("chimera-task1", chimera)
        for pf in pfs:
            pf.slides, pf.masks = [], []
            assert pf.mri_mask is not None
            if pf.patient == drop_mask:
                pf.mri_mask = None
        return pfs

    opts = {**FAST, "rna": False, "volume_encoder": "medicalnet_resnet10"}
    pfs = mri_only("1001")
    rep = run_extract("chimera-task1", chimera, tmp_path / "a", patients=pfs, **opts)
    assert rep.ok and sorted(rep.done) == ["1000", "1001", "1002"]
    said = [p for p in rep.problems if p.field == "mri_mask"]
    assert [(p.severity, p.patient, p.path) for p in said] == [
        ("warning", "1001", str(next(pf for pf in pfs if pf.patient == "1001").mri["t2w"]))]
    assert "no prostate mask" in said[0].reason and "2 patient(s)" in said[0].reason
    # the masked patients' features are those of a run without the unmasked one
    alone = [pf for pf in mri_only(None) if pf.patient != "1001"]
    ref = run_extract("chimera-task1", chimera, tmp_path / "b", patients=alone, **opts)
    assert not [p for p in ref.problems if p.field == "mri_mask"]
    a, b = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    for pid in ("1000", "1002"):
        assert np.array_equal(a.read("mri", pid)[0], b.read("mri", pid)[0])
    # nobody has a mask: all alike, nothing to warn about
    none = [pf for pf in mri_only("1001") if pf.patient == "1001"]
    rep = run_extract("chimera-task1", chimera, tmp_path / "c", patients=none, **opts)
    assert rep.ok and not [p for p in rep.problems if p.field == "mri_mask"]


def _two_slide_manifest(chimera: Path, folder: Path) -> tuple[Path, Path, Path]:
    """A manifest of one patient with two copies of a CHIMERA slide (Otsu tissue), the
    second cut to its first quarter (a truncated upload): (manifest, good, bad)."""
    from modalsurv.features.extract import discover_patients

    src = discover_patients("chimera-task1", chimera)[0].slides[0]
    folder.mkdir()
    good, bad = folder / "p1_a.tif", folder / "p1_b.tif"
    shutil.copy(src, good)
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 4])
    man = folder / "manifest.csv"
    man.write_text(f"patient,wsi_path\np1,{good};{bad}\np2,{good}\n")
    return man, good, bad


def test_one_unreadable_slide_costs_only_that_slide(chimera: Path, tmp_path: Path) -> None:
    """A patient with a good and a truncated slide lost both (no wsi, no slide vector);
    now the good slide is stored as if extracted alone, the bad one is an unusable input
    naming its file, and the record keeps the patient so a rerun retries the slide: once
    the file is fixed, both slides are stored."""
    import json

    man, good, bad = _two_slide_manifest(chimera, tmp_path / "c")
    out = tmp_path / "s"
    rep = run_extract("manifest", man, out, **FAST, rna=False, tile_cache=True)
    assert sorted(rep.done) == ["p1", "p2"] and rep.failed_patients == []
    assert [(f.patient, f.path) for f in rep.unusable_inputs] == [("p1", str(bad))]
    assert "left out" in rep.failures[0].reason
    store = FeatureStore(out)
    for m in ("wsi", "slide"):  # p2 is the good slide alone
        assert np.array_equal(store.read(m, "p1")[0], store.read(m, "p2")[0]), m
    assert np.array_equal(store.read("wsi", "p1")[1], store.read("wsi", "p2")[1])
    cached = {p: np.load(out / "image_cache" / "wsi" / f"{p}.tiles.npy") for p in ("p1", "p2")}
    assert np.array_equal(cached["p1"], cached["p2"])  # no tile read before the slide broke
    record = json.loads((out / "extraction.json").read_text())
    assert list(record["unusable_slides"]) == ["p1"]
    # unchanged: not taken for finished work, tried (and reported) again
    again = run_extract("manifest", man, out, **FAST, rna=False)
    assert again.done == ["p1"] and again.skipped == ["p2"]
    assert [(f.patient, f.path) for f in again.unusable_inputs] == [("p1", str(bad))]
    # fixed: a plain rerun extracts both slides and forgets the mark
    shutil.copy(good, bad)
    fixed = run_extract("manifest", man, out, **FAST, rna=False)
    assert fixed.ok and fixed.done == ["p1"] and fixed.skipped == ["p2"]
    x, _ = store.read("wsi", "p1")
    one = store.read("wsi", "p2")[0]
    assert np.array_equal(x, np.concatenate([one, one]))
    assert not json.loads((out / "extraction.json").read_text()).get("unusable_slides")
    assert sorted(run_extract("manifest", man, out, **FAST, rna=False).skipped) == ["p1", "p2"]


def test_a_patient_whose_every_slide_is_unreadable_still_fails(chimera: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    man, good, bad = _two_slide_manifest(chimera, tmp_path / "c")
    man.write_text(f"patient,wsi_path\np1,{bad};{bad}\np2,{good}\n")
    rep = run_extract("manifest", man, tmp_path / "s", **FAST, rna=False)
    assert rep.done == ["p2"] and rep.failed_patients == ["p1"]
    assert [(f.patient, f.path) for f in rep.failures] == [("p1", str(bad))]
    assert not FeatureStore(tmp_path / "s").has("wsi", "p1")


def test_a_slide_that_breaks_half_way_leaves_none_of_its_tiles_cached(
        chimera: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The image cache holds the store's bag: tiles a left-out slide yielded before it
    failed must not be cached with the patient's good slides."""
    from modalsurv.features import extract

    man, good, bad = _two_slide_manifest(chimera, tmp_path / "c")
    shutil.copy(good, bad)  # readable; made to fail after its first batch
    real = extract.wsi.iter_tile_batches

    def breaking(slide, plan, *args, **kwargs):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(real(slide, plan, *args, **kwargs)):
            if i == 1 and slide.path == bad:
                raise OSError("read error half way")
            yield batch

    monkeypatch.setattr(extract.wsi, "iter_tile_batches", breaking)
    out = tmp_path / "s"
    rep = run_extract("manifest", man, out, **FAST, rna=False, tile_cache=True)
    assert [(f.patient, f.path) for f in rep.unusable_inputs] == [("p1", str(bad))]
    cached = {p: np.load(out / "image_cache" / "wsi" / f"{p}.tiles.npy") for p in ("p1", "p2")}
    assert np.array_equal(cached["p1"], cached["p2"])
    assert len(FeatureStore(out).read("wsi", "p1")[0]) == len(cached["p1"])


def test_caching_a_stored_patient_leaves_out_its_recorded_unreadable_slide(
        chimera: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Caching the images of a patient stored without an unreadable slide tiled every slide
    again, so that slide failed the whole patient's cache; now the slides its
    ``unusable_slides`` entry lists are left out: the cached tiles are the stored bag's."""
    from modalsurv.features import extract

    man, _, bad = _two_slide_manifest(chimera, tmp_path / "c")
    out = tmp_path / "s"
    first = run_extract("manifest", man, out, **FAST, rna=False)
    assert [(f.patient, f.path) for f in first.unusable_inputs] == [("p1", str(bad))]
    # a stored patient whose retry is not due: only its images are cached
    monkeypatch.setattr(extract, "_retry_unusable", lambda *args: False)
    rep = run_extract("manifest", man, out, **FAST, rna=False, tile_cache=True)
    assert rep.failures == [] and sorted(rep.cached) == ["p1", "p2"] and rep.done == []
    x, coords = FeatureStore(out).read("wsi", "p1")
    folder = out / "image_cache" / "wsi"
    assert len(np.load(folder / "p1.tiles.npy")) == len(x) > 0
    np.testing.assert_array_equal(np.load(folder / "p1.coords.npy"), coords)
    np.testing.assert_array_equal(np.load(folder / "p1.tiles.npy"),
                                  np.load(folder / "p2.tiles.npy"))  # fmt: skip


def test_a_store_of_an_earlier_extraction_revision_is_not_mixed(chimera: Path, tmp_path: Path,
                                                               monkeypatch) -> None:  # fmt: skip
    """Tiles chosen (or volumes prepared) by earlier code under the same settings are other
    features: a store they are in refuses this code's, naming --out and the revision."""
    import modalsurv.features.extract as ex

    monkeypatch.setattr(ex, "TILE_REVISION", 1)
    run_extract("chimera-task1", chimera, tmp_path / "s", **FAST, limit=1)
    monkeypatch.undo()
    now = rf"revision: stored 1, now {ex.TILE_REVISION}"
    with pytest.raises(ConfigError, match=rf"^--out: .*{now}.*refusing to mix"):
        run_extract("chimera-task1", chimera, tmp_path / "s", **FAST)
    assert FeatureStore(tmp_path / "s").patients("wsi") == ["1000"]


def test_a_slide_the_cache_only_pass_cannot_read_is_the_one_named(chimera: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:  # fmt: skip
    """A decoder's own error (not a DataError) in the cache-only pass named the patient's
    first slide, not the unreadable one."""
    from modalsurv.features import extract

    man, _, bad = _two_slide_manifest(chimera, tmp_path / "c")
    out = tmp_path / "s"
    run_extract("manifest", man, out, **FAST, rna=False)
    monkeypatch.setattr(extract, "_retry_unusable", lambda *args: False)
    monkeypatch.setattr(extract, "_stored_without", lambda *args: set())  # try every slide
    rep = run_extract("manifest", man, out, **FAST, rna=False, tile_cache=True)
    assert [(f.patient, f.path) for f in rep.failures] == [("p1", str(bad))]


def test_raw_slides_without_organiser_features_are_not_warned(chimera: Path, tmp_path: Path) -> None:
    """Extraction makes the slides' features: a folder without the organisers' ``.pt``
    files warned every slide 'no feature file for slide (extract features first)'."""
    from modalsurv.features.extract import discover_patients

    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    shutil.rmtree(root / "pathology" / "features")
    problems: list = []
    pfs = discover_patients("chimera-task1", root, problems)
    assert problems == [] and all(pf.slides for pf in pfs)


def test_a_slide_added_since_extraction_is_the_file_named(chimera: Path, tmp_path: Path) -> None:
    """A slide added to a stored case is a changed patient (refused, never kept silently);
    the refusal named the case's first slide instead of the slide that was added."""
    root = tmp_path / "c"
    shutil.copytree(chimera, root)
    run_extract("chimera-task1", root, tmp_path / "s", **FAST, rna=False, limit=1)
    case = root / "pathology/images/1000"
    shutil.copy(case / "1000_0.tif", case / "1000_1.tif")
    shutil.copy(case / "1000_0_tissue.tif", case / "1000_1_tissue.tif")
    rep = run_extract("chimera-task1", root, tmp_path / "s", **FAST, rna=False, limit=1)
    (fail,) = rep.failures
    assert rep.done == rep.skipped == [] and fail.patient == "1000"
    assert fail.path == str(case / "1000_1.tif") and "other source files" in fail.reason
