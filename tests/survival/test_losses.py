"""Losses equal pycox / torchsurv on random inputs, stay finite on edge batches, and scale
in memory as O(B K)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalsurv.survival import losses as L

SETTINGS = settings(max_examples=40, deadline=None)


def _pycox():
    """pycox's loss and rank-matrix modules. Only these submodules are imported: the package
    top level may fail on SciPy >= 1.14 (``scipy.integrate.simps`` was removed); if even
    these fail for that reason, alias ``simps`` to ``simpson`` before importing."""
    pytest.importorskip("pycox")
    try:
        from pycox.models import data, loss
    except ImportError:
        import scipy.integrate

        scipy.integrate.simps = scipy.integrate.simpson  # type: ignore[attr-defined]
        from pycox.models import data, loss
    return loss, data


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # pycox builds float32 helpers with the default
    yield
    torch.set_default_dtype(old)


@st.composite
def discrete_batch(draw):
    b = draw(st.integers(1, 40))
    k = draw(st.integers(1, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(b, k, generator=g, dtype=torch.float64) * draw(st.floats(0.1, 3.0))
    idx = torch.randint(0, k, (b,), generator=g)
    event = (torch.rand(b, generator=g, dtype=torch.float64) < draw(st.floats(0.0, 1.0)))
    return logits, idx, event.to(torch.float64)


@SETTINGS
@given(discrete_batch(), st.floats(0.0, 1.0), st.floats(0.05, 1.0),
       st.sampled_from(["mean", "sum"]))
def test_deephit_equals_pycox_float64(batch, alpha, sigma, reduction):
    loss, data = _pycox()
    logits, idx, event = batch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rank = torch.tensor(data.pair_rank_mat(idx.numpy(), event.numpy()), dtype=torch.float64)
        ref = loss.DeepHitSingleLoss(alpha, sigma, reduction)(logits, idx, event, rank)
    finally:
        torch.set_default_dtype(old)
    got = L.deephit_loss(logits, idx, event, alpha, sigma, reduction)
    assert float(got) == pytest.approx(float(ref), abs=1e-9, rel=1e-9)


def test_deephit_equals_pycox_float32():
    loss, data = _pycox()
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        logits = torch.randn(64, 30, generator=g)
        idx = torch.randint(0, 30, (64,), generator=g)
        event = (torch.rand(64, generator=g) < 0.5).float()
        rank = torch.tensor(data.pair_rank_mat(idx.numpy(), event.numpy()))
        ref = loss.DeepHitSingleLoss(0.2, 0.1)(logits, idx, event, rank)
        got = L.deephit_loss(logits, idx, event, 0.2, 0.1)
        assert float(got) == pytest.approx(float(ref), abs=1e-6, rel=1e-6)


def test_deephit_gradient_equals_pycox(float64):
    loss, data = _pycox()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 8, generator=g, requires_grad=True)
    idx = torch.randint(0, 8, (50,), generator=g)
    event = (torch.rand(50, generator=g) < 0.6).double()
    rank = torch.tensor(data.pair_rank_mat(idx.numpy(), event.numpy()))
    (g_ref,) = torch.autograd.grad(loss.DeepHitSingleLoss(0.3, 0.2)(logits, idx, event, rank),
                                   logits)
    (g_got,) = torch.autograd.grad(L.deephit_loss(logits, idx, event, 0.3, 0.2), logits)
    torch.testing.assert_close(g_got, g_ref, atol=1e-10, rtol=1e-8)


def test_deephit_none_reduction_is_per_patient():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 6, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 6, (30,), generator=g)
    event = torch.rand(30, generator=g) < 0.5
    per = L.deephit_loss(logits, idx, event, reduction="none")
    assert per.shape == (30,)
    assert float(per.mean()) == pytest.approx(float(L.deephit_loss(logits, idx, event)))
    assert float(per.sum()) == pytest.approx(float(L.deephit_loss(logits, idx, event,
                                                                  reduction="sum")))


@pytest.mark.parametrize(("b", "events"), [(1, [1.0]), (1, [0.0]), (5, [0.0] * 5)])
def test_deephit_edge_batches_are_finite(b, events):
    logits = torch.randn(b, 4, requires_grad=True)
    out = L.deephit_loss(logits, torch.zeros(b, dtype=torch.long), torch.tensor(events))
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(logits.grad).all()


def test_deephit_small_sigma_and_extreme_logits_stay_finite():
    logits = torch.tensor([[40.0, -40.0, 0.0], [-40.0, 40.0, 0.0], [0.0, 0.0, 50.0]],
                          requires_grad=True)
    out = L.deephit_loss(logits, torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0, 0.0]),
                         sigma=0.05)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("fn", ["deephit_loss", "deephit_loss_fused"])
@pytest.mark.parametrize("sigma", [0.0116, 0.0114, 0.01, 0.005])
def test_deephit_ranking_at_a_tiny_sigma_is_the_pair_formula(fn, sigma):
    """A patient certain of its early event beside one that outlives the bin with F near 0:
    the column sum shifted by the batch's largest CDF underflowed float32 below sigma ~0.0115
    (the pair was dropped, or inflated by e^(1/sigma - 87), with NaN gradients). The only
    pair that counts is exp(0): the ranking loss is 1/9 for every sigma."""
    logits = torch.tensor([[-30.0, 0.0, 0.0], [-30.0, 0.0, 0.0], [30.0, 0.0, 0.0]],
                          requires_grad=True)  # fmt: skip
    out = getattr(L, fn)(logits, torch.tensor([0, 2, 0]), torch.tensor([1.0, 0.0, 1.0]),
                         alpha=0.0, sigma=sigma)  # fmt: skip
    (grad,) = torch.autograd.grad(out, logits)
    assert float(out) == pytest.approx(1 / 9, rel=1e-6)
    assert torch.isfinite(grad).all()


def test_deephit_memory_is_linear_in_batch():
    # 20 000 x 20 000 float32 would be 1.6 GB (and B x B x K far more); O(B K) is ~2 MB
    b, k = 20_000, 30
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(b, k, generator=g)
    idx = torch.randint(0, k, (b,), generator=g)
    event = (torch.rand(b, generator=g) < 0.5).float()
    assert torch.isfinite(L.deephit_loss(logits, idx, event))


def test_discrete_losses_reject_bad_indices():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"bin_index\[1\] = 4"):
        L.deephit_loss(logits, torch.tensor([0, 4, 1]), torch.ones(3))
    with pytest.raises(ValueError, match=r"bin_index\[2\] = -1"):
        L.nll_logistic_hazard(logits, torch.tensor([0, 1, -1]), torch.ones(3))
    with pytest.raises(ValueError, match="mismatched lengths"):
        L.deephit_loss(logits, torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        L.deephit_loss(logits, torch.tensor([0, 1, 2]), torch.ones(3), reduction="avg")


@SETTINGS
@given(discrete_batch())
def test_logistic_hazard_equals_pycox(batch):
    loss, _ = _pycox()
    logits, idx, event = batch
    ref = loss.nll_logistic_hazard(logits, idx, event)
    assert float(L.nll_logistic_hazard(logits, idx, event)) == pytest.approx(float(ref),
                                                                             abs=1e-10)


# --------------------------------------------------------------------------------- Cox
@st.composite
def cox_batch(draw, tied: bool):
    b = draw(st.integers(2, 40))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    eta = torch.randn(b, generator=g) * draw(st.floats(0.1, 3.0))
    event = torch.rand(b, generator=g) < draw(st.floats(0.3, 1.0))
    event[0] = True
    if tied:  # integer times; force one tied pair of events
        time = torch.randint(1, 5, (b,), generator=g).float()
        event[1] = True
        time[1] = time[0]
    else:
        time = torch.randperm(b, generator=g).float() + 1.0
    return eta, time, event


def _torchsurv_cox(eta, time, event, ties, reduction):
    cox = pytest.importorskip("torchsurv.loss.cox")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cox.neg_partial_log_likelihood(eta, event, time, ties_method=ties,
                                              reduction=reduction)


@SETTINGS
@given(cox_batch(tied=False), st.sampled_from(["efron", "breslow"]))
def test_cox_without_ties_equals_torchsurv(batch, ties):
    eta, time, event = batch
    for red in ("mean", "sum"):
        ref = _torchsurv_cox(eta, time, event, ties, red)
        got = L.cox_loss(eta, time, event, ties=ties, reduction=red)
        assert float(got) == pytest.approx(float(ref), abs=1e-6, rel=1e-6)


@SETTINGS
@given(cox_batch(tied=True), st.sampled_from(["efron", "breslow"]))
def test_cox_with_ties_equals_torchsurv_sum(batch, ties):
    eta, time, event = batch
    ref = _torchsurv_cox(eta, time, event, ties, "sum")
    got = L.cox_loss(eta, time, event, ties=ties, reduction="sum")
    assert float(got) == pytest.approx(float(ref), abs=1e-6, rel=1e-6)
    mean = L.cox_loss(eta, time, event, ties=ties)
    assert float(mean) == pytest.approx(float(got) / int(event.sum()), rel=1e-6)


def test_cox_efron_hand_computed():
    eta = torch.tensor([0.1, 0.5, -0.3, 0.2, 0.0], dtype=torch.float64)
    time = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    event = torch.tensor([1, 1, 1, 0, 1])
    e = eta.exp().tolist()
    d1, t1 = sum(e), e[0] + e[1]
    ll = (eta[0] + eta[1] - np.log(d1) - np.log(d1 - 0.5 * t1)
          + eta[2] - np.log(e[2] + e[3] + e[4]) + eta[4] - np.log(e[4]))
    assert float(L.cox_loss(eta, time, event, reduction="sum")) == pytest.approx(-float(ll))


def test_cox_edge_cases():
    eta = torch.randn(4, requires_grad=True)
    out = L.cox_loss(eta, torch.arange(1.0, 5.0), torch.zeros(4))
    out.backward()
    assert float(out.detach()) == 0.0
    assert torch.equal(eta.grad, torch.zeros(4))
    one = L.cox_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1]))
    assert float(one) == pytest.approx(0.0)
    big = L.cox_loss(torch.tensor([500.0, 0.0]), torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))
    assert float(big) == pytest.approx(0.0, abs=1e-4)  # each event alone in its risk set
    tied = L.cox_loss(torch.tensor([300.0, -300.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]),
                      torch.tensor([1, 1, 0]))
    assert torch.isfinite(tied)
    with pytest.raises(ValueError, match="ties"):
        L.cox_loss(eta, torch.arange(1.0, 5.0), torch.ones(4), ties="exact")
    with pytest.raises(ValueError, match="mismatched lengths"):
        L.cox_loss(eta, torch.arange(1.0, 4.0), torch.ones(4))


@pytest.mark.parametrize(("b", "k", "alpha", "sigma"),
                         [(16, 30, 0.2, 0.1), (5, 4, 0.5, 1.0), (40, 10, 1.0, 0.5), (1, 3, 0.0, 0.1)])
def test_fused_deephit_gradient_equals_autograd(b, k, alpha, sigma):
    from modalsurv.survival.losses import deephit_loss, deephit_loss_fused

    gen = torch.Generator().manual_seed(b + k)
    logits = (torch.randn(b, k, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    idx = torch.randint(0, k, (b,), generator=gen)
    event = torch.rand(b, generator=gen) < 0.5
    ref = deephit_loss(logits, idx, event, alpha, sigma)
    (g_ref,) = torch.autograd.grad(ref, logits)
    out = deephit_loss_fused(logits, idx, event, alpha, sigma)
    (g,) = torch.autograd.grad(out, logits)
    assert float(out.detach()) == float(ref.detach())
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    tied = torch.zeros(b, k, dtype=torch.float64, requires_grad=True)  # every logit the max
    (g0,) = torch.autograd.grad(deephit_loss(tied, idx, event, alpha, sigma), tied)
    (g1,) = torch.autograd.grad(deephit_loss_fused(tied, idx, event, alpha, sigma), tied)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12)
