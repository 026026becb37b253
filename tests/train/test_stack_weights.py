"""How the stack weighs its candidates (train.stack_weights): standardised out-of-fold
scores, the likelihood-ratio screen against lifelines, the penalised non-negative Cox fit
and its gradient, the fallback to equal weights."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.train import stack_weights
from modalsurv.train.stack_weights import fit_weights, standardise


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_candidates_get_no_weight(seed, simulate):
    rng = np.random.default_rng(100 + seed)
    x, time, event = simulate(600, seed)
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
    unscreened = stack_weights.nonnegative_cox(z, time, event, stack_weights.SHRINK)[0]
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


def _weak_cohort(simulate, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, time, event = simulate(n, seed)
    assert len(np.unique(time)) == n  # no tied times: Breslow = Efron = lifelines
    return x, time, event


def test_screen_statistic_is_the_likelihood_ratio_of_a_cox_fit(monkeypatch, simulate):
    """Without the ridge, the screen's statistic of a column is the likelihood-ratio test
    of a one-covariate Cox model against none (lifelines, 2 (loglik - null loglik)); a
    column associated the wrong way has coefficient 0 (non-negative) and statistic 0."""
    import pandas as pd
    from lifelines import CoxPHFitter

    monkeypatch.setattr(stack_weights, "RIDGE", 0.0)
    rng = np.random.default_rng(111)
    x, time, event = _weak_cohort(simulate, 80, 11)
    z = np.column_stack([x, 0.5 * x + rng.normal(size=len(x)), -x])
    tests = stack_weights.screen(z, time, event)
    for j in (0, 1):
        df = pd.DataFrame({"z": z[:, j], "T": time, "E": event})
        ref = CoxPHFitter().fit(df, "T", "E").log_likelihood_ratio_test().test_statistic
        assert tests[j]["lr"] == pytest.approx(ref, rel=1e-5)
        assert tests[j]["kept"] == (ref >= stack_weights.LR_THRESHOLD)
    assert tests[2]["lr"] == pytest.approx(0.0, abs=1e-8) and not tests[2]["kept"]


def test_penalised_objective_gradient_matches_finite_differences(simulate):
    """The analytic gradient L-BFGS-B is given must be the gradient of the loss it is
    given, shrinkage term included (beta with a nonzero mean, so the pull towards the
    mean differs from a pull towards 0)."""
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(104)
    x, time, event = _weak_cohort(simulate, 60, 4)
    z = np.column_stack([x, x + rng.normal(size=60), rng.normal(size=60)])
    beta = np.array([0.3, 0.8, 0.1])
    for shrink in (0.0, 20.0):
        f = stack_weights._neg_log_pl(z, time, event, shrink=shrink)
        numeric = approx_fprime(beta, lambda b, f=f: f(b)[0], 1e-7)
        np.testing.assert_allclose(f(beta)[1], numeric, rtol=1e-4, atol=1e-4)
    # the loss itself: the ridge and the shrinkage terms on top of the partial likelihood
    loglik = -stack_weights._neg_log_pl(z, time, event)(np.zeros(3))[0]
    order = np.argsort(time)
    eta = z @ beta
    lp = sum(eta[i] - np.log(np.exp(eta[time >= time[i]]).sum()) for i in order if event[i])
    assert loglik == pytest.approx(
        sum(-np.log((time >= time[i]).sum()) for i in order if event[i]))
    dev = beta - beta.mean()
    expect = -lp + 0.5 * stack_weights.RIDGE * beta @ beta + 0.5 * 20.0 * dev @ dev
    assert stack_weights._neg_log_pl(z, time, event, shrink=20.0)(beta)[0] == pytest.approx(expect)


def test_when_no_candidate_passes_the_screen_the_best_c_index_alone_is_kept(simulate):
    """No column reaches the threshold: the weight goes to the column with the highest
    out-of-fold C-index (lifelines' concordance, an independent count), at least
    ``MIN_SCALE``; every other column gets 0."""
    from lifelines.utils import concordance_index as lifelines_c

    rng = np.random.default_rng(105)
    x, time, event = _weak_cohort(simulate, 120, 5)
    z = np.column_stack([rng.normal(size=120), -x, x + 0.5 * rng.normal(size=120),
                         0.3 * x + rng.normal(size=120)])  # fmt: skip
    c = [lifelines_c(time, -z[:, j], event) for j in range(z.shape[1])]
    best = int(np.argmax(c))
    assert best == 2 and c[1] < 0.5  # the reversed column has the lowest C
    beta, record = fit_weights(z, time, event, threshold=1e9)
    assert not any(t["kept"] for t in record["screen"])
    assert beta[best] >= stack_weights.MIN_SCALE
    assert (np.delete(beta, best) == 0).all()
    alone, _ = stack_weights.nonnegative_cox(z[:, [best]], time, event)
    assert beta[best] == pytest.approx(max(alone[0], stack_weights.MIN_SCALE))
    # a lone column with the wrong sign (its Cox coefficient clips to 0) gets MIN_SCALE
    beta, _ = fit_weights(z[:, [1]], time, event, threshold=1e9)
    assert beta.tolist() == [stack_weights.MIN_SCALE]


def test_kept_candidates_with_a_tiny_total_weight_are_rescaled_to_min_scale(simulate):
    """Candidates that pass the screen but whose coefficients sum below ``MIN_SCALE``
    (a tiny-scale signal, let through by a threshold below 0) are scaled up together so
    the coefficients sum to ``MIN_SCALE``, keeping their ratios."""
    rng = np.random.default_rng(106)
    x, time, event = _weak_cohort(simulate, 100, 6)
    z = 1e-6 * np.column_stack([x, x + rng.normal(size=100), rng.normal(size=100)])
    raw, _ = stack_weights.nonnegative_cox(z, time, event, stack_weights.SHRINK)
    assert 0 < raw.sum() < stack_weights.MIN_SCALE / 5  # the unscaled fit: far below MIN_SCALE
    beta, record = fit_weights(z, time, event, threshold=-1.0)
    assert all(t["kept"] for t in record["screen"])
    assert beta.sum() == pytest.approx(stack_weights.MIN_SCALE, rel=1e-9)
    np.testing.assert_allclose(beta, raw * stack_weights.MIN_SCALE / raw.sum(), rtol=1e-9)


def test_equal_weights_fallback_fits_one_common_scale(simulate):
    x, time, event = simulate(60, 1)
    z = np.column_stack([x, x + np.random.default_rng(0).normal(size=len(x))])
    z = (z - z.mean(0)) / z.std(0)
    beta, how = stack_weights.equal_weights(z, time, event)
    (alone,), _ = stack_weights.nonnegative_cox(z.mean(axis=1, keepdims=True), time, event)
    assert beta == pytest.approx(np.full(z.shape[1], alone / z.shape[1])) and alone > 0.05
    assert "fitted" in how
    beta, how = stack_weights.equal_weights(z, time, np.zeros_like(event))
    assert beta.sum() == pytest.approx(stack_weights.MIN_SCALE) and "no event" in how
