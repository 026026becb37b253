"""FeatureStore (one packed HDF5 file per modality) vs one ``torch.load`` per patient ``.pt``.

The CHIMERA/TRIDENT habit is a ``.pt`` (or ``.h5``) file per slide, loaded one by one.
This script writes the same bags both ways (default: 1,000 patients × 400–500 tiles ×
768-d float16, ~0.7 GB each way) into a temporary folder, packs the store
(``FeatureStore.pack``, as extraction does at its end; its time is printed as a one-off
cost), then loads all of them as a padded N × K × D array (+ N × K mask), each loader in
its own fresh subprocess so that its peak memory (VmHWM) is its own.

Fairness: the buffer loaders fill one preallocated, already-touched output array
(allocating a fresh 1.5 GB array costs the same for every loader and, on a VM, page faults
dominate it), and every cast float16 → float32 is done by torch. Every timed section ends
by touching every 4 KiB page of the result, so a lazy memory map cannot win by not
reading. Each loader runs three times: the first after evicting its files from the page
cache (``posix_fadvise(DONTNEED)`` on our own files only: a cold read), then twice warm.

    python benchmarks/bench_store.py [--patients 1000] [--tiles 500] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# loader → (label, the torch.load row it is compared with)
ROWS = {
    "store_view": ("FeatureStore.load (memmap view, float16)", "pt_f16"),
    "store_f16": ("FeatureStore.load(out=float16 buffer)", "pt_f16"),
    "store": ("FeatureStore.load(out=float32 buffer)", "pt"),
    "pt_f16": ("torch.load per .pt into float16 buffer", None),
    "pt": ("torch.load per .pt into float32 buffer", None),
    "floor": ("floor: copy+cast from RAM, float32 buffer", "pt"),
    "to_cohort": ("cohort_from_store (+Cohort checks)", "pt"),
}


def _sizes(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(int(k * 0.8), k + 1, size=n)


def create(root: Path, n: int, k: int, d: int) -> tuple[float, float, float]:
    """Write the .pt files and the store; return (write s, store MiB before pack, pack s)."""
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
    store = FeatureStore(root / "store")
    store.write_many("wsi", bags, encoder="bench", dtype="float16")
    secs = time.perf_counter() - t0
    mib = store.path("wsi").stat().st_size / 2**20
    t0 = time.perf_counter()
    store.pack("wsi")
    return secs, mib, time.perf_counter() - t0


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


def touch(x: np.ndarray) -> float:
    """Read one element of every 4 KiB page of ``x`` (C-contiguous): forces a lazy map
    to actually read the data, at the same (small) cost for every loader."""
    return float(x.reshape(-1)[:: 4096 // x.itemsize].sum(dtype=np.float64))


def evict(paths: list[Path]) -> None:
    """Drop these files (ours only) from the page cache, so the next read hits the disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def vm_hwm_mib() -> float:
    """Peak resident set of this process (includes mapped file pages it touched)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(root: Path, how: str, n: int, k: int, d: int) -> dict:
    import pandas as pd
    import torch

    from modalsurv.io.store import FeatureStore

    torch.set_num_threads(1)
    ids = [f"P{i:05d}" for i in range(n)]
    kmax = int(_sizes(n, k).max())
    dtype = np.float16 if how.endswith("f16") or how == "store_view" else np.float32
    buf = None
    if how in ("store", "pt", "store_f16", "pt_f16", "floor"):
        buf = np.ones((n, kmax, d), dtype=dtype)  # allocated and touched, outside timing
    store = FeatureStore(root / "store")
    uses_pt = how.startswith("pt")
    in_ram = [torch.from_numpy(store.read("wsi", p)[0]) for p in ids] if how == "floor" else []
    evict(sorted((root / "pt").iterdir()) if uses_pt else [store.path("wsi")])
    base = vm_hwm_mib()
    times, check, touched = [], 0.0, 0.0
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
            from modalsurv.io.store_read import cohort_from_store

            co = cohort_from_store(store, labels, ["wsi"])
            x, mask = co.features["wsi"], co.bag_mask["wsi"]
        else:
            lm = store.load("wsi", ids, out=buf, dtype=dtype)
            x, mask = lm.x, lm.mask
            assert (how == "store_view") == (not x.flags.writeable), "not the intended path"
        touched = touch(x)
        times.append(time.perf_counter() - t0)
        check = float(
            x[:, :4, :4].astype(np.float64).sum() + mask.sum() + x[:, -1].astype(np.float64).sum()
        )
        x = mask = lm = co = None  # free (or unmap) before the next run
    return {
        "times": times,
        "peak_mb": vm_hwm_mib(),
        "base_mb": base,
        "check": round(check, 3),
        "touched": touched,
    }


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
        secs, mib_unpacked, pack_s = create(tmp, *size)
        mib_store = (tmp / "store" / "wsi.h5").stat().st_size / 2**20
        mib_pt = sum(p.stat().st_size for p in (tmp / "pt").iterdir()) / 2**20
        print(
            f"data: {args.patients} patients x {int(args.tiles * 0.8)}-{args.tiles} tiles x"
            f" {args.dim} float16; written in {secs:.1f} s; .pt {mib_pt:.0f} MiB in"
            f" {args.patients} files; store {mib_unpacked:.0f} MiB in 1 file, packed in"
            f" {pack_s:.1f} s (one-off, at the end of extraction) to {mib_store:.0f} MiB"
        )
        res = {}
        for how in ROWS:
            cmd = [sys.executable, __file__, "--worker", how, "--root", str(tmp)]
            cmd += ["--patients", str(args.patients), "--tiles", str(args.tiles)]
            cmd += ["--dim", str(args.dim)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[how] = json.loads(out.strip().splitlines()[-1])
        assert len({r["check"] for r in res.values()}) == 1, f"loaders disagree: {res}"
        print(
            f"\n{'loader':<43}{'cold s':>8}{'warm s':>8}{'peak MiB':>10}{'+load MiB':>11}"
            f"{'torch.load/this':>17}"
        )
        for how, (label, ref_how) in ROWS.items():
            r = res[how]
            cold, warm = r["times"][0], min(r["times"][1:])
            ratio = ""
            if ref_how is not None:
                ref = res[ref_how]["times"]
                ratio = f"{ref[0] / cold:.1f}x / {min(ref[1:]) / warm:.1f}x"
            grow = r["peak_mb"] - r["base_mb"]
            row = f"{label:<43}{cold:>8.2f}{warm:>8.2f}{r['peak_mb']:>10.0f}{grow:>11.0f}"
            print(f"{row}{ratio:>17}".rstrip())
        print(
            "\ncold: first run, files evicted from the page cache; warm: best of 2 more runs."
            " Every timed run ends by touching every 4 KiB page of the result."
            "\ntorch.load/this: time of the matching torch.load row (same output dtype) divided"
            " by this row's, cold / warm (floor and to_cohort: vs the float32 row)."
            "\nfloor: the same padded copy and cast from bags already in RAM (no I/O, no parsing)."
            "\npeak: VmHWM of the loader's own subprocess (imports, the preallocated buffer and"
            " touched pages of a memory map included); +load: peak minus VmHWM just before"
            " the first load."
            "\nto_cohort allocates its float32 arrays (the Cohort adopts them, no second copy): on a"
            " VM the first touch of fresh memory in a new process dominates its cold time."
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
