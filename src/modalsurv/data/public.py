"""Real public survival cohorts that installed packages ship, split into modalities.

Why: the multimodal machinery should also be exercised on real data, offline. Each
cohort is split the way a user would split it: clinical variables as ``clinical`` (typed
and encoded by ``io.clinical``: categorical → ``name=category`` columns, NaN kept),
gene-expression probes as ``rna``, image-derived morphometry as ``image``.

Sources: ``breast_cancer`` from scikit-survival (always available); ``nki70``,
``gse1992``, ``gse4335``, ``dataOvarian1`` and ``wpbc`` from the ``SurvSet`` package
(GPL: an optional extra, imported lazily and never vendored; ``pip install SurvSet``).

Times: ``breast_cancer`` is converted from days to months; SurvSet times are kept in the
package's units (see ``available()``). Times must be > 0: ``dataOvarian1`` has two
patients with time 0, which are *shifted* to half the smallest positive time (kept, not
dropped; the count is in ``available()``).
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
NAMES: tuple[str, ...] = ("breast_cancer", *_SURVSET)


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
    table = pd.DataFrame({_strip(c): df[c].astype(object) for c in [*num, *cat]})
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


def _survset(name: str) -> tuple[Cohort, dict]:
    from modalsurv.utils import require

    # SurvSet is GPL: an optional extra, imported only here and never vendored
    SurvLoader = require("SurvSet.data", f"the public cohort {name!r}").SurvLoader
    spec = _SURVSET[name]
    df = SurvLoader().load_dataset(ds_name=name)["df"]
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
    if name in _SURVSET:
        return _survset(name)
    raise ConfigError(f"unknown public cohort {name!r}; available: {list(NAMES)}")


def load(name: str) -> Cohort:
    """The public cohort ``name`` as a Cohort (see ``available()``)."""
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
