"""RNA-seq input: gene → value JSON files and TSV/CSV matrices → genes × patients.

CHIMERA ships one ``{pid}_RNA.json`` per patient (a JSON object of ~19,000 genes; values
are numbers or numeric strings). Gene sets can differ between patients or files, so
alignment is explicit: ``align_genes`` keeps the intersection (or the union, filling
NaN) and returns a report of what was dropped, filled and collapsed, never silently;
``shared_genes`` (the CHIMERA readers' rule) keeps the genes most patients have, so one odd
file cannot shrink everyone's RNA.
This module reads and aligns; it learns nothing (log1p, gene selection and PCA are
``train.transforms.RnaTransform``, fitted on training rows only).
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from modalsurv.errors import DataError

RNA_SUFFIX = "_RNA.json"
_GENE_HEADERS = {"gene", "genes", "gene_id", "gene_name", "gene_symbol", "symbol", "hgnc_symbol",
                 "ensembl", "ensembl_id", "ensembl_gene_id", "feature"}  # fmt: skip
_PATIENT_HEADERS = {"patient", "patient_id", "pid", "sample", "sample_id", "case", "case_id",
                    "id", "barcode"}  # fmt: skip
_DUPLICATE_RULES = ("mean", "first", "sum", "error")
# text read as a missing value (R writes NA, also in JSON: jsonlite's default for numbers)
_MISSING_TEXT = ("NA", "NaN", "nan", "NULL", "null", "None")


def patient_from_path(path: str | Path) -> str:
    """``.../2A_001_RNA.json`` → ``2A_001``; other names → the file stem."""
    name = Path(path).name
    return name[: -len(RNA_SUFFIX)] if name.endswith(RNA_SUFFIX) else Path(path).stem


def _number(value: Any, path: Path | None, patient: str, gene: str) -> float:
    """A gene value as float: numbers, numeric strings, null/"NA"/"NaN" → NaN; else DataError."""
    if value is None:
        return math.nan
    if isinstance(value, bool):  # bool is an int subclass: true/false is not an expression
        raise DataError(f"non-numeric value {value!r}", path=path, patient=patient, field=gene)
    if isinstance(value, int | float):
        try:
            out = float(value)
        except OverflowError:  # an integer beyond any float (JSON integers have no limit)
            out = math.inf
    elif isinstance(value, str):
        if value.strip() in _MISSING_TEXT:
            return math.nan
        try:
            out = float(value.strip())
        except ValueError:
            raise DataError(
                f"non-numeric value {value!r}", path=path, patient=patient, field=gene
            ) from None
    else:
        raise DataError(
            f"expected a number; found {type(value).__name__}",
            path=path,
            patient=patient,
            field=gene,
        )
    if math.isinf(out):
        raise DataError(f"infinite value {value!r}", path=path, patient=patient, field=gene)
    return out


def read_rna_json(path: str | Path, patient: str | None = None) -> pd.Series:
    """Read one ``{pid}_RNA.json`` (gene → value) into a float64 Series named ``patient``.

    Duplicate gene keys (legal JSON, silently collapsed by ``json.load``) are kept as
    repeated index entries so that ``align_genes`` can report and resolve them.
    """
    path = Path(path)
    pid = patient if patient is not None else patient_from_path(path)
    try:
        pairs = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=lambda kv: kv)
    except FileNotFoundError:
        raise DataError("RNA file not found", path=path, patient=pid) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"invalid JSON: {exc}", path=path, patient=pid) from None
    if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
        raise DataError(
            "expected a JSON object mapping gene names to values", path=path, patient=pid
        )
    return rna_from_pairs(pairs, pid, path)


def rna_from_pairs(pairs: Sequence[tuple[Any, Any]], patient: str, path: str | Path | None = None
                   ) -> pd.Series:  # fmt: skip
    """(gene, value) pairs (a JSON object already read, e.g. a challenge socket's value)
    → the float64 Series ``read_rna_json`` returns; ``path`` names the source in errors."""
    src = Path(path) if path is not None else None
    if not pairs:
        raise DataError("no genes in the RNA file (empty JSON object)", path=src, patient=patient)
    genes = [str(g).strip() for g, _ in pairs]
    if any(not g for g in genes):
        raise DataError("empty gene name", path=src, patient=patient, field="gene")
    values = np.array([_number(v, src, patient, g) for g, v in pairs], dtype=np.float64)
    return pd.Series(values, index=pd.Index(genes, name="gene"), name=patient)


def read_matrix(
    path: str | Path,
    orientation: Literal["auto", "genes_rows", "patients_rows"] = "auto",
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a TSV/CSV expression matrix (first column = row labels) as genes × patients.

    ``orientation="auto"`` decides by the first header cell when it names the axis
    (``gene``/``symbol``/``ensembl_id``… → genes are rows; ``patient``/``sample``/``case``…
    → patients are rows), otherwise by shape: genes (~19,000) outnumber patients, so the
    longer axis is the gene axis; a square matrix is ambiguous and raises.
    """
    path = Path(path)
    if sep is None:
        suffixes = [s.lower() for s in path.suffixes]
        sep = "," if ".csv" in suffixes else "\t"
    try:
        with warnings.catch_warnings():  # "converter and dtype both given": meant
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            # dtype=str does not reach a named index column: patient "001" became 1
            raw = pd.read_csv(path, sep=sep, index_col=0, dtype=str, converters={0: str},
                              keep_default_na=False)  # fmt: skip
        # the header as written: pandas renames a repeated name ("P1" → "P1.1"), which
        # would read one patient twice as two
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str,
                             keep_default_na=False).iloc[0].tolist()  # fmt: skip
    except FileNotFoundError:
        raise DataError("matrix file not found", path=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse matrix: {exc}", path=path) from None
    except (OSError, EOFError, zlib.error) as exc:  # a folder, a damaged .gz
        raise DataError(f"cannot read matrix: {exc}", path=path) from None
    if raw.shape[1] == 0 and raw.shape[0]:
        raise DataError(f"one column only when split at {sep!r}: is the file separated by"
                        " another character? pass sep", path=path)  # fmt: skip
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        raise DataError(f"empty matrix (shape {raw.shape})", path=path)
    names = [str(c).strip() for c in header[len(header) - raw.shape[1]:]]  # R: no corner cell
    blank = [i for i, c in enumerate(names) if not c]
    if blank:
        raise DataError(f"column {blank[0] + 2} has no name in the header (a trailing"
                        " separator?)", path=path, field="header")  # fmt: skip
    raw.columns = pd.Index(names)
    if any(not str(g).strip() for g in raw.index):
        raise DataError("a row has no label (empty first cell)", path=path,
                        field=str(raw.index.name or "row label"))  # fmt: skip
    head = str(raw.index.name or "").strip().lower()
    if orientation == "auto":
        if head in _GENE_HEADERS:
            orientation = "genes_rows"
        elif head in _PATIENT_HEADERS:
            orientation = "patients_rows"
        elif raw.shape[0] != raw.shape[1]:
            orientation = "genes_rows" if raw.shape[0] > raw.shape[1] else "patients_rows"
        else:
            raise DataError(
                f"cannot tell genes from patients in a square {raw.shape} matrix; pass"
                " orientation='genes_rows' or 'patients_rows'",
                path=path,
            )
    if orientation not in ("genes_rows", "patients_rows"):
        raise DataError(f"unknown orientation {orientation!r}", path=path, field="orientation")
    frame = raw if orientation == "genes_rows" else raw.T
    frame.index = pd.Index([str(g).strip() for g in frame.index], name="gene")
    frame.columns = pd.Index([str(p).strip() for p in frame.columns], name="patient")
    dup = frame.columns[frame.columns.duplicated()]
    if len(dup):  # a repeated gene stays repeated (merged by align_genes, as in JSON)
        raise DataError("duplicated patient column", path=path, patient=dup[0])
    text = frame.apply(lambda col: col.str.strip())
    num = text.apply(pd.to_numeric, errors="coerce")
    missing = text.isin(["", *_MISSING_TEXT])
    bad = num.isna().to_numpy() & ~missing.to_numpy()
    bad |= np.isinf(num.to_numpy(dtype=np.float64))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"non-numeric value {frame.iat[r, c]!r}",
            path=path,
            patient=frame.columns[c],
            field=frame.index[r],
        )
    return num.astype(np.float64)


@dataclass
class AlignmentReport:
    """What ``align_genes`` did, per patient: nothing is dropped or filled silently."""

    how: str
    n_patients: int
    n_genes: int  # genes kept
    n_genes_union: int
    dropped: dict[str, int] = field(default_factory=dict)  # patient → own genes not kept
    filled: dict[str, int] = field(default_factory=dict)  # patient → kept genes set to NaN
    duplicates: dict[str, int] = field(default_factory=dict)  # patient → extra entries merged

    def summary(self) -> str:
        lost = sum(1 for v in self.dropped.values() if v)
        fill = sum(1 for v in self.filled.values() if v)
        dup = sum(self.duplicates.values())
        return (
            f"{self.n_patients} patients, {self.n_genes} genes kept ({self.how} of"
            f" {self.n_genes_union}); {lost} patients lost genes, {fill} patients have"
            f" NaN-filled genes, {dup} duplicate gene entries merged"
        )


def _columns(data: Any) -> list[pd.Series]:
    if isinstance(data, pd.DataFrame):
        return [data[c] for c in data.columns]
    if isinstance(data, pd.Series):
        return [data]
    if isinstance(data, Mapping):
        return [pd.Series(s, name=str(p)) for p, s in data.items()]
    if isinstance(data, Sequence):
        out: list[pd.Series] = []
        for item in data:
            out.extend(_columns(item))
        return out
    raise DataError(f"cannot align genes of a {type(data).__name__}", field="rna")


def align_genes(
    data: pd.DataFrame | Sequence[pd.Series | pd.DataFrame] | Mapping[str, pd.Series],
    how: Literal["intersection", "union"] = "intersection",
    duplicates: Literal["mean", "first", "sum", "error"] = "mean",
) -> tuple[pd.DataFrame, AlignmentReport]:
    """Align patients' gene vectors on one gene axis → (genes × patients float64, report).

    ``data``: Series named by patient (``read_rna_json``), genes × patients frames
    (``read_matrix``), or a mapping patient → Series. ``intersection`` keeps genes every
    patient has; ``union`` keeps all, NaN where a patient lacks one (imputed later, on
    training rows only). Repeated genes within one patient are merged by ``duplicates``.
    Genes are sorted, so the result does not depend on the input order.
    """
    if how not in ("intersection", "union"):
        raise DataError(f"how must be 'intersection' or 'union'; found {how!r}", field="how")
    if duplicates not in _DUPLICATE_RULES:
        raise DataError(f"duplicates must be one of {_DUPLICATE_RULES}", field="duplicates")
    cols = _columns(data)
    if not cols:
        raise DataError("no RNA profiles to align", field="rna")
    seen: set[str] = set()
    merged: list[pd.Series] = []
    dup_counts: dict[str, int] = {}
    for s in cols:
        pid = str(s.name)
        if s.name is None:
            raise DataError("an RNA profile has no patient name (Series.name)", field="rna")
        if pid in seen:
            raise DataError("patient appears twice among the RNA profiles", patient=pid)
        seen.add(pid)
        s = s.astype(np.float64)
        s.index = pd.Index([str(g) for g in s.index], name="gene")
        n_dup = int(s.index.duplicated().sum())
        dup_counts[pid] = n_dup
        if n_dup:
            if duplicates == "error":
                gene = s.index[s.index.duplicated()][0]
                raise DataError("duplicated gene", patient=pid, field=gene)
            grouped = s.groupby(level=0, sort=False)
            if duplicates == "sum":  # min_count: a gene missing in every entry is NaN, not 0
                s = grouped.sum(min_count=1)
            else:
                s = {"mean": grouped.mean, "first": grouped.first}[duplicates]()
        merged.append(s.rename(pid))
    gene_sets = [set(s.index) for s in merged]
    union = set().union(*gene_sets)
    keep = set.intersection(*gene_sets) if how == "intersection" else union
    genes = sorted(keep)
    if not genes:
        raise DataError(
            "the patients share no gene (intersection is empty); check gene naming"
            " (symbols vs Ensembl ids) or use how='union'",
            field="rna",
        )
    frame = pd.concat([s.reindex(genes) for s in merged], axis=1)
    frame.index.name, frame.columns.name = "gene", "patient"
    report = AlignmentReport(
        how=how,
        n_patients=len(merged),
        n_genes=len(genes),
        n_genes_union=len(union),
        dropped={str(s.name): len(gs - keep) for s, gs in zip(merged, gene_sets)},
        filled={str(s.name): len(keep - gs) for s, gs in zip(merged, gene_sets)},
        duplicates=dup_counts,
    )
    return frame, report


@dataclass
class SharedGenes:
    """A cohort's RNA on the union of its patients' genes (``shared_genes``), with notes."""

    matrix: pd.DataFrame  # every gene any patient measured × patients (NaN: not measured)
    notes: dict[str, list[str]]  # patient → how its genes differ from most patients'
    unmatched: list[str]  # patients whose profile has none of the genes most patients have


def shared_genes(series: Sequence[pd.Series], min_share: float = 0.5) -> SharedGenes:
    """Align per-patient profiles on the union of their genes, and note against each
    patient's own file how its genes differ from those at least ``min_share`` of the
    patients measured.

    Nothing is dropped here. Which genes a model uses is decided on each training part
    (``train.transforms.RnaTransform``'s ``min_coverage``: the genes measured in at least
    that share of the *training* patients), so that no outer-test profile shapes the
    training columns. A gene a patient lacks stays NaN (imputed from training rows); a
    patient measuring none of the genes a training part keeps (another naming: Ensembl
    ids instead of symbols) counts as having no RNA there. No gene measured by
    ``min_share`` of the patients is an error (a naming mix-up, not a cohort)."""
    matrix, _ = align_genes(series, how="union")
    shared = matrix.notna().mean(axis=1) >= min_share
    n = int(shared.sum())
    if n == 0:
        raise DataError(f"no gene is measured in at least {min_share:.0%} of the patients'"
                        " RNA profiles; check gene naming (symbols vs Ensembl ids)",
                        field="rna")  # fmt: skip
    notes: dict[str, list[str]] = {}
    unmatched: list[str] = []
    for pid in map(str, matrix.columns):
        own = matrix[pid].notna()
        have = int((own & shared).sum())
        extra = int((own & ~shared).sum())
        msgs = []
        if have == 0:
            example = ", ".join(map(str, matrix.index[own][:3]))
            msgs.append(f"none of the {n} genes most patients have (its genes: {example}, ...);"
                        " its RNA counts as absent wherever training keeps those genes")  # fmt: skip
            unmatched.append(pid)
        elif have < n:
            msgs.append(f"{n - have} of the {n} genes most patients have are missing;"
                        " imputed from the training patients")  # fmt: skip
        if extra and have:
            msgs.append(f"{extra} genes that most patients lack: used only where most"
                        " training patients have them")  # fmt: skip
        if msgs:
            notes[pid] = msgs
    return SharedGenes(matrix, notes, unmatched)


def read_rna_dir(
    paths: Sequence[str | Path], how: Literal["intersection", "union"] = "intersection"
) -> tuple[pd.DataFrame, AlignmentReport]:
    """Read many ``{pid}_RNA.json`` files and align them (convenience)."""
    return align_genes([read_rna_json(p) for p in paths], how=how)


def to_features(
    matrix: pd.DataFrame, patients: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """genes × patients → Cohort arrays for ``patients``: (N × G float32, present, genes).

    Patients without a profile get a zero row and ``present=False``; NaN inside present
    rows stays NaN (a missing value, imputed by a train-fitted transformer).
    """
    ids = [str(p) for p in patients]
    have = set(map(str, matrix.columns))
    present = np.array([p in have for p in ids], dtype=bool)
    cols = matrix.copy()
    cols.columns = [str(c) for c in cols.columns]
    # copy: with pandas >= 3 (copy-on-write) to_numpy may return a read-only view
    x = cols.reindex(columns=ids).T.to_numpy(dtype=np.float32, copy=True)
    x[~present] = 0.0
    return np.ascontiguousarray(x), present, [str(g) for g in matrix.index]
