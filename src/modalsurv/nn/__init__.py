"""Torch modules: per-modality projections, fusion strategies, survival heads, ModalSurvNet.

Modules do ``forward`` only (no I/O); fusions and heads are looked up by name in the
``FUSIONS`` and ``HEADS`` registries.
"""

from modalsurv.nn.fusion import FUSIONS, Fusion, FusionOutput, get_fusion
from modalsurv.nn.heads import HEADS, Head, get_head, logits_from_pmf, pmf_from_logits
from modalsurv.nn.model import ModalSurvNet
from modalsurv.nn.projection import BagProjection, GatedAttentionPool, VectorProjection

__all__ = [
    "FUSIONS",
    "HEADS",
    "BagProjection",
    "Fusion",
    "FusionOutput",
    "GatedAttentionPool",
    "Head",
    "ModalSurvNet",
    "VectorProjection",
    "get_fusion",
    "get_head",
    "logits_from_pmf",
    "pmf_from_logits",
]
