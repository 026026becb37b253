"""A finished run (trained, then scored on an external cohort) and a finished grid, both
through the command line, shared by the report tests. Tiny on purpose (2 CPU cores):
60 patients, 3 folds, 2 epochs, 2 seed members; the grid 8 trials of 2 folds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modalsurv.cli import app

RUNNER = CliRunner()
TINY = {"max_tiles": 4, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 20}
MODEL = {"hidden_dim": 16, "latent_dim": 16, "n_bins": 6, "attention_pool_dim": 8, "n_heads": 2}


def invoke(*args: object) -> object:
    res = RUNNER.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def run_config(n: int = 60) -> dict:
    return {
        "seed": 1,
        "data": {"source": "synthetic", "params": {"n": n, **TINY}},
        "model": MODEL,
        "preprocess": {"rna_pca": 3, "rna_top_variance_genes": 10},
        "train": {"epochs": 2, "patience": 2, "batch_size": 16, "n_init": 2, "device": "cpu"},
        "cv": {"folds": 3},
        "baselines": ["coxph_clinical"],
    }


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train` then `evaluate` on an external cohort: the run folder."""
    tmp = tmp_path_factory.mktemp("report_run")
    (tmp / "config.yaml").write_text(yaml.safe_dump(run_config()))
    out = tmp / "run"
    invoke("train", tmp / "config.yaml", "--out", out)
    ext = {"data": {"source": "synthetic", "params": {"n": 40, "seed": 5, "external": True,
                                                      **TINY}}}  # fmt: skip
    (tmp / "external.yaml").write_text(yaml.safe_dump(ext))
    invoke("evaluate", out, "--data", tmp / "external.yaml", "--n-boot", "20", "--name", "site_b")
    return out


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`experiment` on a grid crossing modality sets, fusions and training fractions."""
    tmp = tmp_path_factory.mktemp("report_grid")
    base = run_config(n=48)
    base["model"] = {**MODEL, "latent_dim": 8, "hidden_dim": 8}
    base["train"] = {**base["train"], "n_init": 1}
    base["cv"] = {"folds": 2}
    grid = {"name": "tiny", "base": base, "seed": [0],
            "modalities": [["clinical"], ["clinical", "rna"]],
            "fusion": ["concat", "cross_attention_gated"],
            "data_fraction": [0.5, 1.0]}  # fmt: skip
    (tmp / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp / "grid"
    invoke("experiment", tmp / "grid.yaml", "--out", out)
    return out
