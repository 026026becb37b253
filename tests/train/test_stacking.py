"""The stacked default (train.stacking): nested, non-negative, proper curves, saved without
pickle, used by predict and the challenge answers; ``model.stack: none`` is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.cohort import Cohort
from modalsurv.config import parse_config
from modalsurv.errors import ConfigError, DataError, DataWarning
from modalsurv.survival.metrics import concordance_index
from modalsurv.train import stack_candidates, stack_weights, stacking
from modalsurv.train.cv import PLAIN, cross_validate
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv
from modalsurv.train.stacking import StackedSurv, fit_weights

# Fold figures of the plain network with the train tests' tiny config (3 folds, seed 0),
# computed with the code as it was before the stack existed (commit 28347be). The plain
# path reproduces the C-indices to the last bit; risks and IBS move in their 8th digit,
# because the faster step (folded attention pooling, the closed-form DeepHit gradient, one
# flat AdamW update) adds the same numbers in another order.
GOLDEN = {
    "one": {"harrell_c": [0.4092827004219409, 0.592274678111588, 0.6347826086956522],
            "ibs": [0.23392153692602674, 0.26317743172010616, 0.28726746023994915],
            "risk": [0.5411369133623166, 0.5274982371570289, 0.5389174486992756,
                     0.5270622004989466, 0.5168287906480971, 0.5106484499201944]},
    "rotate3": {"harrell_c": [0.5021097046413502, 0.6909871244635193, 0.6130434782608696],
                "ibs": [0.2405180340433826, 0.2749430704873724, 0.2685002846165117],
                "risk": [0.5682138898944327, 0.5608583050029923, 0.5534123073106649,
                         0.5608464338349302, 0.5555550887242164, 0.564864928761688]},
}  # fmt: skip
ROTATE3 = {"epochs": 4, "patience": 2, "batch_size": 16, "device": "cpu", "n_init": 3,
           "monitor": "cindex"}  # fmt: skip


def stack_config(make_config, **model_over):
    train = {"epochs": 4, "patience": 2, "batch_size": 16, "device": "cpu", "n_init": 5}
    model = {"latent_dim": 16, "hidden_dim": 16, "attention_pool_dim": 8, "n_heads": 2,
             "n_bins": 8, "dropout": 0.1,
             "stack": ["modalsurv", "modalsurv_clinical", "coxph_clinical", "coxnet", "rsf"],
             **model_over}  # fmt: skip
    return make_config(train=train, model=model)


@pytest.fixture(scope="module")
def fitted(make_cohort, make_config):
    cohort = make_cohort(n=110, seed=3)
    train, test = cohort.subset(np.arange(85)), cohort.subset(np.arange(85, 110))
    return StackedSurv(stack_config(make_config)).fit(train), train, test


def test_a_fitted_stack_pickles_after_predicting(fitted):
    """A fold model travels back from a Ray worker (pickle) after it scored its test part."""
    import pickle

    model, _, test = fitted
    risk = model.predict_risk(test)  # fills the per-cohort cache
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back.predict_risk(test), risk)
    assert getattr(model, "_memo", None) is not None  # only the copy left the cache behind


@pytest.mark.parametrize("name", ["one", "rotate3"])
def test_plain_network_reproduces_the_figures_from_before_the_stack(make_cohort, make_config,
                                                                    name):  # fmt: skip
    # today's settings: the plain network, and DeepHit's ranking scale as it was (0.1)
    cfg = make_config(loss={"sigma": 0.1}) if name == "one" else make_config(
        train=ROTATE3, loss={"sigma": 0.1})
    assert cfg.model.stack == "none"
    res = cross_validate(make_cohort(80, 0), cfg, folds=3, repeats=1, seed=0, baselines=[])
    m = res.metrics[res.metrics.model == "modalsurv"]
    assert list(m.harrell_c) == GOLDEN[name]["harrell_c"]
    np.testing.assert_allclose(m.ibs, GOLDEN[name]["ibs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.predictions.risk[:6], GOLDEN[name]["risk"], rtol=0, atol=1e-6)
    assert res.summary["model_kind"] == "plain" and "stack" not in res.summary


def test_weights_are_nonnegative_sum_to_one_and_curves_are_proper(fitted):
    model, train, test = fitted
    info = model.stack_info_
    w = np.array(list(info["weights"].values()))
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert set(info["weights"]) == {"modalsurv", "modalsurv_clinical", "coxph_clinical", "coxnet",
                                    "rsf"}
    assert all(b >= 0 for b in model.beta_.values())
    times = np.linspace(0.1, train.time.max(), 25)
    surv = model.predict_survival(test, times)
    assert ((surv >= 0) & (surv <= 1)).all()
    assert (np.diff(surv, axis=1) <= 1e-12).all()  # non-increasing in t
    # a higher risk never has a higher survival at any time (proportional hazards)
    order = np.argsort(model.predict_risk(test))
    assert (np.diff(surv[order], axis=0) <= 1e-12).all()
    pmf = model.predict_pmf(test)
    assert np.allclose(pmf.sum(1), 1.0) and (pmf >= -1e-12).all()
    assert np.isfinite(model.predict_expected_time(test)).all()
    assert model.gate_weights(test).shape == (len(test), len(model.modalities_))


def test_save_load_round_trip_and_fold_ensemble(fitted, tmp_path):
    model, train, test = fitted
    model.save(tmp_path / "m")
    back = stacking.load_model(tmp_path / "m")
    assert isinstance(back, StackedSurv)
    np.testing.assert_array_equal(back.predict_risk(test), model.predict_risk(test))
    np.testing.assert_array_equal(back.predict_survival(test, [1.0, 5.0]),
                                  model.predict_survival(test, [1.0, 5.0]))
    assert back.stack_info_["weights"] == model.stack_info_["weights"]
    ens = FoldEnsemble([model, back])
    ens.save(tmp_path / "ens")
    ens2 = FoldEnsemble.load(tmp_path / "ens")
    assert ens2.head == "cox"
    np.testing.assert_allclose(ens2.predict_risk(test), model.predict_risk(test), rtol=1e-12)
    with pytest.raises(ConfigError, match="plain ModalSurv"):
        ModalSurv(model.config.model_copy(deep=True)).fit(train).save(tmp_path / "p")
        StackedSurv.load(tmp_path / "p")


def test_no_outer_test_row_reaches_any_fit(make_cohort, make_config, monkeypatch):
    cohort = make_cohort(n=90, seed=5)
    seen_fit: list[set[str]] = []
    seen_weights: list[np.ndarray] = []
    original_fit, original_weights = StackedSurv.fit, stacking.fit_weights

    def spy_fit(self, cohort, *a, **k):
        seen_fit.append(set(cohort.ids))
        return original_fit(self, cohort, *a, **k)

    def spy_weights(z, time, event, *a, **k):
        seen_weights.append(np.asarray(time).copy())
        return original_weights(z, time, event, *a, **k)

    for cls in (stack_candidates.NeuralCandidate, stack_candidates.CoxnetCandidate, stack_candidates.ForestCandidate,
                stack_candidates.ClinicalCoxCandidate):
        fit = cls.fit

        def spy_candidate(self, train, *a, _fit=fit, **k):
            seen_fit.append(set(train.ids))
            return _fit(self, train, *a, **k)

        monkeypatch.setattr(cls, "fit", spy_candidate)
    monkeypatch.setattr(StackedSurv, "fit", spy_fit)
    monkeypatch.setattr(stacking, "fit_weights", spy_weights)
    res = cross_validate(cohort, stack_config(make_config), folds=3, repeats=1, seed=0,
                         baselines=[])  # fmt: skip
    assert len(seen_weights) == 3 and len(seen_fit) == 3 * 6
    times = dict(zip(cohort.ids, cohort.time))
    assert len(set(cohort.time)) == len(cohort)  # times identify patients
    for f in range(3):
        test = set(res.folds.loc[res.folds.fold == f, "patient"])
        fits = [s for s in seen_fit if not (s & test)]
        assert len(fits) == 6  # this fold's stack and its five candidates saw no test row
        train_times = {times[p] for p in fits[0]}
        assert any(set(w) <= train_times for w in seen_weights)
    for ids in seen_fit:  # every fit was on some fold's training part only
        assert any(not (ids & set(res.folds.loc[res.folds.fold == f, "patient"]))
                   for f in range(3))
    assert res.summary["model_kind"] == "stack" and len(res.summary["stack"]) == 3
    assert {"weights", "oof_cindex", "dropped"} <= set(res.summary["stack"][0])
    assert "modalsurv/rsf" in res.timings().columns  # seconds: not saved, in memory


def test_curves_are_calibrated_on_synthetic_data(simulate):
    """A stack whose candidate knows the true risk gives survival curves that match the
    Kaplan-Meier estimate of held-out patients (mean predicted S(t) within 0.03)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    from modalsurv.survival.cox import breslow

    x, time, event = simulate(4000, 7)
    tr, te = np.arange(2000), np.arange(2000, 4000)
    z = ((x - x[tr].mean()) / x[tr].std())[:, None]
    beta, _ = fit_weights(z[tr], time[tr], event[tr])
    assert beta[0] == pytest.approx(x[tr].std(), rel=0.1)  # the true log-hazard slope is 1
    bt, bh = breslow(time[tr], event[tr], z[tr] @ beta)
    fam = stacking.get_family("cox")
    grid = np.quantile(time[te], [0.2, 0.4, 0.6, 0.8])
    surv = fam.survival((z[te] @ beta)[:, None], np.zeros(2), grid,
                        {"breslow/time": bt, "breslow/cumhaz": bh})
    km_t, km_s = kaplan_meier_estimator(event[te], time[te])
    km = np.array([km_s[np.searchsorted(km_t, g, side="right") - 1] for g in grid])
    np.testing.assert_allclose(surv.mean(0), km, atol=0.03)


def test_config_refuses_what_cannot_stack():
    with pytest.raises(ConfigError, match="unknown stack candidates"):
        parse_config({"model": {"stack": ["coxnet", "deepsurv"]}})
    with pytest.raises(ConfigError, match="outer_fold"):
        parse_config({"cv": {"selection": "outer_fold"}})
    assert parse_config({"model": {"stack": None}}).model.stack == "none"
    cfg = parse_config({"model": {"stack": "none"}, "cv": {"selection": "outer_fold"}})
    assert isinstance(stacking.make_model(cfg), ModalSurv)
    lora = {"encoder": "wsi", "mode": "lora"}
    with pytest.raises(ConfigError, match="set model.stack: none to fine-tune"):
        parse_config({"finetune": lora})
    cfg = parse_config({"model": {"stack": "none"}, "finetune": lora})
    assert cfg.finetune.mode == "lora" and isinstance(stacking.make_model(cfg), ModalSurv)


def test_candidates_follow_the_cohort(make_config):
    rng = np.random.default_rng(0)
    only_clinical = Cohort([f"p{i}" for i in range(20)], rng.uniform(1, 5, 20),
                           rng.random(20) < 0.5, features={"clinical": rng.normal(size=(20, 3))})
    cfg = stack_config(make_config, stack=["modalsurv", "modalsurv_clinical", "modalsurv_cox",
                                           "rsf"], head="cox")  # fmt: skip
    names = stack_candidates.candidate_configs(cfg, only_clinical)
    assert list(names) == ["modalsurv", "rsf"]  # clinical-only repeats it; cox is the head


def test_candidates_follow_model_modalities(make_cohort, make_config):
    """A modality ablation without clinical data must not get it back through the stack:
    no clinical candidate, and the fitted stack's risks ignore the clinical values."""
    cohort = make_cohort(n=90, seed=2)
    cfg = stack_config(make_config, stack=["modalsurv", "modalsurv_clinical",
                                           "coxph_clinical", "coxnet"],
                       modalities=["rna", "slide"])  # fmt: skip
    names = stack_candidates.candidate_configs(cfg, cohort)
    assert list(names) == ["modalsurv", "coxnet"]
    with_clinical = stack_config(make_config, modalities=["clinical", "rna"])
    assert "coxph_clinical" in stack_candidates.candidate_configs(with_clinical, cohort)
    assert stack_candidates.clinical_modalities(with_clinical, cohort) == ["clinical"]

    train, test = cohort.subset(np.arange(70)), cohort.subset(np.arange(70, 90))
    model = StackedSurv(cfg).fit(train)
    assert set(model.stack_info_["weights"]) <= {"modalsurv", "coxnet"}
    shifted = test.with_modality("clinical", test.features["clinical"] + 3.0)
    np.testing.assert_array_equal(model.predict_risk(shifted), model.predict_risk(test))


def test_stack_in_a_cv_run_scores_the_plain_network_beside_it(make_cohort, make_config):
    cohort = make_cohort(n=80, seed=0)
    res = cross_validate(cohort, stack_config(make_config), folds=2, repeats=1, seed=0,
                         baselines=[])  # fmt: skip
    plain = cross_validate(cohort, stack_config(make_config, stack="none"), folds=2, repeats=1,
                           seed=0, baselines=[])  # fmt: skip
    # the stack's ModalSurv candidate is exactly the plain run's network
    a = res.metrics[res.metrics.model == PLAIN].harrell_c.to_numpy()
    b = plain.metrics[plain.metrics.model == "modalsurv"].harrell_c.to_numpy()
    np.testing.assert_array_equal(a, b)
    c = res.metrics[res.metrics.model == "modalsurv"].harrell_c.to_numpy()
    assert np.isfinite(c).all() and np.isfinite(res.predictions.risk).all()
    # the out-of-fold predictions are the stack's, not the plain network's
    assert not np.allclose(res.predictions.risk, plain.predictions.risk)
    oof = concordance_index(cohort.time, cohort.event, res.predictions.risk.to_numpy())
    assert 0.0 < oof < 1.0


def test_one_inner_split_still_gives_a_baseline_over_every_training_event(make_cohort,
                                                                          make_config):
    """With train.n_init 1 only one inner split's rows (a fifth) have out-of-fold scores;
    a Breslow baseline on them alone stayed at S = 1 until their first event. The baseline
    then comes from every training row, so it steps at the training part's first event."""
    cohort = make_cohort(n=90, seed=4)
    cfg = stack_config(make_config)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"n_init": 1})})
    model = StackedSurv(cfg).fit(cohort)
    first = float(cohort.time[cohort.event].min())
    assert float(model.fitted_["breslow/time"][0]) == pytest.approx(first)
    surv = model.predict_survival(cohort, [first])
    assert (surv[:, 0] < 1.0).all()


def test_too_few_inner_events_fall_back_to_equal_weights_with_a_fitted_scale(make_cohort,
                                                                           make_config):  # fmt: skip
    """train.n_init 1 on a small cohort: under MIN_EVENTS events among the rows with
    every out-of-fold score. The fallback is said (a warning, metrics.json) and its equal
    coefficients carry a fitted scale."""
    cohort = make_cohort(n=30, seed=4)
    cfg = stack_config(make_config)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"n_init": 1})})
    with pytest.warns(DataWarning, match="stacked default: equal weights"):
        model = StackedSurv(cfg).fit(cohort)
    # the fallback's equal coefficients carry a fitted scale (0.15 here), not MIN_SCALE:
    # the curves differ between patients (survival at the median time spreads over 0.08;
    # 0.003 with MIN_SCALE)
    info = model.stack_info_
    assert info["fallback"].startswith("equal weights (scale") and "fitted" in info["fallback"]
    assert len(set(np.round(list(info["weights"].values()), 12))) == 1
    assert info["scale"] > 10 * stack_weights.MIN_SCALE
    mid = model.predict_survival(cohort, [float(np.median(cohort.time))])[:, 0]
    assert mid.max() - mid.min() > 0.01


def test_too_small_a_training_part_names_it_and_what_to_change(make_cohort, make_config):
    from modalsurv.errors import DataError

    with pytest.raises(DataError, match=r"needs at least 10 patients to train on \(5 inner"
                                        r" folds\); this training part has 8 .*lower cv.folds"):  # fmt: skip
        StackedSurv(stack_config(make_config)).fit(make_cohort(n=8, seed=0))


def test_a_constant_candidate_kept_alone_is_recorded_and_said(make_cohort, make_config,
                                                               monkeypatch, simulate):  # fmt: skip
    """When nothing passes the screen, a constant score (C = 0.5 by ties) can be the best
    by C-index; fit_weights records that it was kept alone and constant, and the fit says
    so (was: the stack quietly predicted one curve for every patient)."""
    x, time, event = simulate(80, 2)
    z = np.column_stack([np.zeros_like(x), -x])  # constant; reversed (C < 0.5)
    beta, record = fit_weights(z, time, event, threshold=1e9)
    assert beta[0] > 0 and beta[1] == 0
    assert record["kept_alone"] == {"column": 0, "cindex": 0.5, "constant": True}
    _, record = fit_weights(np.column_stack([z, x]), time, event)  # x passes the screen
    assert record["kept_alone"] is None
    import functools

    monkeypatch.setattr(stacking, "fit_weights",
                        functools.partial(fit_weights, threshold=1e9))  # fmt: skip
    cohort = make_cohort(n=60, seed=2)
    cfg = stack_config(make_config, stack=["modalsurv", "coxph_clinical"])
    real_standardise = stacking.standardise

    def flat_peer(oof, n, how="model"):  # the peer's out-of-fold risks made constant
        if flat_peer.calls == 1:
            oof = [(rows, np.zeros_like(r)) for rows, r in oof]
        flat_peer.calls += 1
        return real_standardise(oof, n, how)

    flat_peer.calls = 0
    monkeypatch.setattr(stacking, "standardise", flat_peer)
    with pytest.warns(DataWarning, match="kept 'coxph_clinical' alone .*whose risk is"
                                         " constant: every patient gets the same"):  # fmt: skip
        model = StackedSurv(cfg).fit(cohort)
    assert model.stack_info_["kept_alone"] == "coxph_clinical"


def test_stack_api_errors_name_the_stack(fitted, tmp_path):
    """set_params, a plain config, an empty cohort and ModalSurv.load of a stacked folder:
    each message names what to do (was: 'ModalSurv.set_params', 'names no candidate', a
    torch error, a StackedSurv returned from ModalSurv.load)."""
    import modalsurv

    model, _, test = fitted
    with pytest.raises(ConfigError, match="StackedSurv has no parameter 'lr'"):
        StackedSurv(model.config).set_params(lr=1.0)
    with pytest.raises(ConfigError, match="StackedSurv.set_params"):
        StackedSurv(model.config).set_params(config__train__lrr=1.0)
    plain = model.config.model_copy(update={"model": model.config.model.model_copy(
        update={"stack": "none"})})  # fmt: skip
    with pytest.raises(ConfigError, match="model.stack is 'none'.*fit ModalSurv"):
        StackedSurv(plain).fit(test)
    with pytest.raises(DataError, match="StackedSurv.predict: the cohort has no patient"):
        model.predict_risk(test.subset(np.arange(0)))
    model.save(tmp_path / "s")
    with pytest.raises(ConfigError, match="holds the stacked default.*load_model"):
        ModalSurv.load(tmp_path / "s")
    back = modalsurv.load_model(tmp_path / "s")
    assert isinstance(back, modalsurv.StackedSurv)


@pytest.mark.parametrize("head", ["cox", "deephit"])
def test_network_candidate_scores_new_rows_as_its_out_of_fold_rows(make_cohort, make_config,
                                                                  head):  # fmt: skip
    """A network member's test-time risk on its own validation rows is the risk recorded
    there at its best epoch (``oof("best")``), so the stack's standardised scores and its
    Breslow baseline (fitted on out-of-fold scores) read new patients on the same scale.
    Cox members were centred on their training mean at test time only: a constant shift
    of every new patient's stacked score (miscalibrated curves)."""
    from modalsurv.train.estimator import member_splits

    cohort = make_cohort(n=60, seed=7)
    cfg = stack_config(make_config, head=head)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"n_init": 3})})
    cand = stack_candidates.NeuralCandidate("modalsurv", cfg)
    cand.fit(cohort, None, [], 0, None)
    risks = cand.model_risks(cohort)
    oof = cand.oof("best")
    assert len(oof) == 3
    splits = member_splits(cohort.event, cfg.train.val_fraction, 0, 3)
    for k, (rows, r) in enumerate(oof):
        np.testing.assert_array_equal(rows, splits[k][1])  # member k never trained on them
        assert not np.isin(rows, splits[k][0]).any()
        np.testing.assert_allclose(risks[k, rows], r, rtol=1e-6, atol=1e-6)


def test_a_stack_whose_every_candidate_failed_says_which_and_why(make_cohort, make_config,
                                                                 monkeypatch):  # fmt: skip
    """``model.stack: [rsf]`` with a forest that fails: a DataError naming the candidate
    and its error, not numpy's "need at least one array to concatenate"."""

    def broken(self, *args, **kwargs):
        raise ValueError("forest exploded")

    monkeypatch.setattr(stack_candidates.ForestCandidate, "fit", broken)
    cfg = stack_config(make_config, stack=["rsf"])
    with pytest.raises(DataError, match=r"every candidate failed.*rsf: ValueError: forest exploded"):
        StackedSurv(cfg).fit(make_cohort(n=60, seed=1))
