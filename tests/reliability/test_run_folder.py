"""A run folder is never rewritten or left unusable by a failure, and resuming is exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import modalsurv.train.cv as cv
from modalsurv.config import parse_config
from modalsurv.errors import ConfigError
from modalsurv.runs import train_run

OUTPUTS = ("metrics.csv", "predictions.csv", "metrics.json", "folds.csv")


def _fail_on(monkeypatch: pytest.MonkeyPatch, fold: int) -> None:
    """Make the CV crash when it reaches ``fold`` (earlier folds finish and are saved)."""
    real = cv._run_fold

    def run_fold(*args, **kwargs):
        if args[6] == fold:  # positional: cohort, train, test, config, baselines, repeat, fold
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(cv, "_run_fold", run_fold)


def test_a_failed_start_can_be_rerun(rel, tmp_path, monkeypatch):
    config = parse_config(rel.tiny_config())
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_on(m, 0)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(config, out)
    train_run(config, out)  # the same command again: nothing was worth protecting
    assert (out / "metrics.json").is_file()


def test_a_failed_start_can_be_resumed_with_a_fixed_config(rel, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_on(m, 0)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(parse_config(rel.tiny_config(seed=3)), out)
    train_run(parse_config(rel.tiny_config(seed=4)), out, resume=True)
    assert "seed: 4" in (out / "config.yaml").read_text()


def test_resume_is_byte_identical_to_an_uninterrupted_run(rel, tmp_path, monkeypatch):
    config = parse_config(rel.tiny_config(cv={"folds": 3}, baselines=["coxph_clinical"]))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_run(config, whole)
    with monkeypatch.context() as m:
        _fail_on(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(config, resumed)
    (resumed / "checkpoints" / ".predictions.csv.stale.tmp").write_text("half")
    train_run(config, resumed, resume=True)
    for name in OUTPUTS:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert not list(resumed.rglob("*.tmp"))  # a killed writer's temporaries are cleaned


def test_a_finished_run_without_checkpoints_is_not_overwritten(rel, finished_run, tmp_path):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    shutil.rmtree(run / "checkpoints")
    other = parse_config(rel.tiny_config(seed=9))
    with pytest.raises(ConfigError, match="--resume"):
        train_run(other, run)
    with pytest.raises(ConfigError, match="another config"):
        train_run(other, run, resume=True)
    assert "seed: 1" in (run / "config.yaml").read_text()
