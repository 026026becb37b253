"""Reading a labelled CHIMERA folder for batch scoring (``challenge.answer``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modalsurv.challenge.answer import folder_cases, labels_of
from modalsurv.data.synthetic import make_cohort, write_chimera


@pytest.fixture(scope="module")
def task3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cohort, _ = make_cohort(n=6, seed=1, task=3, max_tiles=4, tile_dim=8, slide_dim=8,
                            n_genes=10, missing={"wsi": 0.0, "rna": 0.0})  # fmt: skip
    return write_chimera(cohort, tmp_path_factory.mktemp("t3"), task=3, slide_px=256)


def test_task3_labels_follow_the_models_endpoint():
    rec = {"age": 70, "progression": 0, "Time_to_prog_or_FUend": 50.0,
           "HG_recur": 1, "Time_to_HG_recur_or_FUend": 12.0}  # fmt: skip
    assert labels_of(rec, "task3") == (50.0, 0.0)
    assert labels_of(rec, "task3", "HG_recur") == (12.0, 1.0)


def test_folder_labels_are_those_of_the_given_endpoint(task3):
    problems: list = []
    _, prog = folder_cases(task3, "task3", problems)
    _, hg = folder_cases(task3, "task3", problems, event="HG_recur")
    for case in prog.index:
        rec = json.loads(next(task3.rglob(f"{case}_CD.json")).read_text())
        assert tuple(prog.loc[case]) == (rec["Time_to_prog_or_FUend"], rec["progression"])
        assert tuple(hg.loc[case]) == (rec["Time_to_HG_recur_or_FUend"], rec["HG_recur"])


def test_a_clinical_file_that_is_not_an_object_is_a_problem_naming_it(task3, tmp_path):
    import shutil

    root = shutil.copytree(task3, tmp_path / "copy")
    bad = sorted(root.rglob("*_CD.json"))[0]
    case = bad.name.removesuffix("_CD.json")
    bad.write_text(json.dumps([json.loads(bad.read_text())]))
    problems: list = []
    cases, labels = folder_cases(root, "task3", problems)
    assert case not in labels.index and len(cases) == len(labels) == 5
    hit = [p for p in problems if p.patient == case]
    assert hit and "JSON object" in hit[0].reason and Path(hit[0].path) == bad


def _fake_model():
    """What score_folder reads of a model when predict_case is replaced."""
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(params={})))


def _fake_predict(fail: str | None = None):
    """predict_case answering every case by its number, raising on case ``fail``."""
    from modalsurv.challenge.model import CaseResult
    from modalsurv.errors import DataError

    def predict(model, case, *args, **kwargs):
        if case.case == fail:
            raise DataError("features contain +/-inf", patient=case.case, field="clinical")
        value = float(len(case.case) + sum(map(ord, case.case)) % 7)
        return CaseResult(value, -value, ["clinical"])

    return predict


def test_a_case_failing_in_a_batch_gets_a_row_and_the_others_are_answered(task3, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """One case's DataError (a clinical number out of float32 range) aborted the whole
    batch with no CSV; now its row says why and has no prediction."""
    from modalsurv.challenge import answer

    cases, _ = folder_cases(task3, "task3", [])
    bad = cases[2].case
    monkeypatch.setattr(answer, "predict_case", _fake_predict(bad))
    res = answer.score_folder("task3", _fake_model(), task3, tmp_path / "p.csv")
    table = res.table.set_index("case")
    assert len(table) == 6 and res.n_skipped == 1
    assert np.isnan(table.loc[bad, "prediction"]) and "+/-inf" in table.loc[bad, "error"]
    assert table.drop(index=bad)["prediction"].notna().all()
    assert any(p.patient == bad and p.severity == "error" for p in res.problems)
    metrics = json.loads((tmp_path / "p_metrics.json").read_text())["aggregates"]
    assert metrics["n_skipped"] == 1 and metrics["n_cases"] == 5


def test_a_corrupt_clinical_file_in_a_batch_is_a_counted_row(task3, tmp_path, monkeypatch):
    """The case used to vanish from the CSV, the metrics and the progress total."""
    import shutil

    from modalsurv.challenge import answer

    root = shutil.copytree(task3, tmp_path / "copy")
    bad = sorted(root.rglob("*_CD.json"))[1]
    case = bad.name.removesuffix("_CD.json")
    bad.write_text("")
    events = []
    monkeypatch.setattr(answer, "predict_case", _fake_predict())
    res = answer.score_folder("task3", _fake_model(), root, tmp_path / "p.csv",
                              progress=lambda e, **info: events.append((e, info)))  # fmt: skip
    # extraction's events (what the command's bar reads): total = cases to answer,
    # skipped = cases settled before the start, one "patient" event per case answered
    assert events[0] == ("start", {"total": 5, "skipped": 1})
    assert [info["index"] for e, info in events if e == "patient"] == [1, 2, 3, 4, 5]
    assert sum(e == "done" for e, _ in events) == 5 and events[-1][0] == "finish"
    csv = pd.read_csv(tmp_path / "p.csv", dtype={"case": str}).set_index("case")
    assert len(csv) == 6 and np.isnan(csv.loc[case, "prediction"])
    assert "corrupt JSON" in csv.loc[case, "error"] and str(bad) in csv.loc[case, "error"]
    assert res.n_skipped == 1
    assert json.loads((tmp_path / "p_metrics.json").read_text())["aggregates"]["n_skipped"] == 1


def test_the_batch_summary_line_counts_the_skipped_cases(task3, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from modalsurv.challenge import answer
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.cli import app

    root = shutil.copytree(task3, tmp_path / "copy")
    sorted(root.rglob("*_CD.json"))[0].write_text("{cut")
    monkeypatch.setattr(answer, "predict_case", _fake_predict())
    monkeypatch.setattr(ChallengeModel, "load", classmethod(lambda cls, *a, **k: _fake_model()))
    res = CliRunner().invoke(app, ["challenge", "task3", "--model", str(tmp_path), "--batch",
                                   str(root), "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "5 of 6 cases answered, 1 skipped" in " ".join(res.output.split())


def test_a_batch_without_comparable_pairs_still_writes_its_table(task3, tmp_path, monkeypatch):
    """One event after every censoring leaves no pair to compare: scikit-survival raises
    NoComparablePairException, which aborted the batch after every case was predicted and
    wrote no CSV; the C-index is now undefined (None, a problem says why)."""
    import shutil

    from modalsurv.challenge import answer

    root = shutil.copytree(task3, tmp_path / "copy")
    files = sorted(root.rglob("*_CD.json"))
    for k, f in enumerate(files):  # the last case: the only event, and the latest time
        rec = json.loads(f.read_text())
        rec.update(progression=int(k == len(files) - 1), Time_to_prog_or_FUend=10.0 + k)
        f.write_text(json.dumps(rec))
    monkeypatch.setattr(answer, "predict_case", _fake_predict())
    res = answer.score_folder("task3", _fake_model(), root, tmp_path / "p.csv")
    assert res.c_index is None and res.c_index_as_risk is None
    assert any("comparable" in p.reason for p in res.problems)
    csv = pd.read_csv(tmp_path / "p.csv", dtype={"case": str})
    assert len(csv) == 6 and csv["prediction"].notna().all()
    metrics = json.loads((tmp_path / "p_metrics.json").read_text())["aggregates"]
    assert metrics["c_index"] is None and metrics["n_cases"] == 6


def test_an_rna_file_that_is_not_an_object_is_a_problem_naming_it(task3, tmp_path):
    """The batch dropped such an RNA profile without a word (one case answered without
    RNA, nothing said); the one-case form warns."""
    import shutil

    root = shutil.copytree(task3, tmp_path / "copy")
    bad = sorted(root.rglob("*_RNA.json"))[0]
    case = bad.name.removesuffix("_RNA.json")
    bad.write_text(json.dumps(list(json.loads(bad.read_text()).values())))
    problems: list = []
    cases, _ = folder_cases(root, "task3", problems)
    assert len(cases) == 6 and next(c for c in cases if c.case == case).rna is None
    hit = [p for p in problems if p.patient == case and p.field == "rna"]
    assert hit and "without RNA" in hit[0].reason and Path(hit[0].path) == bad


def test_the_batch_summary_says_why_there_is_no_c_index(task3, tmp_path, monkeypatch):
    """Events but no comparable pair: the line said "no labelled case with an event"."""
    import shutil

    from typer.testing import CliRunner

    from modalsurv.challenge import answer
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.cli import app

    root = shutil.copytree(task3, tmp_path / "copy")
    files = sorted(root.rglob("*_CD.json"))
    for k, f in enumerate(files):  # the only event is the latest time
        rec = json.loads(f.read_text())
        rec.update(progression=int(k == len(files) - 1), Time_to_prog_or_FUend=10.0 + k)
        f.write_text(json.dumps(rec))
    monkeypatch.setattr(answer, "predict_case", _fake_predict())
    monkeypatch.setattr(ChallengeModel, "load", classmethod(lambda cls, *a, **k: _fake_model()))
    res = CliRunner().invoke(app, ["challenge", "task3", "--model", str(tmp_path), "--batch",
                                   str(root), "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "no comparable pair of labelled cases: no C-index" in said
    assert "no labelled case with an event" not in said


def test_a_batch_of_raw_slides_is_not_warned_for_lacking_organiser_features(task1, tmp_path):
    """The model embeds the raw slides: a folder without the organisers' ``.pt`` tile
    features warned every slide 'no feature file for slide (extract features first)'."""
    import shutil

    from modalsurv.challenge.answer import _folder_entries
    from modalsurv.io.chimera import NO_FEATURE_FILE

    root = tmp_path / "held"
    shutil.copytree(task1["held"], root)
    shutil.rmtree(root / "pathology" / "features", ignore_errors=True)
    problems: list = []
    entries = _folder_entries(root, "task1", problems, None)
    assert entries and not [p for p in problems if p.reason.startswith(NO_FEATURE_FILE)]
