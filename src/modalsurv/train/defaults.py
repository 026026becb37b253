"""Defaults that follow the data: what ``"auto"`` config values resolve to for a cohort.

Every rule here is a documented function of the training part's size, events and
width, chosen on the tuning cohorts only (docs/benchmarks.md, "Defaults that scale with
the data"); a number in the config always overrides it. The estimator resolves them once
per fit (:func:`resolve`) and keeps the resolved config with the fitted model, so a saved
model rebuilds exactly what was trained.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, with_values
from modalsurv.train.preprocess import Preprocessor

#: below this many multiply-adds per training step (the widest matmul of a batch), one
#: CPU thread: these steps are a few hundred small kernels, each too short to split, and
#: on a shared machine a second thread that has to wait for a busy core costs more than it
#: brings (measured: 7 s against 74 s for one fold on two cores under load)
ONE_THREAD_BELOW = 5e7


@dataclass(frozen=True)
class CohortShape:
    """What the rules read: the training part's size, events and input widths."""

    n: int
    events: int
    features: int  # summed input width of the vector modalities after preprocessing
    tiles: int  # the widest bag's tiles per patient (0 without bags)
    tile_dim: int  # that bag's width after preprocessing


def batch_size(shape: CohortShape) -> int:
    """``train.batch_size: auto``: 32 up to 1,600 training patients, then the power of two
    nearest ``n / 25`` (64 at ~1,600-2,300, 128 to ~4,500, 256 beyond), capped at 256:
    about 25 steps an epoch, so early stopping still sees a few epochs on a large cohort
    (with 32, members of 2,000-5,000-patient cohorts peaked after 1-3 epochs) and an
    epoch costs fewer, fuller steps."""
    if shape.n < 1600:
        return 32
    return int(min(256, max(32, 2 ** round(math.log2(shape.n / 25)))))


def threads(config: RunConfig, batch: int, shape: CohortShape) -> int | None:
    """``train.threads: auto``: 1 on the CPU when a step's widest matmul is small (see
    ``ONE_THREAD_BELOW``), else None (leave torch's setting); on a GPU, None."""
    if config.train.device.startswith("cuda") or (
        config.train.device == "auto" and torch.cuda.is_available()
    ):
        return None
    width = max(config.model.latent_dim, config.model.hidden_dim, config.model.attention_pool_dim)
    work = batch * max(shape.tiles * max(shape.tile_dim, 1) * config.model.attention_pool_dim,
                       shape.features * width)  # fmt: skip
    return 1 if work < ONE_THREAD_BELOW else None


def cohort_shape(train: Cohort, pp: Preprocessor) -> CohortShape:
    """The :class:`CohortShape` of a training cohort under its fitted preprocessor."""
    bags = [m for m in pp.modalities if pp.bag[m]]
    widest = max(bags, key=lambda m: train.features[m].shape[1] if m in train.features else 0,
                 default=None)  # fmt: skip
    tiles = train.features[widest].shape[1] if widest is not None and widest in train.features else 0
    return CohortShape(n=len(train), events=int(train.n_events),
                       features=sum(d for m, d in pp.dims.items() if not pp.bag[m]),
                       tiles=int(tiles), tile_dim=pp.dims[widest] if widest is not None else 0)  # fmt: skip


def resolve(config: RunConfig, shape: CohortShape) -> RunConfig:
    """``config`` with every ``"auto"`` value this module decides replaced by its value for
    a training cohort of this shape (the same object when there is none)."""
    values: dict[str, object] = {}
    if config.train.batch_size == "auto":
        values["train.batch_size"] = batch_size(shape)
    if not values:
        return config
    out = with_values(config, values, "train.defaults")
    out.seed = config.seed
    return out


def resolved_threads(config: RunConfig, shape: CohortShape) -> int | None:
    """``train.threads``: the number, or for ``auto`` :func:`threads`."""
    if config.train.threads != "auto":
        return int(config.train.threads)
    batch = config.train.batch_size
    return threads(config, batch_size(shape) if batch == "auto" else int(batch), shape)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: unchanged), then restore."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
