"""Torch modules: per-modality projections, fusion strategies, survival heads, ModalSurvNet.

Modules do ``forward`` only (no I/O); fusions are looked up by name in ``FUSIONS``; the
output head follows the survival family (``survival.family``).
"""

from modalsurv.nn.fusion import FUSIONS, Fusion, FusionOutput, get_fusion
from modalsurv.nn.heads import OutputHead, logits_from_pmf, pmf_from_logits
from modalsurv.nn.model import ModalSurvNet
from modalsurv.nn.projection import BagProjection, GatedAttentionPool, VectorProjection

__all__ = [
    "FUSIONS",
    "BagProjection",
    "Fusion",
    "FusionOutput",
    "GatedAttentionPool",
    "ModalSurvNet",
    "OutputHead",
    "VectorProjection",
    "get_fusion",
    "logits_from_pmf",
    "pmf_from_logits",
]
