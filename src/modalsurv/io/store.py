"""FeatureStore: per-modality embeddings on disk (HDF5), patient-indexed, atomic writes.

Layout: one file per modality, ``root/{modality}.h5``. File attributes record the
provenance (``encoder``, ``checksum``, ``dim``, ``dtype``, ``kind`` = ``vector`` | ``bag``);
each patient is a group ``/patients/{quoted id}`` holding ``features`` ((D,) or (K, D),
contiguous, float16 or float32), optionally ``coords`` ((K, 2) int64), and the attribute
``complete=True`` written last. Only complete patients count as stored, which lets an
interrupted extraction resume where it stopped.

Atomicity trade-off: HDF5 cannot be updated in place crash-safely (a crash while its
metadata is being rewritten can corrupt the whole file). Every write therefore copies the
modality file to a temporary file beside it, appends there and ``os.replace``-s it onto
the original: a crash leaves the previous file intact and no half-written patient. The
copy costs O(file size), so writing 1,000 patients one by one would copy the file 1,000
times; ``write_many`` writes a whole batch with one copy (first batch: no copy at all).
Extraction should write in batches of tens of patients. One writer per modality at a
time: writes hold an advisory lock (``root/.{modality}.lock``) so two processes cannot
lose each other's patients.

Packed layout (``pack``, run at the end of extraction): per-patient datasets cost one
HDF5 read each (~0.4 ms), which dominates loading 1,000 bags. ``pack(modality)`` rewrites
the file (a new file, so the space of old datasets is reclaimed; atomic, under the writer
lock) so that every complete patient lives in one row of

- ``/packed/features``: N × Kmax × D (bags, zero-padded) or N × D (vectors), stored dtype,
  contiguous layout, storage allocated: ``load`` memory-maps it at ``get_offset()``;
- ``/packed/lengths`` (N int64: bag sizes; 1 for vectors), ``/packed/patients`` (N ids,
  sorted like ``patients()``);
- ``/packed/coords`` (N × Kmax × 2 int64, zero-padded) and ``/packed/has_coords`` (N bool),
  only when some patient has coords.

The group ``/patients/{key}`` stays (attributes unchanged, ``complete=True``) but holds the
attribute ``packed_row`` instead of datasets. A later write gives a new or overwritten
patient an ordinary group with datasets (no ``packed_row``); its old row is simply ignored
until the next ``pack``. The groups are authoritative, with one shortcut: ``/packed`` has
the attribute ``exact=True`` while the groups are exactly the pack (row i is the i-th
patient, nobody else is stored); then ``load`` trusts ``/packed/patients`` and opens no
group. Every patient write through ``write_many`` deletes ``exact``; a tool editing a
packed file by other means must delete it too (or re-``pack``). ``pack`` drops groups
not flagged complete. Files without ``/packed`` (older ones, or never packed) read per
patient as before.

Reading (``load``/``to_cohort``) opens each file once. Packed patients are copied with one
``preadv`` (same dtype) or one torch copy from the memory map (with the cast) per run of
consecutive rows, so loading everyone in order is one large read or copy; when nothing needs copying at all (every patient of
the pack, in order, stored dtype, no subsampling, no ``out``) ``load`` returns the read-only
map itself (zero copy). Either way ``load`` first asks the kernel to read the needed rows
in the background (a cold memory map otherwise reads in small page-fault chunks).
Unpacked patients are read with one low-level HDF5 read each, straight into a
preallocated padded array (or into a small scratch buffer, then a vectorised torch cast
when float16 is loaded as float32). ``load(out=...)`` fills a caller's buffer (e.g. a
reused or pinned one). See benchmarks/bench_store.py for figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import h5py
import numpy as np
import pandas as pd
import torch

from modalsurv.cohort import Cohort
from modalsurv.errors import DataError, FeatureError, LabelError
from modalsurv.utils import atomic_path

FORMAT = "modalsurv.featurestore"
VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}
_META_KEYS = ("encoder", "checksum", "dim", "dtype", "kind", "settings")
_CHECKED = ("encoder", "checksum", "dim", "dtype", "settings")


def _settings(value: Any) -> dict[str, Any] | None:
    """The ``settings`` attribute (JSON text) as a dict; None when absent."""
    if value is None:
        return None
    return dict(json.loads(value)) if isinstance(value, str) else dict(value)


def _settings_text(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True)


def _key(patient: str) -> str:
    """HDF5 group name for a patient id ('/' is a path separator, '.' a special name)."""
    pid = str(patient)
    if not pid:
        raise DataError("empty patient id", field="patient")
    name = quote(pid, safe="")
    return "%2E" + name[1:] if name.startswith(".") else name


def _patient(key: str) -> str:
    return unquote(key)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def tile_subset(patient: str, n: int, max_tiles: int, seed: int) -> np.ndarray:
    """Sorted indices of ``max_tiles`` of ``n`` tiles, fixed by (seed, patient).

    Seeding per patient (not from one shared stream) keeps a patient's tiles identical
    whichever other patients are loaded with it and in whatever order.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(str(patient).encode())])
    return np.sort(rng.choice(n, size=max_tiles, replace=False))


def _open_complete(patients_gid: h5py.h5g.GroupID, patient: str) -> h5py.h5g.GroupID | None:
    """The low-level group of a completely written patient, else None (cheap: no
    high-level h5py objects, which cost more than reading the data of a bag)."""
    name = _key(patient).encode()
    if not patients_gid.links.exists(name):
        return None
    gid = h5py.h5o.open(patients_gid, name)
    if not h5py.h5a.exists(gid, b"complete"):
        return None
    flag = np.zeros((), dtype=bool)
    h5py.h5a.open(gid, b"complete").read(flag)
    return gid if bool(flag) else None


def _packed_row(gid: h5py.h5g.GroupID) -> int:
    """A complete patient's row in ``/packed``, or -1 when its group holds its own
    ``features`` (never packed, or written after the last pack)."""
    if gid.links.exists(b"features") or not h5py.h5a.exists(gid, b"packed_row"):
        return -1
    row = np.zeros((), dtype=np.int64)
    h5py.h5a.open(gid, b"packed_row").read(row)
    return int(row)


def _map(dset: h5py.Dataset, writable: bool) -> np.ndarray:
    """The dataset memory-mapped from the very file h5py has open (a dup of its file
    descriptor, so a concurrent ``os.replace`` of the path cannot swap the file between
    reading the offset and mapping). ``writable``: a private copy-on-write map, because
    torch only wraps writable arrays; the file itself is never written. A dataset that
    cannot be mapped (chunked, unallocated, another file driver) is read into memory."""
    offset = dset.id.get_offset()
    if dset.size and offset is not None and dset.chunks is None:
        try:
            fd = os.dup(dset.file.id.get_vfd_handle())
        except (OSError, ValueError, RuntimeError):
            fd = -1
        if fd >= 0:
            with os.fdopen(fd, "rb") as fh:
                mode = "c" if writable else "r"
                mm = np.memmap(fh, dtype=dset.dtype, mode=mode, offset=offset, shape=dset.shape)
            return mm.view(np.ndarray)  # the view keeps the map alive
    arr = np.asarray(dset[()])
    arr.flags.writeable = writable
    return arr


@dataclass
class _Pack:
    """The ``/packed`` datasets of an open file: features (and coords) memory-mapped."""

    x: np.ndarray  # N x Kmax x D or N x D, stored dtype
    lengths: np.ndarray  # N int64
    coords: np.ndarray | None  # N x Kmax x 2 int64
    has_coords: np.ndarray  # N bool

    @classmethod
    def open(cls, f: h5py.File, writable: bool) -> _Pack:
        p = f["packed"]
        lengths = np.asarray(p["lengths"][()], dtype=np.int64)
        coords = _map(p["coords"], writable) if "coords" in p else None
        has = (
            np.asarray(p["has_coords"][()], dtype=bool)
            if "has_coords" in p
            else np.zeros(len(lengths), dtype=bool)
        )
        return cls(_map(p["features"], writable), lengths, coords, has)

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One patient's features (sliced to its length) and coords, as copies."""
        k = int(self.lengths[r])
        x = np.array(self.x[r, :k] if self.x.ndim == 3 else self.x[r])
        c = np.array(self.coords[r, :k]) if self.coords is not None and self.has_coords[r] else None
        return x, c


def _read_only(arr: np.ndarray) -> np.ndarray:
    """A read-only view (the caller's copy-on-write map stays untouched)."""
    view = arr.view()
    view.flags.writeable = False
    return view


def _no_data(path: Path, patient: str) -> FeatureError:
    return FeatureError(
        "patient group holds neither features nor a packed row (damaged file?)",
        path=path,
        patient=patient,
        field="features",
    )


def _read_group(
    g: h5py.Group, pack: _Pack | None, path: Path, patient: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """A complete patient's features and coords, from its own datasets or its pack row."""
    if "features" in g:
        return g["features"][()], (g["coords"][()] if "coords" in g else None)
    if "packed_row" not in g.attrs or pack is None:
        raise _no_data(path, patient)
    return pack.row(int(g.attrs["packed_row"]))


def _contiguous() -> h5py.h5p.PropDCID:
    """Creation properties of a packed dataset: contiguous (the default without chunks,
    filters or maxshape) with its storage allocated at creation, so it has a file offset
    to map; no fill-value pass, since pack writes every byte itself."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _own_features(gid: h5py.h5g.GroupID, path: Path, patient: str) -> h5py.h5d.DatasetID:
    """The ``features`` dataset of an unpacked patient group."""
    if not gid.links.exists(b"features"):
        raise _no_data(path, patient)
    return h5py.h5d.open(gid, b"features")


def _fsync(path: Path) -> None:
    """Flush a file (or, for a directory, its entries) to disk before/after a rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prefetch(dset: h5py.Dataset, rows: np.ndarray) -> None:
    """Hint the kernel to start reading these rows of a packed dataset in the background
    (``POSIX_FADV_WILLNEED``, returns at once; a no-op for cached pages). Without it a cold
    memory map is read in small synchronous page-fault chunks: ~3x slower here."""
    offset = dset.id.get_offset()
    if offset is None or not len(rows) or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = dset.file.id.get_vfd_handle()
        row_bytes = dset.dtype.itemsize * int(np.prod(dset.shape[1:]))
        r = np.unique(rows)
        brk = np.flatnonzero(np.diff(r) != 1) + 1
        for a, b in zip(np.r_[0, brk], np.r_[brk, len(r)]):
            start, count = int(r[a]), int(r[b - 1] - r[a] + 1)
            os.posix_fadvise(
                fd, offset + start * row_bytes, count * row_bytes, os.POSIX_FADV_WILLNEED
            )
    except (OSError, ValueError, RuntimeError):
        pass  # only a hint


def _pread(fd: int, arr: np.ndarray, pos: int) -> None:
    """Fill the C-contiguous ``arr`` with the file's bytes from ``pos`` on."""
    view = memoryview(arr).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], pos + done)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {pos + done}")
        done += got


def _copy_rows(
    x: np.ndarray, pf: h5py.Dataset, px: np.ndarray, pos: np.ndarray, rows: np.ndarray
) -> None:
    """``x[pos] = px[rows]`` (bags: over the first min(K, Kmax) tiles), where ``px`` is the
    map of the pack ``pf``, with one copy per run of consecutive positions and rows: a
    whole pack in order is one large copy. Same dtype and row shape: read straight from the
    file into ``x`` (``preadv``, ~1.3x faster than copying from the map, which page-faults);
    else a torch copy, which also casts (numpy's float16 cast is ~5x slower)."""
    if not len(pos):
        return
    offset, fd = pf.id.get_offset(), None
    if x.dtype == px.dtype and x.shape[1:] == px.shape[1:] and offset is not None:
        with contextlib.suppress(OSError, ValueError, RuntimeError, AttributeError):
            fd = pf.file.id.get_vfd_handle()
    xt, pt = torch.from_numpy(x), torch.from_numpy(px)
    if x.ndim == 3:
        kc = min(x.shape[1], px.shape[1])
        xt, pt = xt[:, :kc], pt[:, :kc]
    row_bytes = px.dtype.itemsize * int(np.prod(px.shape[1:]))
    brk = np.flatnonzero((np.diff(pos) != 1) | (np.diff(rows) != 1)) + 1
    for s, e in zip(np.r_[0, brk], np.r_[brk, len(pos)]):
        p, r, m = int(pos[s]), int(rows[s]), int(e - s)
        if fd is not None:
            _pread(fd, x[p : p + m], offset + r * row_bytes)
        else:
            xt[p : p + m].copy_(pt[r : r + m])


@dataclass
class LoadedModality:
    """One modality for a list of patients, as dense arrays."""

    x: np.ndarray  # N x D or N x K x D, float32 (or the requested dtype); read-only: a map
    present: np.ndarray  # N bool
    mask: np.ndarray | None  # N x K bool for bags
    coords: np.ndarray | None  # N x K x 2 int64 for bags when requested and stored


# ---------------------------------------------------------------------------- files
def _as_array(value: Any, path: str | Path | None, patient: str | None, what: str) -> np.ndarray:
    """A numpy view of a tensor / array / nested list; FeatureError for anything else."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FeatureError(
            f"{what} must be a numeric tensor or array; found {type(value).__name__}"
            f" of dtype {arr.dtype}",
            path=path,
            patient=patient,
            field=what,
        )
    return arr


def _squeeze_leading(
    x: np.ndarray, path: Path | None, patient: str | None, what: str
) -> np.ndarray:
    """A vector (D,) or bag (K, D); a leading batch axis of 1 (TRIDENT/CLAM) is dropped."""
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim not in (1, 2):
        raise FeatureError(
            f"expected {what} of shape (D,), (K, D) or (1, K, D); found {x.shape}",
            path=path,
            patient=patient,
            field=what,
        )
    return x


def load_feature_file(
    path: str | Path, patient: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one patient's embedding file: ``.h5``/``.hdf5`` (TRIDENT/CLAM: ``features``
    (K×D or 1×K×D) and optional ``coords``), ``.pt``/``.pth`` (a tensor, or a dict with
    ``features`` [and ``coords``]; loaded with ``weights_only=True``) or ``.npy``.

    Returns ``(features, coords | None)`` with features (D,) or (K, D); shape errors raise
    FeatureError naming the file and the patient.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureError("feature file not found", path=path, patient=patient)
    suffix = path.suffix.lower()
    coords = None
    try:
        if suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise FeatureError(
                        f"no 'features' dataset (found: {sorted(f.keys())})",
                        path=path,
                        patient=patient,
                        field="features",
                    )
                x = f["features"][()]
                coords = f["coords"][()] if "coords" in f else None
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "features" not in obj:
                    raise FeatureError(
                        f"a dict in a .pt file needs a 'features' key; found {sorted(obj)}",
                        path=path,
                        patient=patient,
                        field="features",
                    )
                x = _as_array(obj["features"], path, patient, "features")
                if obj.get("coords") is not None:
                    coords = _as_array(obj["coords"], path, patient, "coords")
            else:
                x = _as_array(obj, path, patient, "features")
        elif suffix == ".npy":
            x = _as_array(np.load(path, allow_pickle=False), path, patient, "features")
        else:
            raise FeatureError(
                f"unsupported feature file type {suffix!r}; expected .h5, .pt or .npy",
                path=path,
                patient=patient,
            )
    except FeatureError:
        raise
    except Exception as exc:  # unreadable / corrupt file: say which one
        raise FeatureError(f"cannot read feature file: {exc}", path=path, patient=patient) from exc
    x = _squeeze_leading(np.asarray(x), path, patient, "features")
    if coords is not None:
        coords = np.asarray(coords)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
    return x, coords


# ---------------------------------------------------------------------------- record
EXTRACTION_RECORD = "extraction.json"


def read_extraction_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``extraction.json`` that ``modalsurv extract`` writes into a store (and a run
    folder copies): how the features were made. None when absent."""
    path = Path(folder) / EXTRACTION_RECORD
    if not path.is_file():
        return None
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt extraction record: {exc}", path=path) from None
    if not isinstance(out, dict):
        raise DataError("an extraction record must be a JSON object", path=path)
    return out


# ---------------------------------------------------------------------------- store
class FeatureStore:
    """Embeddings per modality and patient under ``root`` (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ paths & meta
    def path(self, modality: str) -> Path:
        if not modality or "/" in modality or modality.startswith("."):
            raise DataError(f"invalid modality name {modality!r}", field="modality")
        return self.root / f"{modality}.h5"

    def modalities(self) -> list[str]:
        """Modalities with a file in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.h5") if not p.name.startswith("."))

    def exists(self, modality: str) -> bool:
        return self.path(modality).is_file()

    @contextlib.contextmanager
    def _open(self, modality: str) -> Iterator[h5py.File]:
        path = self.path(modality)
        if not path.is_file():
            raise FeatureError(
                f"no features stored for modality {modality!r} (stored: {self.modalities()})",
                path=path,
                field=modality,
            )
        with h5py.File(path, "r") as f:
            yield f

    def meta(self, modality: str) -> dict[str, Any]:
        """Provenance of a modality: encoder, checksum, dim, dtype, kind, n_patients."""
        with self._open(modality) as f:
            return self._attrs(f)

    @staticmethod
    def _complete_keys(f: h5py.File) -> list[str]:
        grp = f.get("patients")
        if grp is None:
            return []
        return [k for k, g in grp.items() if bool(g.attrs.get("complete", False))]

    def patients(self, modality: str) -> list[str]:
        """Patients whose features are completely written, sorted."""
        if not self.exists(modality):
            return []
        with self._open(modality) as f:
            return sorted(_patient(k) for k in self._complete_keys(f))

    def fingerprints(self, modality: str) -> dict[str, str | None]:
        """Complete patients → the source fingerprint written with them (None when the
        patient was written without one, e.g. by an older version or an import)."""
        if not self.exists(modality):
            return {}
        with self._open(modality) as f:
            grp = f.get("patients")
            if grp is None:
                return {}
            return {
                _patient(k): (None if "source" not in g.attrs else str(_attr(g.attrs["source"])))
                for k, g in grp.items()
                if bool(g.attrs.get("complete", False))
            }

    def has(self, modality: str, patient: str) -> bool:
        if not self.exists(modality):
            return False
        with self._open(modality) as f:
            g = f.get(f"patients/{_key(patient)}")
            return g is not None and bool(g.attrs.get("complete", False))

    def read(self, modality: str, patient: str) -> tuple[np.ndarray, np.ndarray | None]:
        """One patient's features (stored dtype) and coords (or None)."""
        with self._open(modality) as f:
            g = f.get(f"patients/{_key(patient)}")
            if g is None or not bool(g.attrs.get("complete", False)):
                raise FeatureError(
                    "patient has no complete features in the store",
                    path=self.path(modality),
                    patient=patient,
                    field=modality,
                )
            pack = _Pack.open(f, writable=False) if "packed" in f else None
            return _read_group(g, pack, self.path(modality), patient)

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _writer_lock(self, modality: str) -> Iterator[None]:
        """One writer per modality: an advisory lock on ``root/.{modality}.lock``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{modality}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _locked_copy(self, modality: str) -> Iterator[h5py.File]:
        """Yield the modality file opened on a temporary copy; replace the original on
        success. The lock serialises writers; the copy makes the update atomic."""
        path = self.path(modality)
        with self._writer_lock(modality):
            with atomic_path(path) as tmp:
                if path.is_file():
                    shutil.copyfile(path, tmp)
                    mode = "r+"
                else:
                    mode = "w"
                with h5py.File(tmp, mode) as f:
                    if mode == "w":
                        f.attrs["format"] = FORMAT
                        f.attrs["version"] = VERSION
                        f.attrs["modality"] = modality
                        f.create_group("patients")
                    elif f.attrs.get("format") is not None and _attr(f.attrs["format"]) != FORMAT:
                        raise FeatureError("not a modalsurv feature store file", path=path)
                    yield f
                _fsync(tmp)
            _fsync(self.root)

    # ------------------------------------------------------------------ packing
    def pack(self, modality: str) -> None:
        """Rewrite the modality file in the packed layout (module docstring) for fast
        loading: one contiguous, memory-mappable dataset instead of a dataset per patient.

        Atomic (a new file written beside the old one, then renamed; a crash leaves the old
        file) and under the writer lock. Writing a new file rather than repacking in place
        returns the space of deleted or overwritten datasets. Idempotent: an already packed
        file is left untouched. Cost: one pass over the data, once, after extraction.
        """
        path = self.path(modality)
        with self._open(modality) as f:
            if self._is_packed(f):
                return
        with self._writer_lock(modality):
            with h5py.File(path, "r") as src:
                if self._is_packed(src):  # another writer packed it meanwhile
                    return
                with atomic_path(path) as tmp:
                    with h5py.File(tmp, "w") as dst:
                        self._write_packed(src, dst, path)
                    _fsync(tmp)
            _fsync(self.root)

    @staticmethod
    def _is_packed(f: h5py.File) -> bool:
        """True when packing would change nothing: every patient group is complete and
        points at a row, and every row is pointed at (no stale rows). Also True when there
        is no complete patient at all (nothing to pack)."""
        if "packed" in f and bool(f["packed"].attrs.get("exact", False)):
            return True
        grp = f.get("patients")
        if grp is None or not any(bool(g.attrs.get("complete", False)) for g in grp.values()):
            return True
        rows = []
        for g in grp.values():
            if not bool(g.attrs.get("complete", False)) or "features" in g:
                return False
            if "packed_row" not in g.attrs:
                return False
            rows.append(int(g.attrs["packed_row"]))
        packed = f.get("packed/features")
        return packed is not None and sorted(rows) == list(range(packed.shape[0]))

    def _write_packed(self, src: h5py.File, dst: h5py.File, path: Path) -> None:
        """Copy ``src`` into the empty file ``dst`` in the packed layout."""
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            if name not in ("patients", "packed"):
                src.copy(src[name], dst, name=name)
        sgrp = src["patients"]
        keys = sorted(
            (k for k, g in sgrp.items() if bool(g.attrs.get("complete", False))), key=_patient
        )
        old = _Pack.open(src, writable=False) if "packed" in src else None
        x0, _ = _read_group(sgrp[keys[0]], old, path, _patient(keys[0]))
        bag, dim = x0.ndim == 2, int(x0.shape[-1])
        dtype = np.dtype(_attr(src.attrs["dtype"])) if "dtype" in src.attrs else x0.dtype
        # pass 1: bag sizes and who has coords, without reading feature data
        lengths = np.ones(len(keys), dtype=np.int64)
        has = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            g = sgrp[key]
            if "features" in g:
                lengths[i] = g["features"].shape[0] if bag else 1
                has[i] = "coords" in g
            else:
                if old is None or "packed_row" not in g.attrs:
                    raise _no_data(path, _patient(key))
                r = int(g.attrs["packed_row"])
                lengths[i], has[i] = old.lengths[r], old.has_coords[r]
        n, kmax = len(keys), int(lengths.max())
        row_shape = (kmax, dim) if bag else (dim,)
        pg = dst.create_group("packed")
        feats = pg.create_dataset("features", (n, *row_shape), dtype=dtype, dcpl=_contiguous())
        coords = None
        if bag and has.any():
            coords = pg.create_dataset("coords", (n, kmax, 2), dtype=np.int64, dcpl=_contiguous())
            pg.create_dataset("has_coords", data=has)
        pg.create_dataset("lengths", data=lengths)
        pg.attrs["exact"] = True
        pg.create_dataset(
            "patients",
            data=np.array([_patient(k) for k in keys], dtype=object),
            dtype=h5py.string_dtype(),
        )
        # pass 2: rows in batches of ~64 MiB, every byte written (padding included)
        step = max(1, (64 << 20) // (int(np.prod(row_shape)) * np.dtype(dtype).itemsize))
        buf = np.empty((min(step, n), *row_shape), dtype=dtype)
        cbuf = None if coords is None else np.empty((len(buf), kmax, 2), dtype=np.int64)
        for s0 in range(0, n, step):
            batch = keys[s0 : s0 + step]
            buf[: len(batch)] = 0
            if cbuf is not None:
                cbuf[: len(batch)] = 0
            for j, key in enumerate(batch):
                x, c = _read_group(sgrp[key], old, path, _patient(key))
                if bag:
                    buf[j, : len(x)] = x
                else:
                    buf[j] = x
                if cbuf is not None and c is not None:
                    cbuf[j, : len(c)] = c
            feats[s0 : s0 + len(batch)] = buf[: len(batch)]
            if coords is not None and cbuf is not None:
                coords[s0 : s0 + len(batch)] = cbuf[: len(batch)]
        dgrp = dst.create_group("patients")
        for i, key in enumerate(keys):
            g = dgrp.create_group(key)
            for a, v in sgrp[key].attrs.items():
                if a != "packed_row":
                    g.attrs[a] = v
            g.attrs["packed_row"] = i

    def _current_meta(self, modality: str) -> dict[str, Any]:
        if not self.exists(modality):
            return dict.fromkeys(_META_KEYS) | {"n_patients": 0}
        return self.meta(modality)

    def set_meta(
        self,
        modality: str,
        encoder: str,
        checksum: str | None = None,
        dim: int | None = None,
        dtype: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the encoder (name, weights sha256), feature dim, storage dtype and the
        extraction ``settings`` that shaped the features (tile µm/px, tile size, tile cap,
        MRI preprocessing: JSON-able values).

        Refuses (FeatureError) to relabel a modality that already holds features from a
        different encoder, checksum, dim, dtype or settings: mixed embeddings (the same
        encoder on tiles of another magnification, say) are silently wrong.
        """
        new = {"encoder": encoder, "checksum": checksum, "dim": dim, "dtype": dtype,
               "settings": None if settings is None else json.loads(_settings_text(settings))}
        if dtype is not None and dtype not in _DTYPES:
            raise FeatureError(
                f"dtype must be one of {sorted(_DTYPES)}; found {dtype!r}", field="dtype"
            )
        cur = self._current_meta(modality)
        self._check_compatible(modality, cur, new)
        if all(v is None or cur.get(k) == v for k, v in new.items()):
            return
        with self._locked_copy(modality) as f:
            self._check_compatible(modality, self._attrs(f), new)
            for k, v in new.items():
                if v is None:
                    continue
                if k == "settings":
                    f.attrs[k] = _settings_text(v)
                else:
                    f.attrs[k] = int(v) if k == "dim" else str(v)

    def _attrs(self, f: h5py.File) -> dict[str, Any]:
        out = {k: _attr(f.attrs[k]) if k in f.attrs else None for k in _META_KEYS}
        out["settings"] = _settings(out["settings"])
        out["n_patients"] = len(self._complete_keys(f))
        return out

    def _check_compatible(
        self, modality: str, cur: Mapping[str, Any], new: Mapping[str, Any], strict: bool = False
    ) -> None:
        """Refuse a provenance change. ``strict`` (writes): also when no patient is stored
        yet, since the recorded provenance was declared on purpose; ``set_meta`` may
        relabel an empty modality."""
        if not strict and not cur.get("n_patients"):
            return
        for k in _CHECKED:
            have, want = cur.get(k), new.get(k)
            if want is None or have is None:
                continue
            if k == "settings":
                diff = sorted(x for x in set(have) | set(want) if have.get(x) != want.get(x))
                if diff:
                    raise FeatureError(
                        "modality already holds features made with other extraction settings ("
                        + ", ".join(f"{x}: stored {have.get(x)!r}, now {want.get(x)!r}"
                                    for x in diff)
                        + "); refusing to mix them (use a new store)",
                        path=self.path(modality),
                        field="settings",
                    )  # fmt: skip
                continue
            if (int(have) != int(want)) if k == "dim" else (str(have) != str(want)):
                raise FeatureError(
                    f"modality already holds features with {k}={have!r}; refusing to mix in"
                    f" features with {k}={want!r} (use another modality name or a new store)",
                    path=self.path(modality),
                    field=k,
                )

    def write(
        self,
        modality: str,
        patient: str,
        features: Any,
        coords: Any = None,
        **kwargs: Any,
    ) -> None:
        """Write one patient (a full file copy: use ``write_many`` for many patients)."""
        self.write_many(
            modality, {patient: features}, None if coords is None else {patient: coords}, **kwargs
        )

    def write_many(
        self,
        modality: str,
        features: Mapping[str, Any],
        coords: Mapping[str, Any] | None = None,
        *,
        encoder: str | None = None,
        checksum: str | None = None,
        dtype: str | None = None,
        overwrite: bool = True,
        sources: Mapping[str, str | Path] | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> None:
        """Write a batch of patients atomically (one file copy for the whole batch).

        ``features[p]``: (D,) vector or (K, D) bag; ``coords[p]``: (K, 2) ints. ``encoder``
        / ``checksum`` are checked against (or, for a new modality, recorded as) the
        provenance (``None``: not checked). ``dtype`` (float16 | float32) is fixed by the
        first write (or ``set_meta``); default float16 when the input is float16, else
        float32. ``sources`` names the file each patient came from, for error messages.
        ``fingerprints[p]``: what the patient's features were computed from (the source
        files' names, sizes and content hashes), kept with the patient so that a later
        extraction can tell a finished patient from another cohort's patient of the same id.
        """
        coords = dict(coords or {})
        sources = dict(sources or {})
        cur = self._current_meta(modality)
        self._check_compatible(
            modality, cur, {"encoder": encoder, "checksum": checksum, "dtype": dtype}, strict=True
        )
        if dtype is not None and dtype not in _DTYPES:
            raise FeatureError(
                f"dtype must be one of {sorted(_DTYPES)}; found {dtype!r}", field="dtype"
            )
        unknown = set(coords) - set(features)
        if unknown:
            raise FeatureError(
                "coords given for patients without features", patient=sorted(unknown)[0]
            )
        # validate everything in memory before touching the disk
        kind, dim, store_dtype = cur.get("kind"), cur.get("dim"), cur.get("dtype") or dtype
        prepared: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for pid, raw in features.items():
            src = sources.get(pid)
            x = _squeeze_leading(_as_array(raw, src, pid, "features"), src, pid, modality)
            this_kind = "vector" if x.ndim == 1 else "bag"
            kind = kind or this_kind
            if this_kind != kind:
                raise FeatureError(
                    f"modality holds {kind}s; found shape {x.shape}"
                    + (" (a vector is (D,), a bag (K, D))" if kind == "vector" else ""),
                    path=src,
                    patient=pid,
                    field=modality,
                )
            dim = dim if dim is not None else int(x.shape[-1])
            if x.shape[-1] != dim:
                raise FeatureError(
                    f"feature dim must be {dim}; found shape {x.shape}",
                    path=src,
                    patient=pid,
                    field=modality,
                )
            if x.ndim == 2 and x.shape[0] == 0:
                raise FeatureError(
                    "a bag needs at least one tile", path=src, patient=pid, field=modality
                )
            if store_dtype is None:
                store_dtype = "float16" if x.dtype == np.float16 else "float32"
            with np.errstate(over="ignore"):  # overflow → inf, reported just below
                xs = np.ascontiguousarray(x, dtype=_DTYPES[store_dtype])
            if not np.isfinite(xs).all():
                raise FeatureError(
                    f"features contain NaN or inf (stored as {store_dtype}; float16 overflows"
                    " above 65504)",
                    path=src,
                    patient=pid,
                    field=modality,
                )
            c = None
            if pid in coords and coords[pid] is not None:
                c = _as_array(coords[pid], src, pid, "coords")
                if c.ndim == 3 and c.shape[0] == 1:
                    c = c[0]
                if x.ndim != 2 or c.shape != (x.shape[0], 2):
                    raise FeatureError(
                        f"coords must be (K, 2) with K={x.shape[0] if x.ndim == 2 else '-'}"
                        f" tiles; found shape {c.shape}",
                        path=src,
                        patient=pid,
                        field="coords",
                    )
                if not np.issubdtype(c.dtype, np.integer):
                    if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)):
                        raise FeatureError(
                            "coords must be integers", path=src, patient=pid, field="coords"
                        )
                c = np.ascontiguousarray(c, dtype=np.int64)
            prepared[str(pid)] = (xs, c)
        if not prepared and encoder is None:
            return
        with self._locked_copy(modality) as f:
            have = self._attrs(f)
            self._check_compatible(
                modality,
                have,
                {"encoder": encoder, "checksum": checksum, "dim": dim, "dtype": store_dtype},
                strict=True,
            )
            if have.get("kind") not in (None, kind):
                raise FeatureError(f"modality holds {have['kind']}s, not {kind}s", field=modality)
            for k, v in (("encoder", encoder), ("checksum", checksum)):
                if v is not None:
                    f.attrs[k] = str(v)
            if prepared:
                f.attrs["kind"] = kind
                f.attrs["dim"] = int(dim)
                f.attrs["dtype"] = store_dtype
            grp = f.require_group("patients")
            if prepared and "packed" in f and "exact" in f["packed"].attrs:
                del f["packed"].attrs["exact"]  # groups and pack now differ (docstring)
            for pid, (xs, c) in prepared.items():
                key = _key(pid)
                if key in grp:
                    if not overwrite and bool(grp[key].attrs.get("complete", False)):
                        raise FeatureError(
                            "patient already stored (overwrite=False)",
                            path=self.path(modality),
                            patient=pid,
                            field=modality,
                        )
                    del grp[key]
                g = grp.create_group(key)
                g.create_dataset("features", data=xs)
                if c is not None:
                    g.create_dataset("coords", data=c)
                if fingerprints and fingerprints.get(pid) is not None:
                    g.attrs["source"] = str(fingerprints[pid])
                g.attrs["complete"] = True

    # ------------------------------------------------------------------ importers
    def import_files(
        self,
        modality: str,
        files: Mapping[str, str | Path],
        **kwargs: Any,
    ) -> None:
        """Import many per-patient files (.h5 / .pt / .npy) in one atomic batch."""
        feats: dict[str, np.ndarray] = {}
        crd: dict[str, np.ndarray] = {}
        meta = self._current_meta(modality)
        for pid, p in files.items():
            x, c = load_feature_file(p, pid)
            if meta.get("kind") == "vector" and x.ndim == 2 and x.shape[0] == 1:
                x = x[0]
            if meta.get("dim") is not None and x.shape[-1] != meta["dim"]:
                raise FeatureError(
                    f"feature dim must be {meta['dim']} (as already stored); found shape {x.shape}",
                    path=p,
                    patient=pid,
                    field=modality,
                )
            feats[pid] = x
            if c is not None:
                crd[pid] = c
        self.write_many(modality, feats, crd, sources=dict(files), **kwargs)

    def import_h5(self, modality: str, patient: str, path: str | Path, **kwargs: Any) -> None:
        """Import a TRIDENT/CLAM-style h5 (``features`` K×D or 1×K×D, ``coords`` K×2)."""
        if Path(path).suffix.lower() not in (".h5", ".hdf5"):
            raise FeatureError("expected an .h5 file", path=path, patient=patient)
        self.import_files(modality, {patient: path}, **kwargs)

    def import_pt(self, modality: str, patient: str, path: str | Path, **kwargs: Any) -> None:
        """Import a ``.pt`` tensor (or dict with ``features``), loaded weights-only."""
        if Path(path).suffix.lower() not in (".pt", ".pth"):
            raise FeatureError("expected a .pt file", path=path, patient=patient)
        self.import_files(modality, {patient: path}, **kwargs)

    # ------------------------------------------------------------------ loading
    def load(
        self,
        modality: str,
        patients: Sequence[str],
        max_tiles: int | None = None,
        seed: int = 0,
        dtype: Any = np.float32,
        with_coords: bool = False,
        out: np.ndarray | None = None,
    ) -> LoadedModality:
        """Dense arrays for ``patients`` (absent ones: present=False, zero rows).

        Bags are padded to the largest (subsampled) K with a mask; a bag longer than
        ``max_tiles`` keeps a seed-determined subset of its tiles (see ``tile_subset``),
        the same whether the file is packed or not.
        ``out``: an existing array to fill (N × K' × D with K' at least the padded K, or
        N × D; its dtype wins), e.g. a reused buffer or the numpy view of a pinned
        tensor; every element is overwritten (padding and absent rows with 0).

        Zero copy: when ``out`` is None, ``dtype`` is the stored dtype and ``patients`` are
        exactly the packed patients in pack order (``patients()`` of a freshly packed file)
        with nothing to subsample, ``x`` is a read-only view of the file's memory map:
        nothing is copied, and the kernel reads the pages in the background (and on first
        touch, if that comes first). It stays valid even if
        the file is later replaced (writes and ``pack`` rename a new file over the path;
        Linux keeps the old inode while it is mapped). Copy it before modifying it.
        """
        if max_tiles is not None and max_tiles < 1:
            raise DataError("max_tiles must be >= 1", field="max_tiles")
        ids = [str(p) for p in patients]
        n = len(ids)
        path = self.path(modality)
        with self._open(modality) as f:
            kind, dim = _attr(f.attrs.get("kind", "bag")), f.attrs.get("dim")
            dim = int(dim) if dim is not None else 0
            # every dataset of a modality has the recorded dtype (write_many casts to it)
            stored = np.dtype(_attr(f.attrs["dtype"])) if "dtype" in f.attrs else None
            grp, pk = f.get("patients"), f.get("packed")
            objs: list[h5py.h5g.GroupID | None] = [None] * n
            if pk is not None and bool(pk.attrs.get("exact", False)):
                # untouched since pack: its patient list is the truth, no group to open
                # (opening 1,000 groups and reading their attributes costs ~0.1 s)
                index = {p: i for i, p in enumerate(pk["patients"].asstr()[()])}
                rows = np.array([index.get(pid, -1) for pid in ids], dtype=np.int64)
            else:
                objs = [None if grp is None else _open_complete(grp.id, pid) for pid in ids]
                rows = np.array([-1 if o is None else _packed_row(o) for o in objs], np.int64)
            dsets = [
                None if o is None or r >= 0 else _own_features(o, path, pid)
                for o, r, pid in zip(objs, rows, ids)
            ]
            packed = rows >= 0
            present = packed | np.array([d is not None for d in dsets], dtype=bool)
            pf: h5py.Dataset | None = None
            pack: _Pack | None = None
            if packed.any():
                if "packed/features" not in f or "packed/lengths" not in f:
                    raise FeatureError(
                        "patients point at a packed row but the file has no /packed datasets"
                        " (damaged file?)",
                        path=path,
                        patient=ids[int(np.argmax(packed))],
                        field=modality,
                    )
                pf = f["packed/features"]
                # copy-on-write map (torch wraps only writable arrays; the file is never
                # written); what is handed out uncopied is a read-only view of it
                pack = _Pack.open(f, writable=True)
            # the pack itself is the answer: every row, in order, stored dtype
            whole_pack = (
                pf is not None
                and out is None
                and n == pf.shape[0]
                and pf.dtype == np.dtype(dtype)
                and np.array_equal(rows, np.arange(n))
            )

            def whole(d: h5py.h5d.DatasetID) -> np.ndarray:
                arr = np.empty(d.shape, dtype=stored or d.dtype)
                d.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
                return arr

            if pf is not None:
                _prefetch(pf, rows[packed])
            if kind == "vector":
                if whole_pack and pack is not None:
                    return LoadedModality(_read_only(pack.x), present, None, None)
                x = self._out(out, (n, dim), dtype, modality)
                x[~present] = 0
                if pf is not None and pack is not None:
                    _copy_rows(x, pf, pack.x, np.flatnonzero(packed), rows[packed])
                for i, d in enumerate(dsets):
                    if d is not None:
                        x[i] = whole(d)
                return LoadedModality(x, present, None, None)
            sizes = np.zeros(n, dtype=np.int64)
            if pack is not None:
                sizes[packed] = pack.lengths[rows[packed]]
            for i, d in enumerate(dsets):
                if d is not None:
                    sizes[i] = d.shape[0]
            kept = sizes if max_tiles is None else np.minimum(sizes, max_tiles)
            k_max = max(int(kept.max()) if n else 0, 1)
            if whole_pack and pack is not None and (kept == sizes).all() and pf.shape[1] == k_max:
                mask = np.arange(k_max)[None, :] < sizes[:, None]
                coords = None
                if with_coords:
                    coords = (
                        np.zeros((n, k_max, 2), dtype=np.int64)
                        if pack.coords is None
                        else np.array(pack.coords)  # zero where a patient has none
                    )
                return LoadedModality(_read_only(pack.x), present, mask, coords)
            x = self._out(out, (n, k_max, dim), dtype, modality)
            k_max = x.shape[1]
            mask = np.arange(k_max)[None, :] < kept[:, None]
            coords = np.zeros((n, k_max, 2), dtype=np.int64) if with_coords else None
            x[~present] = 0
            xt = torch.from_numpy(x)
            if pf is not None and pack is not None:
                # whole bags: straight from the map, padding included (zero in the pack)
                kc = min(pack.x.shape[1], k_max)
                full = packed & (kept == sizes)
                _copy_rows(x, pf, pack.x, np.flatnonzero(full), rows[full])
                if kc < k_max:
                    x[full, kc:] = 0
                # subsampled bags (the same tiles as unpacked: tile_subset) and coords
                for i in np.flatnonzero(packed & ((kept < sizes) | (coords is not None))):
                    r, k, m = int(rows[i]), int(sizes[i]), int(kept[i])
                    idx = tile_subset(ids[i], k, m, seed) if m < k else None
                    if idx is not None:
                        xt[i, :m].copy_(torch.from_numpy(pack.x[r, idx]))
                        x[i, m:] = 0
                    if coords is not None and pack.coords is not None and pack.has_coords[r]:
                        coords[i, :m] = pack.coords[r, :m] if idx is None else pack.coords[r, idx]
            # Unpacked patients: whole-dataset reads through h5py's low-level API (its
            # high-level objects and selections cost more than the read itself), straight
            # into the output when the dtypes match, else into a scratch buffer followed by
            # a torch cast (HDF5's own float16 conversion and numpy's cast are both ~5x
            # slower than torch's).
            scratch: np.ndarray | None = None
            for i, d in enumerate(dsets):
                if d is None:
                    continue
                k, m = int(sizes[i]), int(kept[i])
                idx = None
                if m < k:
                    idx = tile_subset(ids[i], k, m, seed)
                    x[i, :m] = whole(d)[idx]
                elif (stored or d.dtype) == x.dtype:
                    d.read(h5py.h5s.ALL, h5py.h5s.ALL, x[i, :k])  # a contiguous view
                else:
                    if scratch is None:
                        scratch = np.empty((int(sizes.max()), dim), stored or d.dtype)
                    d.read(h5py.h5s.ALL, h5py.h5s.ALL, scratch[:k])
                    xt[i, :k].copy_(torch.from_numpy(scratch[:k]))
                x[i, m:] = 0
                obj = objs[i]
                if coords is not None and obj is not None and obj.links.exists(b"coords"):
                    c = h5py.Dataset(h5py.h5d.open(obj, b"coords"))[()]
                    coords[i, :m] = c if idx is None else c[idx]
            return LoadedModality(x, present, mask, coords)

    def _out(
        self, out: np.ndarray | None, shape: tuple[int, ...], dtype: Any, modality: str
    ) -> np.ndarray:
        if out is None:
            return np.zeros(shape, dtype=dtype)
        ok = (
            out.ndim == len(shape)
            and out.shape[0] == shape[0]
            and out.shape[-1] == shape[-1]
            and (len(shape) == 2 or out.shape[1] >= shape[1])
            and out.flags.c_contiguous
        )
        if not ok:
            raise FeatureError(
                f"out must be a C-contiguous array of shape {shape} (more tiles allowed);"
                f" found {out.shape}",
                path=self.path(modality),
                field="out",
            )
        return out

    def to_cohort(
        self,
        labels: pd.DataFrame,
        modalities: Sequence[str],
        max_tiles: int | None = None,
        seed: int = 0,
    ) -> Cohort:
        """A Cohort of the patients in ``labels`` (index patient, columns time, event and
        optional extra columns such as site, kept as meta) with the given modalities.
        Patients without stored features for a modality are marked absent."""
        df = labels
        if "patient" in df.columns:
            df = df.set_index("patient")
        for col in ("time", "event"):
            if col not in df.columns:
                raise LabelError(
                    f"labels need a {col!r} column; found {list(df.columns)}", field=col
                )
        ids = [str(i) for i in df.index]
        stored = set().union(*(self.patients(m) for m in modalities)) if modalities else set()
        if ids and stored and not stored & set(ids):
            raise LabelError(
                f"no patient id of the labels matches the feature store: label ids"
                f" {ids[:5]}, store ids {sorted(stored)[:5]} (a leading zero or a suffix?)",
                path=self.root, field="patient")  # fmt: skip
        feats, present, masks = {}, {}, {}
        for m in modalities:
            lm = self.load(m, ids, max_tiles=max_tiles, seed=seed)
            feats[m], present[m] = lm.x, lm.present
            if lm.mask is not None:
                masks[m] = lm.mask
        meta = df.drop(columns=["time", "event"])
        return Cohort(
            ids,
            df["time"].to_numpy(),
            df["event"].to_numpy(),
            features=feats,
            present=present,
            meta=meta,
            bag_mask=masks,
            copy=False,  # freshly loaded arrays (a read-only map is still copied)
        )

    def load_labelled_cohort(
        self,
        labels: str | Path | pd.DataFrame | None = None,
        modalities: Sequence[str] | None = None,
        max_tiles: int | None = None,
        seed: int = 0,
    ) -> Cohort:
        """``to_cohort`` for a store used as a data source: ``labels`` is a DataFrame or a
        CSV (``patient``, ``time``, ``event`` [, ``site``, ...]; default
        ``root/labels.csv``); ``modalities`` defaults to every stored modality."""
        if not isinstance(labels, pd.DataFrame):
            path = Path(labels) if labels is not None else self.root / "labels.csv"
            if not path.is_file():
                raise LabelError(
                    "labels CSV not found (patient, time, event[, site]); pass labels=PATH",
                    path=path,
                )
            labels = pd.read_csv(path, dtype={"patient": str})
            if "patient" not in labels.columns:
                raise LabelError(
                    f"labels need a 'patient' column; found {list(labels.columns)}",
                    path=path,
                    field="patient",
                )
        mods = list(modalities) if modalities is not None else self.modalities()
        return self.to_cohort(labels, mods, max_tiles=max_tiles, seed=seed)
