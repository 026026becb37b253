"""The container files stay in step with the package: same pinned torch, same entry point,
and the entry point's command answers a case when run directly (no Docker daemon here)."""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modalsurv.challenge.sockets import OUTPUTS, case_to_input
from modalsurv.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision)==([0-9][^\s\"',]*)", text))


def _entry_command(dockerfile: Path) -> list[str]:
    line = next(ln for ln in dockerfile.read_text().splitlines() if ln.startswith("ENTRYPOINT"))
    argv = json.loads(line[len("ENTRYPOINT"):])
    assert argv[:2] == ["/bin/sh", "-c"]
    cmd = shlex.split(argv[2])
    assert cmd[0] == "exec" and cmd[-1] == "$@"  # extra `docker run` arguments pass through
    return cmd[1:-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_the_same_torch_as_the_project(dockerfile):
    project = _pins((ROOT / "pyproject.toml").read_text())
    assert project == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert _pins((ROOT / "Makefile").read_text()) == project
    text = dockerfile.read_text()
    # every pip install line that names torch pins exactly the project's versions
    for line in re.findall(r"pip install[^\n]*", text):
        if "torch" in line:
            assert _pins(line) == project, line
    assert "python:3.11" in text  # the project's Python (requires-python >=3.11,<3.12)
    assert "HF_HUB_OFFLINE=1" in text
    # every encoder an exported model may name can be rebuilt in the container: CONCH
    # (open_clip), a LoRA adapter (peft), TITAN (transformers, a dependency of peft)
    extras = re.search(r'"/opt/app\[([^\]]*)\]"', text)
    assert extras and {"features", "clip", "finetune"} <= set(extras.group(1).split(",")), text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entry_point_is_the_challenge_command(dockerfile):
    cmd = _entry_command(dockerfile)
    assert cmd[:3] == ["modalsurv", "challenge", "$MODALSURV_TASK"]
    opts = {k: v for k, v in zip(cmd[3::2], cmd[4::2])}
    assert opts["--model"] == "/opt/ml/model" and opts["--input"] == "/input"
    assert opts["--output"] == "/output"
    from typer.main import get_command

    params = {p for prm in get_command(app).commands["challenge"].params for p in prm.opts}
    assert set(opts) <= params  # options the command really has


def test_exported_model_answers_through_the_entry_point_command(task1, tmp_path):
    """export-model writes what /opt/ml/model must hold; the Dockerfile's own command line,
    with the roots moved into a temporary folder, answers a case from it."""
    model = tmp_path / "opt_ml_model"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(model)])
    assert res.exit_code == 0, res.output
    assert (model / "models/repeat_0/bundle.json").is_file() and (model / "extraction.json").is_file()
    assert not (model / "checkpoints").exists()
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[2]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input")
    out = tmp_path / "output"
    out.mkdir()
    cmd = _entry_command(DOCKERFILES[0])
    moved = {"/opt/ml/model": str(model), "/input": str(inp), "/output": str(out),
             "$MODALSURV_TASK": "task1"}  # fmt: skip
    argv = [moved.get(a, a) for a in cmd[1:]]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert isinstance(json.loads((out / OUTPUTS["task1"]).read_text()), float)
    # the tarball form holds the same files
    tar = tmp_path / "model.tar.gz"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(tar)])
    assert res.exit_code == 0, res.output
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"config.yaml", "extraction.json", "models/repeat_0/bundle.json"} <= names


def _image_env(dockerfile: Path) -> dict[str, str]:
    """The environment the Dockerfile's ENV and ARG lines give the container."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    args = dict(a.split("=", 1) for ln in lines if ln.startswith("ARG ") for a in ln.split()[1:])
    env = {}
    for ln in lines:
        if ln.startswith("ENV "):
            for item in shlex.split(ln[4:]):
                key, value = item.split("=", 1)
                env[key] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
    return env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_cache_of_the_image_lies_under_tmp(dockerfile):
    env = _image_env(dockerfile)
    for key in ("MPLCONFIGDIR", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        assert env.get(key, "").startswith("/tmp/"), (key, env)
    assert env["MODALSURV_TASK"] == "task1" and env["HF_HUB_OFFLINE"] == "1"


def test_the_container_writes_only_under_tmp_and_output(task1, tmp_path):
    """Run the ENTRYPOINT line itself through /bin/sh, with the image's environment and
    its roots moved into a temporary folder: only /tmp and /output are writable on the
    platform, so the home folder stays untouched (was: matplotlib's font cache written to
    ~/.config/matplotlib and ~/.cache/matplotlib at import)."""
    import os
    import shutil
    import subprocess
    import sys

    model = tmp_path / "opt_ml_model"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(model)])
    assert res.exit_code == 0, res.output
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[2]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input")
    out, home, tmp = tmp_path / "output", tmp_path / "home", tmp_path / "tmp"
    for d in (out, home, tmp):
        d.mkdir()
    moved = {"/opt/ml/model": str(model), "/input": str(inp), "/output": str(out)}
    line = next(ln for ln in DOCKERFILES[0].read_text().splitlines() if ln.startswith("ENTRYPOINT"))
    argv = json.loads(line[len("ENTRYPOINT"):])
    argv[2] = re.sub("|".join(map(re.escape, moved)), lambda m: moved[m.group(0)], argv[2])
    env = {k: v.replace("/tmp", str(tmp), 1) if v.startswith("/tmp") else v
           for k, v in _image_env(DOCKERFILES[0]).items()}  # fmt: skip
    exe = Path(sys.executable).parent
    modalsurv = exe / "modalsurv" if (exe / "modalsurv").is_file() else shutil.which("modalsurv")
    assert modalsurv, "the modalsurv script is not installed"
    env |= {"PATH": f"{Path(modalsurv).parent}{os.pathsep}/usr/bin:/bin", "HOME": str(home),
            "TMPDIR": str(tmp)}  # fmt: skip
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [p.name for p in out.iterdir()] == [OUTPUTS["task1"]]
    assert isinstance(json.loads((out / OUTPUTS["task1"]).read_text()), float)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


@pytest.mark.parametrize("name", ["model", "model.tar.gz"])
def test_a_failed_export_leaves_nothing_and_the_rerun_succeeds(task1, tmp_path, name):
    """Weights the extraction record names but nobody passed: the export fails naming them,
    writes nothing under --out (no half model that would fail only on the platform), and
    the corrected rerun into the same --out succeeds."""
    import shutil

    run = shutil.copytree(task1["run"], tmp_path / "run")
    record = json.loads((run / "extraction.json").read_text())
    record["tile_encoder"] = {**record["tile_encoder"], "weights_name": "missing.bin"}
    (run / "extraction.json").write_text(json.dumps(record))
    out = tmp_path / "exports" / name
    out.parent.mkdir()
    res = CliRunner().invoke(app, ["export-model", str(run), "--out", str(out)])
    assert res.exit_code == 1 and "missing.bin" in res.output, res.output
    assert list(out.parent.iterdir()) == []
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [p.name for p in out.parent.iterdir()] == [name]
    # a second export to the same place is refused, the first one kept (folder or tarball)
    before = out.stat().st_mtime_ns
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(out)])
    assert res.exit_code == 2 and "choose a new --out" in res.output, res.output
    assert out.stat().st_mtime_ns == before and [p.name for p in out.parent.iterdir()] == [name]


def test_a_tarball_export_that_fails_to_land_leaves_no_part_file(task1, tmp_path, monkeypatch):
    from pathlib import Path

    real = Path.replace

    def failing(self, target):
        if str(self).endswith(".part"):
            raise OSError("disk full")
        return real(self, target)

    monkeypatch.setattr(Path, "replace", failing)
    out = tmp_path / "model.tar.gz"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(out)])
    assert res.exit_code != 0 and "disk full" in res.output, res.output
    assert list(tmp_path.iterdir()) == []


def test_build_script_builds_and_exports_both_variants():
    text = (ROOT / "docker" / "build.sh").read_text()
    assert "docker build" in text and "docker save" in text and "Dockerfile.cuda" in text


def test_a_model_folder_with_a_damaged_extraction_record_is_named_not_a_bug(task1, tmp_path):
    """Was: a key missing from /opt/ml/model/extraction.json ('tiles') ended in 'internal
    error: KeyError' (exit 3, 'a bug in modalsurv') once the case was read."""
    model = tmp_path / "model"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(model)])
    assert res.exit_code == 0, res.output
    record = json.loads((model / "extraction.json").read_text())
    del record["tiles"]
    (model / "extraction.json").write_text(json.dumps(record))
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[0]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input")
    out = tmp_path / "output"
    out.mkdir()
    res = CliRunner().invoke(app, ["challenge", "task1", "--model", str(model), "--input",
                                   str(inp), "--output", str(out)])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "extraction.json" in text and "tiles.mpp" in text, res.output
    assert list(out.iterdir()) == []
