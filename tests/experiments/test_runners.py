import json
import re
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from modalsurv.data.synthetic import make_cohort
from modalsurv.experiments.grid import parse_grid
from modalsurv.experiments.runners import (
    LocalRunner,
    RayRunner,
    ablation_table,
    get_runner,
    run_grid,
    scaling_curve,
)
from modalsurv.train import cv as cv_module
from modalsurv.train.cv import subsample_train

TINY_BASE = {
    "preprocess": {"rna_top_variance_genes": 10, "rna_pca": 3},
    "model": {"latent_dim": 8, "hidden_dim": 8, "attention_pool_dim": 8, "n_heads": 2,
              "n_bins": 5, "stack": "none"},
    "train": {"epochs": 2, "patience": 2, "batch_size": 16, "device": "cpu"},
    "cv": {"folds": 2},
    "baselines": [],
}


def tiny_grid(**axes):
    return parse_grid({"name": "tiny", "base": TINY_BASE, **axes})


@pytest.fixture(scope="module")
def cohort():
    c, _ = make_cohort(n=48, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                       n_genes=20)  # fmt: skip
    return c


class Events:
    def __init__(self):
        self.seen = []

    def __call__(self, event, **info):
        self.seen.append((event, info))

    def trials(self, event):
        return [i["trial"] for e, i in self.seen if e == event]


def test_subsample_train_is_stratified_nested_and_deterministic():
    event = np.zeros(200, dtype=bool)
    event[::4] = True  # 25 % events
    idx = np.arange(10, 190)
    half = subsample_train(idx, event, 0.5, seed=3)
    quarter = subsample_train(idx, event, 0.25, seed=3)
    assert np.array_equal(subsample_train(idx, event, 0.5, seed=3), half)
    assert not np.array_equal(subsample_train(idx, event, 0.5, seed=4), half)
    assert np.isin(half, idx).all() and len(np.unique(half)) == len(half)
    n_ev, n_cens = event[idx].sum(), (~event[idx]).sum()
    assert event[half].sum() == int(n_ev / 2 + 0.5) and (~event[half]).sum() == int(n_cens / 2 + 0.5)
    assert event[quarter].sum() == int(n_ev / 4 + 0.5)
    assert np.isin(quarter, half).all()  # a smaller fraction is a subset of a larger one
    assert subsample_train(idx, event, 1.0, seed=3) is idx


def test_data_fraction_keeps_test_folds_and_shrinks_training(tmp_path, cohort):
    grid = tiny_grid(data_fraction=[0.5, 1.0], modalities=[["clinical", "slide"]])
    res = run_grid(grid, cohort, tmp_path)
    assert list(res["data_fraction"]) == [0.5, 1.0] and (res["status"] == "ok").all()
    half, full = res["trial"]
    p_half = pd.read_csv(tmp_path / "trials" / half / "predictions.csv", dtype={"patient": str})
    p_full = pd.read_csv(tmp_path / "trials" / full / "predictions.csv", dtype={"patient": str})
    key = ["patient", "repeat", "fold"]
    pd.testing.assert_frame_equal(p_half[key].sort_values(key).reset_index(drop=True),
                                  p_full[key].sort_values(key).reset_index(drop=True))  # fmt: skip
    m_half = pd.read_csv(tmp_path / "trials" / half / "metrics.csv")
    m_full = pd.read_csv(tmp_path / "trials" / full / "metrics.csv")
    assert list(m_half["n_test"]) == list(m_full["n_test"])
    for f, n_train in enumerate(m_full["n_train"]):
        test = set(p_full.loc[p_full["fold"] == f, "patient"])
        train_event = cohort.event[[i not in test for i in cohort.ids]]
        expected = sum(max(1, int(0.5 * k + 0.5)) for k in (train_event.sum(),
                                                               (~train_event).sum()))  # fmt: skip
        assert n_train == len(train_event)
        assert m_half["n_train"].iloc[f] == expected
        assert abs(expected - n_train / 2) <= 1


def test_resume_skips_finished_trials_and_extends_the_grid(tmp_path, cohort):
    grid = tiny_grid(fusion=["concat", "mean"])
    first = run_grid(grid, cohort, tmp_path)
    summary = tmp_path / "trials" / first["trial"].iloc[0] / "summary.json"
    stamp = summary.stat().st_mtime_ns
    for t in first["trial"]:
        d = tmp_path / "trials" / t
        assert {p.name for p in d.iterdir()} == {"config.yaml", "metrics.csv", "predictions.csv",
                                                 "folds.csv", "summary.json",
                                                 "timing.json"}  # fmt: skip
        assert json.loads((d / "summary.json").read_text())["status"] == "ok"
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert len(on_disk) == 2 and list(on_disk["trial"]) == list(first["trial"])

    events = Events()
    bigger = tiny_grid(fusion=["concat", "mean", "gated"])
    again = run_grid(bigger, cohort, tmp_path, progress=events)
    assert sorted(events.trials("trial_skipped")) == sorted(first["trial"])
    assert len(events.trials("trial_end")) == 1
    assert summary.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.iloc[:2].reset_index(drop=True), first)
    assert list(again["fusion"]) == ["concat", "mean", "gated"]

    events = Events()
    run_grid(grid, cohort, tmp_path, resume=False, progress=events)
    assert not events.trials("trial_skipped") and len(events.trials("trial_end")) == 2


def test_failing_trial_is_recorded_and_retried_on_resume(tmp_path, cohort, monkeypatch):
    real = cv_module.cross_validate

    def flaky(cohort, config, **kw):
        if config.model.fusion == "concat":
            raise RuntimeError("boom on concat")
        return real(cohort, config, **kw)

    monkeypatch.setattr(cv_module, "cross_validate", flaky)
    events = Events()
    res = run_grid(tiny_grid(fusion=["concat", "mean"]), cohort, tmp_path, progress=events)
    bad, good = res.iloc[0], res.iloc[1]
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: boom on concat"
    assert np.isnan(bad["harrell_c_mean"])
    assert good["status"] == "ok" and 0 <= good["harrell_c_mean"] <= 1
    err = json.loads((tmp_path / "trials" / bad["trial"] / "error.json").read_text())
    assert err["error"] == "RuntimeError: boom on concat" and "Traceback" in err["traceback"]
    assert not (tmp_path / "trials" / bad["trial"] / "summary.json").exists()
    assert events.trials("trial_failed") == [bad["trial"]]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2

    monkeypatch.setattr(cv_module, "cross_validate", real)
    events = Events()
    fixed = run_grid(tiny_grid(fusion=["concat", "mean"]), cohort, tmp_path, progress=events)
    assert events.trials("trial_skipped") == [good["trial"]]
    assert (fixed["status"] == "ok").all()
    assert not (tmp_path / "trials" / bad["trial"] / "error.json").exists()


def test_a_finished_trial_keeps_its_fold_assignment(tmp_path, cohort):
    """folds.csv lived only in the trial's checkpoints, removed when the trial finished: a
    finished trial kept no record of its folds. Now folds.csv stays, the run's assignment
    (every patient, the training fraction aside), and a resume leaves it as it was."""
    from modalsurv.train.cv import plan_cv

    grid = tiny_grid(modalities=[["clinical"]], data_fraction=[0.5])
    (trial,) = grid.expand()
    run_grid(grid, cohort, tmp_path)
    d = tmp_path / "trials" / trial.id
    assert not (d / "checkpoints").exists()
    written = (d / "folds.csv").read_bytes()
    got = pd.read_csv(d / "folds.csv", dtype={"patient": str}, keep_default_na=False)
    want = plan_cv(cohort, trial.config).assignment
    assert len(want) == len(cohort)
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    run_grid(grid, cohort, tmp_path)  # resumed: the finished trial is skipped
    assert (d / "folds.csv").read_bytes() == written


def test_resume_onto_another_cohort_is_refused(tmp_path, cohort):
    grid = tiny_grid(modalities=[["clinical"]])
    run_grid(grid, cohort, tmp_path)
    other = cohort.subset(np.arange(40))
    with pytest.raises(ValueError, match="different cohort.*--no-resume"):  # the CLI's option
        run_grid(grid, other, tmp_path)
    assert len(run_grid(grid, other, tmp_path, resume=False)) == 1


def test_an_interrupted_fresh_run_leaves_no_old_trial_for_a_resume(tmp_path, cohort):
    """resume=False on another cohort, stopped after its first trial: the resume that
    follows must redo the second trial on the new cohort, not take the old cohort's."""
    grid = tiny_grid(fusion=["concat", "mean"])
    run_grid(grid, cohort, tmp_path / "g")
    other = cohort.subset(np.arange(40))

    class StopAfterOne(LocalRunner):
        def run(self, cohort, trials, out, on_done, progress):
            def done(trial, outcome):
                on_done(trial, outcome)
                raise KeyboardInterrupt

            super().run(cohort, trials, out, done, progress)

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, other, tmp_path / "g", runner=StopAfterOne(), resume=False)
    resumed = run_grid(grid, other, tmp_path / "g")
    clean = run_grid(grid, other, tmp_path / "clean")
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds", errors="ignore"),
                                  clean.drop(columns="seconds", errors="ignore"))  # fmt: skip
    # every trial's files are the same bytes (the wall time, in timing.json, aside)
    summaries = sorted((tmp_path / "clean").rglob("summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        rel = path.relative_to(tmp_path / "clean")
        assert (tmp_path / "g" / rel).read_bytes() == path.read_bytes(), rel
        assert json.loads((path.parent / "timing.json").read_text())["seconds"] > 0


def test_unknown_runner_and_missing_modality_fail_before_training(tmp_path, cohort):
    with pytest.raises(ValueError, match="unknown runner 'dask'"):
        run_grid(tiny_grid(modalities=[["clinical"]]), cohort, tmp_path, runner="dask")
    from modalsurv.errors import ConfigError

    with pytest.raises(ConfigError, match="lacks"):
        run_grid(tiny_grid(modalities=[["clinical", "ct"]]), cohort, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_an_unreachable_ray_address_is_refused_at_once(tmp_path, monkeypatch):
    """ray.init retries a head that is not there for minutes: the address is tried first."""
    import socket

    from modalsurv.errors import UnreachableError

    port = _closed_port()
    started = time.perf_counter()
    with pytest.raises(UnreachableError, match=f"no Ray cluster answers at '127.0.0.1:{port}'"):
        get_runner("ray", f"127.0.0.1:{port}")
    with pytest.raises(UnreachableError, match=r"ray://127\.0\.0\.1.*\(from RAY_ADDRESS\)"):
        monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
        get_runner("ray")
    assert time.perf_counter() - started < 5
    monkeypatch.delenv("RAY_ADDRESS")
    with socket.socket() as listening:  # something answers: the runner is made
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        addr = f"127.0.0.1:{listening.getsockname()[1]}"
        assert get_runner("ray", addr).address == addr
    # "auto" and a local Ray are Ray's to resolve (it answers those at once)
    assert get_runner("ray", "auto").address == "auto"
    assert get_runner("ray").address is None


def test_train_with_an_unreachable_ray_address_fails_before_reading_data(tmp_path):
    from typer.testing import CliRunner

    from modalsurv.cli import app

    port = _closed_port()
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "no_such_folder"),
                                   "--out", str(out), "--runner", "ray",
                                   "--ray-address", f"127.0.0.1:{port}"])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert f"127.0.0.1:{port}" in res.output and "--ray-address" in res.output
    assert not out.exists()


def test_scaling_curve_and_ablation_pool_folds_over_seeds(tmp_path, cohort):
    grid = tiny_grid(modalities=[["clinical"], ["clinical", "rna"]], seed=[0, 1],
                     data_fraction=[1.0, 0.5])  # fmt: skip
    res = run_grid(grid, cohort, tmp_path, runner=LocalRunner())
    assert len(res) == 8 and (res["status"] == "ok").all()
    folds = pd.concat(
        [pd.read_csv(tmp_path / "trials" / t / "metrics.csv").assign(trial=t) for t in res["trial"]]
    ).merge(res[["trial", "modalities", "data_fraction", "seed"]], on="trial")

    curve = scaling_curve(res)
    assert list(curve.columns[:5]) == ["model", "modalities", "encoder", "fusion", "data_fraction"]
    assert list(curve["data_fraction"]) == [0.5, 1.0, 0.5, 1.0]
    assert (curve["n_trials"] == 2).all() and (curve["harrell_c_n"] == 4).all()
    for _, row in curve.iterrows():
        sel = folds[(folds["modalities"] == row["modalities"])
                    & (folds["data_fraction"] == row["data_fraction"])]  # fmt: skip
        for m in ("harrell_c", "uno_c", "ibs"):
            assert row[f"{m}_mean"] == pytest.approx(sel[m].mean(), rel=1e-12)
            assert row[f"{m}_std"] == pytest.approx(sel[m].std(ddof=1), rel=1e-10)

    table = ablation_table(res)
    assert list(table["modalities"]) == ["clinical", "clinical+rna"] * 2
    sel = folds[(folds["modalities"] == "clinical+rna") & (folds["data_fraction"] == 1.0)]
    row = table[(table["modalities"] == "clinical+rna") & (table["data_fraction"] == 1.0)].iloc[0]
    assert row["harrell_c_mean"] == pytest.approx(sel["harrell_c"].mean(), rel=1e-12)
    failed = res.assign(status=["failed"] + ["ok"] * 7)
    assert scaling_curve(failed)["n_trials"].sum() == 7


@pytest.fixture(scope="module")
def cluster():
    """A two-node local Ray cluster (one CPU each), joined by this process: the Ray
    tests share it (and its warm workers)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    start = time.perf_counter()
    store = {"object_store_memory": 80 * 1024**2}
    try:
        c = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "include_dashboard": False, **store})
        c.add_node(num_cpus=1, **store)
        ray.init(address=c.address, log_to_driver=False)
    except Exception as err:  # sandboxes without shared memory / sockets
        pytest.skip(f"ray cannot start here: {type(err).__name__}: {err}")
    if time.perf_counter() - start > 45:
        ray.shutdown()
        c.shutdown()
        pytest.skip("ray started too slowly for a unit test on this machine")
    yield c
    ray.shutdown()
    c.shutdown()


def _nodes(cluster):
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_local_and_ray_give_identical_results(tmp_path, cohort, cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # the address comes from the env
    runner = get_runner("ray")
    assert isinstance(runner, RayRunner) and runner.address == cluster.address
    grid = tiny_grid(fusion=["concat", "cross_attention_gated"])
    events = Events()
    ray_res = run_grid(grid, cohort, tmp_path / "ray", runner=runner, progress=events)
    local = run_grid(grid, cohort, tmp_path / "local", runner="local")
    assert (local["status"] == "ok").all()
    pd.testing.assert_frame_equal(ray_res, local)
    for t in local["trial"]:
        for name in ("metrics.csv", "predictions.csv", "folds.csv"):
            a = (tmp_path / "ray" / "trials" / t / name).read_text()
            assert a == (tmp_path / "local" / "trials" / t / name).read_text()
    # the workers' events reached the driver, tagged with their trial; both nodes worked
    starts = [i for e, i in events.seen if e == "trial_start"]
    assert sorted(i["trial"] for i in starts) == sorted(local["trial"])
    assert {i["node"] for i in starts} == _nodes(cluster)
    for t in local["trial"]:
        mine = [e for e, i in events.seen if i.get("trial") == t]
        assert mine.count("fold_end") == 2 and "epoch_end" in mine
        assert mine.index("trial_start") < mine.index("fold_start") < mine.index("trial_end")


def test_train_spreads_its_folds_over_two_nodes_with_local_numbers(tmp_path, cluster):
    from typer.testing import CliRunner

    from modalsurv.cli import app

    small = {"n": 48, "max_tiles": 4, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8,
             "n_genes": 20}  # fmt: skip
    # the stacked default (every fold model comes back from its worker after predicting)
    model = {k: v for k, v in TINY_BASE["model"].items() if k != "stack"}
    config = {**TINY_BASE, "model": model,
              "data": {"source": "synthetic", "params": small},
              "cv": {"folds": 3}, "baselines": ["coxph_clinical"]}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cli = CliRunner()
    args = ["train", str(tmp_path / "run.yaml"), "--out"]
    local = cli.invoke(app, [*args, str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = cli.invoke(app, [*args, str(tmp_path / "ray"), "--runner", "ray",
                              "--ray-address", cluster.address])  # fmt: skip
    assert remote.exit_code == 0, remote.output
    for name in ("metrics.csv", "predictions.csv", "baseline_predictions.csv", "metrics.json"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    # the fold_start events of the workers reached the command line's progress
    shown = set(re.findall(r"fold \d \(repeat 0\) on node (\w{8})", remote.output))
    assert shown == {n[:8] for n in _nodes(cluster)}


def test_ray_folds_resume_and_raise_the_folds_own_error(tmp_path, cohort, cluster):
    (trial,) = tiny_grid(modalities=[["clinical", "wsi"]]).expand()
    config = trial.config.model_copy(update={"cv": trial.config.cv.model_copy(
        update={"folds": 3})})  # fmt: skip
    runner = RayRunner(address=cluster.address)
    whole = cv_module.cross_validate(cohort, config, resume_dir=tmp_path, executor=runner)
    (tmp_path / "repeat_0" / "fold_1" / "done.json").unlink()  # fold 1 was interrupted
    events = Events()
    resumed = cv_module.cross_validate(cohort, config, resume_dir=tmp_path, executor=runner,
                                       progress=events)  # fmt: skip
    pd.testing.assert_frame_equal(resumed.metrics, whole.metrics)
    pd.testing.assert_frame_equal(resumed.predictions, whole.predictions)
    seen = [(e, i.get("fold")) for e, i in events.seen]
    assert [f for e, f in seen if e == "fold_resumed"] == [0, 2]
    assert [f for e, f in seen if e == "fold_start"] == [1]
    start = next(i for e, i in events.seen if e == "fold_start")
    assert start["node"] in _nodes(cluster) and start["n_folds"] == 3
    epochs = [k for k, (e, f) in enumerate(seen) if e == "epoch_end" and f == 1]
    assert epochs and max(epochs) < seen.index(("fold_end", 1))  # flushed before the result
    bad = config.model_copy(update={"model": config.model.model_copy(
        update={"modalities": ["clinical", "ct"]})})  # fmt: skip
    with pytest.raises(Exception) as err:
        cv_module.cross_validate(cohort, bad, executor=runner)
    assert type(err.value).__module__ == "modalsurv.errors"  # the fold's error, unwrapped
    assert "ct" in str(err.value)


def test_local_runner_resumes_inside_a_trial_fold_by_fold(tmp_path, cohort):
    grid = tiny_grid(modalities=[["clinical", "wsi"]])
    (trial,) = grid.expand()
    fresh = run_grid(grid, cohort, tmp_path / "fresh")
    # an interrupted earlier run left its finished folds in the trial's checkpoints/
    ckpt = tmp_path / "resumed" / "trials" / trial.id / "checkpoints"
    cv_module.cross_validate(cohort, trial.config, resume_dir=ckpt)
    events = Events()
    resumed = run_grid(grid, cohort, tmp_path / "resumed", progress=events)
    assert events.trials("fold_resumed") == [trial.id, trial.id]
    assert not events.trials("fold_start")
    assert not ckpt.exists()  # removed once the trial is recorded
    pd.testing.assert_frame_equal(resumed, fresh)


def test_stack_weights_over_a_data_scaling_grid(tmp_path, cohort):
    """The stack's weights per fold and training size, read back from a grid folder, and the
    figure of fusion against clinical-only weight by training size."""
    from modalsurv.experiments.runners import stack_weight_curve
    from modalsurv.report.plots import stack_weights_by_size

    base = {**TINY_BASE, "model": {**TINY_BASE["model"],
                                   "stack": ["modalsurv", "modalsurv_clinical", "coxnet"]},
            "train": {**TINY_BASE["train"], "n_init": 5}}  # fmt: skip
    grid = parse_grid({"name": "scaling", "base": base, "data_fraction": [0.5, 1.0],
                       "modalities": [["clinical", "rna"]]})  # fmt: skip
    run_grid(grid, cohort, tmp_path)
    w = stack_weight_curve(tmp_path)
    assert set(w["candidate"]) == {"modalsurv", "modalsurv_clinical", "coxnet"}
    assert set(w["data_fraction"]) == {0.5, 1.0} and set(w["modalities"]) == {"clinical+rna"}
    per_fold = w.groupby(["data_fraction", "fold"])["weight"].sum()
    assert np.allclose(per_fold, 1.0) and (w["weight"] >= 0).all()
    small = w.loc[w["data_fraction"] == 0.5, "n_train"].max()
    assert small < w.loc[w["data_fraction"] == 1.0, "n_train"].min()
    fig = stack_weights_by_size(w)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "modalsurv", "modalsurv_clinical"]
    plain = tmp_path / "plain"
    run_grid(tiny_grid(data_fraction=[1.0]), cohort, plain)
    assert stack_weight_curve(plain).empty
    # another grid in the same folder: only the trials of its results.csv are drawn
    grid2 = parse_grid({"name": "scaling", "base": base, "data_fraction": [1.0],
                        "modalities": [["clinical", "rna"]], "seed": [3]})  # fmt: skip
    now = run_grid(grid2, cohort, tmp_path, resume=False)
    assert set(stack_weight_curve(tmp_path)["trial"]) == set(now["trial"])
    assert len(list(tmp_path.glob("trials/*/config.yaml"))) == 3


def _refeatured(cohort):
    """The same patients and labels with other features (e.g. re-extracted slides)."""
    from modalsurv.cohort import Cohort

    feats = {m: cohort.features[m].copy() for m in cohort.modalities}
    feats["clinical"] = feats["clinical"][::-1].copy()
    return Cohort(cohort.ids, cohort.time, cohort.event, features=feats, present=cohort.present,
                  meta=cohort.meta, bag_mask=cohort.bag_mask,
                  feature_names=cohort.feature_names)  # fmt: skip


def test_a_folder_whose_first_run_finished_no_trial_records_the_resumed_cohort(tmp_path, cohort):
    """cohort.json was kept from a run that finished nothing: the resume on cohort B was
    then refused on B, and one on the first cohort took B's trials as its own."""
    grid = tiny_grid(modalities=[["clinical"]])
    other = _refeatured(cohort)

    class Interrupted(LocalRunner):
        def run(self, cohort, trials, out, on_done, progress):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, cohort, tmp_path, runner=Interrupted())
    first = run_grid(grid, other, tmp_path)
    events = Events()
    pd.testing.assert_frame_equal(run_grid(grid, other, tmp_path, progress=events), first)
    assert events.trials("trial_skipped") == list(first["trial"])
    with pytest.raises(ValueError, match="different cohort"):
        run_grid(grid, cohort, tmp_path)


def test_the_fold_checkpoints_of_an_interrupted_trial_are_not_resumed_on_another_cohort(
        tmp_path, cohort, monkeypatch):  # fmt: skip
    """Same ids and labels, other features: the fold finished on the first cohort was
    taken into the trial on the second (the fold assignment is the same)."""
    grid = tiny_grid(modalities=[["clinical"]])
    other = _refeatured(cohort)
    real = cv_module._save_fold

    def save_then_stop(d, outcome):
        real(d, outcome)
        raise KeyboardInterrupt

    monkeypatch.setattr(cv_module, "_save_fold", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, cohort, tmp_path / "g")
    monkeypatch.setattr(cv_module, "_save_fold", real)
    assert list((tmp_path / "g").rglob("done.json"))  # one fold finished on the first cohort
    with pytest.raises(ValueError, match="different cohort"):
        run_grid(grid, other, tmp_path / "g")
    fresh = run_grid(grid, other, tmp_path / "g", resume=False)
    pd.testing.assert_frame_equal(fresh, run_grid(grid, other, tmp_path / "clean"))


def test_finished_trials_without_their_cohort_record_are_not_resumed(tmp_path, cohort):
    grid = tiny_grid(modalities=[["clinical"]])
    run_grid(grid, cohort, tmp_path)
    (tmp_path / "cohort.json").unlink()
    with pytest.raises(ValueError, match="not its cohort.json"):
        run_grid(grid, _refeatured(cohort), tmp_path)


def test_a_resume_with_other_groups_for_leave_one_group_out_folds_is_refused(tmp_path, cohort):
    """cv.groups folds follow meta[groups], which the cohort fingerprint leaves out: a
    relabelled site used to resume the finished trials made on the old folds."""
    from modalsurv.cohort import Cohort

    def with_sites(sites):
        meta = cohort.meta.copy()
        meta["site"] = sites
        return Cohort(cohort.ids, cohort.time, cohort.event, features=cohort.features,
                      present=cohort.present, meta=meta, bag_mask=cohort.bag_mask)  # fmt: skip

    sites = np.array(["a", "b", "c"] * 16, dtype=object)
    grid = parse_grid({"name": "g", "base": {**TINY_BASE, "cv": {"groups": "site"}},
                       "fusion": ["concat", "mean"]})  # fmt: skip
    first = run_grid(grid, with_sites(sites), tmp_path)
    assert (first["status"] == "ok").all()
    pd.testing.assert_frame_equal(run_grid(grid, with_sites(sites.copy()), tmp_path), first)
    moved = sites.copy()
    moved[:6] = "c"
    with pytest.raises(ValueError, match="different cohort") as err:
        run_grid(grid, with_sites(moved), tmp_path)
    assert "groups.fingerprint" in str(err.value)
    # a folder recorded before the groups were (no 'groups' key) resumes as it did
    record = json.loads((tmp_path / "cohort.json").read_text())
    del record["groups"]
    (tmp_path / "cohort.json").write_text(json.dumps(record))
    pd.testing.assert_frame_equal(run_grid(grid, with_sites(sites), tmp_path), first)


def test_a_fresh_run_interrupted_before_its_first_trial_leaves_no_old_table(tmp_path, cohort):
    """resume=False unmarked the old trials but kept their results.csv, which a report
    then read as this run's results."""
    from modalsurv.experiments.grid_report import is_grid_folder

    grid = tiny_grid(modalities=[["clinical"]])
    run_grid(grid, cohort, tmp_path)

    class Interrupted(LocalRunner):
        def run(self, cohort, trials, out, on_done, progress):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, _refeatured(cohort), tmp_path, runner=Interrupted(), resume=False)
    assert not (tmp_path / "results.csv").exists() and not is_grid_folder(tmp_path)


def test_cohort_fingerprint_sees_the_tile_mask(cohort):
    """A real all-zero tile and a padding slot hold the same numbers: only the tile mask
    tells them apart, so a resume onto a cohort that differs there must be caught."""
    from modalsurv.cohort import Cohort
    from modalsurv.experiments.runners import cohort_fingerprint

    bag = next(m for m in cohort.bag_mask)
    mask = cohort.bag_mask[bag].copy()
    row, col = np.argwhere(cohort.present[bag][:, None] & ~mask)[0]  # a padding slot
    mask[row, col] = True

    def rebuilt(bag_mask):
        return Cohort(cohort.ids, cohort.time, cohort.event, features=cohort.features,
                      present=cohort.present, meta=cohort.meta,
                      feature_names=cohort.feature_names,
                      bag_mask=dict(cohort.bag_mask) | {bag: bag_mask})  # fmt: skip

    same = rebuilt(cohort.bag_mask[bag])
    assert cohort_fingerprint(same) == cohort_fingerprint(cohort)
    other = rebuilt(mask)
    assert np.array_equal(other.features[bag], cohort.features[bag])
    assert cohort_fingerprint(other) != cohort_fingerprint(cohort)


def test_a_fresh_grid_unfinishes_only_its_own_units(tmp_path):
    """``experiment --no-resume`` on a folder holding a user's files deletes only the grid's
    own markers (trials/<id>/summary.json, their fold checkpoints' done.json): a user's
    notes/summary.json or data/done.json used to go too."""
    from modalsurv.experiments.runners import _fold_units, _units

    mine = [tmp_path / "notes" / "summary.json", tmp_path / "data" / "x" / "done.json",
            tmp_path / "summary.json"]  # fmt: skip
    grid = [tmp_path / "trials" / "t1" / "summary.json",
            tmp_path / "trials" / "t1" / "checkpoints" / "repeat_0" / "fold_2" / "done.json"]  # fmt: skip
    for f in mine + grid:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    _units(tmp_path).unfinish_all()
    _fold_units(tmp_path).unfinish_all()
    assert all(f.is_file() for f in mine)
    assert not any(f.exists() for f in grid)
