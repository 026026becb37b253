"""The `modalsurv` command line: demo, train, evaluate, predict, report, extract, scan.

This is the only module that prints. Library code reports progress through a callback
``progress(event, **info)``; :class:`RichProgress` renders those events as progress bars.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from modalsurv.errors import (
    ConfigError,
    DataError,
    DivergedError,
    LockedError,
    MissingDependencyError,
    UnreachableError,
)
from modalsurv.utils import atomic_write_csv, atomic_write_text


def _no_flag_metavar(params: list[Any]) -> list[Any]:
    """A flag takes no value: typer >= 0.29 shows its type (`--debug <bool>`, `--help
    <bool>`) in the help as if it took one; an empty metavar shows none."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    """Every command's class (set in ``_one_line_summaries``): flags shown without a type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


class _Group(TyperGroup):
    """The app's class: ``--debug`` and ``--help`` shown without a type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_metavar(super().get_params(ctx))


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Group,
                  help="Multimodal deep survival analysis (ModalSurv).")
# emoji=False: a path or name holding ':b:' prints as written, not as an emoji; every
# interpolated path or name goes through escape() so '[...]' in it is not read as markup
console = Console(emoji=False)
# errors and warnings: one line each
err_console = Console(stderr=True, soft_wrap=True, emoji=False)
_STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _main(debug: bool = typer.Option(
        False, "--debug", help="show the full traceback when a command fails")) -> None:
    """Multimodal deep survival analysis (ModalSurv)."""
    _STATE["debug"] = debug


# (exception class, exit code, hint); the first match wins, so subclasses come first
_USER_ERRORS: list[tuple[type[BaseException], int, str]] = [
    (LockedError, 1, "wait for the other process or stop it; a killed process frees the lock"),
    (MissingDependencyError, 2, "install the extra named above"),
    (ConfigError, 2, "fix the option or config key named above (`modalsurv COMMAND --help`)"),
    (DataError, 1, "fix the file, patient or field named above; `modalsurv scan` lists every"
                   " problem of a cohort at once"),
    (DivergedError, 1, "lower train.lr (e.g. by 10x) or set train.grad_clip"),
    (UnreachableError, 1, "check the address named above (--ray-address / RAY_ADDRESS)"),
    (OSError, 1, "check the path named above and its permissions"),
]


def _report(err: BaseException, data_hint: str | None = None) -> None:
    """Print one error line plus a hint and exit: 2 for usage/config errors, 1 for data
    errors, 3 for anything else (a bug). ``--debug`` re-raises for the traceback.
    ``data_hint``: a command's own hint for a DataError (the default names `scan`)."""
    if _STATE["debug"]:
        raise err
    match = [(code, hint) for cls, code, hint in _USER_ERRORS if isinstance(err, cls)]
    if match:
        (code, hint), message = match[0], str(err)
        if data_hint is not None and isinstance(err, DataError):
            hint = data_hint
    else:
        code, hint = 3, "this is a bug in modalsurv; please report it with the traceback"
        message = f"internal error: {type(err).__name__}: {err}"
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    # --debug belongs before the command (`modalsurv train X --debug` is a usage error)
    err_console.print(f"[dim]hint: {escape(hint)} (--debug shows the traceback: modalsurv"
                      " --debug COMMAND ...)[/]")
    raise typer.Exit(code=code) from None


def _show_warning(seen: set[str]) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
        text = " ".join(str(message).split())  # one line
        if text not in seen:  # an ensemble's members repeat the same warning
            seen.add(text)
            err_console.print(f"[yellow]warning:[/] {escape(text)}")

    return show


# typer's deliberate exits and usage errors. typer >= 0.29 vendors click (typer._click) and
# no longer installs it; older typer raises click's own classes. Taken from typer's public
# names, so the CLI works with either and needs no click of its own.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_DELIBERATE_EXITS = (typer.Exit, typer.Abort, _CLICK_ERROR)


def _user_errors(command: F) -> F:
    """Every command is wrapped in this, the CLI's one error mechanism: a user error
    (modalsurv.errors, OSError) becomes one line plus a hint instead of a traceback, and
    warnings (e.g. an unknown category imputed) are printed once each, one line each.
    A new command gets the same by adding ``@_user_errors`` under ``@app.command()``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = _show_warning(set())
            try:
                return command(*args, **kwargs)
            except _DELIBERATE_EXITS:
                raise  # a deliberate exit, already reported
            except Exception as err:
                _report(err)

    return wrapper  # type: ignore[return-value]


class RichProgress:
    """Turns library progress events into rich progress bars (trials, folds, epochs,
    slides). Events of parallel work (Ray tasks) carry their trial and fold, and each
    running trial and fold gets its own bar, removed when it ends."""

    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.tasks: dict[Any, Any] = {}
        self.labels: dict[str, str] = {}
        self.last_line = ""
        self.skipped = self.index = 0  # extraction: patients already complete; the current one

    def task_name(self, key: Any, label: str, total: float | None) -> Any:
        if key not in self.tasks:
            self.tasks[key] = self.p.add_task(label, total=total)
        return self.tasks[key]

    def _drop(self, match: Callable[[Any], bool]) -> None:
        for key in [k for k in self.tasks if match(k)]:
            self.p.remove_task(self.tasks.pop(key))

    def _folds(self, info: dict[str, Any], total: float | None = None) -> Any:
        trial = info.get("trial")
        label = ("outer folds" if trial is None
                 else f"{escape(str(self.labels.get(trial, trial)))}: folds")
        return self.task_name(("folds", trial), label, total)

    def __call__(self, event: str, **info: Any) -> None:
        trial = info.get("trial")
        fold_key = ("epochs", trial, info.get("repeat"), info.get("fold"))
        if event == "grid_start":
            t = self.task_name("trials", "trials", info.get("n_trials"))
            self.p.update(t, completed=info.get("n_trials", 0) - info.get("n_todo", 0))
        elif event in {"trial_submitted", "trial_start"}:
            self.labels[str(trial)] = str(info.get("label", trial))
            if event == "trial_start":
                where = f" on node {str(info['node'])[:8]}" if info.get("node") else ""
                self.p.console.print(f"[dim]trial {escape(self.labels[str(trial)])}{where}[/]")
        elif event in {"trial_end", "trial_failed"}:
            self.p.advance(self.task_name("trials", "trials", None))
            self._drop(lambda k: isinstance(k, tuple) and k[1] == trial)
            if event == "trial_failed":
                self.p.console.print(f"[red]trial {escape(str(info.get('label', trial)))}"
                                     f" failed: {escape(str(info.get('error')))}[/]")
        elif event == "cv_start":  # a new cross-validation: a fresh folds bar
            self._drop(lambda k: isinstance(k, tuple) and k[1] == trial)
            self._folds(info, info.get("n_folds", 1) * info.get("n_repeats", 1))
        elif event == "fold_resumed":  # the fold_end that follows advances the bar
            self._folds(info, info.get("n_folds", 1) * info.get("n_repeats", 1))
        elif event == "fold_start":
            self._folds(info, info.get("n_folds", 1) * info.get("n_repeats", 1))
            self._drop(lambda k: k == fold_key)
            if info.get("node"):
                self.p.console.print(f"[dim]fold {info.get('fold')} (repeat"
                                     f" {info.get('repeat')}) on node"
                                     f" {str(info['node'])[:8]}[/]")  # fmt: skip
        elif event == "fold_end":
            self.p.advance(self._folds(info))
            self._drop(lambda k: k == fold_key)
        elif event == "epoch_end":
            label = "epochs" if info.get("fold") is None else f"fold {info['fold']} epochs"
            t = self.task_name(fold_key, label, info.get("epochs"))
            score = info.get("val_cindex", info.get("monitor_value"))
            desc = f"{label} (train loss {info.get('train_loss', float('nan')):.3f}"
            if isinstance(score, float):
                desc += f", val C {score:.3f}"
            self.p.update(t, completed=info.get("epoch", 0) + 1, total=info.get("epochs"),
                          description=desc + ")")
        elif event == "start":  # extraction: run_extract's callback events
            # the bar counts every patient: those already complete, then each one to do
            # once it ends (done, failed, or both for a patient with two image groups)
            self.skipped = int(info.get("skipped", 0))
            t = self.task_name("patients", "patients", info.get("total", 0) + self.skipped)
            self.p.update(t, completed=self.skipped)
        elif event == "patient":  # the one before it has ended, whichever way
            self.index = int(info.get("index", 1))
            self.p.update(self.task_name("patients", "patients", None),
                          completed=self.skipped + self.index - 1)
        elif event in {"done", "failed"}:
            if event == "done":
                self.p.update(self.task_name("patients", "patients", None),
                              completed=self.skipped + self.index)
            if event == "failed":
                self.p.console.print(f"[red]failed[/] {escape(str(info.get('patient')))} "
                                     f"{escape(str(info.get('path')))}: "
                                     f"{escape(str(info.get('reason')))}")
        elif event == "finish":
            t = self.tasks.get("patients")
            if t is not None:
                self.p.update(t, completed=self.p.tasks[t].total)
        elif event == "slide" and info.get("tiles_per_s"):
            self.p.update(self.task_name("patients", "patients", None),
                          description=f"patients ({info['tiles_per_s']:.0f} tiles/s)")
        elif event == "baseline_failed":
            self.p.console.print(f"[yellow]baseline {escape(str(info.get('model')))} failed on"
                                 f" fold {info.get('fold')}:"
                                 f" {escape(str(info.get('reason')))}[/]")  # fmt: skip
        elif event == "stage":
            self.p.console.print(f"[bold cyan]>> {escape(str(info.get('message')))}[/]")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _cell(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else escape(str(v))


def _print_table(df: pd.DataFrame, title: str) -> None:
    """A results table for a terminal: a column with one value in every row (the dataset of
    a one-cohort run, its oracle C) becomes a caption line instead of repeating, so the
    columns that differ get the width; long model names fold instead of being cut off."""
    same = [c for c in df.columns
            if len(df) > 1 and df[c].map(_cell).nunique() == 1 and _cell(df[c].iloc[0])]  # fmt: skip
    caption = ("in every row: "
               + " · ".join(f"{escape(str(c))} {_cell(df[c].iloc[0])}" for c in same)
               if same else None)  # fmt: skip
    table = Table(title=title, caption=caption)
    shown = [c for c in df.columns if c not in same]
    for col in shown:
        # numbers right, text left (pandas 3 gives text columns a str dtype, not object)
        numeric = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])
        table.add_column(escape(str(col)), justify="right" if numeric else "left", overflow="fold")
    for _, row in df[shown].iterrows():
        table.add_row(*[_cell(v) for v in row])
    console.print(table)


def _file_out(path: Path | None, option: str = "--out") -> None:
    """Refuse, before any work, an output file path that is an existing folder (the write
    would fail only at the end, naming a temporary file)."""
    if path is not None and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give the file to write")


def _read_yaml_as(path: Path, load: Callable[[Path], Any], grid: bool) -> Any:
    """``load(path)``: a run config, or an experiment grid when ``grid``. A folder is refused
    as a usage error (exit 2; it was '[Errno 21] Is a directory', exit 1); a grid given to
    `train`, or a run config to `experiment`, names the command that reads it instead of
    listing each of its keys as unknown."""
    from modalsurv.utils import read_yaml_mapping

    what = "an experiment grid" if grid else "a run config"
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give {what} (a YAML file"
                          + (")" if grid else "; a run folder's own is RUN/config.yaml)"))
    try:
        return load(path)
    except ConfigError as err:
        try:
            top = read_yaml_mapping(path)
        except ConfigError:
            raise err from None
        if not grid and "base" in top:
            raise ConfigError(f"{path} is an experiment grid (it has base:), not a run config:"
                              f" run it with `modalsurv experiment {path}`") from None
        if grid and "base" not in top and {"data", "model", "train"} & top.keys():
            raise ConfigError(f"{path} is a run config, not an experiment grid (which has"
                              f" base:): run it with `modalsurv train {path}`") from None
        raise


def _not_inside(out: Path, folder: Path | str | None, what: str, option: str = "--out",
                also: str = "") -> None:  # fmt: skip
    """Refuse, before any work, an output file inside a folder the command reads (or that
    file itself): the write would replace that folder's own files (a run's predictions.csv,
    metrics.json, its models) or the input file."""
    if folder is None:
        return
    o, f = out.resolve(), Path(folder).resolve()
    if o == f or o.is_relative_to(f):
        where = "is" if o == f else "is inside"
        raise ConfigError(f"{option} {out} {where} {what} {folder}: writing there would"
                          f" overwrite its files; choose a path outside it{also}")  # fmt: skip


def _fail(err: Exception, data_hint: str | None = None) -> None:
    """The commands' older ``except ...: _fail(err)`` blocks, kept so their bodies stay as
    they were: the same report as ``@_user_errors`` (which alone would do)."""
    _report(err, data_hint)


@app.command()
@_user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="run folder to write"),
    quick: bool = typer.Option(False, help="smaller cohorts and fewer epochs (smoke run)"),
    seed: int = typer.Option(0, help="the one seed for everything"),
    extended: bool = typer.Option(False, help="also the in-memory synthetic cohort with an"
                                  " external cohort, and the real breast_cancer cohort"),
) -> None:
    """The spine end to end: a synthetic CHIMERA task-1 folder of raw files -> extract ->
    ModalSurv on every modality next to the baselines -> the challenge command on held-out
    cases in the /input layout -> the challenge metric."""
    from modalsurv.experiments.demo import run_demo

    start = time.perf_counter()
    try:
        with _progress() as p:
            result = run_demo(out, progress=RichProgress(p), quick=quick, seed=seed,
                              extended=extended)  # fmt: skip
    except (DataError, ConfigError) as err:
        _fail(err)
    _print_table(result.table, "modalsurv demo: C-index (mean ± std over outer folds)")
    for line in result.notes:
        console.print(escape(line))
    console.print(f"run folder: [bold]{escape(str(out))}[/]  (wall time"
                  f" {time.perf_counter() - start:.0f} s)")


def _data_config(spec: Any, features: Path | None) -> Any:
    """The DataConfig of ``--data`` (a spec string or a DataConfig) with ``--features``."""
    from modalsurv.data.sources import parse_data_spec

    data = parse_data_spec(spec) if isinstance(spec, str) else spec
    if features is not None:
        data = data.model_copy(update={"features": str(features)})
    return data


def _load_data(spec: Any, features: Path | None, strict: bool, seed: int = 0,
               labels: bool = True) -> Any:  # fmt: skip
    """Load a cohort (spec string or DataConfig), print what was read, every problem (one
    screen) and the notes (a declared label-leak column), and with ``strict`` refuse any
    problem (notes are none). ``labels=False``: a CHIMERA case without a label is kept
    (prediction)."""
    from modalsurv.data.sources import load_data

    loaded = load_data(_data_config(spec, features), seed=seed, labels=labels)
    _print_data_summary(loaded)
    for note in loaded.notes:  # e.g. a declared label-leak column: no problem, said once
        console.print(f"  [cyan]{escape(str(note))}[/]", soft_wrap=True)
    if strict:
        loaded.check_strict()
    return loaded


def _bind_images(spec: str, features: Path | None, images: Path | None) -> Any:
    """A context in which a model that fine-tuned an encoder reads this cohort's images:
    ``--images``, else the image cache beside the cohort's feature store (if any)."""
    import contextlib

    from modalsurv.train.finetune import data_cache_folder
    from modalsurv.train.finetune import images as bind

    if images is None:
        images = data_cache_folder(_data_config(spec, features))
        if images is None or not images.is_dir():
            return contextlib.nullcontext()
    return bind(images)


def _print_data_summary(loaded: Any, limit: int = 12) -> None:
    from rich.markup import escape

    from modalsurv.data.summary import data_summary, headline

    summary = data_summary(loaded)
    console.print(f"[bold]data[/] {escape(loaded.source)}: {escape(headline(summary))}")
    # errors first (a dropped patient matters more than a repaired value); stable within each
    shown = sorted(loaded.problems, key=lambda p: p.severity != "error")
    for p in shown[:limit]:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(f"  [{colour}]{escape(str(p))}[/]")
    if len(loaded.problems) > limit:
        console.print(f"  ... and {len(loaded.problems) - limit} more (all in the run folder's"
                      " data.json and report.html)")


@app.command()
@_user_errors
def train(
    config: Path | None = typer.Argument(None, help="YAML config (modalsurv init-config); default: the"
                                         " built-in defaults"),
    out: Path = typer.Option(Path("runs/train"), help="run folder"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its finished folds"),
    data: str | None = typer.Option(None, help="cohort spec replacing the config's data, e.g."
                                    " chimera-task1:ROOT, synthetic:300, public:breast_cancer"),
    features: Path | None = typer.Option(None, help="feature store (modalsurv extract) joined"
                                         " with a CHIMERA folder's clinical and RNA data"),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="override a config"
                                   " value, e.g. --set train.epochs=20 --set"
                                   " model.fusion=concat (repeatable)"),
    strict: bool = typer.Option(False, help="refuse to train when reading the data found any"
                                " problem (warnings included)"),
    runner: str = typer.Option("local", help="local | ray: ray runs the outer folds as Ray"
                               " tasks (same numbers, same run folder)"),
    ray_address: str | None = typer.Option(
        None, envvar="RAY_ADDRESS", help="with --runner ray: the Ray cluster to join (e.g."
        " auto, HOST:6379, ray://HOST:10001); default: RAY_ADDRESS, else a local Ray"),
) -> None:
    """Cross-validate ModalSurv and baselines on the same folds; write a run folder."""
    from modalsurv.config import RunConfig, load_config, set_values
    from modalsurv.data.sources import parse_data_spec
    from modalsurv.devices import resolve_device
    from modalsurv.experiments.runners import get_runner
    from modalsurv.folders import RUN, refuse_other_kind
    from modalsurv.report.tables import (
        cv_table,
        paired_summary,
        stack_weights_table,
        timing_table,
    )
    from modalsurv.runs import train_run

    started = time.perf_counter()
    try:
        executor = get_runner(runner, _ray_address(runner, ray_address))
        cfg = _read_yaml_as(config, load_config, grid=False) if config is not None else RunConfig()
        if data is not None:
            cfg = cfg.model_copy(update={"data": parse_data_spec(data)})
        if features is not None:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
                update={"features": str(features)})})
        if set_:
            cfg = set_values(cfg, list(set_))
        if config is not None and data is None:  # a field the config file lacks: name it
            from modalsurv.data.sources import field_problem

            problem = field_problem(cfg.data)
            if problem is not None:
                raise ConfigError(f"{config}: {problem} (in the config file, or give"
                                  " --data / --set)")  # fmt: skip
        refuse_other_kind(out, RUN)  # before the cohort is read
        if resume and not _finished_folds(out):  # e.g. a mistyped --out: said, not silent
            err_console.print(f"[yellow]warning:[/] --resume: {escape(str(out))} holds no"
                              " finished fold; training from the start")  # fmt: skip
        resolve_device(cfg.train.device)  # an unknown or absent device, before the data too
        loaded = _load_data(cfg.data, None, strict, seed=cfg.seed)
        with _progress() as p:
            result = train_run(cfg, out, resume=resume, progress=RichProgress(p),
                               cohort=loaded.cohort, data=loaded, executor=executor)  # fmt: skip
    except (DataError, ConfigError) as err:
        _fail(err)
    except KeyboardInterrupt:
        _train_interrupted(out)
    title = "C-index and IBS over outer folds"
    if result.optimistic:
        title += " (OPTIMISTIC: selection on the reported fold)"
    _print_table(cv_table(result), title)
    paired = paired_summary(result)
    if paired is not None:
        _print_table(paired, "ModalSurv minus each baseline, paired folds")
    weights = stack_weights_table(result.summary)
    if weights is not None:
        _print_table(weights, "Stacked default: weights per outer fold (modalsurv = the stack;"
                     " modalsurv_plain = its ModalSurv candidate alone)")
    timing = timing_table(result.timings(), time.perf_counter() - started)
    if timing is not None:
        _print_table(timing, "Where the time went (seconds, summed over folds)")
    console.print(f"run folder: [bold]{escape(str(out))}[/]")


def _ray_address(runner: str, address: str | None) -> str | None:
    """``--ray-address`` without ``--runner ray`` ran everything locally without a word (a
    run meant for the cluster): refused. RAY_ADDRESS from the environment fills the option
    too, and is not a mistake with the local runner."""
    import os

    if runner == "local" and address is not None and address != os.environ.get("RAY_ADDRESS"):
        raise ConfigError(f"--ray-address {address}: the cluster is used by --runner ray only;"
                          " add --runner ray, or leave --ray-address out to run here")
    return address


def _finished_folds(out: Path) -> int:
    """How many outer folds the run folder ``out`` keeps checkpointed (what --resume uses)."""
    from modalsurv.train.cv import CV_UNITS

    checkpoints = out / "checkpoints"
    return len(list(checkpoints.rglob(CV_UNITS["marker"]))) if checkpoints.is_dir() else 0


def _train_interrupted(out: Path) -> None:
    """Ctrl-C during `train`: say what the folder keeps and how to go on (exit 130, the
    shell's code for SIGINT), instead of stopping without a word."""
    checkpoints, n = out / "checkpoints", _finished_folds(out)
    where = escape(str(checkpoints))
    err_console.print("[bold red]interrupted:[/] " + (
        f"{n} finished fold(s) kept in {where}; run the same command with --resume to"
        " continue from them" if n else
        f"no fold had finished, nothing kept in {where}; run the same command again"))
    raise typer.Exit(code=130)


@app.command()
@_user_errors
def evaluate(
    run: Path = typer.Argument(..., help="a finished run folder"),
    data: str = typer.Option(..., help="cohort spec, e.g. synthetic-external, public:breast_cancer, "
                             "chimera-task1:ROOT, manifest:CSV, or a YAML file"),
    name: str = typer.Option("external", help="name for evaluation_<name>.json"),
    n_boot: int = typer.Option(200, min=1, help="bootstrap resamples for the 95% CI"),
    features: Path | None = typer.Option(None, help="feature store joined with a CHIMERA folder"),
    strict: bool = typer.Option(False, help="refuse data with any problem (warnings included)"),
    images: Path | None = typer.Option(None, help="image cache of this cohort, for a model"
                                       " that fine-tuned an encoder (default:"
                                       " FEATURES/image_cache when it exists)"),
) -> None:
    """Score the run's fold ensemble on another cohort (a CHIMERA folder is read with the
    run's loader settings, and its image features must be made as the run's were)."""
    from modalsurv.run_inputs import check_loaded, with_run_params
    from modalsurv.runs import check_trained, evaluate_run

    try:
        if not name or any(c in name for c in "/\\") or name in (".", ".."):
            raise ConfigError(f"--name {name!r}: a plain name for evaluation_<name>.json, without"
                              " path separators")  # fmt: skip
        check_trained(run, scored=True)  # before the cohort is read
        spec = with_run_params(run, _data_config(data, features))  # read as at training
        loaded = _load_data(spec, None, strict)
        check_loaded(run, loaded)  # image features made as the run's were
        with _bind_images(data, features, images):
            res = evaluate_run(run, loaded.cohort, n_boot=n_boot, name=name)
    except (DataError, ConfigError) as err:
        _fail(err)
    console.print_json(json.dumps(res))
    written = escape(str(run / f"evaluation_{name}.json"))  # said nowhere before
    console.print(f"wrote [bold]{written}[/] and evaluation_{escape(name)}_predictions.csv"
                  " beside it; the run's report.html now shows this cohort")


@app.command()
@_user_errors
def predict(
    run: Path = typer.Argument(..., help="a finished run folder"),
    data: str = typer.Option(..., help="cohort spec (see `evaluate`)"),
    out: Path = typer.Option(Path("predictions.csv"), help="CSV to write"),
    times: str = typer.Option("", help="comma-separated times for survival probabilities"),
    features: Path | None = typer.Option(None, help="feature store joined with a CHIMERA folder"),
    strict: bool = typer.Option(False, help="refuse data with any problem (warnings included)"),
    images: Path | None = typer.Option(None, help="image cache of this cohort, for a model"
                                       " that fine-tuned an encoder (default:"
                                       " FEATURES/image_cache when it exists)"),
) -> None:
    """Per-patient risk, expected time and survival at chosen times, each with the spread
    over the ensemble's member models (folds × seeds; a stack's inner models): risk_sd,
    *_p05 and *_p95. A CHIMERA folder is read with the run's loader settings, and its
    image features must be made as the run's were."""
    from modalsurv.run_inputs import check_loaded, with_run_params
    from modalsurv.runs import check_trained, predict_run

    try:
        _file_out(out)
        grid = _parse_times(times)
        check_trained(run)  # before the cohort is read
        _not_inside(out, run, "the run folder")  # its predictions.csv, metrics, models
        spec = with_run_params(run, _data_config(data, features))  # read as at training
        _not_inside(out, spec.path, "the data")  # the manifest CSV, the CHIMERA folder
        _not_inside(out, spec.features, "the feature store")
        loaded = _load_data(spec, None, strict, labels=False)  # labels are not needed
        check_loaded(run, loaded)  # image features made as the run's were
        with _bind_images(data, features, images):
            df = predict_run(run, loaded.cohort, out, grid)
    except ValueError as err:  # DataError and ConfigError are ValueErrors too
        _fail(err)
    where = escape(str(out))
    console.print(f"wrote {len(df)} predictions to [bold]{where}[/] (risk and survival with the"
                  f" 5th–95th percentile over the ensemble's {int(df['n_members'].iloc[0])}"
                  " member models)" if len(df) else f"wrote 0 predictions to [bold]{where}[/]")


@app.command()
@_user_errors
def experiment(
    grid: Path = typer.Argument(..., help="grid YAML (modalsurv init-config --list)"),
    out: Path = typer.Option(Path("runs/grid"), help="grid folder (trials/<id>/, results.csv)"),
    runner: str = typer.Option("local", help="local | ray (trials as Ray tasks)"),
    ray_address: str | None = typer.Option(
        None, envvar="RAY_ADDRESS", help="with --runner ray: the Ray cluster to join (e.g."
        " auto, HOST:6379, ray://HOST:10001); default: RAY_ADDRESS, else a local Ray"),
    data: str | None = typer.Option(None, help="cohort spec; default: the grid's base data"),
    resume: bool = typer.Option(True, help="skip finished trials"),
    reference: str | None = typer.Option(
        None, help="setting the others are compared with, fold by fold, e.g."
        " 'modalities=clinical+wsi,fusion=concat'; default: the grid's first setting"),
    by: str = typer.Option("", help="compare within groups of these settings, each against"
                           " its own reference, e.g. 'data_fraction' with --reference"
                           " encoder=frozen: fine-tuning vs frozen at every fraction"),
) -> None:
    """Run a declarative grid: modality ablations, fusions, data fractions, seeds, encoders.

    Then every setting is compared with the reference on the same outer folds (paired,
    corrected resampled t-test): the table says which differences the folds support.
    """
    from modalsurv.config import absolute_data_paths
    from modalsurv.data.sources import load_cohort
    from modalsurv.experiments.grid import load_grid
    from modalsurv.experiments.paired import check_comparison, paired_table
    from modalsurv.experiments.runners import get_runner, run_grid
    from modalsurv.folders import GRID, refuse_other_kind
    from modalsurv.report.tables import format_difference

    try:
        ref = _parse_reference(reference)
        run_with = get_runner(runner, _ray_address(runner, ray_address))
        g = _read_yaml_as(grid, load_grid, grid=True)
        if data:  # the cohort the trials run on is the one their configs record
            base = g.base.model_copy(update={"data": _data_config(data, None)})
            g = g.model_copy(update={"base": absolute_data_paths(base)})
        groups = [b.strip() for b in by.split(",") if b.strip()]
        check_comparison([t.row() for t in g.expand()], ref, groups)  # before any trial
        refuse_other_kind(out, GRID)  # before the cohort is read
        # the grid's seed, as when the grid loads its own data (and as `train --data` does)
        cohort = load_cohort(data, seed=g.base.seed) if data else None
        with _progress() as p:
            results = run_grid(g, cohort=cohort, out=out, runner=run_with, resume=resume,
                               progress=RichProgress(p))
    except (DataError, ConfigError) as err:
        _fail(err)
    except KeyboardInterrupt:
        _experiment_interrupted(out, resume)
    cols = [c for c in ["label", "model", "status", "harrell_c_mean", "harrell_c_std", "ibs_mean"]
            if c in results.columns]
    _print_table(results[cols], f"grid {escape(g.name)}: C-index per trial")
    console.print(f"results: [bold]{escape(str(out / 'results.csv'))}[/]")
    if not (results["status"] == "ok").any():
        (out / "paired.csv").unlink(missing_ok=True)  # an earlier grid's, not this one's
        _grid_report(out)
        err_console.print(f"[bold red]error:[/] every one of the {len(results)} trial result(s)"
                          " failed (the reasons: results.csv, trials/<id>/error.json)")
        raise typer.Exit(code=1)  # nothing finished: a script must not read it as done
    try:
        paired = paired_table(out, reference=ref, by=groups)
    except ValueError as err:
        _fail(err)
    if paired.empty:
        (out / "paired.csv").unlink(missing_ok=True)  # an earlier grid's, not this one's
        if results.drop_duplicates("label")["status"].ne("ok").any():
            console.print("no paired comparison: fewer than two settings finished, or the"
                          " reference setting failed (results.csv says which)")  # fmt: skip
        _grid_report(out)
        return  # one setting: nothing to compare
    atomic_write_csv(out / "paired.csv", paired)
    shown = paired.assign(**{"ΔC (95% CI)": list(map(
        format_difference, paired.mean_difference, paired.ci_low, paired.ci_high))})
    cols = ["modalities", "encoder", "fusion", "data_fraction", "ΔC (95% CI)", "p_value",
            "n_pairs"]
    refs = paired["reference"].unique()
    what = refs[0] if len(refs) == 1 else f"per {by}: " + "; ".join(refs)
    _print_table(shown[cols], f"Harrell C minus the reference ({what}), paired on folds")
    console.print(f"paired comparisons: [bold]{escape(str(out / 'paired.csv'))}[/]")
    _grid_report(out)


def _experiment_interrupted(out: Path, resume: bool) -> None:
    """Ctrl-C during `experiment`: say what the grid folder keeps (finished trials, the
    finished folds of an interrupted trial) and how to go on (exit 130), as `train` does."""
    trials = len(list(out.glob("trials/*/summary.json")))
    folds = len(list(out.glob("trials/*/checkpoints/repeat_*/fold_*/done.json")))
    where = escape(str(out))
    if not trials and not folds:
        said = f"no trial or fold had finished, nothing kept in {where}; run the same command again"
    else:
        kept = f"{trials} finished trial(s)" + (f" and {folds} finished fold(s) of unfinished"
                                                 " trials" if folds else "")  # fmt: skip
        said = (f"{kept} kept in {where}; run the same command again to continue from them"
                + ("" if resume else " (without --no-resume, which starts the folder afresh)"))
    err_console.print("[bold red]interrupted:[/] " + said)
    raise typer.Exit(code=130)


def _grid_report(out: Path) -> None:
    """The grid's report.html (``experiments.grid_report``, the code `report` runs)."""
    from modalsurv.experiments.grid_report import build_grid_report

    console.print(f"report: [bold]{escape(str(build_grid_report(out)))}[/]")


@app.command()
@_user_errors
def report(
    folder: Path = typer.Argument(..., help="a run folder (modalsurv train) or a grid folder"
                                  " (modalsurv experiment)"),
    out: Path | None = typer.Option(None, help="the page to write (default: FOLDER/report.html);"
                                    " each figure's data goes to report_data/ beside it"),
    times: str = typer.Option("", help="run folders only: calibration times, comma-separated"
                              " (default, also on a later rebuild without --times: the"
                              " quartiles of the event times)"),
    title: str | None = typer.Option(None, help="the page's title"),
) -> None:
    """(Re)build the HTML report of a run or grid folder from its files, without retraining.

    A run's page: failure-signature checks, C-index with paired differences, Kaplan–Meier by
    risk group (log-rank), AUC(t), Brier score and IBS, calibration and D-calibration,
    gating weights, per-patient uncertainty, the CV → external gap. A grid's page: the
    ablation, fusion and encoder comparisons as forest plots, the data-scaling curve, the
    checks per trial and the embedding alignment per fusion.
    """
    from modalsurv.experiments.grid_report import build_report

    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a run folder or a grid folder")
    _file_out(out)
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        _not_inside(out, folder, "the folder the page is built from", also=" (or end it in"
                    " .html)")  # fmt: skip
        if out.is_file():  # e.g. `--out cfg.yaml`: a user's file, not a page to replace
            raise ConfigError(f"--out {out} exists and is not an HTML page: refusing to"
                              " overwrite it; give a .html file")  # fmt: skip
    page = build_report(folder, out, title, _parse_times(times) or None)
    console.print(f"report: [bold]{escape(str(page))}[/]  (figure data:"
                  f" {escape(str(page.parent / 'report_data'))})")
    _say_unfinished(folder)


def _say_unfinished(folder: Path) -> None:
    """A grid stopped half-way: said on the terminal too, not only on the page."""
    from modalsurv.experiments.grid_report import is_grid_folder, load_results, missing_trials

    if is_grid_folder(folder):
        missing = missing_trials(folder, load_results(folder))
        if missing:
            err_console.print(f"[yellow]warning:[/] {len(missing)} trial(s) of the grid have not"
                              f" run: {escape('; '.join(missing[:5]))}"
                              f"{' ...' if len(missing) > 5 else ''}; run `modalsurv"
                              " experiment` again to finish them")  # fmt: skip


def _parse_times(text: str) -> list[float]:
    """'12,24' → [12.0, 24.0]; anything else (a word, NaN, inf, a negative time) is a
    ConfigError naming --times."""
    try:
        times = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--times: {text!r} is not a comma-separated list of numbers"
                          " (e.g. 12,24,60)") from None
    bad = [t for t in times if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise ConfigError(f"--times: {', '.join(map(str, bad))} is not a time (finite, >= 0)")
    return times


def _parse_reference(text: str | None) -> dict[str, str] | None:
    """'key=value,key=value' → dict; a malformed pair is a ConfigError naming it."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--reference: {part!r} is not key=value (e.g. modalities=clinical)")
        out[key.strip()] = value.strip()
    return out


@app.command()
@_user_errors
def scan(
    root: Path = typer.Argument(..., help="cohort root folder (or manifest CSV)"),
    layout: str = typer.Option("chimera-task1", help="chimera-task1 | chimera-task3 | manifest"),
    strict: bool = typer.Option(False, help="treat warnings as errors"),
    features: Path | None = typer.Option(None, help="feature store to check against the folder"
                                         " (patients missing on either side)"),
    as_json: bool = typer.Option(False, "--json", help="print the problems as a JSON list of"
                                 " {severity, reason, path, patient, field}; severity 'note'"
                                 " entries (a declared label-leak column) are no problem"),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="a CHIMERA folder to predict on,"
                                    " read as `predict` reads it: cases need no follow-up or"
                                    " event"),
) -> None:
    """List every problem in a cohort (missing files, bad labels, unknown columns) in one
    report; a label-leak column the schema declares is one note, not a problem."""
    from modalsurv.errors import Problem
    from modalsurv.io.scan import scan as scan_cohort

    if features is not None and layout == "manifest":  # it would be silently ignored
        raise ConfigError("--features joins a feature store with a CHIMERA folder"
                          " (--layout chimera-task1 | chimera-task3); a manifest names its"
                          " feature files itself")  # fmt: skip
    notes: list[Problem] = []
    try:
        problems = scan_cohort(root, layout=layout, strict=strict and not as_json,
                               features=features, labels=not unlabelled, notes=notes)  # fmt: skip
    except DataError as err:
        _fail(err)
    failed = any(p.severity == "error" for p in problems) or (strict and bool(problems))
    if as_json:  # machine-readable: plain JSON on stdout, nothing else; notes last
        typer.echo(json.dumps([dataclasses.asdict(p) for p in [*problems, *notes]], indent=1))
        raise typer.Exit(code=1 if failed else 0)
    for n in notes:  # once per scan, before the problems and their count
        console.print(f"[cyan]{escape(str(n))}[/]", soft_wrap=True)
    if not problems:
        console.print("[green]no problems found[/]")
        return
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(f"[{colour}]{escape(str(p))}[/]", soft_wrap=True)  # keeps [error] visible
    errors = sum(p.severity == "error" for p in problems)
    patients = len({p.patient for p in problems if p.patient is not None})
    console.print(f"{len(problems)} problem(s): {errors} error(s), {len(problems) - errors}"
                  f" warning(s), concerning {patients} patient(s)"
                  + ("; --strict counts the warnings as errors" if strict and len(problems) > errors
                     else ""))  # fmt: skip
    if failed:
        raise typer.Exit(code=1)


def _check_extract_numbers(mpp: float, tile_size: int, max_tiles: int, min_tissue: float,
                           batch_size: int, workers: int, limit: int | None,
                           slide_mpp: float | None = None) -> None:  # fmt: skip
    """Refuse impossible extraction numbers before any slide is opened (ConfigError, exit 2):
    they used to fail patient by patient, each counted as a failed patient."""
    import math

    checks = [("--mpp", mpp, math.isfinite(mpp) and mpp > 0, "a number > 0 (µm per pixel)"),
              ("--tile-size", tile_size, tile_size >= 16, "an integer >= 16 (pixels)"),
              ("--max-tiles", max_tiles, max_tiles >= 1, "an integer >= 1"),
              ("--min-tissue", min_tissue, 0.0 <= min_tissue <= 1.0, "a fraction in [0, 1]"),
              ("--batch-size", batch_size, batch_size >= 1, "an integer >= 1"),
              ("--workers", workers, workers >= 0, "an integer >= 0"),
              ("--limit", limit, limit is None or limit >= 1, "an integer >= 1"),
              ("--slide-mpp", slide_mpp, slide_mpp is None or (math.isfinite(slide_mpp)
                                                               and 0 < slide_mpp <= 10),
               "a number in (0, 10] (µm per pixel of the slides' level 0)")]  # fmt: skip
    for option, value, ok, want in checks:
        if not ok:
            raise ConfigError(f"{option}: expected {want}; found {value!r}")


@app.command()
@_user_errors
def extract(
    root: Path = typer.Argument(..., help="cohort root folder (or manifest CSV)"),
    layout: str = typer.Option("chimera-task1", help="chimera-task1 | chimera-task3 | manifest"),
    out: Path = typer.Option(..., help="FeatureStore folder to write"),
    tile_encoder: str = typer.Option("efficientnet_lite0", help="tile encoder registry name"),
    tile_weights: Path | None = typer.Option(None, help="local checkpoint for the tile encoder"),
    timm_kwargs: str | None = typer.Option(
        None, "--timm-kwargs", help="JSON object of keyword arguments for the tile encoder"
        " (timm.create_model's for timm:<name>, architecture keywords for a preset), e.g."
        ' \'{"init_values": 1e-5, "dynamic_img_size": true}\'; recorded in the store'),
    slide_encoder: str = typer.Option("mean", help="mean | titan"),
    slide_weights: Path | None = typer.Option(None, help="local TITAN snapshot folder"),
    volume_encoder: str | None = typer.Option(None, help="e.g. medicalnet_resnet10"),
    volume_weights: Path | None = typer.Option(None, help="local MedicalNet .pth"),
    mpp: float = typer.Option(0.5, help="target resolution in µm per pixel"),
    slide_mpp: float | None = typer.Option(None, help="every slide's level-0 resolution in µm"
                                           " per pixel, replacing its metadata (a slide"
                                           " without one, a 72-dpi default, non-square"
                                           " pixels); recorded with the store's settings"),
    tile_size: int = typer.Option(224, help="tile size in pixels at the target resolution"),
    max_tiles: int = typer.Option(500, help="at most this many tiles per slide"),
    min_tissue: float = typer.Option(0.5, help="least tissue fraction of a kept tile"),
    mri_size: str = typer.Option("32,64,64", help="MRI volume size z,y,x after cropping to the"
                                 " prostate"),
    mri_orientation: str = typer.Option(
        "LPS", help="anatomical axes the T2W grid is reoriented to before resampling (e.g."
        " LPS, RAS); none: the file's own index order (stores extracted before this option)"),
    batch_size: int = typer.Option(32, help="tiles read and encoded per batch"),
    workers: int = typer.Option(2, help="parallel tile-reading workers"),
    limit: int | None = typer.Option(None, help="only the first N patients (dry run)"),
    device: str = typer.Option("auto", help="cpu | cuda | auto"),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="allow an encoder without weights (random initialisation,"
        " seeded); recorded in the store, the run folder and the report"),
    reextract_changed: bool = typer.Option(
        False, "--reextract-changed", help="re-extract patients the store holds from other"
        " source files (default: refuse them)"),
    tile_cache: bool = typer.Option(
        False, "--tile-cache", help="also keep every tile's uint8 pixels (and coordinates) in"
        " the image cache, for fine-tuning the tile encoder in training (finetune:)"),
    volume_cache: bool = typer.Option(
        False, "--volume-cache", help="also keep the preprocessed MRI volumes in the image"
        " cache, for fine-tuning the volume encoder in training"),
    cache_dir: Path | None = typer.Option(None, help="image cache folder (default:"
                                          " OUT/image_cache)"),
) -> None:
    """Embed slides (tiles + slide vector) and MRI with frozen encoders into a store (RNA is
    stored raw, aligned on genes).

    The store records how (STORE/extraction.json): encoders, weight checksums, tile µm/px,
    tile size, tile cap, MRI preprocessing. A training run copies the record, so the
    model can extract its inputs again the same way (`modalsurv challenge`).
    """
    from modalsurv.features.extract import run_extract

    kwargs: dict[str, Any] = dict(
        tile_encoder=tile_encoder, tile_weights=tile_weights, slide_encoder=slide_encoder,
        volume_encoder=volume_encoder, volume_weights=volume_weights, mpp=mpp,
        tile_size=tile_size, max_tiles=max_tiles, batch_size=batch_size, workers=workers,
        limit=limit, device=device, allow_random_weights=random_weights,
        reextract_changed=reextract_changed, min_tissue=min_tissue, tile_cache=tile_cache,
        volume_cache=volume_cache, cache_dir=cache_dir, mpp_override=slide_mpp,
    )
    if slide_weights is not None:
        kwargs["slide_weights"] = slide_weights
    try:
        _check_extract_numbers(mpp=mpp, tile_size=tile_size, max_tiles=max_tiles,
                               min_tissue=min_tissue, batch_size=batch_size, workers=workers,
                               limit=limit, slide_mpp=slide_mpp)  # fmt: skip
        if device != "auto":  # a device torch does not know is a usage error, named
            from modalsurv.devices import resolve_device

            resolve_device(device, what="--device")
        if timm_kwargs is not None:
            try:
                parsed = json.loads(timm_kwargs)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--timm-kwargs: not JSON ({exc}); found {timm_kwargs!r}") from exc
            if not isinstance(parsed, dict):
                raise ConfigError(f"--timm-kwargs: expected a JSON object; found {timm_kwargs!r}")
            kwargs["tile_encoder_kwargs"] = parsed
        from modalsurv.features.mri import MriConfig

        try:
            size = tuple(int(v) for v in mri_size.split(","))
        except ValueError:
            size = ()
        if len(size) != 3 or min(size) < 4:
            raise ConfigError(f"--mri-size: expected z,y,x (three integers >= 4); found {mri_size!r}")
        orient = None if mri_orientation.lower() == "none" else mri_orientation.upper()
        axis = {"L": "x", "R": "x", "A": "y", "P": "y", "S": "z", "I": "z"}  # each axis once
        if orient is not None and sorted(axis.get(c, "?") for c in orient) != ["x", "y", "z"]:
            raise ConfigError(f"--mri-orientation: three distinct axes of L/R, A/P, S/I (e.g. LPS)"
                              f" or none; found {mri_orientation!r}")  # fmt: skip
        kwargs["mri"] = MriConfig(size=size, orientation=orient)  # type: ignore[arg-type]
        with _progress() as p:
            report = run_extract(layout, root, out, progress=RichProgress(p), **kwargs)
    except (DataError, ConfigError) as err:
        _fail(err)
    except KeyboardInterrupt:
        _extract_interrupted(out)
    partial = report.unusable_inputs
    console.print(f"store: [bold]{escape(str(out))}[/]  done {len(report.done)}, skipped "
                  f"{len(report.skipped)}, no images {len(report.no_images)}, failed"
                  f" {len(report.failed_patients)}"
                  + (f", images cached {len(report.cached)}" if report.cached else "")
                  + (f"; {len(partial)} unusable input(s) of patients otherwise extracted"
                     if partial else ""))  # fmt: skip
    for prob in report.problems:  # discovery and extraction warnings (no tissue, resolution)
        colour = "red" if prob.severity == "error" else "yellow"
        console.print(f"[{colour}]{escape(str(prob))}[/]", soft_wrap=True)
    for f in report.failures:
        what = "unusable input" if f in partial else "failed"
        console.print(f"[red]{what}[/] {escape(str(f))}", soft_wrap=True)
    if report.failures:
        raise typer.Exit(code=1)


def _extract_interrupted(out: Path) -> None:
    """Ctrl-C during `extract`: say how many patients the store keeps and how to go on
    (exit 130), as `train` does. Patients are written in batches: those encoded since the
    last write are lost, and a rerun skips every complete patient."""
    where = escape(str(out))
    try:
        from modalsurv.io.store import FeatureStore

        store = FeatureStore(out)
        n: int | None = len({p for m in store.modalities() for p in store.patients(m)})
    except Exception:  # an unreadable store: said without a count
        n = None
    if n == 0:
        said = f"no patient had been written to {where}; run the same command again"
    else:
        kept = "the patients written so far" if n is None else f"{n} patient(s) stored"
        said = (f"{kept} kept in {where} (any encoded since its last write are redone); run"
                " the same command again to continue: complete patients are skipped")
    err_console.print("[bold red]interrupted:[/] " + said)
    raise typer.Exit(code=130)


def _check_weight_folders(weights: list[Path]) -> None:
    """Each ``--weights`` must be a folder: weights are looked up there by file name, so a
    mistyped folder or the checkpoint file itself was skipped without a word (and the
    encoder then loaded from elsewhere, or failed naming only the weights it missed)."""
    for folder in weights:
        if folder.is_file():
            raise ConfigError(f"--weights {folder} is a file; give the folder holding it"
                              f" ({folder.parent})")  # fmt: skip
        if not folder.is_dir():
            raise ConfigError(f"--weights {folder}: no such folder")


#: where `challenge` writes one case's answer without --output: the container's folder
CHALLENGE_OUTPUT = Path("/output")
_MODEL_HINT = ("check --model: a finished run folder (modalsurv train) or the folder"
               " `modalsurv export-model` wrote, for this task (and --weights for its"
               " encoders); nothing was written")


@app.command()
@_user_errors
def challenge(
    task: str = typer.Argument(..., help="task1 (prostate BCR) | task3 (bladder recurrence)"),
    model: Path = typer.Option(Path("/opt/ml/model"), help="a finished run folder (modalsurv"
                               " train on the task's CHIMERA data) or the folder `modalsurv"
                               " export-model` wrote"),
    input: Path = typer.Option(Path("/input"), "--input", help="one case in the grand-challenge"
                               " layout (sockets under images/, JSON files, inputs.json)"),
    output: Path | None = typer.Option(None, help="the folder the answer JSON is written to"
                                       " (default: /output, the challenge container's; it"
                                       " must exist then)"),
    weights: list[Path] = typer.Option([], metavar="DIR", help="folder(s) holding the encoder"
                                       " weights named in the model's extraction record"
                                       " (default: RUN/weights; repeatable)"),
    direction: str = typer.Option("risk", help="task 3 only: 'risk' writes a likelihood rising"
                                  " with risk; 'time' a time like task 1 (the organisers'"
                                  " published task-3 evaluation reads the value as a time)"),
    device: str = typer.Option("auto", help="cpu | cuda | auto"),
    batch: Path | None = typer.Option(None, help="score every case of this CHIMERA folder"
                                      " instead of one /input case, and print the challenge"
                                      " metric"),
    out: Path | None = typer.Option(None, help="with --batch: the CSV to write (one row per case)"),
) -> None:
    """Answer the CHIMERA challenge with a trained model: one case from /input to /output.

    The case's features are extracted with the encoders and settings the model recorded,
    the fold ensemble predicts, and one float is written (task 1: months to biochemical
    recurrence, ordered opposite to risk; task 3: a likelihood of recurrence). Nothing is
    written unless the whole answer is ready. --batch scores a whole CHIMERA folder the
    same way and prints Harrell's C as the organisers compute it.
    """
    from modalsurv.challenge.answer import answer_case, score_folder
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.challenge.sockets import task_name
    from modalsurv.devices import resolve_device

    try:
        t = task_name(task)
        if direction not in ("risk", "time"):
            raise ConfigError(f"--direction must be 'risk' or 'time'; found {direction!r}")
        _file_out(out)
        if out is not None and batch is None:
            raise ConfigError("--out is the CSV of --batch; one case's answer goes to --output")
        if out is not None:
            if out.is_file():  # e.g. RUN/predictions.csv, the run's out-of-fold predictions
                _not_inside(out, model, "the --model folder")
            _not_inside(out, batch, "the --batch folder")  # a CSV among the cases
        if output is None:  # the container's folder: made by the platform, never here
            output = CHALLENGE_OUTPUT
            if batch is None and not output.is_dir():
                raise ConfigError(f"--output not given, and {output} (where the challenge"
                                  " container writes its answer) does not exist here: give"
                                  " --output FOLDER for the answer JSON")  # fmt: skip
        if batch is None and output.exists() and not output.is_dir():
            raise ConfigError(f"--output {output} is a file; give the folder the answer JSON"
                              " goes to")  # fmt: skip
        dev = str(resolve_device(device, what="--device"))  # an unknown or absent device: usage
        _check_weight_folders(weights)
        try:
            predictor = ChallengeModel.load(model, t, weights)
        except DataError as err:  # the model folder or its weights are at fault, not the
            _fail(err, _MODEL_HINT)  # case or folder (the hints said: fix the input / scan)
        except ConfigError as err:  # no run folder (or its config): an option error, exit 2
            raise ConfigError(f"--model: {err}; {_MODEL_HINT}") from None
        if batch is not None:
            with _progress() as p:
                res = score_folder(t, predictor, batch, out, weights, dev, direction,  # type: ignore[arg-type]
                                   progress=RichProgress(p))  # fmt: skip
            for prob in res.problems[:20]:
                console.print(f"[yellow]{escape(str(prob))}[/]")
            _print_table(res.table.drop(columns=["modalities", "error"]).head(20),
                         f"{t}: predictions (first 20 of {len(res.table)})")
            answered = int(res.table["prediction"].notna().sum())
            console.print(f"{answered} of {len(res.table)} cases answered, {res.n_skipped} skipped"
                          + (" (no prediction; the reason in the CSV's 'error' column)"
                             if res.n_skipped else ""))  # fmt: skip
            scored = int((res.table["prediction"].notna() & res.table["time"].notna()
                          & res.table["event"].notna()).sum())  # fmt: skip
            if res.c_index is None:
                labelled = res.table.loc[res.table["prediction"].notna(), "event"]
                console.print("no comparable pair of labelled cases: no C-index"
                              if labelled.fillna(False).astype(bool).any()
                              else "no labelled case with an event: no C-index")  # fmt: skip
            else:
                console.print(f"challenge metric (organisers' formula, C on minus the prediction):"
                              f" [bold]{res.c_index:.4f}[/] over {scored} cases")  # fmt: skip
                if t == "task3" and direction == "risk":
                    console.print(f"  read as a risk (C on the prediction itself):"
                                  f" {res.c_index_as_risk:.4f}")
            if out is not None:  # score_folder writes both
                metrics = out.with_name(out.stem + "_metrics.json")
                console.print(f"predictions: [bold]{escape(str(out))}[/]; challenge metric:"
                              f" [bold]{escape(str(metrics))}[/]")
            return
        result, path = answer_case(t, predictor, input, output, weights, dev, direction)  # type: ignore[arg-type]
    except (DataError, ConfigError) as err:
        _fail(err, None if batch is not None else
              "fix the input file or field named above; nothing was written to --output")
    for prob in result.problems:
        console.print(f"[yellow]{escape(str(prob))}[/]")
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
    console.print(f"{escape(str(path))}: {escape(repr(result.value))} (risk"
                  f" {result.risk:.4f}; modalities {'+'.join(result.modalities)}; {stages})")


@app.command("init-config")
@_user_errors
def init_config(
    name: str = typer.Argument("synthetic", help="a shipped config (see --list)"),
    out: Path | None = typer.Option(None, help="file to write (default: print it)"),
    list_: bool = typer.Option(False, "--list", help="list the shipped configs"),
) -> None:
    """Start from a shipped example config: a run (train) or an experiment grid."""
    from modalsurv import configs

    if list_:
        if out is not None:
            raise ConfigError("--list prints the names; --out writes one config: give one")
        for n in configs.available():
            typer.echo(n)
        return
    text = configs.text(name)
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists():
        raise ConfigError(f"{out} exists; choose another --out")
    atomic_write_text(out, text)
    console.print(f"wrote [bold]{escape(str(out))}[/] (from the shipped {escape(repr(name))})")


@app.command("case-input")
@_user_errors
def case_input(
    task: str = typer.Argument(..., help="task1 | task3"),
    root: Path = typer.Argument(..., help="a CHIMERA task folder"),
    case: str = typer.Argument(..., help="the case id"),
    out: Path = typer.Option(..., help="folder to write (the case as /input): new or empty"),
    replace: bool = typer.Option(False, "--replace",
                                 help="empty --out first when it holds files (another case)"),
) -> None:
    """Lay out one case of a CHIMERA folder as the grand challenge presents it under
    /input (labels removed, images in their socket folders, inputs.json), to try the
    challenge command or the container before submitting."""
    from modalsurv.challenge.sockets import case_to_input

    try:
        path = case_to_input(root, task, case, out, replace=replace)
    except (DataError, ConfigError) as err:  # the hint names --replace, which the error cannot
        _fail(err, "fix the folder or case named above; --out must be new or empty, or a folder"
                   " case-input wrote before, which --replace empties")
    console.print(f"/input for case {escape(str(case))}: [bold]{escape(str(path))}[/]")


@app.command("export-model")
@_user_errors
def export_model_cmd(
    run: Path = typer.Argument(..., help="a finished run folder"),
    out: Path = typer.Option(..., help="model folder to write (or a .tar.gz to upload)"),
    task: str | None = typer.Option(None, help="task1 | task3 (default: the run's CHIMERA task)"),
    weights: list[Path] = typer.Option([], metavar="DIR", help="folder(s) holding the encoder"
                                       " weights the extraction record names (repeatable)"),
) -> None:
    """Package a run as the challenge container's /opt/ml/model: the fold ensemble, its
    config and extraction record, and the encoder weights (checksums verified)."""
    from modalsurv.challenge.export import export_model
    from modalsurv.runs import check_trained

    try:
        _check_weight_folders(weights)
        check_trained(run)  # a mistyped run folder, named before the --task question
        path = export_model(run, out, task, weights)
    except (DataError, ConfigError) as err:
        _fail(err)
    console.print(f"model for /opt/ml/model: [bold]{escape(str(path))}[/]")


def _one_line_summaries(typer_app: typer.Typer) -> None:
    """Give every command its docstring's first paragraph as one line for the command list
    of ``modalsurv --help``: typer's rich mode keeps the docstring's line breaks there, which
    cut each summary at the source's wrap instead of the terminal's. Each command also gets
    the class that shows its flags without a type (``_Command``)."""
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):  # flags without a type in the help
            info.cls = _Command
        doc = inspect.getdoc(info.callback) if info.callback else None
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())


_one_line_summaries(app)

if __name__ == "__main__":  # pragma: no cover
    app()
