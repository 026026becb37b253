"""End-to-end CLI runs on a tiny synthetic cohort: train -> run folder -> resume ->
evaluate -> predict; plus scan and config errors. Small on purpose (CI has 2 cores)."""

import json
import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from modalsurv.cli import app

runner = CliRunner()
TINY = {"n": 60, "max_tiles": 6, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 40}


def _config(tmp_path, **data_params):
    cfg = {
        "seed": 1,
        "data": {"source": "synthetic", "params": {**TINY, **data_params}},
        "model": {"hidden_dim": 16, "latent_dim": 16, "n_bins": 8, "attention_pool_dim": 8},
        "preprocess": {"rna_pca": 4, "rna_top_variance_genes": 20},
        "train": {"epochs": 2, "patience": 2, "batch_size": 16},
        "cv": {"folds": 2},
        "baselines": ["coxph_clinical"],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "run"
    res = runner.invoke(app, ["train", str(_config(tmp)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "ModalSurv minus each baseline, paired folds" in res.output
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    for name in ["config.yaml", "folds.csv", "predictions.csv", "metrics.json", "report.html"]:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "models" / "repeat_0").is_dir()
    preds = pd.read_csv(run_dir / "predictions.csv")
    assert len(preds) == 60 and preds["risk"].notna().all()
    summary = json.loads((run_dir / "metrics.json").read_text())
    # the stacked default, its ModalSurv candidate on its own, and the baseline
    assert set(summary["models"]) == {"modalsurv", "modalsurv_plain", "coxph_clinical"}
    assert summary["model_kind"] == "stack" and len(summary["stack"]) == 2
    assert not summary["optimistic"]
    assert not list(run_dir.rglob("*.tmp"))  # atomic writes leave no temp files
    assert "ModalSurv minus each baseline, paired" in (run_dir / "report.html").read_text("utf-8")


def test_rerun_needs_resume_and_resume_reproduces(run_dir):
    cfg = run_dir / "config.yaml"
    res = runner.invoke(app, ["train", str(cfg), "--out", str(run_dir)])
    assert res.exit_code == 2 and "--resume" in res.output
    before = pd.read_csv(run_dir / "metrics.csv")
    res = runner.invoke(app, ["train", str(cfg), "--out", str(run_dir), "--resume"])
    assert res.exit_code == 0, res.output
    after = pd.read_csv(run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(before, after)


def test_evaluate_and_predict(run_dir, tmp_path):
    ext = tmp_path / "external.yaml"
    ext.write_text(yaml.safe_dump({"data": {"source": "synthetic",
                                            "params": {**TINY, "n": 40, "seed": 5, "external": True}}}))
    res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(ext), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    # where the scores went was said nowhere (only the JSON was printed)
    assert str(run_dir / "evaluation_external.json") in "".join(res.output.split()), res.output
    scores = json.loads((run_dir / "evaluation_external.json").read_text())
    assert 0.0 <= scores["harrell_c"] <= 1.0 and scores["n"] == 40
    lo, hi = scores["harrell_c_ci95"]
    assert lo <= scores["harrell_c"] <= hi
    assert scores["absent_modalities"] == [] and set(scores["modality_coverage"]) >= {"mri"}
    # a cohort without one of the model's modalities: recorded, and the report says so
    no_mri = tmp_path / "no_mri.yaml"
    no_mri.write_text(yaml.safe_dump({"data": {"source": "synthetic", "params": {
        **TINY, "n": 40, "seed": 5, "external": True,
        "modalities": ["clinical", "rna", "wsi", "slide"]}}}))  # fmt: skip
    res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(no_mri), "--n-boot", "5",
                              "--name", "no_mri"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lacking = json.loads((run_dir / "evaluation_no_mri.json").read_text())
    assert lacking["absent_modalities"] == ["mri"] and lacking["modality_coverage"]["mri"] == 0
    assert "no_mri: no patient has mri" in (run_dir / "report.html").read_text("utf-8")
    res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(ext), "--name",
                              "../../escape"])  # fmt: skip
    assert res.exit_code == 2 and "without path separators" in res.output
    assert not list(run_dir.parent.glob("escape*")) and not list(run_dir.glob("evaluation_..*"))
    out = tmp_path / "p.csv"
    res = runner.invoke(app, ["predict", str(run_dir), "--data", str(ext), "--out", str(out),
                              "--times", "12,24"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert list(df.columns) == [
        "patient", "risk", "risk_sd", "risk_p05", "risk_p95", "expected_time",
        "survival_at_12", "survival_at_12_p05", "survival_at_12_p95",
        "survival_at_24", "survival_at_24_p05", "survival_at_24_p95", "n_members"]
    assert (df["survival_at_12"] >= df["survival_at_24"] - 1e-9).all()
    # the ensemble's members (2 folds x n_init seeds) bracket the ensemble's own numbers
    assert (df["n_members"] == 2 * 5).all() and "10 member models" in " ".join(res.output.split())
    assert (df["risk_p05"] <= df["risk_p95"]).all() and (df["risk_sd"] > 0).all()
    assert (df["survival_at_12_p05"] <= df["survival_at_12"] + 1e-6).all()
    assert (df["survival_at_12"] <= df["survival_at_12_p95"] + 1e-6).all()
    # evaluate recorded the CV -> external drop and showed it in the rebuilt report
    checks = json.loads((run_dir / "metrics.json").read_text())["diagnostics"]["checks"]
    assert any(c["check"] == "external_drop:external" for c in checks)
    page = (run_dir / "report.html").read_text("utf-8")
    assert "CV → external gap" in page and "external_drop:external" in page


def test_config_error_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  fusoin: concat\n")
    res = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "model.fusoin" in res.output


def test_scan_reports_problems(tmp_path):
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort, _ = make_cohort(n=4, seed=0, **{k: v for k, v in TINY.items() if k != "n"})
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    (root / "clinical_data" / f"{cohort.ids[0]}.json").write_text("{not json")
    res = runner.invoke(app, ["scan", str(root), "--layout", "chimera-task1"])
    assert res.exit_code == 1
    assert cohort.ids[0] in res.output
    # the problems end in one count (the listing alone left the reader counting lines)
    last = res.output.strip().splitlines()[-1]
    assert re.fullmatch(r"(\d+) problem\(s\): 1 error\(s\), (\d+) warning\(s\), concerning"
                        r" \d+ patient\(s\)", last), last  # fmt: skip


def _chimera_with_leak_everywhere(tmp_path):
    """A task-1 folder whose every record holds BCR_PSA, as every real CHIMERA record does."""
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort, _ = make_cohort(n=6, seed=0, **{k: v for k, v in TINY.items() if k != "n"},
                            missing={"wsi": 0.0, "rna": 0.0, "mri": 0.0})  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    for pid in cohort.ids:
        rec = root / "clinical_data" / f"{pid}.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "BCR_PSA": 0.3}))
    return root, len(cohort)


def test_scan_strict_passes_a_declared_leak_column_with_one_note(tmp_path):
    """It was a warning per patient ("6 problem(s): 0 error(s), 6 warning(s)"), so --strict
    refused every real CHIMERA folder; an undeclared column still fails --strict."""
    root, n = _chimera_with_leak_everywhere(tmp_path)
    res = runner.invoke(app, ["scan", str(root), "--layout", "chimera-task1", "--strict"])
    assert res.exit_code == 0, res.output
    note = (f"declared label-leak column, present in {n} of {n} record(s), never used as a"
            " feature")  # fmt: skip
    assert res.output.count(note) == 1 and "[note]" in res.output and "BCR_PSA" in res.output
    assert res.output.strip().splitlines()[-1] == "no problems found"
    res = runner.invoke(app, ["scan", str(root), "--layout", "chimera-task1", "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert [(p["severity"], p["field"]) for p in listed] == [("note", "BCR_PSA")]
    assert note == listed[0]["reason"]
    rec = root / "clinical_data" / sorted(p.name for p in (root / "clinical_data").iterdir())[0]
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "surgeon": "A"}))
    res = runner.invoke(app, ["scan", str(root), "--layout", "chimera-task1", "--strict"])
    assert res.exit_code == 1 and "column not in the schema" in res.output
    res = runner.invoke(app, ["scan", str(root), "--layout", "chimera-task1", "--json",
                              "--strict"])  # fmt: skip
    listed = json.loads(res.output)
    assert res.exit_code == 1
    assert [p["severity"] for p in listed] == ["warning", "note"]


def test_strict_loading_passes_a_declared_leak_column_with_one_note(tmp_path, capsys):
    """train/evaluate/predict --strict read data through _load_data: the same note, no
    refusal."""
    from modalsurv.cli import _load_data

    root, n = _chimera_with_leak_everywhere(tmp_path)
    loaded = _load_data(f"chimera-task1:{root}", None, strict=True)
    assert len(loaded.cohort) == n and loaded.problems == []
    out = capsys.readouterr().out
    assert out.count(f"declared label-leak column, present in {n} of {n} record(s)") == 1
    assert "BCR_PSA" in out
    from modalsurv.data.summary import data_summary

    assert [p.field for p in loaded.notes] == ["BCR_PSA"]  # kept: a run's data.json says it
    summary = data_summary(loaded)
    assert [p["field"] for p in summary["notes"]] == ["BCR_PSA"] and summary["n_warnings"] == 0


def test_experiment_grid_runs_and_resumes(tmp_path):
    base = yaml.safe_load(_config(tmp_path).read_text())
    base["baselines"] = []
    base["train"]["epochs"] = 1
    base.setdefault("model", {})["stack"] = "none"  # fusions compared as plain networks
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "fusions", "base": base, "fusion": ["concat", "mean"]}))
    out = tmp_path / "g"
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 and set(results["fusion"]) == {"concat", "mean"}
    assert (results["status"] == "ok").all()
    paired = pd.read_csv(out / "paired.csv")  # mean vs concat (the first), fold by fold
    assert list(paired["fusion"]) == ["mean"] and paired["n_pairs"].iloc[0] == 2
    assert "paired on folds" in res.output
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out)])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(results, pd.read_csv(out / "results.csv"))
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--reference",
                              "fusion=mean"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert list(pd.read_csv(out / "paired.csv")["fusion"]) == ["concat"]
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--reference",
                              "fusion=late"])  # fmt: skip
    assert res.exit_code == 2 and "matches no grid settings" in res.output
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--reference", "late"])
    assert res.exit_code == 2 and "'late' is not key=value" in res.output


def test_experiment_keeps_no_stale_comparison_and_loads_data_with_the_grid_seed(tmp_path):
    base = yaml.safe_load(_config(tmp_path).read_text())
    base.update(baselines=[], seed=1)
    base["train"]["epochs"] = 1
    base.setdefault("model", {})["stack"] = "none"
    two, one = tmp_path / "two.yaml", tmp_path / "one.yaml"
    two.write_text(yaml.safe_dump({"name": "g", "base": base, "fusion": ["concat", "mean"]}))
    one.write_text(yaml.safe_dump({"name": "g", "base": base, "fusion": ["concat"]}))
    out = tmp_path / "g"
    assert runner.invoke(app, ["experiment", str(two), "--out", str(out)]).exit_code == 0
    assert (out / "paired.csv").is_file()
    res = runner.invoke(app, ["experiment", str(one), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not (out / "paired.csv").exists()  # the first grid's comparison is gone
    # --data given explicitly loads the same cohort the grid loads itself (its seed, 1)
    spec = f"synthetic:{TINY['n']}"
    grid_data = yaml.safe_load(one.read_text())
    grid_data["base"]["data"] = {"source": "synthetic", "params": {"n": TINY["n"]}}
    one.write_text(yaml.safe_dump(grid_data))
    a, b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["experiment", str(one), "--out", str(a)]).exit_code == 0
    res = runner.invoke(app, ["experiment", str(one), "--out", str(b), "--data", spec])
    assert res.exit_code == 0, res.output
    fa = json.loads((a / "cohort.json").read_text())["fingerprint"]
    fb = json.loads((b / "cohort.json").read_text())["fingerprint"]
    assert fa == fb


def test_grid_report_keeps_the_per_group_references_of_experiment_by(tmp_path):
    base = yaml.safe_load(_config(tmp_path).read_text())
    base.update(baselines=[])
    base["train"]["epochs"] = 1
    base.setdefault("model", {})["stack"] = "none"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": base, "fusion": ["concat", "mean"],
                                    "data_fraction": [0.5, 1.0]}))  # fmt: skip
    out = tmp_path / "g"
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--reference",
                              "fusion=mean", "--by", "data_fraction"])  # fmt: skip
    assert res.exit_code == 0, res.output
    paired = pd.read_csv(out / "paired.csv")
    assert sorted(paired["data_fraction"]) == [0.5, 1.0] and set(paired["fusion"]) == {"concat"}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "minus its group&#x27;s reference" in page or "minus its group's reference" in page
    for ref in paired["reference"]:
        assert ref in page  # both groups' comparisons, as experiment printed them
    pd.testing.assert_frame_equal(paired, pd.read_csv(out / "paired.csv"))  # not rewritten


def test_extract_command_then_resume(tmp_path):
    from modalsurv.data.synthetic import make_cohort, write_chimera
    from modalsurv.io.store import FeatureStore

    cohort, _ = make_cohort(n=2, seed=3, **{k: v for k, v in TINY.items() if k != "n"},
                            missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})
    root = write_chimera(cohort, tmp_path / "c", task=1, slide_px=1024, mpp=0.5,
                         mri_shape=(8, 24, 24), max_slides=1)
    args = ["extract", str(root), "--layout", "chimera-task1", "--out", str(tmp_path / "s"),
            "--tile-encoder", "timm:resnet10t", "--tile-size", "64", "--max-tiles", "4",
            "--batch-size", "4"]  # device: auto
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "--random-weights" in res.output  # resnet10t has no weights
    args.append("--random-weights")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "done 2" in res.output
    store = FeatureStore(tmp_path / "s")
    assert set(store.patients("wsi")) == set(cohort.ids)
    assert store.meta("wsi")["encoder"] == "timm:resnet10t"
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "skipped 2" in res.output


def test_run_folder_has_out_of_fold_gate_weights(run_dir):
    w = pd.read_csv(run_dir / "gate_weights.csv", index_col="patient")
    assert len(w) == 60 and {"clinical", "wsi", "rna"} <= set(w.columns)
    sums = w.fillna(0).sum(axis=1)
    assert ((sums - 1).abs() < 1e-4).all()  # weights over present modalities sum to one
    assert w.isna().any().any()  # absent modalities are left out, not counted as 0


def test_shipped_configs_are_valid_and_init_config_copies_them(tmp_path):
    from modalsurv import configs
    from modalsurv.config import load_config
    from modalsurv.experiments.grid import load_grid

    names = configs.available()
    assert {"synthetic", "breast_cancer", "chimera_task1", "experiments/ablation"} <= set(names)
    for name in names:
        res = runner.invoke(app, ["init-config", name, "--out", str(tmp_path / f"{name.replace('/', '_')}.yaml")])
        assert res.exit_code == 0, res.output
        path = tmp_path / f"{name.replace('/', '_')}.yaml"
        (load_grid if name.startswith("experiments/") else load_config)(path)  # valid
    res = runner.invoke(app, ["init-config", "synthetic", "--out", str(tmp_path / "synthetic.yaml")])
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(app, ["init-config", "nope"])
    assert res.exit_code == 2 and "no shipped config" in res.output
    res = runner.invoke(app, ["init-config", "--list", "--out", str(tmp_path / "l.yaml")])
    assert res.exit_code == 2 and "give one" in res.output  # was: --out silently ignored
    assert not (tmp_path / "l.yaml").exists()


def test_rich_progress_follows_parallel_trials_and_folds():
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from modalsurv.cli import RichProgress

    out = StringIO()
    p = Progress(console=Console(file=out, width=200))
    rp = RichProgress(p)

    def done(key):
        return next(t.completed for t in p.tasks if t.id == rp.tasks[key])

    rp("grid_start", n_trials=3, n_todo=2)  # one trial skipped (finished before)
    assert done("trials") == 1
    rp("trial_submitted", trial="a", label="concat")
    rp("trial_start", trial="a", label="concat", node="abcdef123456")
    rp("cv_start", trial="a", n_folds=2, n_repeats=1)
    for fold in (0, 1):  # two folds at once, as on Ray workers
        rp("fold_start", trial="a", repeat=0, fold=fold, n_folds=2, n_repeats=1,
           node="abcdef123456")  # fmt: skip
        rp("epoch_end", trial="a", repeat=0, fold=fold, epoch=float(fold), train_loss=1.0,
           val_cindex=0.6)  # fmt: skip
    assert {("epochs", "a", 0, 0), ("epochs", "a", 0, 1), ("folds", "a")} <= set(rp.tasks)
    assert done(("epochs", "a", 0, 1)) == 2
    rp("fold_end", trial="a", repeat=0, fold=0)
    assert ("epochs", "a", 0, 0) not in rp.tasks and done(("folds", "a")) == 1
    rp("trial_end", trial="a", label="concat")
    assert done("trials") == 2 and not [k for k in rp.tasks if isinstance(k, tuple)]
    rp("trial_failed", trial="b", label="mean", error="RuntimeError: boom")
    assert done("trials") == 3
    text = out.getvalue()
    assert "trial concat on node abcdef12" in text
    assert "fold 1 (repeat 0) on node abcdef12" in text
    assert "trial mean failed: RuntimeError: boom" in text
    # a plain run (no trial): a fresh folds bar for each cross-validation
    rp("cv_start", n_folds=3, n_repeats=1)
    rp("fold_resumed", repeat=0, fold=0)
    rp("fold_end", repeat=0, fold=0, harrell_c=0.7)  # follows every resumed fold
    assert done(("folds", None)) == 1
    rp("cv_start", n_folds=3, n_repeats=1)
    assert done(("folds", None)) == 0


def test_result_tables_fold_long_model_names_instead_of_cutting_them(monkeypatch):
    import io

    from rich.console import Console

    from modalsurv import cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=44, color_system=None))
    df = pd.DataFrame({"model": ["modalsurv_clinical_only_network", "coxph_clinical"],
                       "harrell_c": [0.71234, 0.70111], "n": [5, 5]})  # fmt: skip
    cli._print_table(df, "results")
    out = buf.getvalue()
    assert "…" not in out
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if "│" in line)
    assert "modalsurv_clinical_only_network" in cells and "0.712" in out
    # numbers right-justified: the value ends at its column's right border
    assert any(line.rstrip().endswith("0.701 │") for line in out.splitlines())
    # a column with one value in every row is said once, under the table
    assert "in every row: n 5" in out and not any(line.rstrip().endswith("5 │") for line in out.splitlines())


def test_command_list_shows_each_summary_as_one_paragraph():
    """`modalsurv --help` lists every command with its docstring's first paragraph reflowed
    to the terminal, not cut where the source wraps (typer's rich mode keeps those breaks)."""
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "│ demo " in line]
    assert len(lines) == 1, res.output
    assert "raw files -> extract -> ModalSurv on every modality" in lines[0]
    assert "the challenge metric." in lines[0]
    for info in app.registered_commands:
        assert info.short_help and "\n" not in info.short_help, info.name


def test_an_unknown_device_is_a_usage_error_naming_the_option(tmp_path):
    for args in (["challenge", "task1", "--model", str(tmp_path), "--input", str(tmp_path),
                  "--output", str(tmp_path / "o"), "--device", "gpu"],
                 ["extract", str(tmp_path), "--layout", "chimera-task1", "--out",
                  str(tmp_path / "s"), "--device", "gpu"]):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "--device 'gpu' is not a device" in res.output and "internal error" not in res.output
    # a device torch knows but this code does not run on: was an internal error (exit 3)
    from modalsurv.devices import resolve_device
    from modalsurv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.device 'mps': modalsurv runs on 'cpu'"):
        resolve_device("mps")


def test_a_wrong_challenge_model_folder_gets_a_hint_about_the_model(tmp_path):
    """A --model that is not a model folder was told to "fix the input file" (one case) or
    that `modalsurv scan` lists the cohort's problems (--batch): neither is at fault. Exit 2,
    an option error, as `evaluate` and `export-model` give for a run folder that is not one
    (was 1)."""
    inp = tmp_path / "input"
    inp.mkdir()
    for args in (["--input", str(inp), "--output", str(tmp_path / "o")],
                 ["--batch", str(inp)]):  # fmt: skip
        res = runner.invoke(app, ["challenge", "task1", "--model", str(tmp_path / "nope"), *args])
        assert res.exit_code == 2, res.output
        assert "not a finished modalsurv run folder" in res.output
        assert "check --model" in res.output and "export-model" in res.output, res.output
        assert "fix the input" not in res.output and "modalsurv scan" not in res.output
    assert not (tmp_path / "o").exists()
    (tmp_path / "nope").mkdir()  # a folder, but no run: the same for every command
    for args in (["challenge", "task1", "--model", str(tmp_path / "nope"), "--input", str(inp),
                  "--output", str(tmp_path / "o")],
                 ["evaluate", str(tmp_path / "nope"), "--data", "synthetic:n=10"],
                 ["export-model", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "not a finished" in res.output, (args, res.output)


def test_an_output_file_that_is_a_folder_is_refused_before_any_work(run_dir, tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    for args in (["predict", str(run_dir), "--data", "synthetic:20", "--out", str(folder)],
                 ["report", str(run_dir), "--out", str(folder)],
                 ["challenge", "task1", "--model", str(run_dir), "--batch", str(tmp_path),
                  "--out", str(folder)]):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "is a folder; give the file to write" in res.output, res.output


def test_paths_and_names_with_markup_or_emoji_codes_print_as_written(run_dir, tmp_path, monkeypatch):
    """A folder named 'q[/bold]' or a file 'a:b:c' is the user's, not Rich markup: before the
    fix the closing tag raised a MarkupError after the outputs were written (exit 3)."""
    import io

    from rich.console import Console

    from modalsurv import cli

    ext = tmp_path / "external.yaml"
    ext.write_text(yaml.safe_dump({"data": {"source": "synthetic",
                                            "params": {**TINY, "n": 20, "seed": 5, "external": True}}}))
    out = tmp_path / "q[" / "bold]" / "p:b:x.csv"  # the path's text holds 'q[/bold]'
    out.parent.mkdir(parents=True)
    res = runner.invoke(app, ["predict", str(run_dir), "--data", str(ext), "--out", str(out)])
    assert res.exit_code == 0, res.output
    said = "".join(res.output.split())  # the console wraps long paths at any character
    assert out.exists() and "q[/bold]" in said and "p:b:x.csv" in said
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=120, color_system=None, emoji=False))
    cli._print_table(pd.DataFrame({"model [/red]": ["m[/]", "n:b:"], "c": [0.5, 0.6]}), "t")
    assert "m[/]" in buf.getvalue() and "n:b:" in buf.getvalue() and "model [/red]" in buf.getvalue()


def test_the_data_line_lists_errors_before_warnings(monkeypatch):
    """Thirteen repaired values must not push the one dropped patient off the screen."""
    import io

    from rich.console import Console

    from modalsurv import cli
    from modalsurv.data.sources import LoadedData
    from modalsurv.data.synthetic import make_cohort
    from modalsurv.errors import Problem

    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=200, color_system=None))
    problems = [Problem("warning", f"value {i} imputed", "f.json", f"P{i}", "age") for i in range(13)]
    problems.append(Problem("error", "patient without label", "g.json", "Q", "time"))
    cohort, _ = make_cohort(n=20, **{k: v for k, v in TINY.items() if k != "n"})
    cli._print_data_summary(LoadedData(cohort, problems, source="s"))
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("  ")]
    assert "patient without label" in lines[0] and "... and 2 more" in lines[-1]


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--max-tiles", "0", "--max-tiles: expected an integer >= 1; found 0"),
    ("--mpp", "-1", "--mpp: expected a number > 0"),
    ("--mpp", "nan", "--mpp: expected a number > 0"),
    ("--min-tissue", "1.5", "--min-tissue: expected a fraction in [0, 1]; found 1.5"),
    ("--batch-size", "0", "--batch-size: expected an integer >= 1"),
    ("--tile-size", "8", "--tile-size: expected an integer >= 16"),
    ("--limit", "0", "--limit: expected an integer >= 1"),
])  # fmt: skip
def test_impossible_extraction_numbers_are_usage_errors_before_any_slide(tmp_path, option,
                                                                         value, words):  # fmt: skip
    """They used to fail every patient one by one (exit 1, a store of failures)."""
    res = runner.invoke(app, ["extract", str(tmp_path), "--layout", "chimera-task1", "--out",
                              str(tmp_path / "s"), option, value])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert words in " ".join(res.output.split()) and not (tmp_path / "s").exists()


def test_another_time_unit_and_times_past_follow_up_are_said(run_dir, tmp_path):
    """An external cohort in days against a model trained in months scores the same C but
    wrong curves: evaluate warns and records it; predict warns for times past the longest
    training follow-up (the last estimate is carried forward)."""
    import shutil

    from modalsurv.cohort import Cohort
    from modalsurv.data.synthetic import make_cohort
    from modalsurv.errors import DataWarning
    from modalsurv.runs import evaluate_run, predict_run, time_scale_note

    run = shutil.copytree(run_dir, tmp_path / "run")
    c, _ = make_cohort(**{**TINY, "n": 40, "seed": 5, "external": True})
    days = Cohort(c.ids, c.time * 30.4, c.event, features=c.features, present=c.present,
                  bag_mask=c.bag_mask)  # fmt: skip
    with pytest.warns(DataWarning, match="another time unit"):
        scores = evaluate_run(run, days, n_boot=5, name="days")
    assert "median follow-up" in scores["time_scale_warning"]
    assert time_scale_note(c.time, c.time * 2) is None  # a longer follow-up is not a unit
    longest = pd.read_csv(run / "predictions.csv")["time"].max()
    with pytest.warns(DataWarning, match="past the longest training follow-up"):
        predict_run(run, c, tmp_path / "p.csv", [1.0, float(longest) * 2])


def test_evaluating_on_the_training_patients_says_it_is_in_sample(run_dir, tmp_path):
    """Was: the in-sample C of the run's own patients reported as 'external' silently."""
    import shutil

    from modalsurv.data.synthetic import make_cohort
    from modalsurv.errors import DataWarning
    from modalsurv.runs import evaluate_run

    run = shutil.copytree(run_dir, tmp_path / "run")
    own, _ = make_cohort(**{**TINY, "seed": 0})  # the run's cohort (ids 1000..1059)
    with pytest.warns(DataWarning, match=r"60 of 60 patients .* are in the run's training"
                                         r" cohort.*in-sample"):  # fmt: skip
        scores = evaluate_run(run, own, n_boot=5, name="own")
    assert scores["training_patients"] == 60
    other, _ = make_cohort(**{**TINY, "n": 40, "seed": 5, "external": True})
    assert not set(other.ids) & set(own.ids)  # an external cohort is other patients
    scores = evaluate_run(run, other, n_boot=5, name="other")
    assert "training_patients" not in scores


def test_the_extraction_bar_counts_each_patient_once():
    """Was: 19/16 (skipped patients added to a total that left them out, a patient with two
    failing image groups advanced twice, and a failed one then 'done' once more)."""
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from modalsurv.cli import RichProgress

    p = Progress(console=Console(file=StringIO(), width=200))
    rp = RichProgress(p)

    def bar():
        task = next(t for t in p.tasks if t.id == rp.tasks["patients"])
        return task.completed, task.total

    rp("start", total=3, skipped=2)
    assert bar() == (2, 5)
    rp("patient", patient="a", index=1, total=3)
    rp("failed", patient="a", path="a.tif", reason="slides: truncated")
    rp("failed", patient="a", path="a.mha", reason="mri: unreadable")
    rp("patient", patient="b", index=2, total=3)
    assert bar() == (3, 5)
    rp("failed", patient="b", path="b.mha", reason="mri: unreadable")
    rp("done", patient="b", done=1, total=3)  # its slides were fine
    assert bar() == (4, 5)
    rp("patient", patient="c", index=3, total=3)
    rp("failed", patient="c", path="c.tif", reason="slides: truncated")
    rp("finish", report=None)
    assert bar() == (5, 5)


def test_experiment_records_the_data_it_ran_on_and_fails_when_no_trial_finished(tmp_path,
                                                                                monkeypatch):  # fmt: skip
    """--data used to run the trials on one cohort while their config.yaml recorded the
    grid's base data (a rerun of a trial's config trained on another cohort); a grid whose
    every trial failed exited 0."""
    base = yaml.safe_load(_config(tmp_path).read_text())
    base.update(baselines=[])
    base["train"]["epochs"] = 1
    base.setdefault("model", {})["stack"] = "none"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": base, "fusion": ["concat"]}))
    out = tmp_path / "g"
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--data",
                              "synthetic:40:3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (trial,) = (out / "trials").glob("*/config.yaml")
    recorded = yaml.safe_load(trial.read_text())["data"]
    assert recorded["source"] == "synthetic" and recorded["params"]["n"] == 40
    assert recorded["params"]["seed"] == 3
    import modalsurv.train.cv as cv_module

    def failing(cohort, config, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(cv_module, "cross_validate", failing)
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(tmp_path / "t")])
    assert res.exit_code == 1 and "every one of the" in " ".join(res.output.split()), res.output


def test_an_output_inside_what_the_command_reads_is_refused_before_any_work(run_dir, tmp_path):
    """predict --out RUN/predictions.csv used to overwrite the run's out-of-fold predictions
    (and RUN/metrics.json, RUN/models/...), report --out RUN/metrics.csv wrote the page over
    the metrics, and predict --out over its own manifest replaced the input."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient,time,event,age\na,1,1,3\n")
    for args, what in (
        (["predict", str(run), "--data", "synthetic:20", "--out", str(run / "predictions.csv")],
         "is inside the run folder"),
        (["predict", str(run), "--data", "synthetic:20", "--out", str(run / "models" / "p.csv")],
         "is inside the run folder"),
        (["report", str(run), "--out", str(run / "metrics.csv")], "is inside the folder"),
        (["predict", str(run), "--data", f"manifest:{manifest}", "--out", str(manifest)],
         "is the data"),
    ):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and what in res.output, res.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert manifest.read_text().startswith("patient,time")
    res = runner.invoke(app, ["report", str(run), "--out", str(run / "again.html")])
    assert res.exit_code == 0, res.output  # a page may still go into the folder
    config = tmp_path / "cfg.yaml"  # a user's file outside the run, given by mistake
    config.write_text("seed: 3\n")
    res = runner.invoke(app, ["report", str(run), "--out", str(config)])
    assert res.exit_code == 2 and "not an HTML page" in res.output, res.output
    assert config.read_text() == "seed: 3\n"


def test_a_file_as_train_out_is_refused_before_the_data_are_read(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    res = runner.invoke(app, ["train", "--data", "synthetic:30", "--out", str(tmp_path / "notes.txt")])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output, res.output
    assert "data synthetic" not in res.output  # refused before the cohort is read


def test_export_model_names_a_missing_run_folder(tmp_path):
    """It used to answer '--task is needed: the run was not trained on a CHIMERA folder'."""
    res = runner.invoke(app, ["export-model", str(tmp_path / "nosuch"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "is not a folder: give a finished run folder" in res.output
    assert not (tmp_path / "m").exists()


def test_ctrl_c_during_train_says_what_is_kept_and_resume_continues(tmp_path, monkeypatch):
    """Ctrl-C after the first fold's checkpoint used to stop without a word; now it names
    the kept folds and --resume, exits 130, and the same command with --resume finishes."""
    from modalsurv import cli

    class CtrlC(cli.RichProgress):
        def __call__(self, event, **info):
            super().__call__(event, **info)
            if event == "fold_end":
                raise KeyboardInterrupt

    cfg, out = _config(tmp_path), tmp_path / "run"
    monkeypatch.setattr(cli, "RichProgress", CtrlC)
    res = runner.invoke(app, ["train", str(cfg), "--out", str(out)])
    assert res.exit_code == 130, res.output
    assert "1 finished fold(s) kept in" in res.output and "--resume" in res.output
    monkeypatch.undo()
    res = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert (out / "metrics.json").is_file()


def test_a_training_patient_named_na_is_recognised_in_an_evaluated_cohort(run_dir, tmp_path):
    """predictions.csv was read with pandas' NA handling: patient "NA" became NaN and was
    not counted among the training patients the evaluated cohort repeats."""
    import shutil

    from modalsurv.cohort import Cohort
    from modalsurv.data.synthetic import make_cohort
    from modalsurv.errors import DataWarning
    from modalsurv.runs import evaluate_run

    run = shutil.copytree(run_dir, tmp_path / "run")
    preds = pd.read_csv(run / "predictions.csv", dtype={"patient": str})
    first = preds["patient"].iloc[0]
    preds.loc[preds["patient"] == first, "patient"] = "NA"
    preds.to_csv(run / "predictions.csv", index=False)
    own, _ = make_cohort(**{**TINY, "seed": 0})
    ids = ["NA" if i == first else i for i in own.ids]
    renamed = Cohort(ids, own.time, own.event, features=own.features, present=own.present,
                     bag_mask=own.bag_mask)  # fmt: skip
    with pytest.warns(DataWarning, match="in the run's training"):
        scores = evaluate_run(run, renamed, n_boot=5, name="own")
    assert scores["training_patients"] == len(own)


def test_extract_takes_the_slides_resolution_from_slide_mpp(tmp_path):
    """A slide without µm/px in its metadata was refused with "give it with mpp_override",
    an option the command line did not have: `--slide-mpp` now gives it, is recorded with
    the store's settings, and must be a resolution."""
    import numpy as np
    import tifffile

    img = np.full((512, 512, 3), 240, np.uint8)
    img[128:384, 128:384] = (170, 90, 150)  # a stained square on glass
    tifffile.imwrite(tmp_path / "p1.tif", img, tile=(256, 256), photometric="rgb")
    (tmp_path / "m.csv").write_text(f"patient,wsi_path\np1,{tmp_path / 'p1.tif'}\n")
    base = ["extract", str(tmp_path / "m.csv"), "--layout", "manifest", "--tile-encoder",
            "timm:resnet10t", "--tile-size", "64", "--max-tiles", "4", "--min-tissue", "0.25",
            "--random-weights"]  # fmt: skip
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "s0")])
    assert res.exit_code == 1 and "--slide-mpp" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "s1"), "--slide-mpp", "0.5"])
    assert res.exit_code == 0, res.output
    from modalsurv.io.store import FeatureStore

    store = FeatureStore(tmp_path / "s1")
    assert store.patients("wsi") == ["p1"]
    assert store.meta("wsi")["settings"]["mpp_override"] == 0.5
    for bad in ("0", "nan", "250"):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / "s2"), "--slide-mpp", bad])
        assert res.exit_code == 2 and "--slide-mpp" in res.output, res.output


def test_flags_show_no_value_type_in_the_help():
    """typer >= 0.29 showed `--debug <bool>` and `--help <bool>` as if a flag took a value,
    and `--set <list[str]>` for a repeatable KEY=VALUE."""
    for args in (["--help"], ["train", "--help"], ["challenge", "--help"], ["scan", "--help"]):
        res = runner.invoke(app, args, env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert res.exit_code == 0, res.output
        assert "<bool>" not in res.output and "list[" not in res.output, res.output
    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert "KEY=VALUE" in res.output and "--no-resume" in res.output


def test_the_error_hint_says_where_debug_goes():
    """The hint said '--debug shows the traceback'; `modalsurv train X --debug`, the obvious
    reading, is 'No such option: --debug'. It belongs before the command."""
    res = runner.invoke(app, ["train", "nosuch.yaml"])
    assert res.exit_code == 2 and "modalsurv --debug COMMAND" in res.output, res.output


def test_a_folder_or_the_other_kind_of_yaml_is_named_as_such(tmp_path):
    """A run folder given as `train`'s config (or a grid folder as `experiment`'s grid) was
    '[Errno 21] Is a directory' with exit 1; a grid given to `train`, or a run config to
    `experiment`, listed every key as unknown without saying which command reads it."""
    from modalsurv import configs

    (tmp_path / "grid.yaml").write_text(configs.text("experiments/ablation"), encoding="utf-8")
    (tmp_path / "run.yaml").write_text(configs.text("synthetic"), encoding="utf-8")
    for args, want in (
        (["train", str(tmp_path)], "is a folder; give a run config"),
        (["experiment", str(tmp_path)], "is a folder; give an experiment grid"),
        (["train", str(tmp_path / "grid.yaml")], "run it with `modalsurv experiment"),
        (["experiment", str(tmp_path / "run.yaml")], "run it with `modalsurv train"),
    ):  # fmt: skip
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert res.exit_code == 2 and want in " ".join(res.output.split()), (args, res.output)
    assert not (tmp_path / "out").exists()


def test_challenge_batch_out_inside_the_model_or_the_folder_is_refused(tmp_path):
    """`challenge --batch --out RUN/predictions.csv` replaced the run's out-of-fold
    predictions (and the report built from them) with the held-out cases' answers; predict
    refused the same path, challenge did not."""
    run, held = tmp_path / "run", tmp_path / "held"
    run.mkdir()
    held.mkdir()
    (run / "predictions.csv").write_text("patient,risk\na,1\n")
    for out, what in ((run / "predictions.csv", "is inside the --model folder"),
                      (held / "answers.csv", "is inside the --batch folder")):  # fmt: skip
        res = runner.invoke(app, ["challenge", "task1", "--model", str(run), "--batch", str(held),
                                  "--out", str(out)])  # fmt: skip
        assert res.exit_code == 2 and what in " ".join(res.output.split()), res.output
    assert (run / "predictions.csv").read_text() == "patient,risk\na,1\n"
    assert not (held / "answers.csv").exists()


def test_case_input_into_a_used_folder_names_replace(tmp_path):
    """A non-empty --out said 'replace one that case-input wrote' and hinted at `modalsurv
    scan`; the option that does it, --replace, was named nowhere."""
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort, _ = make_cohort(n=3, seed=0, **{k: v for k, v in TINY.items() if k != "n"})
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    out = tmp_path / "input"
    args = ["case-input", "task1", str(root), str(cohort.ids[0]), "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "--replace" in res.output, res.output
    assert runner.invoke(app, [*args, "--replace"]).exit_code == 0


def test_resume_into_a_folder_without_folds_says_it_starts_over(tmp_path):
    """`train --resume` with a mistyped --out trained from scratch without a word."""
    res = runner.invoke(app, ["train", "--data", f"manifest:{tmp_path / 'none.csv'}", "--out",
                              str(tmp_path / "rnu"), "--resume"])  # fmt: skip
    assert res.exit_code == 1, res.output  # the missing manifest, after the warning
    assert "holds no finished fold; training from the start" in " ".join(res.output.split())


def test_challenge_batch_names_both_files_it_writes(tmp_path, monkeypatch):
    """--batch --out P.csv also writes P_metrics.json (the organisers' aggregate); the
    terminal named only the CSV."""
    from modalsurv.challenge import answer
    from modalsurv.challenge.model import ChallengeModel

    table = pd.DataFrame({"case": ["1", "2"], "prediction": [3.0, 5.0], "risk": [0.2, 0.1],
                          "modalities": ["clinical"] * 2, "n_problems": [0, 0], "time": [4.0, 9.0],
                          "event": [1, 0], "error": [None, None]})  # fmt: skip
    monkeypatch.setattr(ChallengeModel, "load", classmethod(lambda cls, *a, **k: object()))
    monkeypatch.setattr(answer, "score_folder",
                        lambda *a, **k: answer.BatchResult(table, 1.0, 0.0))
    out = tmp_path / "held.csv"
    res = runner.invoke(app, ["challenge", "task1", "--model", str(tmp_path / "m"), "--batch",
                              str(tmp_path / "held"), "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "held_metrics.json") in "".join(res.output.split()), res.output


def test_a_ray_address_without_the_ray_runner_is_refused(tmp_path, monkeypatch):
    """`train --ray-address auto` (no --runner ray) trained locally without a word; the
    same address from RAY_ADDRESS is the environment's, not a mistake."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for command in (["train", "--data", f"manifest:{tmp_path / 'none.csv'}"],
                    ["experiment", str(tmp_path / "grid.yaml")]):
        res = runner.invoke(app, [*command, "--out", str(tmp_path / "o"), "--ray-address", "auto"])
        assert res.exit_code == 2 and "add --runner ray" in res.output, res.output
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["train", "--data", f"manifest:{tmp_path / 'none.csv'}", "--out",
                              str(tmp_path / "o")], env={"RAY_ADDRESS": "auto"})  # fmt: skip
    assert res.exit_code == 1 and "manifest file not found" in res.output, res.output


def test_a_weights_folder_that_is_missing_or_a_file_is_refused(tmp_path):
    """Weights are found by file name in each --weights folder: a mistyped folder, or the
    checkpoint file itself, was skipped without a word."""
    (tmp_path / "uni.bin").write_bytes(b"x")
    for weights, want in ((tmp_path / "nosuch", "no such folder"),
                          (tmp_path / "uni.bin", "is a file; give the folder")):  # fmt: skip
        for args in (["challenge", "task1", "--model", str(tmp_path / "m"), "--input",
                      str(tmp_path), "--output", str(tmp_path / "o")],
                     ["export-model", str(tmp_path / "m"), "--out", str(tmp_path / "x")]):
            res = runner.invoke(app, [*args, "--weights", str(weights)])
            assert res.exit_code == 2 and want in " ".join(res.output.split()), res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


def test_ctrl_c_during_extract_says_what_the_store_keeps(tmp_path, monkeypatch):
    """Ctrl-C in extract exited 130 with an empty line: now it names the patients the
    store keeps and says the same command continues (as train does)."""
    import numpy as np

    import modalsurv.features.extract as fx
    from modalsurv.io.store import FeatureStore

    out = tmp_path / "store"

    def two_then_ctrl_c(layout, root, out, **kw):
        FeatureStore(out).write_many("slide", {"001": np.ones(4), "002": np.zeros(4)})
        raise KeyboardInterrupt

    monkeypatch.setattr(fx, "run_extract", two_then_ctrl_c)
    res = runner.invoke(app, ["extract", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 130, res.output
    said = " ".join(res.output.split())
    assert "interrupted: 2 patient(s) stored kept in" in said and "same command again" in said

    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(fx, "run_extract", ctrl_c)
    res = runner.invoke(app, ["extract", str(tmp_path), "--out", str(tmp_path / "new")])
    assert res.exit_code == 130 and "no patient had been written" in res.output, res.output


def test_ctrl_c_during_experiment_says_what_the_grid_keeps(tmp_path, monkeypatch):
    """Ctrl-C in experiment exited 130 with an empty line: now it names the finished
    trials (and folds) kept and how to go on; --no-resume would start afresh."""
    import modalsurv.experiments.runners as rn

    out = tmp_path / "grid"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "t", "base": {"data": {"source": "synthetic"}}}))

    def one_trial_then_ctrl_c(grid, cohort=None, out=None, **kw):
        for marker in ("trials/a/summary.json", "trials/b/checkpoints/repeat_0/fold_0/done.json"):
            (out / marker).parent.mkdir(parents=True, exist_ok=True)
            (out / marker).write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(rn, "run_grid", one_trial_then_ctrl_c)
    res = runner.invoke(app, ["experiment", str(grid), "--out", str(out), "--no-resume"])
    assert res.exit_code == 130, res.output
    said = " ".join(res.output.split())
    assert "1 finished trial(s) and 1 finished fold(s) of unfinished trials kept in" in said
    assert "same command again" in said and "without --no-resume" in said


def test_challenge_without_output_needs_the_containers_folder(tmp_path, monkeypatch):
    """Without --output the answer went to /output on any machine: made there (as root)
    or a bare permission error. Where that folder does not exist, a usage error names
    --output (before the model is read); where it exists (the container), it is used."""
    from modalsurv import cli

    absent = tmp_path / "output"
    monkeypatch.setattr(cli, "CHALLENGE_OUTPUT", absent, raising=False)
    args = ["challenge", "task1", "--model", str(tmp_path / "nope"), "--input", str(tmp_path)]
    res = runner.invoke(app, args)
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "--output not given" in said, res.output
    assert str(absent) in "".join(res.output.split()) and not absent.exists()
    absent.mkdir()  # as in the container: taken, and the run goes on to read the model
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "not a finished modalsurv run folder" in res.output, res.output
