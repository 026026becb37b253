"""Survival math independent of networks: time bins, losses, metrics and curves.

Nothing here imports ``modalsurv.nn``, ``io``, ``train`` or anything above them, and
nothing prints.
"""

from modalsurv.survival.bins import TimeBins
from modalsurv.survival.metrics import UndefinedMetricError

__all__ = ["TimeBins", "UndefinedMetricError"]
