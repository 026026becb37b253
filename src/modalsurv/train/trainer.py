"""Fit one ModalSurvNet: mini-batches, early stopping on an inner validation split.

The trainer knows tensors, not cohorts: :func:`to_tensors` turns an already preprocessed
cohort into a :class:`Tensors` bundle (features, presence, tile masks, labels), and
:func:`fit_network` runs the optimisation loop.

Early stopping monitors the validation C-index of the risk score (higher is better), or
with ``train.monitor="loss"`` the validation loss (lower is better). When
the validation split has no events (or no comparable pair) the C-index is undefined; the
trainer then monitors the validation loss (lower is better), and if that is not finite
either (Cox partial likelihood without events) the training loss. The criterion that was
actually used is returned in :class:`FitResult.monitor`, never silently switched per epoch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig
from modalsurv.devices import resolve_device
from modalsurv.errors import DivergedError
from modalsurv.survival import metrics
from modalsurv.survival.family import get_family
from modalsurv.train.fused import FusedStep
from modalsurv.utils import Progress


@dataclass
class Tensors:
    """A preprocessed cohort as tensors (modality order = ``modalities``)."""

    x: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    time: torch.Tensor
    event: torch.Tensor
    bin_index: torch.Tensor | None = None
    #: the event as the time bins see it (censored past the last training cut, as
    #: ``TimeBins.transform`` defines): the label of the discrete losses. ``event`` stays
    #: the observed one, for the C-index and the Cox loss
    bin_event: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def take(self, idx: torch.Tensor) -> Tensors:
        """Rows ``idx`` (1-D int64, on any device: moved to the data's): ``index_select`` is
        a plain row gather, cheaper on the CPU than advanced indexing for the bags that
        dominate a batch's bytes."""
        idx = idx.to(self.time.device)

        def rows(v: torch.Tensor) -> torch.Tensor:
            return v.index_select(0, idx)

        return Tensors(
            x={m: rows(v) for m, v in self.x.items()},
            present={m: rows(v) for m, v in self.present.items()},
            mask={m: rows(v) for m, v in self.mask.items()},
            time=rows(self.time),
            event=rows(self.event),
            bin_index=None if self.bin_index is None else rows(self.bin_index),
            bin_event=None if self.bin_event is None else rows(self.bin_event),
        )

    def to(self, device: torch.device) -> Tensors:
        return Tensors(
            x={m: v.to(device) for m, v in self.x.items()},
            present={m: v.to(device) for m, v in self.present.items()},
            mask={m: v.to(device) for m, v in self.mask.items()},
            time=self.time.to(device),
            event=self.event.to(device),
            bin_index=None if self.bin_index is None else self.bin_index.to(device),
            bin_event=None if self.bin_event is None else self.bin_event.to(device),
        )


def to_tensors(
    cohort: Cohort,
    modalities: list[str],
    dims: dict[str, int],
    bag: dict[str, bool],
    bin_index: np.ndarray | None = None,
    bin_event: np.ndarray | None = None,
) -> Tensors:
    """Tensors for ``modalities``; a modality the cohort lacks is absent for everyone.
    ``bin_index`` / ``bin_event``: the labels ``TimeBins.transform`` gives (discrete losses)."""
    n = len(cohort)
    x: dict[str, torch.Tensor] = {}
    present: dict[str, torch.Tensor] = {}
    mask: dict[str, torch.Tensor] = {}
    for m in modalities:
        if m in cohort.features:
            x[m] = torch.from_numpy(np.ascontiguousarray(cohort.features[m], dtype=np.float32))
            present[m] = torch.from_numpy(cohort.present[m].copy())
            if bag[m]:
                mask[m] = torch.from_numpy(cohort.bag_mask[m].copy())
        else:
            shape = (n, 1, dims[m]) if bag[m] else (n, dims[m])
            x[m] = torch.zeros(shape, dtype=torch.float32)
            present[m] = torch.zeros(n, dtype=torch.bool)
            if bag[m]:
                mask[m] = torch.zeros((n, 1), dtype=torch.bool)
    return Tensors(
        x=x,
        present=present,
        mask=mask,
        time=torch.from_numpy(cohort.time.astype(np.float32)),
        event=torch.from_numpy(cohort.event.copy()),
        bin_index=None if bin_index is None else torch.from_numpy(bin_index.astype(np.int64)),
        bin_event=None if bin_event is None else torch.from_numpy(bin_event.astype(bool)),
    )


def forward(net: torch.nn.Module, batch: Tensors) -> dict[str, Any]:
    return net(batch.x, batch.present, batch.mask)


def batch_loss(logits: torch.Tensor, batch: Tensors, config: RunConfig) -> torch.Tensor:
    """The survival family's loss (``model.head``) with the run's loss settings. A discrete
    family reads the binned event (a validation patient followed past the last training cut
    is censored there, not an event in the last bin); Cox reads the observed one."""
    lc = config.loss
    family = get_family(config.model.head)
    event = batch.event
    if family.discrete and batch.bin_event is not None:
        event = batch.bin_event
    return family.loss(logits, batch.time, event, batch.bin_index, alpha=lc.alpha,
                       sigma=lc.sigma, ties=lc.cox_ties)


def risk_from_logits(
    logits: torch.Tensor, head: str, cuts: np.ndarray, t_ref: float, score: str = "survival",
    fitted: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The documented risk score of the family ``head`` (``survival.family``)."""
    out = logits.detach().float().cpu().numpy()
    return get_family(head).risk(out, cuts, t_ref, score, fitted or {})


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    event: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """One epoch of index batches.

    Shuffled without replacement, or, when ``event`` is given (event-balanced sampler),
    ``n`` draws with replacement where events and censored patients are equally likely as
    a group. The last batch is dropped only when it would hold a single patient (a batch
    of one has no pair to rank and no risk set), and only if there is another batch.
    """
    if event is not None and 0 < int(event.sum()) < n:
        ev = event.cpu().to(torch.float64)
        w = torch.where(ev > 0, 0.5 / ev.sum(), 0.5 / (n - ev.sum()))
        order = torch.multinomial(w, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    out = list(torch.split(order, batch_size))
    if len(out) > 1 and out[-1].numel() == 1:
        out.pop()
    return out


def drop_modalities(
    present: dict[str, torch.Tensor], p: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Mark present modalities absent with probability ``p`` per sample, never all of them.

    A sample whose every present modality was drawn for dropping keeps one of them, chosen
    uniformly. Samples with no modality present stay as they are.
    """
    if p <= 0 or not present:
        return present
    mods = list(present)
    pres = torch.stack([present[m].cpu() for m in mods], dim=1)  # B x M
    kept = _drop_keeping_one(pres, p, generator)
    device = next(iter(present.values())).device
    return {m: kept[:, j].to(device) for j, m in enumerate(mods)}


def drop_tiles(mask: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Hide each valid tile with probability ``p`` (B×K mask), keeping at least one per bag.

    Why: a bag of hundreds of tile embeddings lets attention pooling memorise patients by
    their tiles within an epoch or two; seeing a different random subset at every step
    (instance dropout) removes that shortcut, and hidden tiles are never computed (the
    pooling gathers valid tiles only), so training gets cheaper too. A bag whose tiles
    were all drawn keeps one of its valid tiles, chosen uniformly.
    """
    if p <= 0 or mask.numel() == 0:
        return mask
    return _drop_keeping_one(mask.cpu(), p, generator).to(mask.device)


def _drop_keeping_one(valid: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each ``True`` of a B×N mask with probability ``p``; a row that had one and lost
    all of them gets back one of its original ``True`` entries, chosen uniformly."""
    kept = valid & (torch.rand(valid.shape, generator=generator) >= p)
    lost = valid.any(dim=1) & ~kept.any(dim=1)
    if lost.any():
        score = torch.rand(valid.shape, generator=generator) + valid.float()
        rows = torch.nonzero(lost).flatten()
        kept[rows, score[rows].argmax(dim=1)] = True
    return kept


@dataclass
class FitResult:
    """What training produced: the best-epoch weights (in memory) and the history."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    monitor: str  # "val_cindex" | "val_loss" | "train_loss"
    history: list[dict[str, float]] = field(default_factory=list)
    # the validation rows' risk score after each epoch (what the stacked default reads an
    # honest out-of-fold risk from: train.stacking); empty without validation rows
    val_risks: list[np.ndarray] = field(default_factory=list)


def _check_finite(net: torch.nn.Module, epoch: int, lr: float) -> None:
    """Stop a diverged network at the epoch it diverged (its NaN weights used to be kept
    silently, batches with a NaN loss being skipped, and prediction failed much later
    inside the survival curves)."""
    for name, p in net.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise DivergedError(
                f"training diverged: parameter {name!r} is not finite after epoch {epoch + 1}"
                f" (train.lr {lr:g})")  # fmt: skip


def _evaluate(
    net: torch.nn.Module,
    data: Tensors,
    config: RunConfig,
    cuts: np.ndarray,
    t_ref: float,
    batch_size: int,
) -> tuple[float, float, np.ndarray]:
    """(loss, C-index, risk) on ``data``; C-index is NaN when no pair is comparable."""
    net.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(data), max(batch_size, 256)):
            idx = torch.arange(start, min(start + max(batch_size, 256), len(data)))
            logits.append(forward(net, data.take(idx))["logits"])
        all_logits = torch.cat(logits)
        loss = float(batch_loss(all_logits, data, config))
    risk = risk_from_logits(all_logits, config.model.head, cuts, t_ref, config.train.risk_score)
    time = data.time.cpu().numpy().astype(np.float64)
    event = data.event.cpu().numpy()
    cidx = float("nan")
    if event.any():
        try:
            cidx = float(metrics.concordance_index(time, event, risk))
        except (ValueError, ZeroDivisionError):
            cidx = float("nan")
    return loss, cidx, risk


def choose_monitor(val: Tensors | None, head: str, prefer: str = "cindex") -> str:
    """Pick the early-stopping criterion once, before training (see module docstring and
    ``SurvivalFamily.monitor``). ``prefer="loss"`` monitors the validation loss whenever it
    is defined."""
    if val is None:
        return get_family(head).monitor(prefer, False, False, validation=False)
    time = val.time.cpu().numpy()
    event = val.event.cpu().numpy()
    # a comparable pair needs an event strictly before some other follow-up time
    pair = bool(event.any() and (time[event].min() < time.max()))
    return get_family(head).monitor(prefer, bool(event.any()), pair, validation=True)


def make_optimizer(
    opt_cls: type[torch.optim.Optimizer], net: torch.nn.Module, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel (one pass over all parameters per step: ~4x faster
    than ``foreach`` on the CPU for these small networks, the same update rule), falling
    back to ``foreach`` where the fused kernel is unsupported. A network with fine-tuned
    encoders gives their parameters their own group (``ModalSurvNet.optimizer_groups``)."""
    groups = getattr(net, "optimizer_groups", None)
    params: Any = (groups() if callable(groups) else None) or list(net.parameters())
    try:
        return opt_cls(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return opt_cls(params, lr=lr, weight_decay=weight_decay, foreach=True)


class GroupedStep:
    """zero_grad / clip / step over per-tensor parameter groups: for networks with
    fine-tuned encoders, whose parameters need their own learning rate and weight decay
    (and may differ in dtype), which one flat buffer (:class:`~modalsurv.train.fused.FusedStep`)
    cannot give."""

    def __init__(self, net: torch.nn.Module, opt_cls: type[torch.optim.Optimizer], lr: float,
                 weight_decay: float) -> None:  # fmt: skip
        self.opt = make_optimizer(opt_cls, net, lr, weight_decay)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def clip(self, max_norm: float) -> None:
        params = [p for g in self.opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def step(self) -> None:
        self.opt.step()

    def release(self) -> None:
        """Nothing to undo: the parameters kept their own storage."""


def make_step(net: torch.nn.Module, opt_cls: type[torch.optim.Optimizer], lr: float,
              weight_decay: float) -> FusedStep | GroupedStep:  # fmt: skip
    """The training step's optimiser: one flat buffer (train.fused) for the plain network,
    per-group updates when fine-tuned encoders bring their own groups."""
    groups = getattr(net, "optimizer_groups", None)
    if callable(groups) and groups():
        return GroupedStep(net, opt_cls, lr, weight_decay)
    return FusedStep(net, opt_cls, lr, weight_decay)


def fit_network(
    net: torch.nn.Module,
    train: Tensors,
    val: Tensors | None,
    config: RunConfig,
    cuts: np.ndarray,
    t_ref: float,
    seed: int,
    progress: Progress | None = None,
) -> FitResult:
    """Train ``net`` in place; return the best epoch's state_dict (copied to CPU).

    ``val=None`` trains for ``config.train.epochs`` and keeps the last epoch. Otherwise the
    monitored score is checked after each epoch (see module docstring) and training stops
    after ``config.train.patience`` epochs without improvement.
    """
    tc = config.train
    device = resolve_device(tc.device)
    net.to(device)
    train_d = train.to(device)
    val_d = None if val is None or len(val) == 0 else val.to(device)
    gen = torch.Generator().manual_seed(int(seed))
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    opt = make_step(net, opt_cls, tc.lr, tc.weight_decay)  # train.fused unless fine-tuning

    monitor = choose_monitor(val_d, config.model.head, tc.monitor)
    best_score, best_epoch = -math.inf, -1
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    history: list[dict[str, float]] = []
    val_risks: list[np.ndarray] = []
    stale = 0
    for epoch in range(tc.epochs):
        net.train()
        total, count = 0.0, 0
        sampler_event = train_d.event if tc.balanced_sampler else None
        for idx in batches(len(train_d), tc.batch_size, gen, sampler_event):
            batch = train_d.take(idx)  # take moves the indices to the data
            if tc.modality_dropout > 0:
                batch.present = drop_modalities(batch.present, tc.modality_dropout, gen)
            if tc.tile_dropout > 0:
                batch.mask = {m: drop_tiles(k, tc.tile_dropout, gen) for m, k in batch.mask.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.mixed_precision):
                out = forward(net, batch)
            loss = batch_loss(out["logits"].float(), batch, config)
            if not torch.isfinite(loss):
                if not bool(torch.isfinite(out["logits"]).all()):
                    raise DivergedError(f"training diverged: the network's outputs are not"
                                        f" finite in epoch {epoch + 1} (train.lr {tc.lr:g})")  # fmt: skip
                continue  # nothing to learn from it (a Cox batch without events is a finite 0)
            opt.zero_grad()
            loss.backward()
            if tc.grad_clip is not None:
                opt.clip(tc.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        train_loss = total / count if count else float("nan")
        _check_finite(net, epoch, tc.lr)
        record: dict[str, float] = {"epoch": float(epoch), "train_loss": train_loss}
        if val_d is not None:
            val_loss, val_c, val_risk = _evaluate(net, val_d, config, cuts, t_ref, tc.batch_size)
            record.update(val_loss=val_loss, val_cindex=val_c)
            val_risks.append(val_risk)
        score = {
            "val_cindex": record.get("val_cindex", math.nan),
            "val_loss": -record.get("val_loss", math.nan),
            "train_loss": -train_loss,
        }[monitor]
        history.append(record)
        if progress is not None:
            progress("epoch_end", **record, monitor=monitor)
        improved = math.isfinite(score) and score > best_score
        if val_d is None or improved:
            best_score = score if math.isfinite(score) else best_score
            best_epoch = epoch
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= tc.patience:
                break
    if best_epoch < 0:  # nothing finite was ever seen: keep the last weights
        best_epoch = len(history) - 1
        best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    opt.release()  # the weights laid out as a loaded model's: the same predictions to the bit
    net.load_state_dict(best_state)
    if progress is not None:
        progress("fit_end", best_epoch=best_epoch, best_score=best_score, monitor=monitor)
    return FitResult(best_state, best_epoch, float(best_score), monitor, history, val_risks)
