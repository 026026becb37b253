"""Clinical tables → typed DataFrames, driven by declarative schemas.

A schema is data, not code per column: each column has a *kind* (``numeric``, ``binary``,
``ordinal`` with an order, ``categorical`` with its categories), the schema lists the
tokens that mean "missing", the label columns and their time unit, and the columns that
must never become features because they leak the label (CHIMERA's ``BCR_PSA``: a PSA
value that only exists after recurrence). The same machinery reads CHIMERA task 1
(prostate), task 3 (bladder) and any CSV / JSON with a user schema in YAML.

Reading types values; it learns nothing. ``clinical_to_matrix`` maps the typed table to
numbers with the schema's *fixed* vocabulary (ordinal → 0-based rank, binary → 0/1,
categorical → one column ``name=category`` per schema category), NaN for a missing value
and for a category the schema does not know (reported as a warning). Imputation and
scaling are learned later, on training rows only (``train.transforms``).

Assumptions about CHIMERA values (from the challenge page and public baselines):
``earlier_therapy`` takes "none", "radiotherapy", "hormones", "radiotherapy + hormones",
"cryotherapy" and "unknown" ("unknown" is kept as its own category: that a history is
unknown may itself be informative); an unlisted therapy string is a warning, not fatal.
``pT_stage`` order is 2 < 2a < 2b < 2c < 3 < 3a < 3b < 4 (an unspecified "2"/"3" ranks
before its substages). Task 3 ``smoking`` is read as a number (the public baselines cast
it with ``float``); ``-1`` means missing in ``LVI`` and ``no_instillations``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from modalsurv.cohort import coerce_events
from modalsurv.errors import ConfigError, DataError, LabelError, Problem, SchemaError
from modalsurv.utils import read_yaml_mapping

Kind = Literal["numeric", "binary", "ordinal", "categorical"]
KINDS: tuple[str, ...] = ("numeric", "binary", "ordinal", "categorical")
DEFAULT_MISSING: tuple[str, ...] = ("", "x", "nan", "na", "n/a", "null", "missing")
_DAYS = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12.0, "years": 365.25}
_UNIT_ALIASES = {"day": "days", "d": "days", "week": "weeks", "w": "weeks", "month": "months",
                 "m": "months", "year": "years", "y": "years"}  # fmt: skip


def _key(value: Any) -> str:
    """Canonical token of a raw value: "3", 3, 3.0 and "3.0" all become "3"."""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    s = str(value).strip().lower()
    try:
        f = float(s)
    except ValueError:
        return s
    if math.isfinite(f) and f == int(f):
        return str(int(f))
    return s


def time_factor(unit: str, to: str = "months") -> float:
    """Multiply a duration in ``unit`` by this to express it in ``to``."""
    a, b = _UNIT_ALIASES.get(unit, unit), _UNIT_ALIASES.get(to, to)
    if a not in _DAYS or b not in _DAYS:
        raise ConfigError(f"time unit must be one of {sorted(_DAYS)}; found {unit!r} / {to!r}")
    return _DAYS[a] / _DAYS[b]


@dataclass(frozen=True)
class Column:
    """One schema column: its kind and vocabulary (``order`` / ``categories`` / tokens)."""

    name: str
    kind: Kind = "numeric"
    order: tuple[str, ...] = ()  # ordinal levels, lowest first
    categories: tuple[str, ...] = ()  # categorical vocabulary (fixed: one column each)
    true: tuple[str, ...] = ("1", "yes", "true", "positive")  # binary tokens
    false: tuple[str, ...] = ("0", "no", "false", "negative")
    missing: tuple[str, ...] = ()  # extra missing tokens for this column (e.g. "-1")
    optional: bool = False  # may be absent from a record without a warning (e.g. tertiary Gleason)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"column {self.name!r}: kind must be one of {KINDS}")
        if self.kind == "ordinal" and not self.order:
            raise ConfigError(f"column {self.name!r}: an ordinal column needs an 'order'")
        if self.kind == "categorical" and not self.categories:
            raise ConfigError(f"column {self.name!r}: a categorical column needs 'categories'")

    def expected(self) -> str:
        if self.kind == "numeric":
            return "a number"
        if self.kind == "binary":
            return f"one of {list(self.true)} / {list(self.false)}"
        if self.kind == "ordinal":
            return f"one of {list(self.order)}"
        return f"one of {list(self.categories)}"

    def feature_names(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{self.name}={c}" for c in self.categories]
        return [self.name]


@dataclass(frozen=True)
class Schema:
    """A clinical table's declaration: columns, missing tokens, labels, time unit, leaks."""

    name: str
    columns: tuple[Column, ...]
    time: str | None = None  # label column: follow-up time
    event: str | None = None  # label column: event indicator
    time_unit: str = "months"  # unit of the time column in the file
    output_unit: str = "months"  # unit of the ``time`` column produced
    missing: tuple[str, ...] = DEFAULT_MISSING
    leak: tuple[str, ...] = ()  # columns that reveal the label: never features
    ignore: tuple[str, ...] = ()  # known non-feature columns (ids, other endpoints)
    id: str | None = None  # id column in tables (CSV); JSON files use the file name

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def feature_names(self) -> list[str]:
        return [f for c in self.columns for f in c.feature_names()]

    def with_labels(self, event: str, time: str) -> Schema:
        """The same schema with another label pair (e.g. task 3 HG recurrence)."""
        return replace(self, event=event, time=time)


# ---------------------------------------------------------------------------- built-ins
_GLEASON = ("1", "2", "3", "4", "5")
TASK1 = Schema(
    name="chimera-task1",
    columns=(
        Column("age_at_prostatectomy", "numeric"),
        Column("primary_gleason", "ordinal", order=_GLEASON),
        Column("secondary_gleason", "ordinal", order=_GLEASON),
        Column("tertiary_gleason", "ordinal", order=_GLEASON, optional=True),  # often absent
        Column("ISUP", "ordinal", order=_GLEASON),
        Column("pre_operative_PSA", "numeric"),
        Column("pT_stage", "ordinal", order=("2", "2a", "2b", "2c", "3", "3a", "3b", "4")),
        Column("positive_lymph_nodes", "binary"),
        Column("capsular_penetration", "binary"),
        Column("positive_surgical_margins", "binary"),
        Column("invasion_seminal_vesicles", "binary"),
        Column("lymphovascular_invasion", "binary"),
        Column(
            "earlier_therapy",
            "categorical",
            categories=(
                "none",
                "radiotherapy",
                "hormones",
                "radiotherapy + hormones",
                "cryotherapy",
                "unknown",
            ),
        ),
    ),
    time="time_to_follow-up/BCR",
    event="BCR",
    time_unit="months",
    leak=("BCR_PSA",),
)

TASK3_LABELS = {"progression": "Time_to_prog_or_FUend", "HG_recur": "Time_to_HG_recur_or_FUend"}
TASK3 = Schema(
    name="chimera-task3",
    columns=(
        Column("age", "numeric"),
        Column("sex", "categorical", categories=("Male", "Female")),
        Column("smoking", "numeric", missing=("-1",)),
        Column("tumor", "categorical", categories=("Primary", "Recurrent")),
        Column("stage", "ordinal", order=("TaHG", "T1HG")),
        Column("substage", "categorical", categories=("T1m", "T1e"), optional=True),  # T1 only
        Column("grade", "ordinal", order=("G1", "G2", "G3")),
        Column("reTUR", "binary", missing=("-1",)),
        Column("LVI", "binary", missing=("-1",)),
        Column("variant", "categorical", categories=("UCC", "UCC + Variant")),
        Column("EORTC", "ordinal", order=("High risk", "Highest risk")),
        Column("no_instillations", "numeric", missing=("-1",)),
        Column("BRS", "categorical", categories=("BRS1", "BRS2", "BRS3")),
    ),
    time="Time_to_prog_or_FUend",
    event="progression",
    time_unit="months",
    missing=(*DEFAULT_MISSING, "-"),
)


def task3_schema(event: str = "progression", time: str | None = None) -> Schema:
    """Task 3 schema with the chosen label pair; the other endpoint's columns are leaks."""
    time = time or TASK3_LABELS.get(event)
    if time is None:
        raise ConfigError(f"unknown task 3 endpoint {event!r}; give its time column too")
    others = [c for pair in TASK3_LABELS.items() for c in pair if c not in (event, time)]
    return replace(TASK3.with_labels(event, time), leak=tuple(others))


# ---------------------------------------------------------------------------- schema I/O
def _texts(value: Any, where: str) -> tuple[str, ...]:
    """A schema list as text. A scalar is a list of one (``categories: ductal`` was read
    letter by letter); YAML reads an unquoted yes/no/on/off as a boolean, which became the
    token "True" that no value "yes" matched: refused, as the word meant cannot be known."""
    if value is None:  # ``missing:`` left empty
        return ()
    items = list(value) if isinstance(value, list | tuple) else [value]
    for v in items:
        if isinstance(v, bool):
            raise ConfigError(f"schema: {where}: {v} is how YAML reads an unquoted yes, no, on,"
                              " off, true or false; quote the word (\"yes\")")  # fmt: skip
    return tuple(str(v) for v in items)


def schema_from_dict(d: Mapping[str, Any]) -> Schema:
    """Build a Schema from a mapping (the YAML form; see ``load_schema``)."""
    if "columns" not in d or not isinstance(d["columns"], Mapping):
        raise ConfigError("schema: 'columns' must map column names to kinds")
    cols = []
    for name, spec in d["columns"].items():
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"schema: columns.{name} must be a kind or a mapping")
        # YAML 1.1 reads the keys true/false as booleans
        spec = {({True: "true", False: "false"}.get(k, k) if isinstance(k, bool) else k): v
                for k, v in spec.items()}  # fmt: skip
        unknown = set(spec) - {"kind", "order", "categories", "true", "false", "missing",
                               "optional"}  # fmt: skip
        if unknown:
            raise ConfigError(f"schema: columns.{name}: unknown keys {sorted(unknown)}")
        kw: dict[str, Any] = {"kind": spec.get("kind", "numeric")}
        for k in ("order", "categories", "true", "false", "missing"):
            if k in spec:
                kw[k] = _texts(spec[k], f"columns.{name}.{k}")
        if "optional" in spec:
            kw["optional"] = bool(spec["optional"])
        cols.append(Column(str(name), **kw))
    time, unit = d.get("time"), d.get("time_unit", "months")
    if isinstance(time, Mapping):
        time, unit = time.get("column"), time.get("unit", unit)
    schema = Schema(
        name=str(d.get("name", "generic")),
        columns=tuple(cols),
        time=time,
        event=d.get("event"),
        time_unit=str(unit),
        output_unit=str(d.get("output_unit", "months")),
        missing=_texts(d.get("missing", DEFAULT_MISSING), "missing"),
        leak=_texts(d.get("leak", ()), "leak"),
        ignore=_texts(d.get("ignore", ()), "ignore"),
        id=d.get("id"),
    )
    time_factor(schema.time_unit, schema.output_unit)  # validates both units
    return schema


def load_schema(path: str | Path) -> Schema:
    """Read a YAML schema, e.g.::

    name: my_cohort
    id: patient
    time: {column: os_days, unit: days}
    event: os_event
    output_unit: months
    missing: ["", "NA", "unknown"]
    leak: [relapse_psa]
    columns:
      age: numeric
      er: {kind: binary, true: [positive], false: [negative]}
      grade: {kind: ordinal, order: [1, 2, 3]}
      histology: {kind: categorical, categories: [ductal, lobular]}
      her2_low: {kind: binary, optional: true}  # may be absent from a record: no warning
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "schema file")
    try:
        return schema_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"schema file {path}: {exc}") from None


# ---------------------------------------------------------------------------- coercion
@dataclass
class _Ctx:
    """Where a value came from, and what to do with problems."""

    problems: list[Problem] | None
    collect_errors: bool = False
    paths: Mapping[str, str] = field(default_factory=dict)

    def error(self, exc: DataError) -> None:
        if self.collect_errors and self.problems is not None:
            self.problems.append(Problem("error", exc.reason, exc.path, exc.patient, exc.field))
            return
        raise exc

    def warn(self, reason: str, patient: str | None, fld: str | None) -> None:
        path = self.paths.get(patient) if patient is not None else None
        p = Problem("warning", reason, path, patient, fld)
        if self.problems is not None:
            self.problems.append(p)
        else:
            warnings.warn(str(p), stacklevel=4)


def _is_missing(value: Any, tokens: set[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return _key(value) in tokens


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _OutOfRange(ValueError):
    """A finite number that float32 features cannot hold (|x| > 3.4e38): it would become
    inf in the feature matrix and stop every prediction, so it is treated as missing."""


def _out_of_range(col: str, value: Any) -> str:
    return (f"value {value!r} is beyond the float32 range (|x| > {_FLOAT32_MAX:.3g}) that"
            f" features are stored in; {col} treated as missing")


def _blank(col: Column, value: Any, missing: set[str]) -> bool:
    """Whether ``value`` is a missing-value token (null, NaN, the schema's or column's)."""
    return _is_missing(value, missing | {_key(t) for t in col.missing})


def _coerce(col: Column, value: Any, missing: set[str]) -> tuple[Any, bool]:
    """(typed value | None, known): raises ValueError when the value cannot be typed
    (``_OutOfRange`` when it is a number too large for float32); ``known=False`` marks a
    well-formed but unknown category (a warning, not an error)."""
    if _blank(col, value, missing):
        return None, True
    if col.kind == "numeric":
        if isinstance(value, bool | np.bool_):
            raise ValueError
        try:
            out = float(str(value).strip()) if isinstance(value, str) else float(value)
        except OverflowError:  # an integer beyond any float (JSON integers have no limit)
            raise _OutOfRange from None
        if math.isinf(out):
            raise ValueError
        if abs(out) > _FLOAT32_MAX:
            raise _OutOfRange
        return out, True
    key = _key(value)
    if col.kind == "binary":
        if isinstance(value, bool | np.bool_):
            return float(value), True
        # the declared tokens first: with ``true: [2], false: [1]`` (R's coding) a JSON 1 is
        # false, as the text "1" of a CSV is; it was read as true, so every patient was 1
        if key in {_key(t) for t in col.true}:
            return 1.0, True
        if key in {_key(t) for t in col.false}:
            return 0.0, True
        if not isinstance(value, str) and key in ("0", "1"):  # typed 0/1
            return float(key), True
        raise ValueError
    levels = col.order if col.kind == "ordinal" else col.categories
    for lv in levels:
        if _key(lv) == key:
            return lv, True
    if col.kind == "ordinal":
        raise ValueError
    return None, False


def coerce_records(
    records: Mapping[str, Mapping[str, Any]],
    schema: Schema,
    problems: list[Problem] | None = None,
    paths: Mapping[str, str | Path] | None = None,
    collect_errors: bool = False,
    require_labels: bool = True,
) -> pd.DataFrame:
    """Type raw records (patient → {field: raw value}) with ``schema``.

    Returns a DataFrame indexed by ``patient`` with one column per schema column
    (numeric/binary: float64 with NaN; ordinal: ordered Categorical; categorical:
    Categorical over the schema categories) plus ``time`` (in ``schema.output_unit``)
    and ``event`` (bool) when the schema declares labels. A value that cannot be typed
    raises SchemaError naming file, patient, field, expected and found
    (``collect_errors=True`` records it in ``problems`` instead and leaves NaN); a
    missing label raises LabelError (or is collected, and that patient is dropped);
    ``require_labels=False`` (prediction) keeps such a patient with time NaN, and an
    unreadable label is a warning.
    Unknown categories and columns outside the schema are warnings; the schema's own leak
    columns are expected, so they are skipped without one (:func:`leak_notes` says so once).
    """
    ctx = _Ctx(problems, collect_errors, {k: str(v) for k, v in (paths or {}).items()})
    missing = {_key(t) for t in schema.missing}
    known = set(schema.names) | {schema.time, schema.event} | set(schema.ignore) - {None}
    has_labels = schema.time is not None and schema.event is not None
    factor = time_factor(schema.time_unit, schema.output_unit)
    rows: dict[str, dict[str, Any]] = {}
    absent: dict[str, list[str]] = {}  # column -> patients whose record lacks the key
    null_records: set[str] = set()  # patients whose record has no value for any column
    for pid, rec in records.items():
        pid = str(pid)
        path = ctx.paths.get(pid)
        row: dict[str, Any] = {}
        for col in schema.columns:
            if col.name not in rec and not col.optional:
                absent.setdefault(col.name, []).append(pid)
            raw = rec.get(col.name)
            try:
                value, ok = _coerce(col, raw, missing)
            except _OutOfRange:
                ctx.warn(_out_of_range(col.name, raw), pid, col.name)
                value, ok = None, True
            except (TypeError, ValueError):
                if ctx.collect_errors:  # kept, the value imputed: a warning, as for a category
                    ctx.warn(f"expected {col.expected()}; found {raw!r}; treated as missing",
                             pid, col.name)  # fmt: skip
                else:
                    ctx.error(SchemaError(f"expected {col.expected()}; found {raw!r}",
                                          path=path, patient=pid, field=col.name))  # fmt: skip
                value, ok = None, True
            if not ok:
                ctx.warn(f"unknown category {raw!r} (expected {col.expected()}); treated as"
                         " missing", pid, col.name)  # fmt: skip
            row[col.name] = value
        required = [c for c in schema.columns if not c.optional]
        if rec and required and all(_blank(c, rec.get(c.name), missing) for c in required):
            # a record of nulls says no more than ``{}``: warned about the same way
            null_records.add(pid)
            for c in required:
                if c.name in rec:
                    absent.setdefault(c.name, []).append(pid)
        for name in rec:
            if name not in known and name not in schema.leak:
                ctx.warn("column not in the schema; ignored", pid, name)
        if has_labels:
            t_raw, e_raw = rec.get(schema.time), rec.get(schema.event)
            try:
                if _is_missing(t_raw, missing) or _is_missing(e_raw, missing):
                    which = schema.time if _is_missing(t_raw, missing) else schema.event
                    raise LabelError("patient without label", path=path, patient=pid,
                                     field=which)  # fmt: skip
                try:
                    if isinstance(t_raw, bool | np.bool_):  # true is not a duration
                        raise TypeError
                    t = float(t_raw) * factor
                except OverflowError:  # a huge integer: refused as infinite just below
                    t = math.inf
                except (TypeError, ValueError):
                    raise LabelError(f"expected a number; found {t_raw!r}", path=path,
                                     patient=pid, field=schema.time) from None  # fmt: skip
                if not math.isfinite(t) or t <= 0:
                    raise LabelError(f"follow-up time must be finite and > 0; found {t_raw!r}",
                                     path=path, patient=pid, field=schema.time)  # fmt: skip
                try:
                    if isinstance(e_raw, list | tuple | np.ndarray):  # [1] is not an event
                        raise LabelError("not a single value")
                    ev = bool(coerce_events([e_raw])[0])
                except LabelError:
                    # R's Surv() codes 1 = censored, 2 = event: said, as every 1 of such a
                    # column is read as an event (the hint ``coerce_events`` gives was lost)
                    hint = (" (R's coding 1 = censored, 2 = event? then its 1s are not events:"
                            " recode the column 0/1)") if _key(e_raw) == "2" else ""  # fmt: skip
                    raise LabelError(f"expected 0/1; found {e_raw!r}{hint}", path=path,
                                     patient=pid, field=schema.event) from None  # fmt: skip
            except LabelError as exc:
                if require_labels:
                    ctx.error(exc)
                    continue
                if not (_is_missing(t_raw, missing) and _is_missing(e_raw, missing)):
                    ctx.warn(f"{exc.reason}; the label is ignored (not needed here)", pid,
                             exc.field or schema.time)  # fmt: skip
                t, ev = math.nan, False
            row["time"], row["event"] = t, ev
        rows[pid] = row
    for name, pids in absent.items():  # one line a field, not one a patient
        how = "absent or null in" if null_records.intersection(pids) else "absent from"
        ctx.warn(f"field {how} {len(pids)} of {len(records)} record(s) (e.g."
                 f" {', '.join(pids[:3])}): treated as missing, imputed on each training part",
                 None, name)  # fmt: skip
    return _frame(rows, schema, has_labels)


def leak_notes(records: Mapping[str, Mapping[str, Any]], schema: Schema,
               path: str | Path | None = None) -> list[Problem]:  # fmt: skip
    """One ``note`` per leak column of ``schema`` that some record holds, with how many.

    Why: the label-leak columns a schema declares are in every real record (CHIMERA's
    ``BCR_PSA``), so a warning per patient made ``--strict`` refuse all real data; the
    user is still told, once, that the column is there and never used."""
    out = []
    for name in schema.leak:
        n = sum(name in rec for rec in records.values())
        if n:
            out.append(Problem("note", f"declared label-leak column, present in {n} of"
                               f" {len(records)} record(s), never used as a feature",
                               None if path is None else str(path), None, name))  # fmt: skip
    return out


def _frame(rows: dict[str, dict[str, Any]], schema: Schema, labels: bool) -> pd.DataFrame:
    index = pd.Index(list(rows), name="patient", dtype=object)
    data: dict[str, Any] = {}
    for col in schema.columns:
        vals = [rows[p][col.name] for p in rows]
        if col.kind in ("numeric", "binary"):
            data[col.name] = np.array([np.nan if v is None else v for v in vals], dtype=float)
        else:
            levels = list(col.order if col.kind == "ordinal" else col.categories)
            data[col.name] = pd.Categorical(vals, categories=levels,
                                            ordered=col.kind == "ordinal")  # fmt: skip
    if labels:
        data["time"] = np.array([rows[p]["time"] for p in rows], dtype=np.float64)
        data["event"] = np.array([rows[p]["event"] for p in rows], dtype=bool)
    return pd.DataFrame(data, index=index)


# ---------------------------------------------------------------------------- readers
def read_json_file(path: str | Path, patient: str | None = None, unique_keys: bool = False
                   ) -> Any:  # fmt: skip
    """json.load with a DataError naming the file on absence or corruption.

    ``unique_keys``: a key written twice in one object with different values is an error
    naming it (``json.load`` would keep the last one silently, e.g. a second ``BCR``)."""
    path = Path(path)
    hook = _unique_pairs(path, patient) if unique_keys else None
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=hook)
    except FileNotFoundError:
        raise DataError("file not found", path=path, patient=patient) from None
    except DataError:  # a repeated key (the hook's): already names file and field
        raise
    except OSError as exc:  # a folder named *.json, no permission
        raise DataError(f"cannot read the file: {exc.strerror or exc}", path=path,
                        patient=patient) from None  # fmt: skip
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise DataError(f"corrupt JSON: {exc}", path=path, patient=patient) from None


def _unique_pairs(path: Path, patient: str | None) -> Any:
    """An ``object_pairs_hook`` refusing a key repeated with another value."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out and out[k] != v and not (_is_nan(out[k]) and _is_nan(v)):
                raise DataError(f"key written twice with different values ({out[k]!r} and"
                                f" {v!r}); which one is meant?", path=path, patient=patient,
                                field=k)  # fmt: skip
            out[k] = v
        return out

    return hook


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def json_records(
    files: Mapping[str, Path], problems: list[Problem] | None, collect: bool
) -> dict[str, dict[str, Any]]:
    """patient → its JSON record; with ``collect`` an unreadable file is a problem (the
    patient is left out) instead of an error."""
    out: dict[str, dict[str, Any]] = {}
    for pid, path in files.items():
        try:
            rec = read_json_file(path, pid, unique_keys=True)
            if not isinstance(rec, Mapping):
                raise DataError("expected a JSON object of field → value", path=path,
                                patient=pid)  # fmt: skip
        except DataError as exc:
            if collect and problems is not None:
                problems.append(Problem("error", exc.reason, exc.path, exc.patient, exc.field))
                continue
            raise
        out[pid] = dict(rec)
    return out


def _files(source: str | Path | Iterable[str | Path], pattern: str, suffix: str
           ) -> dict[str, Path]:  # fmt: skip
    if isinstance(source, str | Path):
        root = Path(source)
        if root.is_file():
            paths = [root]
        elif root.is_dir():
            paths = sorted(root.glob(pattern)) or sorted(root.glob(f"*{suffix}"))
        else:
            raise DataError("clinical data path does not exist", path=root)
    else:
        paths = [Path(p) for p in source]
    out: dict[str, Path] = {}
    for p in paths:
        pid = p.name[: -len(suffix)] if p.name.endswith(suffix) else p.stem
        if pid in out:
            raise DataError(f"duplicate case id (also {out[pid]})", path=p, patient=pid)
        out[pid] = p
    return out


def read_task1(
    source: str | Path | Iterable[str | Path],
    problems: list[Problem] | None = None,
    schema: Schema = TASK1,
) -> pd.DataFrame:
    """CHIMERA task 1: ``clinical_data/{case}.json`` files (a root, the folder, or paths)."""
    files = _files(source, "clinical_data/*.json", ".json")
    return coerce_records(json_records(files, problems, False), schema, problems, files)


def read_task3(
    source: str | Path | Iterable[str | Path],
    problems: list[Problem] | None = None,
    event: str = "progression",
    time: str | None = None,
) -> pd.DataFrame:
    """CHIMERA task 3: ``data/{pid}/{pid}_CD.json`` files; the label pair is selectable
    (``event="HG_recur"`` uses ``Time_to_HG_recur_or_FUend``)."""
    files = _files(source, "data/*/*_CD.json", "_CD.json")
    schema = task3_schema(event, time)
    return coerce_records(json_records(files, problems, False), schema, problems, files)


def read_generic(
    path: str | Path, schema: Schema | str | Path, problems: list[Problem] | None = None
) -> pd.DataFrame:
    """A CSV (one row per patient, id in ``schema.id`` or the first column) or a JSON
    file (a list of records with the id field, or an object id → record)."""
    if not isinstance(schema, Schema):
        schema = load_schema(schema)
    path = Path(path)
    if not path.is_file():
        raise DataError("clinical file not found", path=path)
    records: dict[str, dict[str, Any]] = {}
    if path.suffix.lower() == ".json":
        raw = read_json_file(path, unique_keys=True)  # an id twice: not the last silently
        if isinstance(raw, Mapping):
            items = [(str(k), v) for k, v in raw.items()]
        elif isinstance(raw, list):
            idf = schema.id or "patient"
            items = []
            for i, r in enumerate(raw):
                if not isinstance(r, Mapping) or idf not in r:
                    raise DataError(f"record {i} has no id field {idf!r}", path=path, field=idf)
                items.append((str(r[idf]), {k: v for k, v in r.items() if k != idf}))
        else:
            raise DataError("expected a JSON list of records or an object id → record",
                            path=path)  # fmt: skip
    else:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python",
                             encoding="utf-8-sig")  # a BOM would stick to the first header
        except Exception as exc:
            raise DataError(f"cannot read CSV: {exc}", path=path) from None
        # "pid, age, t" (a space after each comma): the header " age" matched no schema
        # column, and an id "002 " no patient of the manifest
        df.columns = [str(c).strip() for c in df.columns]
        twice = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
        if twice:
            raise DataError(f"column named twice in the header: {twice}", path=path,
                            field=twice[0])  # fmt: skip
        idf = schema.id or df.columns[0]
        if idf not in df.columns:
            raise DataError(f"no id column {idf!r}; columns: {list(df.columns)}", path=path)
        items = [(str(r[idf]).strip(), {k: v for k, v in r.items() if k != idf})
                 for r in df.to_dict("records")]  # fmt: skip
    for pid, rec in items:
        if pid in records:
            raise DataError("duplicate case id", path=path, patient=pid)
        if not isinstance(rec, Mapping):
            raise DataError("a record must be an object of field → value", path=path,
                            patient=pid)  # fmt: skip
        records[pid] = dict(rec)
    return coerce_records(records, schema, problems, dict.fromkeys(records, path))


# ---------------------------------------------------------------------------- numbers
def _typed_binary(values: pd.Series) -> bool:
    """A float column of 0/1/NaN only: a binary column as ``coerce_records`` types it."""
    return values.dtype.kind == "f" and bool(values.dropna().isin([0.0, 1.0]).all())


def clinical_to_matrix(
    df: pd.DataFrame, schema: Schema, problems: list[Problem] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Typed (or raw) clinical table → (X float32 N × F with NaN, feature names).

    Ordinal → 0-based rank in ``order``; binary → 0/1; categorical → one 0/1 column
    ``name=category`` per schema category (all NaN when the value is missing or an
    unknown category, which is reported as a warning). A column absent from ``df`` is
    all NaN (and reported). Nothing here is fitted: the vocabulary is the schema's.
    """
    n = len(df)
    ctx = _Ctx(problems)
    missing = {_key(t) for t in schema.missing}
    blocks: list[np.ndarray] = []
    ids = [str(i) for i in df.index]
    for col in schema.columns:
        width = len(col.categories) if col.kind == "categorical" else 1
        block = np.full((n, width), np.nan, dtype=np.float64)
        if col.name not in df.columns:
            ctx.warn("column missing from the table; all values NaN", None, col.name)
            blocks.append(block)
            continue
        if col.kind == "binary" and _typed_binary(df[col.name]):
            # ``coerce_records``' 0/1: already typed, not to be read again through tokens
            # (with ``false: [1]`` its 1.0, true, would turn into 0)
            block[:, 0] = df[col.name].to_numpy(dtype=np.float64)
            blocks.append(block)
            continue
        values = df[col.name].tolist()
        for i, v in enumerate(values):
            try:
                value, ok = _coerce(col, v, missing)
            except _OutOfRange:
                ctx.warn(_out_of_range(col.name, v), ids[i], col.name)
                continue
            except (TypeError, ValueError):
                raise SchemaError(f"expected {col.expected()}; found {v!r}", patient=ids[i],
                                  field=col.name) from None  # fmt: skip
            if not ok:
                ctx.warn(f"unknown category {v!r}; encoded as missing", ids[i], col.name)
            if value is None:
                continue
            if col.kind in ("numeric", "binary"):
                block[i, 0] = value
            elif col.kind == "ordinal":
                block[i, 0] = col.order.index(value)
            else:
                block[i, :] = 0.0
                block[i, col.categories.index(value)] = 1.0
        blocks.append(block)
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    return x.astype(np.float32), schema.feature_names()


__all__: Sequence[str] = (
    "TASK1", "TASK3", "TASK3_LABELS", "Column", "Schema", "clinical_to_matrix",
    "coerce_records", "load_schema", "read_generic",
    "read_json_file", "read_task1", "read_task3", "schema_from_dict", "task3_schema",
    "time_factor",
)  # fmt: skip
