"""Real public survival cohorts that installed packages ship, split into modalities.

Why: the multimodal machinery should also be exercised on real data, offline. Each
cohort is split the way a user would split it: clinical variables as ``clinical`` (typed
and encoded by ``io.clinical``: categorical → ``name=category`` columns, NaN kept),
gene-expression probes as ``rna``, image-derived morphometry as ``image``.

Sources: ``breast_cancer``, ``flchain``, ``aids``, ``gbsg2`` and ``whas500`` from
scikit-survival (always available; clinical only); ``nki70``, ``gse1992``, ``gse4335``,
``dataOvarian1`` and ``wpbc`` from the ``SurvSet`` package (GPL: an optional extra,
imported lazily and never vendored; ``pip install SurvSet``). Any other SurvSet table
loads as ``survset:<name>`` (its ``fac_`` columns categorical, its ``num_`` columns
numeric, all clinical): this project tunes its large-cohort defaults on some of them
(docs/benchmarks.md says which), never on the named benchmark cohorts.

``flchain`` drops the column ``chapter``: it is the ICD chapter of the cause of *death*,
known only for patients who died, i.e. a label leak. Its times and those of ``aids``,
``gbsg2`` and ``whas500`` stay in days. SurvSet's own copies of such columns go too
(``survset:flchain``'s chapter, ``survset:support2``'s ``sfdm2``, ``survset:mgus``'s
progression ``pctime`` and ``pcdx``); a SurvSet table with more than one row per patient
or an event coded other than 0/1 (competing risks) is refused, naming it.

Times: ``breast_cancer`` is converted from days to months; SurvSet times are kept in the
package's units (see ``available()``). Times must be > 0: ``dataOvarian1`` has two
patients with time 0 and ``flchain`` three, which are *shifted* to half the smallest
positive time (kept, not dropped; the count is in ``available()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.errors import ConfigError
from modalsurv.io.clinical import Column, Schema, clinical_to_matrix, time_factor

_MISSING = ("missing", "na", "x", "unkown", "unknown", "")


@dataclass(frozen=True)
class _SurvSetSpec:
    """How one SurvSet table splits: extra numeric clinical columns, the modality the
    remaining numeric columns form, an optional site column."""

    clinical_num: tuple[str, ...]
    other: str
    site: str | None = None
    unit: str = "?"


_SURVSET = {
    "nki70": _SurvSetSpec(("num_Age",), "rna", unit="years"),
    "gse1992": _SurvSetSpec(("num_age", "num_size"), "rna", unit="months"),
    "gse4335": _SurvSetSpec(("num_age", "num_grade"), "rna", unit="months"),
    "dataOvarian1": _SurvSetSpec((), "rna", site="fac_group", unit="days"),
    "wpbc": _SurvSetSpec(("num_tsize", "num_pnodes"), "image", unit="months"),
}
# SurvSet columns that carry the outcome, dropped wherever the table is loaded (a named
# cohort or ``survset:<name>``): flchain's cause-of-death chapter (known only for the
# dead), support2's functional status at two months (its level "<2 mo. follow-up" is
# exactly the deaths before day 60), mgus's progression to a plasma cell malignancy (its
# time and type: a later event, in a cohort whose outcome is death)
_SURVSET_LEAKS = {
    "flchain": ("fac_chapter",),
    "support2": ("fac_sfdm2",),
    "mgus": ("num_pctime", "fac_pcdx"),
}


@dataclass(frozen=True)
class _SksurvSpec:
    """One scikit-survival table: its loader, label fields and typed columns (numeric
    unless named; binary ``(column, true token)``; ordinal ``(column, levels)``;
    categorical columns one-hot); columns dropped (label leaks)."""

    loader: str
    event: str
    time: str
    binary: tuple[tuple[str, str], ...] = ()
    ordinal: tuple[tuple[str, tuple[str, ...]], ...] = ()
    categorical: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


_SKSURV = {
    "flchain": _SksurvSpec(
        "load_flchain", "death", "futime", binary=(("mgus", "yes"), ("sex", "M")),
        ordinal=(("flc.grp", tuple(str(i) for i in range(1, 11))),
                 ("sample.yr", tuple(str(y) for y in range(1995, 2004)))),
        drop=("chapter",)),
    "aids": _SksurvSpec(
        "load_aids", "censor", "time",
        binary=(("hemophil", "1"), ("sex", "2"), ("strat2", "1"), ("tx", "1")),
        ordinal=(("karnof", ("70", "80", "90", "100")),),
        categorical=("ivdrug", "raceth", "txgrp")),
    "gbsg2": _SksurvSpec(
        "load_gbsg2", "cens", "time", binary=(("horTh", "yes"), ("menostat", "Post")),
        ordinal=(("tgrade", ("I", "II", "III")),)),
    "whas500": _SksurvSpec(
        "load_whas500", "fstat", "lenfol",
        binary=tuple((c, "1") for c in ("afb", "av3", "chf", "cvd", "gender", "miord",
                                         "mitype", "sho"))),
}  # fmt: skip
NAMES: tuple[str, ...] = ("breast_cancer", *_SKSURV, *_SURVSET)


def _strip(col: str) -> str:
    return col[4:] if col.startswith(("num_", "fac_")) else col


def _positive_times(time: np.ndarray) -> tuple[np.ndarray, int]:
    """Shift times <= 0 to half the smallest positive time; return (times, n shifted)."""
    t = np.asarray(time, dtype=np.float64).copy()
    bad = t <= 0
    if bad.any():
        t[bad] = t[~bad].min() / 2.0
    return t, int(bad.sum())


def _categorical_schema(df: pd.DataFrame, cat: Sequence[str], num: Sequence[str]) -> Schema:
    """A schema for observed data: numeric columns, categoricals over observed levels."""
    cols = [Column(_strip(c), "numeric") for c in num]
    for c in cat:
        levels = [str(v) for v in pd.Series(df[c]).dropna().astype(str).unique()]
        levels = sorted(v for v in levels if v.strip().lower() not in _MISSING)
        cols.append(Column(_strip(c), "categorical", categories=tuple(levels)))
    return Schema(name="public", columns=tuple(cols), missing=_MISSING)


def _clinical(df: pd.DataFrame, cat: Sequence[str], num: Sequence[str]
              ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    schema = _categorical_schema(df, cat, num)
    table = pd.DataFrame({_strip(c): df[c].astype(object) for c in num})
    for c in cat:  # as the text the levels were read from: a bool True was read as "1"
        # against the level "True", so a bool column (nwtco's in_subcohort) was all NaN
        table[_strip(c)] = [v if pd.isna(v) else str(v) for v in df[c]]
    return clinical_to_matrix(table, schema, problems=[])


def _breast_cancer() -> tuple[Cohort, dict]:
    from sksurv.datasets import load_breast_cancer

    x, y = load_breast_cancer()
    genes = [c for c in x.columns if c.startswith("X")]
    schema = Schema(
        name="breast_cancer",
        columns=(
            Column("age", "numeric"),
            Column("size", "numeric"),
            Column("er", "binary", true=("positive",), false=("negative",)),
            Column(
                "grade",
                "ordinal",
                order=("well differentiated", "intermediate", "poorly differentiated"),
            ),
        ),
        missing=_MISSING,
    )
    clin = pd.DataFrame({c: x[c].astype(object) for c in ("age", "size", "er", "grade")})
    xc, names = clinical_to_matrix(clin, schema, problems=[])
    time = y["t.tdm"] * time_factor("days", "months")
    ids = [f"bc{i:03d}" for i in range(len(x))]
    cohort = Cohort(ids, time, y["e.tdm"], features={"clinical": xc,
                    "rna": x[genes].to_numpy(np.float32)},
                    feature_names={"clinical": names, "rna": genes})  # fmt: skip
    return cohort, {"time_unit": "months", "shifted_times": 0, "source": "scikit-survival"}


def _sksurv(name: str) -> tuple[Cohort, dict]:
    from sksurv import datasets

    spec = _SKSURV[name]
    load_fn = getattr(datasets, spec.loader)
    x, y = load_fn("aids") if name == "aids" else load_fn()
    x = x.drop(columns=list(spec.drop))
    binary, ordinal = dict(spec.binary), dict(spec.ordinal)
    cols = []
    for c in x.columns:
        if c in binary:
            false = [str(v) for v in x[c].cat.categories if str(v) != binary[c]]
            cols.append(Column(c, "binary", true=(binary[c],), false=tuple(false)))
        elif c in ordinal:
            cols.append(Column(c, "ordinal", order=ordinal[c]))
        elif c in spec.categorical:
            cols.append(Column(c, "categorical",
                               categories=tuple(str(v) for v in x[c].cat.categories)))
        else:
            cols.append(Column(c, "numeric"))
    schema = Schema(name=name, columns=tuple(cols), missing=_MISSING)
    table = pd.DataFrame({c: x[c].astype(object) for c in x.columns})
    xc, names = clinical_to_matrix(table, schema, problems=[])
    time, shifted = _positive_times(y[spec.time])
    ids = [f"{name}{i:05d}" for i in range(len(x))]
    cohort = Cohort(ids, time, y[spec.event], features={"clinical": xc},
                    feature_names={"clinical": names})  # fmt: skip
    return cohort, {"time_unit": "days", "shifted_times": shifted, "source": "scikit-survival"}


def _survset_table(name: str) -> pd.DataFrame:
    from modalsurv.utils import require

    # SurvSet is GPL: an optional extra, imported only here and never vendored
    SurvLoader = require("SurvSet.data", f"the public cohort {name!r}").SurvLoader
    loader = SurvLoader()
    if name not in set(loader.df_ds["ds"]):
        raise ConfigError(f"SurvSet has no table {name!r}")
    if bool(loader.df_ds.set_index("ds").loc[name, "is_td"]):
        raise ConfigError(f"SurvSet table {name!r} has time-varying covariates (one row per"
                          " interval), which a Cohort (one row per patient) cannot hold")
    df = loader.load_dataset(ds_name=name)["df"]
    codes = sorted(pd.unique(df["event"]).tolist())
    if not set(codes) <= {0, 1}:
        raise ConfigError(f"SurvSet table {name!r} codes its event as {codes}, not 0/1 (e.g."
                          " competing risks, one code per kind of event); a Cohort holds one"
                          " event")  # fmt: skip
    if not df["pid"].is_unique:
        dup = df.loc[df["pid"].duplicated(), "pid"].iloc[0]
        raise ConfigError(f"SurvSet table {name!r} has {len(df)} rows for"
                          f" {df['pid'].nunique()} patients (patient '{dup}' has"
                          f" {int((df['pid'] == dup).sum())}, e.g. one per eye), which a"
                          " Cohort (one row per patient) cannot hold")  # fmt: skip
    return df.drop(columns=[c for c in _SURVSET_LEAKS.get(name, ()) if c in df.columns])


def _survset_any(name: str) -> tuple[Cohort, dict]:
    """A SurvSet table not split by :data:`_SURVSET`: every column clinical."""
    df = _survset_table(name)
    fac = [c for c in df.columns if c.startswith("fac_")]
    num = [c for c in df.columns if c.startswith("num_")]
    xc, names = _clinical(df, fac, num)
    time, shifted = _positive_times(df["time"].to_numpy())
    ids = [str(p) for p in df["pid"]]
    cohort = Cohort(ids, time, df["event"].to_numpy().astype(int), features={"clinical": xc},
                    feature_names={"clinical": names})  # fmt: skip
    return cohort, {"time_unit": "?", "shifted_times": shifted, "source": "SurvSet"}


def _survset(name: str) -> tuple[Cohort, dict]:
    spec = _SURVSET[name]
    df = _survset_table(name)
    fac = [c for c in df.columns if c.startswith("fac_") and c != spec.site]
    other = [c for c in df.columns if c.startswith("num_") and c not in spec.clinical_num]
    xc, names = _clinical(df, fac, spec.clinical_num)
    time, shifted = _positive_times(df["time"].to_numpy())
    ids = [str(p) for p in df["pid"]]
    meta = pd.DataFrame(index=pd.Index(ids, name="patient"))
    if spec.site is not None:
        meta["site"] = [str(v) for v in df[spec.site]]
    cohort = Cohort(
        ids, time, df["event"].to_numpy().astype(int),
        features={"clinical": xc, spec.other: df[other].to_numpy(np.float32)},
        feature_names={"clinical": names, spec.other: [_strip(c) for c in other]},
        meta=meta,
    )  # fmt: skip
    return cohort, {"time_unit": spec.unit, "shifted_times": shifted, "source": "SurvSet"}


def _load(name: str) -> tuple[Cohort, dict]:
    if name == "breast_cancer":
        return _breast_cancer()
    if name in _SKSURV:
        return _sksurv(name)
    if name in _SURVSET:
        return _survset(name)
    if name.startswith("survset:"):
        return _survset_any(name.split(":", 1)[1])
    raise ConfigError(f"unknown public cohort {name!r}; available: {list(NAMES)}")


def load(name: str) -> Cohort:
    """The public cohort ``name`` as a Cohort (see ``available()``; any other SurvSet
    table as ``survset:<name>``)."""
    return _load(name)[0]


def available() -> pd.DataFrame:
    """One row per public cohort that can be loaded here: N, events, modalities (dims),
    time unit, shifted zero times, source. SurvSet cohorts are listed only when the
    package is installed."""
    rows = []
    for name in NAMES:
        try:
            cohort, info = _load(name)
        except ImportError:
            continue
        mods = ", ".join(f"{m} ({cohort.dim(m)})" for m in cohort.modalities)
        rows.append({"name": name, "n": len(cohort), "events": cohort.n_events,
                     "modalities": mods, **info,
                     "sites": int(cohort.meta["site"].nunique()) if "site" in cohort.meta
                     else 1})  # fmt: skip
    return pd.DataFrame(rows).set_index("name")
