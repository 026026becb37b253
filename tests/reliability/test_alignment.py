"""Prediction matches clinical and RNA columns by name, never by position.

The same data in another column order give the same risks; a category or gene the model
never saw is imputed with a warning that names patient, field and value; an external
cohort lacking a category still matches the model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modalsurv.errors import DataWarning, FeatureError
from modalsurv.io.manifest import manifest_to_cohort, read_manifest
from modalsurv.runs import load_ensemble
from modalsurv.train.align import align_columns


def _cohort(path: Path):
    """The cohort and every message reading it gave: warnings, and the manifest's problems
    (a cell that is not a number in a numeric column is one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = read_manifest(path)
        cohort = manifest_to_cohort(manifest)
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    return cohort, said + [str(p.to_error()) for p in manifest.problems]


def _edit(manifest: Path, tmp: Path, fn) -> Path:
    """A copy of the manifest (same RNA files, absolute paths) edited by ``fn(df)``."""
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["rna_path"] = [str(manifest.parent / p) for p in df["rna_path"]]
    out = tmp / "edited.csv"
    fn(df).to_csv(out, index=False)
    return out


def _risks(run: Path, path: Path) -> tuple[pd.Series, list[str]]:
    cohort, warned = _cohort(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        risk = load_ensemble(run).predict_risk(cohort)
    warned += [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    return pd.Series(risk, index=cohort.ids), warned


@pytest.fixture(scope="module")
def reference(manifest_run):
    run, manifest = manifest_run
    return _risks(run, manifest)[0]


def test_column_order_does_not_change_risks(manifest_run, reference, tmp_path):
    run, manifest = manifest_run
    path = _edit(manifest, tmp_path, lambda df: df[["grade", "rna_path", "event", "patient",
                                                    "age", "time"]])  # fmt: skip
    risk, warned = _risks(run, path)
    pd.testing.assert_series_equal(risk, reference)
    assert not warned


def test_unknown_category_is_imputed_with_a_warning(manifest_run, reference, tmp_path):
    run, manifest = manifest_run

    def edit(df):
        df.loc[df["patient"] == "M004", "grade"] = "very high"
        return df

    risk, warned = _risks(run, _edit(manifest, tmp_path, edit))
    assert any("patient 'M004'" in w and "field 'grade'" in w and "'very high'" in w
               for w in warned), warned  # fmt: skip
    others = risk.index != "M004"
    pd.testing.assert_series_equal(risk[others], reference[others])
    # an unknown category is treated exactly like a missing value
    missing, _ = _risks(run, _edit(manifest, tmp_path, lambda df: df.assign(
        grade=np.where(df["patient"] == "M004", "", df["grade"]))))  # fmt: skip
    assert risk["M004"] == missing["M004"]


def test_external_cohort_lacking_a_category_matches_the_model(manifest_run, reference,
                                                              tmp_path):  # fmt: skip
    run, manifest = manifest_run
    path = _edit(manifest, tmp_path, lambda df: df[df["grade"] == "low"])
    risk, warned = _risks(run, path)
    assert len(risk) < len(reference) and not warned
    pd.testing.assert_series_equal(risk, reference[risk.index])


def test_text_in_a_numeric_column_is_imputed_for_that_patient(manifest_run, reference,
                                                              tmp_path):  # fmt: skip
    run, manifest = manifest_run

    def edit(df):
        df.loc[df["patient"] == "M007", "age"] = "unknown"
        return df

    risk, warned = _risks(run, _edit(manifest, tmp_path, edit))
    assert any("patient 'M007'" in w and "field 'age'" in w and "'unknown'" in w
               for w in warned), warned  # fmt: skip
    others = risk.index != "M007"
    np.testing.assert_allclose(risk[others], reference[others], rtol=1e-6)


def test_gene_absent_for_one_patient_is_imputed_with_a_warning(manifest_run, reference,
                                                               tmp_path):  # fmt: skip
    run, manifest = manifest_run
    data = tmp_path / "rna"
    data.mkdir()
    for f in manifest.parent.glob("*_RNA.json"):
        profile = json.loads(f.read_text())
        if f.name.startswith("M002"):
            profile.pop("G05")
        (data / f.name).write_text(json.dumps(profile))

    def edit(df):
        df["rna_path"] = [str(data / Path(p).name) for p in df["rna_path"]]
        return df

    risk, warned = _risks(run, _edit(manifest, tmp_path, edit))
    assert any("patient 'M002'" in w and "field 'rna'" in w and "G05" in w for w in warned)
    others = risk.index != "M002"
    pd.testing.assert_series_equal(risk[others], reference[others])
    assert np.isfinite(risk["M002"])


def test_cli_prints_the_warning_once_on_one_line(rel, manifest_run, tmp_path):
    run, manifest = manifest_run

    def edit(df):
        df.loc[df["patient"] == "M004", "grade"] = "very high"
        return df

    out = tmp_path / "p.csv"
    res = rel.invoke("predict", run, "--data", f"manifest:{_edit(manifest, tmp_path, edit)}",
                     "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "'very high'" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "M004" in lines[0]
    assert len(pd.read_csv(out)) == 40


# ---------------------------------------------------------------------------- align_columns
IDS = ["a", "b", "c", "d"]
ALL = np.ones(4, dtype=bool)


def test_align_reorders_and_refuses_by_name():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    out = align_columns(x, ["b", "a"], ["a", "b"], "m", IDS, ALL)
    np.testing.assert_array_equal(out, x[:, ::-1])
    with pytest.raises(FeatureError, match=r"missing \('a'\).*not fitted on \('c'\)"):
        align_columns(x, ["b", "c"], ["a", "b"], "m", IDS, ALL)
    with pytest.raises(FeatureError, match="has 2 features; the model was fitted on 3"):
        align_columns(x, None, ["a", "b", "c"], "m", IDS, ALL)
    # a column the transform does not read may be missing; extra columns are ignored, said
    with pytest.warns(DataWarning, match=r"1 feature\(s\) the model was not fitted on.*'c'"):
        out = align_columns(x, ["b", "c"], ["a", "b"], "m", IDS, ALL, used=[1])
    assert np.isnan(out[:, 0]).all() and list(out[:, 1]) == [1, 3, 5, 7]


def test_align_numbers_read_where_the_model_had_categories():
    x = np.array([[1.0], [2.0], [3.0], [np.nan]])
    fitted = ["grade=1", "grade=2", "grade=x"]
    with pytest.warns(DataWarning, match=r"patient 'c', field 'grade': value '3'"):
        out = align_columns(x, ["grade"], fitted, "clinical", IDS, ALL)
    np.testing.assert_array_equal(out[:2], [[1, 0, 0], [0, 1, 0]])
    assert np.isnan(out[2:]).all()


def test_align_categories_the_cohort_lacks_are_zero_where_known():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan], [0.0, 1.0]])
    out = align_columns(x, ["g=b", "g=c"], ["g=a", "g=b", "g=c"], "clinical", IDS, ALL)
    np.testing.assert_array_equal(out[[0, 1, 3]], [[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert np.isnan(out[2]).all()


def test_transformers_match_dataframe_columns_by_name():
    from modalsurv.train.transforms import ClinicalEncoder

    df = pd.DataFrame({"age": [60.0, 70.0, np.nan, 50.0], "psa": [1.0, 9.0, 4.0, 2.0]})
    enc = ClinicalEncoder().fit(df)
    np.testing.assert_array_equal(enc.transform(df[["psa", "age"]]), enc.transform(df))
    with pytest.raises(FeatureError, match=r"missing \('age'\).*\('weight'\)"):
        enc.transform(df.rename(columns={"age": "weight"}))


def test_align_numbers_match_categories_at_the_cohort_precision():
    """A float32 cohort (as manifests give) read 0.1 as 0.100000001: never equal to the
    fitted category "0.1", so every such patient was imputed with a warning."""
    x = np.array([[0.1], [0.2], [0.1], [np.nan]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = align_columns(x, ["dose"], ["dose=0.1", "dose=0.2", "dose=x"], "clinical",
                            IDS, ALL)  # fmt: skip
    np.testing.assert_array_equal(out[:3], [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    assert np.isnan(out[3]).all()


def test_align_a_category_written_as_another_number_is_that_category():
    """Text categories "2.0" (an export's floats) against a model fitted on "2": the same
    grade was taken for an unknown one, every such patient imputed."""
    x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [np.nan] * 3])
    with pytest.warns(DataWarning, match=r"patient 'c', field 'grade': value 'x'"):
        cohort, fitted = ["grade=1.0", "grade=2.0", "grade=x"], ["grade=1", "grade=2", "grade=u"]
        out = align_columns(x, cohort, fitted, "clinical", IDS, ALL)
    np.testing.assert_array_equal(out[:2], [[1, 0, 0], [0, 1, 0]])
    assert np.isnan(out[2:]).all()
