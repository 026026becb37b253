"""Slides: real pyramidal tiled TIFFs written with tifffile from scikit-image's IHC tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

from modalsurv.errors import DataError
from modalsurv.features import wsi

TISSUE_Y, TISSUE_X = 100, 300  # where the 512 × 512 tissue patch sits on the 1024 slide


def write_pyramid(path: Path, img: np.ndarray, mpp: float | None, levels: int = 3) -> Path:
    opts = {"tile": (256, 256), "photometric": "rgb" if img.ndim == 3 else "minisblack",
            "compression": "jpeg" if img.ndim == 3 else "zlib"}  # fmt: skip
    res = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp),
                                  "resolutionunit": "CENTIMETER"}  # fmt: skip
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, subifds=levels - 1, **opts, **res)
        for lv in range(1, levels):
            f = 2**lv
            r = {} if mpp is None else {"resolution": (1e4 / (mpp * f),) * 2,
                                        "resolutionunit": "CENTIMETER"}  # fmt: skip
            tif.write(img[::f, ::f], subfiletype=1, **opts, **r)
    return path


def slide_image() -> np.ndarray:
    img = np.full((1024, 1024, 3), 245, dtype=np.uint8)
    img[TISSUE_Y : TISSUE_Y + 512, TISSUE_X : TISSUE_X + 512] = data.immunohistochemistry()
    return img


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pyramid(tmp_path_factory.mktemp("wsi") / "s.tif", slide_image(), mpp=0.25)


def test_level_selection_from_metadata(slide_path: Path) -> None:
    with wsi.Slide(slide_path) as s:
        assert s.mpp == pytest.approx(0.25)
        assert s.level_downsamples == (1.0, 2.0, 4.0)
        assert s.best_level(0.25) == 0
        assert s.best_level(0.5) == 1
        assert s.best_level(1.0) == 2
        assert s.best_level(0.4) == 0  # level 1 (0.5) would be coarser than asked
        assert s.best_level(4.0) == 2  # coarser than any level: the coarsest


def test_a_slide_without_a_pyramid_gets_its_thumbnail_in_bands(tmp_path: Path,
                                                                monkeypatch) -> None:  # fmt: skip
    """One level only: the thumbnail decoded the whole level at once (30 GB of RGB for a
    100,000-px slide). Above THUMB_READ_BYTES it is read in bands of rows: no read is
    larger than that, and the image is the whole-level thumbnail's up to band seams."""
    path = write_pyramid(tmp_path / "flat.tif", slide_image(), mpp=0.25, levels=1)
    with wsi.Slide(path) as s:
        whole = s.thumbnail(200)
        budget = 1024 * 3 * 40  # about eight output rows a band
        monkeypatch.setattr(wsi, "THUMB_READ_BYTES", budget)
        reads: list[tuple[int, int]] = []
        original = s.read_region

        def spy(x, y, level, size):
            reads.append(size)
            return original(x, y, level, size)

        monkeypatch.setattr(s, "read_region", spy)
        banded = s.thumbnail(200)
    assert banded.shape == whole.shape == (200, 200, 3)
    assert len(reads) > 10 and max(w * h * 3 for w, h in reads) <= budget
    assert np.abs(banded.astype(int) - whole.astype(int)).mean() < 2.0


def test_a_mask_without_a_pyramid_is_read_strided_not_whole(tmp_path: Path,
                                                            monkeypatch) -> None:  # fmt: skip
    """A one-level mask larger than THUMB_READ_BYTES was decoded whole; now every k-th
    pixel is read chunk by chunk: the same mask as the whole level sampled the same way."""
    rng = np.random.default_rng(0)
    mask = (rng.random((900, 700)) > 0.6).astype(np.uint8)
    tifffile.imwrite(tmp_path / "flat_mask.tif", mask, tile=(64, 64), compression="zlib")
    whole = wsi._read_mask_file(tmp_path / "flat_mask.tif", 100)
    assert whole.shape == (900, 700)  # under the budget: the level itself
    monkeypatch.setattr(wsi, "THUMB_READ_BYTES", 100_000)
    import tifffile as tf

    monkeypatch.setattr(tf.TiffPageSeries, "asarray", lambda *a, **k: pytest.fail("read whole"))
    strided = wsi._read_mask_file(tmp_path / "flat_mask.tif", 100)
    np.testing.assert_array_equal(strided, mask[::9, ::9] > 0)  # k = ceil(900 / 100)


def test_missing_mpp_names_the_file_and_override_fixes_it(tmp_path: Path) -> None:
    p = write_pyramid(tmp_path / "nompp.tif", slide_image(), mpp=None, levels=2)
    with pytest.raises(DataError, match="mpp_override") as exc:
        wsi.Slide(p)
    assert str(p) in str(exc.value)
    with wsi.Slide(p, mpp_override=0.5) as s:
        assert s.mpp == 0.5 and s.best_level(1.0) == 1


def test_an_override_of_a_slides_own_resolution_is_warned(slide_path: Path) -> None:
    import warnings

    from modalsurv.errors import DataWarning

    with pytest.warns(DataWarning, match=r"mpp_override 0\.5 µm/px replaces the slide's own"
                      r" 0\.25"):  # fmt: skip
        with wsi.Slide(slide_path, mpp_override=0.5) as s:
            assert s.mpp == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the slide's own value given again: nothing to say
        wsi.Slide(slide_path, mpp_override=0.25).close()


def test_a_72_dpi_resolution_tag_is_refused_not_turned_into_one_pixel_tiles(tmp_path: Path
                                                                           ) -> None:  # fmt: skip
    p = tmp_path / "dpi72.tif"
    tifffile.imwrite(p, slide_image(), tile=(256, 256), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")  # fmt: skip
    with pytest.raises(DataError, match=r"352\.7\d* µm per pixel.*mpp_override") as exc:
        wsi.Slide(p)
    assert str(p) in str(exc.value) and exc.value.field == "mpp"
    with wsi.Slide(p, mpp_override=0.5) as s:
        assert s.mpp == 0.5


def test_a_planar_rgb_mask_reads_as_the_interleaved_one(slide_path: Path, tmp_path: Path) -> None:
    m = np.zeros((128, 128), dtype=np.uint8)
    m[20:60, 40:100] = 255
    rgb = np.stack([m, m, m])
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(rgb, 0, -1), photometric="rgb")
    with wsi.Slide(slide_path) as s:
        planar = wsi.tissue_mask(s, tmp_path / "planar.tif")
        contig = wsi.tissue_mask(s, tmp_path / "contig.tif")
    assert planar.mask.shape == (128, 128) and planar.scale_x == planar.scale_y == 8.0
    np.testing.assert_array_equal(planar.mask, contig.mask)
    np.testing.assert_array_equal(contig.mask, m > 0)


def test_corrupt_slide_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(DataError, match="cannot open slide") as exc:
        wsi.Slide(p)
    assert exc.value.path == str(p)


def test_otsu_tiles_lie_inside_the_tissue(slide_path: Path) -> None:
    with wsi.Slide(slide_path) as s:
        tm = wsi.tissue_mask(s)
        assert tm.source == "otsu"
        plan = wsi.plan_tiles(s, tm, mpp=0.5, tile_size=64, max_tiles=None, min_tissue=0.5)
    assert plan.level == 1 and plan.read_size == 64 and plan.tile_size_lv0 == 128
    assert len(plan.coords) > 0
    cx = plan.coords[:, 0] + 64
    cy = plan.coords[:, 1] + 64
    assert np.all((cx > TISSUE_X) & (cx < TISSUE_X + 512))
    assert np.all((cy > TISSUE_Y) & (cy < TISSUE_Y + 512))


def test_provided_mask_at_another_scale_is_used(slide_path: Path, tmp_path: Path) -> None:
    # a mask at 1/8 scale marking only the top-left quarter of the tissue patch
    m = np.zeros((128, 128), dtype=np.uint8)
    m[TISSUE_Y // 8 : (TISSUE_Y + 256) // 8, TISSUE_X // 8 : (TISSUE_X + 256) // 8] = 1
    mask_path = write_pyramid(tmp_path / "s_tissue.tif", m, mpp=2.0, levels=1)
    with wsi.Slide(slide_path) as s:
        tm = wsi.tissue_mask(s, mask_path)
        assert tm.source == "file" and tm.scale_x == 8.0 and tm.scale_y == 8.0
        plan = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=None, min_tissue=1.0)
    x, y = plan.coords[:, 0], plan.coords[:, 1]
    # the marked region in level-0 pixels (mask pixels are 8 × 8 level-0 pixels)
    y0, y1 = TISSUE_Y // 8 * 8, (TISSUE_Y + 256) // 8 * 8
    x0, x1 = TISSUE_X // 8 * 8, (TISSUE_X + 256) // 8 * 8
    assert np.all((x >= x0) & (x + 32 <= x1))
    assert np.all((y >= y0) & (y + 32 <= y1))
    # the whole marked region is covered by the grid tiles that fit in it
    assert len(x) == len(range(-(-x0 // 32) * 32, x1 - 31, 32)) * len(range(-(-y0 // 32) * 32, y1 - 31, 32))


def test_tile_limit_and_sampling(slide_path: Path) -> None:
    with wsi.Slide(slide_path) as s:
        tm = wsi.tissue_mask(s)
        full = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=None)
        uni = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=10)
        uni2 = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=10)
        r1 = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=10, sampling="random", seed=1)
        r1b = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=10, sampling="random", seed=1)
        r2 = wsi.plan_tiles(s, tm, mpp=0.25, tile_size=32, max_tiles=10, sampling="random", seed=2)
    assert full.n_candidates == len(full.coords) > 10
    assert len(uni.coords) == 10 and uni.n_candidates == full.n_candidates
    np.testing.assert_array_equal(uni.coords, uni2.coords)
    np.testing.assert_array_equal(r1.coords, r1b.coords)
    assert not np.array_equal(r1.coords, r2.coords)
    # every sampled tile is a grid tile; uniform spans the grid (most of its rows and
    # columns: 10 tiles spread in 2-D, each standing for a patch of about 5 × 5 tiles)
    grid = {tuple(c) for c in full.coords}
    assert all(tuple(c) in grid for c in np.vstack([uni.coords, r1.coords]))
    assert np.all(np.ptp(uni.coords, axis=0) >= 0.6 * np.ptp(full.coords, axis=0))


def test_uniform_sampling_covers_the_tissue_not_one_column(tmp_path: Path) -> None:
    """Every (n/k)-th tile of the row-major grid fell on one column whenever a row held a
    multiple of n/k tiles: 20 of a 20 × 20 tissue grid were a single vertical stripe."""
    p = write_pyramid(tmp_path / "full.tif", np.full((640, 640, 3), 200, np.uint8), mpp=0.5,
                      levels=1)  # fmt: skip
    tm = wsi.TissueMask(np.ones((64, 64), bool), 10.0, 10.0, "file")
    with wsi.Slide(p) as s:
        plan = wsi.plan_tiles(s, tm, mpp=0.5, tile_size=32, max_tiles=20)
        again = wsi.plan_tiles(s, tm, mpp=0.5, tile_size=32, max_tiles=20)
    assert plan.n_candidates == 400 and len(plan.coords) == 20
    np.testing.assert_array_equal(plan.coords, again.coords)  # a rerun: the same tiles
    x, y = plan.coords[:, 0], plan.coords[:, 1]
    assert len(np.unique(x)) >= 8 and len(np.unique(y)) >= 8
    quadrants = np.bincount((x >= 320).astype(int) * 2 + (y >= 320).astype(int), minlength=4)
    assert quadrants.min() >= 3, quadrants  # 5 each when perfectly even
    # still row-major (the store's bag order) and on the grid
    assert np.all(np.diff(y * 640 + x) > 0) and np.all(plan.coords % 32 == 0)


def test_sample_indices_uniform_is_spread_and_sorted() -> None:
    idx = wsi.sample_indices(1000, 10)
    assert len(idx) == 10 and np.all(np.diff(idx) == 100)
    assert list(wsi.sample_indices(5, 10)) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="sampling"):
        wsi.sample_indices(100, 10, sampling="grid")  # type: ignore[arg-type]


def test_batches_stream_the_planned_tiles(slide_path: Path) -> None:
    with wsi.Slide(slide_path) as s:
        plan = wsi.plan_tiles(s, wsi.tissue_mask(s), mpp=0.5, tile_size=64, max_tiles=7)
        batches = list(wsi.iter_tile_batches(s, plan, batch_size=3, workers=2))
        serial = list(wsi.iter_tile_batches(s, plan, batch_size=3, workers=1))
        x, y = plan.coords[4]
        direct = s.read_region(int(x), int(y), 1, (64, 64))
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    tiles = np.concatenate([b for b, _ in batches])
    assert tiles.shape == (7, 64, 64, 3) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([c for _, c in batches]), plan.coords)
    np.testing.assert_array_equal(tiles, np.concatenate([b for b, _ in serial]))
    np.testing.assert_array_equal(tiles[4], direct)
    # tissue tiles are stained, not background
    assert tiles.mean() < 230


def test_reading_between_levels_resizes_to_tile_size(slide_path: Path) -> None:
    # 0.75 µm/px lies between levels 1 (0.5) and 2 (1.0): read level 1, downscale
    with wsi.Slide(slide_path) as s:
        plan = wsi.plan_tiles(s, wsi.tissue_mask(s), mpp=0.75, tile_size=32, max_tiles=2)
        tiles = np.concatenate([b for b, _ in wsi.iter_tile_batches(s, plan, batch_size=2)])
    assert plan.level == 1 and plan.read_size == 48 and plan.tile_size_lv0 == 96
    assert tiles.shape == (2, 32, 32, 3)


def test_a_16_bit_slide_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A 16-bit RGB slide opened, then every tile read raised PIL's raw TypeError."""
    p = tmp_path / "s16.tif"
    tifffile.imwrite(p, slide_image().astype(np.uint16) * 257, tile=(256, 256), photometric="rgb",
                     resolution=(4e4, 4e4), resolutionunit="CENTIMETER")  # fmt: skip
    with pytest.raises(DataError, match="uint16, not 8-bit") as exc:
        wsi.Slide(p)
    assert exc.value.path == str(p) and exc.value.field == "slide"


def test_a_mask_of_another_shape_than_its_slide_is_refused(slide_path: Path, tmp_path: Path) -> None:
    """A mask is mapped onto the slide by its size ratio: one with another aspect (another
    slide's mask, a crop) put the tissue elsewhere, silently."""
    tifffile.imwrite(tmp_path / "wide.tif", np.ones((32, 128), np.uint8))
    with wsi.Slide(slide_path) as s:
        with pytest.raises(DataError, match=r"128 × 32 px\) does not have the shape of its slide"
                           r" s\.tif \(1024 × 1024 px\)") as exc:  # fmt: skip
            wsi.tissue_mask(s, tmp_path / "wide.tif")
        assert exc.value.path == str(tmp_path / "wide.tif") and exc.value.field == "mask"
        # a downsampled level whose sides were rounded is the slide's own shape
        tifffile.imwrite(tmp_path / "rounded.tif", np.ones((65, 64), np.uint8))
        assert wsi.tissue_mask(s, tmp_path / "rounded.tif").source == "file"
        # a level padded to whole tiles (about 5 % here) is not refused either
        tifffile.imwrite(tmp_path / "padded.tif", np.ones((128, 134), np.uint8))
        assert wsi.tissue_mask(s, tmp_path / "padded.tif").source == "file"



def test_non_square_pixels_are_refused_unless_overridden(tmp_path: Path) -> None:
    """Only mpp-x sized the tiles: a y resolution twice as coarse (a line scanner, a mis-set
    YResolution tag) was ignored and tiles were not square in µm."""
    from modalsurv.errors import DataWarning

    p = tmp_path / "nonsquare.tif"
    tifffile.imwrite(p, slide_image(), tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.25, 1e4 / 0.5), resolutionunit="CENTIMETER")  # fmt: skip
    with pytest.raises(DataError, match=r"not square: 0\.25 .* 0\.5 .*mpp_override") as exc:
        wsi.Slide(p)
    assert exc.value.path == str(p) and exc.value.field == "mpp"
    with pytest.warns(DataWarning, match="replaces the slide's own"):
        with wsi.Slide(p, mpp_override=0.5) as s:
            assert s.mpp == 0.5


def test_nearly_square_pixels_or_no_y_resolution_read_as_before(tmp_path: Path) -> None:
    """Within 5 % (rounding in the tags) or without a y value, mpp-x is taken as before."""
    near = tmp_path / "near.tif"
    tifffile.imwrite(near, slide_image(), tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.25, 1e4 / 0.26), resolutionunit="CENTIMETER")  # fmt: skip
    with wsi.Slide(near) as s:
        assert s.mpp == pytest.approx(0.25)
    no_y = {"tiffslide.mpp-x": 0.25, "tiffslide.mpp-y": None}
    with wsi.Slide(near) as s:
        assert s._resolve_mpp(no_y, None) == 0.25
        assert s._resolve_mpp({"aperio.MPP": "0.5", "tiffslide.mpp-y": 1.0}, None) == 0.5


def test_an_infinite_or_nanometre_mpp_override_is_refused(slide_path: Path) -> None:
    """An infinite override (or one in nm, 250 for 0.25) was taken: tiles of one pixel."""
    for bad in (float("inf"), 250.0):
        with pytest.raises(DataError, match="mpp_override must be") as exc:
            wsi.Slide(slide_path, mpp_override=bad)
        assert exc.value.path == str(slide_path) and exc.value.field == "mpp_override"


def test_greyscale_slides_with_alpha_or_min_is_white_read_as_brightfield(tmp_path: Path) -> None:
    """A grey + alpha slide failed with skimage's raw ValueError; a MinIsWhite one read
    inverted (glass black), so Otsu took the glass for tissue."""
    grey = slide_image().mean(axis=2).astype(np.uint8)
    res = {"tile": (256, 256), "resolution": (4e4, 4e4), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack", **res)
    alpha = np.stack([grey, np.full_like(grey, 255)], axis=2)
    alpha[:64, :64, 1] = 0  # transparent corner: white
    tifffile.imwrite(tmp_path / "la.tif", alpha, photometric="minisblack",
                     extrasamples=["unassalpha"], **res)  # fmt: skip
    tifffile.imwrite(tmp_path / "white0.tif", 255 - grey, photometric="miniswhite", **res)
    with wsi.Slide(tmp_path / "grey.tif") as s:
        want, want_mask = s.read_region(0, 0, 0, (1024, 1024)), wsi.tissue_mask(s).mask
    assert want.shape == (1024, 1024, 3) and want[0, 0, 0] == 245
    for name in ("la.tif", "white0.tif"):
        with wsi.Slide(tmp_path / name) as s:
            got = s.read_region(0, 0, 0, (1024, 1024))
            if name == "la.tif":
                assert np.all(got[:64, :64] == 255)
                got[:64, :64] = want[:64, :64]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(wsi.tissue_mask(s).mask, want_mask)
