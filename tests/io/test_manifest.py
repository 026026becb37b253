"""Generic CSV manifest: every problem listed at once; cohort from files or via a store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modalsurv.errors import DataWarning, FeatureError, LayoutError
from modalsurv.io.manifest import manifest_to_cohort, read_manifest, scan_manifest
from modalsurv.io.store import FeatureStore


@pytest.fixture
def cohort_dir(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "feats").mkdir()
    torch.save(
        torch.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)), tmp_path / "feats/a.pt"
    )
    torch.save(
        torch.from_numpy(rng.standard_normal((5, 4)).astype(np.float32)), tmp_path / "feats/b.pt"
    )
    np.save(tmp_path / "feats/a_mri.npy", rng.standard_normal(6))
    np.save(tmp_path / "feats/c_mri.npy", rng.standard_normal(6))
    (tmp_path / "a_RNA.json").write_text(json.dumps({"G1": 1, "G2": "2", "G3": 3}))
    (tmp_path / "c_RNA.json").write_text(json.dumps({"G2": 5, "G3": 6}))
    (tmp_path / "m.csv").write_text(
        "patient,time,event,site,age,stage,wsi_path,mri_path,rna_path\n"
        "a,10.5,1,s1,60,II,feats/a.pt,feats/a_mri.npy,a_RNA.json\n"
        "b,3,0,s2,,I,feats/b.pt,,\n"
        f"c,7,1.0,s1,71,,,{tmp_path}/feats/c_mri.npy,c_RNA.json\n"
    )
    return tmp_path


def test_read_manifest(cohort_dir):
    m = read_manifest(cohort_dir / "m.csv")
    assert m.patients == ["a", "b", "c"]
    assert m.modalities == ["wsi", "mri", "rna"]
    assert m.clinical_columns == ["age", "stage"]
    assert m.paths.loc["a", "wsi"] == cohort_dir / "feats/a.pt"  # relative to the manifest
    assert m.paths.loc["b", "mri"] is None
    assert list(m.table["event"]) == [True, False, True]
    assert list(m.labels().columns) == ["time", "event", "site"]


def test_problems_listed_all_at_once(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"")
    (tmp_path / "m.csv").write_text(
        "patient,time,event,wsi_path\n"
        "a,10,1,x.pt\n"
        "a,5,0,x.pt\n"  # duplicate
        "b,,1,x.pt\n"  # missing time
        "c,-2,1,x.pt\n"  # invalid time
        "d,4,2,x.pt\n"  # invalid event
        "e,4,1,missing.pt\n"  # missing file
        "f,4,1,x.txt\n"  # unsupported type
        "g,4,1,\n"  # no file at all: a warning
    )
    problems = scan_manifest(tmp_path / "m.csv")
    errors = [(p.patient, p.field) for p in problems if p.severity == "error"]
    assert errors == [
        ("a", "patient"), ("b", "time"), ("c", "time"), ("d", "event"), ("e", "wsi"), ("f", "wsi")
    ]  # fmt: skip
    assert all(p.path == str(tmp_path / "m.csv") for p in problems)
    assert [(p.severity, p.patient) for p in problems if p.severity == "warning"] == [
        ("warning", "g")
    ]
    with pytest.raises(LayoutError, match="6 problem") as e:
        read_manifest(tmp_path / "m.csv")
    assert "missing.pt" in str(e.value) and "duplicate" in str(e.value)


def test_missing_columns_and_explicit_modalities(tmp_path):
    (tmp_path / "m.csv").write_text("id,time,slides\np1,3,\n")
    problems = scan_manifest(tmp_path / "m.csv", modalities=["slides"])
    fields = {p.field for p in problems if p.severity == "error"}
    assert fields == {"patient", "event"}
    assert scan_manifest(tmp_path / "none.csv")[0].reason == "manifest file not found"


def test_manifest_to_cohort_direct(cohort_dir):
    m = read_manifest(cohort_dir / "m.csv")
    with pytest.warns(DataWarning, match=r"patient 'c', field 'rna': 1 gene.*\(G1\); dropped"):
        co = manifest_to_cohort(m, rna_how="intersection")
    assert co.features["wsi"].shape == (3, 5, 4)
    np.testing.assert_array_equal(co.bag_mask["wsi"].sum(1), [3, 5, 0])
    np.testing.assert_array_equal(co.present["wsi"], [True, True, False])
    np.testing.assert_array_equal(co.present["mri"], [True, False, True])
    np.testing.assert_array_equal(
        co.features["mri"][2], np.load(cohort_dir / "feats/c_mri.npy").astype(np.float32)
    )
    # RNA: intersection of genes, feature names kept
    assert co.feature_names["rna"] == ["G2", "G3"]
    np.testing.assert_array_equal(co.features["rna"][[0, 2]], [[2, 3], [5, 6]])
    np.testing.assert_array_equal(co.present["rna"], [True, False, True])
    # extra columns: numeric as is, text one-hot with NaN for missing
    assert co.feature_names["clinical"] == ["age", "stage=I", "stage=II"]
    clin = co.features["clinical"]
    assert np.isnan(clin[1, 0]) and np.isnan(clin[2, 1:]).all()
    np.testing.assert_array_equal(clin[0], [60, 0, 1])
    assert list(co.meta["site"]) == ["s1", "s2", "s1"]


def test_manifest_rna_default_keeps_a_gene_one_patient_lacks(cohort_dir):
    m = read_manifest(cohort_dir / "m.csv")
    with pytest.warns(DataWarning, match=r"patient 'c', field 'rna': .*c_RNA.json \(G1\);"
                                         " imputed as missing"):
        co = manifest_to_cohort(m)
    assert co.feature_names["rna"] == ["G1", "G2", "G3"]
    np.testing.assert_array_equal(co.features["rna"][0], [1, 2, 3])
    assert np.isnan(co.features["rna"][2, 0]) and list(co.features["rna"][2, 1:]) == [5, 6]


def test_manifest_to_cohort_via_store_matches_direct(cohort_dir):
    m = read_manifest(cohort_dir / "m.csv")
    store = FeatureStore(cohort_dir / "store")
    via = manifest_to_cohort(m, store=store, modalities=["wsi", "mri"], max_tiles=4, seed=1)
    direct = manifest_to_cohort(m, modalities=["wsi", "mri"], max_tiles=4, seed=1)
    assert store.patients("wsi") == ["a", "b"] and store.patients("mri") == ["a", "c"]
    for mod in ("wsi", "mri"):
        np.testing.assert_array_equal(via.features[mod], direct.features[mod])
        np.testing.assert_array_equal(via.present[mod], direct.present[mod])
    np.testing.assert_array_equal(via.bag_mask["wsi"], direct.bag_mask["wsi"])
    assert via.features["wsi"].shape == (3, 4, 4)
    # second call reads from the store without re-importing
    (cohort_dir / "feats/a.pt").unlink()
    again = manifest_to_cohort(m, store=store, modalities=["wsi"], max_tiles=4, seed=1)
    np.testing.assert_array_equal(again.features["wsi"], via.features["wsi"])


def _read_rows(tmp_path, rows):
    """(path, manifest, cohort) of a manifest CSV made of ``rows`` (header first)."""
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    m = read_manifest(path)
    return path, m, manifest_to_cohort(m)


def test_messy_cells_of_a_numeric_column_are_missing_not_categories(tmp_path):
    """One messy cell ('5 cm', '1,200', inf, 'n/a') no longer turns a numeric column into
    one category per value: it is missing, with a warning naming row, patient and column;
    missing markers are missing; a text column of mostly unique values is flagged."""
    rows = ["patient,time,event,age,psa,grade,note"]
    for i in range(30):
        age = {3: "NA", 7: "n/a"}.get(i, str(50 + i))
        psa = {4: '"1,200"', 5: "inf"}.get(i, str(10 + i))
        rows.append(f"P{i},{5 + i},{i % 2},{age},{psa},{['low', 'high'][i % 2]},free text {i}")
    path, m, cohort = _read_rows(tmp_path, rows)
    names = cohort.feature_names["clinical"]
    assert names[:2] == ["age", "psa"] and {"grade=high", "grade=low"} <= set(names)
    x = cohort.features["clinical"]
    assert np.isnan(x[[3, 7], 0]).all() and np.isnan(x[[4, 5], 1]).all()
    assert x[0, 0] == 50 and x[6, 1] == 16
    said = {(p.patient, p.field): p.reason for p in m.problems}
    assert "'1,200' is not a finite number" in said[("P4", "psa")]
    assert "'inf' is not a finite number" in said[("P5", "psa")]
    assert ("P3", "age") not in said  # a missing marker is simply missing
    assert any(p.field == "note" and "30 distinct values" in p.reason for p in m.problems)
    assert [p for p in scan_manifest(path) if p.field == "psa"]  # scan finds them too


def test_levels_differing_only_in_case_are_one_level_spelled_as_most_cells(tmp_path):
    rows = ["patient,time,event,grade,site_code"]
    grades = ["low", "Low", "low", "HIGH", "high", "High", "high"]
    for i, g in enumerate(grades):
        rows.append(f"P{i},{5 + i},{i % 2},{g},{['a', 'b'][i % 2]}")
    _, m, cohort = _read_rows(tmp_path, rows)
    names = cohort.feature_names["clinical"]
    assert [n for n in names if n.startswith("grade=")] == ["grade=high", "grade=low"]
    x = cohort.features["clinical"]
    low = x[:, names.index("grade=low")]
    assert low.tolist() == [1, 1, 1, 0, 0, 0, 0]
    said = [p.reason for p in m.problems if p.field == "grade"]
    assert said == ["text column 'grade': ['HIGH', 'high', 'High'] differ only in case;"
                    " read as 'high'", "text column 'grade': ['low', 'Low'] differ only in"
                    " case; read as 'low'"]
    assert not [p for p in m.problems if p.field == "site_code"]  # nothing to fold there


def test_a_duplicated_column_name_is_an_error_not_a_clinical_column(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    path = tmp_path / "m.csv"
    path.write_text("patient,time,event,wsi_path,wsi_path\nP0,5,1,a.npy,a.npy\n", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"duplicated column name\(s\) \['wsi_path'\]"):
        read_manifest(path)


def test_a_column_mixing_rna_json_and_feature_files_names_the_odd_file(tmp_path):
    rows = ["patient,time,event,rna_path"]
    for i in range(6):
        name = f"P{i}.npy" if i == 5 else f"P{i}_RNA.json"
        if i == 5:
            np.save(tmp_path / name, np.ones(3))
        else:
            (tmp_path / name).write_text(json.dumps({"G1": 1.0, "G2": 2.0}))
        rows.append(f"P{i},{5 + i},{i % 2},{name}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(LayoutError, match="mixes RNA JSON profiles") as exc:
        manifest_to_cohort(read_manifest(tmp_path / "m.csv"))
    assert exc.value.patient == "P5" and exc.value.path.endswith("P5.npy")


def test_scan_reads_the_files_a_run_would_read(tmp_path):
    """A file that exists but cannot be used (not an array) is found by the scan, not by
    the training run after it."""
    rows = ["patient,time,event,mri_path"]
    for i in range(4):
        if i == 2:
            (tmp_path / f"P{i}.npy").write_bytes(b"not an array")
        else:
            np.save(tmp_path / f"P{i}.npy", np.ones(3))
        rows.append(f"P{i},{5 + i},{i % 2},P{i}.npy")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    errors = [p for p in scan_manifest(tmp_path / "m.csv") if p.severity == "error"]
    assert len(errors) == 1 and errors[0].patient == "P2" and errors[0].path.endswith("P2.npy")


def test_an_all_nan_file_is_refused_and_an_odd_width_is_named_against_the_majority(tmp_path):
    """An all-NaN vector passed for data (imputed, 100 % coverage, 'no problems found');
    a wrong-width first file made every good file after it the one blamed."""
    rng = np.random.default_rng(0)
    (tmp_path / "f").mkdir()
    rows = ["patient,time,event,slide_path"]
    for i in range(5):
        np.save(tmp_path / f"f/p{i}.npy", rng.normal(size=9 if i == 0 else 8))
        rows.append(f"p{i},{i + 1},1,f/p{i}.npy")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(FeatureError, match=r"patient 'p0'.*shape \(9,\) does not match the"
                                           r" other files \(4 of 5 are a vector of dim 8\)"):  # fmt: skip
        manifest_to_cohort(read_manifest(tmp_path / "m.csv"))
    np.save(tmp_path / "f/p0.npy", np.full(8, np.nan))
    problems = scan_manifest(tmp_path / "m.csv")
    assert any(p.severity == "error" and p.patient == "p0" and "every value is NaN" in p.reason
               for p in problems), problems  # fmt: skip


def test_a_path_column_named_in_data_params_modalities_is_read_as_one(tmp_path):
    """The docstring's 'named explicitly with modalities=[...]': a column without the
    ``_path`` suffix was read as a clinical text column, then refused as 'no path column'."""
    from modalsurv.config import DataConfig
    from modalsurv.data.sources import load_data

    rng = np.random.default_rng(1)
    (tmp_path / "f").mkdir()
    rows = ["patient,time,event,age,slide"]
    for i in range(6):
        np.save(tmp_path / f"f/p{i}.npy", rng.normal(size=4))
        rows.append(f"p{i},{i + 1},{i % 2},{60 + i},f/p{i}.npy")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = DataConfig(source="manifest", path=str(tmp_path / "m.csv"),
                      params={"modalities": ["slide"]})  # fmt: skip
    cohort = load_data(data).cohort
    assert set(cohort.modalities) == {"slide", "clinical"}
    assert cohort.features["slide"].shape == (6, 4) and cohort.present["slide"].all()
    assert cohort.feature_names["clinical"] == ["age"]


@pytest.mark.parametrize("bad", [torch.zeros(0, 4), torch.tensor([[1.0, float("inf"), 0, 0]])],
                         ids=["no-tile", "inf"])
def test_a_bag_the_cohort_would_refuse_is_refused_naming_its_file(tmp_path, bad):
    """A bag of no tile or with inf was refused by the Cohort, naming the patient but not
    the file (the scan pointed at the manifest)."""
    (tmp_path / "f").mkdir()
    torch.save(bad, tmp_path / "f/a.pt")
    torch.save(torch.ones(2, 4), tmp_path / "f/b.pt")
    (tmp_path / "m.csv").write_text("patient,time,event,wsi_path\na,10,1,f/a.pt\nb,5,0,f/b.pt\n")
    errors = [p for p in scan_manifest(tmp_path / "m.csv") if p.severity == "error"]
    assert [(p.patient, p.field, p.path) for p in errors] == [
        ("a", "wsi", str(tmp_path / "f/a.pt"))]


def test_a_semicolon_csv_is_read_like_a_comma_one(tmp_path):
    """Spreadsheets in a decimal-comma locale save CSV with ';': read as one column it gave
    three 'missing required column' errors naming columns that are there."""
    np.save(tmp_path / "a.npy", np.ones(4, np.float32))
    (tmp_path / "m.csv").write_text("\ufeffpatient;time;event;wsi_path;stage\n"
                                    "a;12;1;a.npy;II\nb;7,5;0;;I\n", encoding="utf-8")  # fmt: skip
    problems = scan_manifest(tmp_path / "m.csv")
    assert [(p.patient, p.field) for p in problems if p.severity == "error"] == [("b", "time")]
    assert "found '7,5'" in str(problems[0])  # a decimal comma is named, not guessed


def test_rows_are_numbered_by_line_despite_blank_lines_and_empty_rows(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(4, np.float32))
    (tmp_path / "m.csv").write_text("patient,time,event,wsi_path,age\n"
                                    "a,12,1,a.npy,50\n\n"
                                    "b,-1,0,a.npy,x\n"
                                    "c,3,1,a.npy,60\nd,3,1,a.npy,61\ne,3,1,a.npy,62\n"
                                    ",,,,\n")  # fmt: skip
    problems = scan_manifest(tmp_path / "m.csv")
    assert [(p.severity, p.patient, p.reason[:6]) for p in problems] == [
        ("error", "b", "row 4:"), ("warning", "b", "row 4:")]  # fmt: skip
    (tmp_path / "m.csv").write_text("patient,time,event,wsi_path\na,12,1,a.npy\n,,,\n\n")
    assert read_manifest(tmp_path / "m.csv").patients == ["a"]  # a spreadsheet's ,,, tail


def test_a_csv_that_is_not_utf8_says_so_not_that_a_comma_needs_quoting(tmp_path):
    (tmp_path / "m.csv").write_bytes("patient,time,event,site\na,1,1,Zürich\n".encode("latin-1"))
    [problem] = scan_manifest(tmp_path / "m.csv")
    assert "not UTF-8" in problem.reason and "comma" not in problem.reason
    assert problem.path == str(tmp_path / "m.csv")


def test_a_manifest_with_a_header_and_no_rows_is_an_error_naming_it(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("patient,time,event,wsi_path\n\n", encoding="utf-8")
    with pytest.raises(LayoutError, match="no patient rows") as e:
        read_manifest(path)
    assert e.value.path == str(path.resolve())
    assert any("no patient rows" in p.reason for p in scan_manifest(path))
