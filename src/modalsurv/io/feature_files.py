"""Other tools' per-patient embedding files, read without a store: ``.pt`` (a tensor or a
dict with ``features`` [and ``coords``], loaded weights-only), CLAM/TRIDENT ``.h5`` and
``.npy``; and the seeded tile subset every reader uses to cap a bag.

Used by the CHIMERA and manifest readers (organiser tile features) and by the store's
importers; shape errors name the file and the patient.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from modalsurv.errors import FeatureError


def tile_subset(patient: str, n: int, max_tiles: int, seed: int) -> np.ndarray:
    """Sorted indices of ``max_tiles`` of ``n`` tiles, fixed by (seed, patient).

    Seeding per patient (not from one shared stream) keeps a patient's tiles identical
    whichever other patients are loaded with it and in whatever order.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(str(patient).encode())])
    return np.sort(rng.choice(n, size=max_tiles, replace=False))


def _as_array(value: Any, path: str | Path | None, patient: str | None, what: str) -> np.ndarray:
    """A numpy view of a tensor / array / nested list of real numbers (bool, int, float);
    FeatureError for anything else: text, objects, or complex values, whose imaginary part
    the float32 cast would drop without a word."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        arr = t.numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise FeatureError(
            f"{what} must be a tensor or array of real numbers; found {type(value).__name__}"
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
    if x.shape[-1] == 0:  # a width of 0 would pass as a modality with no columns
        raise FeatureError(f"no feature values: shape {x.shape} has D = 0", path=path,
                           patient=patient, field=what)  # fmt: skip
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
    if path.stat().st_size == 0:  # the loaders' own message for it is empty or cryptic
        raise FeatureError("empty file (0 bytes): an interrupted copy or extraction?",
                           path=path, patient=patient)  # fmt: skip
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
                x = _as_array(f["features"][()], path, patient, "features")
                if "coords" in f:
                    coords = _as_array(f["coords"][()], path, patient, "coords")
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
    if x.size and np.issubdtype(x.dtype, np.floating) and np.isnan(x).all():
        # a failed extraction written anyway: imputing it would pass it off as data
        raise FeatureError(f"every value is NaN ({x.shape}): no features in this file (a"
                           " failed extraction?); re-extract it, or leave the cell empty for"
                           " a patient without this modality", path=path, patient=patient,
                           field="features")  # fmt: skip
    if coords is not None:
        coords = np.asarray(coords)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
    return x, coords
