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

Reading (``load``/``to_cohort``) opens each file once and reads each patient's dataset
with one low-level HDF5 read straight into a preallocated padded array (or into a small
scratch buffer, then a vectorised torch cast when float16 is loaded as float32): no
per-patient allocation or deserialisation. ``load(out=...)`` fills a caller's buffer
(e.g. a reused or pinned one). See benchmarks/bench_store.py for figures.
"""

from __future__ import annotations

import contextlib
import fcntl
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
_META_KEYS = ("encoder", "checksum", "dim", "dtype", "kind")


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


@dataclass
class LoadedModality:
    """One modality for a list of patients, as dense arrays."""

    x: np.ndarray  # N x D or N x K x D, float32 (or the requested dtype)
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
            x = np.load(path, allow_pickle=False)
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
            out = {k: _attr(f.attrs[k]) if k in f.attrs else None for k in _META_KEYS}
            out["n_patients"] = len(self._complete_keys(f))
        return out

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
            x = g["features"][()]
            c = g["coords"][()] if "coords" in g else None
        return x, c

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked_copy(self, modality: str) -> Iterator[h5py.File]:
        """Yield the modality file opened on a temporary copy; replace the original on
        success. The lock serialises writers; the copy makes the update atomic."""
        path = self.path(modality)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{modality}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
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
                        elif (
                            f.attrs.get("format") is not None and _attr(f.attrs["format"]) != FORMAT
                        ):
                            raise FeatureError("not a modalsurv feature store file", path=path)
                        yield f
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                dirfd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
    ) -> None:
        """Record the encoder (name, weights sha256), feature dim and storage dtype.

        Refuses (FeatureError) to relabel a modality that already holds features from a
        different encoder, checksum, dim or dtype: mixed embeddings are silently wrong.
        """
        new = {"encoder": encoder, "checksum": checksum, "dim": dim, "dtype": dtype}
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
                if v is not None:
                    f.attrs[k] = int(v) if k == "dim" else str(v)

    def _attrs(self, f: h5py.File) -> dict[str, Any]:
        out = {k: _attr(f.attrs[k]) if k in f.attrs else None for k in _META_KEYS}
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
        for k in ("encoder", "checksum", "dim", "dtype"):
            have, want = cur.get(k), new.get(k)
            if want is None or have is None:
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
    ) -> None:
        """Write a batch of patients atomically (one file copy for the whole batch).

        ``features[p]``: (D,) vector or (K, D) bag; ``coords[p]``: (K, 2) ints. ``encoder``
        / ``checksum`` are checked against (or, for a new modality, recorded as) the
        provenance (``None``: not checked). ``dtype`` (float16 | float32) is fixed by the
        first write (or ``set_meta``); default float16 when the input is float16, else
        float32. ``sources`` names the file each patient came from, for error messages.
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
        ``max_tiles`` keeps a seed-determined subset of its tiles (see ``tile_subset``).
        ``out``: an existing array to fill (N × K' × D with K' at least the padded K, or
        N × D; its dtype wins), e.g. a reused buffer or the numpy view of a pinned
        tensor; every element is overwritten (padding and absent rows with 0).
        """
        if max_tiles is not None and max_tiles < 1:
            raise DataError("max_tiles must be >= 1", field="max_tiles")
        ids = [str(p) for p in patients]
        n = len(ids)
        with self._open(modality) as f:
            kind, dim = _attr(f.attrs.get("kind", "bag")), f.attrs.get("dim")
            dim = int(dim) if dim is not None else 0
            # every dataset of a modality has the recorded dtype (write_many casts to it)
            stored = np.dtype(_attr(f.attrs["dtype"])) if "dtype" in f.attrs else None
            grp = f.get("patients")
            objs = [None if grp is None else _open_complete(grp.id, pid) for pid in ids]
            dsets = [None if o is None else h5py.h5d.open(o, b"features") for o in objs]
            present = np.array([d is not None for d in dsets], dtype=bool)

            def whole(d: h5py.h5d.DatasetID) -> np.ndarray:
                arr = np.empty(d.shape, dtype=stored or d.dtype)
                d.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
                return arr

            if kind == "vector":
                x = self._out(out, (n, dim), dtype, modality)
                for i, d in enumerate(dsets):
                    x[i] = 0 if d is None else whole(d)
                return LoadedModality(x, present, None, None)
            sizes = np.array([0 if d is None else d.shape[0] for d in dsets], dtype=np.int64)
            kept = sizes if max_tiles is None else np.minimum(sizes, max_tiles)
            k_max = max(int(kept.max()) if n else 0, 1)
            x = self._out(out, (n, k_max, dim), dtype, modality)
            k_max = x.shape[1]
            mask = np.zeros((n, k_max), dtype=bool)
            coords = np.zeros((n, k_max, 2), dtype=np.int64) if with_coords else None
            # Whole-dataset reads through h5py's low-level API (its high-level objects and
            # selections cost more than the read itself), straight into the output when
            # the dtypes match, else into a scratch buffer followed by a torch cast (HDF5's
            # own float16 conversion and numpy's cast are both ~5x slower than torch's).
            scratch: np.ndarray | None = None
            xt = torch.from_numpy(x)
            for i, d in enumerate(dsets):
                if d is None:
                    x[i] = 0
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
                mask[i, :m] = True
                if coords is not None and objs[i].links.exists(b"coords"):
                    c = h5py.Dataset(h5py.h5d.open(objs[i], b"coords"))[()]
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
