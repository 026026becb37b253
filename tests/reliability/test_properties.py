"""Property tests: malformed input gives a valid result or a project error, never another
exception (a raw ValueError, TypeError, KeyError ... is a traceback for the user).

Fed: the Cohort constructor, the manifest reader (CSV text, feature files, RNA JSON) and
prediction by a fitted model on edited manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modalsurv.cohort import Cohort
from modalsurv.errors import ConfigError, DataError
from modalsurv.io.manifest import manifest_to_cohort, read_manifest
from modalsurv.runs import load_ensemble

PROJECT_ERRORS = (DataError, ConfigError)
SETTINGS = settings(max_examples=int(os.environ.get("RELIABILITY_EXAMPLES", "40")), deadline=None, derandomize="RELIABILITY_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])  # fmt: skip

scalars = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                    st.text(string.printable, max_size=4), st.none(), st.booleans())
numeric = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.dtype("U3")]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
    elements=None,
)


def _mostly(data: st.DataObject, good: st.SearchStrategy, bad: st.SearchStrategy,
            clean: bool = False) -> object:  # fmt: skip
    """A valid value 4 times in 5 (always when ``clean``), so the deeper code runs too,
    not only the first check."""
    return data.draw(good if clean or data.draw(st.integers(0, 4)) else bad)


def _lists(n: int) -> st.SearchStrategy:
    """Malformed lists: any scalars, mostly of the right length."""
    return st.one_of(st.lists(scalars, min_size=n, max_size=n), st.lists(scalars, max_size=5))


def _features(data: st.DataObject, n: int) -> st.SearchStrategy:
    d = data.draw(st.integers(1, 3))
    shape = st.sampled_from([(n, d), (n, 2, d)])
    return hnp.arrays(np.float32, shape, elements=st.one_of(
        st.floats(-5, 5, width=32), st.just(np.nan)))  # fmt: skip


@SETTINGS
@given(data=st.data(), n=st.integers(0, 4))
def test_cohort_constructor(data, n):
    ids = _mostly(data, st.lists(st.text(string.ascii_letters, min_size=1, max_size=3),
                                 min_size=n, max_size=n, unique=True), _lists(n))  # fmt: skip
    time = _mostly(data, st.lists(st.floats(0.1, 100), min_size=n, max_size=n), _lists(n))
    event = _mostly(data, st.lists(st.sampled_from([0, 1, True, "1", "0.0"]), min_size=n,
                                   max_size=n), _lists(n))  # fmt: skip
    mods = data.draw(st.lists(st.sampled_from(["clinical", "rna", "wsi"]), unique=True,
                              max_size=2))  # fmt: skip
    features = {m: _mostly(data, _features(data, n), numeric) for m in mods}
    present = {m: _mostly(data, st.one_of(st.none(), st.lists(st.booleans(), min_size=n,
                                                              max_size=n)), _lists(n))
               for m in mods}  # fmt: skip
    masks = {m: data.draw(numeric) for m in mods if not data.draw(st.integers(0, 3))}
    names = {m: data.draw(st.lists(st.text(max_size=2), max_size=4)) for m in mods
             if data.draw(st.booleans())}  # fmt: skip
    try:
        c = Cohort(ids, time, event, features=features,
                   present={m: p for m, p in present.items() if p is not None},
                   bag_mask=masks, feature_names=names)  # fmt: skip
    except PROJECT_ERRORS:
        return
    assert len(c) == len(ids) and np.isfinite(c.time).all() and (c.time > 0).all()
    for m, x in c.features.items():
        assert x.dtype == np.float32 and x.shape[0] == len(c)
        assert not x[~c.present[m]].any()  # absent rows hold nothing


# ---------------------------------------------------------------------------- manifests
cells = st.one_of(st.sampled_from(["", "1", "0", "2.5", "-1", "nan", "inf", "abc", " 3 ",
                                   "1e400", "0.0", "true", '"a,b"', "NA"]),
                  st.text(string.ascii_letters + string.digits + " .-", max_size=5))  # fmt: skip
files = st.sampled_from(["", "ok.npy", "strings.npy", "bag.npy", "wide.npy", "empty.npy",
                         "missing.npy", "p.json", "bad.json", "list.json", "nulls.json",
                         "x.txt", "ok.pt"])  # fmt: skip


def _write_files(folder: Path) -> None:
    np.save(folder / "ok.npy", np.arange(4.0))
    np.save(folder / "strings.npy", np.array(["a", "b"]))
    np.save(folder / "bag.npy", np.ones((3, 4)))
    np.save(folder / "wide.npy", np.ones(7))
    np.save(folder / "empty.npy", np.zeros((0,)))
    (folder / "p.json").write_text(json.dumps({"G1": 1, "G2": "2.5"}))
    (folder / "q.json").write_text(json.dumps({"G2": 1e6, "G3": "0"}))
    (folder / "bad.json").write_text("{not json")
    (folder / "list.json").write_text("[1, 2]")
    (folder / "nulls.json").write_text(json.dumps({"G1": None, "G2": "x"}))
    (folder / "x.txt").write_text("x")
    (folder / "ok.pt").write_bytes(b"not a torch file")


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifests")
    _write_files(folder)
    return folder


@SETTINGS
@given(data=st.data())
def test_manifest_reader(manifest_dir, data):
    header = ["patient", "time", "event", *data.draw(st.lists(
        st.sampled_from(["age", "grade", "mri_path", "rna_path", "site", "clinical_path", ""]),
        unique=True, max_size=4))]  # fmt: skip
    clean = data.draw(st.booleans())  # a valid manifest, or one with random faults
    header = data.draw(st.permutations(header)) if data.draw(st.booleans()) else header
    if not clean:
        header = [h for h in header if data.draw(st.integers(0, 9)) > 0]  # one may be lost
    elif "clinical_path" in header:
        header.remove("clinical_path")  # refused next to extra columns: a fault
    rows = []
    good = {"patient": None, "time": st.sampled_from(["1", "2.5", "30", " 4 "]),
            "event": st.sampled_from(["0", "1", "1.0", "true"]),
            "mri_path": st.sampled_from(["", "ok.npy", "ok.npy"]),
            "rna_path": st.sampled_from(["", "p.json", "q.json"]),
            "clinical_path": st.sampled_from(["ok.npy"])}  # fmt: skip
    for i in range(data.draw(st.integers(0, 5))):
        row = []
        for h in header:
            if h == "patient":
                row.append(_mostly(data, st.just(f"P{i}"), st.sampled_from(["P0", "", "a,b"]),
                                   clean))  # fmt: skip
            elif h in good:
                row.append(_mostly(data, good[h], files if h.endswith("_path") else cells,
                                   clean))  # fmt: skip
            else:
                row.append(data.draw(cells))
        rows.append(",".join(row))
    path = Path(tempfile.mkdtemp(dir=manifest_dir)) / "m.csv"
    for f in manifest_dir.iterdir():
        if f.is_file():
            shutil.copy(f, path.parent / f.name)
    path.write_text("\n".join([",".join(header), *rows]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cohort = manifest_to_cohort(read_manifest(path))
        except PROJECT_ERRORS:
            return
    assert len(cohort) == len(rows)
    for m, x in cohort.features.items():
        assert np.isfinite(x[cohort.present[m]]).all() or m == "clinical" or m == "rna"


# ---------------------------------------------------------------------------- prediction
@pytest.fixture(scope="module")
def fitted(manifest_run):
    run, manifest = manifest_run
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["rna_path"] = [str(manifest.parent / p) for p in table["rna_path"]]
    return load_ensemble(run), table


edits = st.sampled_from(["rename", "drop", "swap", "text", "number", "empty", "new_col",
                         "dup_col", "gene_drop", "gene_rename", "gene_text", "no_rna",
                         "subset", "category"])  # fmt: skip


@SETTINGS
@given(data=st.data(), steps=st.lists(edits, min_size=1, max_size=3))
def test_prediction_on_edited_manifests(fitted, tmp_path_factory, data, steps):
    ens, table = fitted
    df = table.copy()
    folder = tmp_path_factory.mktemp("edit")
    for step in steps:
        cols = [c for c in df.columns if c not in ("patient", "time", "event", "rna_path")]
        row = data.draw(st.integers(0, len(df) - 1)) if len(df) else 0
        if step == "rename" and cols:
            df = df.rename(columns={data.draw(st.sampled_from(cols)): data.draw(
                st.sampled_from(["weight", "grade", "age", "x=y"]))})  # fmt: skip
        elif step == "drop" and cols:
            df = df.drop(columns=[data.draw(st.sampled_from(cols))])
        elif step == "swap":
            df = df[data.draw(st.permutations(list(df.columns)))]
        elif step in ("text", "number", "empty", "category") and cols and len(df):
            value = {"text": "zzz", "number": "7", "empty": "", "category": "mid"}[step]
            df.loc[df.index[row], data.draw(st.sampled_from(cols))] = value
        elif step == "new_col":
            df["bmi"] = data.draw(st.sampled_from(["1", "a"]))
        elif step == "dup_col" and cols:
            df = df.loc[:, ~df.columns.duplicated()]
        elif step.startswith("gene") and len(df) and "rna_path" in df.columns:
            src = Path(df["rna_path"].iloc[row])
            profile = json.loads(src.read_text()) if src.is_file() else {}
            if step == "gene_drop":
                profile.pop("G03", None)
            elif step == "gene_rename":
                profile["G99"] = profile.pop("G04", 1.0)
            else:
                profile["G05"] = "high"
            new = folder / f"{row}_{step}_RNA.json"
            new.write_text(json.dumps(profile))
            df.loc[df.index[row], "rna_path"] = str(new)
        elif step == "no_rna" and "rna_path" in df.columns:
            df = df.drop(columns=["rna_path"])
        elif step == "subset" and len(df) > 1:
            df = df.iloc[: data.draw(st.integers(1, len(df)))]
    path = folder / "m.csv"
    df.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cohort = manifest_to_cohort(read_manifest(path))
            risk = ens.predict_risk(cohort)
        except PROJECT_ERRORS:
            return
    assert risk.shape == (len(cohort),) and np.isfinite(risk).all()


# ---------------------------------------------------------------------------- found above
def test_found_a_time_that_is_not_a_number_names_the_patient():
    from modalsurv.errors import LabelError

    with pytest.raises(LabelError, match=r"patient 'B'; field 'time': time must be a number"):
        Cohort(["A", "B"], [1.0, ""], [0, 1])
    with pytest.raises(LabelError, match="event"):
        Cohort([], [], [None])  # more events than patients: no IndexError


def test_found_a_row_with_more_fields_than_the_header(tmp_path):
    from modalsurv.errors import LayoutError

    (tmp_path / "m.csv").write_text("patient,time,event\na,b,1,1\n")
    with pytest.raises(LayoutError, match="cannot parse the CSV"):
        read_manifest(tmp_path / "m.csv")
