"""Image encoders inside the network: fine-tuning as part of ModalSurvNet.

With ``finetune.mode`` other than ``frozen`` (``config.FinetuneConfig``), the encoder that
made a modality's stored features becomes a module of the network, called in that
modality's projection (``ModalSurvNet.attach_encoder``): it turns the modality's cached
images into its embedding, which then goes through the same train-fitted preprocessing
(:class:`AffineMap`: the standardisation and PCA of ``train.preprocess``, as fixed
tensors) and replaces the precomputed input. The trainer sees one network; the encoder's
trainable parameters form their own optimiser group (``finetune.lr``).

- :class:`TileAdapter` (``wsi`` bags): in training, a seeded subset of each bag's valid
  tiles (``tiles_per_step``) is re-encoded from the cached uint8 tiles and replaces those
  tiles' frozen features; the rest of the bag keeps its frozen features. In evaluation
  every valid tile is re-encoded (what ``predict`` and the challenge then see), patient by
  patient in ``encode_batch`` chunks. Modes: ``last_k`` (the last k transformer blocks and
  everything after them train; the blocks before run without autograd), ``lora`` (peft
  LoRA adapters on ``lora_targets``), ``all``.
- :class:`VolumeAdapter` (``mri`` vectors): every present patient's cached (S, z, y, x)
  volumes go through the 3-D ResNet, per sequence, then are concatenated or averaged as at
  extraction; in evaluation they are read ``encode_batch`` patients at a time. Modes:
  ``last_stage`` (``layer4``), ``all``.

The encoder always stays in eval mode (BatchNorm statistics and dropout as pretrained;
trained parameters still get gradients), so an adapter whose weights have not moved
reproduces the frozen features. Gradient checkpointing (``grad_checkpointing``) recomputes
each trained block in the backward pass; on CUDA the encoder runs under bfloat16
autocast (``mixed_precision``).

Images reach the adapter through a *feed* (``train.finetune.Feed``) that maps the row
numbers the estimator puts under ``x[ROWS]`` to patients of an image cache; the network
itself does no I/O beyond calling it. The adapter's ``state_dict`` holds only what
training changes (LoRA adapters, the trained blocks or stage, or all of the encoder):
the frozen rest is rebuilt from the encoder's preset and weights (checksum checked) when
a saved model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from modalsurv.config import FinetuneConfig
from modalsurv.errors import ConfigError, FeatureError
from modalsurv.features.encoders import preprocess_tiles
from modalsurv.utils import require

ROWS = "__rows__"  # x[ROWS]: int64 row numbers into the feed's patient table


class Feed(Protocol):
    """Where an adapter's images come from (``train.finetune.Feed``)."""

    def tiles(self, rows: Sequence[int], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(n_i, S, S, 3) uint8 tiles at bag ``positions[i]`` of row ``rows[i]``."""
        ...

    def volumes(self, rows: Sequence[int]) -> np.ndarray:
        """(B, S, z, y, x) float32 preprocessed volumes of ``rows``."""
        ...


# ---------------------------------------------------------------------------- pieces
class AffineMap(nn.Module):
    """A fitted ``VectorScaler`` / ``BagScaler`` as a fixed map: ``(x - mean) / scale``,
    the columns constant on the training rows (``constant``, the scalers' ``constant_``)
    set to 0, then ``(z - pca_mean) @ components.T`` when it has PCA components. Buffers
    are not saved (the preprocessor is, and rebuilds them)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, components: np.ndarray | None = None,
                 pca_mean: np.ndarray | None = None, constant: np.ndarray | None = None
                 ) -> None:  # fmt: skip
        super().__init__()
        idx = np.zeros(0, np.int64) if constant is None else np.asarray(constant, np.int64)
        self.register_buffer("constant", torch.from_numpy(idx.copy()), persistent=False)
        d = len(mean)
        comps = np.zeros((0, d)) if components is None else np.asarray(components)
        pm = np.zeros(d) if pca_mean is None or not len(pca_mean) else pca_mean
        for name, v in (("mean", mean), ("scale", scale), ("components", comps),
                        ("pca_mean", pm)):  # fmt: skip
            # contiguous whatever the fitted array's layout, so a loaded model's matmul
            # runs in the same order as the fitted one's (same bits)
            arr = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
            self.register_buffer(name, torch.from_numpy(arr), persistent=False)
        self.in_dim = d
        self.out_dim = int(comps.shape[0]) or d

    def forward(self, x: Tensor) -> Tensor:
        z = (x.float() - self.mean) / self.scale
        if self.constant.numel():  # as the scaler: no value of them reaches the network
            z = z.index_fill(-1, self.constant, 0.0)
        if self.components.shape[0]:
            z = (z - self.pca_mean) @ self.components.T
        return z


class StagedBlocks(nn.Sequential):
    """A ``Sequential`` of blocks (a ViT's ``blocks``, a ResNet's ``layerN``) that runs its
    first ``n_frozen`` blocks without autograd and, with ``checkpoint``, recomputes each
    later block in the backward pass. Same children, same state-dict names."""

    n_frozen: int = 0
    use_checkpoint: bool = False

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        grad = torch.is_grad_enabled()
        for i, block in enumerate(self):
            if grad and i < self.n_frozen:
                with torch.no_grad():
                    x = block(x)
            elif grad and self.use_checkpoint:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _staged(parent: nn.Module, name: str) -> StagedBlocks:
    """Replace ``parent.<name>`` (a Sequential) by a StagedBlocks with the same children."""
    seq = getattr(parent, name)
    if isinstance(seq, StagedBlocks):
        return seq
    if not isinstance(seq, nn.Sequential):
        raise ConfigError(f"{type(parent).__name__}.{name} is not a sequence of blocks")
    staged = StagedBlocks(*seq)
    setattr(parent, name, staged)
    return staged


def _first_trainable(blocks: nn.Sequential) -> int:
    for i, b in enumerate(blocks):
        if any(p.requires_grad for p in b.parameters()):
            return i
    return len(blocks)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


class _EncoderAdapter(nn.Module):
    """What both adapters share: the encoder, its mode, the saved / rebuilt split of its
    state, the optimiser settings and the feed."""

    model: nn.Module
    blocks: list[StagedBlocks]

    def __init__(self, model: nn.Module, affine: AffineMap, cfg: FinetuneConfig) -> None:
        super().__init__()
        self.model = model
        self.affine = affine
        self.mode = cfg.mode
        self.lr = float(cfg.lr)
        self.weight_decay = float(cfg.weight_decay)
        self.encode_batch = int(cfg.encode_batch)
        self.amp = bool(cfg.mixed_precision)
        self.feed: Feed | None = None
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_fill_frozen)

    def _finish(self) -> None:
        """After the trainable parameters are set: what the state dict leaves out."""
        self.model.eval()
        self.frozen_keys = {f"model.{n}" for n, p in self.model.named_parameters()
                            if not p.requires_grad}  # fmt: skip
        self.frozen_keys |= {f"model.{n}" for n, _ in self.model.named_buffers()}
        # blocks before the first trainable one run without autograd, unless something
        # trainable comes before the blocks (a LoRA adapter on the patch embedding): its
        # gradient flows back through every block
        names = [n for n, _ in self.model.named_parameters()]
        first = next((i for i, (_, p) in enumerate(self.model.named_parameters())
                      if p.requires_grad), len(names))  # fmt: skip
        for staged in self.blocks:
            mine = {id(p) for p in staged.parameters()}
            start = next((i for i, (_, p) in enumerate(self.model.named_parameters())
                          if id(p) in mine), len(names))  # fmt: skip
            staged.n_frozen = 0 if first < start else _first_trainable(staged)

    def train(self, mode: bool = True) -> _EncoderAdapter:
        super().train(mode)
        self.model.eval()  # BatchNorm statistics and dropout stay as pretrained
        for name, module in self.model.named_modules():
            if name.rsplit(".", 1)[-1] == "lora_dropout" or ".lora_dropout." in f".{name}.":
                module.train(mode)  # the adapters' own dropout (finetune.lora_dropout)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _need_feed(self, rows: Tensor | None) -> np.ndarray:
        if rows is None or self.feed is None:
            raise FeatureError("a fine-tuned encoder needs its images: this input carries no"
                               " image rows (predict through ModalSurv, which binds the image"
                               " cache; see train.finetune)", field="finetune")  # fmt: skip
        return rows.detach().cpu().numpy().astype(np.int64)

    def _autocast(self, device: torch.device) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.amp and device.type == "cuda")  # fmt: skip


def _drop_frozen(module: _EncoderAdapter, state_dict: dict[str, Any], prefix: str,
                 local_metadata: Any) -> None:  # fmt: skip
    for key in module.frozen_keys:
        state_dict.pop(prefix + key, None)


def _fill_frozen(module: _EncoderAdapter, state_dict: dict[str, Any], prefix: str,
                 local_metadata: Any, strict: bool, missing: list[str],
                 unexpected: list[str], errors: list[str]) -> None:  # fmt: skip
    """The frozen part comes from the rebuilt encoder, not from the saved state."""
    own = None
    for key in module.frozen_keys:
        if prefix + key not in state_dict:
            own = own if own is not None else module.model.state_dict(keep_vars=True)
            state_dict[prefix + key] = own[key[len("model."):]].detach()


# ---------------------------------------------------------------------------- tiles
_VIT_PREFIX = ("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.",
               "mask_token")  # fmt: skip


def vit_trunk(model: nn.Module) -> nn.Module | None:
    """The timm VisionTransformer holding ``blocks`` (the model itself, or a preset
    tower's ``trunk``); None for networks without transformer blocks."""
    for cand in (model, getattr(model, "trunk", None)):
        if cand is not None and isinstance(getattr(cand, "blocks", None), nn.Sequential):
            return cand
    return None


class TileAdapter(_EncoderAdapter):
    """A tile encoder (``features.encoders.TileEncoder``) in the network: see module doc.

    ``forward(feats (B, K, D'), mask (B, K), rows (B,))`` returns the bag with re-encoded
    tiles in place of the frozen ones (training: ``tiles_per_step`` per bag, seeded by
    ``seed``; evaluation: every valid tile)."""

    def __init__(self, encoder: Any, affine: AffineMap, cfg: FinetuneConfig, seed: int) -> None:
        super().__init__(encoder.model, affine, cfg)
        # the preset's forward (the model itself, or a function of it): kept out of the
        # module tree, so the model is registered (and saved) once, as ``model``
        self._fwd: list[Callable[[Tensor], Tensor]] = [encoder._forward]
        self.register_buffer("pix_mean", encoder.mean.detach().cpu().clone(), persistent=False)
        self.register_buffer("pix_std", encoder.std.detach().cpu().clone(), persistent=False)
        self.input_size = encoder.input_size
        self.crop_pct = encoder.crop_pct
        self.interpolation = encoder.interpolation
        self.tiles_per_step = int(cfg.tiles_per_step)
        self.rng = np.random.default_rng([int(seed), 0x7113])
        self.blocks = []
        trunk = vit_trunk(self.model)
        if cfg.mode in ("last_k", "lora") and trunk is None:
            raise ConfigError(f"finetune.mode {cfg.mode!r} needs a ViT tile encoder (timm"
                              f" blocks); {encoder.name} has none: use mode 'all'")  # fmt: skip
        if trunk is not None:
            staged = _staged(trunk, "blocks")
            staged.use_checkpoint = bool(cfg.grad_checkpointing)
            self.blocks = [staged]
        for p in self.model.parameters():
            p.requires_grad_(cfg.mode in ("all", "last_k"))
        if cfg.mode == "last_k" and trunk is not None:
            depth = len(trunk.blocks)
            if cfg.last_k > depth:
                raise ConfigError(f"finetune.last_k = {cfg.last_k}, but {encoder.name} has"
                                  f" {depth} blocks")  # fmt: skip
            for name, p in trunk.named_parameters():
                head = name.split(".")
                if name.startswith(_VIT_PREFIX) or (
                        head[0] == "blocks" and int(head[1]) < depth - cfg.last_k):
                    p.requires_grad_(False)
        elif cfg.mode == "lora":
            _inject_lora(self.model, cfg, encoder.name)
        self._finish()

    def run(self, x: Tensor) -> Tensor:
        """The encoder on preprocessed input (B, 3, s, s) → (B, dim)."""
        return self._fwd[0](x)

    def preprocess(self, tiles: np.ndarray, device: torch.device) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device)
        return preprocess_tiles(x, self.pix_mean, self.pix_std, self.input_size, self.crop_pct,
                                self.interpolation)  # fmt: skip

    def encode(self, tiles: np.ndarray, device: torch.device) -> Tensor:
        """(n, S, S, 3) uint8 → (n, D') float32: the encoder, then the fitted map."""
        x = self.preprocess(tiles, device)
        with self._autocast(device):
            out = self.run(x)
        return self.affine(out.float().reshape(len(tiles), -1))

    def forward(self, feats: Tensor, mask: Tensor, rows: Tensor | None) -> Tensor:
        rows_np = self._need_feed(rows)
        assert self.feed is not None
        valid = mask.detach().cpu().numpy().astype(bool)
        have = np.flatnonzero(valid.any(axis=1))
        if not len(have):
            return feats
        if self.training:
            picks = []
            for b in have:
                idx = np.flatnonzero(valid[b])
                n = min(self.tiles_per_step, len(idx))
                picks.append(np.sort(self.rng.choice(idx, size=n, replace=False)))
            tiles = self.feed.tiles([int(rows_np[b]) for b in have], picks)
            new = self.encode(np.concatenate(tiles), feats.device)
            bi = np.repeat(have, [len(p) for p in picks])
            ki = np.concatenate(picks)
        else:  # every valid tile, patient by patient, in encode_batch chunks
            parts, bis, kis = [], [], []
            for b in have:
                idx = np.flatnonzero(valid[b])
                # read chunk by chunk too: a bag of several 500-tile slides at 448 px is
                # most of a GiB of uint8 tiles at once
                for s in range(0, len(idx), self.encode_batch):
                    chunk = idx[s : s + self.encode_batch]
                    tiles = self.feed.tiles([int(rows_np[b])], [chunk])[0]
                    parts.append(self.encode(tiles, feats.device))
                bis.append(np.full(len(idx), b))
                kis.append(idx)
            new, bi, ki = torch.cat(parts), np.concatenate(bis), np.concatenate(kis)
        index = (torch.from_numpy(bi).to(feats.device), torch.from_numpy(ki).to(feats.device))
        return feats.index_put(index, new.to(feats.dtype))


def _inject_lora(model: nn.Module, cfg: FinetuneConfig, name: str) -> None:
    peft = require("peft", "LoRA fine-tuning (finetune.mode: lora)")
    lora = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                           lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_targets),
                           bias="none")  # fmt: skip
    try:
        peft.inject_adapter_in_model(lora, model)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, nn.Linear)})  # fmt: skip
        raise ConfigError(f"finetune.lora_targets {cfg.lora_targets} match no module of {name}"
                          f" ({exc}); its Linear layers end in {names[:12]}") from None
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)


# ---------------------------------------------------------------------------- volumes
class VolumeAdapter(_EncoderAdapter):
    """A 3-D encoder (``features.encoders.VolumeEncoder``) in the network: every present
    patient's cached sequences are encoded one by one (single channel) and combined as at
    extraction (``concat`` | ``mean``). ``forward(feats (B, D'), present (B,), rows)``."""

    def __init__(self, encoder: Any, affine: AffineMap, cfg: FinetuneConfig,
                 combine: str) -> None:  # fmt: skip
        super().__init__(encoder.model, affine, cfg)
        if combine not in ("concat", "mean"):
            raise ConfigError(f"MRI combine must be concat or mean; found {combine!r}")
        self.combine = combine
        stages = [n for n in ("layer1", "layer2", "layer3", "layer4")
                  if isinstance(getattr(self.model, n, None), nn.Sequential)]  # fmt: skip
        if cfg.mode == "last_stage" and "layer4" not in stages:
            raise ConfigError(f"finetune.mode 'last_stage' needs a ResNet with layer4;"
                              f" {encoder.name} has none: use mode 'all'")  # fmt: skip
        self.blocks = []
        for n in stages:
            staged = _staged(self.model, n)
            staged.use_checkpoint = bool(cfg.grad_checkpointing)
            self.blocks.append(staged)
        for name, p in self.model.named_parameters():
            p.requires_grad_(cfg.mode == "all" or name.startswith("layer4."))
        self._finish()

    def encode(self, volumes: np.ndarray, device: torch.device) -> Tensor:
        """(B, S, z, y, x) → (B, D') float32."""
        return self._combined(self._sequences(volumes, device))

    def _sequences(self, volumes: np.ndarray, device: torch.device) -> Tensor:
        """(B, S, z, y, x) → (B, S, D): every sequence through the encoder, in evaluation
        ``encode_batch`` sequences a call."""
        b, s = volumes.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32)).to(device)
        x = x.reshape(b * s, 1, *volumes.shape[2:])
        outs = []
        step = len(x) if self.training else self.encode_batch
        for i in range(0, len(x), step):
            with self._autocast(device):
                outs.append(self.model(x[i : i + step]).float())
        return torch.cat(outs).reshape(b, s, -1)

    def _combined(self, f: Tensor) -> Tensor:
        """(B, S, D) → (B, D'): the sequences combined as at extraction, then the map."""
        f = f.reshape(len(f), -1) if self.combine == "concat" else f.mean(dim=1)
        return self.affine(f)

    def forward(self, feats: Tensor, present: Tensor, rows: Tensor | None) -> Tensor:
        rows_np = self._need_feed(rows)
        assert self.feed is not None
        have = np.flatnonzero(present.detach().cpu().numpy().astype(bool))
        if not len(have):
            return feats
        picked = [int(rows_np[b]) for b in have]
        if self.training:
            new = self.encode(self.feed.volumes(picked), feats.device)
        else:  # read encode_batch patients at a time: a whole prediction batch of volumes
            # at once was hundreds of MB. Each read is a whole number of the encoder's
            # encode_batch-sequence calls, the same calls as encoding the batch at once
            step = self.encode_batch
            parts = [self._sequences(self.feed.volumes(picked[s : s + step]), feats.device)
                     for s in range(0, len(picked), step)]  # fmt: skip
            new = self._combined(torch.cat(parts))
        index = torch.from_numpy(have).to(feats.device)
        return feats.index_put((index,), new.to(feats.dtype))


# ---------------------------------------------------------------------------- memory
def _nbytes(out: Any) -> int:
    if isinstance(out, Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, tuple | list):
        return sum(_nbytes(o) for o in out)
    return 0


def _storages(out: Any) -> list[tuple[int, int]]:
    """(storage address, bytes) of every tensor in a layer's output."""
    if isinstance(out, Tensor):
        st = out.untyped_storage()
        return [(st.data_ptr(), st.nbytes())]
    if isinstance(out, tuple | list):
        return [s for o in out for s in _storages(o)]
    return []


def memory_estimate(adapter: _EncoderAdapter, sample: Tensor, samples_per_step: int,
                    optimizer_states: int = 2, cuda: bool = False) -> dict[str, float]:  # fmt: skip
    """What one training step of ``adapter``'s encoder needs, in MiB: an estimate from one
    forward of ``sample`` (one network input, batch 1) with hooks on every layer.

    - ``weights``: every encoder tensor; ``gradients``: one per trainable parameter;
      ``optimizer``: ``optimizer_states`` per trainable parameter (Adam: 2);
    - ``activations``: what autograd keeps for ``samples_per_step`` inputs, from the first
      trained block on (the blocks before run without autograd): every layer's output, or
      with checkpointing each trained block's output plus the layer outputs of one block
      (the one being recomputed). Training on CUDA (``cuda``) under bfloat16 autocast,
      they take half the bytes.

    An upper bound for LoRA: frozen layers between the adapters need not keep their
    inputs, but are counted (benchmarks/bench_finetune.py compares with what autograd
    actually keeps).
    """
    blocks = [blk for staged in adapter.blocks for blk in staged]
    owner = {m: g for g, blk in enumerate(blocks) for m in blk.modules()}
    first = next((g for g, blk in enumerate(blocks)
                  if any(p.requires_grad for p in blk.parameters())), None)  # fmt: skip
    # (block or None, bytes) of every layer's output, in order; an output sharing its
    # storage with an earlier one (identity, dropout in eval, views) counts once
    log: list[tuple[int | None, int]] = []
    seen: set[int] = set()
    block_out: dict[int, int] = {}
    alive: list[Any] = []  # outputs kept, so no address is reused by a later tensor

    def record(g: int | None, out: Any) -> None:
        alive.append(out)
        fresh = [(a, b) for a, b in _storages(out) if a not in seen]
        seen.update(a for a, _ in fresh)
        log.append((g, sum(b for _, b in fresh)))

    hooks = []
    for g, blk in enumerate(blocks):
        hooks.append(blk.register_forward_hook(
            lambda mod, inp, out, g=g: block_out.__setitem__(g, _nbytes(out))))  # fmt: skip
    for m in adapter.model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, g=owner.get(m): record(g, out)))  # fmt: skip
    was = adapter.training
    try:
        adapter.eval()
        with torch.no_grad():
            out = adapter.run(sample) if isinstance(adapter, TileAdapter) else adapter.model(sample)
    finally:
        for h in hooks:
            h.remove()
        adapter.train(was)
        alive.clear()
    if first is None:  # no blocks, or nothing inside them trains: count from the first
        start = next((i for i, (g, _) in enumerate(log) if g is None), 0)  # trained layer on
        region = log[start:] if count_parameters(adapter.model)[0] else []
    else:
        start = next(i for i, (g, _) in enumerate(log) if g is not None and g >= first)
        region = log[start:]
    if any(s.use_checkpoint for s in adapter.blocks) and first is not None:
        per_block: dict[int, int] = {}
        for g, b in region:
            if g is not None:
                per_block[g] = per_block.get(g, 0) + b
        act = (sum(v for g, v in block_out.items() if g >= first) + max(per_block.values())
               + sum(b for g, b in region if g is None))  # fmt: skip
    else:
        act = sum(b for _, b in region)
    if adapter.amp and cuda:
        act //= 2
    act += _nbytes(sample) + _nbytes(out)
    trainable, total = count_parameters(adapter.model)
    mib = 1 / 2**20
    weights = sum(t.numel() * t.element_size() for t in adapter.model.state_dict().values())
    est = {"weights": weights * mib, "gradients": trainable * 4 * mib,
           "optimizer": optimizer_states * trainable * 4 * mib,
           "activations": act * samples_per_step * mib}  # fmt: skip
    est["total"] = sum(est.values())
    est.update(trainable_params=float(trainable), total_params=float(total),
               samples_per_step=float(samples_per_step))  # fmt: skip
    return est
