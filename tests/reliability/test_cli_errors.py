"""Every user error is one clear message, never a traceback, and changes nothing on disk.

Table-driven: each case builds its input in a tmp dir, runs one CLI command in-process,
and checks the exit code (1 data, 2 usage/config), the words the message must contain,
that no traceback was printed, and that the folders the command touches are unchanged
(file bytes and mtimes; see conftest.snapshot).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from modalsurv.errors import ConfigError
from modalsurv.utils import exclusive_lock


class Inputs:
    """What a case builder can use: the helpers, a tmp dir and (lazily) the trained runs."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.request, self.tmp = request, tmp
        self.rel = request.getfixturevalue("rel")

    def run_copy(self) -> Path:
        return Path(shutil.copytree(self.request.getfixturevalue("finished_run"),
                                    self.tmp / "run"))  # fmt: skip

    def manifest_run(self) -> tuple[Path, Path]:
        run, manifest = self.request.getfixturevalue("manifest_run")
        data = Path(shutil.copytree(manifest.parent, self.tmp / "data"))
        return run, data / manifest.name

    def train_args(self, cfg: dict[str, Any], *extra: Any, out: Path | None = None) -> list[Any]:
        return ["train", self.rel.write_yaml(self.tmp / "config.yaml", cfg), "--out",
                out or self.tmp / "out", *extra]  # fmt: skip

    def manifest_train(self, **manifest: Any) -> list[Any]:
        path = self.rel.write_manifest(self.tmp / "data", **manifest)
        cv = {"cv": {"folds": manifest.pop("folds")}} if "folds" in manifest else {}
        return self.train_args(self.rel.manifest_config(path, **cv))


@dataclass
class Built:
    args: list[Any]
    watch: list[Path]  # folders (or files) that must not change
    hold: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)


@dataclass
class Case:
    id: str
    build: Callable[[Inputs], Built]
    code: int
    words: tuple[str, ...]


# ---------------------------------------------------------------------------- builders
def _cohort(n: int, events: int, folds: int = 2) -> Callable[[Inputs], Built]:
    def build(i: Inputs) -> Built:
        path = i.rel.write_manifest(i.tmp / "data", n=n, events=events)
        cfg = i.rel.manifest_config(path, cv={"folds": folds})
        return Built(i.train_args(cfg), [i.tmp / "out"])

    return build


def _config(**over: Any) -> Callable[[Inputs], Built]:
    def build(i: Inputs) -> Built:
        return Built(i.train_args(i.rel.tiny_config(**over)), [i.tmp / "out"])

    return build


def _npy_of_strings(i: Inputs) -> Built:
    path = i.rel.write_manifest(i.tmp / "data", n=12, columns=("age",), rna=False)
    df = pd.read_csv(path, dtype=str)
    for pid in df["patient"]:
        values = np.array(["a", "b"]) if pid == "M001" else np.arange(3.0)
        np.save(i.tmp / "data" / f"{pid}_mri.npy", values)
    df["mri_path"] = [f"{p}_mri.npy" for p in df["patient"]]
    df.to_csv(path, index=False)
    return Built(i.train_args(i.rel.manifest_config(path)), [i.tmp / "out"])


def _predict(run: Path, i: Inputs, data: str = "synthetic:20:3", *extra: Any) -> Built:
    out = i.tmp / "p.csv"
    return Built(["predict", run, "--data", data, "--out", out, *extra], [run, out])


def _corrupt_member(how: str) -> Callable[[Inputs], Built]:
    def build(i: Inputs) -> Built:
        run = i.run_copy()
        models = run / "models" / "repeat_0"
        weights = models / "model_0.safetensors"
        if how == "truncate":
            weights.write_bytes(weights.read_bytes()[:100])
        elif how == "pickle":
            torch.save({"w": torch.zeros(3)}, weights)
        elif how == "swap":
            other = models / "model_1.safetensors"
            a, b = weights.read_bytes(), other.read_bytes()
            weights.write_bytes(b)
            other.write_bytes(a)
        elif how == "count":
            bundle = json.loads((models / "bundle.json").read_text())
            bundle["n_members"] = 3
            (models / "bundle.json").write_text(json.dumps(bundle))
        return _predict(run, i)

    return build


def _resume_other_config(i: Inputs) -> Built:
    run = i.run_copy()
    cfg = i.rel.tiny_config(seed=8)
    return Built(i.train_args(cfg, "--resume", out=run), [run])


def _rerun_without_resume(i: Inputs) -> Built:
    run = i.run_copy()
    return Built(["train", run / "config.yaml", "--out", run], [run])


def _locked_run(i: Inputs) -> Built:
    run = i.run_copy()
    return Built(["train", run / "config.yaml", "--out", run, "--resume"], [run],
                 hold=exclusive_lock(run, "run folder"))  # fmt: skip


def _locked_grid(i: Inputs) -> Built:
    base = i.rel.tiny_config()
    grid = i.rel.write_yaml(i.tmp / "grid.yaml", {"name": "g", "base": base, "fusion": ["mean"]})
    out = i.tmp / "grid"
    out.mkdir()
    return Built(["experiment", grid, "--out", out], [out], hold=exclusive_lock(out, "grid"))


def _renamed_column(i: Inputs) -> Built:
    run, manifest = i.manifest_run()
    manifest.write_text(manifest.read_text().replace(",age,", ",weight,", 1))
    return _predict(run, i, f"manifest:{manifest}")


def _renamed_gene(i: Inputs) -> Built:
    run, manifest = i.manifest_run()
    for f in manifest.parent.glob("*_RNA.json"):
        f.write_text(f.read_text().replace('"G03"', '"G99"'))
    return _predict(run, i, f"manifest:{manifest}")


def _censored_external(i: Inputs) -> Built:
    run, _ = i.manifest_run()
    path = i.rel.write_manifest(i.tmp / "ext", n=10, events=0, seed=4)
    return Built(["evaluate", run, "--data", f"manifest:{path}", "--n-boot", "5"], [run])


def _other_modalities(i: Inputs) -> Built:
    path = i.rel.write_manifest(i.tmp / "data", n=6, columns=(), rna=False)
    df = pd.read_csv(path, dtype=str)
    for pid in df["patient"]:
        np.save(i.tmp / "data" / f"{pid}_ct.npy", np.arange(3.0))
    df["ct_path"] = [f"{p}_ct.npy" for p in df["patient"]]
    df.to_csv(path, index=False)
    return _predict(i.run_copy(), i, f"manifest:{path}")


def _into_grid_folder(i: Inputs) -> Built:
    grid = i.tmp / "grid"
    (grid / "trials").mkdir(parents=True)
    (grid / "grid.yaml").write_text("name: g\n", encoding="utf-8")
    return Built(i.train_args(i.rel.tiny_config(), out=grid), [grid])


def _into_exported_model(i: Inputs) -> Built:
    run = i.run_copy()
    model = i.tmp / "model"
    shutil.copytree(run / "models", model / "models")
    shutil.copy(run / "config.yaml", model / "config.yaml")
    return Built(i.train_args(i.rel.tiny_config(seed=5), out=model), [model])


def _grid_into_run_folder(i: Inputs) -> Built:
    run = i.run_copy()
    grid = i.rel.write_yaml(i.tmp / "grid.yaml", {"name": "g", "base": i.rel.tiny_config(),
                                                  "fusion": ["mean"]})  # fmt: skip
    return Built(["experiment", grid, "--out", run], [run])


def _extract_into_run_folder(i: Inputs) -> Built:
    run = i.run_copy()
    return Built(["extract", i.tmp, "--layout", "chimera-task1", "--out", run,
                  "--random-weights"], [run])  # fmt: skip


def _labels_only(i: Inputs) -> Built:
    path = i.rel.write_manifest(i.tmp / "data", n=12, columns=(), rna=False)
    return Built(i.train_args(i.rel.manifest_config(path)), [i.tmp / "out"])


def _empty_data_yaml(i: Inputs) -> Built:
    (i.tmp / "empty.yaml").write_text("", encoding="utf-8")
    return Built(["train", "--data", i.tmp / "empty.yaml", "--out", i.tmp / "out"],
                 [i.tmp / "out"])  # fmt: skip


def _grid_compared_with(*options: str) -> Callable[[Inputs], Built]:
    def build(i: Inputs) -> Built:
        grid = i.rel.write_yaml(i.tmp / "grid.yaml", {"name": "g", "base": i.rel.tiny_config(),
                                                      "fusion": ["mean", "concat"]})  # fmt: skip
        return Built(["experiment", grid, "--out", i.tmp / "grid", *options], [i.tmp / "grid"])

    return build


def _damaged(name: str, how: str) -> Callable[[Inputs], Built]:
    def build(i: Inputs) -> Built:
        run = i.run_copy()
        path = run / name
        if how == "truncate":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
        elif how == "drop_column":
            df = pd.read_csv(path)
            df.drop(columns=["risk"]).to_csv(path, index=False)
        elif how == "list":
            path.write_text("[1, 2]", encoding="utf-8")
        elif how == "empty":
            path.write_text("", encoding="utf-8")
        return Built(["report", run, "--out", i.tmp / "page.html"], [run, i.tmp / "page.html"])

    return build


CASES = [
    # data too small or uninformative for cross-validation
    Case("all_censored", _cohort(12, 0), 1, ("censored", "no event")),
    Case("fewer_events_than_folds", _cohort(12, 2, folds=3), 1, ("2 events", "3 folds")),
    Case("one_patient", _cohort(1, 1), 1, ("1 patient",)),
    Case("more_folds_than_patients", _cohort(4, 4, folds=5), 1, ("5 folds", "4 patients")),
    # config errors found when the config is read, not at fit time
    Case("unknown_fusion", _config(model={"fusion": "crossattn"}), 2,
         ("model.fusion", "crossattn", "cross_attention_gated")),
    Case("latent_dim_vs_heads", _config(model={"latent_dim": 10, "n_heads": 4}), 2,
         ("latent_dim", "n_heads")),
    Case("unknown_data_param", _config(data={"source": "synthetic", "params": {"nn": 40}}), 2,
         ("data.params", "'nn'", "max_tiles")),
    Case("config_without_data_path", _config(data={"source": "manifest"}), 2,
         ("config.yaml: data.path: required for source 'manifest'", "--data")),
    # unreadable inputs name the file and the patient
    Case("npy_of_strings", _npy_of_strings, 1, ("M001_mri.npy", "M001")),
    Case("truncated_weights", _corrupt_member("truncate"), 1, ("model_0.safetensors",)),
    Case("pickled_weights", _corrupt_member("pickle"), 1, ("model_0.safetensors",)),
    Case("swapped_weights", _corrupt_member("swap"), 1, ("model_0.safetensors", "SHA-256")),
    Case("member_count_edited", _corrupt_member("count"), 1, ("bundle.json", "3 members")),
    Case("not_a_run", lambda i: Built(["evaluate", i.tmp, "--data", "synthetic:20"], [i.tmp]),
         2, ("not a finished run folder",)),
    # the run folder is checked before the cohort is read (the data here would fail too)
    Case("evaluate_not_a_run_first", lambda i: Built(
        ["evaluate", i.tmp, "--data", f"manifest:{i.tmp / 'none.csv'}"], [i.tmp]),
        2, ("not a finished run folder",)),
    Case("predict_not_a_run_first", lambda i: _predict(i.tmp, i, f"manifest:{i.tmp / 'no.csv'}"),
         2, ("not a finished run folder", "models")),
    # a command never writes into another command's folder
    Case("train_into_grid_folder", _into_grid_folder, 2,
         ("holds a grid folder", "modalsurv experiment", "--out")),
    Case("train_into_exported_model", _into_exported_model, 2,
         ("holds an exported model", "modalsurv export-model")),
    Case("grid_into_run_folder", _grid_into_run_folder, 2,
         ("holds a run folder", "modalsurv train", "not a grid folder")),
    # a comparison that cannot be made is refused before the first trial runs
    Case("grid_reference_matches_nothing", _grid_compared_with("--reference", "fusion=late"), 2,
         ("reference", "'late'", "matches no")),
    Case("grid_by_not_a_setting", _grid_compared_with("--by", "fusions"), 2,
         ("by ['fusions']", "not grid settings")),
    Case("bad_mri_orientation", lambda i: Built(
        ["extract", i.tmp, "--out", i.tmp / "store", "--mri-orientation", "LPX",
         "--random-weights"], [i.tmp]), 2, ("--mri-orientation", "'LPX'")),
    Case("extract_into_run_folder", _extract_into_run_folder, 2,
         ("holds a run folder", "not a feature store")),
    # options
    Case("data_spec_not_a_number", lambda i: _predict(i.run_copy(), i, "synthetic:abc"), 2,
         ("synthetic:abc", "integer")),
    Case("unknown_data_spec", lambda i: _predict(i.run_copy(), i, "nosuch:x"), 2,
         ("nosuch:x",)),
    Case("negative_n_boot", lambda i: Built(
        ["evaluate", i.run_copy(), "--data", "synthetic:20", "--n-boot", "-1"], [i.tmp / "run"]),
        2, ("--n-boot",)),
    Case("bad_times", lambda i: _predict(i.run_copy(), i, "synthetic:20", "--times", "12,x"),
         2, ("--times", "12,x")),
    Case("nan_and_negative_times", lambda i: _predict(i.run_copy(), i, "synthetic:20",
                                                      "--times=nan,-5,12"),
         2, ("--times", "nan", "-5.0", "not a time")),
    Case("report_times_past_follow_up", lambda i: Built(
        ["report", i.run_copy(), "--times", "12,5000"], [i.tmp / "run"]),
        2, ("--times 5000", "inside the follow-up")),
    # run folders are never rewritten by a refused command
    Case("resume_other_config", _resume_other_config, 2, ("different",)),
    Case("rerun_without_resume", _rerun_without_resume, 2, ("--resume",)),
    Case("run_folder_locked", _locked_run, 1, ("in use", "PID")),
    Case("grid_folder_locked", _locked_grid, 1, ("in use", "PID")),
    # nothing to train on, or an option that would be silently ignored
    Case("no_modality_at_all", _labels_only, 1, ("no modality to train on",)),
    Case("unknown_train_device_before_the_data", lambda i: Built(
        ["train", "--data", f"manifest:{i.tmp / 'none.csv'}", "--set", "train.device=tpu",
         "--out", i.tmp / "out"], [i.tmp / "out"]), 2, ("train.device 'tpu'",)),
    Case("empty_data_yaml", _empty_data_yaml, 2, ("empty", "data.source")),
    Case("scan_manifest_with_features", lambda i: Built(
        ["scan", i.rel.write_manifest(i.tmp / "data", n=6), "--layout", "manifest",
         "--features", i.tmp], [i.tmp / "data"]), 2, ("--features", "CHIMERA")),
    # a damaged run folder is named, file by file, never an internal error
    Case("report_truncated_metrics_json", _damaged("metrics.json", "truncate"), 1,
         ("metrics.json", "damaged")),
    Case("report_metrics_json_not_an_object", _damaged("metrics.json", "list"), 1,
         ("metrics.json", "not an object")),
    Case("report_predictions_without_risk", _damaged("predictions.csv", "drop_column"), 1,
         ("predictions.csv", "'risk'")),
    Case("report_empty_gate_weights", _damaged("gate_weights.csv", "empty"), 1,
         ("gate_weights.csv", "damaged")),
    Case("report_truncated_data_json", _damaged("data.json", "truncate"), 1,
         ("data.json", "damaged")),
    # prediction matches features by name
    Case("renamed_clinical_column", _renamed_column, 1, ("clinical", "age", "weight")),
    Case("renamed_gene", _renamed_gene, 1, ("rna", "G03", "G99")),
    Case("censored_external_cohort", _censored_external, 1, ("0 event", "C-index")),
    Case("no_modality_in_common", _other_modalities, 1, ("none of the modalities", "'ct'")),
    Case("unknown_scan_layout", lambda i: Built(["scan", i.tmp, "--layout", "foo"], [i.tmp]),
         2, ("--layout", "'foo'")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error_is_one_message(case: Case, request: pytest.FixtureRequest,
                                   tmp_path: Path) -> None:  # fmt: skip
    inputs = Inputs(request, tmp_path)
    built = case.build(inputs)
    snap = {str(p): inputs.rel.snapshot(p) if p.is_dir() else p.exists() for p in built.watch}
    with built.hold:
        res = inputs.rel.invoke(*built.args)
    assert res.exit_code == case.code, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    flat = " ".join(res.output.split())
    for word in case.words:
        assert word in flat, (word, res.output)
    after = {str(p): inputs.rel.snapshot(p) if p.is_dir() else p.exists() for p in built.watch}
    assert after == snap, "a refused command changed files"


def test_debug_shows_the_traceback(rel, finished_run: Path) -> None:
    res = rel.invoke("--debug", "evaluate", finished_run, "--data", "synthetic:abc")
    assert isinstance(res.exception, ConfigError)
    res = rel.invoke("evaluate", finished_run, "--data", "synthetic:abc")
    assert res.exit_code == 2 and "--debug shows the traceback" in res.output


def test_unexpected_exception_is_one_line_with_exit_3(rel, finished_run: Path, monkeypatch
                                                      ) -> None:  # fmt: skip
    import modalsurv.runs as rf

    def boom(*a: Any, **k: Any) -> None:
        raise KeyError("internal")

    monkeypatch.setattr(rf, "evaluate_run", boom)
    res = rel.invoke("evaluate", finished_run, "--data", "synthetic:20")
    assert res.exit_code == 3 and "internal error: KeyError" in res.output
    assert "Traceback" not in res.output


def test_missing_dependency_is_a_usage_error(rel, finished_run: Path, monkeypatch,
                                             tmp_path: Path) -> None:  # fmt: skip
    rel_run = finished_run
    import modalsurv.data.sources as sources
    from modalsurv.errors import MissingDependencyError

    def missing(*a: Any, **k: Any) -> None:
        raise MissingDependencyError("the thing needs 'ray': pip install 'modalsurv[ray]'")

    monkeypatch.setattr(sources, "load_data", missing)
    res = rel.invoke("predict", rel_run, "--data", "synthetic:20", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2 and "modalsurv[ray]" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_is_a_config_error(rel, tmp_path: Path) -> None:
    cfg = rel.write_yaml(tmp_path / "c.yaml", rel.tiny_config(train={"device": "cuda"}))
    res = rel.invoke("train", cfg, "--out", tmp_path / "out")
    assert res.exit_code == 2 and "train.device 'cuda'" in res.output, res.output
    assert not (tmp_path / "out" / "config.yaml").exists()
