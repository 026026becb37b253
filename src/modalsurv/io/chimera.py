"""CHIMERA task layouts on disk → a Cohort, the raw-image paths and every problem found.

Task 1 (prostate; layout as published by the organisers and used by public baselines)::

    clinical_data/{case}.json
    pathology/images/{case}/{case}_{n}.tif            (+ {case}_{n}_tissue.tif)
    pathology/features/embeddings/{case}_{n}.pt       organiser tile features, K × D
    pathology/features/coordinates/{case}_{n}.npy     optional tile coordinates
    radiology/mpMRI/{case}/{case}_0001_{t2w,adc,hbv}.mha
    radiology/prostate_mask_t2w/{case}_0001_mask.mha
    rna/{case}_RNA.json                               optional (not part of task 1)

Task 3 (bladder)::

    data/{pid}/{pid}_CD.json, {pid}_HE.tif, {pid}_HE_mask.tif, {pid}_RNA.json
    features/embeddings/{pid}_HE.pt (+ features/coordinates/{pid}_HE.npy)

All patterns live in ``Layout`` (``TASK1_LAYOUT`` / ``TASK3_LAYOUT``) so they are easy to
adjust; where a pattern has alternatives the first is the one ``write_chimera`` uses.
Reading never skips silently: a patient dropped (no labels, corrupt JSON, duplicate id)
or a file ignored (wrong-shape ``.pt``, missing mask) is listed in ``.problems``.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort, stack_patients
from modalsurv.errors import DataError, FeatureError, Problem
from modalsurv.io import clinical as clin
from modalsurv.io.feature_files import load_feature_file, tile_subset
from modalsurv.io.fingerprint import (
    NO_FILE,
    has_files,
    mri_sources,
    slide_sources,
    sources_fingerprint,
)
from modalsurv.io.layouts import SLIDE_SUFFIXES
from modalsurv.io.rnaseq import read_rna_json, shared_genes, to_features
from modalsurv.io.store import FeatureStore, read_extraction_record
from modalsurv.io.store_read import stored_modalities

SlidePolicy = Literal["first", "mean", "bag"]
MRI_SEQUENCES: tuple[str, ...] = ("t2w", "adc", "hbv")
DEFAULT_MAX_TILES = 500  # a patient's tile bag (all slides) is capped here, seeded per patient
# discovery's warning for a slide without organiser tile features: void where the wsi bags
# come from elsewhere (a feature store, or the extraction that makes them)
NO_FEATURE_FILE = "no feature file for slide"


@dataclass(frozen=True)
class Layout:
    """File patterns of one task. ``{case}`` is the patient id, ``{slide}`` a slide stem;
    ``slides`` is a glob (relative to the root) whose matches exclude mask files."""

    task: int
    clinical: str
    clinical_glob: str  # discovery (recursive, so a case id found twice is reported)
    clinical_suffix: str  # file name = {case}{clinical_suffix}
    slides: str
    slide_mask_suffixes: tuple[str, ...]  # a slide's mask: {slide}{suffix}, same folder
    features: tuple[str, ...]
    coords: tuple[str, ...]
    rna: tuple[str, ...]
    mri: tuple[str, ...] = ()  # with {seq}
    mri_mask: tuple[str, ...] = ()

    def first(self, patterns: tuple[str, ...], **kw: str) -> str:
        return patterns[0].format(**kw)


TASK1_LAYOUT = Layout(
    task=1,
    clinical="clinical_data/{case}.json",
    clinical_glob="clinical_data/**/*.json",
    clinical_suffix=".json",
    slides="pathology/images/{case}/{case}_*.tif",
    slide_mask_suffixes=("_tissue.tif",),
    features=("pathology/features/embeddings/{slide}.pt", "pathology/features/features/{slide}.pt"),
    coords=("pathology/features/coordinates/{slide}.npy",),
    rna=("rna/{case}_RNA.json",),
    mri=(
        "radiology/mpMRI/{case}/{case}_0001_{seq}.mha",
        "radiology/images/{case}/{case}_0001_{seq}.mha",
    ),
    mri_mask=(
        "radiology/prostate_mask_t2w/{case}_0001_mask.mha",
        "radiology/images/{case}/{case}_0001_mask.mha",
    ),
)
TASK3_LAYOUT = Layout(
    task=3,
    clinical="data/{case}/{case}_CD.json",
    clinical_glob="data/**/*_CD.json",
    clinical_suffix="_CD.json",
    slides="data/{case}/{case}_HE*.tif",
    slide_mask_suffixes=("_mask.tif",),
    features=("features/embeddings/{slide}.pt", "data/{case}/{slide}.pt"),
    coords=("features/coordinates/{slide}.npy",),
    rna=("data/{case}/{case}_RNA.json",),
)
LAYOUTS = {1: TASK1_LAYOUT, 3: TASK3_LAYOUT}


def case_of_slide(task: int, name: str) -> str | None:
    """The patient id a slide file's name carries under the task's naming (``1000_0.tif``
    → ``1000``, ``3A_000_HE.tif`` → ``3A_000``), None when the name does not follow it.
    Why: a bag over the tile cap keeps a subset seeded by the patient id (the feature
    store's key), and a case read from ``/input`` knows its id only from its file names."""
    pattern = LAYOUTS[task].slides.rsplit("/", 1)[-1]
    regex = "".join("(?P<case>.+)" if part == "{case}" else ".*" if part == "*" else re.escape(part)
                    for part in re.split(r"(\{case\}|\*)", pattern) if part)  # fmt: skip
    hit = re.fullmatch(regex, name, flags=re.IGNORECASE)
    return hit.group("case") if hit else None


_SITE = re.compile(r"^(\d[A-Z])_")


def _natural(s: str) -> list[int | str]:
    """Sort key putting ``case_2`` before ``case_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _any_case(pattern: str) -> str:
    """A glob pattern whose file extension matches in any case (``.tif`` also ``.TIF``).
    Why: slides and volumes saved on Windows or by a scanner as ``1000_0.TIF`` /
    ``.MHA`` were not found, and the case was read without them without a word."""
    head, dot, ext = pattern.rpartition(".")
    if not dot or "/" in ext or not ext.isalnum():
        return pattern
    return f"{head}.{''.join(f'[{c.lower()}{c.upper()}]' if c.isalpha() else c for c in ext)}"


def _lower_ext(name: str) -> str:
    """``name`` with its extension lower-cased (what the layout's patterns spell)."""
    head, dot, ext = name.rpartition(".")
    return f"{head}.{ext.lower()}" if dot and "/" not in ext else name


def _file(root: Path, rel: str) -> Path | None:
    """The file ``root / rel``, or the one whose name differs only in its extension's case."""
    path = root / rel
    if path.is_file():
        return path
    hits = sorted(p for p in root.glob(_any_case(glob.escape(rel))) if p.is_file())
    return hits[0] if hits else None


def _existing(root: Path, patterns: Sequence[str], **kw: str) -> Path | None:
    for p in patterns:
        path = _file(root, p.format(**kw))
        if path is not None:
            return path
    return None


def _existing_once(root: Path, patterns: Sequence[str], problems: list[Problem],
                   patient: str, field: str, **kw: str) -> Path | None:  # fmt: skip
    """:func:`_existing`, with a warning for each file another pattern also finds (the
    same volume under ``radiology/mpMRI`` and ``radiology/images``): the first is read,
    the other was ignored without a word."""
    found = [f for f in (_file(root, p.format(**kw)) for p in patterns) if f is not None]
    for other in found[1:]:
        problems.append(Problem("warning", f"also found here; ignored, {found[0]} is read",
                                str(other), patient, field))  # fmt: skip
    return found[0] if found else None


@dataclass
class ChimeraCohort:
    """What reading a CHIMERA folder gives: the Cohort, the raw files, the problems."""

    cohort: Cohort
    paths: pd.DataFrame  # index patient; slides, masks, features, coords, mri_*, rna
    problems: list[Problem] = field(default_factory=list)
    clinical: pd.DataFrame | None = None  # typed clinical table (io.clinical)
    extraction: dict | None = None  # the feature store's extraction record, when one was used
    notes: list[Problem] = field(default_factory=list)  # "note"s, e.g. a declared leak column

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


# ---------------------------------------------------------------------------- discovery
def _hidden(root: Path, path: Path, hidden: set[Path]) -> bool:
    """Whether ``path`` is or lies in a hidden file or folder below ``root`` (``.DS_Store``,
    macOS ``._*`` copies, ``.ipynb_checkpoints``); the outermost such one goes into
    ``hidden``, to be listed. Why: ``.ipynb_checkpoints/1000-checkpoint.json`` would
    otherwise be read as a second patient with 1000's labels."""
    parts = path.relative_to(root).parts
    for i, part in enumerate(parts):
        if part.startswith("."):
            hidden.add(root.joinpath(*parts[: i + 1]))
            return True
    return False


def clinical_files(root: Path, layout: Layout, hidden: set[Path] | None = None
                   ) -> list[tuple[str, Path]]:  # fmt: skip
    """(case id, clinical file) of every clinical file of ``layout`` below ``root``, sorted
    by path; RNA JSONs and hidden files are left out (the hidden ones go into ``hidden``)."""
    seen: set[Path] = set() if hidden is None else hidden
    return [(p.name[: -len(layout.clinical_suffix)], p)
            for p in sorted(root.glob(_any_case(layout.clinical_glob)))
            if not _lower_ext(p.name).endswith("_RNA.json") and not _hidden(root, p, seen)]  # fmt: skip


def no_patient_found(root: str | Path, layout: Layout) -> str:
    """"no patient found" with the clinical file pattern ``layout`` looks for and, when
    sub-folders of ``root`` hold its cases (``root`` one level too high, e.g. a folder of
    train/ and held/), their paths.

    Why: the parent folder, or the clinical_data folder itself, said only "no patient
    found", which does not say what was looked for or where the cases are."""
    root = Path(root)
    text = f"no patient found (looked for {layout.clinical} under it"
    if root.is_dir():
        subs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                and any(p.is_file() for _, p in clinical_files(d, layout))]  # fmt: skip
        if subs:
            text += ("; task folders one level down: " + ", ".join(str(d) for d in subs[:5])
                     + (", ..." if len(subs) > 5 else ""))  # fmt: skip
    return text + ")"


def _cases_of(root: Path, pattern: str, hidden: set[Path]) -> set[str]:
    """The case ids of the files matching a layout pattern (``{case}`` a path part of its
    own or inside a file name, ``{seq}`` any MRI sequence); hidden ones only in ``hidden``."""
    rx = re.escape(pattern).replace(r"\{seq\}", "[^/]+")
    rx = rx.replace(r"\{case\}", "(?P<case>[^/]+?)", 1).replace(r"\{case\}", "(?P=case)")
    matcher = re.compile(rx + "$")
    found = set()
    for p in root.glob(_any_case(pattern.replace("{case}", "*").replace("{seq}", "*"))):
        if _hidden(root, p, hidden):
            continue
        m = matcher.match(_lower_ext(p.relative_to(root).as_posix()))
        if m is not None and p.is_file():
            found.add(m.group("case"))
    return found


def _unread_images(root: Path, layout: Layout, case: str, slides: Sequence[Path],
                   masks: Sequence[str | None], problems: list[Problem]) -> None:  # fmt: skip
    """A warning for each slide-like file in a case's slide folder that is read neither as
    a slide nor as a slide's mask. Why: a slide filed under another case's folder, or a
    name off the pattern (``1000-2.tif``, an orphan ``1000_3_tissue.tif``), was left out
    of the case without a word."""
    folder = (root / layout.slides.format(case=case)).parent
    if not folder.is_dir() or folder == root:
        return
    used = {str(p) for p in slides} | {m for m in masks if m is not None}
    name = layout.slides.rsplit("/", 1)[-1].replace("{case}", case)
    for f in sorted(folder.iterdir()):
        if (f.suffix.lower() in SLIDE_SUFFIXES and str(f) not in used
                and not f.name.startswith(".") and f.is_file()):  # fmt: skip
            problems.append(Problem("warning", f"slide-like file in the case's folder not read:"
                                    f" not named {name} (a slide) nor its slide's mask"
                                    f" ({'/'.join(layout.slide_mask_suffixes)})", str(f), case,
                                    "wsi"))  # fmt: skip


def discover(root: str | Path, layout: Layout, problems: list[Problem], *, raw: bool = False
             ) -> pd.DataFrame:  # fmt: skip
    """Find every case's files. Cases come from clinical files *and* slide folders, RNA
    files and MRI files, so a case with data but no clinical file is reported, not lost.
    ``raw``: the reader embeds the raw slides itself (``extract``, the challenge), so a
    slide without organiser tile features is no problem and not warned about."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"CHIMERA root folder {what}", path=root)
    found: dict[str, Path] = {}
    hidden: set[Path] = set()
    for case, p in clinical_files(root, layout, hidden):
        if case in found:
            problems.append(Problem("error", f"duplicate case id (also {found[case]}); case"
                                    " dropped", str(p), case, "id"))  # fmt: skip
            found[case] = Path("")  # mark ambiguous
            continue
        found[case] = p
    dup = {c for c, p in found.items() if p == Path("")}
    # the slide glob's first directory level below the case placeholder names the cases;
    # RNA and MRI files name theirs too, so no file of a case without a clinical record
    # goes unmentioned
    slide_root = layout.slides.split("{case}")[0]
    image_cases = {d.name for d in (root / slide_root).glob("*")
                   if d.is_dir() and not _hidden(root, d, hidden)}  # fmt: skip
    for pattern in (*layout.rna, *layout.mri, *layout.mri_mask):
        image_cases |= _cases_of(root, pattern, hidden)
    problems.extend(Problem("warning", "hidden file or folder (an OS or editor copy such as"
                            " .ipynb_checkpoints or ._*); ignored", str(h), None, None)
                    for h in sorted(hidden))  # fmt: skip
    rows = []
    for case in sorted(set(found) | image_cases, key=_natural):
        if case in dup:
            continue
        cpath = found.get(case)
        if cpath is None:
            problems.append(Problem("error", "clinical file missing; case has no labels and"
                                    " is dropped", str(root / layout.clinical.format(case=case)),
                                    case, "clinical"))  # fmt: skip
            continue
        slides = sorted(
            (p for p in root.glob(_any_case(layout.slides.format(case=case)))
             if not any(_lower_ext(p.name).endswith(s) for s in layout.slide_mask_suffixes)),
            key=lambda p: _natural(p.stem),
        )  # fmt: skip
        masks, feats, coords = [], [], []
        for s in slides:
            mask = next((m for m in (_file(s.parent, s.stem + suf)
                                     for suf in layout.slide_mask_suffixes) if m is not None),
                        None)  # fmt: skip
            if mask is None:
                problems.append(Problem("warning", "tissue mask missing for slide", str(s),
                                        case, "mask"))  # fmt: skip
            masks.append(None if mask is None else str(mask))
            f = _existing(root, layout.features, case=case, slide=s.stem)
            feats.append(None if f is None else str(f))
            c = _existing(root, layout.coords, case=case, slide=s.stem)
            coords.append(None if c is None else str(c))
        # feature files without an image (organisers may ship features only); a slide's
        # features found under a second pattern too are the same slide: read once, said
        taken = {Path(f).stem: f for f in feats if f is not None}
        for pat in layout.features:
            for f in sorted(root.glob(_any_case(pat.format(case=case, slide=f"{case}_*")))):
                if str(f) in feats:
                    continue
                if f.stem in taken:
                    problems.append(Problem("warning", f"a second feature file for slide"
                                            f" {f.stem}; ignored, its tiles are read from"
                                            f" {taken[f.stem]}", str(f), case, "wsi"))  # fmt: skip
                    continue
                taken[f.stem] = str(f)
                slides.append(Path(""))
                masks.append(None)
                feats.append(str(f))
                c = _existing(root, layout.coords, case=case, slide=f.stem)
                coords.append(None if c is None else str(c))
        _unread_images(root, layout, case, slides, masks, problems)
        for s, f in zip(slides, feats):
            if s != Path("") and f is None and not raw:
                problems.append(Problem("warning", f"{NO_FEATURE_FILE} (extract"
                                        " features first); slide not in the wsi bag", str(s),
                                        case, "wsi"))  # fmt: skip
        row: dict[str, object] = {
            "patient": case,
            "clinical": str(cpath),
            "slides": [str(s) for s in slides if s != Path("")],
            "masks": [m for s, m in zip(slides, masks) if s != Path("")],
            "features": [f for f in feats if f is not None],
            "coords": [c for f, c in zip(feats, coords) if f is not None],
        }
        rna = _existing(root, layout.rna, case=case)
        row["rna"] = None if rna is None else str(rna)
        if layout.mri:
            seqs = {q: _existing_once(root, layout.mri, problems, case, f"mri_{q}", case=case,
                                      seq=q) for q in MRI_SEQUENCES}  # fmt: skip
            have = [q for q, p in seqs.items() if p is not None]
            if have and len(have) < len(MRI_SEQUENCES):
                for q in MRI_SEQUENCES:
                    if seqs[q] is None:
                        problems.append(Problem("warning", "MRI sequence missing",
                                                str(root / layout.mri[0].format(case=case,
                                                                               seq=q)),
                                                case, f"mri_{q}"))  # fmt: skip
            for q, p in seqs.items():
                row[f"mri_{q}"] = None if p is None else str(p)
            m = _existing_once(root, layout.mri_mask, problems, case, "mri_mask", case=case)
            if have and m is None:
                problems.append(Problem("warning", "prostate mask missing",
                                        str(root / layout.mri_mask[0].format(case=case)),
                                        case, "mri_mask"))  # fmt: skip
            row["mri_mask"] = None if m is None else str(m)
        rows.append(row)
    cols = ["clinical", "slides", "masks", "features", "coords", "rna"]
    if layout.mri:
        cols += [f"mri_{q}" for q in MRI_SEQUENCES] + ["mri_mask"]
    if not rows:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="patient"))
    # object columns: a missing file stays None (pandas >= 3 would store strings with NaN)
    return pd.DataFrame(rows, dtype=object).set_index("patient")[cols]


# ---------------------------------------------------------------------------- features
def _read_bag(case: str, files: Sequence[str], problems: list[Problem], dim: int | None
              ) -> list[np.ndarray]:  # fmt: skip
    out = []
    for f in files:
        try:
            x, _ = load_feature_file(f, case)
            if x.ndim != 2 or x.shape[0] == 0:
                raise FeatureError(f"expected tile features of shape (K, D) with K >= 1;"
                                   f" found {x.shape}", path=f, patient=case)  # fmt: skip
            if dim is not None and x.shape[1] != dim:
                raise FeatureError(f"tile feature dim {x.shape[1]} differs from the cohort's"
                                   f" {dim}", path=f, patient=case)  # fmt: skip
            if not np.isfinite(x).all():
                raise FeatureError("features contain NaN or inf", path=f, patient=case)
        except FeatureError as exc:
            problems.append(Problem("error", f"{exc.reason}; slide ignored", exc.path, case,
                                    "wsi"))  # fmt: skip
            continue
        out.append(np.asarray(x, dtype=np.float32))
    return out


def _common_dim(paths: pd.DataFrame) -> int | None:
    """The tile dim most feature files have (so one odd file is the one reported)."""
    dims: dict[int, int] = {}
    for files in paths["features"]:
        for f in files[:1]:
            try:
                x, _ = load_feature_file(f)
            except FeatureError:
                continue
            if x.ndim == 2:
                dims[x.shape[1]] = dims.get(x.shape[1], 0) + 1
    return max(dims, key=lambda d: dims[d]) if dims else None


def wsi_features(
    paths: pd.DataFrame,
    problems: list[Problem],
    policy: SlidePolicy = "bag",
    max_tiles: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(x, present, mask) of the wsi modality for the patients in ``paths``.

    ``bag``: tiles of all slides concatenated (slide order), N × K × D with a mask;
    ``first``: the first slide's tiles only; ``mean``: one vector per patient, the mean
    tile over all slides (N × D). Bags longer than ``max_tiles`` keep a seed- and
    patient-determined subset (``store.tile_subset``)."""
    if policy not in ("first", "mean", "bag"):
        raise DataError(f"slide policy must be first, mean or bag; found {policy!r}",
                        field="slide_policy")  # fmt: skip
    dim = _common_dim(paths)
    bags: list[np.ndarray | None] = []
    for case, files in zip(paths.index, paths["features"]):
        parts = _read_bag(str(case), files[:1] if policy == "first" else files, problems, dim)
        if not parts:
            bags.append(None)
            continue
        bag = np.concatenate(parts, axis=0)
        if max_tiles is not None and bag.shape[0] > max_tiles:
            bag = bag[tile_subset(str(case), bag.shape[0], max_tiles, seed)]
        bags.append(bag)
    d = dim or 1
    if policy == "mean":
        return stack_patients([None if b is None else b.mean(axis=0) for b in bags], d, bag=False)
    return stack_patients(bags, d, bag=True)


def rna_features(paths: pd.DataFrame, problems: list[Problem]
                 ) -> tuple[np.ndarray, np.ndarray, list[str]] | None:  # fmt: skip
    """Aligned RNA for the patients in ``paths`` (the union of their genes:
    ``rnaseq.shared_genes``; each training part keeps the genes most of its patients
    have), or None; how a profile differs from most is a problem naming that patient's
    file."""
    series = []
    for case, f in zip(paths.index, paths["rna"]):
        if f is None:
            continue
        try:
            series.append(read_rna_json(f, patient=str(case)))
        except DataError as exc:
            problems.append(Problem("error", f"{exc.reason}; RNA ignored", exc.path, str(case),
                                    exc.field or "rna"))  # fmt: skip
    if not series:
        return None
    shared = shared_genes(series)
    for pid, notes in shared.notes.items():
        problems.extend(Problem("warning", f"RNA: {note}", str(paths.loc[pid, "rna"]), pid, "rna")
                        for note in notes)  # fmt: skip
    return to_features(shared.matrix, [str(i) for i in paths.index])


# ---------------------------------------------------------------------------- store
# which raw files a stored modality is made from (for "not extracted" problems)
_SOURCES = {"wsi": "slides", "slide": "slides", "mri": "mri_t2w"}


def _has_source(paths: pd.DataFrame, modality: str) -> np.ndarray:
    col = _SOURCES.get(modality)
    if col is None or col not in paths.columns:
        return np.zeros(len(paths), dtype=bool)
    return np.array([bool(v) if isinstance(v, list) else v is not None and v == v
                     for v in paths[col]], dtype=bool)  # fmt: skip


def unextracted_notes(read: ChimeraCohort, root: str | Path) -> list[Problem]:
    """A ``note`` per image kind the folder holds that a read without a feature store
    leaves out (MRI; slides unless the organisers' tile features gave ``wsi``).

    Why: ``--data chimera-task1:ROOT`` without ``--features`` trains on clinical + RNA
    (+ the ``.pt`` tile features) and the coverage table alone did not show that the
    folder's MRI was never looked at."""
    out = []
    kinds = [("mri", "MRI")] + ([] if "wsi" in read.cohort.modalities else [("wsi", "slides")])
    for modality, what in kinds:
        n = int(_has_source(read.paths, modality).sum())
        if n:
            out.append(Problem("note", f"{n} patient(s) have {what} in the folder, not used:"
                               " no feature store was given (--features); `modalsurv extract`"
                               " makes their features", str(root), None, modality))  # fmt: skip
    return out


# the source-file group each stored modality is computed from (as extract fingerprints it)
_GROUP = {"wsi": "slides", "slide": "slides", "mri": "mri"}


def _folder_fingerprint(row: pd.Series, group: str) -> str | None:
    """What the folder's files of a patient's ``group`` fingerprint to (as ``extract``
    computes it), or None when the folder has no such file to compare with."""
    if group == "slides":
        files = slide_sources(row["slides"], row["masks"])
    elif "mri_mask" in row.index:
        files = mri_sources({q: row[f"mri_{q}"] for q in MRI_SEQUENCES}, row["mri_mask"])
    else:
        return None
    now = sources_fingerprint(files)
    return now if has_files(now) else None


def _source_difference(was: str, now: str) -> str:
    """Which files differ between a stored fingerprint and the folder's, as text. Why:
    compared position by position, a slide added since the extraction was shown against
    the stored mask of another slide ("stored 1000_0_tissue.tif; the folder has 1000_1.tif")."""
    a, b = was.split("|"), now.split("|")
    old = next((x for x in a if x not in b and x != NO_FILE), None)
    new = next((y for y in b if y not in a and y != NO_FILE), None)
    parts = ([f"stored {old}, not in the folder"] if old else []) + (
        [f"the folder has {new}, not stored"] if new else [])  # fmt: skip
    if not parts:  # the same files, otherwise paired (a mask gone, slides reordered)
        x, y = next(((x, y) for x, y in zip(a, b) if x != y), (was, now))
        parts = [f"stored {x}; the folder has {y}"]
    return "; ".join(parts)


def _foreign_sources(store: FeatureStore, paths: pd.DataFrame, present: dict[str, np.ndarray],
                     problems: list[Problem]) -> dict[str, list[int]]:  # fmt: skip
    """Rows (per modality) whose stored features were made from other files than the
    folder's: a store of another cohort whose ids coincide, or files changed since. Each
    is an error problem (the modality is then absent for that patient), since training on
    them would pair one cohort's labels with another's images. A patient stored without a
    fingerprint (an older store, an import) cannot be checked: one warning per modality."""
    ids = [str(i) for i in paths.index]
    folder: dict[tuple[str, int], str | None] = {}
    bad: dict[str, list[int]] = {}
    unchecked: dict[str, int] = {}
    mismatch: dict[tuple[str, int], tuple[list[str], str, str]] = {}
    for m, has in present.items():
        group = _GROUP.get(m)
        if group is None or not has.any():
            continue
        stored = store.fingerprints(m)
        for i in np.flatnonzero(has):
            if (group, i) not in folder:
                try:
                    folder[group, i] = _folder_fingerprint(paths.iloc[i], group)
                except OSError as exc:
                    problems.append(Problem("warning", "cannot read this source file to check"
                                            f" the store's {m!r} features were made from it"
                                            f" ({exc.strerror or exc}); not checked",
                                            getattr(exc, "filename", None), ids[i], m))  # fmt: skip
                    folder[group, i] = None
            now, was = folder[group, i], stored.get(ids[i])
            if now is None:
                continue
            if was is None:
                unchecked[m] = unchecked.get(m, 0) + 1
            elif was != now:
                bad.setdefault(m, []).append(int(i))
                mismatch.setdefault((group, int(i)), ([], was, now))[0].append(m)
    for (_, i), (mods, was, now) in sorted(mismatch.items(), key=lambda kv: kv[0][1]):
        mods = sorted(mods, key=list(_GROUP).index)  # wsi/slide, as extract names the group
        diff = _source_difference(was, now)
        problems.append(Problem(
            "error", f"the feature store's {'/'.join(mods)} features of this patient were made"
            f" from other source files than the folder's ({diff}):"
            " a store of another cohort with the same ids, or files changed since extraction;"
            f" {'/'.join(mods)} absent (extract this folder into a new store, or re-extract"
            f" with --reextract-changed)", str(store.root), ids[i], mods[0]))  # fmt: skip
    for m, n in unchecked.items():
        problems.append(Problem("warning", f"{n} patient(s)' {m!r} features carry no record of"
                                " their source files (a store written by an older version, or"
                                " imported): not checked against the folder's files",
                                str(store.path(m)), None, m))  # fmt: skip
    return bad


def store_features(
    store: FeatureStore,
    paths: pd.DataFrame,
    problems: list[Problem],
    max_tiles: int | None,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(x, present, mask)`` per image modality of the store (``rna`` is read from the
    folder's own files) for the patients of ``paths``, joined by patient id.

    Listed in ``problems``: store patients the folder has no (usable) clinical record for,
    patients whose slides or MRI are in the folder but not in the store, and (errors; the
    modality absent) patients whose stored features were made from other files than the
    folder's (the fingerprint ``extract`` kept: ``io.fingerprint``). A store none
    of whose ids matches the folder is an error showing examples of both, since that is
    almost always a naming mismatch ("001000" against "1000"), not a real cohort.
    """
    if not store.root.is_dir():
        raise DataError("feature store folder does not exist", path=store.root, field="features")
    mods = [m for m in store.modalities() if m != "rna"]
    if not mods:
        raise DataError("the feature store holds no image modality (run modalsurv extract"
                        " first)", path=store.root, field="features")  # fmt: skip
    ids = [str(i) for i in paths.index]
    stored: dict[str, list[str]] = {m: store.patients(m) for m in mods}
    everyone = sorted(set().union(*stored.values()), key=_natural)
    for pid in sorted(set(everyone) - set(ids), key=_natural):
        problems.append(Problem("warning", "the feature store has features for this patient but"
                                " the folder has no usable clinical record (see any other"
                                " problem for it); not in the cohort", str(store.root), pid,
                                "features"))  # fmt: skip
    for m, what in (("wsi", "slides"), ("mri", "MRI")):
        n = int(_has_source(paths, m).sum())
        if n and m not in mods:
            problems.append(Problem("warning", f"{n} patient(s) have {what} in the folder but the"
                                    f" store has no {m!r} modality (extract it: modalsurv"
                                    " extract)", str(store.root), None, m))  # fmt: skip
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    loaded = stored_modalities(store, ids, mods, "CHIMERA folder", max_tiles, seed)
    foreign = _foreign_sources(store, paths, {m: lm.present for m, lm in loaded.items()},
                               problems)  # fmt: skip
    for m, lm in loaded.items():
        x = lm.x if lm.x.flags.writeable else np.array(lm.x)
        present, mask = lm.present.copy(), None if lm.mask is None else lm.mask.copy()
        for i in foreign.get(m, []):  # another cohort's features: never joined
            x[i], present[i] = 0, False
            if mask is not None:
                mask[i] = False
        out[m] = (x, present, mask)
        for i in np.flatnonzero(_has_source(paths, m) & ~lm.present):
            what = "MRI" if m == "mri" else "slides"
            problems.append(Problem("warning", f"{what} in the folder but no {m!r} features in"
                                    " the store (not extracted, or extraction failed); modality"
                                    " absent", str(store.path(m)), ids[i], m))  # fmt: skip
    return out


# ---------------------------------------------------------------------------- reading
def read_chimera(
    root: str | Path,
    task: int = 1,
    slide_policy: SlidePolicy = "bag",
    max_tiles: int | None = DEFAULT_MAX_TILES,
    seed: int = 0,
    event: str | None = None,
    strict: bool = False,
    layout: Layout | None = None,
    features: str | Path | None = None,
    labels: bool = True,
) -> ChimeraCohort:
    """Read a CHIMERA task folder into a Cohort: ``clinical`` (the JSON files, typed by the
    task's schema), ``rna`` (when any patient has an RNA file) and the image modalities.

    Image modalities come from the feature store ``features`` when given (what ``modalsurv
    extract`` wrote from this folder: ``wsi`` tile bags of all a patient's slides,
    ``slide`` vectors averaged over the slides, ``mri``), else ``wsi`` from the organisers'
    ``.pt`` tile features (``slide_policy``: ``bag`` all slides' tiles as one bag, ``first``,
    or ``mean``). Bags longer than ``max_tiles`` keep a seeded subset per patient. Each
    modality has its presence mask.

    Nothing is dropped silently: patients without usable labels, with corrupt clinical
    JSON or a duplicated id are dropped and listed in ``.problems``, as are files that
    cannot be used, store patients without a clinical record and patients whose slides or
    MRI were not extracted. ``strict=True`` raises one DataError listing every problem
    (warnings included); a column the schema declares a label leak is no problem, said
    once in ``.notes``. ``event`` selects task 3's endpoint (``progression`` or
    ``HG_recur``). ``labels=False`` reads a folder to predict on: a case without
    follow-up and event is kept, with a placeholder label (time 1, no event) and
    ``meta['labelled']`` False.
    """
    problems: list[Problem] = []
    out = read_chimera_into(root, task, problems, slide_policy, max_tiles, seed, event, layout,
                            features, labels)  # fmt: skip
    if strict and problems:
        raise_problems(problems, root)
    if out is None:
        if problems:
            raise_problems(problems, root)
        raise DataError(no_patient_found(root, layout or LAYOUTS[task]), path=root)
    return out


def read_chimera_into(
    root: str | Path,
    task: int,
    problems: list[Problem],
    slide_policy: SlidePolicy = "bag",
    max_tiles: int | None = None,
    seed: int = 0,
    event: str | None = None,
    layout: Layout | None = None,
    features: str | Path | None = None,
    labels: bool = True,
) -> ChimeraCohort | None:
    """read_chimera's body, for callers that want every problem even when nothing is
    usable (``io.scan``): fills ``problems``; None when no patient is usable."""
    if task not in LAYOUTS and layout is None:
        raise DataError(f"CHIMERA task must be 1 or 3; found {task!r}", field="task")
    layout = layout or LAYOUTS[task]
    start = len(problems)
    paths = discover(root, layout, problems)
    schema = clin.TASK1 if layout.task == 1 else clin.task3_schema(event or "progression")
    files = {str(c): Path(p) for c, p in zip(paths.index, paths["clinical"])}
    records = clin.json_records(files, problems, collect=True)
    table = clin.coerce_records(records, schema, problems, files, collect_errors=True,
                                require_labels=labels)  # fmt: skip
    keep = [str(c) for c in paths.index if str(c) in table.index]
    paths, table = paths.loc[keep], table.loc[keep]
    if not keep:
        return None
    x_clin, names = clin.clinical_to_matrix(table, schema, problems)
    feats: dict[str, np.ndarray] = {"clinical": x_clin}
    present: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    fnames: dict[str, list[str]] = {"clinical": names}
    stored = (store_features(FeatureStore(features), paths, problems, max_tiles, seed)
              if features is not None else {})  # fmt: skip
    if "wsi" in stored:  # the store's bags hold the slides, organiser features or not
        problems[start:] = [p for p in problems[start:] if not p.reason.startswith(NO_FEATURE_FILE)]
    if "wsi" not in stored and any(len(f) for f in paths["features"]):
        x, p, m = wsi_features(paths, problems, slide_policy, max_tiles, seed)
        feats["wsi"], present["wsi"] = x, p
        if m is not None:
            masks["wsi"] = m
    for name, (x, p, m) in stored.items():
        feats[name], present[name] = x, p
        if m is not None:
            masks[name] = m
    rna = rna_features(paths, problems)
    if rna is not None:
        feats["rna"], present["rna"], fnames["rna"] = rna
    meta = pd.DataFrame(index=pd.Index(keep, name="patient"))
    time, event = table["time"].to_numpy(dtype=float), table["event"].to_numpy(dtype=bool)
    if not labels:  # prediction: a placeholder where the case has no label, said in meta
        meta["labelled"] = np.isfinite(time)
        time, event = np.where(np.isfinite(time), time, 1.0), np.where(np.isfinite(time), event, False)
    if layout.task == 3:
        meta["site"] = [(_SITE.match(c).group(1) if _SITE.match(c) else "unknown") for c in keep]
    cohort = Cohort(keep, time, event, features=feats,
                    present=present, meta=meta, bag_mask=masks, feature_names=fnames)  # fmt: skip
    record = read_extraction_record(features) if features is not None else None
    return ChimeraCohort(cohort, paths, problems, table, record,
                         clin.leak_notes(records, schema, root))  # fmt: skip


def raise_problems(problems: Sequence[Problem], root: str | Path | None = None) -> None:
    """One DataError listing every problem (used by strict modes)."""
    lines = "\n".join(f"  {p}" for p in problems)
    raise DataError(f"{len(problems)} problem(s) found:\n{lines}", path=root)
