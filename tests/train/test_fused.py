"""One optimisation step over a flat parameter buffer (train.fused): AdamW's update, one
gradient norm, the network's parameters and state dict unchanged in shape and name."""

from __future__ import annotations

import copy

import pytest
import torch

from modalsurv.train.fused import FusedStep


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 3))  # fmt: skip


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_same_updates_as_per_tensor_adamw_with_clipping(opt_cls):
    net, ref = _net(), _net()
    names = [k for k, _ in net.named_parameters()]
    step = FusedStep(net, opt_cls, 1e-2, 1e-3)
    opt = opt_cls(ref.parameters(), lr=1e-2, weight_decay=1e-3)
    x = torch.randn(20, 5)
    for _ in range(6):
        step.zero_grad()
        net(x).pow(2).sum().backward()
        step.clip(1.0)
        step.step()
        opt.zero_grad()
        ref(x).pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [k for k, _ in net.named_parameters()] == names
    state = copy.deepcopy(net.state_dict())
    net.load_state_dict(state)  # copies into the views: the flat buffer stays the storage
    assert not step.flat.detached()


def test_a_replaced_gradient_is_refused():
    net = _net()
    step = FusedStep(net, torch.optim.AdamW, 1e-2, 0.0)
    next(net.parameters()).grad = torch.zeros_like(next(net.parameters()))
    with pytest.raises(RuntimeError, match="flat buffer"):
        step.step()


def test_release_gives_each_parameter_its_own_storage():
    """After training the parameters leave the flat buffer (``release``): each owns its
    storage from offset 0, as in a network built afresh and loaded, since kernels may round
    differently on memory aligned otherwise; the values are unchanged."""
    net = _net()
    step = FusedStep(net, torch.optim.AdamW, 1e-2, 0.0)
    step.zero_grad()
    net(torch.randn(4, 5)).sum().backward()
    step.step()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step.release()
    params = list(net.parameters())
    assert all(p.storage_offset() == 0 and p.grad is None for p in params)
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_update_rule_equals_torch_over_many_steps_with_identical_gradients(opt_cls):
    """Fed the same gradients, the flat step follows torch's per-tensor optimiser (weight
    decay on every parameter, as make_optimizer does) and clip_grad_norm_ over 200 steps;
    forward-pass rounding is taken out, so only the update rule is compared."""
    net, ref = _net(), _net()
    step = FusedStep(net, opt_cls, 3e-3, 1e-2)
    opt = opt_cls(ref.parameters(), lr=3e-3, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(5)
    for i in range(200):
        step.zero_grad()
        opt.zero_grad()
        scale = 1e-3 if i % 3 == 0 else 0.1  # the clip binds on some steps only
        for a, b in zip(net.parameters(), ref.parameters()):
            g = torch.randn(a.shape, generator=gen) * scale
            a.grad.copy_(g)
            b.grad = g.clone()
        step.clip(0.5)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        step.step()
        opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
