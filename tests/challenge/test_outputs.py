"""The challenge numbers rank patients exactly as the risk the model was selected on."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.challenge.outputs import challenge_value, predicted_time, recurrence_likelihood
from modalsurv.config import parse_config
from modalsurv.data.synthetic import make_cohort
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv


def _ensemble(head: str = "deephit", risk_score: str = "survival") -> tuple[FoldEnsemble, object]:
    cohort, _ = make_cohort(n=80, seed=2, modalities=("clinical",))
    cfg = parse_config({"model": {"latent_dim": 8, "hidden_dim": 8, "n_bins": 8, "head": head,
                                  "n_heads": 2},
                        "train": {"epochs": 3, "n_init": 1, "device": "cpu",
                                  "risk_score": risk_score}})  # fmt: skip
    members = []
    for seed, rows in ((0, slice(0, 60)), (1, slice(20, 80))):
        members.append(ModalSurv(cfg.model_copy(update={"seed": seed})).fit(
            cohort.subset(np.arange(80)[rows])))
    return FoldEnsemble(members), cohort


@pytest.mark.parametrize(("head", "risk_score"),
                         [("deephit", "survival"), ("deephit", "rmst"), ("cox", "survival")])
def test_time_and_likelihood_are_monotone_in_the_selection_risk(head, risk_score):
    ens, cohort = _ensemble(head, risk_score)
    risk = ens.predict_risk(cohort)
    time = predicted_time(ens, cohort)
    like = recurrence_likelihood(ens, cohort)
    assert np.isfinite(time).all() and (time > 0).all()
    assert ((like >= 0) & (like <= 1)).all()
    order = np.argsort(risk)
    assert (np.diff(time[order]) <= 0).all()  # higher risk, earlier predicted recurrence
    assert (np.diff(like[order]) >= 0).all()
    # ranking by minus the time is ranking by the risk: the same C-index, exactly
    c_risk = concordance_index(cohort.time, cohort.event, risk)
    assert concordance_index(cohort.time, cohort.event, -time) == pytest.approx(c_risk, abs=1e-12)
    assert concordance_index(cohort.time, cohort.event, like) == pytest.approx(c_risk, abs=1e-12)


def test_values_in_months_and_task_directions():
    ens, cohort = _ensemble("deephit", "survival")
    s_ref = ens.predict_survival(cohort, np.array([ens.t_ref]))[:, 0]
    time = predicted_time(ens, cohort)
    # the median of the constant-hazard curve through S(t_ref)
    np.testing.assert_allclose(time, ens.t_ref * np.log(2) / -np.log(s_ref), rtol=1e-9)
    np.testing.assert_allclose(recurrence_likelihood(ens, cohort), 1 - s_ref, rtol=1e-9)
    np.testing.assert_array_equal(challenge_value(ens, cohort, "task1"), time)
    np.testing.assert_array_equal(challenge_value(ens, cohort, "task3", "time"), time)
    np.testing.assert_array_equal(challenge_value(ens, cohort, "task3", "risk"),
                                  recurrence_likelihood(ens, cohort))
    with pytest.raises(ValueError, match="direction"):
        challenge_value(ens, cohort, "task3", "sideways")  # type: ignore[arg-type]


def test_rmst_time_is_the_restricted_mean():
    ens, cohort = _ensemble("deephit", "rmst")
    np.testing.assert_allclose(predicted_time(ens, cohort), -ens.predict_risk(cohort))
    tau = ens.cuts[-1]
    assert (predicted_time(ens, cohort) <= tau + 1e-9).all()
    # task 3: the share of the horizon (the last cut) not expected to be lived recurrence-free
    like = recurrence_likelihood(ens, cohort)
    np.testing.assert_allclose(like, 1.0 - predicted_time(ens, cohort) / tau, rtol=0, atol=1e-12)
    assert 0.0 < like.min() < like.max() < 1.0


def test_a_stacked_ensemble_answers_monotone_in_its_risk():
    """The stacked default predicts as a Cox-family model: the challenge values come from
    its Breslow baseline and rank exactly as its risk."""
    from modalsurv.train.stacking import StackedSurv

    cohort, _ = make_cohort(n=90, seed=2, modalities=("clinical", "rna"), n_genes=30)
    cfg = parse_config({"model": {"latent_dim": 8, "hidden_dim": 8, "n_bins": 8, "n_heads": 2,
                                  "stack": ["modalsurv", "coxnet"]},
                        "preprocess": {"rna_pca": 4},
                        "train": {"epochs": 2, "n_init": 5, "device": "cpu"}})  # fmt: skip
    members = [StackedSurv(cfg.model_copy(update={"seed": s})).fit(cohort.subset(rows))
               for s, rows in ((0, np.arange(0, 70)), (1, np.arange(20, 90)))]  # fmt: skip
    ens = FoldEnsemble(members)
    assert ens.head == "cox"
    risk = ens.predict_risk(cohort)
    time, like = predicted_time(ens, cohort), recurrence_likelihood(ens, cohort)
    order = np.argsort(risk)
    assert np.isfinite(time).all() and (np.diff(time[order]) <= 0).all()
    assert (np.diff(like[order]) >= 0).all() and ((like >= 0) & (like <= 1)).all()
    c = concordance_index(cohort.time, cohort.event, risk)
    assert concordance_index(cohort.time, cohort.event, -time) == pytest.approx(c, abs=1e-12)


@pytest.mark.parametrize(("head", "risk"), [
    # Cox: log-risks far above the baseline, where S(t_ref) rounds to 0 in float64
    ("cox", np.array([-30.0, 0.0, 3.0, 4.0, 6.0, 9.0, 30.0, 300.0])),
    # DeepHit: risk = 1 - S(t_ref) within a few ulps of 0 and of 1
    ("deephit", np.array([0.0, 1e-17, 1e-12, 0.3, 1 - 1e-12, 1 - 1e-15, 1.0])),
])  # fmt: skip
def test_extreme_risks_still_get_distinct_times(head, risk):
    """A task-1 answer ties two patients only when their risks tie: no clipping of S."""
    ens, cohort = _ensemble(head)
    time = predicted_time(ens, cohort.subset(np.arange(len(risk))), risk=risk)
    assert np.isfinite(time).all() and (time >= 0).all()
    assert (np.diff(time) < 0).all(), time  # strictly: the risks are distinct
