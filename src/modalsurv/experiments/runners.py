"""Run an experiment grid: every trial is a cross-validation, every trial a folder.

``out/`` layout::

    grid.yaml            the grid as run (base resolved)
    cohort.json          a fingerprint of the cohort (and of its cv.groups column); resuming
                         finished trials or folds onto another cohort is refused
    results.csv          one row per trial × model (rewritten after every finished trial)
    trials/<id>/         config.yaml, metrics.csv (per fold), predictions.csv (out-of-fold),
                         folds.csv (the outer folds' patients, as a run folder's),
                         summary.json (written last: marks the trial finished) or error.json

A finished trial is skipped on resume (its row is rebuilt from summary.json, so the table
is the same as in an uninterrupted run); a failed trial is recorded with its error and
retried on the next resume; a failure never stops the grid. ``LocalRunner`` runs trials
one after another (and resumes inside a trial fold by fold); ``RayRunner`` runs them as
Ray tasks that get the cohort through the object store and return their results to the
driver, which alone writes files, so a cluster needs no shared filesystem. Both call the
same :func:`execute_trial`, so the numbers are the same.

Both runners are also fold executors (``train.cv.FoldExecutor``): ``RayRunner`` spreads
the outer folds of one cross-validation over Ray workers (``modalsurv train --runner
ray``); the driver checkpoints each fold as it arrives and assembles them in fold order.
Progress events of Ray tasks (trial and fold start / end, epochs) reach the driver's
``progress`` callback through a small actor (:mod:`modalsurv.experiments.sink`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, dump_config
from modalsurv.errors import ConfigError, UnreachableError
from modalsurv.experiments.grid import ExperimentGrid, Trial, dump_grid
from modalsurv.folders import GRID, refuse_other_kind
from modalsurv.resume import UnitFolder
from modalsurv.train.cv import (
    CV_UNITS,
    METRICS,
    FoldDone,
    FoldJob,
    FoldOutcome,
    SequentialFolds,
    run_fold,
)
from modalsurv.utils import Progress, atomic_write_csv, atomic_write_text, exclusive_lock

SETTINGS = ("modalities", "encoder", "fusion", "data_fraction", "seed")


# ---------------------------------------------------------------------- one trial
@dataclass
class TrialOutcome:
    """What one trial produced: CV results, or the error that stopped it."""

    metrics: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    folds: pd.DataFrame | None = None  # the outer fold assignment (CVResult.folds)
    summary: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    node: str | None = None  # the Ray node it ran on (None: this process)


def execute_trial(
    cohort: Cohort,
    config: RunConfig,
    resume_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrialOutcome:
    """Cross-validate one trial's config; an exception becomes a recorded error."""
    from modalsurv.train.cv import cross_validate

    start = time.perf_counter()
    try:
        res = cross_validate(cohort, config, progress=progress, resume_dir=resume_dir)
    except Exception as err:  # one bad trial must not stop the grid
        return TrialOutcome(error=f"{type(err).__name__}: {err}",
                            traceback=traceback.format_exc(),
                            seconds=time.perf_counter() - start)  # fmt: skip
    return TrialOutcome(metrics=res.metrics, predictions=res.predictions, folds=res.folds,
                        summary=res.summary, seconds=time.perf_counter() - start)  # fmt: skip


OnDone = Callable[[Trial, TrialOutcome], None]


class Runner(Protocol):
    """Runs trials and hands each outcome to ``on_done`` (in the driver process); runs the
    outer folds of one cross-validation likewise (a ``train.cv.FoldExecutor``)."""

    def run(self, cohort: Cohort, trials: list[Trial], out: Path, on_done: OnDone,
            progress: Progress | None) -> None: ...  # fmt: skip

    def run_folds(self, cohort: Cohort, config: RunConfig, baselines: list[str],
                  jobs: list[FoldJob], on_done: FoldDone, progress: Progress | None
                  ) -> None: ...  # fmt: skip


class LocalRunner(SequentialFolds):
    """Trials one after another in this process; folds checkpointed for resume. As a fold
    executor: the folds one after another (``SequentialFolds``)."""

    def run(self, cohort: Cohort, trials: list[Trial], out: Path, on_done: OnDone,
            progress: Progress | None) -> None:  # fmt: skip
        for trial in trials:
            cb = None
            if progress is not None:

                def cb(event: str, _t: str = trial.id, **info: Any) -> None:
                    progress(event, trial=_t, **info)

                progress("trial_start", trial=trial.id, label=trial.label)
            ckpt = _trial_dir(out, trial) / "checkpoints"
            on_done(trial, execute_trial(cohort, trial.config, ckpt, cb))


# ---------------------------------------------------------------------- Ray tasks
Threads = tuple[int | None, int | None]  # (torch, BLAS) thread counts inside a task


def blas_threads() -> int | None:
    """The BLAS thread count of this process (OpenBLAS / MKL via threadpoolctl)."""
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return max(counts) if counts else None


def _worker_setup(threads: Threads) -> str:
    """Inside a Ray task: torch's and BLAS's thread counts (Ray sets one per CPU a task
    holds; float reductions, e.g. an SVD, depend on them); returns the node id."""
    import ray

    torch_n, blas_n = threads
    if torch_n is not None:
        import torch

        torch.set_num_threads(torch_n)
    if blas_n is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_n, user_api="blas")  # for the rest of this process
    return str(ray.get_runtime_context().get_node_id())


def _forwarder(sink: Any, **tags: Any) -> Progress:
    """A progress callback inside a Ray task: events go to the driver's sink actor."""

    def forward(event: str, **info: Any) -> None:
        sink.push.remote(event, {**tags, **info})

    return forward


def _ray_trial(cohort: Cohort, config: dict[str, Any], threads: Threads, trial: str,
               label: str, sink: Any) -> TrialOutcome:  # fmt: skip
    import ray

    node = _worker_setup(threads)
    cb = _forwarder(sink, trial=trial)
    cb("trial_start", label=label, node=node)
    outcome = execute_trial(cohort, RunConfig.model_validate(config), progress=cb)
    outcome.node = node
    ray.get(sink.flush.remote())  # every event pushed is buffered before the result lands
    return outcome


def _ray_fold(cohort: Cohort, config: dict[str, Any], baselines: list[str], job: FoldJob,
              threads: Threads, sink: Any) -> FoldOutcome:  # fmt: skip
    import ray

    node = _worker_setup(threads)
    cb = _forwarder(sink)
    cb("fold_start", repeat=job.repeat, fold=job.fold, n_folds=job.n_folds,
       n_repeats=job.n_repeats, node=node)  # fmt: skip
    outcome = run_fold(cohort, RunConfig.model_validate(config), baselines, job, cb)
    outcome.node = node
    ray.get(sink.flush.remote())
    return outcome


class RayRunner:
    """Trials (a grid) or outer folds (one cross-validation) as Ray tasks.

    ``address``: ``None`` uses ``RAY_ADDRESS`` when it is set, else starts a local Ray with
    ``num_cpus`` CPUs (shut down afterwards); an address (``"auto"``, ``"HOST:6379"``,
    ``"ray://host:10001"``) joins an existing cluster, whose workers must have modalsurv
    installed; an address nothing answers at is refused when the runner is made
    (:func:`check_reachable`). Each task takes ``cpus_per_trial`` CPUs; tasks are spread
    over the nodes.
    A Ray that is already initialised in this process is used as it is.

    ``torch_threads`` / ``blas_threads``: threads inside each task. Float reductions
    (a matrix product, an SVD) depend on the thread counts, so by default
    (``same_threads=True``) the counts not given are the driver's, and the numbers are
    bit-identical to a LocalRunner run in the driver, on a local Ray or a cluster.
    ``same_threads=False`` leaves Ray's setting (one thread per CPU a task holds) for the
    counts not given: no oversubscription on busy nodes, numbers equal to the last bits
    only where the counts happen to agree."""

    def __init__(self, address: str | None = None, num_cpus: int = 2,
                 cpus_per_trial: float = 1.0, torch_threads: int | None = None,
                 blas_threads: int | None = None, same_threads: bool = True) -> None:  # fmt: skip
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if self.address is not None:
            check_reachable(self.address)  # here, before a command reads its data
        self.num_cpus = num_cpus
        self.cpus_per_trial = cpus_per_trial
        self.torch_threads = torch_threads
        self.blas_threads = blas_threads
        self.same_threads = same_threads

    # ------------------------------------------------------------------ plumbing
    def _connect(self, ray: Any) -> bool:
        """Initialise Ray unless it is; True when this call started it (to shut down)."""
        if ray.is_initialized():
            return False
        kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if self.address is None:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, **kw)
        else:
            ray.init(address=self.address, **kw)
        return True

    def _threads(self) -> Threads:
        if not self.same_threads:
            return self.torch_threads, self.blas_threads
        import torch

        return (torch.get_num_threads() if self.torch_threads is None else self.torch_threads,
                blas_threads() if self.blas_threads is None else self.blas_threads)  # fmt: skip

    def _drive(self, ray: Any, pending: dict[Any, Any], sink: Any, progress: Progress | None,
               on_ready: Callable[[Any, Any], None]) -> None:  # fmt: skip
        """Wait for the tasks; forward the workers' events while waiting; hand each
        finished task (its item and object ref) to ``on_ready`` as it lands."""

        def forward() -> None:
            for event, info in ray.get(sink.drain.remote()):
                if progress is not None:
                    progress(event, **info)

        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                forward()
                for ref in ready:
                    on_ready(pending.pop(ref), ref)
            forward()
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise

    def _session(self) -> tuple[Any, bool, Any]:
        from modalsurv.experiments.sink import ProgressSink
        from modalsurv.utils import require

        ray = require("ray", "--runner ray")
        started = self._connect(ray)
        try:
            sink = ray.remote(num_cpus=0)(ProgressSink).remote()
        except BaseException:
            if started:
                ray.shutdown()
            raise
        return ray, started, sink

    def _remote(self, ray: Any, fn: Callable[..., Any]) -> Any:
        return ray.remote(num_cpus=self.cpus_per_trial, scheduling_strategy="SPREAD")(fn)

    # ------------------------------------------------------------------ a grid
    def run(self, cohort: Cohort, trials: list[Trial], out: Path, on_done: OnDone,
            progress: Progress | None) -> None:  # fmt: skip
        ray, started, sink = self._session()
        try:
            task = self._remote(ray, _ray_trial)
            ref = ray.put(cohort)
            threads = self._threads()
            pending = {task.remote(ref, t.config.model_dump(mode="json"), threads, t.id,
                                   t.label, sink): t for t in trials}  # fmt: skip
            for t in trials:
                if progress is not None:
                    progress("trial_submitted", trial=t.id, label=t.label)

            def ready(trial: Trial, done: Any) -> None:
                try:
                    outcome = ray.get(done)
                except Exception as err:  # the worker itself died (memory, signal)
                    outcome = TrialOutcome(error=f"{type(err).__name__}: {err}",
                                           traceback=traceback.format_exc())  # fmt: skip
                on_done(trial, outcome)

            self._drive(ray, pending, sink, progress, ready)
        finally:
            if started:
                ray.shutdown()

    # ------------------------------------------------------------------ one CV's folds
    def run_folds(self, cohort: Cohort, config: RunConfig, baselines: list[str],
                  jobs: list[FoldJob], on_done: FoldDone, progress: Progress | None
                  ) -> None:  # fmt: skip
        """The outer folds as Ray tasks (``train.cv.FoldExecutor``). A fold that fails
        raises its own error here (after the folds that finished were handed on, so a
        resume keeps them) and the folds still pending are cancelled."""
        ray, started, sink = self._session()
        try:
            task = self._remote(ray, _ray_fold)
            ref = ray.put(cohort)
            threads, cfg = self._threads(), config.model_dump(mode="json")
            pending = {task.remote(ref, cfg, baselines, job, threads, sink): job for job in jobs}

            def ready(job: FoldJob, done: Any) -> None:
                try:
                    outcome = ray.get(done)
                except ray.exceptions.RayTaskError as err:  # the fold's own error
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from err
                    raise
                on_done(job, outcome)

            self._drive(ray, pending, sink, progress, ready)
        finally:
            if started:
                ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a Ray address (``HOST:PORT`` or ``ray://HOST:PORT``) that nothing listens
    on, within ``timeout`` seconds. Why: ``ray.init`` retries an unreachable head for
    minutes, printing only its own warnings. ``"auto"`` and addresses without a port are
    left to Ray, which answers those at once."""
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    host = host.strip("[]")  # an IPv6 literal
    source = " (from RAY_ADDRESS)" if os.environ.get("RAY_ADDRESS") == address else ""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UnreachableError(
            f"no Ray cluster answers at {address!r}{source}: {err or type(err).__name__};"
            " start one with `ray start --head` or give the head's address"
        ) from None


def get_runner(runner: str | Runner, address: str | None = None) -> Runner:
    """``"local"``, ``"ray"`` (``address``: a Ray cluster to join, see RayRunner) or a
    Runner instance."""
    if not isinstance(runner, str):
        return runner
    if runner == "local":
        return LocalRunner()
    if runner == "ray":
        return RayRunner(address=address)
    raise ConfigError(f"unknown runner {runner!r}; expected 'local' or 'ray'")


# ---------------------------------------------------------------------- files
def _units(out: Path) -> UnitFolder:
    """Trials are work units (``resume.UnitFolder``): ``trials/<id>/summary.json`` written
    last marks one finished; ``cohort.json`` says which cohort they were run on."""
    return UnitFolder(out, marker="summary.json", spec_name="cohort.json", units="trials/*")


def _trial_dir(out: Path, trial: Trial) -> Path:
    return _units(out).unit("trials", trial.id)


def cohort_fingerprint(cohort: Cohort) -> str:
    """One hash of ``Cohort.digests`` (ids, labels, every feature array with its names,
    presence and tile mask), so a resume onto other data is caught."""
    text = json.dumps(cohort.digests(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fold_units(out: Path) -> UnitFolder:
    """The finished outer folds of interrupted trials (``trials/<id>/checkpoints``), held to
    the grid's ``cohort.json`` like the trials: a resume takes them up."""
    return UnitFolder(out, marker=CV_UNITS["marker"], spec_name="cohort.json",
                      units=f"trials/*/checkpoints/{CV_UNITS['units']}")  # fmt: skip


def _groups_record(cohort: Cohort, column: str) -> dict[str, Any]:
    """What leave-one-group-out folds (``cv.groups``) are made from: the column's values,
    hashed (None: the cohort has no such column; each trial then fails, saying so)."""
    if column not in cohort.meta.columns:
        return {"column": column, "fingerprint": None}
    text = "\0".join(cohort.meta[column].astype(str))
    return {"column": column, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _check_cohort(out: Path, cohort: Cohort, resume: bool, groups: str | None = None) -> None:
    """Refuse to resume finished work (trials, or folds of an interrupted trial) of another
    cohort; otherwise record this cohort. Why both checks and the rewrite: a folder whose
    first run stopped before any trial finished kept the old cohort's description, so the
    next resume on that old cohort took the new cohort's trials as its own (and one on the
    new cohort was refused), and an interrupted trial's fold checkpoints of the old cohort
    were mixed into the new cohort's trial when only its features differed."""
    units = _units(out)
    info = {"fingerprint": cohort_fingerprint(cohort), "n": len(cohort),
            "modalities": cohort.modalities}  # fmt: skip
    if groups is not None:  # the folds follow meta[groups], which the fingerprint leaves out
        info["groups"] = _groups_record(cohort, groups)

    def normalise(old: dict[str, Any]) -> dict[str, Any]:
        """A folder recorded before the groups were: its groups are not known, as before."""
        return old if "groups" in old or "groups" not in info else {**old, "groups": info["groups"]}

    if resume:
        hint = ("its trials were run on a different cohort: use a new --out, or --no-resume to"
                " start this folder afresh")  # fmt: skip
        units.check_spec(info, "grid folder", hint, normalise)  # reads only
        if units.spec_path.is_file():  # folds checkpointed by hand (no grid run): taken up
            _fold_units(out).check_spec(info, "grid folder", hint, normalise)
    else:  # before the new description: an interrupted fresh run leaves no old trial (nor
        units.unfinish_all()  # fold) that a later resume would count as done on this cohort
        _fold_units(out).unfinish_all()
    units.write_spec(info)


def _record(out: Path, trial: Trial, outcome: TrialOutcome) -> None:
    """Write a trial's files; summary.json last, since it marks the trial finished. The
    trial's wall time goes to ``timing.json``, apart: summary.json holds only what the
    config and seed decide, so a resumed grid writes it byte for byte as an uninterrupted
    one. ``folds.csv`` is kept beside them (the copy in ``checkpoints/`` goes with it):
    which patients each outer fold tested, so the paired comparisons can tell a split that
    two seeds share (``paired.split_keys``)."""
    d = _trial_dir(out, trial)
    head = {"trial": trial.id, "label": trial.label, "settings": trial.settings}
    atomic_write_text(d / "timing.json", json.dumps({"seconds": outcome.seconds}))
    if outcome.error is not None:
        (d / "summary.json").unlink(missing_ok=True)
        atomic_write_text(d / "error.json", json.dumps(
            {**head, "status": "failed", "error": outcome.error,
             "traceback": outcome.traceback}, indent=1))  # fmt: skip
        return
    atomic_write_csv(d / "metrics.csv", outcome.metrics)
    atomic_write_csv(d / "predictions.csv", outcome.predictions)
    if outcome.folds is not None:
        atomic_write_csv(d / "folds.csv", outcome.folds)
    (d / "error.json").unlink(missing_ok=True)
    _units(out).finish(d, {**head, "status": "ok", "cv": outcome.summary})
    shutil.rmtree(d / "checkpoints", ignore_errors=True)  # fold models: not needed any more


def _rows(trial: Trial, summary: dict[str, Any] | None, error: str | None) -> list[dict[str, Any]]:
    """Table rows for one trial: one per model, or one 'failed' row."""
    base = {**trial.row(), "label": trial.label}
    if summary is None:
        row = {**base, "model": "modalsurv", "status": "failed", "error": error}
        for m in METRICS:
            row.update({f"{m}_mean": math.nan, f"{m}_std": math.nan, f"{m}_n": 0})
        return [{**row, "n_failed_folds": math.nan, "optimistic": math.nan}]
    rows = []
    for model, stats in summary["models"].items():
        row = {**base, "model": model, "status": "ok", "error": ""}
        for m in METRICS:
            row.update({f"{m}_mean": stats[m]["mean"], f"{m}_std": stats[m]["std"],
                        f"{m}_n": stats[m]["n"]})  # fmt: skip
        rows.append({**row, "n_failed_folds": stats["n_failed_folds"],
                     "optimistic": stats["optimistic"]})  # fmt: skip
    return rows


# ---------------------------------------------------------------------- the grid
def run_grid(
    grid: ExperimentGrid,
    cohort: Cohort | None = None,
    out: str | Path = "runs/grid",
    runner: str | Runner = "local",
    resume: bool = True,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run every trial of ``grid`` on ``cohort``; return (and write) the results table.

    ``cohort=None`` loads ``grid.base.data`` with ``grid.base.seed`` (the data stay fixed
    across the seed axis). Columns: trial, the settings, label, model, status, error and
    ``<metric>_mean / _std / _n`` over folds for Harrell C, Uno C and IBS.

    The grid folder is locked while the grid runs: a second process on it gets a
    LockedError naming the holder instead of duplicating trials.
    """
    out = Path(out)
    if cohort is None:
        from modalsurv.data.sources import load_cohort

        cohort = load_cohort(grid.base.data, seed=grid.base.seed)
    grid.check_cohort(cohort.modalities)
    refuse_other_kind(out, GRID)  # a run folder, a feature store, ...: not a grid's
    with exclusive_lock(out, "experiment folder"):
        return _run_grid(grid, cohort, out, runner, resume, progress)


def _run_grid(grid: ExperimentGrid, cohort: Cohort, out: Path, runner: str | Runner,
              resume: bool, progress: Progress | None) -> pd.DataFrame:  # fmt: skip
    trials = grid.expand()
    out.mkdir(parents=True, exist_ok=True)
    _check_cohort(out, cohort, resume, grid.base.cv.groups)
    if not resume:  # the earlier run's table: read as this run's until its first trial landed
        (out / "results.csv").unlink(missing_ok=True)
    atomic_write_text(out / "grid.yaml", dump_grid(grid))
    say = progress or (lambda *a, **k: None)

    rows: dict[str, list[dict[str, Any]]] = {}
    todo = []
    for t in trials:
        d = _trial_dir(out, t)
        if resume and _units(out).finished(d):
            rows[t.id] = _rows(t, _units(out).read_marker(d)["cv"], None)
            say("trial_skipped", trial=t.id, label=t.label)
            continue
        if not resume:
            shutil.rmtree(d / "checkpoints", ignore_errors=True)
        atomic_write_text(d / "config.yaml", dump_config(t.config))
        todo.append(t)

    def table() -> pd.DataFrame:
        return pd.DataFrame([r for t in trials if t.id in rows for r in rows[t.id]])

    def on_done(trial: Trial, outcome: TrialOutcome) -> None:
        _record(out, trial, outcome)
        rows[trial.id] = _rows(trial, outcome.summary, outcome.error)
        atomic_write_csv(out / "results.csv", table())
        event = "trial_failed" if outcome.error else "trial_end"
        say(event, trial=trial.id, label=trial.label, done=len(rows), n_trials=len(trials),
            error=outcome.error, seconds=outcome.seconds)

    say("grid_start", n_trials=len(trials), n_todo=len(todo), out=str(out))
    if todo:
        get_runner(runner).run(cohort, todo, out, on_done, progress)
    result = table()
    atomic_write_csv(out / "results.csv", result)
    say("grid_end", n_trials=len(trials), n_failed=int((result["status"] == "failed").sum())
        if len(result) else 0)  # fmt: skip
    return result


# ---------------------------------------------------------------------- summaries
def _pooled(means: np.ndarray, stds: np.ndarray, ns: np.ndarray) -> tuple[float, float, int]:
    """Mean and sample std of the union of groups known by (mean, std, n) — exact, so the
    spread over seeds pools fold-level values rather than averaging trial means."""
    ok = ns > 0
    m, s, n = means[ok], np.nan_to_num(stds[ok]), ns[ok]
    total = int(n.sum())
    if total == 0:
        return math.nan, math.nan, 0
    mean = float((n * m).sum() / total)
    if total < 2:
        return mean, math.nan, total
    ss = ((n - 1) * s**2 + n * (m - mean) ** 2).sum()
    return mean, float(math.sqrt(ss / (total - 1))), total


def summarise_axis(results: pd.DataFrame, axis: str, over: tuple[str, ...] = ("seed",)
                   ) -> pd.DataFrame:  # fmt: skip
    """Pool finished trials over ``over`` (default: seeds): one row per model × the other
    settings, with ``<metric>_mean / _std / _n`` over all their folds and ``n_trials``."""
    if axis not in SETTINGS or axis in over:
        raise ValueError(f"axis must be one of {SETTINGS} and not in over={over}")
    ok = results[results["status"] == "ok"]
    keys = ["model"] + [c for c in SETTINGS if c not in over and c in ok.columns]
    out = []
    for key, g in ok.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        for m in METRICS:
            mean, std, n = _pooled(g[f"{m}_mean"].to_numpy(float), g[f"{m}_std"].to_numpy(float),
                                   g[f"{m}_n"].to_numpy(int))  # fmt: skip
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_n": n})
        row["n_trials"] = len(g)
        out.append(row)
    table = pd.DataFrame(out)
    if table.empty:
        return table
    # groups contiguous; a numeric axis ascending, modality sets in grid order
    order = [k for k in keys if k != axis] + ([axis] if axis in ("data_fraction", "seed") else [])
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def scaling_curve(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of each metric per training-data fraction (pooled over seeds)."""
    return summarise_axis(results, "data_fraction")


def ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of each metric per modality set (pooled over seeds)."""
    return summarise_axis(results, "modalities")


def _listed_trials(out: Path) -> set[str] | None:
    """The trial ids of the grid's ``results.csv`` (None where it has none yet)."""
    path = out / "results.csv"
    if not path.is_file():
        return None
    return set(pd.read_csv(path, usecols=["trial"], dtype={"trial": str})["trial"])


def stack_weight_curve(out: str | Path) -> pd.DataFrame:
    """The stacked default's weights per outer fold of every finished trial of a grid
    folder, with the trial's settings and the fold's training size: one row per trial,
    repeat, fold and candidate (``weight``, and ``n_train``: the fold's training rows).

    Why: over a data-scaling grid (``data_fraction``), the weight the stack puts on the
    multimodal network against ModalSurv on clinical data only, as a function of the
    training size, answers when fusion pays (``report.plots.stack_weights_by_size`` draws
    it). ``fallback`` marks folds whose weights are the equal-weights fallback (too few
    inner events), not learned: they say nothing about when fusion pays. Trials run with
    ``model.stack: none`` have no weights and are left out, and so are trial folders of an
    earlier grid in the same folder that its ``results.csv`` does not list."""
    rows = []
    listed = _listed_trials(Path(out))
    for path in sorted(Path(out).glob("trials/*/summary.json")):
        if listed is not None and path.parent.name not in listed:
            continue
        info = json.loads(path.read_text(encoding="utf-8"))
        cv = info.get("cv") or {}
        stacks = cv.get("stack") or []
        n_train = {(f["repeat"], f["fold"]): f["n_train"] for f in cv.get("folds", [])
                   if f.get("model") == "modalsurv"}  # fmt: skip
        settings = {k: "+".join(v) if isinstance(v, list) else v
                    for k, v in (info.get("settings") or {}).items()}  # fmt: skip
        for rec in stacks:
            key = (rec["repeat"], rec["fold"])
            for name, weight in rec["weights"].items():
                rows.append({"trial": info.get("trial"), **{k: settings.get(k) for k in SETTINGS},
                             "repeat": key[0], "fold": key[1], "n_train": n_train.get(key),
                             "candidate": name, "weight": float(weight),
                             "fallback": bool(rec.get("fallback"))})  # fmt: skip
    return pd.DataFrame(rows)
