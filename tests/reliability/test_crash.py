"""Kill ``train`` and ``extract`` (SIGKILL, in a subprocess) at seeded random moments.

After every kill each file in the output folder must parse (the writers' hidden
temporaries and lock files aside: the next locked run deletes stale temporaries), and
carrying on must end exactly where an uninterrupted run ends: byte-identical metrics for
``train --resume``, identical features for ``extract``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from modalsurv.io.store import FeatureStore

CLI = "import torch; torch.set_num_threads(1); from modalsurv.cli import app; app()"
RNG = random.Random(20240607)  # the kill moments


def _run(args: list[str], out: Path, ready: Callable[[], bool] | None = None,
         delay: float = 0.0) -> tuple[int, float]:  # fmt: skip
    """The CLI writing ``out``, in a subprocess. With ``ready``: SIGKILLed ``delay`` s
    after ``ready()`` first holds (polled every 10 ms); without: run to the end.
    (return code, seconds from ``out`` appearing to the end, imports aside)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    while not out.exists() and proc.poll() is None:
        time.sleep(0.01)
    start = time.perf_counter()
    while ready is not None and not ready() and proc.poll() is None:
        time.sleep(0.01)
    try:
        _, err = proc.communicate(timeout=delay if ready is not None else 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode in (0, -9), err.decode()[-2000:]  # finished, or killed by us
    return proc.returncode, time.perf_counter() - start


def _parse(path: Path) -> None:
    """Open a file the way its reader does; raises when it is torn."""
    suffix = path.suffix
    if suffix == ".csv":
        pd.read_csv(path)
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix in (".yaml", ".yml"):
        yaml.safe_load(path.read_text(encoding="utf-8"))
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        load_file(str(path))
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            [z[k] for k in z.files]
    elif suffix in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    else:
        path.read_bytes()


def _check_parses(folder: Path) -> int:
    """How many files ``folder`` holds; every one must parse."""
    n = 0
    for p in folder.rglob("*") if folder.exists() else []:
        if p.is_file() and not (p.name.startswith(".") and p.suffix in (".tmp", ".lock")):
            try:
                _parse(p)
            except Exception as err:  # name the torn file
                raise AssertionError(f"{p} does not parse after a kill: {err}") from err
            n += 1
    return n


def test_train_killed_at_random_points_resumes_exactly(rel, tmp_path):
    cfg = rel.write_yaml(tmp_path / "c.yaml", rel.tiny_config(
        cv={"folds": 3}, train={"epochs": 8, "patience": 8}, baselines=["coxph_clinical"]))
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    res = rel.invoke("train", cfg, "--out", whole)
    assert res.exit_code == 0, res.output
    log = []
    # once while the folds run, once after the last (saving, report): each kill a seeded
    # random moment after a seeded number of folds finished
    for folds_done in (RNG.randint(0, 1), 3):
        delay = RNG.uniform(0.0, 0.3)
        code, _ = _run(["train", str(cfg), "--resume"], crashed, lambda n=folds_done: len(
            list(crashed.glob("checkpoints/*/*/done.json"))) >= n, delay)  # fmt: skip
        log.append(f"killed {delay:.2f} s after {folds_done} folds: code {code},"
                   f" {_check_parses(crashed)} files parse")
    res = rel.invoke("train", cfg, "--out", crashed, "--resume")
    assert res.exit_code == 0, res.output
    for name in ("metrics.csv", "predictions.csv", "metrics.json", "folds.csv"):
        assert (crashed / name).read_bytes() == (whole / name).read_bytes(), (name, log)
    assert _check_parses(crashed) > 10 and not list(crashed.rglob("*.tmp"))


@pytest.fixture(scope="module")
def chimera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort, _ = make_cohort(n=3, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})  # fmt: skip
    return write_chimera(cohort, tmp_path_factory.mktemp("chimera"), task=1, slide_px=1024,
                         mpp=0.5, mri_shape=(8, 24, 24), max_slides=1)  # fmt: skip


def _store(folder: Path) -> dict[str, np.ndarray]:
    store = FeatureStore(folder)
    out = {}
    for m in store.modalities():
        pats = sorted(store.patients(m))
        out[m] = np.asarray(store.load(m, pats).x)
        out[f"{m}/patients"] = np.asarray(pats)
    return out


def test_extract_killed_at_random_points_finishes_the_same(rel, chimera, tmp_path):
    args = ["extract", str(chimera), "--tile-size", "64", "--max-tiles", "4", "--batch-size",
            "2", "--workers", "1", "--device", "cpu"]  # the offline efficientnet_lite0
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    code, seconds = _run(args, whole)  # timed from the store's creation to the end
    assert code == 0
    log = []
    for k in range(2):  # seeded random moments, one in each half of the work
        delay = seconds * (k + RNG.random()) / 2
        code, _ = _run(args, crashed, lambda: True, delay)
        log.append(f"killed at {delay:.2f}/{seconds:.2f} s: code {code},"
                   f" {_check_parses(crashed)} files parse")
    res = rel.invoke(*args, "--out", crashed)
    assert res.exit_code == 0, res.output
    a, b = _store(whole), _store(crashed)
    assert a.keys() == b.keys() and "wsi/patients" in a, log
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key}: {log}")
