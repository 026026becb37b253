"""A run folder is never rewritten or left unusable by a failure, and resuming is exact."""

from __future__ import annotations

import json
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


def _interrupted_beside_whole(rel, tmp_path, monkeypatch):
    """(config, a finished run, the same run stopped in its third fold)."""
    config = parse_config(rel.tiny_config(cv={"folds": 3}, baselines=["coxph_clinical"]))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_run(config, whole)
    with monkeypatch.context() as m:
        _fail_on(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(config, resumed)
    return config, whole, resumed


def test_resume_is_byte_identical_to_an_uninterrupted_run(rel, tmp_path, monkeypatch):
    config, whole, resumed = _interrupted_beside_whole(rel, tmp_path, monkeypatch)
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


def test_resume_takes_one_data_folder_however_its_path_is_spelled(rel, tmp_path, monkeypatch):
    """'data/manifest.csv', './data//manifest.csv' and its absolute path are one file: a
    resume used to refuse ('data.path: ... there, ... here'); the run records the absolute
    path, and a run recorded with a relative one (older runs) still resumes."""
    import json

    monkeypatch.chdir(tmp_path)
    manifest = rel.write_manifest(tmp_path / "data")
    out = tmp_path / "run"
    cfg = lambda path: parse_config(rel.manifest_config(path, cv={"folds": 3}))  # noqa: E731
    with monkeypatch.context() as m:
        _fail_on(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(cfg("data/manifest.csv"), out)
    spec = out / "checkpoints" / "cv_spec.json"
    recorded = json.loads(spec.read_text())["config"]["data"]["path"]
    assert recorded == str(manifest)  # absolute
    # an older run folder: the spec as given on the command line
    old = json.loads(spec.read_text())
    old["config"]["data"]["path"] = "data/manifest.csv"
    spec.write_text(json.dumps(old))
    train_run(cfg("./data//manifest.csv"), out, resume=True)
    assert f"path: {manifest}" in (out / "config.yaml").read_text()
    train_run(cfg(str(manifest)), out, resume=True)  # finished: the same run, nothing to do
    other = rel.write_manifest(tmp_path / "other")
    with pytest.raises(ConfigError, match="data.path"):
        train_run(cfg(str(other)), out, resume=True)


def test_resuming_with_another_thread_count_says_the_last_digits_may_differ(rel, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    """Each finished fold records the torch threads it trained with; a resume in a process
    with another count warns (sums in another order: the member spread and gate weights
    written at the end moved by about 1e-9, silently)."""
    import json
    import warnings

    import torch

    from modalsurv.errors import DataWarning

    config = parse_config(rel.tiny_config(cv={"folds": 3}))
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_on(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            train_run(config, out)
    marker = out / "checkpoints" / "repeat_0" / "fold_0" / "done.json"
    assert json.loads(marker.read_text())["torch_threads"] == torch.get_num_threads()
    with monkeypatch.context() as m:
        _fail_on(m, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)  # the same count: no warning
            with pytest.raises(RuntimeError, match="simulated"):
                train_run(config, out, resume=True)
    marker.write_text(json.dumps({"complete": True, "torch_threads": 97}))
    with pytest.warns(DataWarning, match="trained with 97 torch thread"):
        train_run(config, out, resume=True)


def test_a_mistyped_model_modality_is_refused_before_anything_is_written(rel, tmp_path):
    """Was: a data error naming field 'modalities', raised inside the first fold."""
    config = parse_config(rel.tiny_config(model={"modalities": ["clinical", "wsii"]}))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"model.modalities: \['wsii'\] not among this"):
        train_run(config, out)
    assert not out.exists() or not any(out.iterdir())


def test_fine_tuning_an_encoder_the_model_does_not_use_is_refused(rel, tmp_path):
    """Was: trained frozen without a word, config.yaml recording finetune.mode: last_k."""
    config = parse_config(rel.tiny_config(model={"modalities": ["clinical", "rna"],
                                                 "stack": "none"},
                                          finetune={"encoder": "wsi", "mode": "last_k"}))  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"finetune.encoder 'wsi' is not among the"):
        train_run(config, out)
    assert not out.exists() or not any(out.iterdir())


def test_a_fold_marker_an_os_crash_left_empty_redoes_the_fold(rel, tmp_path, monkeypatch):
    """A marker renamed into place before its bytes reached the disk (power loss, a node
    going down) is an empty done.json: the resume failed reading it (JSONDecodeError, an
    internal error) instead of redoing that fold as a fold without a marker."""
    config, whole, resumed = _interrupted_beside_whole(rel, tmp_path, monkeypatch)
    markers = sorted((resumed / "checkpoints").rglob(cv.CV_UNITS["marker"]))
    assert len(markers) == 2
    markers[1].write_text("")
    assert cv.has_finished_folds(resumed / "checkpoints")  # the first fold still counts
    train_run(config, resumed, resume=True)
    for name in OUTPUTS:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert json.loads(markers[1].read_text())["complete"] is True
