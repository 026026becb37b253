"""Encoders: registries, strict checkpoint loading, real EfficientNet-Lite0 weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modalsurv.errors import DataError, FeatureError, WeightsError
from modalsurv.features import encoders as enc


def tiles(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- timm
def test_timm_random_init_shapes_and_provenance() -> None:
    e = enc.get_tile_encoder("timm:resnet10t")
    out = e.encode(tiles(3))
    assert out.shape == (3, 512) and out.dtype == np.float32 and e.dim == 512
    assert e.name == "timm:resnet10t" and enc.is_random_init(e.checksum)
    assert e.mean.flatten().tolist() == pytest.approx(list(enc.IMAGENET_MEAN))


def test_timm_dim_is_the_pooled_output_width_of_models_with_a_head_mlp() -> None:
    """Was: ``dim`` was timm's ``num_features`` (576 for MobileNetV3-Small), while the
    pooled output passes the 1024-wide conv head; extraction allocates ``dim`` columns
    and every slide failed on the broadcast."""
    e = enc.get_tile_encoder("timm:mobilenetv3_small_100")
    out = e.encode(tiles(2))
    assert out.shape == (2, e.dim) and e.dim == 1024


def test_tiles_other_than_uint8_are_refused_not_rescaled_again() -> None:
    """Was: only the shape was checked, so float tiles in [0, 1] (torchvision, skimage)
    were divided by 255 once more and encoded as near-black images without an error."""
    e = enc.get_tile_encoder("timm:resnet10t")
    x = tiles(2)
    with pytest.raises(FeatureError, match="uint8; found float32"):
        e.encode(x.astype(np.float32) / 255)
    assert e.encode(x).shape == (2, e.dim)


def test_random_init_is_seeded_reproducible_and_leaves_the_rng_alone() -> None:
    """Features extracted with a random-init encoder can be extracted again at inference:
    the same weights (and the same checksum naming them) every time, whatever the global
    torch RNG state; the caller's RNG stream is not consumed."""
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = enc.get_tile_encoder("timm:resnet10t")
    after = torch.rand(1)
    torch.manual_seed(999)
    b = enc.get_tile_encoder("timm:resnet10t")
    assert torch.equal(before, after)  # the global stream was not advanced
    assert a.checksum == b.checksum and a.checksum.startswith("random-init:")
    np.testing.assert_array_equal(a.encode(tiles(2)), b.encode(tiles(2)))
    v1 = enc.get_volume_encoder("medicalnet_resnet10")
    v2 = enc.get_volume_encoder("medicalnet_resnet10")
    assert v1.checksum == v2.checksum and v1.checksum != a.checksum
    vol = np.random.default_rng(0).normal(size=(1, 8, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(v1.encode(vol), v2.encode(vol))


def test_timm_local_checkpoint_loads_and_is_checksummed(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(3)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=7)  # with a head
    src.eval()
    p = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(p))
    e = enc.get_tile_encoder("timm:resnet10t", weights=p)
    x = tiles(2)
    ref = src.forward_head(src.forward_features(e.preprocess(x)), pre_logits=True)
    np.testing.assert_allclose(e.encode(x), ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert e.checksum == enc.sha256_file(p) and len(e.checksum) == 64
    # the same weights as a DataParallel-style .pth give the same encoder
    p2 = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, p2)
    np.testing.assert_allclose(enc.get_tile_encoder("timm:resnet10t", weights=p2).encode(x),
                               e.encode(x), rtol=1e-6)  # fmt: skip


def test_a_weights_folder_for_a_timm_model_is_named_as_a_folder(tmp_path: Path) -> None:
    """Was: a snapshot folder given as timm weights was reported "weight file not found"
    though it exists; the error now says it is a folder and lists its weight files."""
    import timm

    snap = tmp_path / "snap"
    snap.mkdir()
    save_file(timm.create_model("resnet10t", num_classes=0).state_dict(),
              str(snap / "model.safetensors"))  # fmt: skip
    with pytest.raises(WeightsError, match="a folder, not a weight file") as exc:
        enc.get_tile_encoder("timm:resnet10t", weights=snap)
    assert "model.safetensors" in str(exc.value) and str(snap) in str(exc.value)


def test_a_distilled_vit_loads_its_own_checkpoint_with_both_heads(tmp_path: Path) -> None:
    """timm's distilled models name two classifiers (head, head_dist): both are dropped."""
    import timm

    src = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=5,
                            img_size=32, depth=1)  # fmt: skip
    p = tmp_path / "deit.safetensors"
    save_file(src.state_dict(), str(p))
    e = enc.get_tile_encoder("timm:deit_tiny_distilled_patch16_224", weights=p, img_size=32,
                             depth=1)  # fmt: skip
    assert e.encode(tiles(2, size=32)).shape == (2, e.dim)


def test_wrong_checkpoint_gives_a_readable_key_report(tmp_path: Path) -> None:
    import timm

    p = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), p)
    with pytest.raises(WeightsError) as exc:
        enc.get_tile_encoder("timm:resnet10t", weights=p)
    msg = str(exc.value)
    assert str(p) in msg and "shape mismatches" in msg and "missing" in msg
    assert "conv1.0.weight" in msg  # resnet10t's deep stem is not in resnet18


def test_checkpoint_must_hold_tensors(tmp_path: Path) -> None:
    p = tmp_path / "junk.pth"
    torch.save({"epoch": 3}, p)
    with pytest.raises(WeightsError, match="not a mapping"):
        enc.load_state_dict(p)
    with pytest.raises(WeightsError, match="not found"):
        enc.load_state_dict(tmp_path / "nope.pth")


def test_unknown_encoder_names_are_listed() -> None:
    with pytest.raises(DataError, match="efficientnet_lite0"):
        enc.get_tile_encoder("resnet")
    with pytest.raises(DataError, match="medicalnet_resnet50"):
        enc.get_volume_encoder("resnet3d")
    with pytest.raises(DataError, match="titan"):
        enc.get_slide_encoder("attention", 16)


# ---------------------------------------------------------------------------- efficientnet
def test_efficientnet_lite0_packaged_weights_are_genuine_imagenet() -> None:
    from skimage import data
    from skimage.transform import resize

    e = enc.efficientnet_lite0_encoder(classifier=True)
    imgs = np.stack([
        (resize(im, (224, 224), anti_aliasing=True) * 255).round().astype(np.uint8)
        for im in (data.chelsea(), data.coffee())
    ])  # fmt: skip
    top = e.encode(imgs).argmax(axis=1)
    assert 281 <= top[0] <= 285  # a domestic cat (285 = Egyptian cat)
    assert top[1] == 967  # espresso
    feat = enc.get_tile_encoder("efficientnet_lite0")
    assert feat.dim == 1280 and feat.encode(imgs).shape == (2, 1280)
    assert feat.checksum == enc.sha256_file(enc.efficientnet_lite0_weights())


# ---------------------------------------------------------------------------- conch
def test_conch_via_open_clip_with_a_tiny_local_checkpoint(tmp_path: Path) -> None:
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                          "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                        "layers": 1}}  # fmt: skip
    cdir = tmp_path / "cfg"
    cdir.mkdir()
    (cdir / "tiny-conch-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cdir)
    torch.manual_seed(0)
    src = open_clip.create_model("tiny-conch-test")
    p = tmp_path / "conch_tiny.bin"
    torch.save(src.state_dict(), p)
    e = enc.get_tile_encoder("conch:tiny-conch-test", weights=p)
    x = tiles(2, 48)
    out = e.encode(x)
    assert out.shape == (2, 16) and e.input_size == 32 and e.checksum == enc.sha256_file(p)
    ref = src.eval().encode_image(e.preprocess(x))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    # CONCH v1 itself needs MahmoodLab's package or at least a local checkpoint
    with pytest.raises(WeightsError, match="local checkpoint"):
        enc.get_tile_encoder("conch")


def test_conch_encoders_resize_bicubic_like_their_own_transforms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Was: both ``conch`` paths resized tiles bilinearly, while open_clip's eval
    transform and CONCH's ``image_transform`` resize bicubic (the ``conch_v1`` preset
    already did): other inputs than the model's own for every tile not at its size."""
    import sys
    import types

    import open_clip
    from PIL import Image

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                          "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2,
                        "layers": 1}}  # fmt: skip
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "tiny-conch-bicubic.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    p = tmp_path / "w.bin"
    torch.save(open_clip.create_model("tiny-conch-bicubic").state_dict(), p)
    e = enc.get_tile_encoder("conch:tiny-conch-bicubic", weights=p)
    _, _, own = open_clip.create_model_and_transforms("tiny-conch-bicubic")
    x = tiles(2, 48)
    ref = torch.stack([own(Image.fromarray(t)) for t in x])
    assert e.interpolation == "bicubic"
    assert float((e.preprocess(x) - ref).abs().mean()) < 0.02  # bilinear: 0.11
    # with MahmoodLab's package (stood in for here): CONCH's Resize(448, BICUBIC)
    model = torch.nn.Module()
    model.visual = types.SimpleNamespace(image_size=(448, 448))
    model.encode_image = lambda im, proj_contrast, normalize: im.mean(dim=(2, 3))
    pkg = types.ModuleType("conch.open_clip_custom")
    pkg.create_model_from_pretrained = lambda arch, path, device: (model, None)
    monkeypatch.setitem(sys.modules, "conch", types.ModuleType("conch"))
    monkeypatch.setitem(sys.modules, "conch.open_clip_custom", pkg)
    e = enc.get_tile_encoder("conch", weights=p)
    assert (e.interpolation, e.input_size, e.dim) == ("bicubic", 448, 3)


# ---------------------------------------------------------------------------- slides
def test_mean_slide_encoder() -> None:
    f = np.arange(12, dtype=np.float32).reshape(4, 3)
    s = enc.get_slide_encoder("mean", 3)
    np.testing.assert_allclose(s.encode(f), f.mean(0))


def test_titan_input_validation_and_missing_folder(tmp_path: Path) -> None:
    enc.validate_titan_inputs(768, 512, 0.5)  # what TITAN expects: fine
    with pytest.raises(FeatureError, match="768"):
        enc.validate_titan_inputs(512, 512, 0.5, "timm:resnet10t")
    with pytest.raises(FeatureError, match="512 px"):
        enc.validate_titan_inputs(768, 224, 0.5)
    with pytest.raises(FeatureError, match="20x"):
        enc.validate_titan_inputs(768, 512, 0.25)
    with pytest.raises(WeightsError, match="snapshot folder") as exc:
        enc.get_slide_encoder("titan", 768, tmp_path / "TITAN")
    assert str(tmp_path / "TITAN") in str(exc.value)


# ---------------------------------------------------------------------------- volumes
def _medicalnet_ckpt(model: torch.nn.Module, path: Path, extra_seg: bool = True) -> Path:
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    if extra_seg:  # MedicalNet's segmentation head: ignored
        sd["module.conv_seg.0.weight"] = torch.zeros(32, 512, 3, 3, 3)
    torch.save({"state_dict": sd}, path)
    return path


def test_medicalnet_layout_loads_and_wrong_depth_is_reported(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = enc.medicalnet_encoder(10)
    assert src.dim == 512
    p = _medicalnet_ckpt(src.model, tmp_path / "resnet_10.pth")
    e = enc.get_volume_encoder("medicalnet_resnet10", weights=p)
    vol = np.random.default_rng(0).normal(size=(2, 1, 16, 24, 24)).astype(np.float32)
    out = e.encode(vol)
    assert out.shape == (2, 512) and e.checksum == enc.sha256_file(p)
    np.testing.assert_allclose(out, src.encode(vol), rtol=1e-5, atol=1e-6)
    assert e.encode(vol[0]).shape == (512,)
    with pytest.raises(WeightsError) as exc:
        enc.get_volume_encoder("medicalnet_resnet18", weights=p)
    msg = str(exc.value)
    assert str(p) in msg and "missing" in msg and "layer1.1.conv1.weight" in msg
    assert "unexpected" in msg and "downsample" in msg  # resnet10 uses shortcut B


def test_medicalnet_resnet50_dim() -> None:
    e = enc.get_volume_encoder("medicalnet_resnet50")
    assert e.encode(np.zeros((1, 1, 8, 16, 16), np.float32)).shape == (1, 2048)


def test_find_weights_takes_the_file_with_the_recorded_checksum(tmp_path):
    """Presets share file names (pytorch_model.bin): a folder holding two of them gives
    the one the extraction record's checksum names, not the first found."""
    from modalsurv.features.encoders import find_weights, sha256_file

    other, right = tmp_path / "w" / "a_other", tmp_path / "w" / "uni"
    for d, payload in ((other, b"another encoder"), (right, b"the recorded one")):
        d.mkdir(parents=True)
        (d / "pytorch_model.bin").write_bytes(payload)
    entry = {"name": "uni", "weights_name": "pytorch_model.bin",
             "checksum": sha256_file(right / "pytorch_model.bin")}  # fmt: skip
    assert find_weights(entry, [tmp_path / "w"]) == right / "pytorch_model.bin"
    # no checksum match: the first found, whose loading then names the mismatch
    assert find_weights({**entry, "checksum": "0" * 64}, [tmp_path / "w"]) == other / "pytorch_model.bin"


def test_a_checkpoint_needing_pickle_is_refused_with_the_reason(tmp_path: Path) -> None:
    """torch's own message advised re-running with weights_only=False (arbitrary code)."""
    import argparse

    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, p)
    with pytest.raises(WeightsError, match=r"holds a Python object \(argparse\.Namespace\)") as exc:
        enc.load_state_dict(p)
    assert exc.value.path == str(p) and exc.value.field == "weights"
    assert "weights_only=False" not in str(exc.value) and "\x1b" not in str(exc.value)
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a torch.save or safetensors file"):
        enc.load_state_dict(tmp_path / "notes.pth")


def test_a_checkpoint_with_nan_weights_is_refused() -> None:
    """Every patient's features were NaN, each reported as a NaN in its source image."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "nan.pth"
        torch.save({"a": torch.zeros(3), "b": torch.tensor([1.0, float("nan")])}, p)
        with pytest.raises(WeightsError, match=r"NaN values in 1 tensor\(s\): b") as exc:
            enc.load_state_dict(p)
    assert exc.value.path == str(p)


@pytest.mark.parametrize("key", ["pretrained", "checkpoint_path"])
def test_encoder_keywords_that_load_weights_are_refused(key: str) -> None:
    """pretrained=True was a raw TypeError; checkpoint_path loaded a file outside the strict
    check and the checksum (recorded as a random initialisation)."""
    with pytest.raises(DataError, match=f"may not load weights \\({key}\\)") as exc:
        enc.get_tile_encoder("timm:resnet10t", **{key: "/w.pth" if key == "checkpoint_path" else True})
    assert exc.value.field == "tile_encoder_kwargs"


def test_a_weights_folders_checksum_ignores_hidden_download_metadata(tmp_path: Path) -> None:
    """The same weights downloaded twice with ``--local-dir`` differ only in the download
    times under ``.cache/``: one checksum, so a model is not refused its own encoder. A
    change to a weight file still changes it."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root, stamp in ((a, "t=1"), (b, "t=2")):
        (root / ".cache" / "huggingface").mkdir(parents=True)
        (root / "model.safetensors").write_bytes(b"weights")
        (root / "config.json").write_text("{}")
        (root / ".cache" / "huggingface" / "model.safetensors.metadata").write_text(stamp)
    assert enc.sha256_file(a) == enc.sha256_file(b)
    (b / "model.safetensors").write_bytes(b"other weights")
    assert enc.sha256_file(a) != enc.sha256_file(b)
