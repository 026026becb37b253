"""Optional inner hyperparameter search (``search.trials > 0``; Optuna, TPE sampler).

Inside the training part of one outer fold only: each trial draws a learning rate and a
weight decay (log-uniform), a dropout, a latent size and a maximum number of epochs from
the ranges in ``config.search``, and scores them by an inner ``search.inner_folds``-fold
cross-validation of a plain ModalSurv (``search.n_init`` seed members; Harrell's C of the
inner test folds). After each inner fold the trial reports its mean C so far and, with
``search.prune``, Optuna's median pruner stops a trial that falls below the median of
the earlier trials at that fold (not after the last one: a finished trial keeps its
score). The search is seeded by ``config.seed`` (sampler and inner folds: the same seed
and trial count give the same trials), budgeted by a trial count
and optionally a time limit (checked between trials; how many trials fit in it depends on
the machine and its load, so a search the time limit stopped is not reproducible: it says
so in a warning), and it never receives the outer
test rows: the caller passes the training part alone. The best trial's values are
written into a copy of the config, with which the fold's model (plain or stacked) is then
fitted on the whole training part. A trial that cannot be scored (an inner part without
events, on a cohort with very few) is recorded as failed with its reason and the search
goes on; when no trial can be scored the configured values are kept, with a warning.

Why optional: on the tuning cohorts the defaults were within the noise of tuned values at
a fraction of the cost; a search pays where a cohort is unlike them.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, with_values
from modalsurv.errors import ConfigError, DataWarning, DivergedError, LabelError
from modalsurv.survival.metrics import UndefinedMetricError, concordance_index
from modalsurv.train.estimator import ModalSurv
from modalsurv.utils import Progress, require

#: the config keys a trial sets, in the order they are drawn, and their Optuna names
PARAMS = {"train.lr": "lr", "train.weight_decay": "weight_decay", "model.dropout": "dropout",
          "model.latent_dim": "latent_dim", "train.epochs": "epochs"}
KEYS = tuple(PARAMS)
#: what makes a trial unscorable rather than a bug: an inner part without events, or a
#: sampled learning rate at which the network diverges
UNSCORABLE = (LabelError, UndefinedMetricError, DivergedError)


@dataclass
class SearchResult:
    """What a search found: the best values, its inner C, every trial, the seconds spent."""

    best: dict[str, Any]
    best_cindex: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """JSON-able: for ``metrics.json``."""
        return {"best": self.best, "best_cindex": self.best_cindex, "n_trials": len(self.trials),
                "n_pruned": sum(t["state"] == "PRUNED" for t in self.trials),
                "n_failed": sum(t["state"] == "FAIL" for t in self.trials),
                "seconds": self.seconds}  # fmt: skip


def inner_folds(cohort: Cohort, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) positions of a stratified ``k``-fold split of ``cohort`` (the outer
    folds' scheme, ``cv.make_folds``), seeded."""
    from modalsurv.train.cv import make_folds  # cv calls this module: import on use

    if k > len(cohort):  # the key to change is the search's, not cv.folds
        raise ConfigError(f"search.inner_folds {k}: more inner folds than the {len(cohort)}"
                          " patients of this outer training part; lower search.inner_folds")
    fold = make_folds(cohort, k, 1, seed)["fold"].to_numpy()
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def _draw(trial: Any, config: RunConfig) -> dict[str, Any]:
    s = config.search
    return {
        "train.lr": trial.suggest_float("lr", *s.lr, log=True),
        "train.weight_decay": trial.suggest_float("weight_decay", *s.weight_decay, log=True),
        "model.dropout": trial.suggest_float("dropout", *s.dropout),
        "model.latent_dim": trial.suggest_categorical("latent_dim", list(s.latent_dim)),
        "train.epochs": trial.suggest_int("epochs", *s.epochs),
    }


def trial_config(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """The plain network a trial scores: the run's config with the trial's values, no stack,
    ``search.n_init`` members and no nested search."""
    return with_values(config, {**values, "model.stack": "none",
                                "train.n_init": config.search.n_init, "search.trials": 0},
                       "search")  # fmt: skip


def search(train: Cohort, config: RunConfig, progress: Progress | None = None) -> SearchResult:
    """Run the search on ``train`` (the training part of an outer fold only)."""
    optuna = require("optuna", "the hyperparameter search (search.trials)")
    s = config.search
    if s.trials < 1:
        raise ValueError("search.trials is 0: nothing to search")
    splits = inner_folds(train, s.inner_folds, config.seed)
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        values = _draw(trial, config)
        cfg = trial_config(config, values)
        scores = []
        for k, (tr, te) in enumerate(splits):
            fold_cfg = cfg.model_copy(deep=True)
            fold_cfg.seed = int(config.seed) + 7 * k
            test = train.subset(te)
            try:
                model = ModalSurv(fold_cfg).fit(train.subset(tr))
                scores.append(float(concordance_index(test.time, test.event,
                                                      model.predict_risk(test))))  # fmt: skip
            except UNSCORABLE as exc:
                trial.set_user_attr("error", f"inner fold {k}: {exc}")
                raise
            trial.report(float(np.mean(scores)), k)
            # after the last inner fold the score is complete: keep it (pruning it would
            # discard a finished trial's value and count it as pruned)
            if s.prune and k < len(splits) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if s.prune
              else optuna.pruners.NopPruner())  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=int(config.seed)))  # fmt: skip

    def stop_on_time(study: Any, trial: Any) -> None:
        if progress is not None:
            progress("search_trial", number=trial.number, state=trial.state.name,
                     value=trial.value)  # fmt: skip
        if s.timeout is not None and time.perf_counter() - started >= s.timeout:
            study.stop()

    # failed trials get our own warning; the caller's Optuna logging is put back after
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study.optimize(objective, n_trials=s.trials, callbacks=[stop_on_time], catch=UNSCORABLE)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if len(study.trials) < s.trials:
        warnings.warn(f"search: search.timeout ({s.timeout:g} s) stopped the search after"
                      f" {len(study.trials)} of {s.trials} trials; how many fit depends on this"
                      " machine and its load, so this run is not reproducible elsewhere (for"
                      " reproducible numbers, budget by search.trials alone)",
                      DataWarning, stacklevel=2)  # fmt: skip
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "params": dict(t.params),
               **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {})}
              for t in study.trials]  # fmt: skip
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not done:
        errors = [t["error"] for t in trials if "error" in t]
        if errors:
            warnings.warn(f"search: no trial could be scored on this training part of"
                          f" {len(train)} patients with {int(train.event.sum())} events"
                          f" ({errors[0]}); the configured values are used",
                          DataWarning, stacklevel=2)  # fmt: skip
        return SearchResult({}, math.nan, trials, time.perf_counter() - started)
    best = study.best_trial
    values = {key: best.params[name] for key, name in PARAMS.items()}
    return SearchResult(values, float(best.value), trials, time.perf_counter() - started)


def tuned_config(train: Cohort, config: RunConfig, progress: Progress | None = None
                 ) -> tuple[RunConfig, SearchResult | None]:  # fmt: skip
    """``config`` with the search's best values (unchanged when the search is off or no
    trial finished), and the search's result."""
    if config.search.trials < 1:
        return config, None
    result = search(train, config, progress)
    if not result.best:
        return config, result
    tuned = with_values(config, result.best, "search")
    tuned.seed = config.seed
    return tuned, result
