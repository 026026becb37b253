"""Fusion strategies: B×M×H modality embeddings + B×M presence → one B×H representation.

Every strategy honours per-sample presence: a missing modality is excluded from keys,
gates and averages *for that sample only*, so one batch can mix patients with different
modality sets, and a patient's output never depends on which modalities *other* patients
have. A sample with no modality at all gets a zero representation (never NaN).

Add a strategy by subclassing :class:`Fusion`, implementing ``_fuse``, and adding one line
to :data:`FUSIONS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalsurv.config import ModelConfig
from modalsurv.nn.masking import masked_mean, masked_softmax, normalise_over, weighted_sum


@dataclass
class FusionOutput:
    """What a fusion returns.

    ``fused``: B×H. ``weights``: B×M per-sample modality weights (zero for absent
    modalities, rows sum to 1 over present ones; all zeros for a sample with none), or None
    where no weighting is meaningful. ``per_modality``: B×M×H representations for late
    fusion (the model applies one head per modality). ``attention``: B×M×M head-averaged
    attention (row = query modality, column = key modality) for attention fusions.
    ``precision``: B×M learned per-sample precision (inverse variance) of each modality's
    embedding, exactly 0 for absent modalities, for uncertainty-aware fusions.
    """

    fused: Tensor
    weights: Tensor | None = None
    per_modality: Tensor | None = None
    attention: Tensor | None = None
    precision: Tensor | None = None


class Fusion(nn.Module):
    """Base class: validates inputs, zeroes absent slots, zeroes samples with no modality."""

    #: late fusion: the model applies a head per modality and combines their outputs
    per_modality_heads: ClassVar[bool] = False

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        if n_modalities < 1:
            raise ValueError(f"fusion needs at least one modality, got {n_modalities}")
        self.n_modalities = n_modalities
        self.dim = dim

    def forward(self, z: Tensor, present: Tensor) -> FusionOutput:
        """``z``: B×M×H projected embeddings (fixed modality order), ``present``: B×M bool."""
        if z.dim() != 3 or z.shape[1:] != (self.n_modalities, self.dim):
            raise ValueError(
                f"{type(self).__name__} expects z of shape B×{self.n_modalities}×{self.dim}, "
                f"got {tuple(z.shape)}"
            )
        if present.shape != z.shape[:2]:
            raise ValueError(
                f"present must be B×M {tuple(z.shape[:2])}, got {tuple(present.shape)}"
            )
        present = present.bool()
        absent = ~present
        z = z.masked_fill(absent.unsqueeze(-1), 0.0)
        out = self._fuse(z, present)
        out.fused = out.fused.masked_fill(absent.all(dim=1, keepdim=True), 0.0)
        if out.weights is not None:
            out.weights = out.weights.masked_fill(absent, 0.0)
        return out

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        raise NotImplementedError


def _uniform_weights(present: Tensor, dtype: torch.dtype) -> Tensor:
    return normalise_over(present.to(dtype), present)


class ConcatFusion(Fusion):
    """Concatenate (absent slots zeroed) with presence indicators, then Linear to H.

    The indicators let the layer tell "absent" from "present with a zero embedding".
    """

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        self.linear = nn.Linear(n_modalities * dim + n_modalities, dim)

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        flat = torch.cat([z.flatten(1), present.to(z.dtype)], dim=1)
        return FusionOutput(fused=self.linear(flat))


class MeanFusion(Fusion):
    """Mean over present modalities: the simplest missing-aware baseline."""

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        return FusionOutput(
            fused=masked_mean(z, present), weights=_uniform_weights(present, z.dtype)
        )


class ModalityWeightFusion(Fusion):
    """One learned weight per modality (shared by all samples), renormalised over present ones."""

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        self.logits = nn.Parameter(torch.zeros(n_modalities))

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        weights = masked_softmax(self.logits.expand(z.shape[0], -1), present)
        return FusionOutput(fused=weighted_sum(z, weights), weights=weights)


class GatedFusion(Fusion):
    """Sample-specific sigmoid gate per modality from its own embedding (modality-specific
    parameters); the gated sum is normalised by the total gate over present modalities.

    The normalised gates ``sigmoid(l_m) / sum sigmoid(l_j)`` are computed as a masked softmax
    of ``logsigmoid(l)``, the same number, because fp32 ``sigmoid`` underflows to 0 below
    about -104 and every gate of a sample at 0 would drop the sample's fused vector."""

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        bound = 1.0 / math.sqrt(dim)
        self.gate_weight = nn.Parameter(torch.empty(n_modalities, dim).uniform_(-bound, bound))
        self.gate_bias = nn.Parameter(torch.zeros(n_modalities))

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        logits = torch.einsum("bmh,mh->bm", z, self.gate_weight) + self.gate_bias
        weights = masked_softmax(F.logsigmoid(logits), present)
        return FusionOutput(fused=weighted_sum(z, weights), weights=weights)


class MaskedMultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention over modality tokens with a per-sample
    B×M×M ``allowed`` mask (query row, key column).

    Same maths as ``torch.nn.MultiheadAttention`` (tested against it), but a query with no
    allowed key gets a zero output and zero weights instead of NaN.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"latent_dim {dim} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: B×M×H, ``allowed``: B×M×M bool → (B×M×H output, B×heads×M×M weights)."""
        b, m, h = x.shape
        # one matmul for q, k and v instead of three (the three Linears keep their own
        # parameters, so checkpoints are unchanged): fewer ops per step on small batches
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias).view(b, m, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B×h×M×d
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-1, -2)
        weights = masked_softmax(scores, allowed.unsqueeze(1), dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, m, h)
        out = self.out_proj(out)
        return out.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0), weights


class CrossAttentionFusion(Fusion):
    """Each present modality queries the *other* present modalities (diagonal and absent keys
    masked), residual + LayerNorm, then the tokens are averaged over present modalities.

    A query with no other present modality (single-modality sample) has a zero attended
    output, so its token is ``LayerNorm(own embedding)``: it falls back to itself.
    ``weights`` is the share of attention each modality receives as a key, averaged over
    present queries (a query without keys counts as attending to itself).
    """

    include_self: ClassVar[bool] = False

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        self.attn = MaskedMultiheadAttention(dim, cfg.n_heads, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("_eye", torch.eye(n_modalities, dtype=torch.bool), persistent=False)

    def allowed(self, present: Tensor) -> Tensor:
        """B×M×M: query present, key present, and (unless ``include_self``) key ≠ query."""
        allowed = present.unsqueeze(2) & present.unsqueeze(1)
        if not self.include_self:
            allowed = allowed & ~self._eye
        return allowed

    def attend(self, z: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(tokens B×M×H after residual + LayerNorm, attended B×M×H, head-mean attention B×M×M)."""
        allowed = self.allowed(present)
        attended, weights = self.attn(z, allowed)
        tokens = self.norm(z + self.drop(attended))
        return tokens, attended, weights.mean(dim=1)

    def _received(self, attention: Tensor, present: Tensor) -> Tensor:
        has_key = self.allowed(present).any(dim=-1, keepdim=True)
        rows = torch.where(has_key, attention, self._eye.to(attention.dtype).expand_as(attention))
        rows = torch.where(present.unsqueeze(-1), rows, torch.zeros_like(rows))
        return normalise_over(rows.sum(dim=1), present)

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        tokens, _, attention = self.attend(z, present)
        return FusionOutput(
            fused=masked_mean(tokens, present),
            weights=self._received(attention, present),
            attention=attention,
        )


class CrossAttentionGatedFusion(CrossAttentionFusion):
    """ModalSurv: cross-attention, then a gating MLP scores each attended token (shared MLP +
    a learned per-modality bias); softmax over present modalities gives sample-specific
    weights; the weighted sum goes through Linear → ReLU → Dropout."""

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.gate_bias = nn.Parameter(torch.zeros(n_modalities))
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(cfg.dropout))

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        tokens, _, attention = self.attend(z, present)
        logits = self.gate(tokens).squeeze(-1) + self.gate_bias
        weights = masked_softmax(logits, present)
        return FusionOutput(
            fused=self.out(weighted_sum(tokens, weights)), weights=weights, attention=attention
        )


class CrossAttentionSelfFusion(CrossAttentionGatedFusion):
    """ModalSurv with self-attention: each modality also attends to itself (the ablation of
    cross- versus self-attention, everything else equal)."""

    include_self: ClassVar[bool] = True


class LateFusion(Fusion):
    """Late fusion: each modality keeps its own representation; the model applies one head
    per modality and averages their predictions (PMFs for DeepHit) over present modalities.
    ``fused`` is the mean representation, for reports only."""

    per_modality_heads: ClassVar[bool] = True

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        return FusionOutput(
            fused=masked_mean(z, present),
            weights=_uniform_weights(present, z.dtype),
            per_modality=z,
        )


class PrecisionWeightedFusion(Fusion):
    """Uncertainty-aware fusion: inverse-variance weighting (a product of Gaussian experts).

    Why: a modality is not equally reliable for every patient (a blurry slide, a noisy
    assay, a modality that carries no signal at all), so its weight should follow its
    reliability. Each modality m treats its embedding as the mean of a Gaussian expert
    ``N(z_m, sigma_m^2 I)`` whose log-variance a small modality-specific head predicts
    from that embedding, per patient: ``log sigma_m^2 = a_m . z_m + c_m`` (squashed
    smoothly into ``[-max_log_variance, max_log_variance]``). The product of the present
    experts is Gaussian with mean ``sum_m w_m z_m``, ``w_m = prec_m / sum_present prec``,
    ``prec_m = exp(-log sigma_m^2)``: that mean is the fused representation and the
    ``w_m`` are the reported weights. An absent modality has precision exactly 0 (masked
    softmax over ``-log sigma^2``, no NaN), so a patient with one present modality gets
    that embedding unchanged; a patient with none gets zeros, as with every fusion.

    One scalar variance per modality and patient, not one per latent dimension: the
    reported weight is then exactly the coefficient of the fusion (a per-dimension
    variance has no single weight to show), a linear read-out costs H + 1 parameters per
    modality (small cohorts), and the embedding it reads is already a learned nonlinear
    projection. The head starts at zero, so training starts from the plain mean fusion.
    Only relative precisions matter to the fused mean (adding a constant to every
    log-variance changes nothing), and nothing but the survival loss trains the head;
    ``precision`` is returned for reports. The bound keeps the weights differentiable: a
    ratio of at most ``exp(2 * max_log_variance)`` between two modalities.
    """

    max_log_variance: ClassVar[float] = 5.0

    def __init__(self, n_modalities: int, dim: int, cfg: ModelConfig) -> None:
        super().__init__(n_modalities, dim, cfg)
        self.logvar_weight = nn.Parameter(torch.zeros(n_modalities, dim))
        self.logvar_bias = nn.Parameter(torch.zeros(n_modalities))

    def log_variance(self, z: Tensor) -> Tensor:
        """B×M×H embeddings → B×M log-variances in ``(-max_log_variance, max_log_variance)``."""
        raw = torch.einsum("bmh,mh->bm", z, self.logvar_weight) + self.logvar_bias
        bound = self.max_log_variance
        return bound * torch.tanh(raw / bound)

    def _fuse(self, z: Tensor, present: Tensor) -> FusionOutput:
        log_var = self.log_variance(z)
        weights = masked_softmax(-log_var, present)
        precision = torch.exp(-log_var).masked_fill(~present, 0.0)
        return FusionOutput(fused=weighted_sum(z, weights), weights=weights, precision=precision)


FUSIONS: dict[str, type[Fusion]] = {
    "concat": ConcatFusion,
    "mean": MeanFusion,
    "modality_weight": ModalityWeightFusion,
    "gated": GatedFusion,
    "cross_attention": CrossAttentionFusion,
    "cross_attention_gated": CrossAttentionGatedFusion,
    "cross_attention_self": CrossAttentionSelfFusion,
    "late": LateFusion,
    "uncertainty": PrecisionWeightedFusion,
}


def get_fusion(name: str) -> type[Fusion]:
    """Look a fusion class up by name; unknown names raise a ValueError listing the known ones."""
    try:
        return FUSIONS[name]
    except KeyError:
        raise ValueError(f"unknown fusion {name!r}; known fusions: {sorted(FUSIONS)}") from None
