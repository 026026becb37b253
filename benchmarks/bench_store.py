"""FeatureStore (one HDF5 file per modality) vs one ``torch.load`` per patient ``.pt``.

The CHIMERA/TRIDENT habit is a ``.pt`` (or ``.h5``) file per slide, loaded one by one.
This script writes the same bags both ways (default: 1,000 patients × 400–500 tiles ×
768-d float16, ~0.7 GB each way) into a temporary folder, then loads all of them into
the same padded N × K × D array (+ N × K mask), each loader in its own fresh subprocess
so that peak memory (ru_maxrss) is its own.

Fairness: both loaders fill one preallocated, already-touched output array (allocating
a fresh 1.5 GB array costs the same for both and, on a VM, page faults dominate it) and
both cast float16 → float32 with torch. Each loader runs three times: the first after
evicting its files from the page cache (``posix_fadvise(DONTNEED)`` on our own files
only: a cold read), then twice warm. Also shown, for information: ``FeatureStore.load``
allocating its own array, and ``to_cohort`` including the Cohort constructor's copy.

    python benchmarks/bench_store.py [--patients 1000] [--tiles 500] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = {
    "store": "FeatureStore.load(out=buffer)",
    "pt": "torch.load per .pt into buffer",
    "store_f16": "FeatureStore.load(out=float16 buffer)",
    "pt_f16": "torch.load per .pt into float16 buffer",
    "floor": "floor: copy+cast from RAM into buffer",
    "store_alloc": "FeatureStore.load (allocates)",
    "to_cohort": "FeatureStore.to_cohort (+Cohort copy)",
}


def _sizes(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(int(k * 0.8), k + 1, size=n)


def create(root: Path, n: int, k: int, d: int) -> float:
    import torch

    from modalsurv.io.store import FeatureStore

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    (root / "pt").mkdir(parents=True)
    bags = {}
    for i, ki in enumerate(_sizes(n, k)):
        x = rng.standard_normal((int(ki), d), dtype=np.float32).astype(np.float16)
        pid = f"P{i:05d}"
        torch.save(torch.from_numpy(x), root / "pt" / f"{pid}.pt")
        bags[pid] = x
    FeatureStore(root / "store").write_many("wsi", bags, encoder="bench", dtype="float16")
    return time.perf_counter() - t0


def load_pt(root: Path, ids: list[str], out: np.ndarray) -> np.ndarray:
    """The per-file habit, into the same buffer (padding zeroed like the store does)."""
    import torch

    mask = np.zeros(out.shape[:2], dtype=bool)
    xt = torch.from_numpy(out)
    for i, pid in enumerate(ids):
        t = torch.load(root / "pt" / f"{pid}.pt", map_location="cpu", weights_only=True)
        k = t.shape[0]
        xt[i, :k].copy_(t)
        out[i, k:] = 0
        mask[i, :k] = True
    return mask


def evict(paths: list[Path]) -> None:
    """Drop these files (ours only) from the page cache, so the next read hits the disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def worker(root: Path, how: str, n: int, k: int, d: int) -> dict:
    import pandas as pd
    import torch

    from modalsurv.io.store import FeatureStore

    torch.set_num_threads(1)
    ids = [f"P{i:05d}" for i in range(n)]
    kmax = int(_sizes(n, k).max())
    dtype = np.float16 if how.endswith("f16") else np.float32
    buf = None
    if how in ("store", "pt", "store_f16", "pt_f16", "floor"):
        buf = np.ones((n, kmax, d), dtype=dtype)  # allocated and touched, outside timing
    store = FeatureStore(root / "store")
    uses_pt = how.startswith("pt")
    evict(sorted((root / "pt").iterdir()) if uses_pt else [store.path("wsi")])
    in_ram = [torch.from_numpy(store.read("wsi", p)[0]) for p in ids] if how == "floor" else []
    times, check = [], 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        if uses_pt:
            mask = load_pt(root, ids, buf)
            x = buf
        elif how == "floor":  # no file access at all: the least any loader must do
            xt = torch.from_numpy(buf)
            mask = np.zeros(buf.shape[:2], dtype=bool)
            for i, t in enumerate(in_ram):
                xt[i, : t.shape[0]].copy_(t)
                buf[i, t.shape[0] :] = 0
                mask[i, : t.shape[0]] = True
            x = buf
        elif how == "to_cohort":
            labels = pd.DataFrame({"time": np.ones(n), "event": np.zeros(n)}, index=ids)
            co = store.to_cohort(labels, ["wsi"])
            x, mask = co.features["wsi"], co.bag_mask["wsi"]
        else:
            lm = store.load("wsi", ids, out=buf, dtype=dtype)
            x, mask = lm.x, lm.mask
        times.append(time.perf_counter() - t0)
        check = float(
            x[:, :4, :4].astype(np.float64).sum() + mask.sum() + x[:, -1].astype(np.float64).sum()
        )
        x = mask = lm = co = None  # free before the next run
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "peak_mb": peak, "check": round(check, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--tiles", type=int, default=500)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    size = (args.patients, args.tiles, args.dim)
    if args.worker:
        print(json.dumps(worker(Path(args.root), args.worker, *size)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        secs = create(tmp, *size)
        mib_store = (tmp / "store" / "wsi.h5").stat().st_size / 2**20
        mib_pt = sum(p.stat().st_size for p in (tmp / "pt").iterdir()) / 2**20
        print(
            f"data: {args.patients} patients x {int(args.tiles * 0.8)}-{args.tiles} tiles x"
            f" {args.dim} float16; written in {secs:.1f} s;"
            f" store {mib_store:.0f} MiB in 1 file, .pt {mib_pt:.0f} MiB in"
            f" {args.patients} files"
        )
        res = {}
        for how in LABELS:
            cmd = [sys.executable, __file__, "--worker", how, "--root", str(tmp)]
            cmd += ["--patients", str(args.patients), "--tiles", str(args.tiles)]
            cmd += ["--dim", str(args.dim)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[how] = json.loads(out.strip().splitlines()[-1])
        assert len({r["check"] for r in res.values()}) == 1, f"loaders disagree: {res}"
        print(f"\n{'loader':<42}{'cold s':>8}{'warm s':>8}{'peak MiB':>10}{'pt/store':>10}")
        for how, r in res.items():
            cold, warm = r["times"][0], min(r["times"][1:])
            ratio = ""
            if how.startswith("pt"):
                ref = res[how.replace("pt", "store")]["times"]
                ratio = f"{cold / ref[0]:.1f}x/{warm / min(ref[1:]):.1f}x"
            print(f"{LABELS[how]:<42}{cold:>8.2f}{warm:>8.2f}{r['peak_mb']:>10.0f}{ratio:>10}")
        print(
            "\ncold: first run, files evicted from the page cache; warm: best of 2 more runs."
            "\npt/store: torch.load time divided by FeatureStore time, cold/warm, same output."
            "\nfloor: the same padded copy and cast from bags already in RAM (no I/O, no parsing)."
            "\npeak: ru_maxrss of the loader's own subprocess (includes ~640 MiB of imports)."
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
