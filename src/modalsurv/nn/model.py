"""ModalSurvNet: per-modality projections → fusion → survival head, built from ModelConfig."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from modalsurv.config import ModelConfig
from modalsurv.nn.encoder_adapter import ROWS
from modalsurv.nn.fusion import get_fusion
from modalsurv.nn.heads import OutputHead
from modalsurv.nn.projection import BagProjection, VectorProjection
from modalsurv.survival.family import get_family


class ModalSurvNet(nn.Module):
    """Multimodal survival network.

    ``dims``: modality → input feature dimension D (its order fixes ``self.modalities``, the
    column order of ``weights``); ``bag``: modality → True for bags of tiles (B×K×D + B×K
    mask), missing entries mean vector. The fusion and head are looked up by name in
    ``FUSIONS`` / ``HEADS``.

    A bag modality with no valid tile counts as absent for that sample, whatever ``present``
    says: there is nothing to pool. Inputs of absent samples are zeroed before projection, so
    padding values (even NaN) never reach outputs or gradients.

    With ``model_cfg.linear_skip`` each vector modality also feeds a linear term (no bias)
    that is added to every output logit; an absent modality contributes 0.
    """

    def __init__(self, dims: dict[str, int], bag: dict[str, bool], model_cfg: ModelConfig) -> None:
        super().__init__()
        if not dims:
            raise ValueError("ModalSurvNet needs at least one modality in dims")
        extra = sorted(set(bag) - set(dims))
        if extra:
            raise ValueError(f"bag names modalities not in dims: {extra}; dims has {list(dims)}")
        bad = [m for m in dims if not m or "." in m]
        if bad:
            raise ValueError(f"modality names must be non-empty and contain no '.': {bad}")
        fusion_cls = get_fusion(model_cfg.fusion)
        self.family = get_family(model_cfg.head)

        self.cfg = model_cfg
        self.modalities: list[str] = list(dims)
        self.is_bag: dict[str, bool] = {m: bool(bag.get(m, False)) for m in self.modalities}
        self.dims = dict(dims)
        self.projections = nn.ModuleDict(
            {
                m: (BagProjection if self.is_bag[m] else VectorProjection)(dims[m], model_cfg)
                for m in self.modalities
            }
        )
        h = model_cfg.latent_dim
        self.fusion = fusion_cls(len(self.modalities), h, model_cfg)
        n_heads = len(self.modalities) if fusion_cls.per_modality_heads else 1
        self.heads = nn.ModuleList([OutputHead(h, model_cfg, self.family)
                                    for _ in range(n_heads)])  # fmt: skip
        # "wide" path: one scalar per vector modality, zero-initialised so training starts
        # from the deep model alone (bags have no fixed-length input to be linear in)
        self.linear = nn.ModuleDict()
        # fine-tuned image encoders (nn.encoder_adapter), by modality: none unless attached
        self.encoders = nn.ModuleDict()
        if model_cfg.linear_skip:
            for m in self.modalities:
                if not self.is_bag[m]:
                    self.linear[m] = nn.Linear(dims[m], 1, bias=False)
                    nn.init.zeros_(self.linear[m].weight)

    def attach_encoder(self, modality: str, encoder: nn.Module) -> None:
        """Make ``encoder`` (``nn.encoder_adapter``) part of ``modality``'s projection: it
        replaces the modality's input (B×D' vector or B×K×D' bag, after the fitted
        preprocessing) with the embedding of the images ``x[ROWS]`` points at."""
        if modality not in self.modalities:
            raise ValueError(f"no modality {modality!r} to attach an encoder to ({self.modalities})")
        self.encoders[modality] = encoder

    def optimizer_groups(self) -> list[dict[str, Any]] | None:
        """Parameter groups when encoders are attached (their trainable parameters at the
        encoder's own lr and weight decay); None without encoders (one plain group)."""
        if not len(self.encoders):
            return None
        mine = {id(p) for e in self.encoders.values() for p in e.parameters()}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.parameters() if id(p) not in mine]}
        ]
        for e in self.encoders.values():
            groups.append({"params": e.trainable_parameters(), "lr": e.lr,
                           "weight_decay": e.weight_decay})  # fmt: skip
        return groups

    def _project(
        self, m: str, x: dict[str, Tensor], present: dict[str, Tensor], mask: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """One modality → (B×H embedding, effective presence B, tile attention B×K or None,
        linear-skip term B×1 or None), from the input zeroed once for absent samples."""
        if m not in x or m not in present:
            raise ValueError(f"modality {m!r}: missing from {'x' if m not in x else 'present'}")
        xm, pm = x[m], present[m].bool()
        if xm.shape[-1] != self.dims[m] or xm.dim() != (3 if self.is_bag[m] else 2):
            kind = "B×K×D bag" if self.is_bag[m] else "B×D vector"
            raise ValueError(
                f"modality {m!r}: expected a {kind} with D={self.dims[m]}, got {tuple(xm.shape)}"
            )
        if pm.shape != xm.shape[:1]:
            raise ValueError(
                f"modality {m!r}: present has shape {tuple(pm.shape)}, expected ({xm.shape[0]},)"
            )
        if not self.is_bag[m]:
            xm = xm.masked_fill(~pm.unsqueeze(-1), 0.0)
            if m in self.encoders:
                xm = self.encoders[m](xm, pm, x.get(ROWS))
            skip = self.linear[m](xm) if m in self.linear else None
            return self.projections[m](xm), pm, None, skip
        if m not in mask:
            raise ValueError(f"bag modality {m!r}: no tile mask given")
        # checked here, not only in BagProjection: `& pm` below would broadcast a K or 1×K
        # mask to every patient, and one patient's mask would silently stand for all
        if mask[m].shape != xm.shape[:2]:
            raise ValueError(
                f"bag modality {m!r}: tile mask has shape {tuple(mask[m].shape)}, expected "
                f"B×K {tuple(xm.shape[:2])}"
            )
        mk = mask[m].bool() & pm.unsqueeze(-1)
        pm = pm & mk.any(dim=-1)
        if m in self.encoders:
            xm = self.encoders[m](xm, mk, x.get(ROWS))
        zm, attention = self.projections[m](xm, mk)
        return zm, pm, attention, None

    def forward(
        self, x: dict[str, Tensor], present: dict[str, Tensor], mask: dict[str, Tensor]
    ) -> dict[str, Any]:
        """Returns ``logits`` (the family's outputs: B×K discrete, B×1 cox), ``fused`` (B×H), ``weights`` (B×M or
        None; ``gates`` is the same tensor), ``attention`` (B×M×M or None),
        ``tile_attention`` (bag modality → B×K), ``present`` (B×M effective presence) and
        ``embeddings`` (B×M×H: each modality projected into the latent space, before the
        fusion; an absent modality's row is the projection of zeros, see ``present``)."""
        zs, ps, tile_attention = [], [], {}
        shift: Tensor | None = None
        for m in self.modalities:
            zm, pm, att, skip = self._project(m, x, present, mask)
            if zs and zm.shape[0] != zs[0].shape[0]:
                raise ValueError(
                    f"modality {m!r} has {zm.shape[0]} patients, modality "
                    f"{self.modalities[0]!r} {zs[0].shape[0]}: one batch, one patient per row"
                )
            zs.append(zm)
            ps.append(pm)
            if att is not None:
                tile_attention[m] = att
            if skip is not None:
                shift = skip if shift is None else shift + skip
        z, p = torch.stack(zs, dim=1), torch.stack(ps, dim=1)
        out = self.fusion(z, p)
        if out.per_modality is not None:
            per = torch.stack(
                [head(out.per_modality[:, i]) for i, head in enumerate(self.heads)], 1
            )
            logits = self.heads[0].combine(per, p)
        else:
            logits = self.heads[0](out.fused)
        if shift is not None:
            # adding one scalar to all DeepHit logits moves mass between the bins and the
            # beyond-last-bin slot: 1 - S(t) increases monotonically with it, like a Cox term
            logits = logits + shift
        return {
            "logits": logits,
            "fused": out.fused,
            "weights": out.weights,
            "gates": out.weights,
            "attention": out.attention,
            "tile_attention": tile_attention,
            "present": p,
            "embeddings": z,
        }


class SeedEnsemble(nn.Module):
    """Several ModalSurvNets (same architecture, different initial seeds) predicting as one.

    Why: small-cohort deep survival models vary a lot with the initial weights and batch
    order; averaging a few members removes much of that variance. The family mixes the
    members' outputs (``family.mix``: DeepHit and logistic hazard as a mixture of their
    PMFs, returned as outputs of that mixture so every consumer of ``logits`` works
    unchanged; Cox by the mean log-risk). Weights, attention, fused representations and
    embeddings are member means; ``present`` is the same for all members. Each member's
    own outputs stay available: ``member_logits`` (S×B×K) and ``member_embeddings``
    (S×B×M×H), for per-member spread (``train.members``) and embedding diagnostics.
    """

    def __init__(self, members: list[ModalSurvNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a SeedEnsemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg
        self.family = members[0].family
        self.modalities = list(members[0].modalities)

    def forward(
        self, x: dict[str, Tensor], present: dict[str, Tensor], mask: dict[str, Tensor]
    ) -> dict[str, Any]:
        outs = [member(x, present, mask) for member in self.members]
        logits = self.family.mix(torch.stack([o["logits"] for o in outs]))

        def mean_of(key: str) -> Tensor | None:
            vals = [o[key] for o in outs]
            return None if vals[0] is None else torch.stack(vals).mean(dim=0)

        weights = mean_of("weights")
        return {
            "logits": logits,
            "fused": mean_of("fused"),
            "weights": weights,
            "gates": weights,
            "attention": mean_of("attention"),
            "tile_attention": {
                m: torch.stack([o["tile_attention"][m] for o in outs]).mean(dim=0)
                for m in outs[0]["tile_attention"]
            },
            "present": outs[0]["present"],
            "embeddings": mean_of("embeddings"),
            "member_logits": torch.stack([o["logits"] for o in outs]),
            "member_embeddings": torch.stack([o["embeddings"] for o in outs]),
        }
