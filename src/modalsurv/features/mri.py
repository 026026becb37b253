"""mpMRI volumes → fixed-size normalised arrays → one embedding per patient.

SimpleITK reads ``.mha``/``.nii(.gz)``/``.nrrd`` files and DICOM series (a folder).
Sequences (T2W, ADC, HBV) are resampled onto one grid (the T2W grid, or a given
spacing on the T2W extent) so voxels correspond; the prostate mask (when given) bounds a
crop with a margin in millimetres; intensities are normalised per sequence (z-score
inside the mask or body, or a percentile clip); every crop is resampled to a fixed shape
so a 3-D CNN sees the same geometry for every patient. Each sequence is embedded alone
(MedicalNet is single-channel) and the embeddings are concatenated or averaged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modalsurv.errors import DataError
from modalsurv.io.chimera import MRI_SEQUENCES  # the one list: t2w, adc, hbv

Norm = Literal["zscore", "percentile"]
Combine = Literal["concat", "mean"]


_IMAGE_IO = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nii": "NiftiImageIO",
             ".nii.gz": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
             ".tif": "TIFFImageIO", ".tiff": "TIFFImageIO"}  # fmt: skip


def _image_io(path: Path) -> str | None:
    """The SimpleITK reader for a file by its lower-cased suffix (None: let ITK choose)."""
    name = path.name.lower()
    return next((io for suffix, io in _IMAGE_IO.items() if name.endswith(suffix)), None)


# lines of an ITK exception that say nothing about the file: where in ITK's source it was
# thrown, and the C errno text ITK appends ("Reason: Success" after a parse error, or
# whatever an earlier call left, e.g. "Resource temporarily unavailable")
_ITK_NOISE = re.compile(r"^(Exception thrown in SimpleITK|Reason:|\S+\.(cxx|hxx|h|txx):\d+:?$)")
_ITK_PREFIX = re.compile(r"^(ITK ERROR: \w+\(0x[0-9a-fA-F]+\):|sitk::ERROR:)\s*")


def itk_reason(exc: BaseException) -> str:
    """The first meaningful line of a SimpleITK exception, without ITK's source location,
    object address or errno text (which reads "Reason: Success" for a corrupt file)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not _ITK_NOISE.match(line):
            return _ITK_PREFIX.sub("", line) or type(exc).__name__
    return type(exc).__name__


def read_image(path: str | Path, patient: str | None = None, field: str = "mri") -> Any:
    """A SimpleITK image from a file, or from the DICOM series in a folder (``field`` names
    what it is in errors: ``mri`` for a sequence, ``mri_mask`` for the mask)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(str(path))
            if not ids:
                raise DataError("no DICOM series in folder", path=path, patient=patient,
                                field=field)  # fmt: skip
            if len(ids) > 1:  # GDCM's order is no choice (a localiser, a rescan, another b)
                raise DataError(f"{len(ids)} DICOM series in one folder ({', '.join(ids)}):"
                                " give the series' own folder", path=path, patient=patient,
                                field=field)  # fmt: skip
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), ids[0]))
            img = reader.Execute()
        elif path.is_file():
            reader = sitk.ImageFileReader()
            io = _image_io(path)
            if io:  # ITK picks a reader by the case-sensitive suffix: '.MHA' found none
                reader.SetImageIO(io)
            reader.SetFileName(str(path))
            img = reader.Execute()
        else:
            raise DataError("MRI file not found", path=path, patient=patient, field=field)
    except DataError:
        raise
    except Exception as exc:  # SimpleITK raises RuntimeError with a long ITK trace
        last = itk_reason(exc)
        # ITK's last line often says "No such file" for a file that exists but is truncated
        what = (f"the file ({path.stat().st_size} bytes) exists but is not a readable image"
                " (truncated, or another format?)" if path.is_file() else "cannot read image")
        raise DataError(f"{what}; SimpleITK: {last}", path=path, patient=patient,
                        field=field) from exc  # fmt: skip
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:  # NIfTI drops this axis, MHA not
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise DataError(f"expected a 3-D volume; found {img.GetDimension()}-D", path=path,
                        patient=patient, field=field)  # fmt: skip
    if 1 in img.GetSize():  # a NIfTI of one slice reads as 2-D and is refused above
        raise DataError(f"expected a 3-D volume; found one slice ({'x'.join(map(str, img.GetSize()))}"
                        " voxels, x y z)", path=path, patient=patient, field=field)  # fmt: skip
    if img.GetNumberOfComponentsPerPixel() != 1:  # e.g. several b-values in one file
        raise DataError(f"expected one value per voxel; found {img.GetNumberOfComponentsPerPixel()}"
                        " components (a multi-volume or colour image: give one sequence per"
                        " file)", path=path, patient=patient, field=field)  # fmt: skip
    return sitk.Cast(img, sitk.sitkFloat32)


def reference_grid(image: Any, spacing: Sequence[float] | None = None) -> Any:
    """The grid to resample onto: ``image``'s own, or its extent at ``spacing`` (x, y, z mm).

    The new grid covers the same physical extent, centred on it: its first voxel's centre
    moves by ``(extent_old - extent_new) / 2 + (new - old spacing) / 2`` along each axis
    (an origin kept as it was would shift the grid by half the spacing change and leave
    its last slice outside the image)."""
    import SimpleITK as sitk

    if spacing is None:
        return image
    spacing = [float(s) for s in spacing]
    old, n_old = np.asarray(image.GetSpacing(), float), np.asarray(image.GetSize(), float)
    size = [max(1, round(n * s / t)) for n, s, t in zip(n_old, old, spacing)]
    new = np.asarray(spacing)
    shift = (n_old * old - np.asarray(size) * new) / 2 + (new - old) / 2  # along each axis, mm
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetOrigin(tuple(np.asarray(image.GetOrigin(), float) + direction @ shift))
    ref.SetDirection(image.GetDirection())
    return ref


def resample_like(image: Any, reference: Any, label: bool = False) -> Any:
    """``image`` on ``reference``'s grid (linear; nearest neighbour for label masks).

    Float32 for masks too: a UInt8 output truncated a soft mask's 0.7 to 0 (an empty mask,
    reported as lying elsewhere in space), while ``> 0`` on the file found it."""
    import SimpleITK as sitk

    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interp, 0.0, sitk.sitkFloat32)


def mask_bbox(mask: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float
              ) -> tuple[slice, slice, slice]:  # fmt: skip
    """The bounding box of ``mask`` (z, y, x array) grown by ``margin_mm`` on each side."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise DataError("the prostate mask is empty", field="mri_mask")
    lo, hi = idx.min(0), idx.max(0) + 1
    pad = np.ceil(margin_mm / np.asarray(spacing_zyx, dtype=float)).astype(int)
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def normalize(arr: np.ndarray, region: np.ndarray | None = None, method: Norm = "zscore",
              percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:  # fmt: skip
    """Intensity normalisation whose statistics come from ``region`` (mask or body).

    ``zscore``: (x - mean) / std inside the region; ``percentile``: clip to the region's
    percentiles and scale to [0, 1]. MRI intensities have no absolute scale, so this is
    what makes patients comparable.
    """
    vals = arr[region] if region is not None and region.any() else arr.ravel()
    if method == "zscore":
        # float64: a float32 mean of a constant 1234.5678 is off by one ulp, whose "std"
        # then scaled the volume to +-1 (or amplified any variation outside the region by
        # ~1e4); relative: an ADC in m^2/s (std ~1e-10) is not constant
        vals = vals.astype(np.float64)
        mu, sd = float(vals.mean()), float(vals.std())
        return ((arr - mu) / (sd if sd > 1e-7 * abs(mu) and sd > 0 else 1.0)).astype(np.float32)
    if method == "percentile":
        lo, hi = np.percentile(vals, percentiles)
        return ((np.clip(arr, lo, hi) - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    raise DataError(f"normalisation must be 'zscore' or 'percentile'; found {method!r}",
                    field="mri_norm")  # fmt: skip


def body_region(arr: np.ndarray) -> np.ndarray:
    """Voxels brighter than the Otsu threshold: the body, without the air around it."""
    from skimage.filters import threshold_otsu

    return arr > threshold_otsu(arr) if np.ptp(arr) > 0 else np.ones(arr.shape, bool)


def resize_volume(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(z, y, x) array → ``shape`` by linear interpolation (anti-aliased when shrinking)."""
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(shape):
        return arr.astype(np.float32)
    shrink = any(s < a for s, a in zip(shape, arr.shape))
    return resize(arr, tuple(shape), order=1, anti_aliasing=shrink,
                  preserve_range=True).astype(np.float32)  # fmt: skip


@dataclass(frozen=True)
class MriConfig:
    """How volumes are prepared. ``size`` is (z, y, x) voxels; ``spacing`` (x, y, z) mm or
    None for the T2W grid; ``orientation``: the T2W grid is first reoriented to these
    anatomical axes (``SimpleITK.DICOMOrient``), so that the same anatomy stored with
    another axis order or flip gives the same arrays (None: the file's own index order,
    as in extraction records written before this option)."""

    size: tuple[int, int, int] = (32, 64, 64)
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = "LPS"
    margin_mm: float = 10.0
    norm: Norm = "zscore"
    combine: Combine = "concat"
    sequences: tuple[str, ...] = MRI_SEQUENCES


def prepare_mri(paths: Mapping[str, str | Path], mask: str | Path | None = None,
                cfg: MriConfig | None = None, patient: str | None = None
                ) -> dict[str, np.ndarray]:  # fmt: skip
    """Read, co-register (resample onto the first sequence's grid), crop, normalise and
    resize each sequence. Returns ``{sequence: (z, y, x) float32}`` in ``cfg.sequences``
    order; sequences missing from ``paths`` raise (a partial embedding is not comparable)."""
    import SimpleITK as sitk

    cfg = cfg or MriConfig()
    missing = [q for q in cfg.sequences if paths.get(q) is None]
    if missing:
        raise DataError(f"MRI sequences missing: {missing} (have {sorted(k for k, v in paths.items() if v)})",
                        patient=patient, field="mri")  # fmt: skip
    images = {q: read_image(paths[q], patient) for q in cfg.sequences}
    first = images[cfg.sequences[0]]
    if cfg.orientation is not None:  # every sequence and the mask follow the T2W grid
        first = sitk.DICOMOrient(first, cfg.orientation)
    ref = reference_grid(first, cfg.spacing)
    arrays = {q: sitk.GetArrayFromImage(resample_like(img, ref)) for q, img in images.items()}
    covered = {q: _coverage(img, ref) for q, img in images.items()}
    for q in images:
        if q != cfg.sequences[0] and not covered[q].any():
            # resampled, it would be all zeros: a volume of another study (or a wrong origin)
            raise DataError(f"the {q} volume does not overlap the {cfg.sequences[0]} volume in"
                            " space (origin / direction of another study?)", path=paths[q],
                            patient=patient, field="mri")  # fmt: skip
    region = None
    crop: tuple[slice, ...] = (slice(None),) * 3
    if mask is not None:
        own = read_image(mask, patient, "mri_mask")
        region = sitk.GetArrayFromImage(resample_like(own, ref, label=True)) > 0
        try:
            crop = mask_bbox(region, ref.GetSpacing()[::-1], cfg.margin_mm)
        except DataError as exc:
            reason = exc.reason
            if (sitk.GetArrayViewFromImage(own) > 0).any():  # not empty: elsewhere in space
                reason = (f"the prostate mask does not overlap the {cfg.sequences[0]} volume in"
                          " space (origin / direction of another study?)")  # fmt: skip
            raise DataError(reason, path=mask, patient=patient, field="mri_mask") from exc
        region = region[crop]
    out = {}
    for q, arr in arrays.items():
        a = arr[crop]
        if not np.isfinite(a).all():  # a NaN spreads through the statistics to every voxel
            raise DataError(f"NaN or inf voxels in the {q} volume ({int((~np.isfinite(a)).sum())}"
                            " inside the crop)", path=paths[q], patient=patient,
                            field="mri")  # fmt: skip
        reg = region if region is not None else body_region(a)
        seen = reg & covered[q][crop]  # an ADC of a shorter extent is 0 past its edge:
        if region is not None and not seen.any():  # not in the statistics
            raise DataError(f"the {q} volume does not cover the prostate mask", path=paths[q],
                            patient=patient, field="mri")  # fmt: skip
        stats = seen if seen.any() else reg
        normed = neutral_outside(normalize(a, stats, cfg.norm), ~covered[q][crop], stats, cfg.norm)
        out[q] = resize_volume(normed, cfg.size)
    return out


def neutral_outside(normed: np.ndarray, uncovered: np.ndarray, stats: np.ndarray,
                    method: Norm) -> np.ndarray:  # fmt: skip
    """``normed`` with the voxels a sequence does not cover set to a neutral value.

    Past a shorter ADC's edge the resampled voxels are 0, which z-scores to a strongly
    negative value that reads as very low ADC; neutral, they carry no signal. Neutral is
    the normalised statistics region's centre: 0 (its mean) for ``zscore``, its median
    for ``percentile`` (the [0, 1] scale has no natural centre; the median is robust to
    the clipped tails). A fully covered sequence is returned unchanged (byte-identical)."""
    if not uncovered.any():
        return normed
    vals = normed[stats] if stats.any() else normed.ravel()
    centre = 0.0 if method == "zscore" else float(np.median(vals))
    normed = normed.copy()
    normed[uncovered] = centre
    return normed


def _coverage(image: Any, reference: Any) -> np.ndarray:
    """The voxels of ``reference``'s grid (z, y, x) that ``image`` covers."""
    import SimpleITK as sitk

    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    return sitk.GetArrayFromImage(resample_like(ones, reference, label=True)) > 0


def embed_mri(volumes: Mapping[str, np.ndarray], encoder: Any, combine: Combine = "concat"
              ) -> np.ndarray:  # fmt: skip
    """One vector per patient: each sequence through the (single-channel) volume encoder,
    then concatenated (dim × n_sequences) or averaged (dim)."""
    batch = np.stack([v[None] for v in volumes.values()])  # (S, 1, z, y, x)
    feats = encoder.encode(batch)
    if combine == "concat":
        return feats.reshape(-1).astype(np.float32)
    if combine == "mean":
        return feats.mean(axis=0).astype(np.float32)
    raise DataError(f"combine must be 'concat' or 'mean'; found {combine!r}", field="mri_combine")


def mri_dim(encoder_dim: int, cfg: MriConfig) -> int:
    """Output dimension of ``embed_mri`` for this encoder and configuration."""
    return encoder_dim * len(cfg.sequences) if cfg.combine == "concat" else encoder_dim
