"""modalsurv: multimodal deep survival analysis (ModalSurv: cross-attention fusion + DeepHit).

``from modalsurv import ModalSurv, cross_validate`` is the public entry point; the heavy
imports (torch, scikit-survival) happen on first use, so ``import modalsurv`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Cohort", "FoldEnsemble", "ModalSurv", "RunConfig", "StackedSurv", "cross_validate",
           "load_model"]


def __getattr__(name: str) -> Any:
    if name in {"ModalSurv", "cross_validate", "FoldEnsemble"}:
        from modalsurv import train

        return getattr(train, name)
    if name in {"StackedSurv", "load_model"}:
        from modalsurv.train import stacking

        return getattr(stacking, name)
    if name == "Cohort":
        from modalsurv.cohort import Cohort

        return Cohort
    if name == "RunConfig":
        from modalsurv.config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'modalsurv' has no attribute {name!r}")
