"""Tables for people: the numbers they print are the run's."""

from __future__ import annotations

import pytest

from modalsurv.report.tables import stack_weights_table


def test_stack_weights_mean_counts_a_candidate_missing_from_a_fold_as_weight_zero():
    """A peer that failed in a fold is not in that fold's stack (weight 0 there): the mean
    row skipped the fold, so a candidate weighed in one fold of four showed its full
    weight as the mean and the mean row summed to more than 1."""
    summary = {"stack": [
        {"repeat": 0, "fold": 0, "weights": {"modalsurv": 0.4, "coxnet": 0.6}, "dropped": []},
        *({"repeat": 0, "fold": f, "weights": {"modalsurv": 1.0}, "dropped": []}
          for f in (1, 2, 3))]}  # fmt: skip
    table = stack_weights_table(summary).set_index("fold")
    assert table.loc["mean", "coxnet"] == pytest.approx(0.6 / 4)
    assert table.loc["mean", "modalsurv"] == pytest.approx((0.4 + 3.0) / 4)
    assert table.loc["mean", ["modalsurv", "coxnet"]].sum() == pytest.approx(1.0)
    assert table["coxnet"].isna().sum() == 3  # the folds still show it absent ("–" on the page)


def test_a_difference_without_an_interval_reads_as_such_not_as_nan():
    from modalsurv.report.tables import format_difference

    assert format_difference(0.0123, -0.031, 0.055) == "+0.012 [-0.031, +0.055]"
    assert format_difference(0.0123, float("nan"), float("nan")) == "+0.012 (no CI: one pair)"
    assert format_difference(float("nan"), float("nan"), float("nan")) == "–"
