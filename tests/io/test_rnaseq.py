"""RNA-seq reading and explicit gene alignment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modalsurv.errors import DataError
from modalsurv.io.rnaseq import (
    align_genes,
    read_matrix,
    read_rna_json,
    shared_genes,
    to_features,
)


def _write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_read_json_numbers_and_numeric_strings(tmp_path):
    p = _write(
        tmp_path / "2A_001_RNA.json", {"TP53": 3, "BRCA1": "4.5", " EGFR ": " 1e2", "X": None}
    )
    s = read_rna_json(p)
    assert s.name == "2A_001"
    assert s.dtype == np.float64
    assert s["TP53"] == 3.0 and s["BRCA1"] == 4.5 and s["EGFR"] == 100.0
    assert np.isnan(s["X"])
    assert read_rna_json(p, patient="other").name == "other"


@pytest.mark.parametrize("bad", ["high", True, [1, 2], "inf", ""])
def test_non_numeric_value_names_file_patient_gene(tmp_path, bad):
    p = _write(tmp_path / "p9_RNA.json", {"TP53": 1, "KRAS": bad})
    with pytest.raises(DataError) as e:
        read_rna_json(p)
    assert e.value.patient == "p9" and e.value.field == "KRAS"
    assert e.value.path == str(p)


def test_json_structure_errors(tmp_path):
    with pytest.raises(DataError, match="JSON object"):
        read_rna_json(_write(tmp_path / "a_RNA.json", [1, 2]))
    with pytest.raises(DataError, match="invalid JSON"):
        read_rna_json(_write(tmp_path / "b_RNA.json", "{not json"))
    with pytest.raises(DataError, match="no genes"):
        read_rna_json(_write(tmp_path / "c_RNA.json", {}))
    with pytest.raises(DataError, match="not found"):
        read_rna_json(tmp_path / "missing_RNA.json")


def test_duplicate_gene_keys_kept_for_alignment(tmp_path):
    p = _write(tmp_path / "d_RNA.json", '{"A": 1, "B": 2, "A": 3}')
    s = read_rna_json(p)
    assert list(s.index) == ["A", "B", "A"]
    frame, rep = align_genes([s])
    assert frame.loc["A", "d"] == 2.0  # mean of the two entries
    assert rep.duplicates == {"d": 1}
    frame, _ = align_genes([s], duplicates="first")
    assert frame.loc["A", "d"] == 1.0
    with pytest.raises(DataError, match="duplicated gene"):
        align_genes([s], duplicates="error")


def test_alignment_counts_intersection_and_union():
    a = pd.Series({"G1": 1.0, "G2": 2.0, "G3": 3.0}, name="a")
    b = pd.Series({"G2": 5.0, "G3": 6.0, "G4": 7.0, "G5": 8.0}, name="b")
    frame, rep = align_genes([b, a], how="intersection")
    assert list(frame.index) == ["G2", "G3"] and list(frame.columns) == ["b", "a"]
    assert rep.n_genes == 2 and rep.n_genes_union == 5
    assert rep.dropped == {"a": 1, "b": 2}
    assert rep.filled == {"a": 0, "b": 0}
    assert "2 genes kept" in rep.summary()

    frame, rep = align_genes({"a": a, "b": b}, how="union")
    assert list(frame.index) == ["G1", "G2", "G3", "G4", "G5"]
    assert rep.filled == {"a": 2, "b": 1} and rep.dropped == {"a": 0, "b": 0}
    assert np.isnan(frame.loc["G4", "a"]) and frame.loc["G4", "b"] == 7.0


def test_alignment_errors():
    a = pd.Series({"G1": 1.0}, name="a")
    with pytest.raises(DataError, match="twice"):
        align_genes([a, a])
    with pytest.raises(DataError, match="share no gene"):
        align_genes([a, pd.Series({"ENSG1": 1.0}, name="b")])
    with pytest.raises(DataError, match="how"):
        align_genes([a], how="outer")


def test_read_matrix_orientation(tmp_path):
    genes_rows = tmp_path / "m.tsv"
    genes_rows.write_text("gene\tp1\tp2\nA\t1\t2\nB\t3\t4\n")
    m = read_matrix(genes_rows)
    assert list(m.index) == ["A", "B"] and list(m.columns) == ["p1", "p2"]
    assert m.loc["B", "p2"] == 4.0

    patients_rows = tmp_path / "m.csv"
    patients_rows.write_text("sample,A,B,C\np1,1,2,3\np2,4,5,6\n")
    m = read_matrix(patients_rows)
    assert list(m.index) == ["A", "B", "C"] and m.loc["C", "p2"] == 6.0

    by_shape = tmp_path / "s.csv"  # unnamed header: 3 rows x 2 columns -> genes are rows
    by_shape.write_text(",p1,p2\nA,1,2\nB,3,NA\nC,5,6\n")
    m = read_matrix(by_shape)
    assert m.shape == (3, 2) and np.isnan(m.loc["B", "p2"])

    square = tmp_path / "q.csv"
    square.write_text(",x,y\na,1,2\nb,3,4\n")
    with pytest.raises(DataError, match="square"):
        read_matrix(square)
    assert read_matrix(square, orientation="patients_rows").loc["y", "b"] == 4.0


def test_read_matrix_non_numeric_cell(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_text("gene\tp1\tp2\nA\t1\t2\nB\t3\tlots\n")
    with pytest.raises(DataError) as e:
        read_matrix(p)
    assert e.value.patient == "p2" and e.value.field == "B" and "lots" in str(e.value)


def test_to_features_absent_patients():
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": [3.0, 4.0]}, index=["G1", "G2"])
    x, present, names = to_features(frame, ["b", "zz", "a"])
    assert x.dtype == np.float32 and x.shape == (3, 2)
    np.testing.assert_array_equal(present, [True, False, True])
    np.testing.assert_array_equal(x[0], [3.0, 4.0])
    assert not x[1].any()
    assert np.isnan(x[2, 1])  # a missing value in a present row stays NaN
    assert names == ["G1", "G2"]


def test_shared_genes_keep_what_most_patients_have_and_note_each_file():
    genes = [f"G{i}" for i in range(10)]
    full = {f"P{i}": pd.Series(np.arange(10.0) + i, index=genes, name=f"P{i}") for i in range(4)}
    short = pd.Series([1.0, 2.0, 7.0], index=["G0", "G1", "X9"], name="SHORT")
    ensembl = pd.Series([3.0, 4.0], index=["ENSG01", "ENSG02"], name="ENS")
    res = shared_genes([*full.values(), short, ensembl])
    # the union: which genes count is decided on training parts, not here
    assert set(res.matrix.index) == {*genes, "X9", "ENSG01", "ENSG02"}
    assert list(res.matrix.columns) == ["P0", "P1", "P2", "P3", "SHORT", "ENS"]
    assert res.unmatched == ["ENS"] and "none of the 10 genes" in res.notes["ENS"][0]
    assert "ENSG01" in res.notes["ENS"][0]
    assert res.notes["SHORT"] == ["8 of the 10 genes most patients have are missing; imputed"
                                  " from the training patients",
                                  "1 genes that most patients lack: used only where most"
                                  " training patients have them"]  # fmt: skip
    assert set(res.notes) == {"SHORT", "ENS"}
    np.testing.assert_array_equal(res.matrix.loc[["G0", "G1", "G2"], "SHORT"], [1.0, 2.0, np.nan])
    # everyone measuring the same genes: the intersection, nothing noted
    same = shared_genes(list(full.values()))
    pd.testing.assert_frame_equal(same.matrix, align_genes(list(full.values()))[0])
    assert same.notes == {} and same.unmatched == []
    with pytest.raises(DataError, match="no gene is measured"):
        shared_genes([pd.Series([1.0], index=["A"], name="a"),
                      pd.Series([1.0], index=["B"], name="b"),
                      pd.Series([1.0], index=["C"], name="c")])  # fmt: skip


def test_an_integer_beyond_any_float_names_file_patient_gene(tmp_path):
    """A 400-digit integer (valid JSON) raised a raw OverflowError."""
    p = _write(tmp_path / "p9_RNA.json", '{"TP53": 1, "KRAS": 1' + "0" * 400 + "}")
    with pytest.raises(DataError, match="infinite") as e:
        read_rna_json(p)
    assert (e.value.patient, e.value.field, e.value.path) == ("p9", "KRAS", str(p))


def test_read_matrix_header_names_are_read_as_written(tmp_path):
    """pandas renames a repeated header name ("p1" → "p1.1"): one patient was read as two,
    a repeated gene as a gene "A.1"; a trailing separator gave a patient "Unnamed: 3"."""
    p = tmp_path / "m.tsv"
    p.write_text("gene\tp1\tp1\nA\t1\t2\nB\t3\t4\nC\t5\t6\n")
    with pytest.raises(DataError, match="duplicated patient") as e:
        read_matrix(p)
    assert e.value.patient == "p1" and e.value.path == str(p)
    p.write_text("patient\tA\tA\tB\np1\t1\t2\t3\np2\t4\t5\t6\n")  # a gene twice: kept twice
    assert list(read_matrix(p).index) == ["A", "A", "B"]
    p.write_text("gene\tp1\tp2\t\nA\t1\t2\t\nB\t3\t4\t\nC\t5\t6\t\n")
    with pytest.raises(DataError, match="no name in the header"):
        read_matrix(p)
    p.write_text("gene\tp1\tp2\n\t1\t2\nB\t3\t4\nC\t5\t6\n")
    with pytest.raises(DataError, match="no label"):
        read_matrix(p)
    p.write_text("p1\tp2\nA\t1\t2\nB\t3\t4\nC\t5\t6\n")  # R's write.table: no corner cell
    assert list(read_matrix(p).columns) == ["p1", "p2"]


def test_read_matrix_unreadable_file_is_a_data_error(tmp_path):
    """A damaged .gz raised a raw EOFError, a folder an IsADirectoryError."""
    gz = tmp_path / "m.tsv.gz"
    gz.write_bytes(b"\x1f\x8b\x08garbage")
    for path in (gz, tmp_path):
        with pytest.raises(DataError, match="cannot read matrix") as e:
            read_matrix(path)
        assert e.value.path == str(path)


def test_read_matrix_keeps_patient_ids_as_text(tmp_path):
    """Patients as rows under a named header: "001" was read as the number 1, so the
    profile matched no patient of the manifest (its RNA silently absent)."""
    p = tmp_path / "m.csv"
    p.write_text("patient_id,TP53,EGFR\n001,1,2\n0002,3,4\n")
    m = read_matrix(p)
    assert list(m.columns) == ["001", "0002"] and m.loc["EGFR", "0002"] == 4.0


def test_na_in_rna_json_is_missing_as_in_a_matrix(tmp_path):
    """R's jsonlite writes a missing number as "NA": a matrix cell "NA" was missing but the
    same value in a JSON profile stopped the read."""
    p = _write(tmp_path / "p1_RNA.json", {"TP53": "NA", "EGFR": " NULL ", "KRAS": 2})
    s = read_rna_json(p)
    assert np.isnan(s["TP53"]) and np.isnan(s["EGFR"]) and s["KRAS"] == 2.0


def test_summed_duplicate_gene_missing_everywhere_stays_missing():
    """duplicates="sum" turned a gene missing in all its entries into 0 (a measured zero)."""
    s = pd.Series([np.nan, np.nan, 1.0, 2.0], index=["A", "A", "B", "B"], name="p")
    frame, _ = align_genes([s], duplicates="sum")
    assert np.isnan(frame.loc["A", "p"]) and frame.loc["B", "p"] == 3.0


def test_read_matrix_with_another_separator_says_so(tmp_path):
    """A semicolon CSV read at "," was reported as an "empty matrix"."""
    p = tmp_path / "m.csv"
    p.write_text("gene;p1;p2\nA;1;2\nB;3;4\nC;5;6\n")
    with pytest.raises(DataError, match="another character") as e:
        read_matrix(p)
    assert e.value.path == str(p)
    assert read_matrix(p, sep=";").loc["B", "p2"] == 4.0
