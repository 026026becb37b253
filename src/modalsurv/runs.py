"""Run folders: the train / evaluate / predict service the command line calls.

One ``train`` run is one folder with everything needed to trust and reuse it:
``config.yaml`` (resolved), ``data.json`` (what was read, every problem),
``extraction.json`` (how image features were made), ``folds.csv``, ``predictions.csv``
(out-of-fold), ``metrics.csv`` / ``metrics.json``, ``models/`` (the fold ensemble),
``checkpoints/`` (per-fold state for ``--resume``, ``resume.UnitFolder``, and
``cohort.json``: digests of the data the folds were trained on),
``gate_weights.csv`` and ``uncertainty.csv`` (out-of-fold modality weights and member
spread) and ``report.html`` (``report.run_report``, rebuilt from these files alone by
``modalsurv report``). ``evaluate`` adds ``evaluation_<cohort>.json`` and
``evaluation_<cohort>_predictions.csv``, records the CV → external drop in
``metrics.json``'s diagnostics and rebuilds the report. Every file is written to a
temporary name and renamed; the folder is locked while a process works in it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, absolute_data_paths, dump_config, load_config
from modalsurv.data.sources import LoadedData, load_data
from modalsurv.errors import ConfigError, DataError, DataWarning, LabelError
from modalsurv.folders import RUN, refuse_other_kind
from modalsurv.report.run_files import EVALUATION, EVALUATION_PREDICTIONS
from modalsurv.resume import remove_stale_temporaries
from modalsurv.survival import metrics as M
from modalsurv.train.cv import ibs_grid
from modalsurv.utils import Progress, atomic_write_csv, atomic_write_text, exclusive_lock


def train_run(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    cohort: Cohort | None = None,
    title: str = "modalsurv run",
    data: LoadedData | None = None,
    executor: Any = None,
) -> Any:
    """Cross-validate ModalSurv and the baselines on the same folds; write the run folder.

    ``data``: the loaded cohort with its problems and extraction record (``load_data``);
    kept in the run folder as ``data.json`` and ``extraction.json``. Without it (and
    without ``cohort``) the config's data is loaded here.

    Everything that can be checked is checked before the first write (the cohort, the
    folds, whether ``out`` holds another run), so a refused run leaves ``out`` as it was.
    The folder is locked for the whole run (:func:`~modalsurv.utils.exclusive_lock`): a
    second process on it gets a LockedError naming the holder. A run that failed before
    finishing a fold left nothing worth keeping, so the same command simply runs again.

    ``executor``: where the outer folds run (``train.cv.FoldExecutor``, e.g.
    ``experiments.runners.RayRunner``); default one after another here. Each fold is
    checkpointed as it finishes and the results are assembled in fold order, so the run
    folder is the same either way.
    """
    from modalsurv.train.cv import check_resume, cross_validate, has_finished_folds, plan_cv

    out = Path(out)
    refuse_other_kind(out, RUN)  # a grid, a feature store, an exported model: not ours
    config = absolute_data_paths(config)  # recorded and compared as one absolute path
    checkpoints = out / "checkpoints"
    if data is None and cohort is None:
        data = load_data(config.data, seed=config.seed)
    if cohort is None:
        assert data is not None
        cohort = data.cohort
    if not cohort.modalities:  # before anything is written
        raise DataError("the cohort has no modality to train on (no feature file column,"
                        " store modality or clinical column was read)", field="modalities")  # fmt: skip
    unknown = [m for m in config.model.modalities or [] if m not in cohort.modalities]
    if unknown:  # a typo: before the folds start, as the usage error it is
        raise ConfigError(f"model.modalities: {unknown} not among this cohort's modalities"
                          f" {cohort.modalities}")  # fmt: skip
    ft = config.finetune
    used = config.model.modalities or cohort.modalities
    if ft.active and ft.encoder not in used:  # was: trained frozen, recorded as fine-tuned
        raise ConfigError(f"finetune.encoder {ft.encoder!r} is not among the modalities the"
                          f" model uses ({used}): nothing would be fine-tuned; add it to"
                          " model.modalities or set finetune.mode: frozen")  # fmt: skip
    if ft.active:  # no image cache, or a stale one: refused before the folder is touched
        from modalsurv.train.finetune import check_images

        check_images(config, cohort)
    plan = plan_cv(cohort, config)
    record = cohort_record(cohort)
    with exclusive_lock(out, "run folder"):
        finished = (out / "metrics.json").is_file()
        has_folds = has_finished_folds(checkpoints)
        if has_folds or finished:
            if not resume:
                raise ConfigError(
                    f"run folder {out} already holds fold checkpoints: pass --resume to "
                    "continue it, or choose another --out"
                )
            check_resume(checkpoints, plan.assignment, config, plan.baselines)
            check_same_cohort(checkpoints, record)
            saved = out / "config.yaml"
            if finished and saved.is_file() and _saved_config(saved) != dump_config(config):
                # train.threads changes only the order floats are summed in: warned about
                # (by check_resume, fold by fold), never refused, as a resume does
                if _saved_config(saved, config.train.threads) != dump_config(config):
                    raise ConfigError(f"run folder {out} holds a finished run with another"
                                      f" config ({saved}{_config_differences(saved, config)});"
                                      " resume with that config or use a new --out")  # fmt: skip
                if not has_folds:  # every fold trained again: check_resume said nothing
                    warnings.warn(f"run folder {out}: its finished run trained with another"
                                  f" train.threads than this run's {config.train.threads!r};"
                                  " without fold checkpoints every fold is trained again and"
                                  " the numbers may differ from the finished run's in their"
                                  " last digits", DataWarning, stacklevel=2)  # fmt: skip
        # only the temporaries of what train writes: ``out`` may be a folder of the user's
        # (or hold another process's live output) below its top level
        remove_stale_temporaries(out, recursive=False)
        for sub in RUN_SUBFOLDERS:
            if (out / sub).is_dir():
                remove_stale_temporaries(out / sub)
        atomic_write_text(out / "config.yaml", dump_config(config))
        if not has_folds or not (checkpoints / COHORT_RECORD).is_file():
            atomic_write_text(checkpoints / COHORT_RECORD, json.dumps(record, indent=1))
        result = cross_validate(cohort, config, progress=progress, resume_dir=checkpoints,
                                executor=executor)  # fmt: skip
        result.save(out)
        write_data_record(out, data or LoadedData(cohort, source="in-memory cohort"))
        from modalsurv.report.run_report import build_run_report, write_run_extras

        write_run_extras(out, result, cohort)
        if list(out.glob(EVALUATION.format("*"))):  # a resumed run keeps its external checks
            refresh_diagnostics(out)
        build_run_report(out, title=title)
    return result


#: the subfolders ``train`` writes in a run folder (its temporaries are cleaned there only)
RUN_SUBFOLDERS = ("checkpoints", "models", "report_data")
#: beside the fold checkpoints: digests of the cohort their folds were trained on
COHORT_RECORD = "cohort.json"


def cohort_record(cohort: Cohort) -> dict[str, str]:
    """What ``checkpoints/cohort.json`` keeps: ``Cohort.digests``. Why: the fold assignment
    alone misses a data file edited between an interrupted run and its resume (a corrected
    time, re-extracted features), whose finished folds were then mixed with folds trained
    on the new data."""
    return cohort.digests()


def check_same_cohort(checkpoints: Path, record: dict[str, str]) -> None:
    """Refuse (ConfigError naming the parts that differ) to resume finished folds trained on
    another cohort; a run folder written before the record was kept is not checked."""
    path = checkpoints / COHORT_RECORD
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume directory {checkpoints}: cannot read {path} ({err}); remove"
                          " it to resume without checking the data") from None  # fmt: skip
    changed = [k for k in sorted(set(old) | set(record)) if old.get(k) != record.get(k)]
    if changed:
        raise ConfigError(f"resume directory {checkpoints} holds folds trained on other data:"
                          f" this cohort's {', '.join(changed)} differ from theirs (a data file"
                          " changed since?); resume on the same data, or use a new --out"
                          " for the new data")  # fmt: skip


def _saved_config(path: Path, threads: int | str | None = None) -> str:
    """A run folder's config.yaml as train_run would write it now (an older run recorded
    a relative data.path as given); ``threads``: with this ``train.threads`` instead."""
    try:
        config = absolute_data_paths(load_config(path))
    except (ConfigError, OSError):
        return path.read_text("utf-8")  # compared as written: any difference refuses
    if threads is not None:
        config = config.model_copy(update={"train": config.train.model_copy(
            update={"threads": threads})})  # fmt: skip
    return dump_config(config)


def _config_differences(saved: Path, config: RunConfig) -> str:
    """``: key: old there, new here; ...`` for a saved config that differs from ``config``
    (empty when the saved one cannot be read as a config: it is named as a whole then)."""
    from modalsurv.resume import spec_differences

    try:
        old = absolute_data_paths(load_config(saved)).model_dump(mode="json")
    except (ConfigError, OSError):
        return ""
    diff = spec_differences(old, config.model_dump(mode="json"))
    return f": {'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''}" if diff else ""


def refresh_diagnostics(run: Path) -> dict[str, Any]:
    """Rewrite ``metrics.json``'s diagnostics with one CV → external drop check per
    ``evaluation_<cohort>.json`` in the run folder (``train.diagnostics``); returns them."""
    from modalsurv.report.run_files import RunFolder
    from modalsurv.report.run_report import diagnostics_of

    folder = RunFolder.load(run)
    summary = dict(folder.summary)
    summary["diagnostics"] = diagnostics_of(folder)
    atomic_write_text(run / "metrics.json", json.dumps(summary, indent=1))
    return summary["diagnostics"]


def write_data_record(out: Path, data: LoadedData) -> None:
    """``data.json`` (what was read, coverage, every problem) and, for extracted features,
    ``extraction.json`` (how they were made: the model's inputs must be made the same way
    at inference)."""
    from modalsurv.data.summary import data_summary
    from modalsurv.io.store import EXTRACTION_RECORD

    atomic_write_text(out / "data.json", json.dumps(data_summary(data), indent=1))
    if data.extraction is not None:
        atomic_write_text(out / EXTRACTION_RECORD, json.dumps(data.extraction, indent=1))


def check_trained(run: str | Path, scored: bool = False) -> None:
    """A ConfigError unless ``run`` holds a trained fold ensemble (``models/repeat_0``) and,
    with ``scored``, the out-of-fold predictions that ``evaluate`` compares against. Cheap:
    the CLI calls it before reading a cohort, so a mistyped run folder fails at once."""
    run = Path(run)
    if not run.is_dir():
        raise ConfigError(f"{run} is not a folder: give a finished run folder (modalsurv train)")
    needed = [run / "models" / "repeat_0"] + ([run / "predictions.csv"] if scored else [])
    for path in needed:
        if not path.exists():
            raise ConfigError(f"{run} is not a finished run folder: {path} is missing")


def load_ensemble(run: str | Path, repeat: int = 0) -> Any:
    """The fold ensemble a run folder saved (weights only, no pickled code)."""
    from modalsurv.train.ensemble import FoldEnsemble

    path = Path(run) / "models" / f"repeat_{repeat}"
    if not path.exists():
        raise ConfigError(f"{run} is not a finished run folder: {path} is missing")
    return FoldEnsemble.load(path)


def evaluate_run(
    run: str | Path,
    cohort: Cohort,
    n_boot: int = 200,
    seed: int = 0,
    name: str = "external",
) -> dict[str, Any]:
    """Score the run's fold ensemble on another cohort (Harrell C, Uno C, IBS, 95% CIs).

    Uno's C and the IBS weight by this cohort's own Kaplan–Meier censoring estimate (as
    Uno et al. and Graf et al. do, and as the report's Brier and AUC(t) do): an external
    cohort is followed up otherwise than the training one, and the training censoring
    estimate there misweighs every patient (IBS of the true curves about doubled for
    twice the follow-up, understated for a shorter one). The time grid and Uno's tau stay
    inside the training follow-up, where the model's curves end.

    Writes ``evaluation_<name>.json`` (the scores) and ``evaluation_<name>_predictions.csv``
    (each patient's risk with the spread over the ensemble's members), adds the CV →
    external drop to ``metrics.json``'s diagnostics and rebuilds ``report.html``."""
    run = Path(run)
    check_trained(run, scored=True)
    if len(cohort) < 2 or cohort.n_events == 0:
        raise LabelError(f"cannot score a cohort of {len(cohort)} patient(s) with"
                         f" {cohort.n_events} event(s): the C-index needs at least one event"
                         " and two patients (`modalsurv predict` gives risks without"
                         " labels)", field="event")  # fmt: skip
    ens = load_ensemble(run)
    # "NA" / "null" are patient IDs here, not missing values (as the report reads them)
    train = pd.read_csv(run / "predictions.csv", dtype={"patient": str}, keep_default_na=False,
                        na_values=[""])  # fmt: skip
    train = train[train["repeat"] == 0]
    seen = sorted(set(cohort.ids) & set(train["patient"]))
    tr_time = train["time"].to_numpy(float)
    from modalsurv.report.run_report import build_run_report
    from modalsurv.train.members import prediction_table

    table = prediction_table(ens, cohort)  # one pass gives the risks scored below too
    risk = table["risk"].to_numpy(dtype=np.float64)
    c, lo, hi = M.bootstrap_ci(M.concordance_index, cohort.time, cohort.event, risk, n=n_boot, seed=seed)
    # the share of patients with each modality the model was trained on (0: the cohort
    # lacks it and every patient was predicted without it): a gap read without this
    # could be taken for the model's, when it is the cohort's
    trained_on = sorted({m for model in ens.members for m in model.modalities_})
    coverage = {m: float(cohort.present[m].mean()) if m in cohort.features else 0.0
                for m in trained_on}  # fmt: skip
    out: dict[str, Any] = {
        "cohort": name,
        "n": len(cohort),
        "events": cohort.n_events,
        "harrell_c": c,
        "harrell_c_ci95": [lo, hi],
        "modality_coverage": coverage,
        "absent_modalities": [m for m, v in coverage.items() if v == 0.0],
        "censoring_reference": "cohort",  # Uno C and IBS: this cohort's censoring estimate
    }
    if seen:  # the fold ensemble was fitted on them: their C is not an external one
        out["training_patients"] = len(seen)
        warnings.warn(f"evaluate {name}: {len(seen)} of {len(cohort)} patients (e.g."
                      f" {', '.join(map(repr, seen[:3]))}) are in the run's training cohort;"
                      " the fold ensemble was fitted on them, so the C-index is in-sample,"
                      " not external (the run's cross-validated scores are the honest"
                      " ones)", DataWarning, stacklevel=2)  # fmt: skip
    note = time_scale_note(tr_time, cohort.time)
    if note is not None:
        out["time_scale_warning"] = note
        warnings.warn(f"evaluate {name}: {note}", DataWarning, stacklevel=2)
    tau = float(min(tr_time.max(), np.quantile(cohort.time, 0.9)))
    try:
        out["uno_c"] = M.uno_concordance(cohort.time, cohort.event, cohort.time, cohort.event,
                                         risk, tau=tau)  # fmt: skip
    except ValueError as err:
        out["uno_c"] = float("nan")
        out["uno_c_error"] = str(err)
    grid = ibs_grid(tr_time, cohort.time)  # the grid cross-validation scores on
    try:
        surv = ens.predict_survival(cohort, grid)
        out["ibs"] = M.integrated_brier_score(cohort.time, cohort.event, cohort.time,
                                              cohort.event, surv, grid)  # fmt: skip
    except ValueError as err:
        out["ibs"] = float("nan")
        out["ibs_error"] = str(err)
    table.insert(1, "time", cohort.time)
    table.insert(2, "event", cohort.event.astype(int))
    with exclusive_lock(run, "run folder"):
        atomic_write_text(run / EVALUATION.format(name), json.dumps(out, indent=1))
        atomic_write_csv(run / EVALUATION_PREDICTIONS.format(name), table)
        out["diagnostics"] = [c for c in refresh_diagnostics(run)["checks"]
                              if c["check"] == f"external_drop:{name}"]  # fmt: skip
        build_run_report(run)
    return out


def predict_run(
    run: str | Path, cohort: Cohort, out: str | Path, times: Sequence[float] | None = None
) -> pd.DataFrame:
    """Write per-patient risk, expected time and survival at chosen times to a CSV, each
    with the spread over the ensemble's members (folds × seeds, ``train.members``):
    ``risk_sd``, ``risk_p05`` / ``risk_p95`` and ``survival_at_<t>_p05`` / ``_p95`` (the
    5th–95th percentiles over members), and ``n_members``."""
    from modalsurv.train.members import prediction_table

    times = None if times is None else [float(t) for t in np.asarray(times).ravel()]
    oof = Path(run) / "predictions.csv"  # absent from an exported model: nothing to compare
    trained = None
    if oof.is_file():  # ids as text ("NA" is an id), as the run wrote them
        trained = pd.read_csv(oof, usecols=["patient", "time"], dtype={"patient": str},
                              keep_default_na=False, na_values=[""])  # fmt: skip
    if times and trained is not None:  # a numpy array of times was "ambiguous" here
        followed = trained["time"]
        late = [t for t in times if t > float(followed.max())]
        if late:
            warnings.warn(f"--times {', '.join(f'{t:g}' for t in late)}: past the longest"
                          f" training follow-up ({float(followed.max()):g}); the model has"
                          " seen no one that long, so survival there is the last estimate"
                          " carried forward, not a prediction", DataWarning, stacklevel=2)  # fmt: skip
    if trained is not None:  # the fold ensemble was fitted on them: their risks are in-sample
        seen = sorted(set(cohort.ids) & set(trained["patient"]))
        if seen:
            warnings.warn(f"predict: {len(seen)} of {len(cohort)} patients (e.g."
                          f" {', '.join(map(repr, seen[:3]))}) are in the run's training"
                          " cohort; the fold ensemble was fitted on them, so their risks are"
                          " in-sample, not those of new patients (the run's out-of-fold"
                          " predictions.csv has honest ones)", DataWarning, stacklevel=2)  # fmt: skip
    df = prediction_table(load_ensemble(run), cohort, times)
    atomic_write_csv(out, df)
    return df


#: a median follow-up this many times the training cohort's (or its inverse) reads as
#: another time unit (days against months is about 30, months against years 12)
TIME_SCALE_RATIO = 8.0


def time_scale_note(train_time: np.ndarray, new_time: np.ndarray) -> str | None:
    """A warning when a cohort's median follow-up is ``TIME_SCALE_RATIO`` times the
    training cohort's or less than its inverse: most likely another time unit, under which
    the C-index is unchanged but the survival curves and Brier scores are wrong."""
    a, b = float(np.median(train_time)), float(np.median(new_time))
    if a <= 0 or b <= 0:
        return None
    ratio = b / a
    if 1 / TIME_SCALE_RATIO <= ratio <= TIME_SCALE_RATIO:
        return None
    return (f"median follow-up {b:g} against {a:g} in training ({ratio:.3g} times): another"
            " time unit? The C-index does not depend on it; survival curves, IBS and"
            " calibration do (convert the times to the training unit)")
