"""Curves: S monotone from 1, step vs linear, RMST of a known distribution, risk score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalsurv.survival import curves as C

CUTS = np.array([0.0, 1.0, 2.0, 4.0])


def test_pmf_from_logits_numpy_and_torch_agree():
    logits = np.random.default_rng(0).normal(size=(5, 3)) * 10
    p_np = C.pmf_from_logits(logits)
    p_t = C.pmf_from_logits(torch.tensor(logits))
    assert isinstance(p_t, torch.Tensor)
    assert p_np.shape == (5, 4)
    np.testing.assert_allclose(p_np, p_t.numpy(), atol=1e-12)
    np.testing.assert_allclose(p_np.sum(1), 1.0)
    np.testing.assert_allclose(C.pmf_from_logits(np.zeros((1, 3))), [[0.25] * 4])


def test_survival_from_pmf_starts_at_one_and_decreases():
    pmf = C.pmf_from_logits(np.random.default_rng(1).normal(size=(20, 6)) * 3)
    s = C.survival_from_pmf(pmf)
    assert s.shape == (20, 7)
    np.testing.assert_allclose(s[:, 0], 1.0)
    assert np.all(np.diff(s, axis=1) <= 0) and np.all(s >= 0)
    np.testing.assert_allclose(s[:, -1], pmf[:, -1])
    s_t = C.survival_from_pmf(torch.tensor(pmf))
    np.testing.assert_allclose(s_t.numpy(), s)


def test_linear_and_step_interpolation():
    pmf = np.array([[0.2, 0.3, 0.4, 0.1]])  # S at cuts: 1, .8, .5, .1
    times = [0.0, 0.5, 1.0, 3.0, 4.0, 9.0]
    lin = C.survival_at(pmf, CUTS, times, "linear")[0]
    step = C.survival_at(pmf, CUTS, times, "step")[0]
    np.testing.assert_allclose(lin, [1.0, 0.9, 0.8, 0.3, 0.1, 0.1])
    np.testing.assert_allclose(step, [1.0, 1.0, 0.8, 0.5, 0.1, 0.1])
    grid = np.linspace(0, 6, 61)
    assert np.all(np.diff(C.survival_at(pmf, CUTS, grid)[0]) <= 1e-15)


def test_rmst_of_uniform_distribution():
    # all mass spread uniformly on (0, 4]: S(t) = 1 - t/4 under constant density per bin
    cuts = np.linspace(0, 4, 5)
    pmf = np.array([[0.25, 0.25, 0.25, 0.25, 0.0]])
    for tau in (0.5, 2.0, 3.3, 4.0):
        assert C.rmst(pmf, cuts, tau)[0] == pytest.approx(tau - tau**2 / 8)
    assert C.expected_time(pmf, cuts)[0] == pytest.approx(2.0)


def test_expected_time_is_rmst_at_last_cut_and_lower_bound():
    pmf = C.pmf_from_logits(np.random.default_rng(2).normal(size=(8, 3)))
    np.testing.assert_allclose(C.expected_time(pmf, CUTS), C.rmst(pmf, CUTS, CUTS[-1]))
    # with mass beyond the last cut, a longer horizon only adds area: S(last cut) = the mass
    # beyond it, held constant, so exactly that mass times the extra length
    extra = 10.0 - CUTS[-1]
    np.testing.assert_allclose(C.rmst(pmf, CUTS, 10.0), C.expected_time(pmf, CUTS)
                               + pmf[:, -1] * extra, rtol=0, atol=1e-12)  # fmt: skip
    assert extra > 0 and (pmf[:, -1] > 0).all()


def test_risk_and_cumulative_hazard():
    pmf = np.array([[0.2, 0.3, 0.4, 0.1], [0.7, 0.1, 0.1, 0.1]])
    risk = C.risk_at(pmf, CUTS, 1.0)
    np.testing.assert_allclose(risk, [0.2, 0.7])
    h = C.cumulative_hazard_at(pmf, CUTS, [0.0, 1.0])
    np.testing.assert_allclose(h, -np.log([[1.0, 0.8], [1.0, 0.3]]))
    dead = np.array([[1.0, 0.0, 0.0, 0.0]])
    assert np.isfinite(C.cumulative_hazard_at(dead, CUTS, [3.0])).all()


def test_bad_input():
    pmf = np.array([[0.2, 0.3, 0.4, 0.1]])
    with pytest.raises(ValueError, match=r"times\[1\] = -1.0"):
        C.survival_at(pmf, CUTS, [0.0, -1.0])
    with pytest.raises(ValueError, match="expected 4 values"):
        C.survival_at(pmf, CUTS[:3], [1.0])
    with pytest.raises(ValueError, match="interpolation"):
        C.survival_at(pmf, CUTS, [1.0], interpolation="cubic")
    with pytest.raises(ValueError, match="NaN"):
        C.rmst(np.array([[np.nan, 0.5, 0.5, 0.0]]), CUTS, 1.0)
    with pytest.raises(ValueError, match="cuts"):
        C.expected_time(pmf, [1.0, 2.0, 3.0, 4.0])


def test_risk_score_kinds():
    from modalsurv.survival.curves import expected_time, risk_at, risk_score

    rng = np.random.default_rng(0)
    pmf = rng.dirichlet(np.ones(6), size=20)
    cuts = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 10.0])
    np.testing.assert_array_equal(risk_score(pmf, cuts, 3.0), risk_at(pmf, cuts, 3.0))
    # restricted at the last cut: minus the expected time with the tail placed there
    np.testing.assert_allclose(risk_score(pmf, cuts, 3.0, "rmst"), -expected_time(pmf, cuts))
    # all mass in the first bin is the worst risk, all mass beyond the grid the best
    early, late = np.eye(6)[[0]], np.eye(6)[[5]]
    assert risk_score(early, cuts, 3.0, "rmst")[0] > risk_score(late, cuts, 3.0, "rmst")[0]
    with pytest.raises(ValueError, match="risk score"):
        risk_score(pmf, cuts, 3.0, "median")


def test_survival_never_exceeds_one_when_the_mass_rounds_above_it():
    """A softmax's mass sums to 1 only up to rounding: S(0) must still not exceed 1."""
    pmf = C.pmf_from_logits(np.random.default_rng(0).normal(size=(2000, 8)) * 2)
    assert (pmf.sum(1) > 1).any()  # the case this guards against occurs here
    s = C.survival_from_pmf(pmf)
    assert s.max() <= 1.0 and np.all(np.diff(s, axis=1) <= 0)
    assert C.survival_at(pmf, np.arange(9.0), [0.0, 0.5, 3.0]).max() <= 1.0
