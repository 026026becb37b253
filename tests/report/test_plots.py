"""Figures draw what their tables hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from modalsurv.report.plots import risk_intervals


def test_risk_intervals_draw_the_members_interval_even_around_an_outside_point():
    """The point is one repeat's prediction, the interval the members' over every repeat:
    a point outside its interval must not shorten or move the drawn interval."""
    table = pd.DataFrame({"rank": [1, 2, 3], "risk": [0.1, 0.5, 0.9],
                          "risk_p05": [0.2, 0.4, 0.3], "risk_p95": [0.3, 0.6, 0.5],
                          "event": [True, False, True]})  # fmt: skip
    fig = risk_intervals(table, "risk_p05", "risk_p95", "t")
    (lines,) = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    drawn = np.array([[seg[:, 1].min(), seg[:, 1].max()] for seg in lines.get_segments()])
    np.testing.assert_allclose(drawn, table[["risk_p05", "risk_p95"]].to_numpy())
