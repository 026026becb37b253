import json

import pytest
import torch

from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import DataError
from modalsurv.io.scan import scan


@pytest.fixture
def root(tmp_path):
    cohort = make_cohort(
        8,
        1,
        max_tiles=8,
        tile_dim=8,
        slide_dim=4,
        mri_dim=4,
        n_genes=10,
        missing={"wsi": 0.0, "rna": 0.0},
    )[0]
    write_chimera(cohort, tmp_path, images=False)
    return tmp_path, list(cohort.ids)


def test_scan_lists_every_problem(root):
    path, ids = root
    clin = path / "clinical_data"
    (clin / f"{ids[0]}.json").write_text("[1, 2")  # corrupt
    rec = json.loads((clin / f"{ids[1]}.json").read_text())
    del rec["BCR"]
    (clin / f"{ids[1]}.json").write_text(json.dumps(rec))  # no label
    (clin / "nested").mkdir()
    (clin / "nested" / f"{ids[2]}.json").write_text("{}")  # duplicate case id
    pt = sorted((path / "pathology/features/embeddings").glob(f"{ids[3]}_*.pt"))[0]
    torch.save(torch.zeros(5), pt)  # wrong shape
    (path / "rna" / f"{ids[4]}_RNA.json").unlink()  # missing file -> absent, not an error
    (path / "pathology/images/7777").mkdir(parents=True)  # case without clinical file
    problems = scan(path, "chimera-task1")
    by = {(p.patient, p.field): p for p in problems}
    assert "corrupt JSON" in by[(ids[0], None)].reason
    assert by[(ids[1], "BCR")].reason == "patient without label"
    assert "duplicate case id" in by[(ids[2], "id")].reason
    assert "shape" in by[(ids[3], "wsi")].reason and by[(ids[3], "wsi")].path == str(pt)
    assert "clinical file missing" in by[("7777", "clinical")].reason
    assert not any(p.field == "BCR_PSA" for p in problems)  # a declared leak: a note only
    sev = [p.severity for p in problems]
    assert sev == sorted(sev)  # errors first
    with pytest.raises(DataError) as exc:
        scan(path, "chimera-task1", strict=True)
    assert str(len(problems)) in str(exc.value)


def test_strict_turns_warnings_into_errors(root):
    path, ids = root
    rec = path / "clinical_data" / f"{ids[0]}.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "surgeon": "A"}))
    problems = scan(path, "chimera-task1")
    assert [(p.severity, p.field) for p in problems] == [("warning", "surgeon")]
    with pytest.raises(DataError, match="column not in the schema"):
        scan(path, "chimera-task1", strict=True)


def test_a_declared_leak_column_is_one_note_not_a_problem(root):
    """Every real CHIMERA record holds BCR_PSA: a warning per patient made --strict refuse
    all real data. It is one note with the count; strict and the problems ignore it."""
    path, ids = root
    for pid in ids:
        rec = path / "clinical_data" / f"{pid}.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "BCR_PSA": 0.3}))
    notes = []
    assert scan(path, "chimera-task1", strict=True, notes=notes) == []
    assert [(n.severity, n.field, n.path) for n in notes] == [("note", "BCR_PSA", str(path))]
    assert notes[0].reason == (f"declared label-leak column, present in {len(ids)} of"
                               f" {len(ids)} record(s), never used as a feature")  # fmt: skip
    assert str(notes[0]).startswith("[note] file ")


def test_scan_missing_root_and_manifest(tmp_path):
    assert scan(tmp_path / "nope", "chimera-task3")[0].severity == "error"
    (tmp_path / "m.csv").write_text("patient,time,event\na,1.0,1\na,2.0,0\nb,,1\n")
    problems = scan(tmp_path / "m.csv", "manifest")
    assert {p.patient for p in problems if p.severity == "error"} >= {"a", "b"}


def test_a_damaged_store_is_listed_with_the_folders_own_problems(root, tmp_path_factory):
    from modalsurv.io.store import FeatureStore

    path, ids = root
    store = FeatureStore(tmp_path_factory.mktemp("store"))
    store.write_many("mri", {i: [0.0, 1.0] for i in ids}, encoder="test")
    h5 = store.path("mri")
    h5.write_bytes(h5.read_bytes()[:200])  # truncated
    (path / "clinical_data" / f"{ids[0]}.json").write_text("[1, 2")  # a corrupt record
    pt = sorted((path / "pathology/features/embeddings").glob(f"{ids[3]}_*.pt"))[0]
    torch.save(torch.zeros(5), pt)  # and tile features read after the store
    problems = scan(path, "chimera-task1", features=store.root)
    assert any(p.path == str(h5) and p.severity == "error" for p in problems), problems
    assert any(p.patient == ids[3] and p.path == str(pt) for p in problems), problems
    assert sum(p.patient == ids[0] and "corrupt JSON" in p.reason for p in problems) == 1


def test_a_folder_one_level_too_high_names_the_task_folders_below(tmp_path):
    """A folder of train/ and held/ (as the demo writes) said only "no patient found"."""
    for name in ("train", "held"):
        (tmp_path / name / "clinical_data").mkdir(parents=True)
        (tmp_path / name / "clinical_data" / "1000.json").write_text("{}")
    problems = scan(tmp_path, "chimera-task1")
    assert [p.severity for p in problems] == ["error"], problems
    reason = problems[0].reason
    assert "no patient found (looked for clinical_data/{case}.json under it" in reason
    assert f"one level down: {tmp_path / 'held'}, {tmp_path / 'train'}" in reason
    # the clinical_data folder itself: what was looked for, and no folder to suggest
    reason = scan(tmp_path / "train" / "clinical_data", "chimera-task1")[0].reason
    assert reason == "no patient found (looked for clinical_data/{case}.json under it)"


def test_cases_of_the_other_task_layout_are_named(root):
    path, ids = root
    # the whole folder scanned with the wrong layout: not just "no patient found"
    problems = scan(path, "chimera-task3")
    assert [p.severity for p in problems] == ["error", "warning"], problems
    assert problems[1].field == "layout" and problems[1].path == str(path)
    assert f"{len(ids)} case(s) in the chimera-task1 layout" in problems[1].reason
    assert ids[0] in problems[1].reason
    # a task-3 folder inside a task-1 root: its cases are not read, and that is said
    (path / "data" / "3A_000").mkdir(parents=True)
    (path / "data" / "3A_000" / "3A_000_CD.json").write_text("{}")
    layout = [p for p in scan(path, "chimera-task1") if p.field == "layout"]
    assert len(layout) == 1 and layout[0].severity == "warning"
    assert "1 case(s) in the chimera-task3 layout" in layout[0].reason
    assert "3A_000" in layout[0].reason


def test_a_folder_to_predict_on_is_scanned_without_labels(root):
    root = root[0]
    """Cases without follow-up and event are what `predict` reads; a scan of such a folder
    listed an error per case. `scan --unlabelled` reads it as predict does."""
    from typer.testing import CliRunner

    from modalsurv.cli import app
    from modalsurv.errors import ConfigError

    for f in (root / "clinical_data").glob("*.json"):
        record = json.loads(f.read_text())
        record.pop("time_to_follow-up/BCR", None)
        record.pop("BCR", None)
        f.write_text(json.dumps(record))
    assert any("without label" in p.reason for p in scan(root))
    assert not [p for p in scan(root, labels=False) if p.severity == "error"]
    res = CliRunner().invoke(app, ["scan", str(root), "--unlabelled"])
    assert res.exit_code == 0, res.output
    with pytest.raises(ConfigError, match="manifest always holds labels"):
        scan(root / "m.csv", layout="manifest", labels=False)


def test_a_missing_root_is_listed_once_with_a_feature_store(tmp_path):
    """With --features the read was redone without the store when it stopped, and a stop
    of the folder's own (its root missing) was then listed twice: '2 error(s)'."""
    from modalsurv.io.store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    store.write_many("mri", {"a": [0.0, 1.0]}, encoder="test")
    problems = scan(tmp_path / "nope", "chimera-task1", features=store.root)
    assert len(problems) == 1 and problems[0].severity == "error", problems
