"""The run-folder service's external scoring (runs.evaluate_run): what its numbers are
weighed by. End-to-end through the CLI in tests/test_cli.py."""

from __future__ import annotations

import shutil
import warnings

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


def _interrupted_copy(run, dest):
    """The run as a process killed while training its last fold leaves it."""
    copy = shutil.copytree(run, dest)
    (copy / "checkpoints" / "repeat_0" / "fold_1" / "done.json").unlink()
    return copy


def test_resume_refuses_data_changed_since_its_finished_folds(run, tmp_path):
    """Was: a resume checked the config and the fold assignment only, so a data file edited
    between the interruption and the resume (times in another unit, re-extracted features)
    was accepted and its folds mixed with ones trained on the old data. Refused now, naming
    what changed, and the folder left as it was."""
    from modalsurv.cohort import Cohort
    from modalsurv.config import load_config
    from modalsurv.errors import ConfigError

    cfg = load_config(run / "config.yaml")
    c, _ = make_cohort(**TINY, n=60, seed=0)
    longer = Cohort(c.ids, c.time * 1.5, c.event, c.features, c.present, c.meta, c.bag_mask,
                    c.feature_names)  # fmt: skip
    m = sorted(c.modalities)[0]
    other = Cohort(c.ids, c.time, c.event, {**c.features, m: c.features[m] + 1.0}, c.present,
                   c.meta, c.bag_mask, c.feature_names)  # fmt: skip
    folder = _interrupted_copy(run, tmp_path / "run")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(ConfigError, match=r"trained on other data: this cohort's time differ"):
        train_run(cfg, folder, resume=True, cohort=longer)
    with pytest.raises(ConfigError, match=rf"this cohort's features\.{m} differ"):
        train_run(cfg, folder, resume=True, cohort=other)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_train_cleans_only_its_own_temporaries(run, tmp_path):
    """Was: train removed every ``.NAME.*.tmp`` file anywhere below --out, so a folder of
    the user's (or one holding another process's output in progress) lost such files."""
    from modalsurv.config import load_config

    folder = shutil.copytree(run, tmp_path / "run")
    theirs = folder / "notes" / ".table.csv.k3j2.tmp"  # not train's: kept
    theirs.parent.mkdir()
    theirs.write_text("someone else's", encoding="utf-8")
    stale = [folder / ".metrics.json.a1b2.tmp", folder / "checkpoints" / ".x.csv.c3d4.tmp"]
    for p in stale:
        p.write_text("left by a killed train", encoding="utf-8")
    cohort, _ = make_cohort(**TINY, n=60, seed=0)
    train_run(load_config(run / "config.yaml"), folder, resume=True, cohort=cohort)
    assert theirs.is_file()
    assert not any(p.exists() for p in stale)


def test_predict_with_times_from_a_folder_without_oof_predictions(run, tmp_path):
    """An exported model (config.yaml and models/, no predictions.csv) predicts, but with
    times it failed with FileNotFoundError: the follow-up check read predictions.csv."""
    from modalsurv.runs import predict_run

    model = tmp_path / "model"
    shutil.copytree(run / "models", model / "models")
    shutil.copy2(run / "config.yaml", model / "config.yaml")
    cohort, _ = make_cohort(**TINY, n=12, seed=5)
    table = predict_run(model, cohort, tmp_path / "p.csv", [2.0, 5.0])
    expected = predict_run(run, cohort, tmp_path / "q.csv", [2.0, 5.0])
    pd.testing.assert_frame_equal(table, expected)


def test_resume_of_a_finished_run_names_the_config_change(run, tmp_path):
    """A finished run without its checkpoints (removed to save space) resumed with another
    config was refused without saying what differs; the changed keys are named now."""
    from modalsurv.config import load_config
    from modalsurv.errors import ConfigError

    folder = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(folder / "checkpoints")
    cfg = load_config(run / "config.yaml")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    cohort, _ = make_cohort(**TINY, n=60, seed=0)
    with pytest.raises(ConfigError, match=r"another config .*train\.epochs: 2 there, 3 here"):
        train_run(cfg, folder, resume=True, cohort=cohort)


def test_predict_flags_patients_of_the_training_cohort(run, tmp_path):
    """evaluate said when patients were in the training cohort; predict gave their
    in-sample risks without a word, as if they were new patients."""
    from modalsurv.errors import DataWarning
    from modalsurv.runs import predict_run

    trained, _ = make_cohort(**TINY, n=60, seed=0)
    some = trained.subset(np.arange(5))
    with pytest.warns(DataWarning, match=r"predict: 5 of 5 patients .* training cohort"):
        predict_run(run, some, tmp_path / "p.csv")
    new, _ = make_cohort(**TINY, n=5, seed=5, external=True)  # ids of their own
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "predict: .* training cohort", DataWarning)
        predict_run(run, new, tmp_path / "q.csv")


def test_a_finished_run_resumed_with_only_another_train_threads_goes_on(run, tmp_path):
    """A resume with another train.threads warns (the order floats are summed in), but
    the same command on a *finished* run was refused by the config.yaml comparison, with
    its fold checkpoints or without; any other change is still refused."""
    from modalsurv.config import load_config
    from modalsurv.errors import ConfigError, DataWarning

    def with_train(**update):
        cfg = load_config(run / "config.yaml")
        return cfg.model_copy(update={"train": cfg.train.model_copy(update=update)})

    cohort, _ = make_cohort(**TINY, n=60, seed=0)
    before = pd.read_csv(run / "predictions.csv")
    folder = shutil.copytree(run, tmp_path / "run")
    with pytest.warns(DataWarning, match=r"finished folds trained with train.threads 'auto'"):
        train_run(with_train(threads=1), folder, resume=True, cohort=cohort)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "predictions.csv"), before)
    assert load_config(folder / "config.yaml").train.threads == 1
    shutil.rmtree(folder / "checkpoints")  # removed to save space: every fold trains again
    with pytest.raises(ConfigError, match=r"another config .*train\.epochs: 2 there, 3 here"):
        train_run(with_train(threads=1, epochs=3), folder, resume=True, cohort=cohort)
    with pytest.warns(DataWarning, match=r"finished run trained with another train.threads"):
        train_run(with_train(threads=2), folder, resume=True, cohort=cohort)
