"""The image cache: what ``extract`` encoded, kept as images so training can re-encode it.

Fine-tuning an encoder inside ModalSurv (``finetune:`` in the run config) needs the
encoder's *inputs*, not only its frozen outputs: the uint8 tiles of every slide and the
preprocessed MRI volumes. ``modalsurv extract --tile-cache --volume-cache`` writes them
here, beside the feature store, in the store's own order, so training reads a seeded
subset of a patient's tiles per step without touching a slide again.

Layout (a folder; by default ``STORE/image_cache``)::

    cache.json            {"format": 1, "modalities": {"wsi": {"encoder": {...},
                           "settings": {...}}, "mri": {...}}}: the encoder the frozen
                           features were made with and the tile / MRI settings
    wsi/<key>.tiles.npy   (K, S, S, 3) uint8: every tile of the patient's bag, slides in
                           order (the store's ``wsi`` bag, row for row)
    wsi/<key>.coords.npy  (K, 2) int64 level-0 coordinates (the store's)
    wsi/<key>.json        {"patient", "n", "shape", "fingerprint"} written last: the
                           patient is complete
    mri/<key>.npy         (S, z, y, x) float32: the sequences after ``prepare_mri``, in the
                           recorded order
    mri/<key>.json

``<key>`` is the patient id when it is a plain file name, else a hash of it (the sidecar
JSON keeps the id). Arrays are memory-mapped on reading, so taking 32 tiles of a 500-tile
bag reads those 32 tiles. Every file is written to a temporary name and renamed.

Readers (``ImageCache`` on disk, ``MemoryImages`` for the challenge's single case) share
one small interface: ``has``, ``n_tiles``, ``tiles``, ``volumes``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modalsurv.errors import FeatureError
from modalsurv.utils import atomic_path, atomic_write_text

CACHE_FORMAT = 1
CACHE_RECORD = "cache.json"
DEFAULT_FOLDER = "image_cache"  # inside the feature store
KINDS = ("wsi", "mri")
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}")


def patient_key(patient: str) -> str:
    """A file-name-safe key for a patient id (the id itself when it already is one)."""
    pid = str(patient)
    if _PLAIN.fullmatch(pid):
        return pid
    return "id-" + hashlib.sha256(pid.encode()).hexdigest()[:24]


def _check_kind(modality: str) -> None:
    if modality not in KINDS:
        raise FeatureError(f"the image cache holds {list(KINDS)}; found {modality!r}",
                           field="modality")  # fmt: skip


class ImageCache:
    """An image cache folder (see module docstring): read and written by patient."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ record
    @property
    def record(self) -> dict[str, Any]:
        """``cache.json`` (empty when the folder has none yet)."""
        path = self.root / CACHE_RECORD
        if not path.is_file():
            return {}
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot read the image cache record: {exc}", path=path) from None
        if not isinstance(rec, dict) or rec.get("format") != CACHE_FORMAT:
            raise FeatureError(f"not an image cache record of format {CACHE_FORMAT}", path=path)
        return rec

    def entry(self, modality: str) -> dict[str, Any] | None:
        """How the cached ``modality`` was made: ``encoder`` (the extraction record's
        entry: spec, name, dim, checksum, weights, kwargs) and ``settings``."""
        _check_kind(modality)
        return (self.record.get("modalities") or {}).get(modality)

    def begin(self, modality: str, encoder: Mapping[str, Any], settings: Mapping[str, Any]
              ) -> None:  # fmt: skip
        """Declare what is about to be cached; refuses a folder that already caches
        ``modality`` from another encoder (checksum) or with other settings."""
        _check_kind(modality)
        rec = self.record or {"format": CACHE_FORMAT, "modalities": {}}
        new = {"encoder": dict(encoder), "settings": dict(settings)}
        old = rec["modalities"].get(modality)
        if old is not None and self.patients(modality):
            same = (old["encoder"].get("checksum") == new["encoder"].get("checksum")
                    and old["settings"] == json.loads(json.dumps(new["settings"])))  # fmt: skip
            if not same:
                raise FeatureError(
                    f"the image cache already holds {modality} images made with encoder"
                    f" {old['encoder'].get('name')} ({old['encoder'].get('checksum')}) and"
                    f" settings {old['settings']}; refusing to mix in {new['encoder'].get('name')}"
                    f" ({new['encoder'].get('checksum')}), {dict(settings)}: use another cache"
                    " folder", path=self.root / CACHE_RECORD, field=modality)  # fmt: skip
        rec["modalities"][modality] = new
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / CACHE_RECORD, json.dumps(rec, indent=1))

    # ------------------------------------------------------------------ index
    def _info_path(self, modality: str, patient: str) -> Path:
        return self.root / modality / f"{patient_key(patient)}.json"

    def info(self, modality: str, patient: str) -> dict[str, Any] | None:
        """The patient's sidecar (``n``, ``shape``, ``fingerprint``), None when absent."""
        _check_kind(modality)
        path = self._info_path(modality, patient)
        if not path.is_file():
            return None
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot read an image cache entry: {exc}", path=path,
                               patient=str(patient)) from None  # fmt: skip
        if str(info.get("patient")) != str(patient):
            raise FeatureError(f"image cache entry belongs to patient {info.get('patient')!r}",
                               path=path, patient=str(patient))  # fmt: skip
        return info

    def has(self, modality: str, patient: str) -> bool:
        return self.info(modality, patient) is not None

    def patients(self, modality: str) -> list[str]:
        """Every complete patient of ``modality``."""
        _check_kind(modality)
        folder = self.root / modality
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            try:
                out.append(str(json.loads(p.read_text(encoding="utf-8"))["patient"]))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def fingerprint(self, modality: str, patient: str) -> str | None:
        info = self.info(modality, patient)
        return None if info is None else info.get("fingerprint")

    # ------------------------------------------------------------------ reading
    def _need(self, modality: str, patient: str) -> dict[str, Any]:
        info = self.info(modality, patient)
        if info is None:
            raise FeatureError(f"the image cache has no {modality} images for this patient"
                               " (extract with --tile-cache / --volume-cache)",
                               path=self.root / modality, patient=str(patient),
                               field=modality)  # fmt: skip
        return info

    def n_tiles(self, patient: str) -> int:
        return int(self._need("wsi", patient)["n"])

    def tiles(self, patient: str, index: np.ndarray | None = None) -> np.ndarray:
        """(n, S, S, 3) uint8 tiles at ``index`` (bag order; all when None)."""
        info = self._need("wsi", patient)
        path = self.root / "wsi" / f"{patient_key(patient)}.tiles.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot read cached tiles: {exc}", path=path,
                               patient=str(patient), field="wsi") from None  # fmt: skip
        if arr.shape[0] != int(info["n"]) or arr.dtype != np.uint8 or arr.ndim != 4:
            raise FeatureError(f"cached tiles are {arr.dtype} {arr.shape}; the entry says"
                               f" {info['n']} uint8 tiles", path=path, patient=str(patient),
                               field="wsi")  # fmt: skip
        if index is None:
            return np.array(arr)
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= arr.shape[0]):
            raise FeatureError(f"tile index out of range (0..{arr.shape[0] - 1})", path=path,
                               patient=str(patient), field="wsi")  # fmt: skip
        return np.ascontiguousarray(arr[index])

    def coords(self, patient: str) -> np.ndarray:
        self._need("wsi", patient)
        return np.load(self.root / "wsi" / f"{patient_key(patient)}.coords.npy")

    def volumes(self, patient: str) -> np.ndarray:
        """(S, z, y, x) float32 preprocessed volumes."""
        self._need("mri", patient)
        path = self.root / "mri" / f"{patient_key(patient)}.npy"
        try:
            arr = np.load(path)
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot read cached volumes: {exc}", path=path,
                               patient=str(patient), field="mri") from None  # fmt: skip
        if arr.ndim != 4 or arr.dtype != np.float32:
            raise FeatureError(f"cached volumes must be (S, z, y, x) float32; found {arr.dtype}"
                               f" {arr.shape}", path=path, patient=str(patient), field="mri")  # fmt: skip
        return arr

    # ------------------------------------------------------------------ writing
    def write_tiles(self, patient: str, tiles: np.ndarray, coords: np.ndarray,
                    fingerprint: str) -> None:  # fmt: skip
        """A patient's whole bag of tiles (store order) and coordinates; the sidecar last."""
        tiles = np.asarray(tiles)
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
            raise FeatureError(f"tiles must be (K, S, S, 3) uint8; found {tiles.dtype}"
                               f" {tiles.shape}", patient=str(patient), field="wsi")  # fmt: skip
        if len(coords) != len(tiles):
            raise FeatureError(f"{len(coords)} coordinates for {len(tiles)} tiles",
                               patient=str(patient), field="wsi")  # fmt: skip
        self._write_entry("wsi", patient, {".tiles.npy": np.ascontiguousarray(tiles),
                                           ".coords.npy": np.asarray(coords, dtype=np.int64)},
                          {"n": len(tiles), "shape": list(tiles.shape[1:]),
                           "fingerprint": fingerprint})  # fmt: skip

    def write_volumes(self, patient: str, volumes: np.ndarray, fingerprint: str) -> None:
        """A patient's preprocessed sequences (S, z, y, x); the sidecar last."""
        vol = np.asarray(volumes, dtype=np.float32)
        if vol.ndim != 4:
            raise FeatureError(f"volumes must be (S, z, y, x); found {vol.shape}",
                               patient=str(patient), field="mri")  # fmt: skip
        self._write_entry("mri", patient, {".npy": np.ascontiguousarray(vol)},
                          {"n": int(vol.shape[0]), "shape": list(vol.shape),
                           "fingerprint": fingerprint})  # fmt: skip

    def _write_entry(self, modality: str, patient: str, arrays: dict[str, np.ndarray],
                     meta: dict[str, Any]) -> None:  # fmt: skip
        """The entry's arrays (``<key><suffix>``), each atomically, then its sidecar: an
        entry interrupted before the sidecar does not count as cached. Rewriting an entry
        removes its old sidecar first: interrupted, the old one would vouch (patient, n,
        fingerprint) for the new arrays."""
        folder = self.root / modality
        folder.mkdir(parents=True, exist_ok=True)
        key = patient_key(patient)
        (folder / f"{key}.json").unlink(missing_ok=True)
        for suffix, arr in arrays.items():
            _save(folder / f"{key}{suffix}", arr)
        atomic_write_text(folder / f"{key}.json",
                          json.dumps({"patient": str(patient), **meta}))  # fmt: skip


def _save(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


class MemoryImages:
    """One or a few patients' images held in memory (the challenge's case): the reading
    interface of :class:`ImageCache` over ``tiles`` (patient → (K, S, S, 3) uint8, bag
    order) and ``volumes`` (patient → (S, z, y, x) float32)."""

    def __init__(self, tiles: Mapping[str, np.ndarray] | None = None,
                 volumes: Mapping[str, np.ndarray] | None = None) -> None:  # fmt: skip
        self._tiles = {str(k): np.asarray(v, np.uint8) for k, v in (tiles or {}).items()}
        self._volumes = {str(k): np.asarray(v, np.float32) for k, v in (volumes or {}).items()}
        self.root = Path("<memory>")

    def clear(self) -> None:
        self._tiles.clear()
        self._volumes.clear()

    def add(self, patient: str, tiles: np.ndarray | None = None,
            volumes: np.ndarray | None = None) -> None:  # fmt: skip
        if tiles is not None:
            self._tiles[str(patient)] = np.asarray(tiles, np.uint8)
        if volumes is not None:
            self._volumes[str(patient)] = np.asarray(volumes, np.float32)

    def has(self, modality: str, patient: str) -> bool:
        _check_kind(modality)
        return str(patient) in (self._tiles if modality == "wsi" else self._volumes)

    def n_tiles(self, patient: str) -> int:
        return len(self._get(self._tiles, "wsi", patient))

    def tiles(self, patient: str, index: np.ndarray | None = None) -> np.ndarray:
        arr = self._get(self._tiles, "wsi", patient)
        return arr.copy() if index is None else arr[np.asarray(index, dtype=np.int64)]

    def volumes(self, patient: str) -> np.ndarray:
        return self._get(self._volumes, "mri", patient)

    def _get(self, table: dict[str, np.ndarray], modality: str, patient: str) -> np.ndarray:
        if str(patient) not in table:
            raise FeatureError(f"no {modality} images in memory for this patient",
                               patient=str(patient), field=modality)  # fmt: skip
        return table[str(patient)]
