"""Time per training epoch: ModalSurv (cross_attention_gated) vs pycox DeepHitSingle (MLP).

Same run, same synthetic cohort (N=200 by default, 4 modalities, one of them a bag of tile
embeddings), same inner train/validation split, same batch size (16), same number of epochs,
same torch thread count, CPU unless --device says otherwise. pycox sees the concatenated
features ModalSurv's baselines use (train-fitted preprocessing, bags mean-pooled), with a
2-layer MLP.

Two figures per model, medians over epochs 2..E pooled over --repeats alternating runs
(alternating so that load from other processes hits both models alike):

* ``train``: the optimisation loop alone (batches, forward, loss, backward, step). For
  ModalSurv the time the trainer spends in its per-epoch validation (``_evaluate``) is
  measured and subtracted; pycox is fitted without validation data. This is the headline
  ratio (target: ModalSurv not slower than pycox).
* ``train+val``: the epoch including the same validation work for both: loss on the
  validation split and its C-index (pycox: ``val_data`` plus a callback computing the
  C-index of ``1 - S(t)`` at the median training time with the project's metric).

On a GPU (``--device cuda``) a second table gives what a GPU user asks: training samples
per second (training rows / train-only seconds per epoch) and the peak GPU memory of the
whole fit (``torch.cuda.max_memory_allocated``: data, weights, optimiser state,
activations); ``--amp`` adds both models under bfloat16 autocast (ModalSurv's
``train.mixed_precision``; pycox's fit inside the same autocast).

    python benchmarks/bench_training.py [--n 200] [--epochs 10] [--repeats 3] [--threads 1]
    python benchmarks/bench_training.py --device cuda --amp [--n 5000 --batch 256]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Iterator

import numpy as np
import scipy.integrate
import torch

from modalsurv.config import RunConfig
from modalsurv.data.synthetic import make_cohort
from modalsurv.devices import resolve_device
from modalsurv.survival import metrics
from modalsurv.train import trainer
from modalsurv.train.baselines import FeatureMatrix
from modalsurv.train.estimator import ModalSurv, inner_split

Times = tuple[list[float], list[float]]  # (train-only, train+val) seconds per epoch


def mean_pooled(cohort):
    """The cohort with every bag replaced by the mean of its valid tiles (a vector
    modality): the input pycox gets, so that ``--pool-bags`` compares the two models on the
    same information, without the tile pass that only ModalSurv makes."""
    from modalsurv.cohort import Cohort

    feats, masks = dict(cohort.features), {}
    for m in cohort.modalities:
        if cohort.is_bag(m):
            mk = cohort.bag_mask[m][..., None]
            feats[m] = (cohort.features[m] * mk).sum(1) / np.maximum(mk.sum(1), 1)
        elif m in cohort.bag_mask:
            masks[m] = cohort.bag_mask[m]
    return Cohort(cohort.ids, cohort.time, cohort.event, features=feats,
                  present=dict(cohort.present), bag_mask=masks, meta=cohort.meta)  # fmt: skip


@contextlib.contextmanager
def peak_memory(device: str, out: list[float]) -> Iterator[None]:
    """Append the block's peak GPU memory (MiB) to ``out``; nothing on the CPU."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize(dev)
            out.append(torch.cuda.max_memory_allocated(dev) / 2**20)


def split_parts(cohort, cfg: RunConfig):
    """(training part, validation part): the trainer's inner split, which both models use."""
    tr, va = inner_split(cohort.event, cfg.train.val_fraction, cfg.seed)
    return cohort.subset(tr), cohort.subset(va)


def pycox_mlp(n_in: int, n_out: int) -> torch.nn.Module:
    """The peer's network: torchtuples' 2 x 256 MLP with batch norm and dropout 0.2."""
    import torchtuples as tt

    return tt.practical.MLPVanilla(n_in, [256, 256], n_out, batch_norm=True, dropout=0.2)


def latent(latent_dim: int | None) -> dict[str, int]:
    """The model-config entry for ``--latent-dim``: none keeps the method's width (128)."""
    return {} if latent_dim is None else {"latent_dim": latent_dim}


def pick_modalities(cohort, k: int = 4) -> list[str]:
    """Four modalities, the bag (if any) first so the bench always includes attention pooling."""
    bags = [m for m in cohort.modalities if cohort.is_bag(m)]
    vectors = [m for m in cohort.modalities if not cohort.is_bag(m)]
    return (bags + vectors)[:k]


@contextlib.contextmanager
def timed_validation(spent: list[float]) -> Iterator[None]:
    """Record the seconds of every ``trainer._evaluate`` call while the block runs."""
    original = getattr(trainer, "_evaluate", None)
    if original is None:
        raise RuntimeError(
            "modalsurv.train.trainer._evaluate is gone: update bench_training.py to time "
            "the trainer's validation pass some other way"
        )

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    trainer._evaluate = wrapper
    try:
        yield
    finally:
        trainer._evaluate = original


def time_modalsurv(
    cohort,
    epochs: int,
    batch: int,
    device: str,
    tile_dropout: float = 0.0,
    bag_pca: int | str | None = "auto",
    head: str = "deephit",
    amp: bool = False,
    peak: list[float] | None = None,
    latent_dim: int | None = None,
) -> Times:
    cfg = RunConfig.model_validate(
        {
            "preprocess": {"bag_pca": bag_pca},
            "model": {"fusion": "cross_attention_gated", "head": head, "stack": "none",
                      **latent(latent_dim)},
            "train": {
                "epochs": epochs,
                "patience": epochs + 1,
                "batch_size": batch,
                "device": device,
                "n_init": 1,  # one network: epochs of different members would interleave
                # pycox's count (--threads): "auto" would drop to one thread on small steps
                "threads": torch.get_num_threads(),
                "tile_dropout": tile_dropout,
                "mixed_precision": amp,
            },
        }
    )
    stamps: list[float] = []
    evals: list[float] = []  # one validation pass per epoch, in order

    def progress(event: str, **info: object) -> None:
        if event == "epoch_end":
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    with timed_validation(evals), peak_memory(device, [] if peak is None else peak):
        ModalSurv(cfg).fit(cohort, progress=progress)
    if len(evals) != len(stamps):
        raise RuntimeError(f"{len(evals)} validation passes for {len(stamps)} epochs")
    # the first interval also holds preprocessing and model construction: dropped by caller
    full = list(np.diff([start, *stamps]))
    return [f - e for f, e in zip(full, evals, strict=True)], full


def time_pycox(
    cohort, epochs: int, batch: int, device: str, bag_pca: int | str | None = "auto",
    amp: bool = False, peak: list[float] | None = None,
) -> Times:
    scipy.integrate.simps = scipy.integrate.simpson  # pycox imports the removed name
    import torchtuples as tt
    from pycox.models import DeepHitSingle

    cfg = RunConfig.model_validate({"preprocess": {"bag_pca": bag_pca}})  # same inputs
    train, val = split_parts(cohort, cfg)
    fm = FeatureMatrix(cfg).fit(train)
    xt, xv = fm.transform(train).astype("float32"), fm.transform(val).astype("float32")
    labtrans = DeepHitSingle.label_transform(cfg.model.n_bins)
    yt = labtrans.fit_transform(train.time, train.event.astype("float32"))
    yv = labtrans.transform(val.time, val.event.astype("float32"))
    # risk = 1 - S at the cut closest to the median training time (ModalSurv's reference)
    ref_col = int(np.abs(np.asarray(labtrans.cuts) - np.median(train.time)).argmin())
    val_time, val_event = val.time.astype(np.float64), val.event

    def run(with_val: bool) -> list[float]:
        torch.manual_seed(0)
        net = pycox_mlp(xt.shape[1], labtrans.out_features)
        model = DeepHitSingle(
            net,
            tt.optim.AdamW(lr=1e-3),
            alpha=0.2,
            sigma=0.1,
            duration_index=labtrans.cuts,
            device=resolve_device(device),
        )
        stamps: list[float] = []

        class Stamp(tt.callbacks.Callback):
            def on_epoch_end(self):
                if with_val:  # validation in float32, as ModalSurv's trainer does
                    with torch.autocast(resolve_device(device).type, enabled=False):
                        surv = model.predict_surv(xv, batch_size=256)
                    metrics.concordance_index(val_time, val_event, 1.0 - surv[:, ref_col])
                stamps.append(time.perf_counter())

        start = time.perf_counter()
        dev = resolve_device(device)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            model.fit(
                xt,
                yt,
                batch_size=batch,
                epochs=epochs,
                val_data=(xv, yv) if with_val else None,
                verbose=False,
                callbacks=[Stamp()],
            )
        return list(np.diff([start, *stamps]))

    with peak_memory(device, [] if peak is None else peak):
        train_only = run(with_val=False)
    return train_only, run(with_val=True)


def training_rows(cohort) -> int:
    """Rows both models train on (the trainer's inner split, default settings)."""
    return len(split_parts(cohort, RunConfig())[0])


def _training_bags(cohort, device: str, bag_pca: int | str | None):
    """The first bag modality's training rows (the trainer's inner split) as the model
    sees them: standardised and, with ``bag_pca``, projected (``BagScaler``)."""
    from modalsurv.train.preprocess import BagScaler

    cfg = RunConfig()
    tr, _ = inner_split(cohort.event, cfg.train.val_fraction, cfg.seed)
    bag = next(m for m in cohort.modalities if cohort.is_bag(m))
    dev = resolve_device(device)
    x, mk, pres = cohort.features[bag][tr], cohort.bag_mask[bag][tr], cohort.present[bag][tr]
    x = BagScaler(pca=bag_pca).fit(x, mk, pres).transform(x, mk, pres)
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    mask = torch.from_numpy(mk & pres[:, None]).to(dev)
    return x, mask, cfg, dev


def _epochs_of(step, n: int, epochs: int, batch: int) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for idx in trainer.batches(n, batch, gen):
            step(idx)
        out.append(time.perf_counter() - t0)
    return out


def time_tile_embedding(
    cohort, epochs: int, batch: int, device: str, bag_pca: int | str | None = "auto"
) -> list[float]:
    """Seconds per epoch of the one matmul no tile-level model can skip: the first Linear
    of attention pooling (tile dim -> attention_pool_dim) forward + backward on every valid
    tile of every training batch. pycox never sees tiles (it gets their mean), so when this
    alone is close to pycox's whole epoch, "not slower" needs a cheaper tile encoder, not
    less overhead. ``bag_pca``: the tiles' preprocessing, as in the model's config."""
    if not any(cohort.is_bag(m) for m in cohort.modalities):
        return [0.0]
    x, mask, cfg, dev = _training_bags(cohort, device, bag_pca)
    lin = torch.nn.Linear(x.shape[-1], cfg.model.attention_pool_dim).to(dev)

    def step(idx: torch.Tensor) -> None:
        lin(x[idx][mask[idx]]).sum().backward()

    return _epochs_of(step, len(x), epochs, batch)


def time_attention_pooling(
    cohort, epochs: int, batch: int, device: str, bag_pca: int | str | None = "auto"
) -> list[float]:
    """Seconds per epoch of ModalSurv's own gated attention pooling module alone (the
    embedding, the tanh/sigmoid gates and the weighted sum over valid tiles), forward +
    backward, on every training batch: the part of the method that has no counterpart in
    pycox's input, measured without projections, fusion, head, loss or optimiser."""
    from modalsurv.nn.projection import GatedAttentionPool

    if not any(cohort.is_bag(m) for m in cohort.modalities):
        return [0.0]
    x, mask, cfg, dev = _training_bags(cohort, device, bag_pca)
    torch.manual_seed(0)
    pool = GatedAttentionPool(x.shape[-1], cfg.model.attention_pool_dim).to(dev)

    def step(idx: torch.Tensor) -> None:
        pool(x[idx], mask[idx])[0].sum().backward()

    return _epochs_of(step, len(x), epochs, batch)


def time_mil_loop(cohort, epochs: int, accumulate: int, device: str,
                  bag_pca: int | str | None = "auto") -> list[float]:
    """Seconds per epoch of the training loop a user of CLAM / MCAT / SurvPath would run:
    one patient per step (its own valid tiles only, no padding), the per-patient discrete
    survival NLL (logistic hazard, the loss those codes use; defined for one patient),
    gradients accumulated over ``accumulate`` patients before each AdamW step. The network
    is ModalSurv's own (``ModalSurvNet``: same projections, attention pooling, fusion),
    with the same preprocessing and inner training split; only the loop differs."""
    from modalsurv.survival.bins import TimeBins
    from modalsurv.survival.family import get_family
    from modalsurv.train.estimator import _build_net
    from modalsurv.train.preprocess import Preprocessor

    cfg = RunConfig.model_validate({"preprocess": {"bag_pca": bag_pca},
                                    "model": {"head": "logistic_hazard", "stack": "none"}})  # fmt: skip
    train = split_parts(cohort, cfg)[0]
    pp = Preprocessor(cfg.preprocess).fit(train)
    bins = TimeBins(n_bins=cfg.model.n_bins, scheme=cfg.model.bin_scheme).fit(train.time,
                                                                              train.event)  # fmt: skip
    bin_index, _ = bins.transform(train.time, train.event)
    data = trainer.to_tensors(pp.transform(train), pp.modalities, pp.dims, pp.bag, bin_index)
    dev = resolve_device(device)
    data = data.to(dev)
    torch.manual_seed(0)
    net = _build_net(pp.dims, pp.bag, cfg, bins.n_bins).to(dev)
    family = get_family("logistic_hazard")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        net.train()
        opt.zero_grad(set_to_none=True)
        order = torch.randperm(len(data), generator=gen)
        for j, i in enumerate(order.tolist()):
            one = data.take(torch.tensor([i], device=dev))
            for m, mk in one.mask.items():  # the patient's own tiles, as a MIL loader yields
                keep = mk[0].nonzero().squeeze(1)
                if len(keep):
                    one.x[m], one.mask[m] = one.x[m][:, keep], mk[:, keep]
            logits = trainer.forward(net, one)["logits"]
            loss = family.loss(logits, one.time, one.event, one.bin_index) / accumulate
            loss.backward()
            if (j + 1) % accumulate == 0 or j + 1 == len(order):
                opt.step()
                opt.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - t0)
    return out


def step_flops(cohort, batch: int, bag_pca: int | str | None = "auto",
               latent_dim: int | None = None) -> tuple[float, float]:
    """Matmul FLOPs of one training step (forward + backward; torch's ``FlopCounterMode``)
    of ModalSurv's network and of pycox's MLP, on the same first ``batch`` training rows,
    each with its own preprocessing: the arithmetic a step cannot avoid. Where both models
    are compute-bound (large batches), their time ratio cannot fall far below this ratio."""
    from torch.utils.flop_counter import FlopCounterMode

    from modalsurv.train.estimator import _build_net
    from modalsurv.train.preprocess import Preprocessor

    cfg = RunConfig.model_validate({"preprocess": {"bag_pca": bag_pca},
                                    "model": {"stack": "none", **latent(latent_dim)}})  # fmt: skip
    train = split_parts(cohort, cfg)[0]
    pp = Preprocessor(cfg.preprocess).fit(train)
    data = trainer.to_tensors(pp.transform(train), pp.modalities, pp.dims, pp.bag)
    rows = torch.arange(min(batch, len(data)))
    torch.manual_seed(0)
    net = _build_net(pp.dims, pp.bag, cfg, cfg.model.n_bins)
    with FlopCounterMode(display=False) as ours:
        trainer.forward(net, data.take(rows))["logits"].sum().backward()
    fm = FeatureMatrix(cfg).fit(train)
    x = torch.from_numpy(fm.transform(train)[: len(rows)].astype("float32"))
    mlp = pycox_mlp(x.shape[1], cfg.model.n_bins + 1)
    with FlopCounterMode(display=False) as peer:
        mlp(x).sum().backward()
    return float(ours.get_total_flops()), float(peer.get_total_flops())


def time_modalsurv_head(cohort, epochs: int, batch: int, device: str, head: str,
                        bag_pca: int | str | None = "auto") -> list[float]:
    """ModalSurv's own training epochs (``time_modalsurv``'s train-only figure) with another
    survival head: the batched counterpart of :func:`time_mil_loop`."""
    return time_modalsurv(cohort, epochs, batch, device, bag_pca=bag_pca, head=head)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pool-bags", action="store_true",
                    help="both models get each bag as the mean of its tiles (pycox's input):"
                    " the fusion network against the MLP without ModalSurv's tile pass")
    ap.add_argument("--amp", action="store_true",
                    help="also time both models under bfloat16 autocast (train.mixed_precision)")
    ap.add_argument("--tile-dropout", type=float, default=0.0, help="train.tile_dropout")
    ap.add_argument("--mil", type=int, nargs="*", default=[16, 32],
                    help="also time the one-patient-per-step MIL loop with these gradient"
                    " accumulations (CLAM / MCAT / SurvPath style); none: skip it")
    ap.add_argument("--mil-batch", type=int, default=32,
                    help="ModalSurv's batch in the MIL comparison (32: train.batch_size's default)")
    ap.add_argument("--bag-pca", default="auto", type=lambda v: None if v == "none" else v
                    if v == "auto" else int(v),
                    help="preprocess.bag_pca for both models: auto (default), none or a count")
    ap.add_argument("--latent-dim", type=int, default=None,
                    help="ModalSurv's model.latent_dim (default: the method's 128): how the"
                    " ratio falls with a narrower network")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cohort, _ = make_cohort(n=args.n, seed=0)
    mods = pick_modalities(cohort)
    cohort = cohort.select(mods)
    if args.pool_bags:
        cohort = mean_pooled(cohort)
    shapes = ", ".join(f"{m}{list(cohort.features[m].shape[1:])}" for m in mods)
    precisions = [False, True] if args.amp else [False]
    ms: dict[bool, Times] = {amp: ([], []) for amp in precisions}
    pc: dict[bool, Times] = {amp: ([], []) for amp in precisions}
    peaks: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.repeats):
        for amp in precisions:
            runs = (
                (
                    ms[amp],
                    time_modalsurv(cohort, args.epochs, args.batch, args.device,
                                   args.tile_dropout, args.bag_pca, amp=amp,
                                   peak=peaks.setdefault(("ms", amp), []),
                                   latent_dim=args.latent_dim),
                ),
                (
                    pc[amp],
                    time_pycox(cohort, args.epochs, args.batch, args.device, args.bag_pca,
                               amp=amp, peak=peaks.setdefault(("pc", amp), [])),
                ),
            )  # fmt: skip
            for acc, timed in runs:
                for kind, secs in zip(acc, timed):
                    kind.extend(secs[1:])
    floors = {
        "floor: tile embedding matmul alone": time_tile_embedding,
        "floor: tile attention pooling alone": time_attention_pooling,
    }
    floor = {}
    for name, fn in floors.items():
        secs = fn(cohort, args.epochs, args.batch, args.device, args.bag_pca)
        floor[name] = statistics.median(secs[1:] or secs)  # [0.0] without a bag
    med = {
        (who, amp): [statistics.median(s) for s in t]
        for who, times in (("ms", ms), ("pc", pc))
        for amp, t in times.items()
    }
    print(
        f"N={args.n}, batch={args.batch}, epochs={args.epochs} x {args.repeats} runs, "
        f"threads={args.threads}, device={args.device}, tile_dropout={args.tile_dropout}, "
        f"bag_pca={args.bag_pca}, pool_bags={args.pool_bags}, latent_dim={args.latent_dim or 128};"
        f" modalities: {shapes}"
    )
    print(f"{'model':<42}{'train s/ep':>12}{'ratio':>7}{'train+val s/ep':>16}{'ratio':>7}")
    names = {"ms": "ModalSurv cross_attention_gated", "pc": "pycox DeepHitSingle MLP (concat)"}
    for amp in precisions:
        ref = med[("pc", amp)]
        for who in ("ms", "pc"):
            tr, tv = med[(who, amp)]
            name = names[who] + (" bf16" if amp else "")
            print(f"{name:<42}{tr:>12.4f}{tr / ref[0]:>7.2f}{tv:>16.4f}{tv / ref[1]:>7.2f}")
    for name, secs in floor.items():
        print(f"{name:<42}{secs:>12.4f}{secs / med[('pc', False)][0]:>7.2f}")
    met = med[("ms", False)][0] <= 2.0 * med[("pc", False)][0]
    print("target (train): ratio <= 2.00 ->", "met" if met else "NOT met")
    ours, peer = step_flops(cohort, args.batch, args.bag_pca, args.latent_dim)
    time_ratio = med[("ms", False)][0] / med[("pc", False)][0]
    print(f"matmul work per training step (forward + backward): ModalSurv {ours / 1e6:.1f} MFLOP,"
          f" pycox {peer / 1e6:.1f} MFLOP = {ours / peer:.2f}x; time ratio / FLOP ratio"
          f" = {time_ratio / (ours / peer):.2f}")
    if resolve_device(args.device).type == "cuda":
        rows = training_rows(cohort)
        print(f"\non {torch.cuda.get_device_name()} ({rows} training rows; samples/s from the"
              " train-only epoch, peak memory of the whole fit, max over runs):")
        print(f"{'model':<42}{'precision':>10}{'samples/s':>12}{'ratio':>7}{'peak MiB':>10}")
        for amp in precisions:
            for who in ("ms", "pc"):
                rate = rows / med[(who, amp)][0]
                ratio = med[("pc", amp)][0] / med[(who, amp)][0]
                peak = max(peaks[(who, amp)])
                prec = "bf16" if amp else "fp32"
                print(f"{names[who]:<42}{prec:>10}{rate:>12.0f}{ratio:>7.2f}{peak:>10.1f}")
    if args.mil and any(cohort.is_bag(m) for m in cohort.modalities):  # a tile-level peer
        mil_epochs = max(3, args.epochs // 3)
        ours = statistics.median(time_modalsurv_head(cohort, args.epochs, args.mil_batch,
                                                     args.device, "logistic_hazard",
                                                     args.bag_pca)[1:])  # fmt: skip
        print(f"\nthe MIL loop of CLAM / MCAT / SurvPath on the same bags and network (logistic"
              f" hazard head for both; ModalSurv batch {args.mil_batch}, train-only s/epoch):")
        print(f"{'loop':<42}{'s/epoch':>12}{'MIL/ModalSurv':>15}")
        print(f"{'ModalSurv batches':<42}{ours:>12.4f}{1.0:>15.2f}")
        worst = math.inf
        for acc in args.mil:
            mil = statistics.median(time_mil_loop(cohort, mil_epochs, acc, args.device,
                                                  args.bag_pca)[1:])
            worst = min(worst, mil / ours)
            print(f"{f'one patient per step, accumulate {acc}':<42}{mil:>12.4f}{mil / ours:>15.2f}")
        print("target: ModalSurv >= 5x faster per epoch ->", "met" if worst >= 5 else "NOT met")


if __name__ == "__main__":
    main()
