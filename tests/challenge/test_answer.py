"""Reading a labelled CHIMERA folder for batch scoring (``challenge.answer``)."""

from __future__ import annotations

import json
from pathlib import Path

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
