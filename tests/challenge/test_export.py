"""export-model takes the task in every spelling `modalsurv challenge` takes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modalsurv.cli import app


@pytest.mark.parametrize("task", ["1", "TASK1", "task_1"])
def test_export_model_reads_the_task_as_the_challenge_command_does(task1, tmp_path, task):
    """Was: '--task 1' refused with 'trained on CHIMERA task1; these inputs are 1'."""
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(out),
                                   "--task", task])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "models" / "repeat_0").is_dir()


def test_export_model_refuses_an_unknown_task_as_a_usage_error(task1, tmp_path):
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out",
                                   str(tmp_path / "m"), "--task", "task2"])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "task1 or task3" in text, res.output
    assert not (tmp_path / "m").exists()


def test_export_model_refuses_an_out_inside_the_run_folder(task1):
    inside = task1["run"] / "exported"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(inside)])
    assert res.exit_code == 2 and "inside the run folder" in res.output, res.output
    assert not inside.exists()
