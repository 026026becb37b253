"""The stacked default (train.stacking): nested, non-negative, proper curves, saved without
pickle, used by predict and the challenge answers; ``model.stack: none`` is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.cohort import Cohort
from modalsurv.config import parse_config
from modalsurv.errors import ConfigError, DataError, DataWarning
from modalsurv.survival.metrics import concordance_index
from modalsurv.train import stacking
from modalsurv.train.cv import PLAIN, cross_validate
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv
from modalsurv.train.stacking import StackedSurv, fit_weights, standardise

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

    for cls in (stacking.NeuralCandidate, stacking.CoxnetCandidate, stacking.ForestCandidate,
                stacking.ClinicalCoxCandidate):
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


def _simulated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-x))
    t_cens = rng.exponential(2.0, size=n)
    return x, np.minimum(t_event, t_cens), t_event <= t_cens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_candidates_get_no_weight(seed):
    rng = np.random.default_rng(100 + seed)
    x, time, event = _simulated(600, seed)
    signal = x + 0.5 * rng.normal(size=len(x))  # a good candidate
    weaker = x + 1.5 * rng.normal(size=len(x))  # a weaker, informative one
    noise = rng.normal(size=(len(x), 3))  # three candidates that know nothing
    z = np.column_stack([signal, weaker, noise])
    z = (z - z.mean(0)) / z.std(0)
    beta, record = fit_weights(z, time, event)
    assert (beta >= 0).all() and beta[0] > 0 and beta[1] > 0
    assert (beta[2:] == 0).all(), beta
    assert [t["kept"] for t in record["screen"]] == [True, True, False, False, False]
    # without the screen the shrinkage towards equal weights would give noise a weight
    unscreened = stacking.nonnegative_cox(z, time, event, stacking.SHRINK)[0]
    assert (unscreened[2:] > 0).any()


def test_standardise_per_inner_model():
    oof = [(np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0])),
           (np.array([3, 4]), np.array([10.0, 30.0]))]  # fmt: skip
    z, mu, sd = standardise(oof, 6)
    np.testing.assert_allclose(sd, [np.std([1.0, 2.0, 3.0]), 10.0])
    np.testing.assert_allclose(mu, [2.0, 20.0])
    np.testing.assert_allclose(z[:5], [-1.2247449, 0.0, 1.2247449, -1.0, 1.0], rtol=1e-6)
    assert np.isnan(z[5])
    zp, _, _ = standardise(oof, 6, "pooled")
    assert np.argsort(zp[:5]).tolist() == [0, 1, 2, 3, 4]


def test_pooled_standardisation_uses_one_mean_and_scale_over_all_risks():
    """``how="pooled"``: every inner model is centred and scaled by the mean and the
    (ddof 0) standard deviation of all out-of-fold risks together, by hand here."""
    oof = [(np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0])),
           (np.array([3, 4]), np.array([10.0, 30.0]))]  # fmt: skip
    allr = np.array([1.0, 2.0, 3.0, 10.0, 30.0])
    m, s = allr.sum() / 5, np.sqrt(((allr - allr.sum() / 5) ** 2).sum() / 5)
    z, mu, sd = standardise(oof, 6, "pooled")
    np.testing.assert_allclose(mu, [m, m])
    np.testing.assert_allclose(sd, [s, s])
    np.testing.assert_allclose(z[:5], (allr - m) / s)
    assert np.isnan(z[5])


def test_a_row_scored_by_several_inner_models_gets_the_mean_of_their_scores():
    """Rows 1 and 2 are out-of-fold for both inner models (fewer inner splits than
    members): their score is the average of the two standardised risks, not the sum."""
    oof = [(np.array([0, 1, 2]), np.array([1.0, 2.0, 4.0])),
           (np.array([1, 2, 3]), np.array([5.0, 1.0, 3.0]))]  # fmt: skip
    z, _, _ = standardise(oof, 5)
    a = (np.array([1.0, 2.0, 4.0]) - 7 / 3) / np.std([1.0, 2.0, 4.0])
    b = (np.array([5.0, 1.0, 3.0]) - 3.0) / np.std([5.0, 1.0, 3.0])
    np.testing.assert_allclose(z[:4], [a[0], (a[1] + b[0]) / 2, (a[2] + b[1]) / 2, b[2]])
    assert np.isnan(z[4])
    zp, mu, sd = standardise(oof, 5, "pooled")  # the same rule with one pooled scale
    both = np.array([[2.0, 5.0], [4.0, 1.0]])
    np.testing.assert_allclose(zp[1:3], ((both - mu[0]) / sd[0]).mean(1))


def _weak_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, time, event = _simulated(n, seed)
    assert len(np.unique(time)) == n  # no tied times: Breslow = Efron = lifelines
    return x, time, event


def test_screen_statistic_is_the_likelihood_ratio_of_a_cox_fit(monkeypatch):
    """Without the ridge, the screen's statistic of a column is the likelihood-ratio test
    of a one-covariate Cox model against none (lifelines, 2 (loglik - null loglik)); a
    column associated the wrong way has coefficient 0 (non-negative) and statistic 0."""
    import pandas as pd
    from lifelines import CoxPHFitter

    monkeypatch.setattr(stacking, "RIDGE", 0.0)
    rng = np.random.default_rng(111)
    x, time, event = _weak_cohort(80, 11)
    z = np.column_stack([x, 0.5 * x + rng.normal(size=len(x)), -x])
    tests = stacking.screen(z, time, event)
    for j in (0, 1):
        df = pd.DataFrame({"z": z[:, j], "T": time, "E": event})
        ref = CoxPHFitter().fit(df, "T", "E").log_likelihood_ratio_test().test_statistic
        assert tests[j]["lr"] == pytest.approx(ref, rel=1e-5)
        assert tests[j]["kept"] == (ref >= stacking.LR_THRESHOLD)
    assert tests[2]["lr"] == pytest.approx(0.0, abs=1e-8) and not tests[2]["kept"]


def test_penalised_objective_gradient_matches_finite_differences():
    """The analytic gradient L-BFGS-B is given must be the gradient of the loss it is
    given, shrinkage term included (beta with a nonzero mean, so the pull towards the
    mean differs from a pull towards 0)."""
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(104)
    x, time, event = _weak_cohort(60, 4)
    z = np.column_stack([x, x + rng.normal(size=60), rng.normal(size=60)])
    beta = np.array([0.3, 0.8, 0.1])
    for shrink in (0.0, 20.0):
        f = stacking._neg_log_pl(z, time, event, shrink=shrink)
        numeric = approx_fprime(beta, lambda b, f=f: f(b)[0], 1e-7)
        np.testing.assert_allclose(f(beta)[1], numeric, rtol=1e-4, atol=1e-4)
    # the loss itself: the ridge and the shrinkage terms on top of the partial likelihood
    loglik = -stacking._neg_log_pl(z, time, event)(np.zeros(3))[0]
    order = np.argsort(time)
    eta = z @ beta
    lp = sum(eta[i] - np.log(np.exp(eta[time >= time[i]]).sum()) for i in order if event[i])
    assert loglik == pytest.approx(
        sum(-np.log((time >= time[i]).sum()) for i in order if event[i]))
    dev = beta - beta.mean()
    expect = -lp + 0.5 * stacking.RIDGE * beta @ beta + 0.5 * 20.0 * dev @ dev
    assert stacking._neg_log_pl(z, time, event, shrink=20.0)(beta)[0] == pytest.approx(expect)


def test_when_no_candidate_passes_the_screen_the_best_c_index_alone_is_kept():
    """No column reaches the threshold: the weight goes to the column with the highest
    out-of-fold C-index (lifelines' concordance, an independent count), at least
    ``MIN_SCALE``; every other column gets 0."""
    from lifelines.utils import concordance_index as lifelines_c

    rng = np.random.default_rng(105)
    x, time, event = _weak_cohort(120, 5)
    z = np.column_stack([rng.normal(size=120), -x, x + 0.5 * rng.normal(size=120),
                         0.3 * x + rng.normal(size=120)])  # fmt: skip
    c = [lifelines_c(time, -z[:, j], event) for j in range(z.shape[1])]
    best = int(np.argmax(c))
    assert best == 2 and c[1] < 0.5  # the reversed column has the lowest C
    beta, record = fit_weights(z, time, event, threshold=1e9)
    assert not any(t["kept"] for t in record["screen"])
    assert beta[best] >= stacking.MIN_SCALE
    assert (np.delete(beta, best) == 0).all()
    alone, _ = stacking.nonnegative_cox(z[:, [best]], time, event)
    assert beta[best] == pytest.approx(max(alone[0], stacking.MIN_SCALE))
    # a lone column with the wrong sign (its Cox coefficient clips to 0) gets MIN_SCALE
    beta, _ = fit_weights(z[:, [1]], time, event, threshold=1e9)
    assert beta.tolist() == [stacking.MIN_SCALE]


def test_kept_candidates_with_a_tiny_total_weight_are_rescaled_to_min_scale():
    """Candidates that pass the screen but whose coefficients sum below ``MIN_SCALE``
    (a tiny-scale signal, let through by a threshold below 0) are scaled up together so
    the coefficients sum to ``MIN_SCALE``, keeping their ratios."""
    rng = np.random.default_rng(106)
    x, time, event = _weak_cohort(100, 6)
    z = 1e-6 * np.column_stack([x, x + rng.normal(size=100), rng.normal(size=100)])
    raw, _ = stacking.nonnegative_cox(z, time, event, stacking.SHRINK)
    assert 0 < raw.sum() < stacking.MIN_SCALE / 5  # the unscaled fit: far below MIN_SCALE
    beta, record = fit_weights(z, time, event, threshold=-1.0)
    assert all(t["kept"] for t in record["screen"])
    assert beta.sum() == pytest.approx(stacking.MIN_SCALE, rel=1e-9)
    np.testing.assert_allclose(beta, raw * stacking.MIN_SCALE / raw.sum(), rtol=1e-9)


def test_curves_are_calibrated_on_synthetic_data():
    """A stack whose candidate knows the true risk gives survival curves that match the
    Kaplan-Meier estimate of held-out patients (mean predicted S(t) within 0.03)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    from modalsurv.survival.cox import breslow

    x, time, event = _simulated(4000, 7)
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
    names = stacking.candidate_configs(cfg, only_clinical)
    assert list(names) == ["modalsurv", "rsf"]  # clinical-only repeats it; cox is the head


def test_candidates_follow_model_modalities(make_cohort, make_config):
    """A modality ablation without clinical data must not get it back through the stack:
    no clinical candidate, and the fitted stack's risks ignore the clinical values."""
    cohort = make_cohort(n=90, seed=2)
    cfg = stack_config(make_config, stack=["modalsurv", "modalsurv_clinical",
                                           "coxph_clinical", "coxnet"],
                       modalities=["rna", "slide"])  # fmt: skip
    names = stacking.candidate_configs(cfg, cohort)
    assert list(names) == ["modalsurv", "coxnet"]
    with_clinical = stack_config(make_config, modalities=["clinical", "rna"])
    assert "coxph_clinical" in stacking.candidate_configs(with_clinical, cohort)
    assert stacking.clinical_modalities(with_clinical, cohort) == ["clinical"]

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
    assert info["scale"] > 10 * stacking.MIN_SCALE
    mid = model.predict_survival(cohort, [float(np.median(cohort.time))])[:, 0]
    assert mid.max() - mid.min() > 0.01


def test_equal_weights_fallback_fits_one_common_scale():
    x, time, event = _simulated(60, 1)
    z = np.column_stack([x, x + np.random.default_rng(0).normal(size=len(x))])
    z = (z - z.mean(0)) / z.std(0)
    beta, how = stacking.equal_weights(z, time, event)
    (alone,), _ = stacking.nonnegative_cox(z.mean(axis=1, keepdims=True), time, event)
    assert beta == pytest.approx(np.full(z.shape[1], alone / z.shape[1])) and alone > 0.05
    assert "fitted" in how
    beta, how = stacking.equal_weights(z, time, np.zeros_like(event))
    assert beta.sum() == pytest.approx(stacking.MIN_SCALE) and "no event" in how


def test_too_small_a_training_part_names_it_and_what_to_change(make_cohort, make_config):
    from modalsurv.errors import DataError

    with pytest.raises(DataError, match=r"needs at least 10 patients to train on \(5 inner"
                                        r" folds\); this training part has 8 .*lower cv.folds"):  # fmt: skip
        StackedSurv(stack_config(make_config)).fit(make_cohort(n=8, seed=0))


def test_a_constant_candidate_kept_alone_is_recorded_and_said(make_cohort, make_config,
                                                               monkeypatch):  # fmt: skip
    """When nothing passes the screen, a constant score (C = 0.5 by ties) can be the best
    by C-index; fit_weights records that it was kept alone and constant, and the fit says
    so (was: the stack quietly predicted one curve for every patient)."""
    x, time, event = _simulated(80, 2)
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
