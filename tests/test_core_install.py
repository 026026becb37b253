"""The core install (``pip install modalsurv``, no extras) on its own.

Why: the test venv holds every extra, and an extra can bring a package the core code
imports without declaring it (typer >= 0.29 stopped installing click, ray still brings
it: the command line crashed at import on a core install while every test passed). Here
only the distributions in the core requirements' dependency closure (computed from the
installed metadata, not listed by hand) are linked into a folder that a ``python -S``
subprocess sees, and the command line trains and predicts there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def core_closure(extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of the distributions ``pip install modalsurv[extras]`` brings."""
    seen: set[str] = set()
    todo = ["modalsurv"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        wanted = ("", *extras) if name == "modalsurv" else ("",)
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(req.name)
    return seen


def run_cli(site: Path, tmp_path: Path, *commands: list[str]) -> str:
    """Run modalsurv commands in a ``python -S`` that sees ``site`` and the package's
    source only; the last line printed says whether ray and lifelines (extras that these
    installs lack) are missing, as they should be."""
    src = Path(__file__).parents[1] / "src"
    code = f"""
import importlib.util
from typer.testing import CliRunner
from modalsurv.cli import app
for args in {list(commands)!r}:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
print(importlib.util.find_spec("ray") is None, importlib.util.find_spec("lifelines") is None)
"""
    # -S: no site-packages at all; only the closure's files and the package's source
    env = {"PYTHONPATH": f"{site}{os.pathsep}{src}", "MPLBACKEND": "Agg",
           "HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}  # fmt: skip
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env=env, timeout=600, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout.strip().splitlines()[-1]


def core_site(closure: set[str], into: Path) -> Path:
    """A folder of links to the installed files of the distributions in ``closure`` only
    (packages, modules, their ``.libs`` and metadata): with ``python -S`` and this folder
    on the path, Python sees what a core install would have, and nothing else."""
    into.mkdir(parents=True, exist_ok=True)
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in closure:
            continue
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source = Path(dist.locate_file(top))
            link = into / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return into


def test_the_core_site_holds_the_closure_and_nothing_else(tmp_path: Path) -> None:
    closure = core_closure()
    assert {"modalsurv", "torch", "pydantic", "scikit-survival", "typer"} <= closure
    assert not {"lifelines", "ray", "pytest", "click", "timm"} & closure
    names = {p.name for p in core_site(closure, tmp_path / "site").iterdir()}
    assert {"torch", "sksurv", "pydantic", "typer"} <= names
    assert not {"lifelines", "ray", "_pytest", "click", "timm"} & names


def test_the_command_line_trains_and_predicts_on_a_core_install(tmp_path: Path) -> None:
    site = core_site(core_closure(), tmp_path / "site")
    run, pred = tmp_path / "run", tmp_path / "pred.csv"
    config = Path(__file__).parents[1] / "src" / "modalsurv" / "configs" / "synthetic.yaml"
    sets = ["data.params.n=60", "train.epochs=2", "train.n_init=2", "cv.folds=2",
            "baselines=[coxnet]", "model.stack=[modalsurv, coxnet]"]  # fmt: skip
    train = ["train", str(config), "--out", str(run)]
    for s in sets:
        train += ["--set", s]
    predict = ["predict", str(run), "--data", "synthetic:30:5", "--out", str(pred)]
    assert run_cli(site, tmp_path, train, predict) == "True True"  # the extras really are gone
    assert json.loads((run / "metrics.json").read_text())
    assert pred.stat().st_size > 0


def test_the_demo_runs_with_the_features_extra_alone(tmp_path: Path) -> None:
    """``pip install modalsurv[features]``: the spine (files -> features -> model ->
    challenge answers) with the encoders' extra and nothing else."""
    closure = core_closure(("features",))
    assert {"timm", "monai"} <= closure and "peft" not in closure
    site = core_site(closure, tmp_path / "site")
    assert run_cli(site, tmp_path, ["demo", "--quick", "--out", str(tmp_path / "demo")]) \
        == "True True"
    answers = list((tmp_path / "demo" / "challenge").rglob("*.json"))
    assert answers
