"""Discrete-time logistic hazard (Kvamme & Borgan 2019; pycox ``LogisticHazard``): the
network outputs K logits, the hazard of bin k is ``sigmoid(logits_k)``, the survival
``S(cuts[k]) = prod_{j < k} (1 - h_j)`` and the PMF ``h_k S(cuts[k])`` plus the mass
beyond the last cut ``S(cuts[K])``. Loss: the discrete-time negative log-likelihood
(``losses.nll_logistic_hazard``). Members and late-fused modalities are mixed as PMFs
(a mixture), returned as the hazard logits of the mixture."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from modalsurv.survival import losses
from modalsurv.survival.family import Fitted, SurvivalFamily, masked_mean, register


def pmf_from_hazard_logits(logits: Tensor) -> Tensor:
    """B×K hazard logits → B×(K+1) PMF (bins, then the mass beyond the last cut)."""
    log_surv = torch.nn.functional.logsigmoid(-logits).cumsum(dim=-1)  # log S(cuts[k+1])
    surv = torch.exp(log_surv)
    before = torch.cat([torch.ones_like(surv[..., :1]), surv[..., :-1]], dim=-1)
    return torch.cat([torch.sigmoid(logits) * before, surv[..., -1:]], dim=-1)


def hazard_logits_from_pmf(pmf: Tensor, eps: float = 1e-7) -> Tensor:
    """Inverse of :func:`pmf_from_hazard_logits`: ``h_k = pmf_k / S(cuts[k])``."""
    still = pmf.flip(-1).cumsum(-1).flip(-1)  # S(cuts[k]) = mass at bin k or later
    h = (pmf[..., :-1] / still[..., :-1].clamp_min(eps)).clamp(eps, 1 - eps)
    return torch.log(h) - torch.log1p(-h)


@register
class LogisticHazard(SurvivalFamily):
    name = "logistic_hazard"

    def loss(self, out: Tensor, time: Tensor, event: Tensor, bin_index: Tensor | None,
             **params: Any) -> Tensor:  # fmt: skip
        assert bin_index is not None, "logistic-hazard training needs bin indices"
        return losses.nll_logistic_hazard(out, bin_index, event)

    def mix(self, outs: Tensor) -> Tensor:
        return hazard_logits_from_pmf(pmf_from_hazard_logits(outs).mean(dim=0))

    def combine(self, outs: Tensor, present: Tensor) -> Tensor:
        logits = hazard_logits_from_pmf(masked_mean(pmf_from_hazard_logits(outs), present))
        return torch.where(present.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))

    def pmf(self, out: np.ndarray, cuts: np.ndarray, fitted: Fitted) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(out, dtype=np.float64))
            return pmf_from_hazard_logits(t).numpy()
