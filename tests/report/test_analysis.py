"""The numbers behind the run report's figures (report.analysis), against references."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.nonparametric import kaplan_meier_estimator

from modalsurv.report import analysis as A
from modalsurv.survival import metrics as M
from modalsurv.train.compare import corrected_resampled_ttest


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_event = rng.exponential(10 * np.exp(-risk))
    t_cens = rng.uniform(2, 30, size=n)
    time = np.round(np.minimum(t_event, t_cens), 2) + 0.01
    return time, t_event <= t_cens, risk


def test_risk_groups_are_equal_size_by_rank():
    labels = A.risk_groups([5.0, 1.0, 3.0, 3.0, 9.0, 0.0], 3)
    assert labels.tolist() == [2, 0, 1, 1, 2, 0]
    assert A.group_name(0, 3) == "low risk" and A.group_name(2, 3) == "high risk"
    assert A.group_name(1, 3) == "group 2"


def test_tied_risks_fall_in_one_group():
    """Was ranked by order of appearance: the two patients with risk 2.0 straddled the
    low/middle boundary, one called low risk and the other not."""
    labels = A.risk_groups([1.0, 2.0, 2.0, 3.0, 4.0, 5.0], 3)
    assert labels[1] == labels[2]
    assert labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert set(A.risk_groups([0.3] * 7, 3)) == {1}  # a constant risk: one group


def test_risk_groups_refuse_a_non_finite_risk():
    """A NaN risk has no rank: it was put in group -9223372036854775808 and shifted the
    other groups' boundaries; now it is refused, naming the patient's index."""
    with pytest.raises(ValueError, match=r"risk\[1\] = nan is not finite \(1 of 6"):
        A.risk_groups([5.0, np.nan, 3.0, 3.5, 9.0, 0.0], 3)
    with pytest.raises(ValueError, match=r"risk\[0\] = inf"):
        A.risk_groups([np.inf, 1.0, 2.0], 3)


def test_logrank_matches_lifelines():
    stats = pytest.importorskip("lifelines.statistics")
    time, event, risk = _data()
    labels = A.risk_groups(risk, 3)
    chisq, p = A.logrank(time, event, labels)
    ref = stats.multivariate_logrank_test(time, labels, event)
    assert chisq == pytest.approx(ref.test_statistic, rel=1e-6)
    assert p == pytest.approx(ref.p_value, rel=1e-6) and p < 0.05  # risk separates


def test_km_by_group_is_each_groups_kaplan_meier():
    time, event, risk = _data()
    labels = A.risk_groups(risk, 3)
    km = A.km_by_group(time, event, labels, 3)
    g = km[km["group"] == 2]
    t, s = kaplan_meier_estimator(event[labels == 2], time[labels == 2])
    np.testing.assert_allclose(g["time"], np.r_[0, t])
    np.testing.assert_allclose(g["survival"], np.r_[1, s])
    assert (g["n"] == 40).all() and set(km["name"]) == {"low risk", "group 2", "high risk"}


def test_auc_and_brier_are_the_metrics_on_the_pooled_predictions():
    time, event, risk = _data()
    grid = A.auc_times(time, event)
    assert len(grid) == 20 and grid[0] >= time[event].min()
    table, mean, notes = A.td_auc_table(time, event, risk, grid)
    auc, ref_mean = M.time_dependent_auc(time, event, time, event, risk, grid)
    np.testing.assert_allclose(table["auc"], auc)
    assert mean == ref_mean and not notes and mean > 0.6
    _, _, notes = A.td_auc_table(time, np.zeros_like(event), risk, grid)
    assert notes and "censored" in notes[0]
    surv = np.exp(-np.outer(np.exp(risk), grid) / 10)  # the true model: better than KM
    table, ibs, notes = A.brier_table(time, event, surv, grid)
    np.testing.assert_allclose(table["brier"], M.brier_score(time, event, time, event, surv, grid))
    km = A.km_survival(time, event, grid)
    np.testing.assert_allclose(table["brier_km"], M.brier_score(
        time, event, time, event, np.tile(km, (len(time), 1)), grid))
    assert ibs["ibs"] < ibs["ibs_km"] and not notes
    kt, ks = kaplan_meier_estimator(event, time)
    assert A.km_survival(time, event, [kt[3]])[0] == ks[3]
    assert A.km_survival(time, event, [0.0])[0] == 1.0


def test_calibration_at_reference_times_and_d_calibration():
    time, event, risk = _data(200)
    ref = A.reference_times(time, event)
    q = np.quantile(time[event], [0.25, 0.5, 0.75])
    assert ref == [float(f"{v:.3g}") for v in q]
    surv_t = np.exp(-np.outer(np.exp(risk), ref) / 10)
    follow = np.exp(-np.exp(risk)[:, None] * np.minimum(time[:, None], np.array(ref)) / 10)
    groups, stats, notes = A.calibration_at(time, event, surv_t, follow, ref)
    assert list(stats["t"]) == ref and not notes
    assert groups.groupby("t")["n"].sum().tolist() == [200] * 3
    first = groups[groups["t"] == ref[1]].drop(columns="t").reset_index(drop=True)
    expect = M.calibration_table(time, event, surv_t[:, 1], ref[1], groups=10)
    np.testing.assert_allclose(first.to_numpy(float), expect[first.columns].to_numpy(float))
    fit = M.calibration_slope(time, event, surv_t[:, 1], ref[1], follow[:, 1])
    assert stats.loc[1, "slope"] == pytest.approx(fit.slope)
    assert stats.loc[1, "ici"] == pytest.approx(M.integrated_calibration_index(
        time, event, surv_t[:, 1], ref[1]).ici)
    own = np.exp(-np.exp(risk) * time / 10)
    table, stat, p = A.d_calibration_table(event, own)
    assert table["observed"].sum() == pytest.approx(200) and (table["expected"] == 20).all()
    ref_d = M.d_calibration(event, own)
    assert (stat, p) == pytest.approx((ref_d.statistic, ref_d.p_value))


def test_calibration_falls_back_to_fewer_groups_and_says_what_failed():
    # the 3 patients of highest predicted S are censored at 2 < t = 5: ten groups leave
    # the top group's S(5) unknown, five groups do not
    s = np.linspace(0.95, 0.2, 30)[:, None]
    time = np.r_[[2.0] * 3, np.where(np.arange(27) % 2, 3.0, 10.0)]
    event = np.r_[[False] * 3, np.arange(27) % 2 == 1]
    groups, _, notes = A.calibration_at(time, event, s, s, [5.0])
    assert groups["group"].max() == 5 and groups["n"].sum() == 30
    with pytest.raises(M.UndefinedMetricError):
        M.calibration_table(time, event, s[:, 0], 5.0, groups=10)
    time, event, risk = _data(200)
    late = float(np.quantile(time, 0.97))
    s = np.exp(-np.exp(risk) * late / 10)[:, None]
    groups, stats, notes = A.calibration_at(time, event, s, s, [late])
    assert groups.empty and "follow-up ends" in notes[0]  # no grouping works: said why
    flat = np.full((len(time), 1), 0.5)
    _, stats, notes = A.calibration_at(time, event, flat, flat, [5.0])
    assert any("slope" in n for n in notes) and np.isnan(stats.loc[0, "slope"])


def test_cv_interval_and_ranking():
    scores = [0.6, 0.65, 0.62, 0.7, 0.58]
    assert A.cv_interval(scores, 0.25) == pytest.approx(corrected_resampled_ttest(scores, 0.25)[:3])
    import pandas as pd

    r = A.ranked(pd.DataFrame({"risk": [0.3, 0.1, 0.2], "id": ["a", "b", "c"]}))
    assert r["id"].tolist() == ["b", "c", "a"] and r["rank"].tolist() == [1, 2, 3]


def test_calibration_groups_and_risk_group_curves_match_lifelines_kaplan_meier():
    """The observed S(t) of each calibration group is the group's Kaplan–Meier (censoring
    handled, not dropped) with lifelines' default log(-log) 95% interval; the risk-group
    curves are lifelines' Kaplan–Meier, tied times included."""
    lifelines = pytest.importorskip("lifelines")
    time, event, risk = _data(200, seed=3)
    time = np.ceil(time)  # ties between events and censorings
    ref = A.reference_times(time, event)
    surv_t = np.exp(-np.outer(np.exp(risk), ref) / 10)
    groups, _, notes = A.calibration_at(time, event, surv_t, surv_t, ref, groups=5)
    assert not notes and groups["t"].nunique() == len(ref)
    for j, t in enumerate(ref):
        order = np.argsort(-surv_t[:, j], kind="stable")  # group 1: highest predicted S(t)
        for g, idx in enumerate(np.array_split(order, 5), start=1):
            kmf = lifelines.KaplanMeierFitter().fit(time[idx], event[idx])
            ci = kmf.confidence_interval_survival_function_
            row = groups[(groups["t"] == t) & (groups["group"] == g)].iloc[0]
            assert row["observed"] == pytest.approx(kmf.survival_function_at_times(t).iloc[0])
            assert (row["lower"], row["upper"]) == pytest.approx(tuple(ci[ci.index <= t].iloc[-1]))
            assert row["predicted"] == pytest.approx(surv_t[idx, j].mean())
    labels = A.risk_groups(risk, 3)
    km = A.km_by_group(time, event, labels, 3)
    for g in range(3):
        curve = km[km["group"] == g]
        kmf = lifelines.KaplanMeierFitter().fit(time[labels == g], event[labels == g])
        np.testing.assert_allclose(curve["survival"],
                                   kmf.survival_function_at_times(curve["time"]).to_numpy())


def test_calibration_never_draws_more_groups_than_asked_for():
    """Asked for 3 or 4 groups, the fallback tried 5 first and drew 5 groups; now the
    groups asked for come first, fewer only when they fail."""
    time, event, risk = _data(200)
    ref = A.reference_times(time, event)[:1]
    surv_t = np.exp(-np.outer(np.exp(risk), ref) / 10)
    for asked in (3, 4):
        groups, _, notes = A.calibration_at(time, event, surv_t, surv_t, ref, groups=asked)
        assert not notes and groups["group"].max() == asked and groups["n"].sum() == 200
        expect = M.calibration_table(time, event, surv_t[:, 0], ref[0], groups=asked)
        np.testing.assert_allclose(groups["observed"], expect["observed"])
