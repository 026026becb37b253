"""A trained CHIMERA task-1 run shared by the challenge tests: raw files → extract → train."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from modalsurv.cli import app
from modalsurv.data.synthetic import make_cohort, write_chimera

TRAIN = ["--set", "train.epochs=3", "--set", "train.n_init=1", "--set", "cv.folds=2",
         "--set", "baselines=[coxph_clinical]", "--set", "train.patience=2",
         "--set", "model.latent_dim=16", "--set", "model.hidden_dim=16",
         "--set", "model.attention_pool_dim=16", "--set", "model.n_heads=2"]  # fmt: skip
EXTRACT = ["--tile-encoder", "timm:resnet10t", "--tile-size", "64", "--max-tiles", "4",
           "--batch-size", "8", "--random-weights", "--min-tissue", "0.25", "--mri-size",
           "8,16,16"]  # fmt: skip


def cohort(task: int, n: int, seed: int):
    return make_cohort(n=n, seed=seed, task=task, max_tiles=6, tile_dim=8, slide_dim=8,
                       mri_dim=8, n_genes=40, missing={"wsi": 0.1, "mri": 0.15, "rna": 0.1})[0]  # fmt: skip


def run_cli(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


@pytest.fixture(scope="session")
def task1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("t1")
    root = write_chimera(cohort(1, 24, 0), base / "chimera", task=1, slide_px=512, mpp=0.5,
                         mri_shape=(8, 24, 24), max_slides=2)  # fmt: skip
    store = base / "store"
    run_cli(["extract", str(root), "--layout", "chimera-task1", "--out", str(store), *EXTRACT,
             "--volume-encoder", "medicalnet_resnet10"])
    run = base / "run"
    run_cli(["train", "--data", f"chimera-task1:{root}", "--features", str(store),
             "--out", str(run), *TRAIN, "--set", "data.params.max_tiles=6"])
    held = write_chimera(cohort(1, 6, 99), base / "held", task=1, slide_px=512, mpp=0.5,
                         mri_shape=(8, 24, 24), max_slides=2)  # fmt: skip
    return {"root": root, "store": store, "run": run, "held": held, "base": base}


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(TRAIN=TRAIN, EXTRACT=EXTRACT, cohort=cohort, run=run_cli)
