"""FeatureStore (one HDF5 file per modality) vs one ``torch.load`` per patient ``.pt``.

The CHIMERA/TRIDENT habit is a ``.pt`` (or ``.h5``) file per slide, loaded one by one.
This script writes the same bags both ways (default: 1,000 patients × 400–500 tiles ×
768-d float16, i.e. ~0.7 GB each) into a temporary folder, then loads them into the
same padded N × K × D float32 array plus N × K mask, each loader in its own fresh
subprocess (so peak memory, ru_maxrss, is not shared). Each loader runs twice; the
second (warm page cache) run is the one compared. Also shown, for information:
``FeatureStore.to_cohort`` including the Cohort construction.

    python benchmarks/bench_store.py [--patients 1000] [--tiles 500] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _sizes(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(int(k * 0.8), k + 1, size=n)


def create(root: Path, n: int, k: int, d: int) -> float:
    import torch

    from modalsurv.io.store import FeatureStore

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    sizes = _sizes(n, k, 0)
    (root / "pt").mkdir(parents=True)
    bags = {}
    for i, ki in enumerate(sizes):
        x = rng.standard_normal((int(ki), d), dtype=np.float32).astype(np.float16)
        pid = f"P{i:05d}"
        torch.save(torch.from_numpy(x), root / "pt" / f"{pid}.pt")
        bags[pid] = x
    FeatureStore(root / "store").write_many("wsi", bags, encoder="bench", dtype="float16")
    return time.perf_counter() - t0


def _load_pt(root: Path, ids: list[str], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    import torch

    tensors_k = []
    # a first pass for K is what a padded loader needs; torch.load cannot read a shape
    # without loading, so load once and keep the tensors (the usual habit)
    tensors = []
    for pid in ids:
        t = torch.load(root / "pt" / f"{pid}.pt", map_location="cpu", weights_only=True)
        tensors.append(t)
        tensors_k.append(t.shape[0])
    kmax, d = max(tensors_k), tensors[0].shape[1]
    x = np.zeros((len(ids), kmax, d), dtype=dtype)
    mask = np.zeros((len(ids), kmax), dtype=bool)
    for i, t in enumerate(tensors):
        x[i, : t.shape[0]] = t.numpy()
        mask[i, : t.shape[0]] = True
    return x, mask


def _load_pt_streaming(
    root: Path, ids: list[str], kmax: int, d: int
) -> tuple[np.ndarray, np.ndarray]:
    """Peer given K and D up front (no tensor list kept): the fastest .pt habit."""
    import torch

    x = np.zeros((len(ids), kmax, d), dtype=np.float32)
    mask = np.zeros((len(ids), kmax), dtype=bool)
    for i, pid in enumerate(ids):
        t = torch.load(root / "pt" / f"{pid}.pt", map_location="cpu", weights_only=True)
        x[i, : t.shape[0]] = t.numpy()
        mask[i, : t.shape[0]] = True
    return x, mask


def worker(root: Path, how: str, n: int, k: int, d: int) -> None:
    import torch

    from modalsurv.io.store import FeatureStore

    torch.set_num_threads(1)
    ids = [f"P{i:05d}" for i in range(n)]
    kmax = int(_sizes(n, k, 0).max())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, checksum = [], 0.0
    lm = co = None
    for _ in range(3):
        t0 = time.perf_counter()
        if how == "store":
            lm = FeatureStore(root / "store").load("wsi", ids)
            x, mask = lm.x, lm.mask
        elif how == "store_f16":
            lm = FeatureStore(root / "store").load("wsi", ids, dtype=np.float16)
            x, mask = lm.x, lm.mask
        elif how == "pt":
            x, mask = _load_pt(root, ids)
        elif how == "pt_f16":
            x, mask = _load_pt(root, ids, dtype=np.float16)
        elif how == "pt_streaming":
            x, mask = _load_pt_streaming(root, ids, kmax, d)
        elif how == "to_cohort":
            import pandas as pd

            labels = pd.DataFrame({"time": np.ones(n), "event": np.zeros(n)}, index=ids)
            co = FeatureStore(root / "store").to_cohort(labels, ["wsi"])
            x, mask = co.features["wsi"], co.bag_mask["wsi"]
        else:
            raise SystemExit(f"unknown loader {how}")
        times.append(time.perf_counter() - t0)
        checksum = float(x[:, :4, :4].astype(np.float64).sum()) + float(mask.sum())
        # free everything before the next run: a second 1.5 GB array allocated while the
        # first is alive pays fresh page faults and would distort the comparison
        x = mask = lm = co = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"times": times, "peak_mb": peak / 1024, "base_mb": base / 1024, "check": checksum}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--tiles", type=int, default=500)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.root), args.worker, args.patients, args.tiles, args.dim)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        secs = create(tmp, args.patients, args.tiles, args.dim)
        size_store = (tmp / "store" / "wsi.h5").stat().st_size / 2**20
        size_pt = sum(p.stat().st_size for p in (tmp / "pt").iterdir()) / 2**20
        print(
            f"data: {args.patients} patients x <= {args.tiles} tiles x {args.dim} float16;"
            f" created in {secs:.1f} s; store {size_store:.0f} MiB, .pt files {size_pt:.0f} MiB"
        )
        results = {}
        for how in ("store", "pt", "pt_streaming", "store_f16", "pt_f16", "to_cohort"):
            cmd = [sys.executable, __file__, "--worker", how, "--root", str(tmp),
                   "--patients", str(args.patients), "--tiles", str(args.tiles),
                   "--dim", str(args.dim)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[how] = json.loads(out.strip().splitlines()[-1])
        checks = {round(r["check"], 3) for r in results.values()}
        assert len(checks) == 1, f"loaders disagree: {results}"
        print(f"\n{'loader':<44}{'1st s':>8}{'best s':>8}{'peak MiB':>10}{'/ store':>9}")
        labels = {
            "store": "FeatureStore.load (one h5, read_direct)",
            "pt": "torch.load per patient .pt",
            "pt_streaming": "torch.load per .pt, K known up front",
            "store_f16": "FeatureStore.load -> float16 array",
            "pt_f16": "torch.load per .pt -> float16 array",
            "to_cohort": "FeatureStore.to_cohort (+Cohort copy)",
        }
        for how, r in results.items():
            t1, best = r["times"][0], min(r["times"][1:])
            ref = min(results["store_f16" if how.endswith("f16") else "store"]["times"][1:])
            print(
                f"{labels[how]:<44}{t1:>8.2f}{best:>8.2f}{r['peak_mb']:>10.0f}{best / ref:>8.1f}x"
            )
        print(
            "\n1st: first load in a fresh process; best: best of two more (warm page cache)."
            "\n/ store: best time divided by FeatureStore.load's best (same output dtype)."
            "\npeak: ru_maxrss of the loader's own subprocess (includes ~640 MiB of imports)."
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
