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


def test_a_mean_over_one_fold_or_none_reads_without_nan():
    """One finite fold has no std (ddof 1) and none has no mean: the table said
    "0.700 ± nan (1 of 5 folds)" and "nan ± nan (0 of 5 folds)" (metrics.json writes an
    undefined value as NaN or null)."""
    from modalsurv.report.tables import summary_table

    summary = {"n_folds": 5, "n_repeats": 1, "models": {"modalsurv": {
        "harrell_c": {"mean": 0.7, "std": None, "n": 1},
        "uno_c": {"mean": float("nan"), "std": float("nan"), "n": 0},
        "ibs": {"mean": 0.2, "std": 0.0104, "n": 5},
        "n_failed_folds": 0, "optimistic": False}}}  # fmt: skip
    row = summary_table(summary).iloc[0]
    assert row["harrell_c"] == "0.700 (1 of 5 folds)"
    assert row["uno_c"] == "– (0 of 5 folds)"
    assert row["ibs"] == "0.200 ± 0.010"
