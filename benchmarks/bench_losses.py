"""DeepHit loss forward+backward: modalsurv against pycox (same value asserted) and, for
scale, torchsurv's Cox partial likelihood, measured in one run.

    python benchmarks/bench_losses.py [--batches 64 256 1024 4096] [--bins 30] [--repeats 20]

Targets at batch 4096: >= 100x faster than pycox's DeepHitSingleLoss (whose rank term
builds B x B matrices, plus ``pair_rank_mat`` to form the rank matrix, which is part of
using it; the loss alone, with a precomputed rank matrix, is shown too), and within 3x of torchsurv's Cox loss.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from modalsurv.survival.losses import deephit_loss


def _median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _bench_batch(b: int, bins: int, repeats: int, g: torch.Generator, pycox_loss: Callable,
                 pair_rank_mat: Callable, neg_partial_log_likelihood: Callable) -> None:
    logits = torch.randn(b, bins, generator=g, requires_grad=True)
    idx = torch.randint(0, bins, (b,), generator=g)
    event = (torch.rand(b, generator=g) < 0.6).float()
    time_ = torch.rand(b, generator=g)
    log_hz = torch.randn(b, generator=g, requires_grad=True)
    rank = torch.from_numpy(pair_rank_mat(idx.numpy(), event.numpy()))

    def ours():
        deephit_loss(logits, idx, event, alpha=0.2, sigma=0.1).backward()

    def pycox():
        rank = torch.from_numpy(pair_rank_mat(idx.numpy(), event.numpy()))
        pycox_loss(logits, idx, event, rank).backward()

    def pycox_loss_only():
        pycox_loss(logits, idx, event, rank).backward()

    def cox():
        neg_partial_log_likelihood(log_hz, event.bool(), time_).backward()

    ref = float(pycox_loss(logits, idx, event, rank))
    got = float(deephit_loss(logits, idx, event, alpha=0.2, sigma=0.1))
    diff = abs(ref - got)
    assert diff <= 1e-5 * max(1.0, abs(ref)), f"batch {b}: pycox {ref} vs ours {got}"
    t_ours = _median(ours, repeats)
    t_pycox = _median(pycox, max(3, repeats // 4))
    t_pycox_only = _median(pycox_loss_only, max(3, repeats // 4))
    t_cox = _median(cox, repeats)
    print(f"{b:>6} {t_ours * 1e3:>9.3f} {t_pycox * 1e3:>10.2f} {t_pycox / t_ours:>10.1f}x "
          f"{t_pycox_only * 1e3:>19.2f} {t_pycox_only / t_ours:>7.1f}x "
          f"{t_cox * 1e3:>17.3f} {t_ours / t_cox:>8.2f}x {diff:>9.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--bins", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    from pycox.models.data import pair_rank_mat
    from pycox.models.loss import DeepHitSingleLoss
    from torchsurv.loss.cox import neg_partial_log_likelihood

    pycox_loss = DeepHitSingleLoss(alpha=0.2, sigma=0.1)
    g = torch.Generator().manual_seed(0)
    print(f"{'batch':>6} {'ours_ms':>9} {'pycox_ms':>10} {'pycox/ours':>11} "
          f"{'pycox_loss_only_ms':>19} {'ratio':>8} "
          f"{'torchsurv_cox_ms':>17} {'ours/cox':>9} {'|diff|':>9}")
    for b in args.batches:
        _bench_batch(b, args.bins, args.repeats, g, pycox_loss, pair_rank_mat,
                     neg_partial_log_likelihood)


if __name__ == "__main__":
    main()
