"""Fine-tuning inside ModalSurv: throughput against the bare encoder, and what it buys.

Part ``speed`` (per preset, shrunken so it runs on 2 CPU cores; ``--presets``):

* extraction: tiles/s of ``TileEncoder.encode`` (uint8 tiles → preprocessing → network,
  what ``modalsurv extract`` runs) against the same network called directly on tensors
  already preprocessed (the peer: timm / the preset tower, inference mode);
* a fine-tuning step (``lora`` and ``last_k``): the ``nn.encoder_adapter`` adapter in
  training mode, called as ModalSurvNet calls it (seeded tile subsets read from an image
  cache on disk, preprocessing, forward, the fitted map, put into the bag), then backward
  and an AdamW step, against the same network set up the same way (peft LoRA or the last
  k blocks trainable) on preprocessed tensors in memory. ``io_share`` is what the
  pipeline adds before the network, in units of the peer's time: the cache read of the
  same tiles and their uint8 → normalised-tensor preprocessing (extraction: the
  preprocessing). The pipeline may be slower than the peer by that and no more
  (``ratio - io`` ≈ 1). Gradient checkpointing is off for the comparison and timed in
  its own row. Memory: the activations autograd keeps for one step (every saved tensor,
  parameters excluded; ``saved_tensors_hooks``) for ours and the peer, next to the
  adapter's own estimate (``memory_estimate``: activations, and in total with weights,
  gradients and AdamW state).
* MedicalNet ResNet-10 on (16, 32, 32) volumes: the same two comparisons (``last_stage``).

Times are CPU seconds of the process (``time.process_time``: the machine is shared, and
the wall clock would time the neighbours too), medians over ``--repeats`` alternating
runs (ours, peer, ours, ...); throughputs are per CPU second.

Part ``accuracy``: a synthetic CHIMERA task-1 folder with real slides (``write_chimera``:
the share of high-grade tissue rises with the true WSI risk), extracted with a tiny
random-init ViT and the tile cache, then the grid ``encoder: [frozen, finetune_last,
lora]`` on the same 5 outer folds (WSI alone, so the encoder is the only thing that
changes): Harrell's C per setting, the paired difference to frozen (corrected resampled
t-test) and the wall time of each trial.

    nice -n 10 .venv/bin/python benchmarks/bench_finetune.py [--part speed|accuracy|all]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch

# preset → architecture keywords shrinking it (same family, same forward)
SHRINK = {
    "uni": {"img_size": 64, "patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 3},
    "virchow2": {"img_size": 64, "patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 3,
                 "mlp_ratio": 2.0},
    "phikon_v2": {"img_size": 64, "patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 3},
    "conch_v1_5": {"img_size": 64, "patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 3,
                   "pool_dim": 64, "pool_heads": 2, "input_size": 64},
}  # fmt: skip


class SavedBytes:
    """MiB of the tensors autograd keeps for the backward pass during a block (the
    activations; parameters it saves are not counted), each storage once."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.skip = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
        self.seen: dict[int, int] = {}

    def __enter__(self) -> SavedBytes:
        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            if st.data_ptr() not in self.skip:
                self.seen[st.data_ptr()] = st.nbytes()
            return t

        self.ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)
        self.mib = sum(self.seen.values()) / 2**20


def _median_pair(ours: Any, peer: Any, repeats: int) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(peer())
    return statistics.median(a), statistics.median(b)


def _timed(fn: Any, n: int) -> float:
    """CPU seconds of this process per call: on a machine shared with other work the
    wall clock measures the neighbours as much as the code; CPU time does not."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


# ---------------------------------------------------------------------------- speed
def _tile_cache(root: Path, n_patients: int, k: int, side: int) -> Any:
    from modalsurv.features.tile_cache import ImageCache

    rng = np.random.default_rng(0)
    cache = ImageCache(root)
    for i in range(n_patients):
        tiles = rng.integers(0, 256, (k, side, side, 3), dtype=np.uint8)
        cache.write_tiles(f"P{i}", tiles, np.zeros((k, 2), np.int64), "-")
    return cache


def _bag_cohort(n: int, k: int, d: int) -> Any:
    from modalsurv.cohort import Cohort

    return Cohort([f"P{i}" for i in range(n)], np.ones(n), np.zeros(n, bool),
                  features={"wsi": np.zeros((n, k, d), np.float32)})  # fmt: skip


def _finetune_cfg(mode: str, enc_: str = "wsi", **kw: Any) -> Any:
    from modalsurv.config import FinetuneConfig

    return FinetuneConfig(encoder=enc_, mode=mode, grad_checkpointing=kw.pop("ckpt", False),
                          tiles_per_step=kw.pop("tps", 8), lr=1e-4, last_k=2, **kw)  # fmt: skip


def speed_tiles(preset: str, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    from modalsurv.features import encoders as enc

    rows = []
    kw = SHRINK[preset]
    side = kw.get("input_size", kw["img_size"])
    n_pat, k, batch = 16, 32, 64
    cache = _tile_cache(tmp / preset, n_pat, k, side)
    tiles = cache.tiles("P0")
    # ---- extraction
    te = enc.get_tile_encoder(preset, None, **kw)
    x = te.preprocess(tiles)

    def ours_extract() -> float:
        return _timed(lambda: te.encode(tiles), 3)

    def peer_extract() -> float:
        with torch.inference_mode():
            return _timed(lambda: te._forward(x), 3)

    ours_extract(), peer_extract()  # warm-up
    o, p = _median_pair(ours_extract, peer_extract, repeats)
    prep = statistics.median(_timed(lambda: te.preprocess(tiles), 3) for _ in range(repeats))
    rows.append({"preset": preset, "what": "extract (frozen)", "ours_tiles_s": k / o,
                 "peer_tiles_s": k / p, "ratio": o / p, "io_share": prep / p})  # fmt: skip
    # ---- fine-tuning steps
    cohort = _bag_cohort(n_pat, k, te.dim)
    for mode, ckpt in (("lora", False), ("lora", True), ("last_k", False)):
        rows.append(_tile_step(preset, kw, mode, ckpt, cache, cohort, tiles, repeats, batch))
    return rows


def _tile_step(preset: str, kw: dict[str, Any], mode: str, ckpt: bool, cache: Any, cohort: Any,
               tiles: np.ndarray, repeats: int, batch: int) -> dict[str, Any]:  # fmt: skip
    """One fine-tuning step of ours and of the peer (see module docstring)."""
    from modalsurv.features import encoders as enc
    from modalsurv.features import presets as ps
    from modalsurv.nn.encoder_adapter import AffineMap, TileAdapter, memory_estimate
    from modalsurv.train.finetune import Feed

    per_bag, k = batch // 8, tiles.shape[0]
    cfg = _finetune_cfg(mode, ckpt=ckpt, tps=per_bag)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = enc.get_tile_encoder(preset, None, **kw)
    d = built.dim
    ad = TileAdapter(built, AffineMap(np.zeros(d), np.ones(d)), cfg, seed=0).train()
    feed = Feed("wsi", 0)
    rows = torch.from_numpy(feed.register(cohort, cache))[:8]
    ad.feed = feed
    feats, mask = torch.zeros(8, k, d), torch.ones(8, k, dtype=torch.bool)
    opt = torch.optim.AdamW(ad.trainable_parameters(), lr=1e-4)

    def ours_one() -> None:
        opt.zero_grad(set_to_none=True)
        ad(feats, mask, rows).square().mean().backward()
        opt.step()

    # the peer: the same network, set up the same way, on preprocessed tensors
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bare = ps.build(preset, {k2: v for k2, v in kw.items() if k2 != "input_size"})
    net, fwd = bare.model, bare.forward
    for prm in net.parameters():
        prm.requires_grad_(mode == "last_k")
    if mode == "lora":
        import peft

        peft.inject_adapter_in_model(peft.LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
            target_modules=list(cfg.lora_targets)), net)  # fmt: skip
    else:
        trunk = getattr(net, "trunk", net)
        depth = len(trunk.blocks)
        for name, prm in trunk.named_parameters():
            head = name.split(".")
            if name.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token",
                                "norm_pre.", "mask_token")) or (
                    head[0] == "blocks" and int(head[1]) < depth - cfg.last_k):  # fmt: skip
                prm.requires_grad_(False)
    net.eval()
    popt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=1e-4)
    xb = ad.preprocess(np.concatenate([tiles[:per_bag]] * 8), torch.device("cpu"))

    def peer_one() -> None:
        popt.zero_grad(set_to_none=True)
        fwd(xb).square().mean().backward()
        popt.step()

    sel = [np.sort(np.random.default_rng(i).choice(k, per_bag, replace=False)) for i in range(8)]
    ours_one(), peer_one()
    o, p = _median_pair(lambda: _timed(ours_one, 2), lambda: _timed(peer_one, 2), repeats)
    def read_and_prepare() -> None:
        ad.preprocess(np.concatenate(feed.tiles(list(range(8)), sel)), torch.device("cpu"))

    t_io = statistics.median(_timed(read_and_prepare, 2) for _ in range(repeats))
    est = memory_estimate(ad, xb[:1], batch)
    with SavedBytes(ad) as mem_o:
        ours_one()
    with SavedBytes(net) as mem_p:
        peer_one()
    return {"preset": preset, "what": f"step {mode}" + (" +ckpt" if ckpt else ""),
            "ours_tiles_s": batch / o, "peer_tiles_s": batch / p, "ratio": o / p,
            "io_share": t_io / p, "act_mib_ours": mem_o.mib, "act_mib_peer": mem_p.mib,
            "est_act_mib": est["activations"], "est_total_mib": est["total"]}  # fmt: skip


def speed_volumes(repeats: int, tmp: Path) -> list[dict[str, Any]]:
    from modalsurv.cohort import Cohort
    from modalsurv.features import encoders as enc
    from modalsurv.features.tile_cache import ImageCache
    from modalsurv.nn.encoder_adapter import AffineMap, VolumeAdapter, memory_estimate
    from modalsurv.train.finetune import Feed

    size, s, b = (16, 32, 32), 3, 4
    cache = ImageCache(tmp / "mri")
    rng = np.random.default_rng(0)
    for i in range(b):
        cache.write_volumes(f"P{i}", rng.normal(size=(s, *size)).astype(np.float32), "-")
    ve = enc.get_volume_encoder("medicalnet_resnet10")
    vols = np.stack([cache.volumes(f"P{i}") for i in range(b)])
    xv = torch.from_numpy(vols.reshape(b * s, 1, *size))

    def ours_x() -> float:
        return _timed(lambda: ve.encode(vols.reshape(b * s, 1, *size)), 2)

    def peer_x() -> float:
        with torch.inference_mode():
            return _timed(lambda: ve.model(xv), 2)

    ours_x(), peer_x()
    o, p = _median_pair(ours_x, peer_x, repeats)
    rows = [{"preset": "medicalnet_resnet10", "what": "extract (frozen)",
             "ours_tiles_s": b * s / o, "peer_tiles_s": b * s / p, "ratio": o / p,
             "io_share": 0.0}]  # fmt: skip
    d = ve.dim * s
    cohort = Cohort([f"P{i}" for i in range(b)], np.ones(b), np.zeros(b, bool),
                    features={"mri": np.zeros((b, d), np.float32)})  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        ad = VolumeAdapter(enc.get_volume_encoder("medicalnet_resnet10"),
                           AffineMap(np.zeros(d), np.ones(d)), _finetune_cfg("last_stage", "mri"),
                           "concat").train()  # fmt: skip
    feed = Feed("mri", 0)
    rows_t = torch.from_numpy(feed.register(cohort, cache))
    ad.feed = feed
    opt = torch.optim.AdamW(ad.trainable_parameters(), lr=1e-4)
    peer = enc.get_volume_encoder("medicalnet_resnet10").model
    for n, prm in peer.named_parameters():
        prm.requires_grad_(n.startswith("layer4."))
    popt = torch.optim.AdamW([q for q in peer.parameters() if q.requires_grad], lr=1e-4)
    present = torch.ones(b, dtype=torch.bool)

    def ours_step() -> float:
        def one() -> None:
            opt.zero_grad(set_to_none=True)
            ad(torch.zeros(b, d), present, rows_t).square().mean().backward()
            opt.step()

        return _timed(one, 2)

    def peer_step() -> float:
        def one() -> None:
            popt.zero_grad(set_to_none=True)
            peer(xv).square().mean().backward()
            popt.step()

        return _timed(one, 2)

    ours_step(), peer_step()
    o, p = _median_pair(ours_step, peer_step, repeats)
    t_io = statistics.median(_timed(lambda: torch.from_numpy(feed.volumes(list(range(b)))), 2)
                             for _ in range(repeats))  # fmt: skip
    with SavedBytes(ad) as mem_o:
        ours_step()
    with SavedBytes(peer) as mem_p:
        peer_step()
    est = memory_estimate(ad, xv[:1], b * s)
    rows.append({"preset": "medicalnet_resnet10", "what": "step last_stage",
                 "ours_tiles_s": b * s / o, "peer_tiles_s": b * s / p, "ratio": o / p,
                 "io_share": t_io / p, "act_mib_ours": mem_o.mib, "act_mib_peer": mem_p.mib,
                 "est_act_mib": est["activations"], "est_total_mib": est["total"]})  # fmt: skip
    return rows


def part_speed(presets: list[str], repeats: int) -> None:
    import pandas as pd

    with tempfile.TemporaryDirectory() as d:
        rows = []
        for p in presets:
            rows += speed_tiles(p, repeats, Path(d))
        rows += speed_volumes(repeats, Path(d))
    df = pd.DataFrame(rows)
    df["ratio - io"] = df["ratio"] - df["io_share"]
    cols = ["preset", "what", "ours_tiles_s", "peer_tiles_s", "ratio", "io_share", "ratio - io",
            "act_mib_ours", "act_mib_peer", "est_act_mib", "est_total_mib"]  # fmt: skip
    print("\nthroughput (tiles or volumes per CPU second; ratio = our time / peer time)")
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))


# ---------------------------------------------------------------------------- accuracy
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 96, "num_heads": 3}


def part_accuracy(n: int, folds: int, epochs: int, seeds: list[int], work: Path | None
                  ) -> None:  # fmt: skip
    import pandas as pd

    from modalsurv.data.sources import load_data
    from modalsurv.data.synthetic import make_cohort, write_chimera
    from modalsurv.experiments.grid import parse_grid
    from modalsurv.experiments.paired import paired_table
    from modalsurv.experiments.runners import LocalRunner, run_grid
    from modalsurv.features.extract import run_extract

    root = work or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    t0 = time.perf_counter()
    cohort, _ = make_cohort(n=n, seed=0, max_tiles=8, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={"wsi": 0.0, "slide": 0.0, "mri": 0.0,
                                                 "rna": 0.0})  # fmt: skip
    folder = write_chimera(cohort, root / "chimera", task=1, slide_px=1024, mpp=0.5,
                           mri_shape=(8, 24, 24), max_slides=2)  # fmt: skip
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = run_extract("chimera-task1", folder, root / "store", tile_encoder="timm:vit_tiny_patch16_224",
                      tile_encoder_kwargs=TINY_VIT, tile_size=32, mpp=2.0, max_tiles=16,
                      batch_size=64, workers=2, allow_random_weights=True, tile_cache=True,
                      min_tissue=0.5)  # fmt: skip
    t_extract = time.perf_counter() - t0
    print(f"\nsynthetic CHIMERA: {n} patients written in {t_write:.0f} s; extracted"
          f" {rep.n_tiles} tiles (32 px at 2 µm/px, tile cache on) in {t_extract:.0f} s")  # fmt: skip
    base = {"seed": 0,
            "data": {"source": "chimera", "name": "task1", "path": str(folder),
                     "features": str(root / "store")},
            "model": {"modalities": ["wsi"], "latent_dim": 32, "hidden_dim": 32,
                      "attention_pool_dim": 32, "n_heads": 2, "n_bins": 10, "stack": "none"},
            "train": {"epochs": epochs, "patience": 4, "n_init": 1, "batch_size": 16,
                      "device": "cpu", "modality_dropout": 0.0},
            "cv": {"folds": folds}, "baselines": [],
            "finetune": {"encoder": "wsi", "lr": 5e-4, "last_k": 1, "tiles_per_step": 8,
                         "lora_rank": 8, "lora_alpha": 16, "encode_batch": 256}}  # fmt: skip
    grid = parse_grid({"name": "finetune_bench", "base": base, "seed": seeds,
                       "encoder": ["frozen", "finetune_last", "lora"]})  # fmt: skip
    data = load_data(grid.base.data).cohort
    out = root / "grid"
    res = run_grid(grid, data, out, runner=LocalRunner())
    paired = paired_table(out, reference={"encoder": "frozen"})
    import json

    rows = []
    ok = res[res.model == "modalsurv"]
    for label, part in ok.groupby("encoder", sort=False):
        seconds = sum(json.loads((out / "trials" / t / "summary.json").read_text())["seconds"]
                      for t in part.trial)  # fmt: skip
        folds_c = pd.concat(pd.read_csv(out / "trials" / t / "metrics.csv").query(
            "model == 'modalsurv'")["harrell_c"] for t in part.trial)  # fmt: skip
        d = paired[paired.encoder == label]
        row = {"encoder": label, "trials ok": f"{(part.status == 'ok').sum()}/{len(part)}",
               "harrell_c (folds)": f"{folds_c.mean():.3f} ± {folds_c.std():.3f}",
               "ibs": f"{part.ibs_mean.mean():.3f}", "wall_s": round(seconds)}  # fmt: skip
        if len(d):
            x = d.iloc[0]
            row["ΔC vs frozen (95% CI)"] = (f"{x.mean_difference:+.3f} ({x.ci_low:+.3f},"
                                           f" {x.ci_high:+.3f})")  # fmt: skip
            row["p"] = f"{x.p_value:.2f}"
            row["pairs"] = int(x.n_pairs)
        rows.append(row)
    print(f"\nWSI alone, {folds}-fold CV x seeds {seeds}, {epochs} epochs max, identical"
          f" folds per seed (grid: {out}); wall_s: all seeds")
    print(pd.DataFrame(rows).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["speed", "accuracy", "all"], default="all")
    ap.add_argument("--presets", default="uni,virchow2,phikon_v2,conch_v1_5")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=200, help="accuracy: patients")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", default="0,1,2", help="accuracy: grid seeds (folds and init)")
    ap.add_argument("--work", type=Path, default=None, help="accuracy: folder to keep")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU")
    if args.part in ("speed", "all"):
        part_speed([p for p in args.presets.split(",") if p], args.repeats)
    if args.part in ("accuracy", "all"):
        part_accuracy(args.n, args.folds, args.epochs,
                      [int(v) for v in args.seeds.split(",") if v], args.work)


if __name__ == "__main__":
    main()
