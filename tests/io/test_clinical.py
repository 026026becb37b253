import json

import numpy as np
import pandas as pd
import pytest

from modalsurv.errors import ConfigError, DataError, LabelError, SchemaError
from modalsurv.io.clinical import (
    TASK1,
    clinical_to_matrix,
    leak_notes,
    load_schema,
    read_generic,
    read_task1,
    read_task3,
    task3_schema,
)

REC = {
    "age_at_prostatectomy": 63, "primary_gleason": "4", "secondary_gleason": 3,
    "ISUP": "3", "pre_operative_PSA": 7.5, "pT_stage": "3a", "positive_lymph_nodes": "x",
    "capsular_penetration": "1.0", "positive_surgical_margins": 0,
    "invasion_seminal_vesicles": "0.0", "lymphovascular_invasion": "x",
    "earlier_therapy": "none", "BCR": "1.0", "time_to_follow-up/BCR": 14.5,
}  # fmt: skip


def _write(tmp_path, name, rec):
    d = tmp_path / "clinical_data"
    d.mkdir(exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(rec))
    return d / f"{name}.json"


def test_task1_coercions_and_matrix(tmp_path):
    _write(tmp_path, "1001", REC)
    _write(tmp_path, "1002", {**REC, "pT_stage": "2", "BCR": "0.0", "tertiary_gleason": 5,
                              "earlier_therapy": "radiotherapy + hormones"})  # fmt: skip
    problems = []
    df = read_task1(tmp_path, problems)
    assert list(df.index) == ["1001", "1002"] and problems == []
    assert df.loc["1001", "capsular_penetration"] == 1.0
    assert df.loc["1001", "invasion_seminal_vesicles"] == 0.0
    assert np.isnan(df.loc["1001", "positive_lymph_nodes"])  # "x" -> missing
    assert pd.isna(df.loc["1001", "tertiary_gleason"])  # absent -> missing
    assert df["event"].tolist() == [True, False] and df["time"].tolist() == [14.5, 14.5]
    x, names = clinical_to_matrix(df, TASK1)
    assert x.dtype == np.float32 and x.shape == (2, len(names))
    row = dict(zip(names, x[0]))
    assert row["pT_stage"] > dict(zip(names, x[1]))["pT_stage"]  # 3a ranks above 2
    assert row["pT_stage"] == TASK1.column("pT_stage").order.index("3a")
    assert row["primary_gleason"] == 3 and row["ISUP"] == 2  # 0-based ranks of "4", "3"
    assert row["earlier_therapy=none"] == 1 and row["earlier_therapy=unknown"] == 0
    assert dict(zip(names, x[1]))["earlier_therapy=radiotherapy + hormones"] == 1


def test_pt_stage_order_is_monotone():
    order = TASK1.column("pT_stage").order
    raw = pd.DataFrame({"pT_stage": list(order)})
    x, names = clinical_to_matrix(raw, TASK1, problems=[])
    col = x[:, names.index("pT_stage")]
    assert (np.diff(col) > 0).all()


def test_unknown_category_is_a_warning_and_nan(tmp_path):
    _write(tmp_path, "1001", {**REC, "earlier_therapy": "chemotherapy"})
    problems = []
    df = read_task1(tmp_path, problems)
    assert [p.severity for p in problems] == ["warning"]
    assert problems[0].field == "earlier_therapy" and problems[0].patient == "1001"
    x, names = clinical_to_matrix(df, TASK1)
    cols = [i for i, n in enumerate(names) if n.startswith("earlier_therapy=")]
    assert np.isnan(x[0, cols]).all()
    with pytest.warns(UserWarning, match="unknown category"):
        clinical_to_matrix(pd.DataFrame({"earlier_therapy": ["laser"]}), TASK1)


def test_uncoercible_value_names_file_patient_field(tmp_path):
    path = _write(tmp_path, "1001", {**REC, "capsular_penetration": "maybe"})
    with pytest.raises(SchemaError) as exc:
        read_task1(tmp_path)
    e = exc.value
    assert e.path == str(path) and e.patient == "1001" and e.field == "capsular_penetration"
    assert "maybe" in str(e) and "expected" in str(e)


def test_corrupt_json_and_missing_label(tmp_path):
    path = _write(tmp_path, "1001", REC)
    path.write_text("{not json")
    with pytest.raises(DataError, match="corrupt JSON") as exc:
        read_task1(tmp_path)
    assert exc.value.path == str(path)
    _write(tmp_path, "1001", {k: v for k, v in REC.items() if k != "BCR"})
    with pytest.raises(LabelError, match="without label"):
        read_task1(tmp_path)


def test_leak_column_noted_never_a_feature(tmp_path):
    """A leak column the schema declares is in every real record: no problem per patient
    (that made --strict refuse all real data), one note with the count."""
    _write(tmp_path, "1001", {**REC, "BCR_PSA": 0.4})
    _write(tmp_path, "1002", {**REC, "BCR_PSA": 0.9, "not_declared": 1})
    _write(tmp_path, "1003", REC)
    problems = []
    df = read_task1(tmp_path, problems)
    assert [(p.severity, p.reason, p.patient, p.field) for p in problems] == [
        ("warning", "column not in the schema; ignored", "1002", "not_declared")
    ]  # an undeclared column is still a warning
    assert "BCR_PSA" not in df.columns
    assert not any("BCR" in n for n in clinical_to_matrix(df, TASK1)[1])
    records = {pid: json.loads((tmp_path / "clinical_data" / f"{pid}.json").read_text())
               for pid in ("1001", "1002", "1003")}  # fmt: skip
    notes = leak_notes(records, TASK1, tmp_path)
    assert [(n.severity, n.field, n.path) for n in notes] == [("note", "BCR_PSA", str(tmp_path))]
    assert notes[0].reason == ("declared label-leak column, present in 2 of 3 record(s),"
                               " never used as a feature")  # fmt: skip
    assert leak_notes({"1003": REC}, TASK1) == []  # absent: nothing to say


def test_task3_labels_configurable_and_minus_one_missing(tmp_path):
    rec = {
        "age": 70,
        "sex": "Male",
        "smoking": 1,
        "tumor": "Primary",
        "stage": "T1HG",
        "substage": "T1e",
        "grade": "G3",
        "reTUR": "Yes",
        "LVI": -1,
        "variant": "UCC",
        "EORTC": "High risk",
        "no_instillations": -1,
        "BRS": "BRS2",
        "progression": 0,
        "Time_to_prog_or_FUend": 30.0,
        "HG_recur": 1,
        "Time_to_HG_recur_or_FUend": 12.0,
    }
    d = tmp_path / "data" / "3A_001"
    d.mkdir(parents=True)
    (d / "3A_001_CD.json").write_text(json.dumps(rec))
    problems = []
    df = read_task3(tmp_path, problems)
    assert df.loc["3A_001", "time"] == 30.0 and not df.loc["3A_001", "event"]
    assert np.isnan(df.loc["3A_001", "LVI"]) and np.isnan(df.loc["3A_001", "no_instillations"])
    assert problems == []  # the other endpoint's columns: declared leaks, so no problem
    notes = leak_notes({"3A_001": rec}, task3_schema("progression"))
    assert {n.field for n in notes} == {"HG_recur", "Time_to_HG_recur_or_FUend"}
    hg = read_task3(tmp_path, [], event="HG_recur")
    assert hg.loc["3A_001", "time"] == 12.0 and hg.loc["3A_001", "event"]


def test_generic_csv_with_yaml_schema_and_time_unit(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: t\nid: pid\ntime: {column: days, unit: days}\nevent: dead\n"
        "output_unit: years\nmissing: ['', NA]\ncolumns:\n  age: numeric\n"
        "  er: {kind: binary, true: [pos], false: [neg]}\n"
        "  grade: {kind: ordinal, order: [1, 2, 3]}\n"
        "  hist: {kind: categorical, categories: [ductal, lobular]}\n"
    )
    (tmp_path / "c.csv").write_text(
        "pid,age,er,grade,hist,days,dead\na,50,pos,3,ductal,365.25,1\nb,NA,neg,1,,730.5,0\n"
    )
    df = read_generic(tmp_path / "c.csv", tmp_path / "s.yaml")
    assert df["time"].tolist() == [1.0, 2.0]
    x, names = clinical_to_matrix(df, load_schema(tmp_path / "s.yaml"))
    assert names == ["age", "er", "grade", "hist=ductal", "hist=lobular"]
    np.testing.assert_array_equal(x[0], [50, 1, 2, 1, 0])
    assert np.isnan(x[1, [0, 3, 4]]).all() and x[1, 2] == 0
    # a spreadsheet's UTF-8 BOM does not stick to the first header
    (tmp_path / "bom.csv").write_bytes("\ufeffpid,age,er,grade,hist,days,dead\n"
                                       "a,50,pos,3,ductal,365.25,1\n".encode())
    assert read_generic(tmp_path / "bom.csv", tmp_path / "s.yaml")["time"].tolist() == [1.0]
    (tmp_path / "bad.yaml").write_text("columns:\n  g: {kind: ordinal}\n")
    with pytest.raises(ConfigError, match="order"):
        load_schema(tmp_path / "bad.yaml")


def test_labels_not_required_keeps_unlabelled_patients():
    """Prediction reads cases without follow-up: kept with time NaN (no problem recorded);
    a label that is there but unreadable is a warning, not a dropped case."""
    from modalsurv.io.clinical import coerce_records

    no_label = {k: v for k, v in REC.items() if k not in ("BCR", "time_to_follow-up/BCR")}
    records = {"a": REC, "b": no_label, "c": {**REC, "time_to_follow-up/BCR": "soon"}}
    problems = []
    df = coerce_records(records, TASK1, problems, collect_errors=True, require_labels=False)
    assert list(df.index) == ["a", "b", "c"]
    assert df.loc["a", "time"] == 14.5 and bool(df.loc["a", "event"])
    assert np.isnan(df.loc["b", "time"]) and np.isnan(df.loc["c", "time"])
    assert [(p.severity, p.patient, p.field) for p in problems] == [
        ("warning", "c", "time_to_follow-up/BCR")]
    problems = []
    df = coerce_records(records, TASK1, problems, collect_errors=True)  # labels required
    assert list(df.index) == ["a"] and {p.severity for p in problems} == {"error"}


def test_json_written_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors save UTF-8 with a BOM; it used to be 'corrupt JSON'."""
    from modalsurv.io.clinical import read_json_file
    from modalsurv.io.rnaseq import read_rna_json

    clin = tmp_path / "1001.json"
    clin.write_bytes(b"\xef\xbb\xbf" + json.dumps(REC).encode())
    assert read_json_file(clin) == REC
    rna = tmp_path / "1001_RNA.json"
    rna.write_bytes(b"\xef\xbb\xbf" + json.dumps({"TP53": 3.5, "KLK3": 10.0}).encode())
    assert read_rna_json(rna, "1001").to_dict() == {"TP53": 3.5, "KLK3": 10.0}


def test_a_field_absent_from_records_is_one_warning_naming_it():
    """A key missing from a JSON record was imputed without a word; now one warning per
    field says how many records lack it. A field the schema marks optional (tertiary
    Gleason) is not warned about."""
    from modalsurv.io.clinical import coerce_records, schema_from_dict

    no_psa = {k: v for k, v in REC.items() if k not in ("pre_operative_PSA", "tertiary_gleason")}
    records = {"a": REC, "b": no_psa, "c": no_psa}
    problems = []
    df = coerce_records(records, TASK1, problems, collect_errors=True)
    assert [(p.severity, p.field) for p in problems] == [("warning", "pre_operative_PSA")]
    assert "absent from 2 of 3 record(s) (e.g. b, c)" in problems[0].reason
    assert np.isnan(df.loc["b", "pre_operative_PSA"])
    schema = schema_from_dict({"columns": {"x": "numeric", "y": {"kind": "numeric", "optional": True}}})
    problems = []
    coerce_records({"a": {"x": 1.0}}, schema, problems, collect_errors=True)
    assert problems == []


@pytest.mark.parametrize("value", [1e40, -1e39, "1e40"])
def test_a_number_beyond_float32_is_missing_with_a_warning(value):
    """1e40 is finite in float64 but inf in the float32 feature matrix, where it stopped
    every prediction ("features contain +/-inf"): it is missing, warned naming the field."""
    from modalsurv.io.clinical import coerce_records

    problems = []
    df = coerce_records({"a": {**REC, "pre_operative_PSA": value}}, TASK1, problems,
                        collect_errors=True)  # fmt: skip
    assert [(p.severity, p.patient, p.field) for p in problems] == [
        ("warning", "a", "pre_operative_PSA")]
    assert "float32" in problems[0].reason and np.isnan(df.loc["a", "pre_operative_PSA"])
    x, _ = clinical_to_matrix(df, TASK1)
    assert not np.isinf(x).any()
    problems = []  # a raw table (no coercion first) is warned about the same way, never inf
    x, names = clinical_to_matrix(pd.DataFrame({"pre_operative_PSA": [value]}), TASK1, problems)
    assert np.isnan(x[0, names.index("pre_operative_PSA")])
    assert any(p.field == "pre_operative_PSA" and "float32" in p.reason for p in problems)


def test_a_record_of_nulls_is_warned_about_like_an_empty_one():
    """``{}`` gave one warning per field; the same record with every value null was
    imputed without a word."""
    from modalsurv.io.clinical import coerce_records

    nulls = {k: None for k in REC if k not in ("BCR", "time_to_follow-up/BCR")}
    warned = {}
    for name, rec in {"empty": {}, "nulls": nulls}.items():
        problems = []
        coerce_records({"a": rec}, TASK1, problems, collect_errors=True, require_labels=False)
        warned[name] = sorted(p.field for p in problems if p.severity == "warning")
    assert warned["nulls"] == warned["empty"] and "pre_operative_PSA" in warned["nulls"]
    problems = []  # one null among values stays a plain missing value
    coerce_records({"a": {**REC, "pre_operative_PSA": None}}, TASK1, problems,
                   collect_errors=True)  # fmt: skip
    assert problems == []


def test_an_untypeable_value_of_a_kept_patient_is_a_warning_not_an_error(tmp_path):
    """Reading a folder (collect mode) keeps the patient and imputes the value: it used to
    be listed as an [error] while the patient was trained on all the same."""
    from modalsurv.data.synthetic import make_cohort, write_chimera
    from modalsurv.io.chimera import read_chimera

    cohort = make_cohort(8, 1, task=1, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                         n_genes=20)[0]  # fmt: skip
    write_chimera(cohort, tmp_path, images=False)
    path = tmp_path / "clinical_data" / f"{cohort.ids[2]}.json"
    rec = json.loads(path.read_text())
    rec["ISUP"] = "abc"
    path.write_text(json.dumps(rec))
    out = read_chimera(tmp_path)
    mine = [p for p in out.problems if p.patient == cohort.ids[2] and p.field == "ISUP"]
    assert [p.severity for p in mine] == ["warning"]
    assert "found 'abc'; treated as missing" in mine[0].reason and mine[0].path == str(path)
    assert cohort.ids[2] in out.cohort.ids
    # one record read on its own (not collected) still refuses the value, naming it
    from modalsurv.errors import SchemaError
    from modalsurv.io.clinical import TASK1, coerce_records

    with pytest.raises(SchemaError, match="ISUP"):
        coerce_records({"1": rec}, TASK1)


def test_a_key_written_twice_with_different_values_is_an_error(tmp_path):
    """json.load kept the last of two ``BCR`` keys without a word (the patient's event
    flipped); now the record is refused naming the key. The same value twice is harmless."""
    d = tmp_path / "clinical_data"
    d.mkdir()
    body = json.dumps(REC)[:-1]
    (d / "1001.json").write_text(body + ', "BCR": "0.0"}')
    with pytest.raises(DataError, match="twice") as exc:
        read_task1(tmp_path)
    assert (exc.value.patient, exc.value.field) == ("1001", "BCR")
    assert exc.value.path == str(d / "1001.json")
    (d / "1001.json").write_text(body + ', "BCR": "1.0"}')
    assert bool(read_task1(tmp_path).loc["1001", "event"])
    # a generic JSON object id -> record: the same id twice kept the last record
    (tmp_path / "s.yaml").write_text("time: t\nevent: e\ncolumns:\n  age: numeric\n")
    (tmp_path / "c.json").write_text('{"a": {"age": 1, "t": 5, "e": 1},'
                                     ' "a": {"age": 2, "t": 9, "e": 0}}')
    with pytest.raises(DataError, match="twice"):
        read_generic(tmp_path / "c.json", tmp_path / "s.yaml")


@pytest.mark.parametrize(("field", "value"), [("time_to_follow-up/BCR", True), ("BCR", [1]),
                                              ("BCR", []), ("time_to_follow-up/BCR", 10**400)],
                         ids=["time-true", "event-list", "event-empty-list", "time-huge"])
def test_a_label_that_is_not_one_number_is_refused(field, value):
    """``true`` as a follow-up time was read as 1 month, ``[1]`` as an event as 1, ``[]``
    raised an IndexError and a 400-digit integer an OverflowError: each is a LabelError
    naming patient and field."""
    from modalsurv.io.clinical import coerce_records

    with pytest.raises(LabelError) as exc:
        coerce_records({"a": {**REC, field: value}}, TASK1)
    assert (exc.value.patient, exc.value.field) == ("a", field)


def test_an_integer_beyond_any_float_is_a_missing_value_not_an_overflow():
    """JSON allows an integer of any length; float() of it raised a raw OverflowError."""
    from modalsurv.io.clinical import coerce_records

    problems = []
    df = coerce_records({"a": {**REC, "pre_operative_PSA": 10**400}}, TASK1, problems,
                        collect_errors=True)  # fmt: skip
    assert [(p.severity, p.field) for p in problems] == [("warning", "pre_operative_PSA")]
    assert np.isnan(df.loc["a", "pre_operative_PSA"])


def test_a_clinical_path_that_is_a_folder_is_listed_not_a_traceback(tmp_path):
    """``clinical_data/9999.json/`` (a folder) raised a raw IsADirectoryError out of the
    whole read; now the case is an error naming the file, and the others are read."""
    from modalsurv.io.chimera import read_chimera_into

    _write(tmp_path, "1001", REC)
    (tmp_path / "clinical_data" / "9999.json").mkdir()
    problems = []
    out = read_chimera_into(tmp_path, 1, problems)
    assert list(out.cohort.ids) == ["1001"]
    bad = [p for p in problems if p.patient == "9999"]
    assert [p.severity for p in bad] == ["error"] and "cannot read" in bad[0].reason


def test_binary_coded_one_two_reads_json_numbers_as_csv_text():
    """``true: [2], false: [1]`` (R's coding): a JSON 1 was read as true (every patient 1),
    while the text "1" of a CSV was false; the typed table keeps its 0/1 in the matrix."""
    from modalsurv.io.clinical import coerce_records, schema_from_dict

    schema = schema_from_dict({"columns": {"smoker": {"kind": "binary", "true": [2],
                                                      "false": [1]}}})  # fmt: skip
    records = {"a": {"smoker": 1}, "b": {"smoker": 2}, "c": {"smoker": "1"},
               "d": {"smoker": True}, "e": {"smoker": None}}  # fmt: skip
    df = coerce_records(records, schema)
    np.testing.assert_array_equal(df["smoker"].to_numpy()[:4], [0.0, 1.0, 0.0, 1.0])
    x, _ = clinical_to_matrix(df, schema)
    np.testing.assert_array_equal(x[:4, 0], [0.0, 1.0, 0.0, 1.0])
    assert np.isnan(x[4, 0])
    raw = pd.DataFrame({"smoker": [1, 2, 1]}, index=["a", "b", "c"])  # raw codes
    np.testing.assert_array_equal(clinical_to_matrix(raw, schema)[0][:, 0], [0.0, 1.0, 0.0])


def test_generic_csv_with_a_space_after_each_separator(tmp_path):
    """A header "pid, age, t, e": " t" matched no schema column (every patient "without
    label") and the id "002 " no patient of a manifest."""
    from modalsurv.io.clinical import schema_from_dict

    schema = schema_from_dict({"id": "pid", "time": "t", "event": "e",
                               "columns": {"age": "numeric"}})  # fmt: skip
    (tmp_path / "c.csv").write_text("pid, age, t, e\n001, 50, 5, 1\n002 ,60,3,0\n")
    df = read_generic(tmp_path / "c.csv", schema)
    assert list(df.index) == ["001", "002"] and df["age"].tolist() == [50.0, 60.0]
    assert df["time"].tolist() == [5.0, 3.0]
    (tmp_path / "d.csv").write_text("pid,age, age,t,e\n001,50,51,5,1\n")
    with pytest.raises(DataError, match="named twice") as e:
        read_generic(tmp_path / "d.csv", schema)
    assert e.value.field == "age"


def test_an_event_coded_two_says_r_coding():
    """An event 2 (R's Surv: 1 = censored, 2 = event) said only "expected 0/1", though
    every 1 of such a column is then read as an event."""
    from modalsurv.io.clinical import coerce_records

    with pytest.raises(LabelError, match="R's coding 1 = censored, 2 = event") as exc:
        coerce_records({"a": {**REC, "BCR": "2"}}, TASK1)
    assert (exc.value.patient, exc.value.field) == ("a", "BCR")


def test_schema_lists_yaml_booleans_and_single_words(tmp_path):
    """YAML reads an unquoted ``yes`` as true: ``categories: [yes, no]`` became "True" and
    "False", so every "yes" was an unknown category; ``categories: ductal`` (no brackets)
    was read letter by letter."""
    (tmp_path / "s.yaml").write_text("columns:\n  smoker: {kind: categorical,"
                                     " categories: [yes, no, unknown]}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"columns\.smoker\.categories.*quote"):
        load_schema(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("leak: relapse_psa\ncolumns:\n  hist: {kind: categorical,"
                                     " categories: ductal}\n  er: {kind: binary, true: 'yes',"
                                     " false: ['no']}\n")  # fmt: skip
    schema = load_schema(tmp_path / "s.yaml")
    assert schema.column("hist").categories == ("ductal",) and schema.leak == ("relapse_psa",)
    assert schema.column("er").true == ("yes",)
