"""Tile extraction throughput and memory on synthetic pyramidal slides (2 cores).

Prints two tables:

1. tiles/s for read + tissue filter (no encoder) with the thread pool (workers=2) against a
   plain serial tiffslide ``read_region`` loop over the same tiles (the peer), and with
   the offline ``efficientnet_lite0`` encoder;
2. peak resident memory (``ru_maxrss`` of a fresh subprocess) for streaming every tile of
   two slides 4× apart in area: streaming must keep the ratio well below 4.

Run: ``.venv/bin/python benchmarks/bench_extract.py [--small 4096]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")


def make_slide(path: Path, side: int, mpp: float = 0.25) -> Path:
    """A ``side``² level-0 slide tiled with scikit-image's IHC tissue (3 levels, JPEG)."""
    import tifffile
    from skimage import data

    tissue = data.immunohistochemistry()
    reps = -(-side // tissue.shape[0])
    img = np.tile(tissue, (reps, reps, 1))[:side, :side]
    img[: side // 8] = 245  # a band of background so the tissue filter has work to do
    opts = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg",
            "resolutionunit": "CENTIMETER"}  # fmt: skip
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(img, subifds=2, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for lv in (1, 2):
            f = 2**lv
            tif.write(img[::f, ::f], subfiletype=1, resolution=(1e4 / (mpp * f),) * 2, **opts)
    return path


def child(path: str, mode: str) -> None:
    """Stream every tile (read only) or ≤ 500 tiles through the encoder; print peak RSS."""
    import resource

    import torch

    from modalsurv.features import wsi

    torch.set_num_threads(2)
    with wsi.Slide(path) as s:
        plan = wsi.plan_tiles(s, wsi.tissue_mask(s), mpp=0.5, tile_size=224,
                              max_tiles=None if mode == "read" else 500)  # fmt: skip
        n = 0
        if mode == "read":
            for b, _ in wsi.iter_tile_batches(s, plan, batch_size=32, workers=2):
                n += len(b)
        else:
            from modalsurv.features.encoders import get_tile_encoder

            e = get_tile_encoder("efficientnet_lite0")
            for b, _ in wsi.iter_tile_batches(s, plan, batch_size=32, workers=2):
                n += len(e.encode(b))
    # ru_maxrss survives fork+exec on Linux (it starts at the parent's peak), so the
    # per-process high-water mark VmHWM (reset by exec) is the figure compared
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM"))  # fmt: skip
    print(json.dumps({"tiles": n, "rss_mb": hwm / 1024,
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def throughput(path: Path, n_tiles: int) -> list[tuple[str, int, float]]:
    import torch

    from modalsurv.features import wsi
    from modalsurv.features.encoders import get_tile_encoder

    torch.set_num_threads(2)
    rows = []
    with wsi.Slide(path) as s:
        t0 = time.perf_counter()
        plan = wsi.plan_tiles(s, wsi.tissue_mask(s), mpp=0.5, tile_size=224, max_tiles=n_tiles)
        t_plan = time.perf_counter() - t0
        k = len(plan.coords)
        # peer: a plain serial tiffslide loop over the same tiles
        import tiffslide

        ts = tiffslide.TiffSlide(str(path))
        t0 = time.perf_counter()
        for x, y in plan.coords:
            np.asarray(ts.read_region((int(x), int(y)), plan.level, (224, 224)))
        rows.append(("tiffslide serial read_region (peer)", k, k / (time.perf_counter() - t0)))
        ts.close()
        for workers in (1, 2):
            t0 = time.perf_counter()
            n = sum(len(b) for b, _ in wsi.iter_tile_batches(s, plan, 32, workers))
            dt = time.perf_counter() - t0
            rows.append((f"modalsurv read (batched), workers={workers}", n, n / dt))
            rows.append((f"  + tissue mask & grid ({t_plan:.2f} s), workers={workers}", n,
                         n / (dt + t_plan)))  # fmt: skip
        e = get_tile_encoder("efficientnet_lite0")
        t0 = time.perf_counter()
        n = sum(len(e.encode(b)) for b, _ in wsi.iter_tile_batches(s, plan, 32, 2))
        dt = time.perf_counter() - t0 + t_plan
        rows.append(("modalsurv + efficientnet_lite0, workers=2", n, n / dt))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=4096, help="level-0 side of the small slide")
    ap.add_argument("--tiles", type=int, default=256, help="tiles for the throughput table")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as d:
        small = make_slide(Path(d) / "small.tif", args.small)
        large = make_slide(Path(d) / "large.tif", args.small * 2)
        print(f"Throughput ({args.small * 2}² slide at 0.25 µm/px, 224-px tiles at 0.5 µm/px,"
              f" 2 threads)")  # fmt: skip
        rows = throughput(large, args.tiles)
        peer = rows[0][2]
        print(f"{'pipeline':48s} {'tiles':>6s} {'tiles/s':>9s} {'vs peer':>8s}")
        for name, n, rate in rows:
            print(f"{name:48s} {n:6d} {rate:9.1f} {rate / peer:7.2f}x")
        print("\nPeak memory (fresh subprocess, ru_maxrss)")
        print(f"{'mode':10s} {'slide':>12s} {'tiles':>6s} {'VmHWM MB':>9s} {'ru_maxrss MB':>13s}")
        for mode in ("read", "encode"):
            peaks = []
            for p, side in ((small, args.small), (large, args.small * 2)):
                out = subprocess.run([sys.executable, __file__, "--child", str(p), mode],
                                     capture_output=True, text=True, check=True)  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                peaks.append(r["rss_mb"])
                print(f"{mode:10s} {f'{side}²':>12s} {r['tiles']:6d} {r['rss_mb']:9.0f}"
                      f" {r['ru_maxrss_mb']:13.0f}")
            print(f"{mode:10s} {'4x area ->':>12s} {'':6s} {peaks[1] / peaks[0]:8.2f}x memory")


if __name__ == "__main__":
    main()
