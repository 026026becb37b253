"""Cross-validation: outer stratified folds, nested inner validation, out-of-fold results.

Protocol (``config.cv.selection="inner"``, the default): for each repeat and outer fold,
ModalSurv is fitted on the other folds, carving its early-stopping split from them; the
outer fold is only predicted and scored. ``selection="outer_fold"`` replicates the
original ModalSurv protocol (early stopping on the very fold that is reported): its
numbers are optimistic, and are labelled so in :class:`CVResult` (``optimistic=True``),
in every per-fold row and in ``metrics.json``.

Folds are stratified on event × follow-up-time tercile (falling back to halves, then to
the event alone, then to plain shuffled K-fold when there are fewer events than folds;
the event alone also when fewer patients are censored than there are folds, so that every
fold still gets an event). ``cv.groups`` (e.g. ``site``) makes the outer folds
leave-one-group-out instead: one fold per value of that ``meta`` column, each group held
out once. The baselines are fitted and scored on exactly the same folds.

Per fold: Harrell's C, Uno's C (censoring distribution from the training part) and the
integrated Brier score on 50 times between the 10th and 90th percentile of the test
fold's follow-up (kept below the largest training time). A metric that cannot be computed
(e.g. no event in a test fold) is NaN with its reason in ``note``; a baseline that fails
on a fold is NaN with the exception's message, and the run goes on.

``resume_dir``: each finished fold is written there (model, predictions, metrics; a
``done.json`` written last marks it complete), so an interrupted run restarts from the
folds that finished and gives the same final numbers, to the last bit (the fold CSVs are
read back with round-trip float precision). A folder whose finished folds belong to a
different run (config, baselines or folds) is refused before anything is written; one
without a finished fold holds nothing worth keeping and is simply started again. Another
``train.threads`` (like another OMP_NUM_THREADS) only warns: it changes the order floats
are summed in, so numbers may differ in their last digits. A finished fold's table that is
empty or cut short is refused naming the file, as its unreadable model is.

A cohort cross-validation cannot use (fewer patients than folds, no event, fewer events
than folds; for grouped folds: no such meta column, one group, a group without an event)
is refused up front with a LabelError/DataError/ConfigError naming the numbers.

The outer folds of a run are independent jobs (:class:`FoldJob`, :func:`run_fold`): a
``FoldExecutor`` may run them anywhere (``experiments.runners.RayRunner`` spreads them over
Ray workers); the driver checkpoints each as it arrives and assembles them in fold order,
so the numbers do not depend on where or in which order the folds ran.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, LeaveOneGroupOut

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, dump_config
from modalsurv.devices import resolve_device
from modalsurv.errors import ConfigError, DataError, DataWarning, FeatureError, LabelError
from modalsurv.resume import UnitFolder
from modalsurv.survival import metrics as sm
from modalsurv.train.baselines import make_baseline
from modalsurv.train.compare import MAIN, compare_all, fold_overlap_ratio
from modalsurv.train.diagnostics import cv_diagnostics
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv, stratified_folds
from modalsurv.train.stacking import StackedSurv, load_model, make_model
from modalsurv.utils import Progress, atomic_write_csv, atomic_write_text

METRICS = ("harrell_c", "uno_c", "ibs")
#: the stacked default's ModalSurv candidate on its own (the paper's network), scored
#: beside the stack on the same folds at no extra cost
PLAIN = "modalsurv_plain"
_NEURAL = {MAIN, PLAIN, "modalsurv_clinical"}
#: the config values ``search.trials > 0`` tunes per outer fold (``train.search.KEYS``)
SEARCHED = ("train.lr", "train.weight_decay", "model.dropout", "model.latent_dim", "train.epochs")


# ---------------------------------------------------------------------- folds
def stratification_labels(
    time: np.ndarray, event: np.ndarray, folds: int
) -> tuple[np.ndarray | None, str]:
    """Labels for StratifiedKFold: event × time quantile group, coarsened until it fits.

    With fewer censored patients than folds but at least ``folds`` events the labels are
    still the event: StratifiedKFold then gives every fold its share of the events (at
    least one), where shuffled K-fold could leave a fold without one (C-index NaN)."""
    event = np.asarray(event, dtype=int)
    for q in (3, 2):
        group = pd.qcut(pd.Series(time).rank(method="first"), q, labels=False).to_numpy()
        label = event * q + group
        if np.bincount(label).min() >= folds and len(np.unique(label)) == 2 * q:
            return label, f"event x time-{q}-quantile"
    counts = np.bincount(event, minlength=2)
    if counts.min() >= folds:
        return event, "event"
    if counts[1] >= folds:
        return event, "event (fewer censored patients than folds)"
    return None, "none (too few events to stratify)"


def _patients(n: int) -> str:
    return f"{n} patient" + ("" if n == 1 else "s")


def check_cv_cohort(cohort: Cohort, folds: int) -> None:
    """Refuse a cohort that ``folds``-fold cross-validation cannot use, saying why.

    Why up front: otherwise the run fails minutes later inside a fold (no event to learn
    from) or reports NaN C-indices for folds without an event."""
    n, events = len(cohort), cohort.n_events
    if n < 2 or folds > n:
        raise DataError(f"{folds} folds need at least {folds} patients; the cohort has"
                        f" {_patients(n)}; lower cv.folds or add patients",
                        field="cv.folds")  # fmt: skip
    if events == 0:
        raise LabelError(f"all {_patients(n)} are censored (no event): nothing to learn"
                         " from and no C-index to compute", field="event")  # fmt: skip
    if events < folds:
        advice = (f"set cv.folds to at most {events}" if events >= 2 else
                  "cross-validation needs at least 2 (cv.folds is at least 2): add patients"
                  " with an event")  # fmt: skip
        raise LabelError(f"the cohort has {events} event{'s' if events != 1 else ''} for"
                         f" {folds} folds: every outer fold needs an event to be scored;"
                         f" {advice}", field="event")  # fmt: skip


def group_labels(cohort: Cohort, column: str) -> np.ndarray:
    """The group (e.g. site) of every patient from ``cohort.meta[column]``, as strings;
    refused when the column is absent (ConfigError), a patient has none or there is only
    one group (DataError)."""
    if column not in cohort.meta.columns:
        known = [str(c) for c in cohort.meta.columns
                 if not str(c).startswith(("clinical:", "latent:"))]  # fmt: skip
        raise ConfigError(f"cv.groups: the cohort has no meta column {column!r} to make"
                          f" leave-one-group-out folds from (its meta columns: {known});"
                          " CHIMERA task 3 sets 'site', or unset cv.groups")  # fmt: skip
    values = cohort.meta[column]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        who = ", ".join(map(str, cohort.ids[missing][:5]))
        raise DataError(f"cv.groups: {missing.sum()} patient(s) have no {column!r} ({who}"
                        f"{', ...' if missing.sum() > 5 else ''}): every patient needs a group",
                        patient=str(cohort.ids[missing][0]), field=f"meta.{column}")  # fmt: skip
    labels = values.astype(str).to_numpy()
    groups = np.unique(labels)
    if len(groups) < 2:
        raise DataError(f"cv.groups: all {_patients(len(cohort))} have {column} = {groups[0]!r}:"
                        " leave-one-group-out needs at least two groups (or unset cv.groups"
                        " for stratified k-fold)", field=f"meta.{column}")  # fmt: skip
    return labels


def check_group_cohort(cohort: Cohort, labels: np.ndarray, column: str) -> None:
    """Refuse grouped folds that cannot be scored or trained: every held-out group needs
    an event (else its C-index is undefined), and so does every training part."""
    check_cv_cohort(cohort, 2)
    empty = [str(g) for g in np.unique(labels) if not cohort.event[labels == g].any()]
    if empty:
        raise LabelError(f"cv.groups: {column} {empty} ha{'s' if len(empty) == 1 else 've'} no"
                         " event: a held-out group needs an event to be scored; merge or drop"
                         " it", field="event")  # fmt: skip


def make_folds(cohort: Cohort, folds: int, repeats: int, seed: int, groups: str | None = None
               ) -> pd.DataFrame:  # fmt: skip
    """Fold assignment as a DataFrame ``patient, repeat, fold`` (``attrs['stratify']``).

    ``groups``: a meta column; the folds are then leave-one-group-out (fold ``f`` holds out
    the ``f``-th group in sorted order, the same in every repeat; ``folds`` is not used)
    and a ``group`` column names each patient's group."""
    if groups is not None:
        labels = group_labels(cohort, groups)
        fold = np.empty(len(cohort), dtype=np.int64)
        splits = LeaveOneGroupOut().split(np.zeros(len(cohort)), groups=labels)
        for f, (_, test) in enumerate(splits):
            fold[test] = f
        out = pd.concat([pd.DataFrame({"patient": cohort.ids.astype(str), "repeat": r,
                                       "fold": fold, "group": labels})
                         for r in range(repeats)], ignore_index=True)  # fmt: skip
        out.attrs["stratify"] = f"leave-one-group-out on meta[{groups!r}]"
        return out
    n = len(cohort)
    if folds > n:
        raise DataError(f"{folds} folds need at least {folds} patients; the cohort has"
                        f" {_patients(n)}", field="cv.folds")  # fmt: skip
    labels, how = stratification_labels(cohort.time, cohort.event, folds)
    frames = []
    for r in range(repeats):
        fold = np.empty(n, dtype=np.int64)
        rs = seed + r
        if labels is not None:  # censored rows may be fewer than folds: meant
            splits = stratified_folds(labels, folds, rs)
        else:
            splits = KFold(folds, shuffle=True, random_state=rs).split(np.zeros(n))
        for f, (_, test) in enumerate(splits):
            fold[test] = f
        frames.append(pd.DataFrame({"patient": cohort.ids.astype(str), "repeat": r, "fold": fold}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["stratify"] = how
    return out


def subsample_train(train_idx: np.ndarray, event: np.ndarray, fraction: float, seed: int
                    ) -> np.ndarray:  # fmt: skip
    """Keep ``fraction`` of an outer fold's training rows, stratified on event.

    Why: data-scaling curves must shrink only the training part, so every fraction is
    scored on the same test folds. A seeded shuffle per event stratum is cut at the
    fraction, so a smaller fraction's rows are a subset of a larger one's.
    """
    if fraction >= 1.0:
        return train_idx
    rng = np.random.default_rng([seed, 2718])
    keep = []
    for e in (False, True):
        rows = train_idx[np.asarray(event, dtype=bool)[train_idx] == e]
        rows = rows[rng.permutation(len(rows))]
        keep.append(rows[: max(1, int(fraction * len(rows) + 0.5))])
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------------- scoring
def ibs_grid(train_time: np.ndarray, test_time: np.ndarray, n: int = 50) -> np.ndarray:
    """The one grid the integrated Brier score is computed on (CV folds and ``evaluate``):
    ``n`` times inside the test follow-up (10th–90th percentile), below the last
    training time (the censoring estimate ends there)."""
    test_time = np.asarray(test_time, dtype=np.float64)
    lo, hi = np.quantile(test_time, [0.1, 0.9])
    hi = min(hi, np.nextafter(test_time.max(), 0), np.nextafter(np.max(train_time), 0))
    if not hi > lo:
        return np.empty(0)
    return np.linspace(lo, hi, n)


def score_fold(
    train: Cohort, test: Cohort, risk: np.ndarray, surv: np.ndarray | None, grid: np.ndarray
) -> tuple[dict[str, float], list[str]]:
    """Harrell C, Uno C and IBS for one fold; NaN plus a reason for what cannot be computed.

    Uno's C weighs the test events before the last training time (``tau``, as
    ``evaluate`` does): the censoring estimate ends there, and a test event past a last
    censored training time had weight 1/0, which made the fold's Uno C NaN."""
    out = dict.fromkeys(METRICS, float("nan"))
    notes: list[str] = []
    tau = float(np.max(train.time)) if len(train) else None
    calls: dict[str, Callable[[], float]] = {
        "harrell_c": lambda: sm.concordance_index(test.time, test.event, risk),
        "uno_c": lambda: sm.uno_concordance(train.time, train.event, test.time, test.event,
                                            risk, tau=tau),
    }
    if surv is not None and len(grid) >= 2:
        calls["ibs"] = lambda: sm.integrated_brier_score(
            train.time, train.event, test.time, test.event, surv, grid
        )
    elif surv is not None:
        notes.append("ibs: test fold follow-up too short for a time grid")
    r = np.asarray(risk, dtype=np.float64)
    if test.event.any() and len(r) and np.ptp(r) <= 1e-12 * max(1.0, float(np.abs(r).max())):
        # a model that ranks no one (e.g. a forest of one leaf): 0.5 by ties, not by chance
        notes.append("constant risk on the test fold: every pair is tied, the C-index of"
                     " 0.5 is no ranking at all")  # fmt: skip
    if not test.event.any():
        notes.append("no event in the test fold: concordance undefined")
        calls.pop("harrell_c")
        calls.pop("uno_c")
    for name, fn in calls.items():
        try:
            out[name] = float(fn())
        except Exception as err:  # a metric failing must be visible, not fatal
            notes.append(f"{name}: {type(err).__name__}: {err}")
    return out, notes


# ---------------------------------------------------------------------- result
@dataclass
class CVResult:
    """Everything a cross-validation run produced (see module docstring).

    ``predictions``: one out-of-fold row per patient and repeat: ``patient, repeat, fold,
    risk, expected_time, time, event, pmf_0..pmf_K`` (the PMF over that fold model's bins,
    whose edges are ``models[repeat][fold].cuts``). ``metrics``: one row per model, repeat
    and fold (``failed``, ``optimistic`` and a ``note`` with reasons for any NaN).
    """

    folds: pd.DataFrame
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    summary: dict[str, Any]
    models: list[list[ModalSurv | StackedSurv]]
    baseline_predictions: pd.DataFrame
    optimistic: bool
    config: RunConfig
    notes: list[str] = field(default_factory=list)

    def timings(self) -> pd.DataFrame:
        """Seconds per model (and per stack candidate, ``modalsurv/<name>``) of the folds
        fitted in this process (resumed folds were timed by the run that fitted them), one
        row per fold; not saved with the run."""
        rows = [{"repeat": r, "fold": f, **m.fold_seconds_}
                for r, ms in enumerate(self.models) for f, m in enumerate(ms)
                if getattr(m, "fold_seconds_", None)]  # fmt: skip
        return pd.DataFrame(rows)

    def ensemble(self, repeat: int = 0) -> FoldEnsemble:
        """The fold models of one repeat as a single predictor."""
        return FoldEnsemble(self.models[repeat])

    def test_train_ratio(self) -> float:
        """n_test / n_train of the folds run, for the corrected resampled t-test: ``1 / ((k
        - 1) * train_fraction)`` for k stratified folds; for leave-one-group-out folds,
        whose sizes follow the groups, the mean of each fold's own n_test / n_train."""
        k = int(self.folds["fold"].nunique())  # the folds run, which may differ from cv.folds
        return fold_overlap_ratio(self.metrics, k, self.config.cv.train_fraction,
                                  grouped="group" in self.folds.columns)  # fmt: skip

    def paired(self, model: str = MAIN, metric: str = "harrell_c") -> pd.DataFrame:
        """``model`` minus every other model on the folds both were scored on: mean
        difference, 95 % CI and p of the corrected resampled t-test (``train.compare``),
        one row per other model. The fold overlap uses n_test / n_train of these folds
        (:meth:`test_train_ratio`; training parts shrunk by ``cv.train_fraction`` included)."""
        return compare_all(self.metrics, model, metric, test_train_ratio=self.test_train_ratio())

    def save(self, directory: str | Path) -> Path:
        """Write folds.csv, predictions.csv, baseline_predictions.csv, metrics.csv,
        metrics.json, config.yaml and models/repeat_<r>/ (each file atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(directory / "folds.csv", self.folds)
        atomic_write_csv(directory / "predictions.csv", self.predictions)
        atomic_write_csv(directory / "baseline_predictions.csv", self.baseline_predictions)
        atomic_write_csv(directory / "metrics.csv", self.metrics)
        atomic_write_text(directory / "metrics.json", json.dumps(self.summary, indent=1))
        atomic_write_text(directory / "config.yaml", dump_config(self.config))
        for r in range(len(self.models)):
            self.ensemble(r).save(directory / "models" / f"repeat_{r}")
        return directory


def summarize(metrics: pd.DataFrame, optimistic: bool, stratify: str) -> dict[str, Any]:
    """Mean ± std (over folds and repeats) per model; JSON-friendly. ``std`` is the sample
    std (ddof = 1) of the fold scores, ``n`` the folds with a finite score: a fold where
    a metric is undefined (NaN) is left out of both."""
    out: dict[str, Any] = {
        "optimistic": optimistic,
        "selection": "outer_fold" if optimistic else "inner",
        "stratify": stratify,
        "models": {},
    }
    for model, df in metrics.groupby("model", sort=False):
        stats: dict[str, Any] = {}
        for m in METRICS:
            v = df[m].to_numpy(dtype=float)
            ok = v[np.isfinite(v)]
            stats[m] = {
                "mean": float(ok.mean()) if len(ok) else float("nan"),
                "std": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"),
                "n": len(ok),
            }
        stats["n_failed_folds"] = int(df["failed"].sum())
        if stats["n_failed_folds"]:  # the reason, so a failed baseline is never a bare NaN
            notes = df.loc[df["failed"].astype(bool), "note"].astype(str)
            stats["failure"] = notes.iloc[0] + (
                f" (and {len(notes) - 1} more fold(s))" if len(notes) > 1 else "")
        stats["optimistic"] = bool(df["optimistic"].iloc[0])
        out["models"][str(model)] = stats
    return out


def _finite_or_none(value: Any) -> Any:
    """A NaN (no search trial scored) as JSON's null, not the non-standard ``NaN``."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def stack_record(models: list[list[Any]]) -> list[dict[str, Any]]:
    """Per outer fold: the stack's weights, what was dropped, each candidate's inner
    out-of-fold C-index and the seconds each took (``StackedSurv.stack_info_``)."""
    out = []
    for r, fold_models in enumerate(models):
        for f, model in enumerate(fold_models):
            info = getattr(model, "stack_info_", None)
            if info is not None:
                out.append({"repeat": r, "fold": f, **info})
    return out


# ---------------------------------------------------------------------- one fold
def _fold_config(config: RunConfig, seed: int) -> RunConfig:
    cfg = config.model_copy(deep=True)
    cfg.seed = seed
    return cfg


def _run_fold(
    cohort: Cohort,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    config: RunConfig,
    baselines: list[str],
    repeat: int,
    fold: int,
    fold_seed: int,
    progress: Progress | None,
    reference_idx: np.ndarray | None = None,
) -> tuple[ModalSurv | StackedSurv, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Fit and score ModalSurv (or the stacked default) and the baselines on one outer fold.

    ``reference_idx``: the whole outer training part when ``train_idx`` is a data fraction
    of it. Its labels (never a test row's) give Uno's censoring estimate and the IBS grid,
    so every fraction is scored by the same metric on the same test fold and only the
    predictions differ (the shrunk part's own estimate moved the yardstick with the
    fraction)."""
    train, test = cohort.subset(train_idx), cohort.subset(test_idx)
    reference = train if reference_idx is None else cohort.subset(reference_idx)
    outer = config.cv.selection == "outer_fold"
    grid = ibs_grid(reference.time, test.time)
    cb = None
    if progress is not None:

        def cb(event: str, **info: Any) -> None:
            progress(event, repeat=repeat, fold=fold, **info)

    t0 = time.perf_counter()
    fold_config, searched = _fold_config(config, fold_seed), None
    if config.search.trials > 0:  # on the training part only, like everything else
        from modalsurv.train.search import tuned_config

        fold_config, searched = tuned_config(train, fold_config, cb)
    model = make_model(fold_config)
    model.fit(train, val_cohort=test if outer else None, progress=cb)
    seconds: dict[str, float] = {MAIN: time.perf_counter() - t0}
    if searched is not None:
        seconds[f"{MAIN}/search"] = searched.seconds
        model.search_ = searched.record()
    seconds.update({f"{MAIN}/{k}": v for k, v in getattr(model, "timings_", {}).items()})
    risk = model.predict_risk(test)
    preds = pd.DataFrame(
        {
            "patient": test.ids.astype(str),
            "repeat": repeat,
            "fold": fold,
            "risk": risk,
            "expected_time": model.predict_expected_time(test),
            "time": test.time,
            "event": test.event.astype(int),
        }
    )
    pmf = model.predict_pmf(test)
    preds = pd.concat(
        [preds, pd.DataFrame(pmf, columns=[f"pmf_{k}" for k in range(pmf.shape[1])])], axis=1
    )
    surv = model.predict_survival(test, grid) if len(grid) else None
    scores, notes = score_fold(reference, test, risk, surv, grid)
    base = {
        "repeat": repeat,
        "fold": fold,
        "n_train": len(train),
        "n_test": len(test),
        "n_events_test": test.n_events,
    }
    rows = [
        {
            "model": MAIN,
            **base,
            **scores,
            "failed": False,
            "optimistic": outer,
            "note": "; ".join(notes),
        }
    ]
    plain = model.candidate_model(MAIN) if isinstance(model, StackedSurv) else None
    if plain is not None:
        psurv = plain.predict_survival(test, grid) if len(grid) else None
        pscores, pnotes = score_fold(reference, test, plain.predict_risk(test), psurv, grid)
        rows.append({"model": PLAIN, **base, **pscores, "failed": False, "optimistic": outer,
                     "note": "; ".join(pnotes)})  # fmt: skip
    bpreds = []
    for name in baselines:
        t0 = time.perf_counter()
        try:
            est = make_baseline(name, _fold_config(config, fold_seed), fold_seed)
            if name == "modalsurv_clinical":
                est.fit(train, val_cohort=test if outer else None)
            else:
                est.fit(train)
            brisk = np.asarray(est.predict_risk(test), dtype=np.float64)
            bsurv = est.predict_survival(test, grid) if len(grid) else None
            bscores, bnotes = score_fold(reference, test, brisk, bsurv, grid)
            failed = False
        except Exception as err:  # recorded per fold, never silent, never fatal
            brisk = np.full(len(test), np.nan)
            bscores = dict.fromkeys(METRICS, float("nan"))
            bnotes = [f"failed: {type(err).__name__}: {err}"]
            failed = True
            if progress is not None:
                progress("baseline_failed", repeat=repeat, fold=fold, model=name, reason=bnotes[0])
        seconds[name] = time.perf_counter() - t0
        rows.append(
            {
                "model": name,
                **base,
                **bscores,
                "failed": failed,
                "optimistic": outer and name in _NEURAL,
                "note": "; ".join(bnotes),
            }
        )
        bpreds.append(
            pd.DataFrame(
                {
                    "model": name,
                    "patient": test.ids.astype(str),
                    "repeat": repeat,
                    "fold": fold,
                    "risk": brisk,
                }
            )
        )
    bp = pd.concat(bpreds, ignore_index=True) if bpreds else _empty_baseline_preds()
    model.fold_seconds_ = seconds  # not saved (a resumed run must write the same bytes)
    return model, preds, pd.DataFrame(rows), bp


def _empty_baseline_preds() -> pd.DataFrame:
    return pd.DataFrame({"model": [], "patient": [], "repeat": [], "fold": [], "risk": []})


@dataclass(frozen=True)
class FoldJob:
    """One outer fold to fit and score (the cohort, config and baselines come with it)."""

    repeat: int
    fold: int
    seed: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    n_folds: int
    n_repeats: int
    reference_idx: np.ndarray | None = None  # the whole training part under a data fraction


@dataclass
class FoldOutcome:
    """What one outer fold produced; ``node``: where it ran (a Ray node id), if not here."""

    model: ModalSurv
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    baseline_predictions: pd.DataFrame
    node: str | None = None
    torch_threads: int | None = None  # the process's intra-op threads where it trained
    train_threads: int | str | None = None  # the config's train.threads it trained with


def run_fold(cohort: Cohort, config: RunConfig, baselines: list[str], job: FoldJob,
             progress: Progress | None = None) -> FoldOutcome:  # fmt: skip
    """Fit and score ModalSurv and the baselines on one outer fold: deterministic given
    the job (its seed), wherever it runs."""
    import torch

    return FoldOutcome(*_run_fold(cohort, job.train_idx, job.test_idx, config, baselines,
                                  job.repeat, job.fold, job.seed, progress, job.reference_idx),
                       torch_threads=torch.get_num_threads(),
                       train_threads=config.train.threads)  # fmt: skip


FoldDone = Callable[[FoldJob, FoldOutcome], None]


class FoldExecutor(Protocol):
    """Runs outer folds (:func:`run_fold` on each job) and hands every outcome to
    ``on_done`` in this process, in any order; emits ``fold_start`` for each job."""

    def run_folds(self, cohort: Cohort, config: RunConfig, baselines: list[str],
                  jobs: list[FoldJob], on_done: FoldDone, progress: Progress | None
                  ) -> None: ...  # fmt: skip


class SequentialFolds:
    """The default executor: the folds one after another in this process."""

    def run_folds(self, cohort: Cohort, config: RunConfig, baselines: list[str],
                  jobs: list[FoldJob], on_done: FoldDone, progress: Progress | None
                  ) -> None:  # fmt: skip
        for job in jobs:
            if progress is not None:
                progress("fold_start", repeat=job.repeat, fold=job.fold, n_folds=job.n_folds,
                         n_repeats=job.n_repeats)  # fmt: skip
            on_done(job, run_fold(cohort, config, baselines, job, progress))


# ---------------------------------------------------------------------- resume
#: fold checkpoints: ``repeat_<r>/fold_<f>/done.json`` under the resume folder (markers
#: elsewhere, e.g. among a user's files, are not folds and are never deleted)
CV_UNITS = {"marker": "done.json", "spec_name": "cv_spec.json", "units": "repeat_*/fold_*"}
RESUME_HINT = "resume with the config saved in the run folder, or use a new --out"


def _units(root: Path) -> UnitFolder:
    return UnitFolder(root, **CV_UNITS)


def _fold_dir(root: Path, repeat: int, fold: int) -> Path:
    return _units(root).unit(f"repeat_{repeat}", f"fold_{fold}")


def _save_fold(d: Path, out: FoldOutcome) -> None:
    model, preds, rows, bpreds = (out.model, out.predictions, out.metrics,
                                  out.baseline_predictions)  # fmt: skip
    model.save(d / "model")
    atomic_write_csv(d / "predictions.csv", preds)
    atomic_write_csv(d / "baseline_predictions.csv", bpreds)
    atomic_write_csv(d / "metrics.csv", rows)
    marker = {"complete": True, "torch_threads": out.torch_threads}
    if out.train_threads is not None:  # per fold: a run resumed with other counts mixes them
        marker["train_threads"] = out.train_threads
    search = getattr(model, "search_", None)  # how the fold's inner search went
    _units(d.parent.parent).finish(d, marker | ({"search": search} if search else {}))


def _read_fold_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """One table of a finished fold, refused naming the file (FeatureError, as an
    unreadable fold model is) when it is missing, empty or cut short: an OS crash may leave
    a file renamed into place before its bytes reached the disk, and pandas then said only
    "No columns to parse from file". ``to_csv`` ends every file with a newline, so a file
    cut inside its last row (a number losing its last digits) is caught too."""
    hint = f"remove {path.parent / CV_UNITS['marker']} to redo this fold"
    try:
        raw = path.read_bytes()
        if not raw.endswith(b"\n"):
            raise ValueError("the file is empty" if not raw else "the file is cut short")
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as err:  # EmptyDataError, ParserError, UnicodeDecodeError
        raise FeatureError(f"cannot read this finished fold's table ({err}); {hint}",
                           path=path) from None  # fmt: skip


def _load_fold(d: Path) -> FoldOutcome:
    model = load_model(d / "model")
    exact = {"float_precision": "round_trip"}  # the written %.17g read back bit for bit
    ids = {"dtype": {"patient": str}, "keep_default_na": False, "na_values": [""]}  # "NA" is an id
    preds = _read_fold_csv(d / "predictions.csv", **ids, **exact)
    rows = _read_fold_csv(d / "metrics.csv", keep_default_na=False, na_values=[""], **exact)
    bpreds = _read_fold_csv(d / "baseline_predictions.csv", **ids, **exact)
    # a file cut at a row's end reads as a shorter table: the counts metrics.csv records
    redo = f"remove {d / CV_UNITS['marker']} to redo this fold"
    if not {"model", "n_test", "note"} <= set(rows.columns) or MAIN not in set(rows["model"]):
        raise FeatureError(f"this finished fold's table lacks the {MAIN} row; {redo}",
                           path=d / "metrics.csv")  # fmt: skip
    n_test = int(rows["n_test"].iloc[0])
    n_baselines = int((~rows["model"].isin([MAIN, PLAIN])).sum())
    for name, table, want in (("predictions.csv", preds, n_test),
                              ("baseline_predictions.csv", bpreds, n_test * n_baselines)):  # fmt: skip
        if len(table) != want:
            raise FeatureError(f"this finished fold's table has {len(table)} rows where"
                               f" metrics.csv says {want}; {redo}", path=d / name)  # fmt: skip
    rows["note"] = rows["note"].fillna("").astype(str)
    marker = _units(d.parent.parent).read_marker(d)
    if marker.get("search"):  # a resumed fold reports its search as it went, not as failed
        model.search_ = marker["search"]
    return FoldOutcome(model, preds, rows, bpreds, torch_threads=marker.get("torch_threads"),
                       train_threads=marker.get("train_threads"))  # fmt: skip


def warn_other_threads(done: dict[tuple[int, int], FoldOutcome]) -> None:
    """Say when the finished folds of a resumed run trained with another number of torch
    threads than this process has: sums run in another order, so the folds still to run
    and the files computed at the end (member spread, gate weights) may differ from an
    uninterrupted run in their last digits (about 1e-9), though not in any figure."""
    import torch

    now = torch.get_num_threads()
    other = sorted({o.torch_threads for o in done.values()
                    if o.torch_threads is not None and o.torch_threads != now})  # fmt: skip
    if other:
        warnings.warn(f"resume: the finished folds trained with {', '.join(map(str, other))}"
                      f" torch thread(s), this process has {now}: numbers may differ from an"
                      " uninterrupted run in their last digits; for identical ones resume"
                      f" with OMP_NUM_THREADS={other[0]}", DataWarning, stacklevel=3)  # fmt: skip


def has_finished_folds(root: Path) -> bool:
    """Whether a resume directory holds at least one finished fold (worth protecting)."""
    return _units(root).any_finished()


def check_resume(root: Path, folds: pd.DataFrame, config: RunConfig, baselines: list[str]
                 ) -> None:  # fmt: skip
    """Refuse (ConfigError) to mix the finished folds of a different run into this one:
    another config or baselines (the spec), or another fold assignment (the cohort
    changed). Reads only: a refused resume leaves the folder exactly as it was."""
    units = _units(root)
    theirs: list[Any] = []

    def normalise(spec: dict[str, Any]) -> dict[str, Any]:
        """``train.threads`` changes only the order floats are summed in, as
        OMP_NUM_THREADS does: warned about below, not refused."""
        train = (spec.get("config") or {}).get("train") or {}
        if isinstance(train, dict) and "threads" in train:
            theirs.append(train["threads"])
            train["threads"] = config.train.threads
        return _absolute_spec_paths(spec)

    units.check_spec(_spec(config, baselines), "resume directory", RESUME_HINT,
                     normalise=normalise)  # fmt: skip
    if not units.any_finished():
        return
    warn_other_train_threads(units, theirs[0] if theirs else None, config.train.threads)
    try:
        old_folds = pd.read_csv(root / "folds.csv", dtype={"patient": str, "group": str},
                                keep_default_na=False)  # fmt: skip
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume directory {root} holds finished folds but no readable"
                          f" folds.csv ({err}); use a new --out") from None  # fmt: skip
    if not old_folds.equals(folds.reset_index(drop=True)):
        raise ConfigError(f"resume directory {root} holds a different run (the fold assignment"
                          f" differs: the cohort changed?); {RESUME_HINT}")  # fmt: skip


def warn_other_train_threads(units: UnitFolder, described: Any, now: int | str) -> None:
    """Warn when finished folds trained with another ``train.threads`` than ``now``. Each
    fold's own count (its marker; ``described``, the run's first count, for folds written
    before markers kept it): the run description keeps only the first run's, so after a
    resume with another count a later resume with the first one said nothing and one with
    a third named only the first (whose hint then could not give identical numbers)."""
    counts = []
    for marker in units.markers():
        try:
            counts.append(units.read_marker(marker.parent).get("train_threads", described))
        except (OSError, ValueError, TypeError, AttributeError):  # not finished: redone
            continue
    other = sorted({c for c in counts if c is not None and c != now}, key=str)
    if not other:
        return
    n = sum(c in other for c in counts)
    mixed = len({c for c in counts if c is not None}) > 1
    hint = (" (the finished folds mix counts: only a new --out gives numbers of one count)"
            if mixed else f"; for identical ones resume with --set train.threads={other[0]}")
    warnings.warn(f"resume: {n} of the {len(counts)} finished folds trained with train.threads"
                  f" {', '.join(map(repr, other))}, this run has {now!r}: numbers may differ"
                  f" from an uninterrupted run in their last digits{hint}", DataWarning,
                  stacklevel=3)  # fmt: skip


def _spec(config: RunConfig, baselines: list[str]) -> dict[str, Any]:
    return {"config": config.model_dump(mode="json"), "baselines": baselines}


def _absolute_spec_paths(spec: dict[str, Any]) -> dict[str, Any]:
    """An older run's spec with its data paths made absolute (``absolute_data_paths``), so
    it compares with this run's, which train_run made absolute."""
    import os

    data = (spec.get("config") or {}).get("data")
    if isinstance(data, dict):
        for key in ("path", "features"):
            if isinstance(data.get(key), str):
                data[key] = os.path.abspath(os.path.expanduser(data[key]))
    return spec


def _start_resume(root: Path, folds: pd.DataFrame, config: RunConfig, baselines: list[str]
                  ) -> None:  # fmt: skip
    """Check the resume directory; describe the run in it when it has no finished fold."""
    check_resume(root, folds, config, baselines)
    units = _units(root)
    if units.any_finished():
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(root / "folds.csv", folds)
    units.write_spec(_spec(config, baselines))


@dataclass
class CVPlan:
    """What a cross-validation will do, settled before anything runs or is written."""

    folds: int
    repeats: int
    seed: int
    baselines: list[str]
    assignment: pd.DataFrame


def plan_cv(
    cohort: Cohort,
    config: RunConfig,
    folds: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    baselines: list[str] | None = None,
) -> CVPlan:
    """Resolve the defaults, check the cohort and the baselines, assign the folds.

    With ``config.cv.groups`` the folds are the groups: ``folds`` (if given) must equal
    their number, and ``repeats`` must be 1."""
    groups = config.cv.groups
    repeats = config.cv.repeats if repeats is None else repeats
    seed = config.seed if seed is None else seed
    baselines = list(config.baselines if baselines is None else baselines)
    for name in baselines:
        make_baseline(name, config, 0)  # fail fast on an unknown name
    resolve_device(config.train.device)  # CUDA asked for where there is none
    if groups is None:
        folds = config.cv.folds if folds is None else folds
        check_cv_cohort(cohort, folds)
        return CVPlan(folds, repeats, seed, baselines, make_folds(cohort, folds, repeats, seed))
    labels = group_labels(cohort, groups)
    n_groups = len(np.unique(labels))
    if folds is not None and folds != n_groups:
        raise ConfigError(f"folds = {folds} with cv.groups = {groups!r}: leave-one-group-out"
                          f" makes one fold per group, here {n_groups}")  # fmt: skip
    if repeats != 1:
        raise ConfigError(f"repeats = {repeats} with cv.groups = {groups!r}: the"
                          " leave-one-group-out folds would be the same in every repeat")
    check_group_cohort(cohort, labels, groups)
    return CVPlan(n_groups, 1, seed, baselines, make_folds(cohort, n_groups, 1, seed, groups))


# ---------------------------------------------------------------------- driver
def cross_validate(
    cohort: Cohort,
    config: RunConfig | None = None,
    folds: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    baselines: list[str] | None = None,
    resume_dir: str | Path | None = None,
    executor: FoldExecutor | None = None,
) -> CVResult:
    """Repeated stratified k-fold CV of ModalSurv (and baselines on the same folds), or
    leave-one-group-out CV with ``config.cv.groups``.

    ``folds``, ``repeats``, ``seed`` and ``baselines`` default to ``config.cv.folds``,
    ``config.cv.repeats``, ``config.seed`` and ``config.baselines`` (pass ``[]`` for no
    baselines). Fold ``f`` of repeat ``r`` trains with seed ``seed + 1000 r + f``.
    ``executor``: where the outer folds run (default: one after another here; e.g.
    ``experiments.runners.RayRunner`` for Ray workers); the numbers are the same.
    """
    config = config or RunConfig()
    plan = plan_cv(cohort, config, folds, repeats, seed, baselines)
    folds, repeats, seed, baselines = plan.folds, plan.repeats, plan.seed, plan.baselines
    assignment = plan.assignment
    root = None if resume_dir is None else Path(resume_dir)
    if root is not None:  # with the seed the folds train with (``seed`` may override
        # config.seed): a resume with another is another run, even where the folds are the
        # same (leave-one-group-out folds do not depend on the seed)
        _start_resume(root, assignment, config.model_copy(update={"seed": seed}), baselines)

    done: dict[tuple[int, int], FoldOutcome] = {}

    def fold_end(r: int, f: int, m: pd.DataFrame) -> None:
        if progress is not None:
            progress("fold_end", repeat=r, fold=f,
                     **{k: float(v) for k, v in m.iloc[0][list(METRICS)].items()})  # fmt: skip

    if progress is not None:
        progress("cv_start", n_folds=folds, n_repeats=repeats)
    jobs = []
    for r in range(repeats):
        fold_of = assignment.loc[assignment["repeat"] == r, "fold"].to_numpy()
        for f in range(folds):
            d = None if root is None else _fold_dir(root, r, f)
            if d is not None and _units(root).finished(d):
                done[(r, f)] = _load_fold(d)
                if progress is not None:
                    progress("fold_resumed", repeat=r, fold=f)
                fold_end(r, f, done[(r, f)].metrics)
                continue
            fold_seed = seed + 1000 * r + f
            whole = np.flatnonzero(fold_of != f)
            train_idx = subsample_train(whole, cohort.event, config.cv.train_fraction, fold_seed)
            jobs.append(FoldJob(r, f, fold_seed, train_idx, np.flatnonzero(fold_of == f),
                                folds, repeats,
                                None if len(train_idx) == len(whole) else whole))  # fmt: skip
    warn_other_threads(done)

    def on_done(job: FoldJob, out: FoldOutcome) -> None:
        """Checkpoint a fold as soon as it arrives (from wherever it ran)."""
        if root is not None:
            _save_fold(_fold_dir(root, job.repeat, job.fold), out)
        done[(job.repeat, job.fold)] = out
        fold_end(job.repeat, job.fold, out.metrics)

    if jobs:
        (executor or SequentialFolds()).run_folds(cohort, config, baselines, jobs, on_done,
                                                  progress)  # fmt: skip
    keys = [(r, f) for r in range(repeats) for f in range(folds)]  # fold order
    missing = [k for k in keys if k not in done]
    if missing:
        raise RuntimeError(f"the fold executor returned without (repeat, fold) {missing}")
    # assembled in fold order, whatever order the folds finished in
    models = [[done[(r, f)].model for f in range(folds)] for r in range(repeats)]
    preds = [done[k].predictions for k in keys]
    rows = [done[k].metrics for k in keys]
    bpreds = [done[k].baseline_predictions for k in keys]

    optimistic = config.cv.selection == "outer_fold"
    metrics = pd.concat(rows, ignore_index=True)
    metrics["failed"] = metrics["failed"].astype(bool)
    metrics["optimistic"] = metrics["optimistic"].astype(bool)
    predictions = pd.concat(preds, ignore_index=True)
    bp = pd.concat(bpreds, ignore_index=True) if bpreds else _empty_baseline_preds()
    summary = summarize(metrics, optimistic, assignment.attrs.get("stratify", ""))
    summary["n_folds"], summary["n_repeats"], summary["seed"] = folds, repeats, seed
    if config.cv.groups is not None:  # which group each fold held out
        held = assignment[assignment["repeat"] == 0].groupby("fold")["group"].first()
        summary["groups"] = {"column": config.cv.groups,
                             "held_out": [str(held[f]) for f in range(folds)]}  # fmt: skip
    summary["oof_harrell_c"] = [
        float(
            sm.concordance_index(
                g["time"].to_numpy(float), g["event"].to_numpy(bool), g["risk"].to_numpy(float)
            )
        )
        for _, g in predictions.groupby("repeat")
    ]
    summary["folds"] = json.loads(metrics.to_json(orient="records"))
    summary["model_kind"] = "stack" if isinstance(models[0][0], StackedSurv) else "plain"
    if config.search.trials > 0:  # the values each outer fold's search chose
        summary["search"] = [{"repeat": r, "fold": f,
                              **{k: m.config.model_dump()[k.split(".")[0]][k.split(".")[1]]
                                 for k in SEARCHED},
                              # how the search went: a fold none of whose trials could be
                              # scored kept the configured values (best_cindex None)
                              **{k: _finite_or_none((getattr(m, "search_", None) or {}).get(k))
                                 for k in ("best_cindex", "n_trials", "n_pruned", "n_failed")}}
                             for r, ms in enumerate(models) for f, m in enumerate(ms)]  # fmt: skip
    if summary["model_kind"] == "stack":
        summary["stack"] = stack_record(models)
    result = CVResult(
        folds=assignment,
        predictions=predictions,
        metrics=metrics,
        summary=summary,
        models=models,
        baseline_predictions=bp,
        optimistic=optimistic,
        config=config,
    )
    # failure signatures (train.diagnostics): in metrics.json and every grid trial's summary
    summary["diagnostics"] = cv_diagnostics(result, cohort)
    return result
