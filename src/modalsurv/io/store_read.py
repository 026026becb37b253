"""Reading a FeatureStore: one modality for a list of patients as dense arrays, fast (see
``io.store`` for the figures), and the join of stored features with labels."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from modalsurv.cohort import Cohort
from modalsurv.errors import DataError, FeatureError, LabelError
from modalsurv.io.feature_files import tile_subset
from modalsurv.io.store_format import (
    StoreFiles,
    _attr,
    _open_complete,
    _own_features,
    _Pack,
    _packed_row,
    _read_only,
    disagrees,
)


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


@dataclass
class _Located:
    """Where the requested patients of one modality file are: a packed row, an own dataset
    or nowhere (absent); what ``load`` needs, found with as few HDF5 calls as possible."""

    ids: list[str]
    kind: str
    dim: int
    stored: np.dtype | None  # every dataset of a modality has the recorded dtype
    objs: list[h5py.h5g.GroupID | None]
    rows: np.ndarray  # packed row, or -1
    dsets: list[h5py.h5d.DatasetID | None]  # own dataset of an unpacked patient
    pf: h5py.Dataset | None  # /packed/features
    pack: _Pack | None
    packed: np.ndarray  # N bool: in the pack
    present: np.ndarray  # N bool: complete in the file (packed or own dataset)

    @property
    def n(self) -> int:
        return len(self.ids)

    def whole_pack(self, out: np.ndarray | None, dtype: Any) -> bool:
        """The pack itself is the answer: every row, in order, stored dtype, no ``out``."""
        return (self.pf is not None and out is None and self.n == self.pf.shape[0]
                and self.pf.dtype == np.dtype(dtype)
                and np.array_equal(self.rows, np.arange(self.n)))  # fmt: skip

    def whole(self, d: h5py.h5d.DatasetID) -> np.ndarray:
        arr = np.empty(d.shape, dtype=self.stored or d.dtype)
        d.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
        return arr


def _check_rows(pack: _Pack, rows: np.ndarray, ids: list[str], path: Path, modality: str
                ) -> None:  # fmt: skip
    """Refuse a pack that disagrees with the rows pointed at (``_Pack.unreadable``)."""
    n = pack.x.shape[0]
    if len(pack.lengths) != n:
        raise disagrees(f"/packed/lengths has {len(pack.lengths)} rows, /packed/features {n}",
                        path, None, modality)  # fmt: skip
    bad = pack.unreadable(rows)
    if bad is not None:
        raise disagrees(bad[1], path, ids[bad[0]], modality)


def _locate(f: h5py.File, ids: list[str], path: Path, modality: str) -> _Located:
    kind, dim = _attr(f.attrs.get("kind", "bag")), f.attrs.get("dim")
    stored = np.dtype(_attr(f.attrs["dtype"])) if "dtype" in f.attrs else None
    grp, pk = f.get("patients"), f.get("packed")
    objs: list[h5py.h5g.GroupID | None] = [None] * len(ids)
    if pk is not None and bool(pk.attrs.get("exact", False)):
        # untouched since pack: its patient list is the truth, no group to open
        # (opening 1,000 groups and reading their attributes costs ~0.1 s)
        index = {p: i for i, p in enumerate(pk["patients"].asstr()[()])}
        rows = np.array([index.get(pid, -1) for pid in ids], dtype=np.int64)
    else:
        objs = [None if grp is None else _open_complete(grp.id, pid) for pid in ids]
        rows = np.array([-1 if o is None else _packed_row(o) for o in objs], np.int64)
    dsets = [None if o is None or r >= 0 else _own_features(o, path, pid)
             for o, r, pid in zip(objs, rows, ids)]  # fmt: skip
    pf, pack = None, None
    if (rows >= 0).any():
        if "packed/features" not in f or "packed/lengths" not in f:
            raise FeatureError(
                "patients point at a packed row but the file has no /packed datasets"
                " (damaged file?)", path=path, patient=ids[int(np.argmax(rows >= 0))],
                field=modality)  # fmt: skip
        pf = f["packed/features"]
        # copy-on-write map (torch wraps only writable arrays; the file is never written);
        # what is handed out uncopied is a read-only view of it
        pack = _Pack.open(f, writable=True)
        _check_rows(pack, rows, ids, path, modality)
    packed = rows >= 0
    present = packed | np.array([d is not None for d in dsets], dtype=bool)
    return _Located(ids, kind, int(dim) if dim is not None else 0, stored, objs, rows, dsets,
                    pf, pack, packed, present)  # fmt: skip


def _packed_bags(at: _Located, x: np.ndarray, sizes: np.ndarray, kept: np.ndarray,
                 coords: np.ndarray | None, seed: int) -> None:  # fmt: skip
    """Packed patients into ``x``: whole bags straight from the map (padding included, zero
    in the pack); subsampled bags (the same tiles as unpacked: tile_subset) and coords."""
    pack, pf = at.pack, at.pf
    if pack is None or pf is None:
        return
    k_max, xt = x.shape[1], torch.from_numpy(x)
    kc = min(pack.x.shape[1], k_max)
    full = at.packed & (kept == sizes)
    _copy_rows(x, pf, pack.x, np.flatnonzero(full), at.rows[full])
    if kc < k_max:
        x[full, kc:] = 0
    for i in np.flatnonzero(at.packed & ((kept < sizes) | (coords is not None))):
        r, k, m = int(at.rows[i]), int(sizes[i]), int(kept[i])
        idx = tile_subset(at.ids[i], k, m, seed) if m < k else None
        if idx is not None:
            xt[i, :m].copy_(torch.from_numpy(pack.x[r, idx]))
            x[i, m:] = 0
        if coords is not None and pack.coords is not None and pack.has_coords[r]:
            coords[i, :m] = pack.coords[r, :m] if idx is None else pack.coords[r, idx]


def _unpacked_bags(at: _Located, x: np.ndarray, sizes: np.ndarray, kept: np.ndarray,
                   coords: np.ndarray | None, seed: int) -> None:  # fmt: skip
    """Unpacked patients into ``x``: whole-dataset reads through h5py's low-level API (its
    high-level objects and selections cost more than the read itself), straight into the
    output when the dtypes match, else into a scratch buffer followed by a torch cast
    (HDF5's own float16 conversion and numpy's cast are both ~5x slower than torch's)."""
    xt = torch.from_numpy(x)
    scratch: np.ndarray | None = None
    for i, d in enumerate(at.dsets):
        if d is None:
            continue
        k, m = int(sizes[i]), int(kept[i])
        idx = None
        if m < k:
            idx = tile_subset(at.ids[i], k, m, seed)
            x[i, :m] = at.whole(d)[idx]
        elif (at.stored or d.dtype) == x.dtype:
            d.read(h5py.h5s.ALL, h5py.h5s.ALL, x[i, :k])  # a contiguous view
        else:
            if scratch is None:
                scratch = np.empty((int(sizes.max()), at.dim), at.stored or d.dtype)
            d.read(h5py.h5s.ALL, h5py.h5s.ALL, scratch[:k])
            xt[i, :k].copy_(torch.from_numpy(scratch[:k]))
        x[i, m:] = 0
        obj = at.objs[i]
        if coords is not None and obj is not None and obj.links.exists(b"coords"):
            c = h5py.Dataset(h5py.h5d.open(obj, b"coords"))[()]
            coords[i, :m] = c if idx is None else c[idx]


class StoreReader(StoreFiles):
    """The reading side of :class:`~modalsurv.io.store.FeatureStore`."""

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
        if "" in ids:  # a packed file would report it absent; unpacked, name nothing
            raise DataError(f"an empty patient id was asked for (position {ids.index('')})",
                            path=self.path(modality), field="patient")  # fmt: skip
        with self._open(modality) as f:
            at = _locate(f, ids, self.path(modality), modality)
            if at.pf is not None:
                _prefetch(at.pf, at.rows[at.packed])
            if at.kind == "vector":
                return self._load_vectors(at, modality, dtype, out)
            return self._load_bags(at, modality, max_tiles, seed, dtype, with_coords, out)

    def _load_vectors(self, at: _Located, modality: str, dtype: Any, out: np.ndarray | None
                      ) -> LoadedModality:  # fmt: skip
        if at.whole_pack(out, dtype) and at.pack is not None:
            return LoadedModality(_read_only(at.pack.x), at.present, None, None)
        x = self._out(out, (at.n, at.dim), dtype, modality)
        x[~at.present] = 0
        if at.pf is not None and at.pack is not None:
            _copy_rows(x, at.pf, at.pack.x, np.flatnonzero(at.packed), at.rows[at.packed])
        for i, d in enumerate(at.dsets):
            if d is not None:
                x[i] = at.whole(d)
        return LoadedModality(x, at.present, None, None)

    def _load_bags(self, at: _Located, modality: str, max_tiles: int | None, seed: int,
                   dtype: Any, with_coords: bool, out: np.ndarray | None) -> LoadedModality:  # fmt: skip
        n, pack = at.n, at.pack
        sizes = np.zeros(n, dtype=np.int64)
        if pack is not None:
            sizes[at.packed] = pack.lengths[at.rows[at.packed]]
        for i, d in enumerate(at.dsets):
            if d is not None:
                sizes[i] = d.shape[0]
        kept = sizes if max_tiles is None else np.minimum(sizes, max_tiles)
        k_max = max(int(kept.max()) if n else 0, 1)
        if (at.whole_pack(out, dtype) and pack is not None and (kept == sizes).all()
                and at.pf is not None and at.pf.shape[1] == k_max):  # fmt: skip
            mask = np.arange(k_max)[None, :] < sizes[:, None]
            coords = None
            if with_coords:
                coords = (
                    np.zeros((n, k_max, 2), dtype=np.int64)
                    if pack.coords is None
                    else np.array(pack.coords)  # zero where a patient has none
                )
            return LoadedModality(_read_only(pack.x), at.present, mask, coords)
        x = self._out(out, (n, k_max, at.dim), dtype, modality)
        k_max = x.shape[1]
        mask = np.arange(k_max)[None, :] < kept[:, None]
        coords = np.zeros((n, k_max, 2), dtype=np.int64) if with_coords else None
        x[~at.present] = 0
        _packed_bags(at, x, sizes, kept, coords, seed)
        _unpacked_bags(at, x, sizes, kept, coords, seed)
        return LoadedModality(x, at.present, mask, coords)

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


# ---------------------------------------------------------------------------- joining
def no_match_error(store: StoreFiles, store_ids: Sequence[str], other_ids: Sequence[str],
                   other: str) -> DataError:  # fmt: skip
    """A store none of whose ids matches the other side is almost always a naming mismatch
    ("001000" against "1000"), not a real cohort: say so with examples of both."""
    return LabelError(f"no patient id of the {other} matches the feature store: {other} ids"
                      f" {list(other_ids)[:5]}, store ids {sorted(store_ids)[:5]} (a leading"
                      " zero or a suffix?)", path=store.root, field="patient")  # fmt: skip


def stored_modalities(store: StoreReader, ids: Sequence[str], modalities: Sequence[str],
                      other: str, max_tiles: int | None = None, seed: int = 0
                      ) -> dict[str, LoadedModality]:  # fmt: skip
    """Every modality of ``modalities`` for the patients ``ids``, joined by id (absent where
    the store has none); the one join of stored features with patients from elsewhere (a
    labels table, a CHIMERA folder)."""
    stored = set().union(*(store.patients(m) for m in modalities)) if modalities else set()
    if ids and stored and not stored & {str(i) for i in ids}:
        raise no_match_error(store, sorted(stored), [str(i) for i in ids], other)
    return {m: store.load(m, [str(i) for i in ids], max_tiles=max_tiles, seed=seed)
            for m in modalities}  # fmt: skip


def cohort_from_store(store: StoreReader, labels: pd.DataFrame, modalities: Sequence[str],
                      max_tiles: int | None = None, seed: int = 0) -> Cohort:  # fmt: skip
    """A Cohort of the patients in ``labels`` (column or index ``patient``, columns
    ``time``, ``event`` and optional extra columns such as ``site``, kept as meta) with the
    given stored modalities; patients without stored features for a modality are absent."""
    df = labels.set_index("patient") if "patient" in labels.columns else labels
    for col in ("time", "event"):
        if col not in df.columns:
            raise LabelError(f"labels need a {col!r} column; found {list(df.columns)}", field=col)
    ids = [str(i) for i in df.index]
    loaded = stored_modalities(store, ids, modalities, "labels", max_tiles, seed)
    return Cohort(
        ids, df["time"].to_numpy(), df["event"].to_numpy(),
        features={m: lm.x for m, lm in loaded.items()},
        present={m: lm.present for m, lm in loaded.items()},
        meta=df.drop(columns=["time", "event"]),
        bag_mask={m: lm.mask for m, lm in loaded.items() if lm.mask is not None},
        copy=False,  # freshly loaded arrays (a read-only map is still copied)
    )  # fmt: skip


def labelled_store_cohort(root: str | Path, labels: str | Path | pd.DataFrame | None = None,
                          modalities: Sequence[str] | None = None, max_tiles: int | None = None,
                          seed: int = 0) -> Cohort:  # fmt: skip
    """A store used as a data source (``store:ROOT``): the labels CSV (``patient``,
    ``time``, ``event`` [, ``site``, ...]; default ``ROOT/labels.csv``) joined with the
    stored modalities (default: all) by :func:`cohort_from_store`."""
    from modalsurv.io.store import FeatureStore

    if not Path(root).is_dir():  # not "labels CSV not found" inside a folder that is not there
        raise DataError("feature store folder not found (what modalsurv extract --out wrote)",
                        path=root)  # fmt: skip
    store = FeatureStore(root)
    path = None
    if not isinstance(labels, pd.DataFrame):
        path = Path(labels) if labels is not None else store.root / "labels.csv"
        if not path.is_file():
            raise LabelError("labels CSV not found (patient, time, event[, site]); pass"
                             " data.params.labels=PATH", path=path)  # fmt: skip
        # "NA" and "None" are patient ids here: only an empty cell is missing
        labels = pd.read_csv(path, dtype={"patient": str}, keep_default_na=False,
                             na_values={"time": [""], "event": [""]})  # fmt: skip
        if "patient" not in labels.columns:
            raise LabelError(f"labels need a 'patient' column; found {list(labels.columns)}",
                             path=path, field="patient")  # fmt: skip
    mods = list(modalities) if modalities is not None else store.modalities()
    if not mods:
        raise DataError("the feature store holds no modality to train on (run modalsurv"
                        " extract first)", path=store.root, field="modalities")  # fmt: skip
    try:
        return cohort_from_store(store, labels, mods, max_tiles=max_tiles, seed=seed)
    except DataError as exc:  # a label problem: name the labels file it is in
        if path is None or exc.path is not None:
            raise
        raise type(exc)(exc.reason, path=path, patient=exc.patient, field=exc.field) from exc
