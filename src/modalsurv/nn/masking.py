"""NaN-free masked reductions shared by attention pooling and fusion.

A missing modality or a padded tile is a ``False`` in a mask. Plain ``softmax`` over a row
whose entries are all ``-inf`` returns NaN, and ``0 * NaN`` is NaN, so every helper here
zeroes by selection (``masked_fill``, never by multiplication) and gives an all-masked row
exact zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the ``True`` entries of ``mask`` along ``dim``.

    Masked entries get exactly zero weight; a row with no ``True`` entry is all zeros (not
    NaN), and its gradient is zero. ``mask`` must broadcast to ``scores``.
    """
    hidden = ~mask.expand_as(scores)
    # rows with nothing valid: softmax over finite zeros, then zeroed below
    empty = hidden.all(dim=dim, keepdim=True)
    filled = scores.masked_fill(hidden, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(filled, dim=dim).masked_fill(hidden, 0.0)


def masked_mean(z: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``z`` (B×M×H) over the ``True`` slots of ``mask`` (B×M); zeros if none."""
    zeroed = z.masked_fill(~mask.unsqueeze(-1), 0.0)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
    return zeroed.sum(dim=1) / count


def weighted_sum(z: Tensor, weights: Tensor) -> Tensor:
    """``sum_m weights[b, m] * z[b, m]`` for B×M weights and B×M×H embeddings."""
    return torch.einsum("bm,bmh->bh", weights, z)


def normalise_over(weights: Tensor, mask: Tensor) -> Tensor:
    """Zero ``weights`` (B×M, non-negative) where ``mask`` is False and rescale rows to sum 1.

    Rows with no ``True`` entry (or zero total weight) stay all zeros.
    """
    kept = weights.masked_fill(~mask, 0.0)
    total = kept.sum(dim=-1, keepdim=True)
    return kept / total.masked_fill(total <= 0, 1.0)
