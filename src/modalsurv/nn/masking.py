"""NaN-free masked reductions shared by attention pooling and fusion.

A missing modality or a padded tile is a ``False`` in a mask. Plain ``softmax`` over a row
whose entries are all ``-inf`` returns NaN, and ``0 * NaN`` is NaN, so every helper here
zeroes with ``torch.where`` (never by multiplication) and gives an all-masked row exact zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the ``True`` entries of ``mask`` along ``dim``.

    Masked entries get exactly zero weight; a row with no ``True`` entry is all zeros (not
    NaN), and its gradient is zero. ``mask`` must broadcast to ``scores``.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, float("-inf"))
    has_any = mask.any(dim=dim, keepdim=True)
    # rows with nothing valid: softmax over finite zeros, then zeroed below
    filled = torch.where(has_any, filled, torch.zeros_like(filled))
    weights = torch.softmax(filled, dim=dim)
    return torch.where(mask, weights, torch.zeros_like(weights))


def masked_mean(z: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``z`` (B×M×H) over the ``True`` slots of ``mask`` (B×M); zeros if none."""
    zeroed = torch.where(mask.unsqueeze(-1), z, torch.zeros_like(z))
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
    return zeroed.sum(dim=1) / count


def weighted_sum(z: Tensor, weights: Tensor) -> Tensor:
    """``sum_m weights[b, m] * z[b, m]`` for B×M weights and B×M×H embeddings."""
    return torch.einsum("bm,bmh->bh", weights, z)


def normalise_over(weights: Tensor, mask: Tensor) -> Tensor:
    """Zero ``weights`` (B×M, non-negative) where ``mask`` is False and rescale rows to sum 1.

    Rows with no ``True`` entry (or zero total weight) stay all zeros.
    """
    kept = torch.where(mask, weights, torch.zeros_like(weights))
    total = kept.sum(dim=-1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return kept / safe
