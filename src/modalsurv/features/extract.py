"""The ``extract`` step: raw patient files → frozen embeddings in a FeatureStore.

Modalities written to the store at ``out``:

- ``wsi``: per patient, the bag of tile embeddings of all its slides (K × D, slides in
  order, at most ``max_tiles`` tiles per slide) with level-0 tile coordinates (K × 2);
- ``slide``: the slide-level vector (``mean`` of the tiles, or TITAN per slide averaged
  over the patient's slides);
- ``mri``: the mpMRI vector (``features.mri``), when a ``volume_encoder`` is given;
- ``rna``: the raw gene matrix aligned over patients (the union of their genes,
  ``rnaseq.shared_genes``; the gene order is saved in ``out/rna_genes.txt``). Every
  *learned* transform (which genes are measured by enough patients, scaling, gene
  selection, PCA) stays in the training pipeline, fitted on training folds only.

Provenance: ``out/extraction.json`` records how the features were made (layout, every
encoder's spec, weights file and checksum — ``random-init:<hash>`` for a seeded random
initialisation, allowed only with ``allow_random_weights`` — tile µm/px, tile size, tile
cap, tissue threshold, MRI preprocessing, library versions); a run folder copies it, so a
trained model can extract its inputs again the same way (``modalsurv challenge``). The
store itself keeps the encoder and these settings per modality and refuses to mix in
features made otherwise.

Robustness: one process at a time per store (``utils.exclusive_lock``); a patient's
modalities of one source group (slides → ``wsi`` + ``slide``, MRI → ``mri``) are written
together, each patient with the fingerprint of its source files, and only patients flagged
complete in the store count as done, so a killed run resumes where it stopped and a
second cohort whose ids overlap is never mistaken for finished work; one patient's failure
(corrupt slide, unreadable volume) is recorded in the report with its file and reason and
the rest continue. One unreadable slide of a patient whose other slides give tiles costs
only that slide: the rest are stored, the slide is an unusable input of the patient, and
the record keeps the patient (``unusable_slides``), so every later run tries that slide
again (fixed or not) instead of taking the partial bag for finished work. Writes are batched
(``flush_every`` patients per store write) because each store write copies the file. At
the end each modality is packed (``FeatureStore.pack``: one memory-mappable dataset, so
loading all patients is one contiguous read).

Progress callback: ``progress(event, **info)`` (nothing below cli.py prints):

- ``"start"``: ``total`` (patients to process), ``skipped`` (already complete);
- ``"patient"``: ``patient``, ``index`` (1-based), ``total`` (a patient begins);
- ``"slide"``: ``patient``, ``path``, ``tiles``, ``seconds``, ``tiles_per_s``;
- ``"batch"``: ``patient``, ``path``, ``tiles_done``, ``tiles_total`` (each tile batch);
- ``"done"``: ``patient``, ``done``, ``total``, ``seconds``;
- ``"failed"``: ``patient``, ``path``, ``reason``;
- ``"finish"``: ``report`` (the ExtractReport).

Image cache (``tile_cache`` / ``volume_cache``, for fine-tuning an encoder in training):
the uint8 tiles of every slide (the store's bag order, with their coordinates) and the
preprocessed MRI volumes (S, z, y, x) are also written, per patient, to an
``features.tile_cache.ImageCache`` (default ``out/image_cache``; the record's
``image_cache`` names it). A patient the store already holds but the cache lacks is only
tiled (or its MRI prepared) again, not re-encoded; its tiles must land on the store's
coordinates, else it is a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.devices import resolve_device
from modalsurv.errors import (
    ConfigError,
    DataError,
    FeatureError,
    LayoutError,
    Problem,
    WeightsError,
)
from modalsurv.features import encoders as enc
from modalsurv.features import wsi
from modalsurv.features.mri import MriConfig, embed_mri, mri_dim, prepare_mri
from modalsurv.features.tile_cache import DEFAULT_FOLDER, ImageCache
from modalsurv.folders import STORE, refuse_other_kind
from modalsurv.io.chimera import LAYOUTS, MRI_SEQUENCES, no_patient_found
from modalsurv.io.fingerprint import (
    file_fingerprint,
    mri_sources,
    slide_sources,
    sources_fingerprint,
)
from modalsurv.io.layouts import check_layout, chimera_task
from modalsurv.io.store import EXTRACTION_RECORD, FeatureStore, read_extraction_record
from modalsurv.resume import remove_stale_temporaries
from modalsurv.utils import Progress, atomic_write_text, exclusive_lock


@dataclass
class PatientFiles:
    """One patient's raw files, whatever the layout."""

    patient: str
    slides: list[Path] = field(default_factory=list)
    masks: list[Path | None] = field(default_factory=list)
    mri: dict[str, Path | None] = field(default_factory=dict)
    mri_mask: Path | None = None
    rna: Path | None = None


@dataclass
class Failure:
    """A patient that could not be extracted: which file, and why."""

    patient: str
    path: str | None
    reason: str

    def __str__(self) -> str:
        return f"patient {self.patient!r}; file {self.path}: {self.reason}"


@dataclass
class ExtractReport:
    """What a run did: patients done, skipped (already complete), failed (with reason)."""

    out: Path
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete from the same files
    cached: list[str] = field(default_factory=list)  # stored before; only their images cached now
    no_images: list[str] = field(default_factory=list)  # nothing to extract (e.g. RNA only)
    failures: list[Failure] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # from layout discovery
    n_tiles: int = 0
    tile_seconds: float = 0.0
    seconds: float = 0.0
    modalities: list[str] = field(default_factory=list)

    @property
    def tiles_per_s(self) -> float:
        return self.n_tiles / self.tile_seconds if self.tile_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def _kept(self) -> set[str]:
        return {*self.done, *self.skipped, *self.cached, *self.no_images}

    @property
    def failed_patients(self) -> list[str]:
        """Patients that got nothing from this run because of a failure (a failure of one
        input of a patient whose other inputs were extracted is not one of them)."""
        kept = self._kept()
        return sorted({f.patient for f in self.failures if f.patient not in kept and f.patient != "*"})

    @property
    def unusable_inputs(self) -> list[Failure]:
        """Failures of one input (an RNA file, a slide) of a patient extracted otherwise."""
        kept = self._kept()
        return [f for f in self.failures if f.patient in kept or f.patient == "*"]


# ---------------------------------------------------------------------------- discovery
def _opt(p: Any) -> Path | None:
    if p is None or (isinstance(p, float) and np.isnan(p)) or str(p).strip() == "":
        return None
    return Path(str(p))


def _chimera_patients(root: Path, task: int, problems: list[Problem]) -> list[PatientFiles]:
    from modalsurv.io.chimera import LAYOUTS, discover

    paths = discover(root, LAYOUTS[task], problems, raw=True)  # extraction embeds the slides
    out = []
    for pid, row in paths.iterrows():
        pf = PatientFiles(str(pid), [Path(s) for s in row["slides"]],
                          [_opt(m) for m in row["masks"]], rna=_opt(row["rna"]))  # fmt: skip
        if f"mri_{MRI_SEQUENCES[0]}" in row.index:
            pf.mri = {q: _opt(row[f"mri_{q}"]) for q in MRI_SEQUENCES}
            pf.mri_mask = _opt(row["mri_mask"])
        out.append(pf)
    return out


def _manifest_patients(path: Path) -> list[PatientFiles]:
    """Raw-file columns of a manifest CSV: ``patient``, ``wsi_path`` (slides, ``;``
    separated), ``wsi_mask_path`` (same order), ``mri_t2w_path`` / ``mri_adc_path`` /
    ``mri_hbv_path``, ``mri_mask_path``, ``rna_path``; relative paths are resolved against
    the manifest's folder. (io.manifest validates *feature* files and rejects raw images,
    so raw paths are read here.)"""
    if not path.is_file():
        raise LayoutError("manifest file not found", path=path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    df.columns = [str(c).strip() for c in df.columns]
    if "patient" not in df.columns:
        raise LayoutError(f"manifest needs a 'patient' column; found {list(df.columns)}",
                          path=path, field="patient")  # fmt: skip

    def res(cell: str) -> Path | None:
        cell = cell.strip()
        if not cell:
            return None
        p = Path(cell).expanduser()
        return p if p.is_absolute() else path.parent / p

    # one id on two rows would be extracted twice, the second silently replacing the first
    lines: dict[str, list[int]] = {}
    for i, pid in enumerate(df["patient"]):
        lines.setdefault(str(pid).strip(), []).append(i + 2)  # 1-based, after the header
    if "" in lines:
        raise LayoutError(f"empty patient id on row(s) {lines['']}", path=path, field="patient")
    dup = {pid: rows for pid, rows in lines.items() if len(rows) > 1}
    if dup:
        pid, rows = next(iter(dup.items()))
        more = f" ({len(dup) - 1} more duplicated id(s))" if len(dup) > 1 else ""
        raise LayoutError(f"duplicate patient id on rows {rows}{more}: each patient must be"
                          " one row (list its slides ';'-separated)", path=path, patient=pid,
                          field="patient")  # fmt: skip
    out = []
    for _, row in df.iterrows():

        def get(c: str, row: pd.Series = row) -> str:
            return str(row[c]) if c in df.columns else ""

        slides = [p for p in (res(c) for c in get("wsi_path").split(";")) if p is not None]
        masks = [res(c) for c in get("wsi_mask_path").split(";")] if get("wsi_mask_path") else []
        masks = (masks + [None] * len(slides))[: len(slides)]
        mri = {q: res(get(f"mri_{q}_path")) for q in MRI_SEQUENCES}
        out.append(PatientFiles(str(row["patient"]).strip(), slides, masks,
                                mri if any(mri.values()) else {}, res(get("mri_mask_path")),
                                res(get("rna_path"))))  # fmt: skip
    return out


def discover_patients(layout: str, root: str | Path,
                      problems: list[Problem] | None = None) -> list[PatientFiles]:  # fmt: skip
    """The raw files of every patient in ``root`` for a layout name."""
    problems = problems if problems is not None else []
    root = Path(root)
    task = chimera_task(check_layout(layout))
    if task is not None:
        return _chimera_patients(root, task, problems)
    return _manifest_patients(root)


# ---------------------------------------------------------------------------- slides
@dataclass
class SlideSettings:
    mpp: float = 0.5
    tile_size: int = 224
    max_tiles: int | None = 500
    min_tissue: float = 0.5
    sampling: wsi.Sampling = "uniform"
    seed: int = 0
    batch_size: int = 32
    workers: int = 2
    mpp_override: float | None = None
    backend: str = "auto"


def encode_slide(path: Path, mask: Path | None, tile_encoder: enc.TileEncoder | None,
                 s: SlideSettings, on_batch: Callable[[int, int], None] | None = None,
                 keep_tiles: list[np.ndarray] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, wsi.TilePlan]:  # fmt: skip
    """Tile embeddings (K × D float32) and level-0 coords (K × 2) of one slide, streamed
    batch by batch (memory: the K × D result plus two tile batches). ``keep_tiles``
    collects the uint8 tile batches too (the image cache), so it adds the slide's K
    tiles, and joining them for the cache briefly twice that; ``tile_encoder=None`` only
    tiles (the embeddings are then K × 0)."""
    with wsi.Slide(path, mpp_override=s.mpp_override, backend=s.backend) as slide:
        tm = wsi.tissue_mask(slide, mask)
        plan = wsi.plan_tiles(slide, tm, s.mpp, s.tile_size, s.max_tiles, s.min_tissue,
                              s.sampling, s.seed)  # fmt: skip
        k = len(plan.coords)
        feats = np.empty((k, 0 if tile_encoder is None else tile_encoder.dim), dtype=np.float32)
        i = 0
        for tiles, _ in wsi.iter_tile_batches(slide, plan, s.batch_size, s.workers):
            if tile_encoder is not None:
                feats[i : i + len(tiles)] = tile_encoder.encode(tiles)
            if keep_tiles is not None:
                keep_tiles.append(tiles)
            i += len(tiles)
            if on_batch is not None:
                on_batch(i, k)
    return feats, plan.coords.copy(), plan


# ---------------------------------------------------------------------------- writer
class _Buffer:
    """Encoded patients waiting to be written, one store write per modality per flush."""

    def __init__(self, store: FeatureStore, provenance: dict[str, tuple[str, str]]) -> None:
        self.store = store
        self.prov = provenance  # modality → (encoder, checksum)
        self.feats: dict[str, dict[str, np.ndarray]] = {}
        self.coords: dict[str, dict[str, np.ndarray]] = {}
        self.sources: dict[str, dict[str, str]] = {}
        self.patients: list[str] = []
        self.partial: dict[str, dict[str, Any] | None] = {}  # slides written: left-out ones

    def add(self, patient: str, results: dict[str, tuple[np.ndarray, np.ndarray | None]],
            fingerprints: dict[str, str], partial: dict[str, Any] | None = None) -> None:  # fmt: skip
        for m, (x, c) in results.items():
            self.feats.setdefault(m, {})[patient] = x
            if c is not None:
                self.coords.setdefault(m, {})[patient] = c
            self.sources.setdefault(m, {})[patient] = fingerprints[m]
        if "wsi" in results:
            self.partial[patient] = partial
        self.patients.append(patient)

    def flush(self) -> list[str]:
        # a patient stored without some slides is marked before its features are written
        # (a crash in between never leaves a partial bag unmarked), cleared after
        root = self.store.root
        _update_unusable(root, {p: e for p, e in self.partial.items() if e is not None})
        for m, feats in self.feats.items():
            encoder, checksum = self.prov[m]
            self.store.write_many(m, feats, self.coords.get(m), encoder=encoder,
                                  checksum=checksum, dtype="float32",
                                  fingerprints=self.sources.get(m))  # fmt: skip
        _update_unusable(root, {p: None for p, e in self.partial.items() if e is None})
        written = self.patients
        self.feats, self.coords, self.sources, self.patients = {}, {}, {}, []
        self.partial = {}
        return written


# ---------------------------------------------------------------------------- sources
# modalities extracted together from one group of source files
GROUPS: dict[str, tuple[str, ...]] = {"slides": ("wsi", "slide"), "mri": ("mri",)}


def _group_sources(pf: PatientFiles, group: str) -> list[Path | None]:
    if group == "slides":
        return slide_sources(pf.slides, pf.masks or [])
    return mri_sources(pf.mri, pf.mri_mask)


def _changed_file(pf: PatientFiles, group: str, stored: str) -> str | None:
    """The first of the patient's ``group`` files the stored fingerprint does not hold (a
    slide added or changed since), else its first file. Why: the refusal named the first
    slide, or 'None' for an MRI without ADC, whichever file had changed."""
    files = _group_sources(pf, group)
    was = set(stored.split("|"))
    new = [f for f in files if f is not None and file_fingerprint(f) not in was]
    first = new or [f for f in files if f is not None]
    return str(first[0]) if first else None


def patient_fingerprint(pf: PatientFiles, group: str) -> str:
    """What a patient's modalities of ``group`` are computed from, as one string (the same
    string ``io.chimera`` compares when a CHIMERA folder is read with this store)."""
    return sources_fingerprint(_group_sources(pf, group))


#: what this code makes of the same tile / MRI settings, recorded with them: bumped when
#: tiles are chosen or volumes prepared otherwise, so that a store, an image cache, a run
#: or a model made before is never mixed with features made now (2: the tile cap spreads
#: along a Hilbert curve; z-scores in float64 over the voxels a sequence covers, voxels it
#: does not cover neutral; tiles 3: CONCH's tiles resized bicubic, as CONCH's own
#: transform, not bilinear; other tile encoders unchanged). A record without one was made
#: by revision 1.
TILE_REVISION = 3
MRI_REVISION = 2


# the extraction record's patients stored without some of their slides (unreadable ones):
# patient → {"fingerprint": of all its slide sources then, "others": the same with the
# left-out slides and their masks blanked, "left_out": [[slide, mask], ...]}
UNUSABLE = "unusable_slides"


def _others_fingerprint(pf: PatientFiles, left_out: Sequence[Sequence[Any]]) -> str:
    """The slide sources' fingerprint with the left-out slides (and masks) blanked: the
    files that must be unchanged for a later run to retry them as the same patient's."""
    gone = {str(p) for pair in left_out for p in pair if p is not None}
    return sources_fingerprint([None if p is None or str(p) in gone else p
                                for p in _group_sources(pf, "slides")])  # fmt: skip


def _unusable_entry(pf: PatientFiles, fingerprint: str,
                    left_out: list[tuple[Path, Path | None]]) -> dict[str, Any] | None:  # fmt: skip
    """The record of a patient whose slides were stored without ``left_out`` (None: all
    its slides are stored)."""
    if not left_out:
        return None
    pairs = [[str(s), None if m is None else str(m)] for s, m in left_out]
    return {"fingerprint": fingerprint, "others": _others_fingerprint(pf, pairs),
            "left_out": pairs}  # fmt: skip


def _retry_unusable(entry: dict[str, Any] | None, have: list[str | None],
                    pf: PatientFiles) -> bool:  # fmt: skip
    """Whether a patient stored without some unreadable slides is extracted again: the
    store holds exactly that extraction and only the left-out slides (or their masks) may
    have changed since. A plain rerun so retries them, fixed or not; a change to any other
    file is a changed patient (``reextract_changed``), as for everyone."""
    if not entry or any(h != entry.get("fingerprint") for h in have):
        return False
    try:
        return _others_fingerprint(pf, entry.get("left_out") or []) == entry.get("others")
    except OSError:
        return False


def _update_unusable(out: Path, entries: dict[str, dict[str, Any] | None]) -> None:
    """Mark (an entry) or clear (None) patients in the record's :data:`UNUSABLE`; the
    record is rewritten only when that changes."""
    if not entries:
        return
    record = read_extraction_record(out) or {}
    had = dict(record.get(UNUSABLE) or {})
    now = {p: e for p, e in {**had, **entries}.items() if e is not None}
    if now != had:
        record[UNUSABLE] = now
        atomic_write_text(Path(out) / EXTRACTION_RECORD, json.dumps(record, indent=1))


# ---------------------------------------------------------------------------- record
def _encoder_entry(spec: str, encoder: Any, weights: str | Path | None,
                   kwargs: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"spec": spec, "name": encoder.name, "dim": int(encoder.dim),
            "checksum": encoder.checksum, "random_weights": enc.is_random_init(encoder.checksum),
            "weights": None if weights is None else str(Path(weights).resolve()),
            "weights_name": None if weights is None else Path(weights).name,
            "kwargs": dict(kwargs or {})}  # fmt: skip


def _merge_record(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A store extracted in several runs (e.g. MRI added later) keeps one record: the
    store's own checks have already refused any conflicting setting."""
    out = dict(old or {})
    for k, v in new.items():
        if k == "modalities":
            out[k] = {**out.get(k, {}), **v}
        elif v is not None or k not in out:
            out[k] = v
    # the random-init encoders are those of the merged record: an MRI encoder kept from an
    # earlier run is still random when this run extracted slides only
    kept = [e["name"] for e in (out.get("tile_encoder"), out.get("volume_encoder"))
            if isinstance(e, dict) and enc.is_random_init(str(e.get("checksum", "")))]  # fmt: skip
    out["random_weights"] = list(dict.fromkeys([*new.get("random_weights", []), *kept]))
    return out


# ---------------------------------------------------------------------------- run
def _needs(pf: PatientFiles, volume: bool) -> list[str]:
    """The source groups this patient has files for (and an encoder is configured for)."""
    groups = ["slides"] if pf.slides else []
    if volume and any(pf.mri.values()):
        groups.append("mri")
    return groups


def run_extract(
    layout: str,
    root: str | Path,
    out: str | Path,
    *,
    tile_encoder: str,
    tile_weights: str | Path | None = None,
    tile_encoder_kwargs: dict[str, Any] | None = None,
    slide_encoder: str = "mean",
    slide_weights: str | Path | None = None,
    volume_encoder: str | None = None,
    volume_weights: str | Path | None = None,
    allow_random_weights: bool = False,
    mpp: float = 0.5,
    tile_size: int = 224,
    max_tiles: int | None = 500,
    min_tissue: float = 0.5,
    sampling: wsi.Sampling = "uniform",
    seed: int = 0,
    mpp_override: float | None = None,
    batch_size: int = 32,
    workers: int = 2,
    limit: int | None = None,
    device: str = "cpu",
    mri: MriConfig | None = None,
    rna: bool = True,
    flush_every: int = 8,
    reextract_changed: bool = False,
    progress: Progress | None = None,
    patients: Sequence[PatientFiles] | None = None,
    tile_cache: bool = False,
    volume_cache: bool = False,
    cache_dir: str | Path | None = None,
) -> ExtractReport:
    """Extract every patient's embeddings from ``root`` (a CHIMERA task folder or a
    manifest CSV) into the FeatureStore at ``out``; see the module docstring.

    Raises (before any work) when the configuration is wrong: unknown encoder, weights
    that do not load, an encoder without weights unless ``allow_random_weights``, TITAN
    inputs that do not match, a store that already holds another encoder's features or
    features made with other settings, no patient at all, or a store that another
    process is extracting into. Per-patient problems never raise.

    Resume: a patient's modality group (slides → ``wsi`` + ``slide``; MRI → ``mri``) is
    skipped when the store holds it complete *and* made from the same source files
    (:func:`patient_fingerprint`). A patient already stored from other files (another
    cohort with overlapping ids, or files that changed) is a failure naming both, unless
    ``reextract_changed`` re-extracts it. A patient stored without an unreadable slide is
    extracted again on every run while only that slide (or its mask) differs, or nothing.

    ``tile_cache`` / ``volume_cache`` also write the images the encoders saw to an image
    cache (``cache_dir``, default ``out/image_cache``; see the module docstring).
    """
    arguments = dict(locals())
    check_layout(layout)  # before the store folder is made
    refuse_other_kind(out, STORE)  # a run or grid folder, an exported model: not a store
    caching = cache_dir is not None and (tile_cache or volume_cache)
    made = [Path(p) for p in (out, cache_dir if caching else None)
            if p is not None and not Path(p).exists()]  # fmt: skip
    try:
        with (exclusive_lock(out, "feature store"),
              exclusive_lock(cache_dir, "image cache") if caching else contextlib.nullcontext()):  # fmt: skip
            return _run_extract(**arguments)
    except (DataError, ConfigError):
        # a refused command leaves no folder behind that holds nothing but its lock
        for folder in made:
            _remove_if_only_lock(folder)
        raise


def _remove_if_only_lock(folder: Path) -> None:
    """Remove a folder this command made when it holds nothing but the lock file."""
    lock = folder / ".modalsurv.lock"
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} <= {lock.name}:
            lock.unlink(missing_ok=True)
            folder.rmdir()


# the option behind each encoder error field (features.encoders, features.presets)
_OPTION_FIELDS = {"tile_encoder": "--tile-encoder", "tile_encoder_kwargs": "--timm-kwargs",
                  "slide_encoder": "--slide-encoder", "volume_encoder": "--volume-encoder"}  # fmt: skip
# the option behind each extraction setting a store records
_SETTING_OPTIONS = {"mpp": "--mpp", "mpp_override": "--slide-mpp", "tile_size": "--tile-size", "max_tiles_per_slide": "--max-tiles",
                    "min_tissue": "--min-tissue", "encoder_kwargs": "--timm-kwargs",
                    "slide_encoder": "--slide-encoder", "size": "--mri-size",
                    "orientation": "--mri-orientation",
                    # made by an earlier extraction revision: only a new store helps
                    "revision": "--out"}  # fmt: skip
_ENCODER_OPTIONS = {"wsi": "--tile-encoder/--tile-weights/--timm-kwargs",
                    "slide": "--slide-encoder/--slide-weights",
                    "mri": "--volume-encoder/--volume-weights"}  # fmt: skip


@contextlib.contextmanager
def _option_errors() -> Iterator[None]:
    """An unknown encoder, or TITAN on tiles it was not trained on, is what the command
    line asked for: a usage error naming the option (exit 2), not a data error. A weights
    file that does not load stays a data error."""
    try:
        yield
    except WeightsError:
        raise
    except DataError as exc:
        option = _OPTION_FIELDS.get(exc.field or "")
        if option is None:
            raise
        where = f" ({exc.path})" if exc.path else ""
        raise ConfigError(f"{option}: {exc.reason}{where}") from exc


@contextlib.contextmanager
def _store_options(store: FeatureStore, modality: str, settings: dict[str, Any]) -> Iterator[None]:
    """A store that holds features made with another encoder or other settings refuses this
    run's: the options asked for it, so a usage error naming them."""
    try:
        yield
    except FeatureError as exc:
        if exc.field == "settings":
            have = store.meta(modality).get("settings") or {}
            diff = sorted(k for k in {*have, *settings} if have.get(k) != settings.get(k))
            names = [_SETTING_OPTIONS.get(k, k) for k in diff] if have else ["--out"]
        elif exc.field in ("encoder", "checksum", "dim"):
            names = [_ENCODER_OPTIONS[modality]]
        else:
            raise
        raise ConfigError(f"{', '.join(dict.fromkeys(names))}: {exc}") from exc


def _run_extract(
    layout: str, root: str | Path, out: str | Path, *, tile_encoder: str,
    tile_weights: str | Path | None, tile_encoder_kwargs: dict[str, Any] | None,
    slide_encoder: str, slide_weights: str | Path | None, volume_encoder: str | None,
    volume_weights: str | Path | None, allow_random_weights: bool, mpp: float, tile_size: int,
    max_tiles: int | None, min_tissue: float, sampling: wsi.Sampling, seed: int,
    mpp_override: float | None, batch_size: int, workers: int, limit: int | None,
    device: str, mri: MriConfig | None, rna: bool, flush_every: int, reextract_changed: bool,
    progress: Progress | None, patients: Sequence[PatientFiles] | None, tile_cache: bool,
    volume_cache: bool, cache_dir: str | Path | None,
) -> ExtractReport:
    """run_extract's body, under the store's process lock."""
    t_start = time.perf_counter()
    emit = progress or (lambda event, **info: None)
    store = FeatureStore(out)
    report = ExtractReport(Path(out))
    todo = list(patients) if patients is not None else discover_patients(layout, root,
                                                                        report.problems)  # fmt: skip
    if not todo:
        errors = "; ".join(str(p) for p in report.problems if p.severity == "error")
        task = chimera_task(check_layout(layout))  # a CHIMERA layout: say what was looked for
        what = (f"no patient found for layout {layout!r}" if task is None else
                f"layout {layout!r}: {no_patient_found(root, LAYOUTS[task])}")  # fmt: skip
        raise LayoutError(what + (f" ({errors})" if errors else ""), path=root)
    if limit is not None:
        todo = todo[: max(int(limit), 0)]
    mri_cfg = mri or MriConfig()
    device = str(resolve_device(device, what="device"))  # auto: CUDA where present
    settings = SlideSettings(mpp, tile_size, max_tiles, min_tissue, sampling, seed, batch_size,
                             workers, mpp_override)  # fmt: skip
    # the tile encoder's own options (input size, normalisation) change its features as much
    # as the geometry does: part of the settings a store refuses to mix (kept only when set,
    # so stores written before are still resumed)
    kwargs = json.loads(json.dumps(dict(tile_encoder_kwargs or {})))
    tile_settings = {"mpp": mpp, "tile_size": tile_size, "max_tiles_per_slide": max_tiles,
                     "min_tissue": min_tissue, "sampling": sampling, "seed": seed,
                     "mpp_override": mpp_override, "revision": TILE_REVISION,
                     **({"encoder_kwargs": kwargs} if kwargs else {})}  # fmt: skip

    # encoders and provenance: all configuration errors surface here, before any work
    prov: dict[str, tuple[str, str]] = {}
    tile = slide_enc = vol = None
    record: dict[str, Any] = {"format": 1, "layout": str(layout), "modalities": {},
                              "tiles": None, "tile_encoder": None, "slide_encoder": None,
                              "volume_encoder": None, "mri": None}  # fmt: skip
    with _option_errors():  # what the command line asked for: exit 2, the option named
        if any(pf.slides for pf in todo):
            tile = enc.get_tile_encoder(tile_encoder, tile_weights, device=device,
                                        **dict(tile_encoder_kwargs or {}))  # fmt: skip
            if slide_encoder == "titan":
                enc.validate_titan_inputs(tile.dim, tile_size, mpp, tile.name)
            want_px, want_mpp = getattr(tile, "tile_size", None), getattr(tile, "mpp", None)
            if want_px and want_mpp and (tile_size != want_px or abs(mpp - want_mpp) > 0.1 * want_mpp):
                report.problems.append(Problem(
                    "warning", f"{tile.name} expects {want_px}-px tiles at {want_mpp} µm/px (its"
                    f" model card); extracting {tile_size}-px tiles at {mpp} µm/px",
                    field="tile_size"))  # fmt: skip
            slide_enc = enc.get_slide_encoder(slide_encoder, tile.dim, slide_weights, device)
            prov["wsi"] = (tile.name, tile.checksum)
            slide_sum = (tile.checksum if slide_encoder == "mean"
                         else f"{slide_enc.checksum}+{tile.checksum}")  # fmt: skip
            prov["slide"] = (f"{slide_enc.name}[{tile.name}]", slide_sum)
            record["tiles"] = tile_settings
            record["tile_encoder"] = _encoder_entry(tile_encoder, tile, tile_weights,
                                                    tile_encoder_kwargs)  # fmt: skip
            record["slide_encoder"] = {"spec": slide_encoder, "name": slide_enc.name,
                                       "dim": int(slide_enc.dim), "checksum": slide_enc.checksum,
                                       "weights": None if slide_weights is None
                                       else str(Path(slide_weights).resolve()),
                                       "weights_name": None if slide_weights is None
                                       else Path(slide_weights).name}  # fmt: skip
        if volume_encoder is not None and any(any(pf.mri.values()) for pf in todo):
            vol = enc.get_volume_encoder(volume_encoder, volume_weights, device=device)
            name = f"{vol.name}[{'+'.join(mri_cfg.sequences)},{mri_cfg.combine}]"
            prov["mri"] = (name, vol.checksum)
            record["mri"] = mri_settings(mri_cfg)
            record["volume_encoder"] = _encoder_entry(volume_encoder, vol, volume_weights)
    random = [e.name for e in (tile, vol) if e is not None and enc.is_random_init(e.checksum)]
    if random and not allow_random_weights:
        raise ConfigError(
            f"encoder(s) {', '.join(random)} have no weights (a random initialisation): their"
            " features carry no pretrained knowledge. Give the weights (--tile-weights /"
            " --volume-weights), or pass --random-weights to extract with them anyway (it is"
            " then recorded in the store, the run folder and the report)")
    record["random_weights"] = random
    if tile is not None and slide_enc is not None:
        with _store_options(store, "wsi", tile_settings):
            store.set_meta("wsi", tile.name, tile.checksum, tile.dim, "float32",
                           settings=tile_settings)  # fmt: skip
        slide_settings = {**tile_settings, "slide_encoder": slide_encoder}
        with _store_options(store, "slide", slide_settings):
            store.set_meta("slide", prov["slide"][0], slide_sum, slide_enc.dim, "float32",
                           settings=slide_settings)  # fmt: skip
        record["modalities"].update({"wsi": prov["wsi"][0], "slide": prov["slide"][0]})
    if vol is not None:
        with _store_options(store, "mri", record["mri"]):
            store.set_meta("mri", prov["mri"][0], vol.checksum, mri_dim(vol.dim, mri_cfg),
                           "float32", settings=record["mri"])  # fmt: skip
        record["modalities"]["mri"] = prov["mri"][0]
    if rna and any(pf.rna is not None for pf in todo):
        record["modalities"]["rna"] = "raw:genes"
    # the image cache (after the store accepted the encoders: it refuses the same mixes)
    cache, cached = _open_cache(out, cache_dir, tile_cache and tile is not None,
                                volume_cache and vol is not None, record)  # fmt: skip
    if cache is not None:
        old = (read_extraction_record(out) or {}).get("image_cache") or {}
        kinds = sorted(set(cached) | (set(old.get("modalities", []))
                                      if old.get("path") == str(cache.root.resolve()) else set()))  # fmt: skip
        record["image_cache"] = {"path": str(cache.root.resolve()), "modalities": kinds}
    record["versions"] = _versions()
    atomic_write_text(Path(out) / EXTRACTION_RECORD,
                      json.dumps(_merge_record(read_extraction_record(out), record), indent=1))

    # resume: which source groups each patient still needs (see run_extract)
    stored = {m: store.fingerprints(m) for m in ("wsi", "slide", "mri")}
    unusable = (read_extraction_record(out) or {}).get(UNUSABLE) or {}
    pending: list[tuple[PatientFiles, list[str], dict[str, str], list[str]]] = []
    for pf in todo:
        groups, prints, images = [], {}, []
        if not _needs(pf, vol is not None):
            report.no_images.append(pf.patient)
            continue
        for g in _needs(pf, vol is not None):
            try:
                prints[g] = patient_fingerprint(pf, g)
            except OSError as exc:  # a listed file that is gone: this patient's group only
                report.failures.append(Failure(pf.patient, getattr(exc, "filename", None),
                                               f"{'/'.join(GROUPS[g])}: cannot read the source"
                                               f" file ({exc.strerror or exc})"))  # fmt: skip
                continue
            have = [stored[m].get(pf.patient, "absent") for m in GROUPS[g]]
            if g == "slides" and _retry_unusable(unusable.get(pf.patient), have, pf):
                groups.append(g)  # stored without an unreadable slide: try it again
                continue
            if all(h == prints[g] for h in have) or all(h is None for h in have):
                # done (None: written by an older version, without a record); only the
                # images may still be missing from the cache
                kind = CACHED[g]
                if cache is not None and kind in cached and (
                        cache.fingerprint(kind, pf.patient) != prints[g]):
                    images.append(g)
                continue
            changed = [h for h in have if h not in ("absent", prints[g], None)]
            if changed and not reextract_changed:
                report.failures.append(Failure(
                    pf.patient, _changed_file(pf, g, changed[0]),
                    f"the store already holds {'/'.join(GROUPS[g])} features for this patient"
                    f" made from other source files (stored {changed[0]}; now {prints[g]});"
                    " another cohort with the same ids, or changed files: use a new store, or"
                    " --reextract-changed to replace them"))  # fmt: skip
                continue
            groups.append(g)
        if groups or images:
            pending.append((pf, groups, prints, images))
        elif not any(f.patient == pf.patient for f in report.failures):
            report.skipped.append(pf.patient)
    report.total = len(pending)
    emit("start", total=len(pending), skipped=len(report.skipped))

    buf = _Buffer(store, prov)
    masked = sum(pf.mri_mask is not None for pf in todo if any(pf.mri.values()))
    for i, (pf, groups, prints, images) in enumerate(pending, 1):
        emit("patient", patient=pf.patient, index=i, total=len(pending))
        t0 = time.perf_counter()
        results: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        fingerprints: dict[str, str] = {}
        partial: dict[str, Any] | None = None  # slides left out of the stored ones
        for g in [*groups, *images]:
            current: Path | None = None
            keep = cache is not None and CACHED[g] in cached
            try:
                if g in images and cache is not None:  # stored already: only the images
                    current = pf.slides[0] if g == "slides" else pf.mri.get(mri_cfg.sequences[0])
                    _cache_only(pf, g, cache, store, settings, mri_cfg, prints[g],
                                unusable.get(pf.patient))  # fmt: skip
                    if pf.patient not in report.cached:
                        report.cached.append(pf.patient)
                elif g == "slides" and tile is not None and slide_enc is not None:
                    current = pf.slides[0]
                    kept: list[np.ndarray] | None = [] if keep else None
                    left: list[tuple[Path, Path | None]] = []
                    got = _encode_slides(pf, tile, slide_enc, settings, report, emit, kept,
                                         left)  # fmt: skip
                    _check_finite(got, pf.patient, current)
                    if cache is not None and kept is not None:
                        cache.write_tiles(pf.patient, np.concatenate(kept), got["wsi"][1],
                                          prints[g])  # fmt: skip
                    results.update(got)
                    fingerprints.update(dict.fromkeys(GROUPS[g], prints[g]))
                    partial = _unusable_entry(pf, prints[g], left)
                elif g == "mri" and vol is not None:
                    current = pf.mri.get(mri_cfg.sequences[0]) or pf.mri_mask
                    vols = prepare_mri(pf.mri, pf.mri_mask, mri_cfg, pf.patient)
                    if cache is not None and keep:
                        cache.write_volumes(pf.patient, np.stack(list(vols.values())), prints[g])
                    got = {"mri": (embed_mri(vols, vol, mri_cfg.combine), None)}
                    _check_finite(got, pf.patient, current)
                    results.update(got)
                    fingerprints["mri"] = prints[g]
                    if pf.mri_mask is None and masked:
                        report.problems.append(_unmasked_mri(pf, masked, mri_cfg))
            except Exception as exc:  # one patient's failure never stops the batch
                path = getattr(exc, "path", None) or (None if current is None else str(current))
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                if len(groups) > 1 or g == "mri":
                    reason = f"{'/'.join(GROUPS[g])}: {reason}"
                report.failures.append(Failure(pf.patient, path, reason))
                emit("failed", patient=pf.patient, path=path, reason=reason)
        if not results:
            if pf.patient in report.cached:
                emit("done", patient=pf.patient, done=len(report.done) + len(buf.patients),
                     total=len(pending), seconds=time.perf_counter() - t0)  # fmt: skip
            continue
        buf.add(pf.patient, results, fingerprints, partial)
        if len(buf.patients) >= max(flush_every, 1):
            report.done.extend(buf.flush())
        emit("done", patient=pf.patient, done=len(report.done) + len(buf.patients),
             total=len(pending), seconds=time.perf_counter() - t0)  # fmt: skip
    report.done.extend(buf.flush())

    if rna:
        _extract_rna(todo, store, report)
    # one contiguous, memory-mappable dataset per modality for fast loading; a no-op when
    # nothing was written since the last pack. Every feature is already stored safely
    # here, so if packing fails (disk full) a rerun only retries the pack.
    for m in [*prov, *(["rna"] if rna else [])]:
        if store.exists(m):
            store.pack(m)
    report.modalities = store.modalities()
    report.seconds = time.perf_counter() - t_start
    emit("finish", report=report)
    return report


def _check_finite(got: dict[str, tuple[np.ndarray, np.ndarray | None]], patient: str,
                  path: Path | None) -> None:
    """Refuse one patient's NaN or infinite features here, as that patient's failure: found
    only when the batch is written, they would stop the run for every patient."""
    for m, (x, _) in got.items():
        if not np.isfinite(x).all():
            raise DataError("features contain NaN or inf (a NaN or infinite value in the"
                            " source image?)", path=path, patient=patient, field=m)  # fmt: skip


def _slides_and_masks(pf: PatientFiles) -> list[tuple[Path, Path | None]]:
    """Each slide with its mask: a mask list shorter than the slides (``PatientFiles`` built
    by a caller) means no mask for the rest; zipped as is, those slides were dropped."""
    masks = list(pf.masks)[: len(pf.slides)]
    return list(zip(pf.slides, masks + [None] * (len(pf.slides) - len(masks)), strict=True))


def _encode_slides(pf: PatientFiles, tile: enc.TileEncoder, slide_enc: Any,
                   settings: SlideSettings, report: ExtractReport, emit: Progress,
                   keep_tiles: list[np.ndarray] | None = None,
                   left_out: list[tuple[Path, Path | None]] | None = None,
                   ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:  # fmt: skip
    """``wsi`` (every slide's tiles, slide order) and ``slide`` (the mean of the per-slide
    slide vectors) of one patient; a slide without tissue at this grid adds nothing.
    ``keep_tiles`` collects the uint8 tiles in the same order (the image cache).

    A slide that cannot be read is left out when another slide of the patient gives
    tiles (a corrupt file must not cost the patient its good slides): it is a failure of
    that input in ``report`` (an unusable input of an extracted patient) and its (slide,
    mask) is added to ``left_out``. When no slide gives tiles, the first error raises."""
    bags, crds, slide_vecs = [], [], []
    skipped: list[str] = []  # why each slide without tiles gave none
    errors: list[tuple[Path, Path | None, DataError]] = []  # slides that could not be read
    current: Path | None = None
    for sp, mp in _slides_and_masks(pf):
        current = sp
        ts = time.perf_counter()
        kept_before = None if keep_tiles is None else len(keep_tiles)
        try:
            f, c, plan = encode_slide(
                sp, mp, tile, settings,
                lambda done, tot, sp=sp, pid=pf.patient: emit("batch", patient=pid, path=str(sp),
                                                              tiles_done=done, tiles_total=tot),
                keep_tiles)  # fmt: skip
        except Exception as exc:
            err = exc if isinstance(exc, DataError) else DataError(
                f"{type(exc).__name__}: {exc}", path=sp, patient=pf.patient, field="wsi")
            if err is not exc:
                err.__cause__ = exc
            if keep_tiles is not None:  # tiles of a slide that broke half way: not cached
                del keep_tiles[kept_before:]
            errors.append((sp, mp, err))
            continue
        dt = time.perf_counter() - ts
        if len(f) == 0:
            w, h = plan.slide_size
            why = (f"no tile with ≥ {settings.min_tissue:.0%} tissue at {settings.mpp} µm/px"
                   if plan.fits else f"the slide ({w} × {h} px at {plan.slide_mpp:g} µm/px) is"
                   f" smaller than one {plan.tile_size}-px tile at {plan.mpp:g} µm/px"
                   f" ({plan.tile_size_lv0} px at its resolution)")  # fmt: skip
            where = str(sp)
            if plan.fits and mp is not None and not wsi.mask_has_tissue(mp):
                # the provided mask marks nothing: say so, naming it (not the slide)
                why, where = f"the tissue mask of {Path(sp).name} marks no tissue", str(mp)
            report.problems.append(Problem("warning", f"{why}; slide skipped", where,
                                           pf.patient, "wsi"))  # fmt: skip
            skipped.append(why)
            continue
        report.n_tiles += len(f)
        report.tile_seconds += dt
        emit("slide", patient=pf.patient, path=str(sp), tiles=len(f), seconds=dt,
             tiles_per_s=len(f) / dt if dt > 0 else 0.0)  # fmt: skip
        bags.append(f)
        crds.append(c)
        slide_vecs.append(slide_enc.encode(f, c, plan.tile_size_lv0))
    if not bags:
        if errors:  # nothing to keep: the patient fails on its first unreadable slide
            raise errors[0][2]
        why = skipped[0] if len(set(skipped)) == 1 else (
            f"no slide has a tile with ≥ {settings.min_tissue:.0%} tissue at {settings.mpp} µm/px")
        raise DataError(why, path=current, patient=pf.patient, field="wsi")
    for sp, mp, err in errors:
        _left_out_slide(pf, sp, err, report, emit)
        if left_out is not None:
            left_out.append((sp, mp))
    return {"wsi": (np.concatenate(bags), np.concatenate(crds)),
            "slide": (np.mean(slide_vecs, axis=0).astype(np.float32), None)}


def _left_out_slide(pf: PatientFiles, slide: Path, err: DataError, report: ExtractReport,
                    emit: Progress) -> None:  # fmt: skip
    """Report one unreadable slide of a patient whose other slides were extracted: a
    failure naming the file (``report.unusable_inputs``: the command exits 1)."""
    path = err.path or str(slide)
    reason = (f"{err.field or 'wsi'}: {err.reason}; this slide is left out of the patient's"
              " wsi/slide features (its other slides are extracted; a rerun tries it again)")
    report.failures.append(Failure(pf.patient, path, reason))
    emit("failed", patient=pf.patient, path=path, reason=reason)


# ---------------------------------------------------------------------------- image cache
CACHED = {"slides": "wsi", "mri": "mri"}  # source group → the cache's modality


def _open_cache(out: str | Path, cache_dir: str | Path | None, tiles: bool, volumes: bool,
                record: dict[str, Any]) -> tuple[ImageCache | None, list[str]]:  # fmt: skip
    """The image cache to write (None when nothing is cached) and its modalities; the
    cache records the encoder and settings of each (``ImageCache.begin``)."""
    if not (tiles or volumes):
        return None, []
    cache = ImageCache(Path(cache_dir) if cache_dir is not None else Path(out) / DEFAULT_FOLDER)
    # the cache's temporaries a killed run left (a patient's tiles can be hundreds of MB):
    # this run holds the lock on the cache's folder, so no live writer owns them
    remove_stale_temporaries(cache.root)
    kinds = []
    if tiles:
        cache.begin("wsi", record["tile_encoder"], record["tiles"])
        kinds.append("wsi")
    if volumes:
        cache.begin("mri", record["volume_encoder"], record["mri"])
        kinds.append("mri")
    return cache, kinds


def _cache_only(pf: PatientFiles, group: str, cache: ImageCache, store: FeatureStore,
                settings: SlideSettings, mri_cfg: MriConfig, fingerprint: str,
                unusable: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Cache the images of a patient the store already holds: tile the slides again (no
    encoding) and check the tiles land on the stored coordinates, or prepare the MRI.
    ``unusable`` is the patient's :data:`UNUSABLE` entry: the slides it left out of the
    stored bag are left out of the cached one too (the cache holds the store's bag)."""
    if group == "mri":
        vols = prepare_mri(pf.mri, pf.mri_mask, mri_cfg, pf.patient)
        cache.write_volumes(pf.patient, np.stack(list(vols.values())), fingerprint)
        return
    kept: list[np.ndarray] = []
    coords = []
    gone = _stored_without(unusable, fingerprint)
    for sp, mp in _slides_and_masks(pf):
        if str(sp) in gone:
            continue
        try:
            _, c, _ = encode_slide(sp, mp, None, settings, keep_tiles=kept)
        except DataError:
            raise
        except Exception as exc:  # a decoder's own error names no file: this slide's
            raise DataError(f"{type(exc).__name__}: {exc}", path=sp, patient=pf.patient,
                            field="wsi") from exc  # fmt: skip
        coords.append(c)
    c = np.concatenate(coords) if coords else np.zeros((0, 2), np.int64)
    _, stored = store.read("wsi", pf.patient)
    if stored is None or len(stored) != len(c) or not np.array_equal(stored, c):
        raise DataError(f"tiling the slides again gives {len(c)} tiles that are not the"
                        f" {0 if stored is None else len(stored)} stored ones (other tile"
                        " settings than the store's?); re-extract this patient into a new"
                        " store with the cache on", path=pf.slides[0] if pf.slides else None,
                        patient=pf.patient, field="wsi")  # fmt: skip
    if not kept:
        raise DataError("no slide has a tile at the stored settings", patient=pf.patient,
                        field="wsi")  # fmt: skip
    cache.write_tiles(pf.patient, np.concatenate(kept), c, fingerprint)


def _stored_without(entry: dict[str, Any] | None, fingerprint: str) -> set[str]:
    """The slides a patient's stored bag was extracted without: those its :data:`UNUSABLE`
    entry lists, when the entry is of the stored extraction (the same source files)."""
    if not entry or entry.get("fingerprint") != fingerprint:
        return set()
    return {str(pair[0]) for pair in entry.get("left_out") or [] if pair}


def _unmasked_mri(pf: PatientFiles, masked: int, cfg: MriConfig) -> Problem:
    """The warning for a patient embedded without a prostate mask in a run whose other
    patients have one: its crop and normalisation region (the whole field of view, the
    body by Otsu) differ from theirs, so its features are not comparable with theirs."""
    return Problem("warning", f"no prostate mask: the MRI is embedded from the whole field of"
                   f" view (body region), not the mask's crop like the {masked} patient(s) of"
                   " this run with a mask; its features are not comparable with theirs",
                   str(pf.mri.get(cfg.sequences[0])), pf.patient, "mri_mask")  # fmt: skip


def mri_settings(cfg: MriConfig) -> dict[str, Any]:
    """MRI preprocessing as JSON (what the store and the extraction record keep)."""
    return {"size": list(cfg.size), "spacing": None if cfg.spacing is None else list(cfg.spacing),
            "margin_mm": cfg.margin_mm, "norm": cfg.norm, "combine": cfg.combine,
            "sequences": list(cfg.sequences), "orientation": cfg.orientation,
            "revision": MRI_REVISION}  # fmt: skip


def mri_config(settings: dict[str, Any]) -> MriConfig:
    """Inverse of :func:`mri_settings`."""
    return MriConfig(size=tuple(settings["size"]),
                     spacing=None if settings.get("spacing") is None else tuple(settings["spacing"]),
                     margin_mm=float(settings["margin_mm"]), norm=settings["norm"],
                     combine=settings["combine"], sequences=tuple(settings["sequences"]),
                     orientation=settings.get("orientation"))  # older records: none  # fmt: skip


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("modalsurv", "torch", "timm", "monai", "tiffslide", "SimpleITK"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _extract_rna(todo: Sequence[PatientFiles], store: FeatureStore,
                 report: ExtractReport) -> None:  # fmt: skip
    """Align genes over every patient with an RNA file (their union:
    ``rnaseq.shared_genes``; each training part keeps the genes most of its patients
    have) and store the raw matrix; a profile that differs from most is a problem naming
    its file."""
    from modalsurv.io.rnaseq import read_rna_json, shared_genes

    have = [pf for pf in todo if pf.rna is not None]
    if not have or all(store.has("rna", pf.patient) for pf in have):
        return
    series = []
    for pf in have:
        try:
            series.append(read_rna_json(pf.rna, pf.patient))  # type: ignore[arg-type]
        except DataError as exc:
            report.failures.append(Failure(pf.patient, exc.path, f"RNA: {exc.reason}"))
    if not series:
        return
    try:
        shared = shared_genes(series)
        files = {pf.patient: pf.rna for pf in have}
        for pid, notes in shared.notes.items():
            for note in notes:
                report.problems.append(Problem("warning", f"RNA: {note}", str(files[pid]),
                                               pid, "rna"))  # fmt: skip
        matrix = shared.matrix
        genes = [str(g) for g in matrix.index]
        checksum = hashlib.sha256("\n".join(genes).encode()).hexdigest()
        store.write_many("rna", {str(p): matrix[p].to_numpy(np.float32) for p in matrix.columns},
                         encoder="raw:genes", checksum=checksum, dtype="float32",
                         missing=True)  # fmt: skip
        atomic_write_text(Path(report.out) / "rna_genes.txt", "\n".join(genes) + "\n")
    except DataError as exc:
        report.failures.append(Failure("*", exc.path or str(report.out), f"RNA: {exc.reason}"))
