"""The run-folder service's external scoring (runs.evaluate_run): what its numbers are
weighed by. End-to-end through the CLI in tests/test_cli.py."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from modalsurv.config import parse_config
from modalsurv.data.synthetic import make_cohort
from modalsurv.runs import evaluate_run, train_run
from modalsurv.survival import metrics as M

TINY = {"max_tiles": 6, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 40}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = parse_config({
        "seed": 1,
        "model": {"hidden_dim": 16, "latent_dim": 16, "n_bins": 8, "attention_pool_dim": 8,
                  "n_heads": 2, "stack": "none"},
        "preprocess": {"rna_pca": 4, "rna_top_variance_genes": 20},
        "train": {"epochs": 2, "patience": 2, "batch_size": 16, "n_init": 1, "device": "cpu"},
        "cv": {"folds": 2},
        "baselines": [],
    })  # fmt: skip
    cohort, _ = make_cohort(**TINY, n=60, seed=0)
    out = tmp_path_factory.mktemp("runs") / "run"
    train_run(cfg, out, cohort=cohort)
    return out


def test_external_scores_weigh_by_the_cohorts_own_censoring(run, tmp_path):
    """Was: Uno C and IBS weighed external patients by the *training* censoring estimate;
    an external cohort followed up otherwise (here: twice as long) was misweighed, e.g. the
    IBS of the true curves doubled. The scores may not depend on how training was censored."""
    c, _ = make_cohort(**TINY, n=50, seed=5, external=True, follow_up=240.0)
    first = evaluate_run(shutil.copytree(run, tmp_path / "a"), c, n_boot=5, name="ext")
    other = shutil.copytree(run, tmp_path / "b")  # the same run, its training never censored
    preds = pd.read_csv(other / "predictions.csv", dtype={"patient": str})
    preds["event"] = 1
    preds.to_csv(other / "predictions.csv", index=False)
    second = evaluate_run(other, c, n_boot=5, name="ext")
    assert np.isfinite(first["uno_c"]) and np.isfinite(first["ibs"])
    assert first["uno_c"] == second["uno_c"] and first["ibs"] == second["ibs"]
    assert first["censoring_reference"] == "cohort"
    table = pd.read_csv(tmp_path / "a" / "evaluation_ext_predictions.csv")
    train_time = preds["time"].to_numpy(float)
    tau = min(train_time.max(), np.quantile(c.time, 0.9))
    assert first["uno_c"] == M.uno_concordance(c.time, c.event, c.time, c.event,
                                               table["risk"].to_numpy(float), tau=tau)


def test_predict_takes_its_times_as_any_sequence(run, tmp_path):
    """``times=np.array([...])`` raised "truth value of an array is ambiguous"; a list, a
    tuple and an array now give the same table."""
    from modalsurv.runs import predict_run

    cohort, _ = make_cohort(**TINY, n=12, seed=5)
    tables = [predict_run(run, cohort, tmp_path / f"p{i}.csv", times)
              for i, times in enumerate(([2.0, 5.0], (2.0, 5.0), np.array([2.0, 5.0])))]  # fmt: skip
    assert {"survival_at_2", "survival_at_5"} <= set(tables[0].columns)
    for t in tables[1:]:
        pd.testing.assert_frame_equal(t, tables[0])
