"""Whole-slide images: open a pyramid, find tissue, lay a tile grid, stream tile batches.

The steps are separate so each can be checked on its own and so planning (cheap: a
thumbnail and a grid) is apart from reading (expensive: decoding tiles):

1. ``Slide``: a pyramidal ``.tif``/``.svs`` opened with tiffslide (or OpenSlide when it is
   importable and asked for), with its level-0 resolution (µm per pixel) from the file's
   metadata or ``mpp_override``.
2. ``tissue_mask``: the provided tissue mask (any scale) or Otsu on a thumbnail.
3. ``plan_tiles``: a grid at the target resolution, tiles with enough tissue, at most
   ``max_tiles`` of them (uniformly spread or seeded-random), in level-0 coordinates.
4. ``iter_tile_batches``: decode tiles in a thread pool and yield fixed-size batches, so
   memory is bounded by a couple of batches, whatever the slide's size.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modalsurv.errors import DataError, DataWarning

Sampling = Literal["uniform", "random"]
MPP_TOLERANCE = 0.1  # a level within 10 % of the target resolution is read as is
# coarser than this (µm per pixel) is no scanner's level 0: a resolution tag left at the
# TIFF writer's 72-dpi default reads as 352.8 µm/px and would give one-pixel tiles
MAX_SLIDE_MPP = 10.0
# x and y resolutions further apart than this are non-square pixels (a line scanner, a mis-set
# YResolution tag): tiles cut square in pixels would not be square in µm
MPP_XY_TOLERANCE = 0.05
# a tissue mask's aspect may differ from its slide's by rounding and by levels padded to whole
# tiles (plus this much); another slide's mask or a crop differs by more
MASK_ASPECT_TOLERANCE = 0.1
# a thumbnail's level larger than this (RGB bytes) is read in bands of rows
THUMB_READ_BYTES = 256 * 2**20


# ---------------------------------------------------------------------------- slide
def _backend(name: str) -> str:
    if name == "auto":
        return "tiffslide"
    if name not in ("tiffslide", "openslide"):
        raise DataError(f"slide backend must be auto, tiffslide or openslide; found {name!r}",
                        field="backend")  # fmt: skip
    return name


def _open_handle(path: Path, backend: str) -> Any:
    if backend == "openslide":
        try:
            import openslide
        except ImportError as exc:
            raise DataError("backend 'openslide' asked for but the openslide package is not"
                            " installed (pip install openslide-python openslide-bin)",
                            path=path, field="backend") from exc  # fmt: skip
        return openslide.OpenSlide(str(path))
    import tiffslide

    return tiffslide.TiffSlide(str(path))


def _min_is_white(handle: Any) -> bool:
    """Whether a tiffslide slide is a MinIsWhite greyscale TIFF, which tiffslide decodes
    as stored: glass would read black and be taken for tissue."""
    try:
        photometric = handle.ts_tifffile.series[0].keyframe.photometric
    except (AttributeError, IndexError):
        return False
    import tifffile

    return bool(photometric == tifffile.PHOTOMETRIC.MINISWHITE)


class Slide:
    """A pyramidal slide: level geometry, level-0 µm/px, and region reads as uint8 RGB.

    ``mpp_override`` replaces (or supplies) the level-0 resolution when the file's metadata
    lacks it or is wrong. Each thread gets its own file handle (``read_region`` is called
    from a thread pool), so reads never share decoder state.
    """

    def __init__(self, path: str | Path, mpp_override: float | None = None,
                 backend: str = "auto") -> None:  # fmt: skip
        self.path = Path(path)
        self.backend = _backend(backend)
        if not self.path.is_file():
            raise DataError("slide file not found", path=self.path, field="slide")
        try:
            handle = _open_handle(self.path, self.backend)
            self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
                (int(w), int(h)) for w, h in handle.level_dimensions
            )
            self.level_downsamples: tuple[float, ...] = tuple(
                float(d) for d in handle.level_downsamples
            )
            props = dict(handle.properties)
        except DataError:
            raise
        except Exception as exc:  # corrupt / not a slide: say which file
            raise DataError(f"cannot open slide: {type(exc).__name__}: {exc}", path=self.path,
                            field="slide") from exc  # fmt: skip
        self._local = threading.local()
        self._local.handle = handle
        self._handles = [handle]
        self._lock = threading.Lock()
        try:
            self.mpp = self._resolve_mpp(props, mpp_override)
            self._check_pixels(handle)
            self._invert = _min_is_white(handle) if self.backend == "tiffslide" else False
        except BaseException:
            self.close()
            raise

    def _check_pixels(self, handle: Any) -> None:
        """Refuse a slide whose pixels are not 8-bit (16-bit, float): tile encoders take 8-bit
        RGB, and the region reader cannot even decode them (a raw TypeError per tile)."""
        if self.backend != "tiffslide":  # OpenSlide always gives 8-bit RGBA
            return
        lv = len(self.level_dimensions) - 1
        try:
            dtype = np.asarray(handle.read_region((0, 0), lv, (1, 1), as_array=True)).dtype
        except Exception as exc:
            raise DataError(f"cannot read slide pixels: {type(exc).__name__}: {exc}",
                            path=self.path, field="slide") from exc  # fmt: skip
        if dtype != np.uint8:
            raise DataError(f"the slide's pixels are {dtype}, not 8-bit: tile encoders take 8-bit"
                            " RGB (brightfield) slides; convert it to 8 bits per channel",
                            path=self.path, field="slide")  # fmt: skip

    def _resolve_mpp(self, props: dict[str, Any], override: float | None) -> float:
        own = self._metadata_mpp(props)
        if override is not None:
            if not (math.isfinite(override) and 0 < override <= MAX_SLIDE_MPP):
                # infinite (or coarser than any scanner, e.g. nm given for µm): 1-px tiles
                raise DataError(f"mpp_override must be a resolution in µm per pixel, > 0 and"
                                f" <= {MAX_SLIDE_MPP:g}; found {override}", path=self.path,
                                field="mpp_override")  # fmt: skip
            if own is not None and own[0] <= MAX_SLIDE_MPP and not math.isclose(
                    own[0], override, rel_tol=0.05):  # fmt: skip
                warnings.warn(f"{self.path}: mpp_override {override:g} µm/px replaces the"
                              f" slide's own {own[0]:g} µm/px (tiles are cut at the override's"
                              " scale)", DataWarning, stacklevel=3)  # fmt: skip
            return float(override)
        if own is None:
            raise DataError("the slide has no resolution (µm per pixel) in its metadata; give"
                            " it with mpp_override (`modalsurv extract --slide-mpp`; e.g. 0.25 for 40x,"
                            " 0.5 for 20x)",
                            path=self.path, field="mpp")  # fmt: skip
        mpp, key = own
        if mpp > MAX_SLIDE_MPP:
            raise DataError(f"the slide's metadata gives {mpp:g} µm per pixel ({key}),"
                            " not a scanned slide's resolution (a 72-dpi default?); give"
                            " the real one with mpp_override (`modalsurv extract --slide-mpp`; e.g."
                            " 0.25 for 40x, 0.5 for 20x)", path=self.path, field="mpp")  # fmt: skip
        self._check_square_pixels(props, mpp, key)
        return mpp

    def _check_square_pixels(self, props: dict[str, Any], mpp_x: float, key: str) -> None:
        """Refuse non-square pixels: only mpp-x sizes the tiles, so a y resolution more
        than MPP_XY_TOLERANCE away would give tiles that are not square in µm."""
        if not key.endswith(".mpp-x"):  # aperio.MPP: one value, no y to compare
            return
        y_key = key[: -len("x")] + "y"
        try:
            mpp_y = float(props[y_key]) if props.get(y_key) is not None else math.nan
        except (TypeError, ValueError):
            return
        if not mpp_y > 0 or math.isclose(mpp_x, mpp_y, rel_tol=MPP_XY_TOLERANCE):
            return  # no y (or an unusable one): as before, x alone
        raise DataError(f"the slide's pixels are not square: {mpp_x:g} µm per pixel in x"
                        f" ({key}) but {mpp_y:g} in y ({y_key}); tiles would not be square"
                        " in µm. If one value is wrong, give the real resolution with"
                        " mpp_override (`modalsurv extract --slide-mpp`)", path=self.path, field="mpp")  # fmt: skip

    @staticmethod
    def _metadata_mpp(props: dict[str, Any]) -> tuple[float, str] | None:
        """The slide's own µm per pixel and the metadata key giving it: the first key with
        a positive number, or None."""
        for key in ("tiffslide.mpp-x", "openslide.mpp-x", "aperio.MPP"):
            try:
                mpp = float(props[key]) if props.get(key) is not None else math.nan
            except (TypeError, ValueError):
                continue
            if mpp > 0:
                return mpp, key
        return None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    def _handle(self) -> Any:
        h = getattr(self._local, "handle", None)
        if h is None:
            h = _open_handle(self.path, self.backend)
            self._local.handle = h
            with self._lock:
                self._handles.append(h)
        return h

    def best_level(self, target_mpp: float) -> int:
        """The coarsest level still at least as fine as ``target_mpp`` (within tolerance):
        reading it and downscaling loses nothing and decodes the fewest pixels."""
        if not target_mpp > 0:
            raise DataError(f"target mpp must be > 0; found {target_mpp}", field="mpp")
        best = 0
        for lv, ds in enumerate(self.level_downsamples):
            if self.mpp * ds <= target_mpp * (1 + MPP_TOLERANCE):
                best = lv
        return best

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) uint8 RGB; ``x, y`` in level-0 pixels, ``size`` = (w, h) at ``level``."""
        region = self._handle().read_region((int(x), int(y)), int(level), size)
        arr = np.asarray(region)
        if arr.ndim == 2:
            arr = arr[..., None]
        if self._invert:  # a MinIsWhite greyscale TIFF: 0 is white (the decoder keeps it)
            arr = np.concatenate([255 - arr[..., :1], arr[..., 1:]], axis=2)
        if arr.shape[2] in (2, 4):  # grey or RGB + alpha (OpenSlide: RGBA): white where clear
            alpha = arr[..., -1:].astype(np.float32) / 255.0
            arr = (arr[..., :-1] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """An RGB overview whose longer side is at most ``max_px`` pixels."""
        # the coarsest level still at least max_px wide (the coarsest level if none is)
        lv = len(self.level_dimensions) - 1
        for i, (w, h) in enumerate(self.level_dimensions):
            if max(w, h) >= max_px:
                lv = i
        w, h = self.level_dimensions[lv]
        scale = max(w, h) / max_px
        if scale > 1 and w * h * 3 > THUMB_READ_BYTES:
            return self._banded_thumbnail(lv, scale)
        img = self.read_region(0, 0, lv, (w, h))
        if scale > 1:
            from skimage.transform import resize

            shape = (max(1, round(h / scale)), max(1, round(w / scale)))
            img = (resize(img, shape, anti_aliasing=True, preserve_range=True)
                   .round().astype(np.uint8))  # fmt: skip
        return img

    def _banded_thumbnail(self, lv: int, scale: float) -> np.ndarray:
        """The thumbnail of a level too large to decode whole (a slide without a pyramid:
        one 100,000-px level is 30 GB of RGB), read in bands of rows, each shrunk on its
        own: memory stays about ``THUMB_READ_BYTES``."""
        from skimage.transform import resize

        w, h = self.level_dimensions[lv]
        out_h, out_w = max(1, round(h / scale)), max(1, round(w / scale))
        down = self.level_dimensions[0][1] / h  # level rows → level-0 rows
        per_band = max(1, int(THUMB_READ_BYTES // (3 * w * scale)))  # output rows a band
        bands = []
        for r0 in range(0, out_h, per_band):
            r1 = min(out_h, r0 + per_band)
            y0, y1 = round(r0 * h / out_h), max(round(r0 * h / out_h) + 1, round(r1 * h / out_h))
            y1 = min(y1, h)
            img = self.read_region(0, round(y0 * down), lv, (w, y1 - y0))
            bands.append(resize(img, (r1 - r0, out_w), anti_aliasing=True, preserve_range=True)
                         .round().astype(np.uint8))  # fmt: skip
        return np.concatenate(bands, axis=0)

    def close(self) -> None:
        with self._lock:
            for h in self._handles:
                try:
                    h.close()
                except Exception:  # pragma: no cover - closing must not mask the real error
                    pass
            self._handles.clear()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- tissue
@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue map and its scale: level-0 pixels per mask pixel, per axis."""

    mask: np.ndarray  # (h, w) bool
    scale_x: float
    scale_y: float
    source: str  # "file" | "otsu"


def mask_has_tissue(path: str | Path, max_px: int = 1024) -> bool:
    """Whether a tissue mask file marks any tissue (read as :func:`tissue_mask` reads it)."""
    return bool(_read_mask_file(Path(path), max_px).any())


def _read_mask_file(path: Path, max_px: int) -> np.ndarray:
    """The smallest pyramid level of a mask TIFF with a side ≥ ``max_px`` (or the largest
    one available); non-zero = tissue."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            levels = list(series.levels)
            pick = levels[0]
            for lv in levels:
                if max(lv.shape[:2]) >= max_px:
                    pick = lv
            axes = str(getattr(pick, "axes", ""))
            shape = tuple(int(n) for n in pick.shape)
            if int(np.prod(shape)) * pick.dtype.itemsize > THUMB_READ_BYTES:
                # one huge level (a mask without a pyramid): every k-th pixel, read chunk by
                # chunk, instead of decoding the whole level (10 GB at 100,000 px)
                import zarr

                k = max(1, -(-max(shape[:2]) // max_px))
                spatial = [i for i, a in enumerate(axes) if a in "YX"] or [0, 1]
                index = tuple(slice(None, None, k) if i in spatial else slice(None)
                              for i in range(len(shape)))  # fmt: skip
                arr = np.asarray(zarr.open(pick.aszarr(), mode="r")[index])
            else:
                arr = np.asarray(pick.asarray())
    except Exception as exc:
        raise DataError(f"cannot read tissue mask: {type(exc).__name__}: {exc}", path=path,
                        field="mask") from exc  # fmt: skip
    if arr.ndim == 3:  # tissue where any channel is set: (h, w, c), or (c, h, w) when planar
        channel = next((axes.index(a) for a in "SC" if a in axes and len(axes) == 3), 2)
        arr = arr.max(axis=channel)
    if arr.ndim != 2:
        raise DataError(f"tissue mask must be a 2-D image; found shape {arr.shape}", path=path,
                        field="mask")  # fmt: skip
    return arr > 0


def otsu_tissue(rgb: np.ndarray, min_object_frac: float = 1e-3) -> np.ndarray:
    """Tissue by Otsu on saturation (stain is coloured, glass is grey), falling back to
    darkness on grey when saturation has no contrast; holes and specks removed."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    sat = rgb2hsv(rgb)[..., 1]
    if np.ptp(sat) > 0.05:
        mask = sat > threshold_otsu(sat)
    else:
        grey = rgb2gray(rgb)
        mask = grey < threshold_otsu(grey) if np.ptp(grey) > 0.02 else np.zeros(grey.shape, bool)
    area = max(int(min_object_frac * mask.size), 1)
    mask = remove_small_objects(mask, max_size=area)
    return remove_small_holes(mask, max_size=area)


def _check_mask_aspect(mask_hw: tuple[int, ...], slide_hw: tuple[int, int], path: Path,
                       slide_path: Path) -> None:  # fmt: skip
    """A mask is mapped onto the slide by its size ratio, so one whose aspect differs from the
    slide's (beyond the rounding of a downsampled level) is another slide's, or a crop: its
    tissue would land elsewhere. Refused, naming both sizes."""
    (mh, mw), (h0, w0) = mask_hw[:2], slide_hw
    sx, sy = w0 / mw, h0 / mh
    if abs(sx / sy - 1) > MASK_ASPECT_TOLERANCE + 1 / mw + 1 / mh:
        raise DataError(f"the tissue mask ({mw} × {mh} px) does not have the shape of its slide"
                        f" {slide_path.name} ({w0} × {h0} px): scaled by {sx:.3g} across and"
                        f" {sy:.3g} down (another slide's mask, or a crop?)", path=path,
                        field="mask")  # fmt: skip


def tissue_mask(slide: Slide, mask_path: str | Path | None = None,
                thumb_px: int = 1024) -> TissueMask:  # fmt: skip
    """The provided mask (any level or scale; mapped onto level 0 by the size ratio) when
    given, else Otsu on a ``thumb_px`` thumbnail."""
    w0, h0 = slide.dimensions
    if mask_path is not None:
        m = _read_mask_file(Path(mask_path), thumb_px)
        source = "file"
        _check_mask_aspect(m.shape, (h0, w0), Path(mask_path), slide.path)
    else:
        m = otsu_tissue(slide.thumbnail(thumb_px))
        source = "otsu"
    return TissueMask(m, w0 / m.shape[1], h0 / m.shape[0], source)


# ---------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class TilePlan:
    """Where to read a slide's tiles: level-0 top-left corners and how to read them."""

    path: Path
    coords: np.ndarray  # (K, 2) int64 level-0 (x, y)
    level: int  # pyramid level read
    read_size: int  # tile side in pixels at ``level`` (resized to ``tile_size``)
    tile_size: int  # output tile side in pixels
    tile_size_lv0: int  # tile side in level-0 pixels (TITAN's patch_size_lv0)
    mpp: float  # target µm per pixel
    slide_mpp: float  # level-0 µm per pixel
    n_candidates: int  # tiles with enough tissue before sampling
    slide_size: tuple[int, int] = (0, 0)  # level-0 (width, height)

    @property
    def fits(self) -> bool:
        """Whether one tile fits in the slide at all (else the grid is empty, tissue or not)."""
        return min(self.slide_size) >= self.tile_size_lv0


def sample_indices(n: int, k: int, sampling: Sampling = "uniform", seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` of ``n`` grid tiles: evenly spread over the grid's
    row-major order ("uniform", deterministic) or a seeded random subset ("random")."""
    if k <= 0:
        raise DataError(f"max_tiles must be >= 1; found {k}", field="max_tiles")
    if n <= k:
        return np.arange(n)
    if sampling == "uniform":
        return np.unique(np.floor(np.arange(k) * (n / k) + (n / k) / 2).astype(np.int64))
    if sampling == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    raise DataError(f"sampling must be 'uniform' or 'random'; found {sampling!r}",
                    field="sampling")  # fmt: skip


def tissue_fractions(tm: TissueMask, xs: np.ndarray, ys: np.ndarray, side: int) -> np.ndarray:
    """Fraction of tissue under each level-0 square (x, y, side), from an integral image of
    the mask (each mask pixel counts wholly, so a tile smaller than a mask pixel still
    gets that pixel's value)."""
    m = tm.mask.astype(np.float64)
    ii = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    ii[1:, 1:] = m.cumsum(0).cumsum(1)
    h, w = m.shape
    x0 = np.clip(np.floor(xs / tm.scale_x).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.floor(ys / tm.scale_y).astype(np.int64), 0, h - 1)
    x1 = np.clip(np.ceil((xs + side) / tm.scale_x).astype(np.int64), x0 + 1, w)
    y1 = np.clip(np.ceil((ys + side) / tm.scale_y).astype(np.int64), y0 + 1, h)
    total = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return total / ((x1 - x0) * (y1 - y0))


def _hilbert_order(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Indices ordering grid cells (column ``gx``, row ``gy``) along a Hilbert curve, whose
    consecutive cells are neighbours: any run of it is a compact patch."""
    x, y = gx.astype(np.int64), gy.astype(np.int64)
    side = 1 << int(max(int(x.max()), int(y.max()), 1)).bit_length()
    d = np.zeros(len(x), np.int64)
    s = side // 2
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = rx & ~ry  # rotate the quadrant so the sub-curve joins its neighbours
        x, y = np.where(flip, side - 1 - x, x), np.where(flip, side - 1 - y, y)
        x, y = np.where(ry, x, y), np.where(ry, y, x)
        s //= 2
    return np.argsort(d, kind="stable")


def plan_tiles(
    slide: Slide,
    mask: TissueMask,
    mpp: float = 0.5,
    tile_size: int = 224,
    max_tiles: int | None = 500,
    min_tissue: float = 0.5,
    sampling: Sampling = "uniform",
    seed: int = 0,
) -> TilePlan:
    """A non-overlapping grid at ``mpp`` µm/px with ``tile_size``-px tiles; tiles with at
    least ``min_tissue`` tissue kept, then at most ``max_tiles`` of them sampled ("uniform":
    evenly along a Hilbert curve through the kept tiles, so they cover the tissue in 2-D)."""
    if tile_size < 16:
        raise DataError(f"tile_size must be >= 16 px; found {tile_size}", field="tile_size")
    if not 0.0 <= min_tissue <= 1.0:
        raise DataError(f"min_tissue must be in [0, 1]; found {min_tissue}", field="min_tissue")
    level = slide.best_level(mpp)
    side0 = max(1, round(tile_size * mpp / slide.mpp))
    read_size = max(1, round(side0 / slide.level_downsamples[level]))
    w0, h0 = slide.dimensions
    gx = np.arange(0, w0 - side0 + 1, side0, dtype=np.int64)
    gy = np.arange(0, h0 - side0 + 1, side0, dtype=np.int64)
    ys, xs = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))  # row-major
    keep = tissue_fractions(mask, xs, ys, side0) >= min_tissue if len(xs) else np.zeros(0, bool)
    xs, ys = xs[keep], ys[keep]
    n = len(xs)
    if max_tiles is not None and n:
        # every (n/k)-th tile of the row-major order fell on one column whenever a row held
        # a multiple of n/k tiles: a stripe, not the tissue; along a Hilbert curve each
        # stride is a compact patch
        order = _hilbert_order(xs // side0, ys // side0) if sampling == "uniform" else None
        idx = sample_indices(n, max_tiles, sampling, seed)
        idx = idx if order is None else np.sort(order[idx])
        xs, ys = xs[idx], ys[idx]
    coords = np.stack([xs, ys], axis=1).astype(np.int64) if len(xs) else np.zeros((0, 2), np.int64)
    return TilePlan(slide.path, coords, level, read_size, tile_size, side0, float(mpp),
                    slide.mpp, n, (int(w0), int(h0)))  # fmt: skip


# ---------------------------------------------------------------------------- reading
def read_tile(slide: Slide, plan: TilePlan, x: int, y: int) -> np.ndarray:
    """One (tile_size, tile_size, 3) uint8 tile at level-0 (x, y)."""
    img = slide.read_region(x, y, plan.level, (plan.read_size, plan.read_size))
    if img.shape[0] != plan.tile_size or img.shape[1] != plan.tile_size:
        from skimage.transform import resize

        img = (resize(img, (plan.tile_size, plan.tile_size), anti_aliasing=True,
                      preserve_range=True).round().astype(np.uint8))  # fmt: skip
    return img


def iter_tile_batches(
    slide: Slide, plan: TilePlan, batch_size: int = 32, workers: int = 2
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(tiles (B, S, S, 3) uint8, coords (B, 2) int64)`` in plan order.

    Tiles are decoded by ``workers`` threads (tiffslide's decoders release the GIL); at
    most two batches are in flight (the one being yielded and the next), so memory does
    not grow with the number of tiles.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1; found {batch_size}", field="batch_size")
    n = len(plan.coords)
    starts = list(range(0, n, batch_size))
    if not starts:
        return

    def load(start: int) -> np.ndarray:
        c = plan.coords[start : start + batch_size]
        out = np.empty((len(c), plan.tile_size, plan.tile_size, 3), dtype=np.uint8)
        if pool is None:
            for i, (x, y) in enumerate(c):
                out[i] = read_tile(slide, plan, int(x), int(y))
        else:
            for i, t in enumerate(pool.map(lambda xy: read_tile(slide, plan, *map(int, xy)), c)):
                out[i] = t
        return out

    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    # one extra thread prefetches the next batch while the caller encodes this one
    prefetch = ThreadPoolExecutor(max_workers=1)
    try:
        nxt = prefetch.submit(load, starts[0])
        for i, start in enumerate(starts):
            tiles = nxt.result()
            if i + 1 < len(starts):
                nxt = prefetch.submit(load, starts[i + 1])
            yield tiles, plan.coords[start : start + batch_size]
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
