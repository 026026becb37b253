"""Writing a FeatureStore: atomic batches under a per-modality writer lock, provenance
checks (encoder, checksum, width, dtype, extraction settings), importers of other tools'
files, and packing into one memory-mappable dataset (see ``io.store``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from modalsurv.errors import FeatureError
from modalsurv.io.feature_files import _as_array, _squeeze_leading, load_feature_file
from modalsurv.io.store_format import (
    _CHECKED,
    _DTYPES,
    FORMAT,
    VERSION,
    StoreFiles,
    _attr,
    _key,
    _no_data,
    _Pack,
    _patient,
    _read_group,
    _settings_text,
)
from modalsurv.resume import remove_stale_temporaries
from modalsurv.utils import atomic_path, fsync_path


def _contiguous() -> h5py.h5p.PropDCID:
    """Creation properties of a packed dataset: contiguous (the default without chunks,
    filters or maxshape) with its storage allocated at creation, so it has a file offset
    to map; no fill-value pass, since pack writes every byte itself."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


class _Batch:
    """A write batch validated in memory before the disk is touched: every patient's
    features in the modality's kind, width and storage dtype, finite, with integer coords
    of the right shape; the first patient of a new modality fixes kind, width and dtype."""

    def __init__(self, kind: str | None, dim: int | None, dtype: str | None,
                 missing: bool = False) -> None:  # fmt: skip
        self.kind, self.dim, self.dtype, self.missing = kind, dim, dtype, missing
        self.rows: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def add(self, pid: str, raw: Any, raw_coords: Any, src: Any, modality: str) -> None:
        x = _squeeze_leading(_as_array(raw, src, pid, "features"), src, pid, modality)
        this_kind = "vector" if x.ndim == 1 else "bag"
        self.kind = self.kind or this_kind
        if this_kind != self.kind:
            raise FeatureError(f"modality holds {self.kind}s; found shape {x.shape}"
                               + (" (a vector is (D,), a bag (K, D))" if self.kind == "vector"
                                  else ""), path=src, patient=pid, field=modality)  # fmt: skip
        self.dim = self.dim if self.dim is not None else int(x.shape[-1])
        if x.shape[-1] != self.dim:
            raise FeatureError(f"feature dim must be {self.dim}; found shape {x.shape}",
                               path=src, patient=pid, field=modality)  # fmt: skip
        if x.ndim == 2 and x.shape[0] == 0:
            raise FeatureError("a bag needs at least one tile", path=src, patient=pid,
                               field=modality)  # fmt: skip
        if self.dtype is None:
            self.dtype = "float16" if x.dtype == np.float16 else "float32"
        with np.errstate(over="ignore"):  # overflow → inf, reported just below
            xs = np.ascontiguousarray(x, dtype=_DTYPES[self.dtype])
        bad = ~np.isfinite(xs)
        if self.missing:  # NaN: a value not measured (a gene outside this profile)
            bad &= ~np.isnan(xs)
        if bad.any():
            what = "inf" if self.missing else "NaN or inf"
            raise FeatureError(f"features contain {what} (stored as {self.dtype}; float16"
                               " overflows above 65504)", path=src, patient=pid, field=modality)  # fmt: skip
        c = None if raw_coords is None else _coords(raw_coords, x, src, pid)
        self.rows[pid] = (xs, c)


def _coords(raw: Any, x: np.ndarray, src: Any, pid: str) -> np.ndarray:
    """(K, 2) int64 tile coordinates of a bag (a leading axis of 1 dropped)."""
    c = _as_array(raw, src, pid, "coords")
    if c.ndim == 3 and c.shape[0] == 1:
        c = c[0]
    if x.ndim != 2 or c.shape != (x.shape[0], 2):
        raise FeatureError(f"coords must be (K, 2) with K={x.shape[0] if x.ndim == 2 else '-'}"
                           f" tiles; found shape {c.shape}", path=src, patient=pid,
                           field="coords")  # fmt: skip
    if not np.issubdtype(c.dtype, np.integer):
        if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)):
            raise FeatureError("coords must be integers", path=src, patient=pid, field="coords")
    return np.ascontiguousarray(c, dtype=np.int64)


def _refuse_ids_equal_as_text(features: Mapping[Any, Any], path: Path, modality: str) -> None:
    """Ids are stored as text, so ``1`` and ``"1"`` are one patient: writing both would
    let the second silently replace the first."""
    seen: set[str] = set()
    for pid in features:
        if str(pid) in seen:
            raise FeatureError(f"patient id {str(pid)!r} given more than once (ids are compared"
                               " as text, e.g. 1 and '1')", path=path, patient=str(pid),
                               field=modality)  # fmt: skip
        seen.add(str(pid))


#: packing reads and writes rows in batches of about this many bytes (memory bound)
PACK_BATCH_BYTES = 64 << 20


class StoreWriter(StoreFiles):
    """The writing side of :class:`~modalsurv.io.store.FeatureStore`."""

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _writer_lock(self, modality: str) -> Iterator[None]:
        """One writer per modality: an advisory lock on ``root/.{modality}.lock``.

        Only the holder writes the modality's temporary copies (``utils.atomic_path``), so
        any found on taking the lock were left by a writer that was killed (``kill -9``,
        power loss) and are removed: they would otherwise keep a whole file's size on disk.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{modality}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_stale_temporaries(self.root, of=self.path(modality).name, recursive=False)
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
                fsync_path(tmp)
            fsync_path(self.root)

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
                    fsync_path(tmp)
            fsync_path(self.root)

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
                r = old.checked_row(int(g.attrs["packed_row"]), path, _patient(key),
                                    "packed_row")  # fmt: skip
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
        step = max(1, PACK_BATCH_BYTES // (int(np.prod(row_shape)) * np.dtype(dtype).itemsize))
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
            if k == "settings" and want is not None and have is None and cur.get("n_patients"):
                # written before settings were recorded: what its features were made with
                # is unknown, so adding others' features (and relabelling) would mix them
                raise FeatureError(
                    "modality holds features from before extraction settings were recorded;"
                    " their settings are unknown, so no features made now can join them"
                    " (use a new store)", path=self.path(modality), field="settings")  # fmt: skip
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
        missing: bool = False,
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
        ``missing``: NaN marks a value that was not measured (raw RNA aligned on the union of
        genes) and is stored as such; otherwise NaN, like inf, is refused (an encoder's
        broken output).
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
        store_file = self.path(modality)
        unknown = set(coords) - set(features)
        if unknown:
            raise FeatureError("coords given for patients without features", path=store_file,
                               patient=sorted(map(str, unknown))[0], field=modality)  # fmt: skip
        _refuse_ids_equal_as_text(features, store_file, modality)
        # validate everything in memory before touching the disk
        batch = _Batch(cur.get("kind"), cur.get("dim"), cur.get("dtype") or dtype, missing)
        for pid, raw in features.items():
            src = sources.get(pid, store_file)  # no source file: name the store's
            batch.add(str(pid), raw, coords.get(pid), src, modality)
        if not batch.rows and encoder is None:
            return
        with self._locked_copy(modality) as f:
            have = self._attrs(f)
            self._check_compatible(
                modality,
                have,
                {"encoder": encoder, "checksum": checksum, "dim": batch.dim,
                 "dtype": batch.dtype},
                strict=True,
            )  # fmt: skip
            if have.get("kind") not in (None, batch.kind):
                raise FeatureError(f"modality holds {have['kind']}s, not {batch.kind}s",
                                   path=store_file, field=modality)  # fmt: skip
            for k, v in (("encoder", encoder), ("checksum", checksum)):
                if v is not None:
                    f.attrs[k] = str(v)
            if batch.rows:
                f.attrs["kind"] = batch.kind
                f.attrs["dim"] = int(batch.dim)
                f.attrs["dtype"] = batch.dtype
            self._write_groups(f, batch.rows, modality, overwrite, fingerprints or {})

    def _write_groups(self, f: h5py.File, rows: dict[str, tuple[np.ndarray, np.ndarray | None]],
                      modality: str, overwrite: bool, fingerprints: Mapping[str, str]) -> None:  # fmt: skip
        """One complete group per patient (``complete`` written last)."""
        grp = f.require_group("patients")
        if rows and "packed" in f and "exact" in f["packed"].attrs:
            del f["packed"].attrs["exact"]  # groups and pack now differ (io.store docstring)
        for pid, (xs, c) in rows.items():
            key = _key(pid)
            if key in grp:
                if not overwrite and bool(grp[key].attrs.get("complete", False)):
                    raise FeatureError("patient already stored (overwrite=False)",
                                       path=self.path(modality), patient=pid, field=modality)  # fmt: skip
                del grp[key]
            g = grp.create_group(key)
            g.create_dataset("features", data=xs)
            if c is not None:
                g.create_dataset("coords", data=c)
            if fingerprints.get(pid) is not None:
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
