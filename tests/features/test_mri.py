"""MRI: real .mha / .nii.gz / DICOM volumes written with SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from modalsurv.errors import DataError
from modalsurv.features import encoders as enc
from modalsurv.features import mri

SHAPE = (12, 40, 40)  # z, y, x at spacing (0.5, 0.5, 3.0) mm


def ellipsoid(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return (zz / 0.5) ** 2 + ((yy - 0.2) / 0.4) ** 2 + (xx / 0.3) ** 2 <= 1.0


def write(arr: np.ndarray, path: Path, spacing: tuple[float, ...] = (0.5, 0.5, 3.0)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), True)
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mri")
    rng = np.random.default_rng(0)
    inside = ellipsoid()
    out = {}
    for q, scale in (("t2w", 400.0), ("adc", 1200.0), ("hbv", 20.0)):
        vol = rng.normal(0.3, 0.05, SHAPE) * scale
        vol[inside] += scale
        out[q] = write(vol.astype(np.float32), d / f"p_{q}.mha")
    # ADC at half the in-plane resolution: must be resampled onto the T2W grid
    adc = sitk.ReadImage(str(out["adc"]))
    small = sitk.Resample(adc, [20, 20, 12], sitk.Transform(), sitk.sitkLinear, adc.GetOrigin(),
                          (1.0, 1.0, 3.0), adc.GetDirection())  # fmt: skip
    sitk.WriteImage(small, str(d / "p_adc_lowres.mha"))
    out["adc"] = d / "p_adc_lowres.mha"
    out["mask"] = write(inside.astype(np.uint8), d / "p_mask.mha")
    return out


def test_prepare_resamples_crops_normalises_and_resizes(case: dict[str, Path]) -> None:
    cfg = mri.MriConfig(size=(8, 16, 16), margin_mm=3.0)
    vols = mri.prepare_mri(case, case["mask"], cfg)
    assert list(vols) == ["t2w", "adc", "hbv"]
    for v in vols.values():
        assert v.shape == (8, 16, 16) and v.dtype == np.float32 and np.isfinite(v).all()
    # z-scored inside the mask: the prostate (bright) is around 0, surroundings negative
    assert abs(float(vols["t2w"][4, 8, 8])) < 1.5
    assert float(vols["t2w"][0, 0, 0]) < -1.0


def test_crop_box_follows_the_mask_and_margin() -> None:
    m = np.zeros((10, 50, 50), bool)
    m[4:6, 20:30, 10:20] = True
    box = mri.mask_bbox(m, (3.0, 0.5, 0.5), margin_mm=2.0)
    assert box == (slice(3, 7), slice(16, 34), slice(6, 24))
    with pytest.raises(DataError, match="empty"):
        mri.mask_bbox(np.zeros((4, 4, 4), bool), (1, 1, 1), 1.0)


def test_normalisation_methods() -> None:
    a = np.random.default_rng(1).normal(5, 2, (6, 8, 8)).astype(np.float32)
    region = np.zeros(a.shape, bool)
    region[2:4] = True
    z = mri.normalize(a, region, "zscore")
    assert z[region].mean() == pytest.approx(0, abs=1e-5) and z[region].std() == pytest.approx(1, abs=1e-4)
    p = mri.normalize(a, None, "percentile")
    assert p.min() == 0.0 and p.max() == 1.0
    with pytest.raises(DataError, match="zscore"):
        mri.normalize(a, None, "minmax")  # type: ignore[arg-type]


def test_nifti_and_dicom_series_are_read(tmp_path: Path, case: dict[str, Path]) -> None:
    t2 = sitk.ReadImage(str(case["t2w"]))
    nii = tmp_path / "t2w.nii.gz"
    sitk.WriteImage(t2, str(nii))
    assert mri.read_image(nii).GetSize() == t2.GetSize()
    dcm = tmp_path / "dicom"
    dcm.mkdir()
    img16 = sitk.Cast(sitk.RescaleIntensity(t2, 0, 1000), sitk.sitkInt16)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for k in range(img16.GetDepth()):
        sl = img16[:, :, k]
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")  # one series
        sl.SetMetaData("0020|0032", "\\".join(map(str, img16.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k))
        w.SetFileName(str(dcm / f"{k:03d}.dcm"))
        w.Execute(sl)
    vol = mri.read_image(dcm)
    assert vol.GetSize() == t2.GetSize()
    assert vol.GetSpacing()[2] == pytest.approx(3.0, rel=1e-3)
    with pytest.raises(DataError, match="no DICOM series"):
        mri.read_image(tmp_path)  # a folder without DICOM


@pytest.mark.parametrize("name", ["T2W.MHA", "T2W.NII.GZ", "T2W.MHD"])
def test_an_uppercase_suffix_is_read(tmp_path: Path, case: dict[str, Path], name: str) -> None:
    """The socket scan takes '.MHA' but ITK picks its reader by the case-sensitive suffix:
    the MRI of such a case was silently unusable."""
    t2 = sitk.ReadImage(str(case["t2w"]))
    lower = tmp_path / name.lower()
    sitk.WriteImage(t2, str(lower))
    for f in tmp_path.iterdir():  # a .mhd's data file keeps the name its header gives
        if f.name == lower.name:
            f.rename(tmp_path / name)
    assert mri.read_image(tmp_path / name).GetSize() == t2.GetSize()


def test_unreadable_and_missing_sequences_name_the_file(tmp_path: Path, case: dict[str, Path]) -> None:
    bad = tmp_path / "bad.mha"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="exists but is not a readable image") as exc:
        mri.read_image(bad, "p1")
    assert exc.value.path == str(bad) and exc.value.patient == "p1"
    truncated = tmp_path / "t2w.mha"  # a real volume cut short: not reported as missing
    truncated.write_bytes(case["t2w"].read_bytes()[:200])
    with pytest.raises(DataError, match=r"\(200 bytes\) exists but is not a readable image") as exc:
        mri.read_image(truncated, "p1")
    # ITK's own words, not its errno text ("Reason: Success") nor its source location
    assert "SimpleITK: File cannot be read" in exc.value.reason
    assert not any(w in exc.value.reason for w in ("Reason", "Success", ".cxx", "0x"))
    with pytest.raises(DataError, match="hbv"):
        mri.prepare_mri({"t2w": case["t2w"], "adc": case["adc"]}, None, patient="p1")


def test_embedding_concat_or_mean(case: dict[str, Path]) -> None:
    e = enc.get_volume_encoder("medicalnet_resnet10")
    cfg = mri.MriConfig(size=(8, 16, 16))
    vols = mri.prepare_mri(case, None, cfg)  # no mask: body region from Otsu
    cat = mri.embed_mri(vols, e, "concat")
    mean = mri.embed_mri(vols, e, "mean")
    assert cat.shape == (mri.mri_dim(512, cfg),) == (1536,)
    np.testing.assert_allclose(mean, cat.reshape(3, 512).mean(0), rtol=1e-5, atol=1e-6)


def test_a_new_spacing_keeps_the_images_extent_centred() -> None:
    """Resampled to another spacing, the grid covers the image's own extent: no slice
    falls outside it (a kept origin shifted the grid by half the spacing change)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ones((20, 16, 16), dtype=np.float32))  # z, y, x
    img.SetSpacing((0.5, 0.5, 3.0))
    img.SetOrigin((10.0, -4.0, 28.5))
    img.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # an oblique-free swap
    ref = mri.reference_grid(img, (0.5, 0.5, 1.0))
    assert ref.GetSize() == (16, 16, 60)
    out = sitk.GetArrayFromImage(mri.resample_like(img, ref))
    assert (out.reshape(out.shape[0], -1).max(axis=1) > 0.99).all()  # every slice inside
    # the same spacing gives back the image's own grid
    same = mri.reference_grid(img, img.GetSpacing())
    np.testing.assert_allclose(same.GetOrigin(), img.GetOrigin())
    # centred: the mean voxel centre is where it was
    def centre(im):
        idx = (np.asarray(im.GetSize(), float) - 1) / 2
        return np.asarray(im.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    np.testing.assert_allclose(centre(ref), centre(img), atol=1e-9)


def test_the_same_anatomy_stored_flipped_gives_the_same_volumes(tmp_path: Path,
                                                                 case: dict[str, Path]) -> None:
    """A scan stored with its x axis flipped (same physical image, another index order)
    prepares to the same arrays: the T2W grid is reoriented first (orientation LPS)."""
    flipped = {}
    for q in ("t2w", "adc", "hbv", "mask"):
        img = sitk.ReadImage(str(case[q]))
        flipped[q] = tmp_path / f"f_{q}.mha"
        sitk.WriteImage(sitk.Flip(img, [True, False, False]), str(flipped[q]))
    seqs = {q: case[q] for q in ("t2w", "adc", "hbv")}
    seqs_f = {q: flipped[q] for q in ("t2w", "adc", "hbv")}
    a = mri.prepare_mri(seqs, case["mask"], patient="p")
    b = mri.prepare_mri(seqs_f, flipped["mask"], patient="p")
    for q in ("t2w", "hbv"):  # on the T2W grid already: identical
        np.testing.assert_array_equal(b[q], a[q])
    # the low-resolution ADC is interpolated onto the grid: identical away from the x edges,
    # where linear interpolation at its buffer's border is not mirror-symmetric
    np.testing.assert_allclose(b["adc"][..., 2:-2], a["adc"][..., 2:-2], atol=1e-5)
    # without reorientation (records written before the option) the arrays are mirrored
    raw = mri.MriConfig(orientation=None)
    c = mri.prepare_mri(seqs_f, flipped["mask"], raw, patient="p")
    assert not np.allclose(c["t2w"], a["t2w"], atol=1e-3)


def test_the_extract_option_none_keeps_the_files_own_order(tmp_path: Path, case: dict[str, Path]) -> None:
    """--mri-orientation none: what stores extracted before reorientation hold, so they
    can be resumed."""
    from modalsurv.features.extract import mri_config, mri_settings

    raw = mri.MriConfig(orientation=None)
    assert mri_config(mri_settings(raw)).orientation is None
    assert mri_config({k: v for k, v in mri_settings(mri.MriConfig()).items()
                       if k != "orientation"}).orientation is None  # an older record


def test_the_first_meaningful_line_of_an_itk_error_is_kept() -> None:
    """ITK appends the C errno text, which is whatever an earlier call left behind."""
    raw = ("Exception thrown in SimpleITK ImageFileReader_Execute: /b/ITK/itkNiftiImageIO.cxx:9:\n"
           "ITK ERROR: NiftiImageIO(0x55f5116f81a0): could not read the header\n"
           "Reason: Resource temporarily unavailable")  # fmt: skip
    assert mri.itk_reason(RuntimeError(raw)) == "could not read the header"
    assert mri.itk_reason(RuntimeError("Exception thrown in SimpleITK X: /b/sitkX.cxx:97:\n"
                                       'sitk::ERROR: The file "a.mha" does not exist.')
                          ) == 'The file "a.mha" does not exist.'  # fmt: skip
    assert mri.itk_reason(RuntimeError("")) == "RuntimeError"


def test_a_multi_component_volume_is_refused_not_cut_to_its_first(tmp_path: Path,
                                                                  case: dict[str, Path]) -> None:  # fmt: skip
    """Several b-values in one file (a vector image): the first component was taken silently
    (for an HBV, the b=0 volume)."""
    vec = sitk.GetImageFromArray(np.ones((*SHAPE, 3), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "hbv.mha"))
    with pytest.raises(DataError, match="found 3 components") as exc:
        mri.prepare_mri({**case, "hbv": tmp_path / "hbv.mha"}, case["mask"], patient="p7")
    assert (exc.value.path, exc.value.patient) == (str(tmp_path / "hbv.mha"), "p7")


def test_nan_voxels_name_their_own_sequence_file(tmp_path: Path, case: dict[str, Path]) -> None:
    """A NaN voxel made every prepared voxel NaN, found later as the patient's NaN features
    blamed on the T2W file whatever sequence held it."""
    img = sitk.ReadImage(str(case["hbv"]))
    arr = sitk.GetArrayFromImage(img)
    arr[6, 20, 20] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(tmp_path / "hbv.mha"))
    with pytest.raises(DataError, match="NaN or inf voxels in the hbv volume") as exc:
        mri.prepare_mri({**case, "hbv": tmp_path / "hbv.mha"}, case["mask"], patient="p7")
    assert (exc.value.path, exc.value.patient) == (str(tmp_path / "hbv.mha"), "p7")


def test_a_sequence_or_mask_elsewhere_in_space_is_refused(tmp_path: Path, case: dict[str, Path]) -> None:
    """An ADC whose origin puts it outside the T2W volume was resampled to all zeros and
    embedded as such; a mask elsewhere was reported as empty."""
    for q in ("adc", "mask"):
        img = sitk.ReadImage(str(case[q]))
        img.SetOrigin((900.0, 0.0, 0.0))
        sitk.WriteImage(img, str(tmp_path / f"far_{q}.mha"))
    with pytest.raises(DataError, match="adc volume does not overlap the t2w volume") as exc:
        mri.prepare_mri({**case, "adc": tmp_path / "far_adc.mha"}, case["mask"], patient="p7")
    assert exc.value.path == str(tmp_path / "far_adc.mha") and exc.value.patient == "p7"
    with pytest.raises(DataError, match="mask does not overlap the t2w volume") as exc:
        mri.prepare_mri(case, tmp_path / "far_mask.mha", patient="p7")
    assert exc.value.path == str(tmp_path / "far_mask.mha") and exc.value.field == "mri_mask"


def test_a_constant_region_normalises_to_zero_not_to_rounding_noise() -> None:
    """The float32 mean of a constant 1234.5678 is one ulp off: its "std" (1e-4) scaled the
    volume to all 1.0 (3000.3: all -1.0); an ADC in m^2/s (std ~1e-10) was left unscaled."""
    for value in (1234.5678, 3000.3, 100000.3):
        z = mri.normalize(np.full((24, 120, 120), value, np.float32), None, "zscore")
        assert np.abs(z).max() == 0.0, value
    adc = np.random.default_rng(2).normal(1.2e-9, 3e-10, (6, 8, 8)).astype(np.float32)
    assert mri.normalize(adc, None, "zscore").std() == pytest.approx(1.0, abs=1e-4)


def test_a_soft_mask_bounds_the_same_region_as_a_binary_one(tmp_path: Path,
                                                            case: dict[str, Path]) -> None:  # fmt: skip
    """A mask of 0.7s (a probability map, or a linearly resampled label) was cast to UInt8
    while resampled: all 0, refused as a mask lying elsewhere in space."""
    img = sitk.ReadImage(str(case["mask"]))
    soft = sitk.Cast(img, sitk.sitkFloat32) * 0.7
    sitk.WriteImage(soft, str(tmp_path / "soft.mha"))
    cfg = mri.MriConfig(size=(8, 16, 16))
    a = mri.prepare_mri(case, case["mask"], cfg, patient="p")
    b = mri.prepare_mri(case, tmp_path / "soft.mha", cfg, patient="p")
    for q in a:
        np.testing.assert_array_equal(b[q], a[q])


def _write_dicom(img: sitk.Image, folder: Path, uid: str, prefix: str) -> None:
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        sl.SetMetaData("0020|000e", uid)
        sl.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k))
        w.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        w.Execute(sl)


def test_a_folder_of_two_dicom_series_is_refused(tmp_path: Path, case: dict[str, Path]) -> None:
    """GDCM's first series was read silently: a localiser or a rescan in the folder could
    stand in for the T2W."""
    t2 = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(case["t2w"])), 0, 1000), sitk.sitkInt16)
    _write_dicom(t2, tmp_path, "1.2.826.0.1.3680043.2.1125.1", "a")
    _write_dicom(t2[:, :, :4], tmp_path, "1.2.826.0.1.3680043.2.1125.2", "b")
    with pytest.raises(DataError, match="2 DICOM series in one folder") as exc:
        mri.read_image(tmp_path, "p3")
    assert (exc.value.path, exc.value.patient) == (str(tmp_path), "p3")


def test_one_slice_is_refused_and_a_singleton_fourth_axis_dropped(tmp_path: Path) -> None:
    """A one-slice .mha was embedded as that slice repeated (its .nii twin reads as 2-D and
    was refused); a 4-D .mha of one volume was refused (its .nii twin was read)."""
    one = sitk.GetImageFromArray(np.ones((1, 20, 20), np.float32))
    sitk.WriteImage(one, str(tmp_path / "one.mha"))
    with pytest.raises(DataError, match=r"found one slice \(20x20x1"):
        mri.read_image(tmp_path / "one.mha", "p1")
    vol = sitk.GetImageFromArray(np.ones((8, 10, 12), np.float32))
    vol.SetSpacing((0.5, 0.5, 3.0))
    sitk.WriteImage(sitk.JoinSeries([vol]), str(tmp_path / "t1.mha"))
    got = mri.read_image(tmp_path / "t1.mha", "p1")
    assert got.GetSize() == (12, 10, 8) and got.GetSpacing() == (0.5, 0.5, 3.0)


def test_a_bad_mask_file_is_named_as_the_mask(tmp_path: Path, case: dict[str, Path]) -> None:
    """A truncated mask was reported as field 'mri', like a sequence."""
    bad = tmp_path / "mask.mha"
    bad.write_bytes(case["mask"].read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable image") as exc:
        mri.prepare_mri(case, bad, patient="p2")
    assert (exc.value.path, exc.value.patient, exc.value.field) == (str(bad), "p2", "mri_mask")


def _short_adc(tmp_path: Path, case: dict[str, Path], slices: slice) -> Path:
    """An ADC on the T2W grid, bright in the mask, covering only ``slices`` (z)."""
    ref = sitk.ReadImage(str(case["t2w"]))
    arr = np.random.default_rng(3).normal(300.0, 20.0, SHAPE).astype(np.float32)
    arr[ellipsoid()] += 900.0
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    sub = img[:, :, slices]  # SimpleITK keeps the origin of the first slice kept
    sitk.WriteImage(sub, str(tmp_path / "adc.mha"))
    return tmp_path / "adc.mha"


def test_an_adc_short_of_the_mask_is_normalised_on_what_it_covers(tmp_path: Path,
                                                                  case: dict[str, Path]) -> None:  # fmt: skip
    """The zeros past a shorter ADC's edge entered the in-mask statistics: the covered
    prostate z-scored to ~+1 instead of ~0; an ADC beside the prostate was embedded."""
    inside = ellipsoid()
    box = mri.mask_bbox(inside, (3.0, 0.5, 0.5), margin_mm=0.0)
    size = tuple(s.stop - s.start for s in box)
    cfg = mri.MriConfig(size=size, margin_mm=0.0)  # type: ignore[arg-type]  # no resize
    paths = {**case, "adc": _short_adc(tmp_path, case, slice(0, 6))}  # half the prostate
    out = mri.prepare_mri(paths, case["mask"], cfg, patient="p4")["adc"]
    seen = inside[box].copy()
    seen[6 - box[0].start:] = False
    assert abs(float(out[seen].mean())) < 0.05 and float(out[seen].std()) == pytest.approx(1, abs=0.05)
    paths = {**case, "adc": _short_adc(tmp_path, case, slice(0, 2))}  # above the prostate
    with pytest.raises(DataError, match="adc volume does not cover the prostate mask") as exc:
        mri.prepare_mri(paths, case["mask"], cfg, patient="p4")
    assert (exc.value.path, exc.value.patient) == (str(tmp_path / "adc.mha"), "p4")


def _adc_crop(adc: Path, case: dict[str, Path], box: tuple[slice, ...]) -> np.ndarray:
    """The ADC resampled onto the (LPS-oriented) T2W grid, cropped: what is normalised."""
    ref = sitk.DICOMOrient(mri.read_image(case["t2w"]), "LPS")
    return sitk.GetArrayFromImage(mri.resample_like(mri.read_image(adc), ref))[box]


@pytest.mark.parametrize("norm", ["zscore", "percentile"])
def test_voxels_a_short_adc_does_not_cover_are_neutral(tmp_path: Path, case: dict[str, Path],
                                                       norm: str) -> None:  # fmt: skip
    """The zeros past a shorter ADC's edge z-scored to a strongly negative value that read
    as very low ADC; now they are the normalised region's centre (0 for zscore, its median
    for percentile), and the covered voxels are what they were."""
    inside = ellipsoid()
    box = mri.mask_bbox(inside, (3.0, 0.5, 0.5), margin_mm=0.0)
    size = tuple(s.stop - s.start for s in box)
    cfg = mri.MriConfig(size=size, margin_mm=0.0, norm=norm)  # type: ignore[arg-type]
    adc = _short_adc(tmp_path, case, slice(0, 6))  # covers z < 6: half the crop
    out = mri.prepare_mri({**case, "adc": adc}, case["mask"], cfg, patient="p4")["adc"]
    covered = np.zeros(SHAPE, bool)
    covered[:6] = True
    covered = covered[box]
    seen = inside[box] & covered
    before = mri.normalize(_adc_crop(adc, case, box), seen, norm)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out[covered], before[covered])
    neutral = 0.0 if norm == "zscore" else float(np.median(before[seen]))
    assert (~covered).any() and (out[~covered] == np.float32(neutral)).all()
    # a fully covered ADC is normalised exactly as before: nothing set
    full = _short_adc(tmp_path, case, slice(0, SHAPE[0]))
    whole = mri.prepare_mri({**case, "adc": full}, case["mask"], cfg, patient="p4")["adc"]
    np.testing.assert_array_equal(whole, mri.normalize(_adc_crop(full, case, box), inside[box],
                                                       norm))  # type: ignore[arg-type]  # fmt: skip
