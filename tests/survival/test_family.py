"""Survival families: each owns its loss, curves, risk and how outputs are combined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalsurv.survival import curves, losses
from modalsurv.survival.family import FAMILIES, family_names, get_family
from modalsurv.survival.logistic_hazard import hazard_logits_from_pmf, pmf_from_hazard_logits


def test_registry_holds_the_three_families():
    assert family_names() == ["cox", "deephit", "logistic_hazard"]
    assert set(FAMILIES) == set(family_names())
    assert get_family("cox").n_outputs(30) == 1 and get_family("deephit").n_outputs(30) == 30
    assert not get_family("cox").bias and get_family("logistic_hazard").bias


def test_losses_are_the_documented_ones():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(8, 5, generator=g)
    idx = torch.randint(0, 5, (8,), generator=g)
    ev = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.float32)
    t = torch.rand(8, generator=g) + 0.1
    dh = get_family("deephit").loss(out, t, ev, idx, alpha=0.3, sigma=0.2)
    torch.testing.assert_close(dh, losses.deephit_loss(out, idx, ev, alpha=0.3, sigma=0.2))
    lh = get_family("logistic_hazard").loss(out, t, ev, idx)
    torch.testing.assert_close(lh, losses.nll_logistic_hazard(out, idx, ev))
    cx = get_family("cox").loss(out[:, :1], t, ev, None, ties="breslow")
    torch.testing.assert_close(cx, losses.cox_loss(out[:, 0], t, ev, ties="breslow"))


def test_logistic_hazard_pmf_matches_a_hand_computation():
    logits = np.random.default_rng(1).normal(size=(3, 4))
    pmf = get_family("logistic_hazard").pmf(logits, np.linspace(0, 4, 5), {})
    h = 1 / (1 + np.exp(-logits))
    for i in range(3):
        s = 1.0
        for k in range(4):
            assert pmf[i, k] == pytest.approx(h[i, k] * s, rel=1e-12)
            s *= 1 - h[i, k]
        assert pmf[i, 4] == pytest.approx(s, rel=1e-12)
    back = hazard_logits_from_pmf(pmf_from_hazard_logits(torch.as_tensor(logits)))
    torch.testing.assert_close(back, torch.as_tensor(logits), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["deephit", "logistic_hazard", "cox"])
def test_mixing_members_is_a_mixture_of_their_curves(name):
    fam = get_family(name)
    g = torch.Generator().manual_seed(2)
    k = fam.n_outputs(6)
    outs = torch.randn(3, 4, k, generator=g, dtype=torch.float64)
    mixed = fam.mix(outs).numpy()
    cuts = np.linspace(0, 6, 7)
    if name == "cox":  # the mean log-risk (a geometric mean of hazard ratios)
        np.testing.assert_allclose(mixed, outs.mean(0).numpy())
        return
    pmfs = np.stack([fam.pmf(o.numpy(), cuts, {}) for o in outs])
    np.testing.assert_allclose(fam.pmf(mixed, cuts, {}), pmfs.mean(0), atol=1e-6)


@pytest.mark.parametrize("name", ["deephit", "logistic_hazard", "cox"])
def test_late_fusion_combine_ignores_absent_modalities(name):
    fam = get_family(name)
    k = fam.n_outputs(5)
    outs = torch.randn(2, 3, k, dtype=torch.float64)
    present = torch.tensor([[True, False, True], [False, False, False]])
    both = fam.combine(outs, present)
    alone = fam.combine(outs[:, [0, 2]], present[:, [0, 2]])
    torch.testing.assert_close(both[0], alone[0])
    assert torch.equal(both[1], torch.zeros(k, dtype=torch.float64))


def test_cox_fits_a_breslow_baseline_and_its_curves_are_proportional():
    fam = get_family("cox")
    rng = np.random.default_rng(3)
    time, event = rng.exponential(5, 50) + 0.1, rng.random(50) < 0.7
    eta = rng.normal(size=(50, 1))
    fitted = fam.fit_after(time, event, eta)
    assert set(fitted) == {"breslow/time", "breslow/cumhaz", "cox/centre"}
    s = fam.survival(eta[:5], np.linspace(0, 10, 11), np.array([2.0, 4.0]), fitted)
    np.testing.assert_allclose(np.log(s[:, 0]) / np.log(s[0, 0]), np.exp(eta[:5, 0] - eta[0, 0]))
    risk = fam.risk(eta, np.linspace(0, 10, 11), 3.0, "survival", fitted)
    np.testing.assert_allclose(risk, eta[:, 0] - eta.mean(), atol=1e-15)  # centred
    ref = fam.reference_survival(risk[:5], 3.0, [fitted])
    np.testing.assert_allclose(ref, fam.survival(eta[:5], None, np.array([3.0]), fitted)[:, 0])


@pytest.mark.parametrize("name", ["deephit", "logistic_hazard"])
def test_discrete_risk_and_ensemble_risk(name):
    fam = get_family(name)
    rng = np.random.default_rng(4)
    cuts = [np.linspace(0, 10, 7), np.linspace(0, 12, 7)]
    outs = [rng.normal(size=(5, 6)), rng.normal(size=(5, 6))]
    r = fam.risk(outs[0], cuts[0], 4.0, "survival", {})
    np.testing.assert_allclose(r, 1 - curves.survival_at(fam.pmf(outs[0], cuts[0], {}), cuts[0],
                                                         [4.0])[:, 0])  # fmt: skip
    ens = fam.ensemble_risk(outs, cuts, [{}, {}], 4.0, "survival")
    mix = np.mean([curves.survival_at(fam.pmf(o, c, {}), c, [4.0])[:, 0]
                   for o, c in zip(outs, cuts)], axis=0)  # fmt: skip
    np.testing.assert_allclose(ens, 1 - mix)
    rm = fam.ensemble_risk(outs, cuts, [{}, {}], 4.0, "rmst")
    np.testing.assert_allclose(rm, -np.mean([curves.rmst(fam.pmf(o, c, {}), c, 11.0)
                                             for o, c in zip(outs, cuts)], axis=0))  # fmt: skip


def test_cox_centring_changes_no_curve_and_removes_member_offsets():
    """The partial likelihood cannot see a constant in a log-risk: two seed members that
    are the same model up to an offset must predict the same risks and curves."""
    from modalsurv.survival.cox import breslow, breslow_survival

    fam = get_family("cox")
    rng = np.random.default_rng(4)
    time, event = rng.exponential(5, 60) + 0.1, rng.random(60) < 0.6
    eta = rng.normal(size=(60, 1))
    members = [eta + 0.5, eta - 0.5, eta + 3.0]
    mix = np.mean(members, axis=0)
    fitted = fam.fit_after(time, event, mix, members)
    grid = np.array([1.0, 3.0, 6.0])
    # the curves are those of the uncentred Breslow fit
    t, h = breslow(time, event, mix[:, 0])
    np.testing.assert_allclose(fam.survival(mix, None, grid, fitted),
                               breslow_survival(t, h, mix[:, 0], grid), rtol=1e-12)
    # each member on its own training mean: identical members, whatever their offsets
    own = [fam.member_fitted(fitted, k) for k in range(3)]
    risks = fam.member_risks(members, [None] * 3, own, 3.0, "survival")
    np.testing.assert_allclose(risks - risks[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(risks.mean(0), fam.risk(mix, None, 3.0, "survival", fitted),
                               atol=1e-12)  # still averaging to the model's risk
    curves = [fam.survival(o, None, grid, f) for o, f in zip(members, own, strict=True)]
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-12)
    # a model saved before the centre existed reads as uncentred
    old = {"breslow/time": t, "breslow/cumhaz": h}
    np.testing.assert_array_equal(fam.risk(mix, None, 3.0, "survival", old), mix[:, 0])
    assert fam.member_fitted(old, 1) is old


def test_breslow_survival_of_an_overflowing_risk_is_a_curve_not_nan():
    """exp(eta) = inf times H0 = 0 (before the first event) was NaN: one patient with a
    far-out value (a unit error) stopped the whole run with "pmf contains NaN"."""
    from modalsurv.survival.cox import breslow, breslow_survival

    base_t, base_h = breslow(np.array([1.0, 2.0, 3.0]), np.array([True, False, True]),
                             np.zeros(3))  # fmt: skip
    times = np.array([0.0, 0.5, 1.0, 2.5, 3.0])
    s = breslow_survival(base_t, base_h, np.array([0.0, 800.0]), times)
    assert np.isfinite(s).all()
    np.testing.assert_array_equal(s[1], [1.0, 1.0, 0.0, 0.0, 0.0])
    assert base_t.tolist() == [1.0, 3.0]  # event times; H0 is a step function
    h = base_h
    np.testing.assert_allclose(s[0], np.exp(-np.array([0.0, 0.0, h[0], h[0], h[1]])))
