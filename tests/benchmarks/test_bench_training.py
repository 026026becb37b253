"""benchmarks/bench_training.py: the timing comparison is only fair when ModalSurv and the
pycox peer train under the same conditions (rows, batch, torch threads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from modalsurv.data.synthetic import make_cohort
from modalsurv.train import trainer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_training", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_modalsurv_trains_with_the_thread_count_pycox_gets(monkeypatch) -> None:
    """``--threads 2`` must time ModalSurv on 2 threads, as pycox is: ``train.threads:
    auto`` dropped it to one on a small cohort while pycox ran on two."""
    bench = _bench()
    cohort, _ = make_cohort(n=40, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=16)  # fmt: skip
    cohort = cohort.select(bench.pick_modalities(cohort))
    seen: list[int] = []
    original = trainer._evaluate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "_evaluate", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bench.time_modalsurv(cohort, epochs=2, batch=16, device="cpu")
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 2]
