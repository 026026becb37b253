"""A generic cohort manifest (CSV) for data that does not follow the CHIMERA layout.

One row per patient. Required columns: ``patient``, ``time`` (> 0), ``event`` (0/1).
Path columns, one per modality, are named ``{modality}_path`` (e.g. ``wsi_path``,
``mri_path``, ``rna_path``), or named explicitly with ``modalities=[...]``; an empty cell
means the modality is absent for that patient. Relative paths are resolved against the
manifest's folder. Optional ``site``; every other column is an extra clinical variable
(numeric as is; text one-hot encoded as ``name=category``).

Feature files: ``.h5`` (TRIDENT/CLAM ``features`` [+ ``coords``]), ``.pt`` / ``.npy``
embeddings, or ``{pid}_RNA.json`` gene → value profiles.

Validation looks at every row and reports *all* problems at once (``scan_manifest``), so
a user fixes the file in one go instead of one error per run.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort, coerce_events, stack_patients
from modalsurv.errors import DataError, DataWarning, FeatureError, LabelError, LayoutError, Problem
from modalsurv.io import rnaseq
from modalsurv.io.feature_files import load_feature_file, tile_subset
from modalsurv.io.store import FeatureStore

REQUIRED = ("patient", "time", "event")
RESERVED = (*REQUIRED, "site")
PATH_SUFFIX = "_path"
FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt", ".pth", ".npy")
RNA_SUFFIXES = (".json",)


@dataclass
class Manifest:
    """A validated manifest: labels + extras (``table``) and resolved ``paths``."""

    path: Path
    table: pd.DataFrame  # index patient; time, event, [site], extra clinical columns
    paths: pd.DataFrame  # index patient; one column per modality; Path or None
    clinical_columns: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # warnings only

    @property
    def modalities(self) -> list[str]:
        return list(self.paths.columns)

    @property
    def patients(self) -> list[str]:
        return [str(p) for p in self.table.index]

    def labels(self) -> pd.DataFrame:
        """patient-indexed ``time``, ``event`` [, ``site``] as store_read.cohort_from_store takes."""
        cols = [c for c in ("time", "event", "site") if c in self.table.columns]
        return self.table[cols]


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text, indexed by line number (what a message names: pandas would skip
    blank lines and shift every later number); rows of empty cells (a spreadsheet's
    ``,,,`` tail) dropped. A row with more fields than the header is a parse error, not a
    silently shifted row (pandas would take the extra first field as an index)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                         index_col=False, skip_blank_lines=False, sep=_delimiter(path),
                         encoding="utf-8-sig")  # fmt: skip
    df.index = df.index + 2  # 1-based, after the header
    return df[(df.apply(lambda c: c.str.strip()) != "").any(axis=1)]


def _delimiter(path: Path) -> str:
    """``;`` when the header has semicolons and no comma (a spreadsheet saving CSV in a
    locale whose decimal mark is a comma), else ``,``."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        first = fh.readline()
    return ";" if ";" in first and "," not in first else ","


def _path_columns(columns: Sequence[str], modalities: Sequence[str] | None) -> dict[str, str]:
    """modality → column name."""
    if modalities is None:
        return {
            c[: -len(PATH_SUFFIX)]: c
            for c in columns
            if c.endswith(PATH_SUFFIX) and len(c) > len(PATH_SUFFIX)
        }
    out = {}
    for m in modalities:
        out[m] = f"{m}{PATH_SUFFIX}" if f"{m}{PATH_SUFFIX}" in columns else m
    return out


def _resolve(base: Path, cell: str) -> Path:
    p = Path(cell).expanduser()
    return p if p.is_absolute() else base / p


def scan_manifest(path: str | Path, modalities: Sequence[str] | None = None) -> list[Problem]:
    """Every problem in the manifest (errors and warnings), each naming path/patient/field.

    When the table itself has no error, every file it names is also read as a run would
    read it (contents, shapes, a bag among vectors, non-numbers in RNA profiles, non-finite
    features); the first file that cannot be used is an error."""
    scanned = _scan(Path(path), modalities)
    problems = scanned[0]
    if scanned[1] is not None and not any(p.severity == "error" for p in problems):
        try:
            manifest_to_cohort(_build(Path(path), *scanned), modalities=modalities)
        except DataError as exc:
            problems.append(Problem("error", exc.reason, exc.path or str(path), exc.patient,
                                    exc.field))  # fmt: skip
    return problems


Scanned = tuple[list[Problem], pd.DataFrame | None, dict[str, str], dict[str, pd.Series]]


def _scan(path: Path, modalities: Sequence[str] | None) -> Scanned:
    """(every problem, the table as text, modality → path column, the extra columns as the
    model reads them: :func:`_clean_clinical`)."""
    problems: list[Problem] = []

    def err(reason: str, patient: str | None = None, fld: str | None = None) -> None:
        problems.append(Problem("error", reason, str(path), patient, fld))

    if not path.is_file():
        err("manifest file not found")
        return problems, None, {}, {}
    try:
        df = _read_csv(path)
    except UnicodeDecodeError as exc:
        err(f"cannot read the CSV: not UTF-8 text ({exc}); save it as UTF-8")
        return problems, None, {}, {}
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError,
            ValueError) as exc:  # fmt: skip
        err(f"cannot parse the CSV (a value with a comma must be quoted): {exc}")
        return problems, None, {}, {}
    df.columns = [str(c).strip() for c in df.columns]
    header = _header(path)
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:  # pandas would rename the second one and read it as a clinical column
        err(f"duplicated column name(s) {dup}: each column must be named once", fld=dup[0])
        return problems, None, {}, {}
    for col in REQUIRED:
        if col not in df.columns:
            err(f"missing required column {col!r} (columns: {list(df.columns)})", fld=col)
    cols = _path_columns(list(df.columns), modalities)
    for m, c in cols.items():
        if c not in df.columns:
            err(f"no path column for modality {m!r} (expected {c!r})", fld=m)
    cols = {m: c for m, c in cols.items() if c in df.columns}
    if "patient" not in df.columns:
        return problems, None, cols, {}
    if df.empty:  # a header alone would read as a cohort of no one
        err("no patient rows: the manifest has a header but no data")
        return problems, None, cols, {}
    if not cols:
        problems.append(
            Problem(
                "warning",
                f"no modality path columns (named '*{PATH_SUFFIX}'); only extra columns"
                " will be used",
                str(path),
            )
        )
    base = path.parent
    seen: dict[str, int] = {}
    for i, row in df.iterrows():
        line = int(i)  # _read_csv indexes rows by line number
        pid = str(row["patient"]).strip()
        if not pid:
            err(f"row {line}: empty patient id", fld="patient")
            continue
        if pid in seen:
            err(f"row {line}: duplicate patient (first on row {seen[pid]})", pid, "patient")
        else:
            seen[pid] = line
        if "time" in df.columns:
            raw = str(row["time"]).strip()
            try:
                t = float(raw)
            except ValueError:
                t = math.nan
            if not raw:
                err(f"row {line}: missing follow-up time", pid, "time")
            elif not math.isfinite(t) or t <= 0:
                err(f"row {line}: time must be a number > 0; found {raw!r}", pid, "time")
        if "event" in df.columns:
            raw = str(row["event"]).strip()
            if not raw:
                err(f"row {line}: missing event", pid, "event")
            else:
                try:
                    coerce_events([raw], [pid])
                except LabelError as exc:
                    err(f"row {line}: {exc.reason}", pid, "event")
        n_files = 0
        for m, c in cols.items():
            cell = str(row[c]).strip()
            if not cell:
                continue
            n_files += 1
            p = _resolve(base, cell)
            if p.suffix.lower() not in FEATURE_SUFFIXES + RNA_SUFFIXES:
                err(
                    f"row {line}: unsupported file type {p.suffix!r} ({p}); expected one of"
                    f" {FEATURE_SUFFIXES + RNA_SUFFIXES}",
                    pid,
                    m,
                )
            elif not p.is_file():
                err(f"row {line}: file not found: {p}", pid, m)
        if cols and n_files == 0:
            problems.append(
                Problem("warning", f"row {line}: no modality file", str(path), pid, "paths")
            )
    extra = [c for c in df.columns if c not in RESERVED and c not in cols.values()]
    return problems, df, cols, _clean_clinical(df, extra, path, problems)


def _header(path: Path) -> list[str]:
    """The header's column names as written (stripped, a UTF-8 BOM dropped)."""
    import csv

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return [c.strip() for c in next(csv.reader(fh, delimiter=_delimiter(path)), [])]


#: cells that mean "not recorded" in an extra (clinical) column, compared case-insensitively
MISSING = ("", "na", "n/a", "nan", "null", "none", "missing", "-", "?", ".")
#: a column whose values are at least this share numbers is numeric (the rest: missing)
NUMERIC_SHARE = 0.8
#: a text column with more distinct values than this (and mostly unique) is flagged
MANY_LEVELS = 20


def _clean_clinical(df: pd.DataFrame, columns: Sequence[str], path: Path,
                    problems: list[Problem]) -> dict[str, pd.Series]:  # fmt: skip
    """Each extra column as the model will read it: missing markers → NaN; a column of
    mostly numbers (``NUMERIC_SHARE``) is numeric, its other cells (a unit, a thousands
    comma, inf) missing with a warning naming row, patient and column, instead of turning
    the whole column into one category per value; a text column of very many distinct
    values (an identifier or free text?) is flagged."""
    out = {}
    ids = df["patient"].astype(str).str.strip() if "patient" in df.columns else None
    for c in columns:
        col = df[c].astype(str).str.strip()
        col = col.mask(col.str.lower().isin(MISSING))
        given = col.notna()
        num = pd.to_numeric(col, errors="coerce")
        num = num.where(np.isfinite(num))
        numeric = given.any() and (num.notna() & given).sum() >= NUMERIC_SHARE * given.sum()
        if numeric:
            for i in np.flatnonzero(given & num.isna()):
                problems.append(Problem(
                    "warning", f"row {df.index[i]}: {col.iloc[i]!r} is not a finite number in the"
                    f" numeric column {c!r}; treated as missing", str(path),
                    None if ids is None else ids.iloc[i], c))  # fmt: skip
            out[c] = num.astype(object).where(num.notna(), np.nan)
            continue
        col = _fold_case(col, c, path, problems)
        levels = col.dropna().nunique()
        if levels > MANY_LEVELS and levels > 0.5 * given.sum():
            problems.append(Problem(
                "warning", f"text column {c!r} has {levels} distinct values over"
                f" {int(given.sum())} patients: one-hot into {levels} columns (an identifier"
                " or free text? drop it from the manifest if so)", str(path), None, c))  # fmt: skip
        out[c] = col.where(given, np.nan)
    return out


def _fold_case(col: pd.Series, name: str, path: Path, problems: list[Problem]) -> pd.Series:
    """Text levels that differ only in case ("low" / "Low") as one level, spelled as most
    cells spell it (ties: the first met), with a warning naming the column and spellings.
    Why: one-hot would give each spelling its own column, splitting one category's
    patients; a CHIMERA clinical schema already matches categories case-insensitively."""
    given = col.dropna()
    rename = {}
    for _, spelled in given.groupby(given.str.casefold(), sort=True):
        order = list(dict.fromkeys(spelled))
        if len(order) < 2:
            continue
        counts = spelled.value_counts()
        keep = max(order, key=lambda v: (counts[v], -order.index(v)))
        rename.update({v: keep for v in order if v != keep})
        problems.append(Problem(
            "warning", f"text column {name!r}: {order} differ only in case; read as"
            f" {keep!r}", str(path), None, name))  # fmt: skip
    return col.replace(rename) if rename else col


def read_manifest(path: str | Path, modalities: Sequence[str] | None = None) -> Manifest:
    """Read and validate a manifest; raise LayoutError listing *every* error found."""
    path = Path(path).resolve()
    scanned = _scan(path, modalities)
    errors = [p for p in scanned[0] if p.severity == "error"]
    if errors or scanned[1] is None:
        lines = "\n".join(f"  - {p.to_error()}" for p in errors)
        raise LayoutError(f"{len(errors)} problem(s) in the manifest:\n{lines}", path=path)
    return _build(path, *scanned)


def _build(path: Path, problems: list[Problem], df: pd.DataFrame | None, cols: dict[str, str],
           clinical: dict[str, pd.Series]) -> Manifest:  # fmt: skip
    """The Manifest of a scan without errors."""
    assert df is not None
    df = df.copy()
    df["patient"] = df["patient"].str.strip()
    df = df.set_index("patient")
    table = pd.DataFrame(index=df.index)
    table["time"] = df["time"].astype(float)
    table["event"] = coerce_events(df["event"].str.strip().to_list(), df.index.to_list())
    if "site" in df.columns:
        table["site"] = df["site"].str.strip()
    for c, values in clinical.items():
        table[c] = values.to_numpy()
    base = path.parent
    paths = pd.DataFrame(
        {
            m: [_resolve(base, v.strip()) if v.strip() else None for v in df[c]]
            for m, c in cols.items()
        },
        index=df.index,
        dtype=object,
    )
    return Manifest(path, table, paths, list(clinical),
                    [p for p in problems if p.severity != "error"])  # fmt: skip


# ---------------------------------------------------------------------------- cohort
def clinical_matrix(table: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Extra columns → float32 matrix with NaN; numeric columns as is, text columns one-hot
    (``name=category``, categories sorted; NaN where the value is missing)."""
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for c in columns:
        col = table[c]
        num = pd.to_numeric(col, errors="coerce")
        if (num.notna() | col.isna()).all():
            blocks.append(num.to_numpy(dtype=np.float32)[:, None])
            names.append(c)
            continue
        cats = sorted(col.dropna().unique())
        onehot = np.stack([(col == v).to_numpy(dtype=np.float32) for v in cats], axis=1)
        onehot[col.isna().to_numpy()] = np.nan
        blocks.append(onehot)
        names.extend(f"{c}={v}" for v in cats)
    n = len(table)
    x = np.hstack(blocks) if blocks else np.zeros((n, 0), dtype=np.float32)
    return x.astype(np.float32), names


def _load_direct(
    ids: Sequence[str],
    files: Sequence[Path | None],
    modality: str,
    max_tiles: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Load per-patient files into dense arrays without a store. The files must agree in
    kind (vector or bag) and width; one that does not is named against the majority, so
    an odd first file is not taken for the reference and a good one blamed."""
    read: list[tuple[str, Path, np.ndarray] | None] = []
    for pid, f in zip(ids, files):
        read.append(None if f is None else (pid, f, load_feature_file(f, pid)[0]))
    shape_of = {id(r): ("vector" if r[2].ndim == 1 else "bag", r[2].shape[-1])
                for r in read if r is not None}  # fmt: skip
    counts = Counter(shape_of.values())
    kind, dim = counts.most_common(1)[0][0] if counts else ("vector", 0)
    loaded: list[np.ndarray | None] = []
    for r in read:
        if r is None:
            loaded.append(None)
            continue
        pid, f, x = r
        if shape_of[id(r)] != (kind, dim):
            raise FeatureError(
                f"shape {x.shape} does not match the other files ({counts[(kind, dim)]} of"
                f" {len(shape_of)} are a {kind} of dim {dim})",
                path=f,
                patient=pid,
                field=modality,
            )
        # what the Cohort would refuse, refused here where the file can be named
        if kind == "bag" and x.shape[0] == 0:
            raise FeatureError(f"a bag with no tile (shape {x.shape}): leave the cell empty for a"
                               " patient without this modality", path=f, patient=pid,
                               field=modality)  # fmt: skip
        with np.errstate(over="ignore"):
            if np.isinf(x.astype(np.float32)).any():
                raise FeatureError("features contain +/-inf (or values beyond float32)", path=f,
                                   patient=pid, field=modality)  # fmt: skip
        if kind == "bag" and max_tiles is not None and x.shape[0] > max_tiles:
            x = x[tile_subset(pid, x.shape[0], max_tiles, seed)]
        loaded.append(x)
    return stack_patients(loaded, int(dim or 0), bag=kind == "bag")


def _align_profiles(profiles: list[pd.Series], files: dict[str, Path], modality: str,
                    how: str) -> pd.DataFrame:  # fmt: skip
    """genes × patients of the RNA profiles; a patient lacking genes others have is warned
    about (DataWarning naming patient, file and genes), never silently changed.

    ``how="union"`` (the default): the gene is NaN for that patient only, imputed from the
    training data, so one incomplete file neither costs every patient the gene nor makes
    a fitted model refuse the whole cohort. ``"intersection"``: the gene is dropped for
    everyone. Patients sharing no gene at all is an error in both (gene naming differs).
    """
    frame, _ = rnaseq.align_genes(profiles, how=how)  # type: ignore[arg-type]
    genes = [set(map(str, s.index)) for s in profiles]
    union = set().union(*genes)
    if len(profiles) > 1 and not set.intersection(*genes):
        raise FeatureError("the patients' RNA profiles share no gene; check the gene naming"
                           " (symbols vs Ensembl ids)", field=modality)  # fmt: skip
    effect = "imputed as missing" if how == "union" else "dropped for every patient"
    for s, have in zip(profiles, genes):
        lacking = sorted(union - have)
        if lacking:
            pid = str(s.name)
            few = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5
                                            else "")  # fmt: skip
            warnings.warn(f"patient {pid!r}, field {modality!r}: {len(lacking)} gene(s) other"
                          f" patients have are absent from {files[pid]} ({few}); {effect}",
                          DataWarning, stacklevel=3)  # fmt: skip
    return frame


def manifest_to_cohort(
    manifest: Manifest,
    store: FeatureStore | str | Path | None = None,
    modalities: Sequence[str] | None = None,
    max_tiles: int | None = None,
    seed: int = 0,
    rna_how: str = "union",
    clinical: bool = True,
) -> Cohort:
    """Build a Cohort from a manifest.

    Embedding files are loaded directly, or, with a ``store``, imported into it first
    (only patients the store does not have yet, in one batch per modality) and read back
    from it, so the next run reads the fast store instead of thousands of small files.
    RNA JSON profiles are aligned with ``rnaseq.align_genes`` on the union of their genes
    (``rna_how``; a gene absent for one patient is NaN there, with a warning: see
    :func:`_align_profiles`). Extra manifest columns become the ``clinical`` modality
    (when ``clinical`` is true; text categories one-hot ``name=category``, matched to the
    fitted model's categories by name at prediction); ``site`` goes to meta.
    """
    if isinstance(store, str | Path):
        store = FeatureStore(store)
    ids = manifest.patients
    mods = list(modalities) if modalities is not None else manifest.modalities
    feats, present, masks, names = {}, {}, {}, {}
    for m in mods:
        if m not in manifest.paths.columns:
            raise LayoutError(
                f"modality {m!r} has no path column; available: {manifest.modalities}",
                path=manifest.path,
                field=m,
            )
        files = list(manifest.paths[m])
        given = [(pid, f) for pid, f in zip(ids, files) if f is not None]
        if not given:
            raise LayoutError(
                f"modality {m!r} has no file for any patient", path=manifest.path, field=m
            )
        kinds = {f.suffix.lower() in RNA_SUFFIXES for _, f in given}
        if len(kinds) > 1:  # name a file of the minority kind: that is the odd one out
            rna_rows = [(pid, f) for pid, f in given if f.suffix.lower() in RNA_SUFFIXES]
            other = [(pid, f) for pid, f in given if f.suffix.lower() not in RNA_SUFFIXES]
            pid, odd = min(rna_rows, other, key=len)[0]
            raise LayoutError(f"modality {m!r} mixes RNA JSON profiles ({len(rna_rows)}) with"
                              f" feature files ({len(other)}): one kind of file per column",
                              path=odd, patient=pid, field=m)  # fmt: skip
        if given and all(f.suffix.lower() in RNA_SUFFIXES for _, f in given):
            profiles = [rnaseq.read_rna_json(f, pid) for pid, f in given]
            frame = _align_profiles(profiles, dict(given), m, rna_how)
            feats[m], present[m], names[m] = rnaseq.to_features(frame, ids)
            continue
        if store is not None:
            done = set(store.patients(m))  # one file open, not one per patient
            todo = {pid: f for pid, f in given if pid not in done}
            if todo:
                store.import_files(m, todo)
            lm = store.load(m, ids, max_tiles=max_tiles, seed=seed)
            # the store may hold patients the manifest leaves empty: the manifest decides
            listed = np.array([f is not None for f in files], dtype=bool)
            feats[m], present[m] = lm.x, lm.present & listed
            if lm.mask is not None:
                masks[m] = lm.mask & listed[:, None]
        else:
            feats[m], present[m], mk = _load_direct(ids, files, m, max_tiles, seed)
            if mk is not None:
                masks[m] = mk
    if clinical and manifest.clinical_columns:
        if "clinical" in feats:
            raise LayoutError(
                "both a 'clinical' path column and extra clinical columns; rename one",
                path=manifest.path,
                field="clinical",
            )
        x, cn = clinical_matrix(manifest.table, manifest.clinical_columns)
        feats["clinical"], names["clinical"] = x, cn
        present["clinical"] = ~np.isnan(x).all(axis=1)
    table = manifest.table
    return Cohort(
        ids,
        table["time"].to_numpy(),
        table["event"].to_numpy(),
        features=feats,
        present=present,
        meta=table.drop(columns=["time", "event"]),
        bag_mask=masks,
        feature_names=names,
    )
