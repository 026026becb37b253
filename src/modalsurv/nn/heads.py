"""Output heads: fused representation → survival model outputs.

``deephit``: K logits; with the pycox convention a zero column is appended so that
``softmax([logits, 0])`` is a PMF over the K bins plus the mass beyond the last bin.
``cox``: one log-risk (no bias: the partial likelihood is invariant to a shift).

Each head also says how to combine per-modality outputs for late fusion (``combine``):
DeepHit averages PMFs, Cox averages log-risks. Add a head with one class and one line in
:data:`HEADS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalsurv.config import ModelConfig
from modalsurv.nn.masking import masked_mean


def pmf_from_logits(logits: Tensor) -> Tensor:
    """B×K logits → B×(K+1) PMF, ``softmax([logits, 0])`` (pycox convention)."""
    return torch.softmax(F.pad(logits, (0, 1)), dim=-1)


def logits_from_pmf(pmf: Tensor, eps: float = 1e-8) -> Tensor:
    """Inverse of :func:`pmf_from_logits`: ``logits_k = log pmf_k - log pmf_K``.

    Probabilities are clamped at ``eps`` so an empty bin gives a large negative, finite logit.
    """
    logp = torch.log(pmf.clamp_min(eps))
    return logp[..., :-1] - logp[..., -1:]


class Head(nn.Module):
    """Base class; ``out_dim`` is the width of ``forward``'s output."""

    out_dim: int

    def combine(self, outputs: Tensor, present: Tensor) -> Tensor:
        """Late fusion: B×M×out_dim per-modality outputs + B×M presence → B×out_dim."""
        raise NotImplementedError


class DeepHitHead(Head):
    """Linear → ``n_bins`` logits."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.out_dim = cfg.n_bins
        self.linear = nn.Linear(in_dim, cfg.n_bins)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)

    def combine(self, outputs: Tensor, present: Tensor) -> Tensor:
        """Average the PMFs of present modalities and return the logits of that PMF, so the
        DeepHit loss applies unchanged. A sample with no modality gets zero logits."""
        pmf = masked_mean(pmf_from_logits(outputs), present)
        logits = logits_from_pmf(pmf)
        return torch.where(present.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))


class CoxHead(Head):
    """Linear → 1 log-risk, without bias."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.out_dim = 1
        self.linear = nn.Linear(in_dim, 1, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)

    def combine(self, outputs: Tensor, present: Tensor) -> Tensor:
        """Mean log-risk over present modalities (a geometric mean of hazard ratios)."""
        return masked_mean(outputs, present)


HEADS: dict[str, type[Head]] = {
    "deephit": DeepHitHead,
    "cox": CoxHead,
}


def get_head(name: str) -> type[Head]:
    """Look a head class up by name; unknown names raise a ValueError listing the known ones."""
    try:
        return HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; known heads: {sorted(HEADS)}") from None
