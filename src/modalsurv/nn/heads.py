"""The output layer: fused representation → the survival family's outputs.

The family (``survival.family``: DeepHit, Cox, logistic hazard, …; ``model.head``) decides
the width and whether there is a bias (Cox's partial likelihood is shift-invariant, so its
log-risk layer has none), and how per-modality outputs are combined for late fusion
(``combine``). There is one head class; a new family needs no change here.
"""

from __future__ import annotations

from torch import Tensor, nn

from modalsurv.config import ModelConfig
from modalsurv.survival.deephit import logits_from_pmf, pmf_from_logits
from modalsurv.survival.family import SurvivalFamily, get_family

__all__ = ["OutputHead", "logits_from_pmf", "pmf_from_logits"]


class OutputHead(nn.Module):
    """Linear → ``family.n_outputs(n_bins)`` outputs (bias as the family says)."""

    def __init__(self, in_dim: int, cfg: ModelConfig, family: SurvivalFamily | None = None
                 ) -> None:  # fmt: skip
        super().__init__()
        self.family = family or get_family(cfg.head)
        self.out_dim = self.family.n_outputs(cfg.n_bins)
        self.linear = nn.Linear(in_dim, self.out_dim, bias=self.family.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)

    def combine(self, outputs: Tensor, present: Tensor) -> Tensor:
        """Late fusion: B×M×out_dim per-modality outputs + B×M presence → B×out_dim."""
        return self.family.combine(outputs, present)
