"""Per-member predictions (seed members of a ModalSurv, folds × seeds of a FoldEnsemble)
and the per-patient spread built from them (train.members)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from modalsurv.survival.deephit import pmf_from_logits
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv
from modalsurv.train.members import (
    interval_names,
    member_interval,
    out_of_fold_member_risks,
    out_of_fold_spread,
    prediction_table,
    spread_columns,
    summarise_members,
)


def test_interval_is_the_members_percentiles():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 5, 3))
    lo, hi = member_interval(v, 0.9)
    np.testing.assert_allclose(lo, np.percentile(v, 5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(v, 95, axis=0))
    cols = spread_columns("risk", v[:, :, 0], 0.8)
    assert set(cols) == {"risk_sd", "risk_p10", "risk_p90"}
    np.testing.assert_allclose(cols["risk_sd"], v[:, :, 0].std(axis=0))
    assert interval_names("s", 0.9) == ("s_p05", "s_p95")
    assert interval_names("s", 0.95) == ("s_p2.5", "s_p97.5")
    one = spread_columns("risk", v[:1, :, 0])  # one member: no spread
    assert (one["risk_sd"] == 0).all() and (one["risk_p05"] == one["risk_p95"]).all()
    with pytest.raises(ValueError, match="level"):
        member_interval(v, 1.0)


@pytest.fixture(scope="module")
def seeded(cohort, make_config):
    return ModalSurv(make_config(train__n_init=3, train__epochs=2)).fit(cohort)


def test_seed_members_are_what_the_model_mixes(seeded, cohort):
    outs = seeded.predict_member_outputs(cohort)
    assert outs.shape == (3, len(cohort), seeded.bins_.n_bins)
    import torch

    mixed = pmf_from_logits(torch.as_tensor(outs)).mean(0).numpy()
    np.testing.assert_allclose(seeded.predict_pmf(cohort), mixed, atol=1e-6)
    risks = seeded.predict_member_risk(cohort)
    assert risks.shape == (3, len(cohort)) and np.ptp(risks, axis=0).max() > 0
    np.testing.assert_allclose(risks.mean(0), seeded.predict_risk(cohort), atol=1e-6)
    times = np.array([1.0, 5.0])
    surv = seeded.predict_member_survival(cohort, times)
    assert surv.shape == (3, len(cohort), 2)
    np.testing.assert_allclose(surv.mean(0), seeded.predict_survival(cohort, times), atol=1e-6)
    emb, present = seeded.predict_embeddings(cohort)
    assert emb.shape == (3, len(cohort), 4, 16) and present.shape == (len(cohort), 4)
    assert seeded.embedding_modalities == ["clinical", "rna", "slide", "wsi"]
    np.testing.assert_array_equal(present[:, 1], cohort.present["rna"])


@pytest.mark.parametrize("over", [{"model__head": "cox"}, {"model__head": "logistic_hazard"},
                                  {"train__risk_score": "rmst"}])
def test_member_risks_average_to_the_ensemble_risk(cohort, make_config, over):
    idx = np.arange(len(cohort))
    cfg = make_config(train__n_init=2, train__epochs=2, **over)
    models = [ModalSurv(cfg.model_copy(update={"seed": s})).fit(cohort.subset(idx[idx % 3 != s]))
              for s in range(2)]  # fmt: skip
    ens = FoldEnsemble(models)
    members = ens.predict_member_risk(cohort)
    assert ens.n_members == 4 and members.shape == (4, len(cohort))
    np.testing.assert_allclose(members.mean(0), ens.predict_risk(cohort), atol=1e-6)
    one = ModalSurv(cfg.model_copy(update={"train": cfg.train.model_copy(update={"n_init": 1})}))
    one.fit(cohort)  # a single network is its only member
    np.testing.assert_array_equal(one.predict_member_risk(cohort)[0], one.predict_risk(cohort))


def test_prediction_table_has_the_ensemble_numbers_and_the_members_spread(seeded, cohort):
    ens = FoldEnsemble([seeded, seeded])
    table = prediction_table(ens, cohort, [2.0, 6.0])
    assert list(table.columns) == [
        "patient", "risk", "risk_sd", "risk_p05", "risk_p95", "expected_time",
        "survival_at_2", "survival_at_2_p05", "survival_at_2_p95",
        "survival_at_6", "survival_at_6_p05", "survival_at_6_p95", "n_members"]  # fmt: skip
    np.testing.assert_array_equal(table["risk"], ens.predict_risk(cohort))
    np.testing.assert_array_equal(table["survival_at_6"], ens.predict_survival(cohort, [6.0])[:, 0])
    members = ens.predict_member_survival(cohort, [6.0])[:, :, 0]
    np.testing.assert_allclose(table["survival_at_6_p95"], np.percentile(members, 95, axis=0))
    assert (table["n_members"] == 6).all() and (table["risk_p05"] <= table["risk_p95"]).all()
    assert "survival_at_2" not in prediction_table(ens, cohort).columns


class _Fixed:
    """A fold model whose member risks are known: member s of patient i gives base + i + s."""

    def __init__(self, base: float, members: int) -> None:
        self.base, self.members = base, members

    def predict_member_risk(self, cohort):
        i = np.array([int(p[1:]) for p in cohort.ids], dtype=float)
        return np.stack([self.base + i + s for s in range(self.members)])


def test_out_of_fold_members_come_from_the_models_that_held_each_patient_out(cohort):
    ids = [str(p) for p in cohort.ids]
    folds = pd.DataFrame({"patient": ids * 2, "repeat": [0] * len(ids) + [1] * len(ids),
                          "fold": [i % 2 for i in range(len(ids))]
                          + [(i // 2) % 2 for i in range(len(ids))]})  # fmt: skip
    models = [[_Fixed(0, 2), _Fixed(100, 2)], [_Fixed(1000, 2), _Fixed(2000, 2)]]
    long = out_of_fold_member_risks(folds, models, cohort)
    assert len(long) == 2 * 2 * len(ids)
    p5 = long[long["patient"] == "P005"].sort_values(["repeat", "member"])
    # P005: repeat 0 fold 1 (base 100), repeat 1 fold 0 (base 1000); members add 0, 1
    assert p5["risk"].tolist() == [105, 106, 1005, 1006]
    preds = pd.DataFrame({"patient": ids, "repeat": 0, "time": cohort.time,
                          "event": cohort.event.astype(int), "risk": 0.5})  # fmt: skip
    spread = out_of_fold_spread(folds, models, cohort, preds.iloc[::-1].reset_index(drop=True))
    assert spread["patient"].tolist() == ids[::-1]  # the predictions' order
    row = spread.set_index("patient").loc["P005"]
    assert row["n_members"] == 4 and row["risk_mean"] == pytest.approx(555.5)
    assert row["risk_p05"] == pytest.approx(np.percentile([105, 106, 1005, 1006], 5))
    assert summarise_members(long.iloc[:0]).empty


def test_an_ensemble_like_object_is_enough(cohort):
    ens = SimpleNamespace(
        predict_member_risk=lambda c: np.stack([np.zeros(len(c)), np.ones(len(c))]),
        predict_risk=lambda c: np.full(len(c), 0.5),
        predict_expected_time=lambda c: np.full(len(c), 3.0))
    table = prediction_table(ens, cohort)
    assert (table["risk_sd"] == 0.5).all()
    np.testing.assert_allclose(table["risk_p95"], 0.95)


def test_times_alike_to_six_digits_get_their_own_columns(cohort):
    """``--times 1234.567,1234.568``: two columns, not the second written over the first."""
    times = [2.0, 1234.567, 1234.568]
    ens = SimpleNamespace(
        predict_member_risk=lambda c: np.zeros((2, len(c))),
        predict_risk=lambda c: np.zeros(len(c)),
        predict_expected_time=lambda c: np.full(len(c), 3.0),
        predict_survival=lambda c, t: np.tile([0.9, 0.5, 0.4], (len(c), 1)),
        predict_member_survival=lambda c, t: np.tile([0.9, 0.5, 0.4], (2, len(c), 1)))
    table = prediction_table(ens, cohort, times)
    assert [c for c in table.columns if c.startswith("survival_at_") and "_p" not in c[12:]] == [
        "survival_at_2", "survival_at_1234.567", "survival_at_1234.568"]
    assert (table["survival_at_1234.567"] == 0.5).all()
    assert (table["survival_at_1234.568_p95"] == 0.4).all()


def test_folds_with_unequal_member_counts_weigh_alike_in_the_spread(cohort):
    """The ensemble mixes its folds with equal weights; pooled as they were, the fold with
    three members (a stack keeping more inner models) outweighed the fold with one: the
    members' mean was 0.75 beside an ensemble risk of 0.5 and the sd 0.433, not 0.5."""
    n = len(cohort)
    folds = [SimpleNamespace(n_members=1), SimpleNamespace(n_members=3)]
    ens = SimpleNamespace(
        members=folds,
        predict_member_risk=lambda c: np.stack([np.zeros(n), *[np.ones(n)] * 3]),
        predict_risk=lambda c: np.full(n, 0.5),
        predict_expected_time=lambda c: np.full(n, 3.0),
        predict_survival=lambda c, t: np.full((n, 1), 0.5),
        predict_member_survival=lambda c, t: np.stack([np.ones((n, 1)), *[np.zeros((n, 1))] * 3]))
    table = prediction_table(ens, cohort, [2.0])
    np.testing.assert_allclose(table["risk_sd"], 0.5)
    np.testing.assert_allclose(table["risk_p05"], 0.0)
    np.testing.assert_allclose(table["survival_at_2_p95"], 1.0)
    assert (table["n_members"] == 4).all()  # still the networks counted
    # out of fold: repeat 0's fold model has one member, repeat 1's two
    ids = [str(p) for p in cohort.ids]
    assign = pd.DataFrame({"patient": ids * 2, "repeat": [0] * n + [1] * n, "fold": 0})
    long = out_of_fold_member_risks(assign, [[_Fixed(0, 1)], [_Fixed(10, 2)]], cohort)
    row = summarise_members(long).set_index("patient").loc["P000"]
    assert row["n_members"] == 3
    assert row["risk_mean"] == pytest.approx((0 + 10.5) / 2)
    assert row["risk_sd"] == pytest.approx(np.std([0, 0, 10, 11]))
