"""Per-modality projections into the shared latent space.

Every modality, whatever its encoder width, is mapped to ``latent_dim`` (128) so that the
fusion layer can treat modalities as tokens of one size. Vector modalities go through a
small MLP; bags of tile embeddings (WSI) are first pooled by gated attention (Ilse et al.,
2018), whose per-tile weights are returned so reports can show which tiles mattered.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from modalsurv.config import ModelConfig
from modalsurv.nn.masking import masked_softmax


class VectorProjection(nn.Module):
    """``projection_layers`` × (Linear → [LayerNorm] → ReLU → Dropout), ending in ``latent_dim``.

    Intermediate layers are ``hidden_dim`` wide; with one layer the map is direct.
    """

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"input dimension must be >= 1, got {in_dim}")
        widths = [in_dim] + [cfg.hidden_dim] * (cfg.projection_layers - 1) + [cfg.latent_dim]
        layers: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(widths):
            layers.append(nn.Linear(d_in, d_out))
            if cfg.layer_norm:
                layers.append(nn.LayerNorm(d_out))
            layers += [nn.ReLU(), nn.Dropout(cfg.dropout)]
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = cfg.latent_dim

    def forward(self, x: Tensor) -> Tensor:
        """``x``: B×D → B×latent_dim."""
        return self.net(x)


class GatedAttentionPool(nn.Module):
    """Gated attention MIL pooling: ``a_k = w^T (tanh(V h_k) ⊙ sigmoid(U h_k))``.

    The softmax runs over valid tiles only: masked tiles get exactly zero weight and their
    features never reach the output (they are zeroed first, so even NaN padding is safe).
    A bag with no valid tile (an absent slide) pools to zeros with all-zero weights.
    """

    def __init__(self, in_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.V = nn.Linear(in_dim, attn_dim)
        self.U = nn.Linear(in_dim, attn_dim)
        self.w = nn.Linear(attn_dim, 1)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``h``: B×K×D, ``mask``: B×K bool → (pooled B×D, weights B×K)."""
        h = torch.where(mask.unsqueeze(-1), h, torch.zeros_like(h))
        scores = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)
        weights = masked_softmax(scores, mask, dim=-1)
        pooled = torch.einsum("bk,bkd->bd", weights, h)
        return pooled, weights


class BagProjection(nn.Module):
    """Gated attention pooling over tiles, then the same MLP as a vector modality."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.pool = GatedAttentionPool(in_dim, cfg.attention_pool_dim)
        self.project = VectorProjection(in_dim, cfg)
        self.in_dim = in_dim
        self.out_dim = cfg.latent_dim

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: B×K×D, ``mask``: B×K bool → (B×latent_dim, tile attention B×K)."""
        if x.dim() != 3 or mask.shape != x.shape[:2]:
            raise ValueError(
                f"bag input must be B×K×D with a B×K mask, got {tuple(x.shape)} and "
                f"mask {tuple(mask.shape)}"
            )
        pooled, weights = self.pool(x, mask.bool())
        return self.project(pooled), weights
