"""DeepHit (Lee et al. 2018), single risk: the network outputs K logits and, with a zero
column appended (pycox convention), ``softmax([logits, 0])`` is a PMF over the K time bins
plus the mass beyond the last cut. Loss: ``alpha`` × likelihood + (1 − alpha) × ranking
(``losses.deephit_loss``). Seed-ensemble members and late-fused modalities are averaged as
PMFs (a mixture), returned as the logits of that PMF so the loss applies unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modalsurv.survival import curves, losses
from modalsurv.survival.family import Fitted, SurvivalFamily, masked_mean, register


def pmf_from_logits(logits: Tensor) -> Tensor:
    """B×K logits → B×(K+1) PMF, ``softmax([logits, 0])`` (pycox convention)."""
    return torch.softmax(F.pad(logits, (0, 1)), dim=-1)


def logits_from_pmf(pmf: Tensor, eps: float = 1e-8) -> Tensor:
    """Inverse of :func:`pmf_from_logits`: ``logits_k = log pmf_k - log pmf_K``.

    Probabilities are clamped at ``eps`` so an empty bin gives a large negative, finite logit.
    """
    logp = torch.log(pmf.clamp_min(eps))
    return logp[..., :-1] - logp[..., -1:]


@register
class DeepHit(SurvivalFamily):
    name = "deephit"

    def loss(self, out: Tensor, time: Tensor, event: Tensor, bin_index: Tensor | None,
             **params: Any) -> Tensor:  # fmt: skip
        assert bin_index is not None, "DeepHit training needs bin indices"
        # the same loss, its gradient in closed form: one autograd node (losses._DeepHitMean)
        return losses.deephit_loss_fused(out, bin_index, event, alpha=params.get("alpha", 0.2),
                                         sigma=params.get("sigma", 0.1))  # fmt: skip

    def mix(self, outs: Tensor) -> Tensor:
        return logits_from_pmf(pmf_from_logits(outs).mean(dim=0))

    def combine(self, outs: Tensor, present: Tensor) -> Tensor:
        """Average the PMFs of present modalities; a sample with none gets zero logits."""
        logits = logits_from_pmf(masked_mean(pmf_from_logits(outs), present))
        return torch.where(present.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))

    def pmf(self, out: np.ndarray, cuts: np.ndarray, fitted: Fitted) -> np.ndarray:
        return np.asarray(curves.pmf_from_logits(out), dtype=np.float64)
