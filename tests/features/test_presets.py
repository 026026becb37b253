"""Encoder presets: published layouts at full size (meta device), real loading of tiny
checkpoints in the published key layouts, outputs against reference constructions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modalsurv.errors import DataError, WeightsError
from modalsurv.features import encoders as enc
from modalsurv.features import presets as P

TILE = ["uni", "uni2_h", "conch_v1", "conch_v1_5", "virchow2", "h_optimus_0", "gigapath",
        "phikon_v2"]  # fmt: skip
SMALL = {  # shrunken configs of the same architectures (same key names)
    "uni": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "uni2_h": {"img_size": 28, "embed_dim": 48, "depth": 2, "num_heads": 2},
    "virchow2": {"img_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "h_optimus_0": {"img_size": 28, "embed_dim": 48, "depth": 2, "num_heads": 2},
    "gigapath": {"img_size": 32, "embed_dim": 48, "depth": 2, "num_heads": 2},
    "conch_v1": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "pool_dim": 16,
                 "pool_heads": 2},
    "conch_v1_5": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "pool_dim": 24,
                   "pool_heads": 2},
    "phikon_v2": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2},
}  # fmt: skip


def tiles(n: int = 2, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("name", TILE)
def test_preset_at_full_size_has_the_published_checkpoint_layout(name: str) -> None:
    """Built on the meta device (no memory), every key and shape the loader expects is the
    published checkpoint's, as written in the manifest from the reference definition."""
    p = P.get_preset(name)
    man = P.read_manifest(name)
    published = {k: tuple(v) for k, v in man["keys"].items()
                 if not k.startswith(p.ignore_prefixes)}  # fmt: skip
    with torch.device("meta"):
        built = P.build(p)
    assert built.layout() == published
    assert built.dim == p.dim
    assert man["n_keys"] == len(man["keys"])
    if man.get("published_params"):  # the authors' own count agrees with the layout
        assert abs(man["n_params"] - man["published_params"]) <= man["published_params_rounding"]


def test_phikon_v2_also_takes_transformers_5_names() -> None:
    with torch.device("meta"):
        built = P.build("phikon_v2")
    v5 = P.dinov2_hf_layout(built.model, 5)
    assert "encoder.0.attention.q_proj.weight" not in v5
    assert v5["encoder.layer.3.attention.q_proj.weight"] == (1024, 1024)
    assert len(v5) == len(P.read_manifest("phikon_v2")["keys"])


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_medicalnet_layout_matches_the_reference_definition(depth: int) -> None:
    man = P.read_manifest(f"medicalnet_resnet{depth}")
    with torch.device("meta"):
        model = enc.medicalnet_encoder(depth, device="meta").model
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v) for k, v in man["keys"].items()}


def test_efficientnet_lite0_manifest_is_the_packaged_file_and_fits_by_position() -> None:
    import timm

    man = P.read_manifest("efficientnet_lite0")
    sd = enc.load_state_dict(enc.efficientnet_lite0_weights())
    assert {k: list(v.shape) for k, v in sd.items()} == man["keys"]
    with torch.device("meta"):
        own = timm.create_model("tf_efficientnet_lite0", num_classes=1000).state_dict()
    assert [tuple(v.shape) for v in own.values()] == [tuple(v) for v in man["keys"].values()]


def test_preset_facts() -> None:
    """Transform, output and resolution as the model cards state them."""
    f = {n: P.get_preset(n) for n in TILE}
    assert {n: p.dim for n, p in f.items()} == {
        "uni": 1024, "uni2_h": 1536, "conch_v1": 512, "conch_v1_5": 768, "virchow2": 2560,
        "h_optimus_0": 1536, "gigapath": 1536, "phikon_v2": 1024}  # fmt: skip
    assert f["virchow2"].output == "cls+mean_patch" and f["conch_v1"].output == "attn_pool"
    assert f["h_optimus_0"].mean == (0.707223, 0.578729, 0.703617)
    assert f["conch_v1"].mean == enc.OPENAI_CLIP_MEAN and f["conch_v1"].input_size == 448
    assert f["gigapath"].crop_pct == pytest.approx(224 / 256)
    assert all(p.mpp == 0.5 for p in f.values())
    # CONCH v1.5 on TITAN's grid: 512-px tiles at 20x, 768-d
    p = f["conch_v1_5"]
    enc.validate_titan_inputs(p.dim, p.tile_size, p.mpp, p.name)
    assert "pytorch_model_vision.bin" in p.weight_files
    assert "conch_v1_5_pytorch_model.bin" in p.weight_files


# ---------------------------------------------------------------------------- helpers
def _timm_source(name: str, seed: int = 1) -> nn.Module:
    """The preset's timm model at a shrunken size, built here from the card's kwargs."""
    import timm

    p = P.get_preset(name)
    kw = {**p.arch["kwargs"], **SMALL[name]}
    if isinstance(kw.get("mlp_layer"), str):
        kw["mlp_layer"] = getattr(timm.layers, kw["mlp_layer"])
    torch.manual_seed(seed)
    m = timm.create_model(p.arch["model"], pretrained=False, **kw).eval()
    with torch.no_grad():  # make layer scale and norms matter
        for k, v in m.named_parameters():
            if k.endswith("gamma") or "norm" in k:
                v.add_(torch.randn_like(v) * 0.3)
    return m


def _snapshot(root: Path, repo: str, sd: dict[str, torch.Tensor], fname: str) -> Path:
    """A Hugging Face cache-like folder: models--org--name/snapshots/<hash>/<file>."""
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    if fname.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / fname))
    else:
        torch.save(sd, snap / fname)
    (snap / "README.md").write_text("model card\n")
    return root


# ---------------------------------------------------------------------------- timm presets
@pytest.mark.parametrize("name,fname", [("uni", "pytorch_model.bin"),
                                        ("virchow2", "model.safetensors"),
                                        ("gigapath", "pytorch_model.bin")])  # fmt: skip
def test_timm_preset_loads_a_tiny_published_layout_checkpoint(tmp_path: Path, name: str,
                                                              fname: str) -> None:  # fmt: skip
    src = _timm_source(name)
    sd = src.state_dict()
    folder = _snapshot(tmp_path / "weights", f"org/{name}", sd, fname)
    e = enc.get_tile_encoder(name, weights=folder, **SMALL[name])
    file = next(folder.rglob(fname))
    assert e.checksum == enc.sha256_file(file) and e.name == name
    x = tiles(3, 40)
    out = e.encode(x)
    with torch.no_grad():
        tokens = src.forward_features(e.preprocess(x))
    if name == "virchow2":  # the card: concat(class token, mean of output[:, 5:])
        ref = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
        assert out.shape == (3, 64)
    else:
        ref = tokens[:, 0]
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)
    # the same tensors as a plain .safetensors / .pth file give the same encoder output
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    e2 = enc.get_tile_encoder(name, weights=tmp_path / "w.safetensors", **SMALL[name])
    np.testing.assert_allclose(e2.encode(x), out, rtol=1e-6, atol=1e-7)


def test_gigapath_resizes_to_256_and_crops_224_like_its_card() -> None:
    e = enc.get_tile_encoder("gigapath", img_size=224, embed_dim=24, depth=1, num_heads=1)
    x = tiles(1, 512)
    got = e.preprocess(x)
    assert got.shape == (1, 3, 224, 224)
    full = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255,
                                           size=(256, 256), mode="bicubic", antialias=True,
                                           align_corners=False).clamp(0, 1)  # fmt: skip
    ref = (full[..., 16:240, 16:240] - e.mean) / e.std
    torch.testing.assert_close(got, ref)


def test_missing_or_renamed_keys_are_refused_with_a_report(tmp_path: Path) -> None:
    sd = _timm_source("uni").state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    sd["norm.gamma"] = sd.pop("norm.weight")
    p = tmp_path / "pytorch_model.bin"
    torch.save(sd, p)
    with pytest.raises(WeightsError) as exc:
        enc.get_tile_encoder("uni", weights=tmp_path, **SMALL["uni"])
    msg = str(exc.value)
    assert str(p) in msg and "UNI" in msg
    assert "missing 2: " in msg and "blocks.1.mlp.fc2.bias" in msg and "norm.weight" in msg
    assert "unexpected 1: norm.gamma" in msg
    # a full-size UNI checkpoint is not a shrunken one: shapes are named
    with pytest.raises(WeightsError, match="shape mismatches"):
        enc.get_tile_encoder("uni", weights=p, img_size=32, embed_dim=64, depth=2, num_heads=2)


def test_weight_folder_resolution(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "other.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"no weight file named pytorch_model.bin.*other.bin"):
        enc.get_tile_encoder("uni", weights=tmp_path / "empty")
    two = tmp_path / "two"
    for h in ("a", "b"):
        (two / h).mkdir(parents=True)
        (two / h / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match="several pytorch_model.bin"):
        enc.get_tile_encoder("uni", weights=two)
    with pytest.raises(WeightsError, match="not found"):
        enc.get_tile_encoder("uni", weights=tmp_path / "nope")
    with pytest.raises(DataError, match="unknown tile encoder"):
        enc.get_tile_encoder("uni:large")
    with pytest.raises(DataError, match="architecture keywords"):
        enc.get_tile_encoder("conch_v1_5", widht=3)


def test_preset_random_init_is_seeded_and_recorded_kwargs_rebuild_it() -> None:
    a = enc.get_tile_encoder("uni2_h", **SMALL["uni2_h"])
    torch.manual_seed(7)
    b = enc.get_tile_encoder("uni2_h", **dict(SMALL["uni2_h"]))
    assert a.checksum == b.checksum and a.checksum.startswith("random-init:")
    np.testing.assert_array_equal(a.encode(tiles(2)), b.encode(tiles(2)))
    c = enc.get_tile_encoder("uni2_h", **{**SMALL["uni2_h"], "depth": 1})
    assert c.checksum != a.checksum


# ---------------------------------------------------------------------------- CONCH v1
def _conch_v1_reference(seed: int = 2) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """CONCH's image tower as its code builds it (timm trunk, open_clip's pooler class,
    which has conch's AttentionalPooler parameters), shrunken, in a full CoCa state dict."""
    from open_clip.transformer import AttentionalPooler
    from timm.models.vision_transformer import VisionTransformer

    s = SMALL["conch_v1"]
    torch.manual_seed(seed)
    ref = nn.Module()
    ref.trunk = VisionTransformer(embed_dim=s["embed_dim"], depth=s["depth"],
                                  num_heads=s["num_heads"], mlp_ratio=4, img_size=s["img_size"],
                                  patch_size=16, num_classes=0, dynamic_img_size=True)  # fmt: skip
    ref.attn_pool_contrast = AttentionalPooler(s["pool_dim"], s["embed_dim"], s["pool_heads"], 1)
    ref.ln_contrast = nn.LayerNorm(s["pool_dim"])
    ref.proj_contrast = nn.Parameter(torch.randn(s["pool_dim"], s["pool_dim"]))
    ref.attn_pool_caption = AttentionalPooler(24, s["embed_dim"], 2, 4)
    ref.ln_caption = nn.LayerNorm(24)
    with torch.no_grad():
        for v in ref.parameters():
            v.add_(torch.randn_like(v) * 0.05)
    sd = {f"visual.{k}": v for k, v in ref.state_dict().items()}
    sd |= {"text.token_embedding.weight": torch.randn(50, 16), "logit_scale": torch.ones(()),
           "text_decoder.ln_final.weight": torch.ones(16)}  # fmt: skip
    return ref.eval(), sd


def test_conch_v1_tower_equals_the_reference_on_a_full_coca_checkpoint(tmp_path: Path) -> None:
    ref, sd = _conch_v1_reference()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    e = enc.get_tile_encoder("conch_v1", weights=tmp_path, **SMALL["conch_v1"])
    assert e.interpolation == "bicubic" and e.input_size == 32 and e.dim == 16
    x = tiles(3, 48)
    with torch.no_grad():  # encode_image(proj_contrast=False, normalize=False)
        pooled = ref.attn_pool_contrast(ref.trunk.forward_features(e.preprocess(x)))[:, 0]
        want = ref.ln_contrast(pooled).numpy()
    np.testing.assert_allclose(e.encode(x), want, rtol=1e-4, atol=1e-5)
    # the image tower's own keys are strict; the text tower is dropped by name
    del sd["visual.attn_pool_contrast.query"]
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"missing 1: visual.attn_pool_contrast.query"):
        enc.get_tile_encoder("conch_v1", weights=tmp_path, **SMALL["conch_v1"])


# ---------------------------------------------------------------------------- CONCH v1.5
def _v15_checkpoint(seed: int = 3) -> tuple[dict[str, torch.Tensor], nn.Module, nn.Module]:
    """A shrunken CONCH v1.5 checkpoint in pytorch_model_vision.bin's layout, and the same
    pooler as open_clip's AttentionalPooler (to_q/to_kv/to_out mapped, zero biases)."""
    from open_clip.transformer import AttentionalPooler
    from timm.models.vision_transformer import VisionTransformer

    s = SMALL["conch_v1_5"]
    d, c = s["pool_dim"], s["embed_dim"]
    torch.manual_seed(seed)
    trunk = VisionTransformer(img_size=s["img_size"], patch_size=16, embed_dim=c,
                              depth=s["depth"], num_heads=s["num_heads"], qkv_bias=True,
                              init_values=0.5, num_classes=0).eval()  # fmt: skip
    sd = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    pool = {"query": torch.randn(1, d), "ln_k.weight": 1 + 0.1 * torch.randn(c),
            "ln_k.bias": 0.1 * torch.randn(c), "ln_q.weight": 1 + 0.1 * torch.randn(d),
            "ln_q.bias": 0.1 * torch.randn(d), "to_q.weight": torch.randn(d, d) / d**0.5,
            "to_kv.weight": torch.randn(2 * d, c) / c**0.5,
            "to_out.weight": torch.randn(d, d) / d**0.5}  # fmt: skip
    sd |= {f"attn_pool_contrast.{k}": v for k, v in pool.items()}
    sd |= {"ln_contrast.weight": 1 + 0.1 * torch.randn(d), "ln_contrast.bias": torch.randn(d)}
    ref = AttentionalPooler(d, c, s["pool_heads"], 1).eval()
    kw, vw = pool["to_kv.weight"].chunk(2, dim=0)
    ref.load_state_dict({"query": pool["query"], "ln_q.weight": pool["ln_q.weight"],
                         "ln_q.bias": pool["ln_q.bias"], "ln_k.weight": pool["ln_k.weight"],
                         "ln_k.bias": pool["ln_k.bias"], "attn.q_proj_weight": pool["to_q.weight"],
                         "attn.k_proj_weight": kw, "attn.v_proj_weight": vw,
                         "attn.in_proj_bias": torch.zeros(3 * d),
                         "attn.out_proj.weight": pool["to_out.weight"],
                         "attn.out_proj.bias": torch.zeros(d)})  # fmt: skip
    return sd, trunk, ref


def test_conch_v1_5_tower_equals_the_reference(tmp_path: Path) -> None:
    sd, trunk, pool = _v15_checkpoint()
    torch.save(sd, tmp_path / "conch_v1_5_pytorch_model.bin")  # as in TITAN's snapshot
    s = SMALL["conch_v1_5"]
    d = s["pool_dim"]
    ln = nn.LayerNorm(d).eval()
    ln.load_state_dict({"weight": sd["ln_contrast.weight"], "bias": sd["ln_contrast.bias"]})
    x = tiles(2, 70)
    # at the trunk's own grid the position embedding is used as it is
    e = enc.get_tile_encoder("conch_v1_5", weights=tmp_path, input_size=32, **s)
    with torch.no_grad():
        want = ln(pool(trunk.forward_features(e.preprocess(x)))[:, 0]).numpy()
    np.testing.assert_allclose(e.encode(x), want, rtol=1e-4, atol=1e-5)
    # at twice the grid (448 px for the real 224-px grid): the reference's DINO resampling,
    # bicubic by scale factor (n + 0.1) / n0, not timm's own
    e2 = enc.get_tile_encoder("conch_v1_5", weights=tmp_path, input_size=64, **s)
    xin = e2.preprocess(x)
    with torch.no_grad():
        tok = trunk.patch_embed.proj(xin).flatten(2).transpose(1, 2)
        grid = trunk.pos_embed[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, scale_factor=(4.1 / 2, 4.1 / 2),
                                               mode="bicubic")  # fmt: skip
        pos = torch.cat([trunk.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 16, -1)], 1)
        tok = torch.cat([trunk.cls_token.expand(2, -1, -1), tok], 1) + pos
        want2 = ln(pool(trunk.norm(trunk.blocks(tok)))[:, 0]).numpy()
    np.testing.assert_allclose(e2.encode(x), want2, rtol=1e-4, atol=1e-5)


def test_conch_v1_5_gives_titan_inputs_up_to_titan_itself(tmp_path: Path) -> None:
    """768-d features of 512-px tiles at 20x, resized to 448: TITAN's validation accepts
    them; TITAN itself needs its snapshot folder (and transformers), not present here."""
    e = enc.get_tile_encoder("conch_v1_5", img_size=32, embed_dim=32, depth=1, num_heads=2)
    assert (e.dim, e.tile_size, e.mpp, e.input_size) == (768, 512, 0.5, 448)
    enc.validate_titan_inputs(e.dim, e.tile_size, e.mpp, e.name)
    out = e.encode(tiles(2, 512))
    assert out.shape == (2, 768) and np.isfinite(out).all()
    with pytest.raises(WeightsError, match="snapshot folder"):
        enc.get_slide_encoder("titan", e.dim, tmp_path / "TITAN")


# ---------------------------------------------------------------------------- Phikon-v2
def _hf_names(trunk: nn.Module, version: int = 4) -> dict[str, torch.Tensor]:
    """A timm ViT's tensors under transformers Dinov2Model's names (written here from
    transformers' modeling_dinov2 / its 5.x renaming table, independently of presets)."""
    sd = trunk.state_dict()
    q, k, v, o = (("attention.attention.query", "attention.attention.key",
                   "attention.attention.value", "attention.output.dense") if version == 4 else
                  ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"))  # fmt: skip
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": torch.zeros(1, 32),
           "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}  # fmt: skip
    for i in range(len(trunk.blocks)):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for s in ("weight", "bias"):
            wq, wk, wv = sd[f"{b}attn.qkv.{s}"].chunk(3, dim=0)
            out |= {f"{h}{q}.{s}": wq, f"{h}{k}.{s}": wk, f"{h}{v}.{s}": wv,
                    f"{h}{o}.{s}": sd[f"{b}attn.proj.{s}"], f"{h}norm1.{s}": sd[f"{b}norm1.{s}"],
                    f"{h}norm2.{s}": sd[f"{b}norm2.{s}"], f"{h}mlp.fc1.{s}": sd[f"{b}mlp.fc1.{s}"],
                    f"{h}mlp.fc2.{s}": sd[f"{b}mlp.fc2.{s}"]}  # fmt: skip
        out[f"{h}layer_scale1.lambda1"] = sd[f"{b}ls1.gamma"]
        out[f"{h}layer_scale2.lambda1"] = sd[f"{b}ls2.gamma"]
    return out


@pytest.mark.parametrize("version", [4, 5])
def test_phikon_v2_loads_transformers_names_from_a_snapshot(tmp_path: Path, version: int) -> None:
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(4)
    trunk = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                              qkv_bias=True, init_values=0.7, num_classes=0,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()  # fmt: skip
    snap = tmp_path / "phikon-v2"
    snap.mkdir()
    save_file(_hf_names(trunk, version), str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({  # the snapshot's config sets the size
        "model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "patch_size": 16, "image_size": 32, "mlp_ratio": 4,
        "layer_norm_eps": 1e-6, "use_swiglu_ffn": False}))  # fmt: skip
    e = enc.get_tile_encoder("phikon_v2", weights=snap, input_size=32)
    x = tiles(3, 50)
    with torch.no_grad():
        want = trunk.forward_features(e.preprocess(x))[:, 0].numpy()
    np.testing.assert_allclose(e.encode(x), want, rtol=1e-4, atol=1e-5)
    sd = _hf_names(trunk, version)
    bad = "encoder.layer.1." + ("attention.attention.key" if version == 4 else
                                "attention.k_proj") + ".weight"  # fmt: skip
    sd["encoder.layer.1.attention.key_renamed.weight"] = sd.pop(bad)
    save_file(sd, str(snap / "model.safetensors"))
    with pytest.raises(WeightsError) as exc:
        enc.get_tile_encoder("phikon_v2", weights=snap, input_size=32)
    assert bad in str(exc.value) and "key_renamed" in str(exc.value)


def test_phikon_v2_equals_transformers_dinov2_where_installed(tmp_path: Path) -> None:
    """Against transformers' own Dinov2Model (the reference) when it is installed (it is
    not a dependency: the preset runs without it)."""
    tf = pytest.importorskip("transformers")
    cfg = tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          patch_size=16, image_size=32, mlp_ratio=4, layerscale_value=0.5,
                          layer_norm_eps=1e-6, use_swiglu_ffn=False)  # fmt: skip
    torch.manual_seed(5)
    ref = tf.Dinov2Model(cfg).eval()
    snap = tmp_path / "snap"
    ref.save_pretrained(snap)
    e = enc.get_tile_encoder("phikon_v2", weights=snap, input_size=32)
    x = tiles(2, 48)
    with torch.no_grad():
        want = ref(pixel_values=e.preprocess(x)).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(e.encode(x), want, rtol=1e-4, atol=1e-5)
    e2 = enc.get_tile_encoder("phikon_v2", weights=snap, input_size=64)  # resampled grid
    with torch.no_grad():
        want2 = ref(pixel_values=e2.preprocess(x)).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(e2.encode(x), want2, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- EfficientNet
def _lite0_reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 written from its definition (TF 'SAME' padding, BN eps 1e-3,
    ReLU6, no squeeze-excite), reading the packaged weights by their lukemelas names:
    independent of timm and of the positional mapping the encoder uses."""
    f = torch.nn.functional

    def same(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
        k = w.shape[-1]
        pads = []
        for n in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
            pads += [total // 2, total - total // 2]
        return f.conv2d(f.pad(x, pads), w, stride=stride, groups=groups)

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return f.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-3)  # fmt: skip

    x = f.relu6(bn(same(x, sd["_conv_stem.weight"], 2), "_bn0"))
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]  # stages s11 s22 s22 s22 s11 s22 s11
    for i, s in enumerate(strides):
        b, inp = f"_blocks.{i}.", x
        if b + "_expand_conv.weight" in sd:
            x = f.relu6(bn(same(x, sd[b + "_expand_conv.weight"], 1), b + "_bn0"))
        dw = sd[b + "_depthwise_conv.weight"]
        x = f.relu6(bn(same(x, dw, s, groups=dw.shape[0]), b + "_bn1"))
        x = bn(same(x, sd[b + "_project_conv.weight"], 1), b + "_bn2")
        if s == 1 and x.shape == inp.shape:
            x = x + inp
    x = f.relu6(bn(same(x, sd["_conv_head.weight"], 1), "_bn1"))
    return f.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def test_efficientnet_lite0_equals_a_by_name_reference_on_natural_images() -> None:
    from skimage import data
    from skimage.transform import resize

    imgs = np.stack([(resize(im, (224, 224), anti_aliasing=True) * 255).round().astype(np.uint8)
                     for im in (data.astronaut(), data.coffee())])  # fmt: skip
    e = enc.efficientnet_lite0_encoder(classifier=True)
    ours = e.encode(imgs)
    sd = enc.load_state_dict(enc.efficientnet_lite0_weights())
    with torch.no_grad():
        ref = _lite0_reference(sd, e.preprocess(imgs)).numpy()
    assert list(ours.argmax(1)) == list(ref.argmax(1))
    assert ref.argmax(1)[1] == 967  # espresso
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------- extract
def test_extract_command_with_a_preset_folder_and_timm_kwargs(tmp_path: Path) -> None:
    """``modalsurv extract --tile-encoder uni --tile-weights FOLDER --timm-kwargs JSON``:
    the record keeps spec, folder and kwargs, and rebuilds the very same encoder."""
    from typer.testing import CliRunner

    from modalsurv.challenge.model import find_weights
    from modalsurv.cli import app
    from modalsurv.data.synthetic import make_cohort, write_chimera
    from modalsurv.io.store import FeatureStore, read_extraction_record

    cohort, _ = make_cohort(n=2, seed=3, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=1024, mpp=0.5,
                         mri_shape=(8, 24, 24), max_slides=1)  # fmt: skip
    weights = _snapshot(tmp_path / "w" / "uni", "MahmoodLab/UNI", _timm_source("uni").state_dict(),
                        "pytorch_model.bin")  # fmt: skip
    args = ["extract", str(root), "--layout", "chimera-task1", "--out", str(tmp_path / "s"),
            "--tile-encoder", "uni", "--tile-weights", str(weights), "--tile-size", "64",
            "--max-tiles", "3", "--batch-size", "4", "--device", "cpu", "--timm-kwargs"]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, [*args, "{not json"])
    assert res.exit_code == 2 and "--timm-kwargs" in res.output
    res = runner.invoke(app, [*args, json.dumps(SMALL["uni"])])
    assert res.exit_code == 0, res.output
    assert FeatureStore(tmp_path / "s").meta("wsi")["encoder"] == "uni"
    te = read_extraction_record(tmp_path / "s")["tile_encoder"]
    assert (te["spec"], te["kwargs"], te["weights_name"], te["dim"]) == ("uni", SMALL["uni"],
                                                                         "uni", 32)  # fmt: skip
    file = next(weights.rglob("pytorch_model.bin"))
    assert te["checksum"] == enc.sha256_file(file) and not te["random_weights"]
    found = find_weights(te, [tmp_path / "w"])  # as `modalsurv challenge` looks for it
    again = enc.get_tile_encoder(te["spec"], found, **te["kwargs"])
    assert again.checksum == te["checksum"]


# ---------------------------------------------------------------------------- MedicalNet
def _medicalnet_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks: list[int],
                          shortcut: str) -> torch.Tensor:  # fmt: skip
    """MedicalNet's BasicBlock ResNet written from Tencent/MedicalNet models/resnet.py
    (layer2 stride 2; layer3, layer4 stride 1 with dilation 2, 4; shortcut A = strided
    pooling + zero channels, B = 1x1x1 conv + BN), reading the weights by name."""
    f = torch.nn.functional

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return f.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)  # fmt: skip

    x = f.relu(bn(f.conv3d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = f.max_pool3d(x, 3, stride=2, padding=1)
    for li, (stride, dil) in enumerate(((1, 1), (2, 1), (1, 2), (1, 4)), 1):
        for b in range(blocks[li - 1]):
            p, s = f"layer{li}.{b}.", stride if b == 0 else 1
            out = f.relu(bn(f.conv3d(x, sd[p + "conv1.weight"], stride=s, padding=dil,
                                     dilation=dil), p + "bn1"))  # fmt: skip
            out = bn(f.conv3d(out, sd[p + "conv2.weight"], padding=dil, dilation=dil), p + "bn2")
            res = x
            if p + "downsample.0.weight" in sd:
                res = bn(f.conv3d(x, sd[p + "downsample.0.weight"], stride=s), p + "downsample.1")
            elif shortcut == "A" and (s != 1 or out.shape[1] != x.shape[1]):
                res = f.avg_pool3d(x, 1, stride=s)
                res = torch.cat([res, torch.zeros(res.shape[0], out.shape[1] - res.shape[1],
                                                  *res.shape[2:])], dim=1)  # fmt: skip
            x = f.relu(out + res)
    return x.mean(dim=(2, 3, 4))


@pytest.mark.parametrize("depth,blocks,shortcut", [(10, [1, 1, 1, 1], "B"),
                                                   (18, [2, 2, 2, 2], "A")])  # fmt: skip
def test_medicalnet_equals_the_reference_network(tmp_path: Path, depth: int, blocks: list[int],
                                                 shortcut: str) -> None:  # fmt: skip
    torch.manual_seed(depth)
    src = enc.medicalnet_encoder(depth).model
    sd = {k: (v + 0.1 * torch.rand_like(v) if v.is_floating_point() else v)
          for k, v in src.state_dict().items()}  # fmt: skip
    folder = tmp_path / "MedicalNet" / "pretrain"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}},
               folder / f"resnet_{depth}.pth")  # fmt: skip
    e = enc.get_volume_encoder(f"medicalnet_resnet{depth}", weights=tmp_path / "MedicalNet")
    vol = np.random.default_rng(0).normal(size=(1, 1, 16, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = _medicalnet_reference(sd, torch.from_numpy(vol), blocks, shortcut).numpy()
    np.testing.assert_allclose(e.encode(vol), want, rtol=1e-4, atol=1e-5)
