"""The FeatureStore's on-disk format (see ``io.store`` for the layout): file attributes,
patient keys, the packed datasets, and ``StoreFiles``, the paths and metadata that both the
reading and the writing side use."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import h5py
import numpy as np

from modalsurv.errors import DataError, FeatureError

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

    def unreadable(self, rows: np.ndarray, unpacked: bool = True) -> tuple[int, str] | None:
        """(position in ``rows``, why) of the first row this pack cannot serve: outside
        it, or a bag length beyond its width; None when every row can be read. A damaged or
        hand-edited file would otherwise be read from whatever bytes follow the dataset
        (another patient's features, or garbage). ``unpacked``: a negative row means "not
        packed" and is skipped (else it is outside the pack)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = min(len(self.lengths), self.x.shape[0])
        outside = np.flatnonzero((rows >= n) | (~unpacked & (rows < 0)))
        if outside.size:
            first = int(outside[0])
            return first, f"packed row {int(rows[first])} is outside the pack ({n} rows)"
        if self.x.ndim == 3:
            at = np.flatnonzero(rows >= 0)
            k = self.lengths[rows[at]]
            odd = at[(k < 0) | (k > self.x.shape[1])]
            if odd.size:
                return int(odd[0]), (f"packed bag length {int(self.lengths[rows[odd[0]]])} is"
                                     f" outside 0..{self.x.shape[1]}")  # fmt: skip
        return None

    def checked_row(self, r: int, path: Path, patient: str, field: str) -> int:
        """``r``, or the FeatureError :meth:`unreadable` gives for it."""
        bad = self.unreadable(np.array([r]), unpacked=False)
        if bad is not None:
            raise disagrees(bad[1], path, patient, field)
        return r

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One patient's features (sliced to its length) and coords, as copies."""
        k = int(self.lengths[r])
        x = np.array(self.x[r, :k] if self.x.ndim == 3 else self.x[r])
        c = np.array(self.coords[r, :k]) if self.coords is not None and self.has_coords[r] else None
        return x, c


def disagrees(why: str, path: Path, patient: str | None, field: str) -> FeatureError:
    """The error for a packed index that disagrees with its file."""
    return FeatureError(f"{why}: the packed index disagrees with the file (damaged file?"
                        " repack or re-extract)", path=path, patient=patient, field=field)  # fmt: skip


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
    # a negative row read another patient's features; one past the pack an IndexError
    return pack.row(pack.checked_row(int(g.attrs["packed_row"]), path, patient, "features"))


def _own_features(gid: h5py.h5g.GroupID, path: Path, patient: str) -> h5py.h5d.DatasetID:
    """The ``features`` dataset of an unpacked patient group."""
    if not gid.links.exists(b"features"):
        raise _no_data(path, patient)
    return h5py.h5d.open(gid, b"features")


class StoreFiles:
    """A store's files: paths, provenance attributes, which patients are complete."""

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
        try:
            handle = h5py.File(path, "r")
        except OSError as err:  # truncated or not HDF5: say which file
            raise FeatureError(f"cannot open the feature file ({err})", path=path,
                               field=modality) from None  # fmt: skip
        with handle as f:
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

    def _current_meta(self, modality: str) -> dict[str, Any]:
        if not self.exists(modality):
            return dict.fromkeys(_META_KEYS) | {"n_patients": 0}
        return self.meta(modality)

    def _attrs(self, f: h5py.File) -> dict[str, Any]:
        out = {k: _attr(f.attrs[k]) if k in f.attrs else None for k in _META_KEYS}
        out["settings"] = _settings(out["settings"])
        out["n_patients"] = len(self._complete_keys(f))
        return out
