import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from modalsurv.report.tables import describe_comparison
from modalsurv.train.compare import compare_models, corrected_resampled_ttest


def _table(a: np.ndarray, b: np.ndarray, folds: int) -> pd.DataFrame:
    rows = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        r, f = divmod(i, folds)
        rows += [
            {"model": "net", "repeat": r, "fold": f, "harrell_c": x},
            {"model": "cox", "repeat": r, "fold": f, "harrell_c": y},
        ]
    return pd.DataFrame(rows)


def test_without_correction_it_is_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.70, 0.05, 25), rng.normal(0.68, 0.05, 25)
    mean, lo, hi, p = corrected_resampled_ttest(a - b, test_train_ratio=0.0)
    ref = stats.ttest_rel(a, b)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert mean == pytest.approx((a - b).mean())


def test_correction_inflates_the_variance_by_the_fold_overlap():
    d = np.array([0.02, -0.01, 0.03, 0.00, 0.01, 0.04, -0.02, 0.02, 0.01, 0.03])
    mean, lo, hi, p = corrected_resampled_ttest(d, test_train_ratio=0.25)
    j = d.size
    se = math.sqrt((1 / j + 0.25) * d.var(ddof=1))  # Nadeau & Bengio, by hand
    half = stats.t.ppf(0.975, j - 1) * se
    assert (lo, hi) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert p == pytest.approx(2 * stats.t.sf(abs(mean / se), j - 1))
    # wider than the naive paired test on the same differences, hence a larger p
    _, nlo, nhi, np_ = corrected_resampled_ttest(d, test_train_ratio=0.0)
    assert hi - lo > nhi - nlo and p > np_


def test_degenerate_inputs():
    assert all(math.isnan(v) for v in corrected_resampled_ttest([0.1], 0.25)[1:])
    assert math.isnan(corrected_resampled_ttest([], 0.25)[0])
    assert corrected_resampled_ttest([0.0, 0.0, np.nan], 0.25) == (0.0, 0.0, 0.0, 1.0)
    assert corrected_resampled_ttest([0.01, 0.01], 0.25)[3] == 0.0
    with pytest.raises(ValueError, match="level"):
        corrected_resampled_ttest([0.1, 0.2], 0.25, level=1.0)
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_resampled_ttest([0.1, 0.2], -0.1)


def test_compare_models_pairs_by_repeat_and_fold_and_uses_k_minus_one():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.72, 0.04, 15), rng.normal(0.70, 0.04, 15)
    table = _table(a, b, folds=5)
    # shuffled rows and a failed fold of the reference: pairing must not depend on order
    table.loc[(table.model == "cox") & (table.repeat == 2) & (table.fold == 4), "harrell_c"] = np.nan
    table = table.sample(frac=1.0, random_state=0)
    out = compare_models(table, "net", "cox")
    d = (a - b)[:14]
    expect = corrected_resampled_ttest(d, 1 / 4)
    assert out.n_pairs == 14 and out.test_train_ratio == 0.25
    assert (out.mean_difference, out.ci_low, out.ci_high, out.p_value) == pytest.approx(expect)
    assert describe_comparison(out).startswith("net - cox: ")
    assert "14 folds" in describe_comparison(out)
    flipped = compare_models(table, "cox", "net")
    assert flipped.mean_difference == pytest.approx(-out.mean_difference)
    assert flipped.p_value == pytest.approx(out.p_value)


def test_a_small_p_is_never_shown_as_zero():
    """p = 0.003 was printed "p = 0.00" (a p of zero); now "< 0.01", and an undefined p "–"."""
    from modalsurv.report.tables import format_p, paired_display

    rng = np.random.default_rng(2)
    a = rng.normal(0.75, 0.01, 25)
    out = compare_models(_table(a, a - 0.03, folds=5), "net", "cox")
    assert out.p_value < 0.005
    assert "p < 0.01 (corrected" in describe_comparison(out)
    assert (format_p(0.2345, "= "), format_p(0.0), format_p(math.nan)) == ("= 0.23", "< 0.01", "–")
    paired = pd.DataFrame([{"reference": "cox", "mean_difference": 0.03, "ci_low": 0.02,
                            "ci_high": 0.04, "p_value": 0.004, "n_pairs": 25}])  # fmt: skip
    assert paired_display(paired, {"models": {}})["p"].tolist() == ["< 0.01"]


def test_compare_models_names_what_is_wrong():
    table = _table(np.array([0.7, 0.6]), np.array([0.6, 0.6]), folds=2)
    with pytest.raises(ValueError, match="'rsf' is not in the metrics table"):
        compare_models(table, "net", "rsf")
    with pytest.raises(ValueError, match="lacks columns \\['uno_c'\\]"):
        compare_models(table, "net", "cox", metric="uno_c")
    dup = pd.concat([table, table.iloc[:1]])
    with pytest.raises(ValueError, match="more than one row"):
        compare_models(dup, "net", "cox")


def test_tables_of_runs_with_other_splits_are_not_paired():
    """Fold labels are only names: two runs' tables pasted together carry the same
    (repeat, fold) labels on other patients, which the fold sizes and events betray."""
    table = _table(np.array([0.7, 0.6, 0.65]), np.array([0.6, 0.6, 0.62]), folds=3)
    table["n_test"], table["n_events_test"] = 40, 12
    assert compare_models(table, "net", "cox").n_pairs == 3  # one run's table: paired
    other = table.copy()
    other.loc[(other.model == "cox") & (other.fold == 1), ["n_test", "n_events_test"]] = [41, 12]
    with pytest.raises(ValueError, match="'net' and 'cox' were not tested on the same folds:"
                       " repeat 0, fold 1 has n_test 40, n_events_test 12 for 'net'"):
        compare_models(other, "net", "cox")


def test_on_a_real_cross_validation_table(cohort):
    from modalsurv.config import RunConfig
    from modalsurv.train.cv import cross_validate

    cfg = RunConfig.model_validate({"train": {"epochs": 2, "n_init": 1}})
    res = cross_validate(cohort, cfg, folds=3, repeats=1, seed=0, baselines=["coxph_clinical"])
    out = compare_models(res.metrics, "modalsurv", "coxph_clinical")
    assert out.n_pairs == 3 and out.test_train_ratio == 0.5
    assert out.ci_low <= out.mean_difference <= out.ci_high


def test_cv_result_pairs_modalsurv_with_each_baseline(cohort):
    from modalsurv.config import RunConfig
    from modalsurv.train.cv import cross_validate

    cfg = RunConfig.model_validate({"train": {"epochs": 2, "n_init": 1},
                                    "model": {"stack": "none"},
                                    "cv": {"train_fraction": 0.5}})  # fmt: skip
    res = cross_validate(cohort, cfg, folds=3, repeats=2, seed=0,
                         baselines=["coxph_clinical", "coxnet"])  # fmt: skip
    table = res.paired()
    assert list(table["reference"]) == ["coxph_clinical", "coxnet"]
    assert (table["n_pairs"] == 6).all()
    row = table.iloc[1]
    # half-size training parts: n_test / n_train = 1 / ((3 - 1) * 0.5)
    expect = compare_models(res.metrics, "modalsurv", "coxnet", test_train_ratio=1.0)
    assert row["ci_low"] == pytest.approx(expect.ci_low)
    assert row["p_value"] == pytest.approx(expect.p_value)


def test_random_effects_meta_analysis():
    from modalsurv.train.compare import corrected_standard_error, random_effects

    # equal effects: no heterogeneity, the pooled mean is the common value
    out = random_effects([0.01, 0.01, 0.01], [0.005, 0.01, 0.02])
    assert out.mean == pytest.approx(0.01) and out.tau2 == 0.0 and out.k == 3
    # against a hand computation (DerSimonian-Laird tau^2, Hartung-Knapp interval)
    y, s = np.array([0.02, -0.01, 0.005, 0.03]), np.array([0.01, 0.015, 0.008, 0.02])
    w = 1 / s**2
    fixed = (w * y).sum() / w.sum()
    q = (w * (y - fixed) ** 2).sum()
    tau2 = max(0.0, (q - 3) / (w.sum() - (w**2).sum() / w.sum()))
    wr = 1 / (s**2 + tau2)
    mean = (wr * y).sum() / wr.sum()
    se = np.sqrt((wr * (y - mean) ** 2).sum() / (3 * wr.sum()))
    res = random_effects(y, s)
    assert res.mean == pytest.approx(mean) and res.tau2 == pytest.approx(tau2)
    half = stats.t.ppf(0.975, 3) * se
    assert (res.ci_low, res.ci_high) == pytest.approx((mean - half, mean + half))
    assert random_effects([0.1, np.nan], [0.01, 0.02]).k == 1
    with pytest.raises(ValueError):
        random_effects([0.1], [0.1, 0.2])
    d = np.array([0.01, 0.03, -0.02, 0.0, 0.02])
    assert corrected_standard_error(d, 0.25) == pytest.approx(np.sqrt((1 / 5 + 0.25) * d.var(ddof=1)))


def test_stack_weights_and_timing_tables():
    from modalsurv.report.tables import stack_weights_table, timing_table

    summary = {"stack": [
        {"repeat": 0, "fold": 0, "weights": {"modalsurv": 0.25, "coxnet": 0.75}, "dropped": []},
        {"repeat": 0, "fold": 1, "weights": {"modalsurv": 0.0, "coxnet": 1.0},
         "dropped": ["modalsurv"]}]}  # fmt: skip
    table = stack_weights_table(summary)
    assert list(table["fold"]) == ["0/0", "0/1", "mean"]
    assert table["modalsurv"].tolist() == [0.25, 0.0, 0.125]
    assert table["dropped"].tolist() == ["–", "modalsurv", ""]
    assert "weights from" not in table  # no fold fell back: no column
    summary["stack"][1]["fallback"] = "equal weights (scale 0.1 fitted on their mean score): ..."
    assert stack_weights_table(summary)["weights from"].tolist() == [
        "inner out-of-fold risks", "equal (too few inner events)", ""]
    assert stack_weights_table({"models": {}}) is None
    times = pd.DataFrame({"repeat": [0, 0], "fold": [0, 1], "modalsurv": [10.0, 12.0],
                          "modalsurv/coxph_clinical": [0.1, 0.2], "modalsurv/new_thing": [1, 1],
                          "rsf": [1.0, 2.0]})  # fmt: skip
    out = timing_table(times, wall=40.0).set_index("part")["seconds"]
    assert out["ModalSurv fit (all of it)"] == 22.0 and out["baseline rsf"] == 3.0
    assert out["  stack: ridge Cox on clinical, one fit per inner fold"] == pytest.approx(0.3)
    assert out["  stack: new_thing"] == 2
    assert out["other (data, scoring, saving, report)"] == 15.0 and out["total (wall)"] == 40.0
    assert timing_table(pd.DataFrame()) is None


def test_fold_overlap_ratio_follows_the_groups_of_leave_one_group_out_folds():
    from modalsurv.train.compare import MAIN, fold_overlap_ratio, fold_ratio

    metrics = pd.DataFrame({"model": [MAIN, MAIN, MAIN, "coxnet"], "fold": [0, 1, 2, 0],
                            "n_test": [10, 30, 20, 99], "n_train": [50, 30, 40, 1]})  # fmt: skip
    # stratified folds: 1 / ((k - 1) * fraction), whatever the fold sizes
    assert fold_overlap_ratio(metrics, 3, 0.5) == fold_ratio(3, 0.5) == 1.0
    # groups: each fold's own n_test / n_train of the main model, averaged
    assert fold_overlap_ratio(metrics, 3, grouped=True) == (0.2 + 1.0 + 0.5) / 3


def test_random_effects_interval_is_never_narrower_than_the_pooled_standard_error():
    """Cohorts that agree exactly gave Hartung-Knapp's zero-width interval and p = 0 (three
    cohorts each 0.01 +- 0.02, z = 0.5 apiece, "pooled" p = 0); nearly agreeing ones gave
    p = 0.003. The scale factor is now floored at 1 (Knapp & Hartung 2003): by hand."""
    from modalsurv.train.compare import random_effects

    s = np.array([0.005, 0.01, 0.02])
    out = random_effects([0.01, 0.01, 0.01], s)
    se = 1 / np.sqrt((1 / s**2).sum())  # tau^2 = 0: the fixed-effect standard error
    half = stats.t.ppf(0.975, 2) * se
    assert (out.ci_low, out.ci_high) == pytest.approx((0.01 - half, 0.01 + half))
    assert out.p_value == pytest.approx(2 * stats.t.sf(0.01 / se, 2)) and out.p_value > 0.1
    near = random_effects([0.010, 0.011, 0.009], [0.02, 0.02, 0.02])
    assert near.ci_low < 0 < near.ci_high and near.p_value > 0.4


@pytest.mark.parametrize("level", [0.0, 1.0, 95, -0.5])
def test_random_effects_refuses_a_level_outside_0_1(level):
    """A level of 95 (a percentage) or 1 gave NaN bounds (t.ppf beyond 1), reported as a
    result; now refused, as corrected_resampled_ttest does."""
    from modalsurv.train.compare import random_effects

    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        random_effects([0.01, 0.02, 0.03], [0.01, 0.01, 0.01], level=level)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        random_effects([0.01], [0.01], level=level)  # one cohort: refused all the same
