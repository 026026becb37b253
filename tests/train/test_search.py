"""The optional inner hyperparameter search (train.search): seeded, budgeted, nested."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modalsurv.errors import DataWarning
from modalsurv.train import search as search_module
from modalsurv.train.cv import cross_validate
from modalsurv.train.estimator import ModalSurv

pytest.importorskip("optuna")

SEARCH = {"trials": 3, "inner_folds": 2, "epochs": [2, 3], "latent_dim": [8, 16]}


def searched_config(make_config, **over):
    return make_config(search={**SEARCH, **over})


def test_same_seed_same_trials(make_cohort, make_config):
    train = make_cohort(n=60, seed=1)
    a = search_module.search(train, searched_config(make_config))
    b = search_module.search(train, searched_config(make_config))
    assert [t["params"] for t in a.trials] == [t["params"] for t in b.trials]
    assert [t["value"] for t in a.trials] == [t["value"] for t in b.trials]
    assert a.best == b.best and set(a.best) == set(search_module.KEYS)
    lo, hi = SEARCH["epochs"]
    assert lo <= a.best["train.epochs"] <= hi and a.best["model.latent_dim"] in (8, 16)
    other = make_config(search=SEARCH, seed=5)
    c = search_module.search(train, other)
    assert [t["params"] for t in c.trials] != [t["params"] for t in a.trials]


def test_budget_is_respected(make_cohort, make_config):
    train = make_cohort(n=60, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a count budget is reproducible: nothing to warn
        res = search_module.search(train, searched_config(make_config, trials=2))
    assert len(res.trials) == 2
    with pytest.warns(DataWarning, match=r"stopped the search after 1 of 50 trials.*not"
                      r" reproducible"):  # fmt: skip
        timed = search_module.search(train, searched_config(make_config, trials=50,
                                                            timeout=1e-3))  # fmt: skip
    assert len(timed.trials) == 1  # the time limit stops the search after the first trial


def test_no_outer_test_row_reaches_the_search(make_cohort, make_config, monkeypatch):
    cohort = make_cohort(n=60, seed=2)
    seen: list[set[str]] = []
    fit = ModalSurv.fit

    def spy(self, cohort, *a, **k):
        seen.append(set(cohort.ids))
        return fit(self, cohort, *a, **k)

    monkeypatch.setattr(ModalSurv, "fit", spy)
    res = cross_validate(cohort, searched_config(make_config, trials=2), folds=2, repeats=1,
                         seed=0, baselines=[])  # fmt: skip
    # per outer fold: 2 trials x 2 inner folds, then the final model
    assert len(seen) == 2 * (2 * 2 + 1)
    for f in range(2):
        test = set(res.folds.loc[res.folds.fold == f, "patient"])
        fits = seen[f * 5:(f + 1) * 5]
        assert all(not (ids & test) for ids in fits)
    assert [r["fold"] for r in res.summary["search"]] == [0, 1]
    assert all(r["n_trials"] == 2 and r["n_failed"] == 0 and 0 <= r["best_cindex"] <= 1
               for r in res.summary["search"])  # how each fold's search went  # fmt: skip
    chosen = res.models[0][0].config
    assert chosen.train.epochs in (2, 3) and chosen.model.latent_dim in (8, 16)
    assert "modalsurv/search" in res.timings().columns


def test_off_by_default_and_missing_optuna_is_named(make_cohort, make_config, monkeypatch):
    from modalsurv.errors import MissingDependencyError

    cfg = make_config()
    assert cfg.search.trials == 0
    assert search_module.tuned_config(make_cohort(n=30), cfg) == (cfg, None)
    monkeypatch.setattr(search_module, "require", lambda *a: (_ for _ in ()).throw(
        MissingDependencyError("the hyperparameter search needs optuna: pip install"
                               " 'modalsurv[tune]'")))  # fmt: skip
    with pytest.raises(MissingDependencyError, match="tune"):
        search_module.search(make_cohort(n=30), searched_config(make_config))


def test_trials_below_the_median_are_pruned_after_an_inner_fold(make_cohort, make_config):
    train = make_cohort(n=60, seed=1)
    res = search_module.search(train, searched_config(make_config, trials=8, inner_folds=3))
    states = {t["state"] for t in res.trials}
    assert states <= {"COMPLETE", "PRUNED"} and "PRUNED" in states
    assert res.record()["n_pruned"] >= 1 and np.isfinite(res.best_cindex)
    unpruned = search_module.search(train, searched_config(make_config, trials=8, inner_folds=3,
                                                           prune=False))  # fmt: skip
    assert {t["state"] for t in unpruned.trials} == {"COMPLETE"}


def test_a_training_part_too_few_events_to_score_keeps_the_configured_values(make_cohort,
                                                                             make_config):
    """Two events in 40 patients: some inner test part has none, so no trial can be scored.
    The trials are recorded as failed with the reason, a warning says so, the configured
    values are kept, and a CV with such folds runs to the end instead of aborting."""
    from modalsurv.cohort import Cohort
    from modalsurv.errors import DataWarning

    base = make_cohort(n=40, seed=0)
    event = np.zeros(40, bool)
    event[[0, 1]] = True
    few = Cohort(base.ids, base.time, event, features=base.features, present=base.present,
                 bag_mask=base.bag_mask)  # fmt: skip
    cfg = searched_config(make_config, trials=2, inner_folds=3, prune=False)
    with pytest.warns(DataWarning, match="no trial could be scored"):
        res = search_module.search(few, cfg)
    assert res.best == {} and [t["state"] for t in res.trials] == ["FAIL", "FAIL"]
    assert all("inner fold" in t["error"] for t in res.trials)
    assert res.record()["n_failed"] == 2
    with pytest.warns(DataWarning):
        assert search_module.tuned_config(few, cfg)[0] == cfg
    wider = make_cohort(n=60, seed=0)
    event = np.zeros(60, bool)
    event[np.argsort(wider.time)[:3]] = True  # 3 events over 3 outer folds: accepted
    rare = Cohort(wider.ids, wider.time, event, features=wider.features,
                  present=wider.present, bag_mask=wider.bag_mask)  # fmt: skip
    with pytest.warns(DataWarning):
        res = cross_validate(rare, make_config(search={**SEARCH, "trials": 1, "inner_folds": 3}),
                             folds=3, repeats=1, seed=0, baselines=[])  # fmt: skip
    assert len(res.predictions) == 60
    # metrics.json says which folds' searches could score nothing (configured values kept)
    assert any(r["best_cindex"] is None and r["n_failed"] == r["n_trials"] == 1
               for r in res.summary["search"]), res.summary["search"]  # fmt: skip


def test_too_many_inner_folds_names_the_search_key(make_cohort):
    """Was: a data error naming 'cv.folds', which the user had not set."""
    from modalsurv.errors import ConfigError

    with pytest.raises(ConfigError, match="search.inner_folds 30: more inner folds than the 20"):
        search_module.inner_folds(make_cohort(n=20, seed=0), 30, 0)


def test_a_trial_that_scored_every_inner_fold_is_never_pruned(make_cohort, make_config,
                                                              monkeypatch):
    """Was: the median pruner also ran after the last inner fold, so a trial that had
    already paid for every fold lost its score and was counted as pruned (seen on this
    cohort: trial 3 of 4, two inner folds)."""
    fits = [0]
    fit = ModalSurv.fit

    def spy(self, *a, **k):
        fits[0] += 1
        return fit(self, *a, **k)

    monkeypatch.setattr(ModalSurv, "fit", spy)
    per_trial: list[tuple[str, int]] = []

    def progress(event, **info):
        per_trial.append((info["state"], fits[0] - sum(n for _, n in per_trial)))

    cfg = searched_config(make_config, trials=4, inner_folds=2)
    res = search_module.search(make_cohort(n=60, seed=1), cfg, progress)
    assert [state for state, _ in per_trial] == [t["state"] for t in res.trials]
    for (state, n_fits), t in zip(per_trial, res.trials):
        if n_fits == 2:  # every inner fold was fitted and scored
            assert state == "COMPLETE" and t["value"] is not None, per_trial
        else:
            assert state == "PRUNED" and n_fits == 1, per_trial


def test_a_resumed_fold_reports_its_search_as_it_went(make_cohort, make_config, tmp_path):
    """The fold's search record was not saved: a resume read it as None, which
    ``metrics.json`` means as "no trial could be scored"; it is kept with the fold."""
    cohort = make_cohort(n=60, seed=1)
    cfg = searched_config(make_config, trials=2)
    first = cross_validate(cohort, cfg, folds=2, repeats=1, resume_dir=tmp_path / "ck")
    assert all(s["n_trials"] == 2 and s["best_cindex"] is not None
               for s in first.summary["search"])  # fmt: skip
    again = cross_validate(cohort, cfg, folds=2, repeats=1, resume_dir=tmp_path / "ck")
    assert again.summary["search"] == first.summary["search"]


def test_the_search_puts_the_callers_optuna_logging_back_and_reports_pruned_trials(
        make_cohort, make_config):  # fmt: skip
    """The search set Optuna's logging to ERROR for the whole process (a user's own Optuna
    studies then logged nothing); the fold summary now also says how many were pruned."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        res = cross_validate(make_cohort(n=60, seed=1), searched_config(make_config, trials=2),
                             folds=2, repeats=1)  # fmt: skip
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert all(s["n_pruned"] == 0 for s in res.summary["search"])  # 2 trials: none pruned
