"""One optimisation step over all of a network's parameters at once.

Why: a ModalSurv network has ~50 small parameter tensors, so a step's gradient clipping
and AdamW update are ~50 tiny kernels each (a norm per tensor, an update per tensor), a
visible share of a 3-5 ms step on a CPU. Here every parameter becomes a view of one flat
buffer and every gradient a view of another (:class:`FlatParameters`): autograd
accumulates into the gradient views in place, the gradient norm is one reduction and the
fused AdamW update one kernel over the flat buffer. The update rule is AdamW's, element
for element; only the order of the sum inside the gradient norm differs (float rounding).
The network's modules, names and state dict are unchanged (its parameters are views).
"""

from __future__ import annotations

import torch
from torch import nn


class FlatParameters:
    """The trainable parameters of ``net`` as views of one buffer, gradients of another."""

    def __init__(self, net: nn.Module) -> None:
        self.params = [p for p in net.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the network has no trainable parameter")
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"flat parameters need one dtype and device; found {dtypes}, {devices}")
        first = self.params[0]
        total = sum(p.numel() for p in self.params)
        flat = torch.empty(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(flat)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                flat[offset : offset + n].copy_(p.reshape(-1))
                p.data = flat[offset : offset + n].view_as(p)
                p.grad = self.grad[offset : offset + n].view_as(p)
                offset += n
        self.flat = nn.Parameter(flat)
        self.flat.grad = self.grad

    def zero_grad(self) -> None:
        """Zero the gradients in place (never ``None``: the views must stay)."""
        self.grad.zero_()

    def release(self) -> None:
        """Give every parameter its own storage again (a copy of its view) and drop the
        gradient views. Why: the views sit at arbitrary offsets of the flat buffer, and CPU
        kernels round differently on memory aligned otherwise (a matrix-vector product's
        last bit), so a trained network kept in memory would predict a last bit away from
        the same weights loaded into a fresh network: a resumed run's folds, ``predict``."""
        with torch.no_grad():
            for p in self.params:
                p.grad = None
                p.data = p.detach().clone(memory_format=torch.contiguous_format)

    def detached(self) -> bool:
        """Whether autograd replaced a gradient view instead of accumulating into it (then
        the flat gradient is stale and :meth:`FusedStep.step` refuses to run)."""
        base = self.grad.untyped_storage().data_ptr()
        return any(p.grad is None or p.grad.untyped_storage().data_ptr() != base
                   for p in self.params)  # fmt: skip


class FusedStep:
    """zero_grad / clip / step over :class:`FlatParameters` with one fused AdamW (or Adam)."""

    def __init__(self, net: nn.Module, opt_cls: type[torch.optim.Optimizer], lr: float,
                 weight_decay: float) -> None:  # fmt: skip
        self.flat = FlatParameters(net)
        try:
            self.opt = opt_cls([self.flat.flat], lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):
            self.opt = opt_cls([self.flat.flat], lr=lr, weight_decay=weight_decay, foreach=True)

    def zero_grad(self) -> None:
        self.flat.zero_grad()

    def clip(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_([self.flat.flat], max_norm)

    def release(self) -> None:
        """After training: the parameters own their storage, as in a fresh network."""
        self.flat.release()

    def step(self) -> None:
        if self.flat.detached():
            raise RuntimeError("a gradient left the flat buffer; the fused step would ignore it")
        self.opt.step()
