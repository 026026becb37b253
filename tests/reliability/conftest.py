"""Shared inputs of the reliability suite: tiny configs, a finished run, a manifest cohort
(clinical text categories + RNA JSON) with its run, and a folder snapshot.

Everything is tiny (40 patients, 2 epochs, 2 folds, one network) so the whole suite stays
well under a minute on 2 cores; the runs are trained once per session.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from modalsurv.cli import app

RUNNER = CliRunner()
TINY_DATA = {"n": 40, "max_tiles": 4, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 20}
GRADES = ("high", "low", "mid")
LOCK = ".modalsurv.lock"  # touched by every locked command by design: not part of a snapshot


def tiny_config(data: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    """A config that trains in about a second: epochs 2, one network, 2 folds."""
    cfg: dict[str, Any] = {
        "seed": 1,
        "data": data or {"source": "synthetic", "params": dict(TINY_DATA)},
        "model": {"hidden_dim": 16, "latent_dim": 16, "n_bins": 6, "attention_pool_dim": 8,
                  "n_heads": 2},
        "preprocess": {"rna_pca": 3, "rna_top_variance_genes": 10},
        "train": {"epochs": 2, "patience": 2, "batch_size": 16, "n_init": 1},
        "cv": {"folds": 2},
        "baselines": [],
    }  # fmt: skip
    for key, value in over.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def invoke(*args: str) -> Any:
    """The CLI in-process; returns click's Result (exit_code, output with stderr mixed in)."""
    return RUNNER.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (lock file aside): SHA-256 of its bytes and its mtime."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != LOCK:
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                               p.stat().st_mtime_ns)  # fmt: skip
    return out


# ---------------------------------------------------------------------------- manifests
def write_manifest(folder: Path, n: int = 40, seed: int = 0, events: int | None = None,
                   grades: tuple[str, ...] = GRADES, genes: int = 12,
                   columns: tuple[str, ...] = ("age", "grade"), rna: bool = True) -> Path:
    """A manifest cohort: ``age`` (numeric), ``grade`` (text, one-hot ``grade=...``) and
    one RNA JSON per patient (genes G00..). ``events``: how many patients had the event
    (default: about half)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"M{i:03d}" for i in range(n)]
    ev = np.zeros(n, dtype=int)
    ev[rng.permutation(n)[: (n // 2 if events is None else events)]] = 1
    cols = {"age": lambda i: f"{rng.normal(65, 8):.1f}",
            "grade": lambda i: grades[i % len(grades)]}  # fmt: skip
    header = ["patient", "time", "event", *columns] + (["rna_path"] if rna else [])
    lines = [",".join(header)]
    for i, pid in enumerate(ids):
        row = [pid, f"{rng.uniform(2, 60):.2f}", str(ev[i]), *(cols[c](i) for c in columns)]
        if rna:
            profile = {f"G{g:02d}": float(rng.lognormal(3, 1)) for g in range(genes)}
            (folder / f"{pid}_RNA.json").write_text(json.dumps(profile), encoding="utf-8")
            row.append(f"{pid}_RNA.json")
        lines.append(",".join(row))
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def manifest_config(manifest: Path, **over: Any) -> dict[str, Any]:
    return tiny_config({"source": "manifest", "path": str(manifest)}, **over)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished synthetic run (2 folds): corrupt a *copy* of it, never this one."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "run"
    res = invoke("train", write_yaml(tmp / "config.yaml", tiny_config()), "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def manifest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, manifest) of a finished run on a manifest cohort."""
    tmp = tmp_path_factory.mktemp("manifest_run")
    manifest = write_manifest(tmp / "data")
    out = tmp / "run"
    res = invoke("train", write_yaml(tmp / "config.yaml", manifest_config(manifest)), "--out", out)
    assert res.exit_code == 0, res.output
    return out, manifest


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def rel() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(tiny_config=tiny_config, write_yaml=write_yaml, invoke=invoke,
                           snapshot=snapshot, write_manifest=write_manifest,
                           manifest_config=manifest_config, TINY_DATA=TINY_DATA)  # fmt: skip
