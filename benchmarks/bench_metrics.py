"""Harrell's C: modalsurv against lifelines, scikit-survival and torchsurv, one run.

Prints, per n, the median seconds of each implementation, each peer's time divided by
ours (higher = we are faster), and our time over the floor of two ``np.argsort`` calls
(sorting time and risk, which any O(n log n) method needs). Values are checked against
scikit-survival where it ran. A peer is skipped at a size where its single call is
predicted (from its growth over the smaller sizes) to exceed ``--budget`` seconds.

    python benchmarks/bench_metrics.py [--sizes 1000 10000 100000 1000000] [--repeats 5]

Targets: n = 1e5, >= 40x faster than lifelines.utils.concordance_index; n = 1e6, under 6x
the two-argsort floor.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np

from modalsurv.survival.metrics import concordance_index


def _peers() -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]:
    peers: dict[str, Callable] = {}
    try:
        from lifelines.utils import concordance_index as ll

        # lifelines: higher score = longer survival, so pass -risk
        peers["lifelines"] = lambda t, e, r: ll(t, -r, e)
    except ImportError:
        pass
    try:
        from sksurv.metrics import concordance_index_censored as sk

        peers["sksurv"] = lambda t, e, r: sk(e, t, r)[0]
    except ImportError:
        pass
    try:
        import torch
        from torchsurv.metrics.cindex import ConcordanceIndex

        def ts(t, e, r):
            return float(ConcordanceIndex()(torch.from_numpy(r), torch.from_numpy(e),
                                            torch.from_numpy(t)))

        peers["torchsurv"] = ts
    except ImportError:
        pass
    return peers


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _two_argsorts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.argsort(a), np.argsort(b)


def _predict(history: list[tuple[int, float]], n: int) -> float:
    """Extrapolate a peer's time to n from its last two sizes (quadratic if only one)."""
    if not history:
        return 0.0
    (n1, t1) = history[-1]
    p = 2.0
    if len(history) >= 2:
        n0, t0 = history[-2]
        p = max(1.0, np.log(t1 / t0) / np.log(n1 / n0)) if t0 > 0 else 2.0
    return t1 * (n / n1) ** p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0, help="max seconds for one peer call")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    peers = _peers()
    history: dict[str, list[tuple[int, float]]] = {k: [] for k in peers}
    rng = np.random.default_rng(args.seed)
    names = list(peers)
    header = f"{'n':>9} {'ours_s':>9} {'argsort2_s':>10} {'ours/floor':>10}"
    for k in names:
        header += f" {k + '_s':>13} {k + '/ours':>15}"
    print(header)
    for n in args.sizes:
        risk = rng.normal(size=n)
        time_ = rng.exponential(np.exp(-risk))
        event = rng.random(n) < 0.6
        data = (time_, event, risk)
        ours, c_ours = _median_time(partial(concordance_index, *data), args.repeats)
        floor, _ = _median_time(partial(_two_argsorts, time_, risk), args.repeats)
        row = f"{n:>9} {ours:>9.4f} {floor:>10.4f} {ours / floor:>10.2f}"
        for k in names:
            predicted = _predict(history[k], n)
            if predicted > args.budget:
                row += f" {'skip(~' + format(predicted, '.0f') + 's)':>13} {'-':>15}"
                continue
            reps = args.repeats if predicted * args.repeats < args.budget else 1
            try:
                t_peer, c_peer = _median_time(partial(peers[k], *data), reps)
            except (MemoryError, RuntimeError) as exc:
                row += f" {'fail':>13} {type(exc).__name__:>15}"
                history[k].append((n, float("inf")))
                continue
            history[k].append((n, t_peer))
            if k == "sksurv" and abs(float(c_peer) - c_ours) > 1e-12:
                raise AssertionError(f"C differs from sksurv at n={n}: {c_peer} vs {c_ours}")
            row += f" {t_peer:>13.4f} {t_peer / ours:>14.1f}x"
        print(row, flush=True)


if __name__ == "__main__":
    main()
