import json
import shutil

import numpy as np
import pandas as pd
import pytest

from modalsurv.cohort import Cohort
from modalsurv.report.tables import cv_table
from modalsurv.train.cv import cross_validate, make_folds, stratification_labels


def test_folds_partition_and_stratify(cohort):
    f = make_folds(cohort, 4, 2, seed=0)
    assert list(f.columns) == ["patient", "repeat", "fold"]
    for r in range(2):
        part = f[f["repeat"] == r]
        assert sorted(part["patient"]) == sorted(cohort.ids)
        rates = [cohort.event[part["fold"].to_numpy() == k].mean() for k in range(4)]
        assert max(rates) - min(rates) < 0.15
    assert not (f[f.repeat == 0].fold.to_numpy() == f[f.repeat == 1].fold.to_numpy()).all()
    assert f.attrs["stratify"].startswith("event x time")


def test_stratification_falls_back_when_strata_are_small():
    time = np.arange(1, 21, dtype=float)
    event = np.zeros(20, dtype=bool)
    event[:3] = True
    label, how = stratification_labels(time, event, 5)
    assert label is None and "none" in how
    event[:6] = True
    label, how = stratification_labels(time, event, 5)
    assert how == "event"


def test_fewer_censored_than_folds_still_gives_every_fold_an_event():
    """12 patients, 7 events, 5 censored, 6 folds: enough events for every fold, but the
    censored stratum is smaller than the folds. Shuffled K-fold (the old fallback) left a
    fold without an event (C-index NaN) in most seeds; stratifying on the event gives
    every fold one or two, in folds of two patients."""
    time = np.arange(1, 13, dtype=float)
    event = np.isin(np.arange(12), [0, 2, 3, 5, 7, 8, 10])
    label, how = stratification_labels(time, event, 6)
    assert how == "event (fewer censored patients than folds)"
    np.testing.assert_array_equal(label, event.astype(int))
    cohort = Cohort([f"p{i}" for i in range(12)], time, event)
    for seed in range(20):
        f = make_folds(cohort, 6, 2, seed=seed)
        for r in range(2):
            fold = f[f["repeat"] == r]["fold"].to_numpy()
            assert (np.bincount(fold, minlength=6) == 2).all()
            assert (np.bincount(fold[event], minlength=6) >= 1).all(), (seed, r, fold)
    every_event = np.ones(12, dtype=bool)  # nothing censored: every fold has events anyway
    assert stratification_labels(time, every_event, 6)[1].startswith("event")


def test_summary_table_says_when_a_mean_is_over_fewer_folds():
    """A metric undefined on a fold (NaN) is left out of its mean ± std (ddof = 1): the
    table says over how many folds, so means over different folds are not read as alike."""
    from modalsurv.report.tables import summary_table
    from modalsurv.train.cv import summarize

    rows = [{"model": "modalsurv", "repeat": 0, "fold": f, "harrell_c": c, "uno_c": c,
             "ibs": b, "failed": False, "optimistic": False, "note": ""}
            for f, (c, b) in enumerate([(0.6, 0.2), (0.7, np.nan), (0.8, 0.1)])]  # fmt: skip
    summary = summarize(pd.DataFrame(rows), False, "event")
    summary["n_folds"], summary["n_repeats"] = 3, 1
    assert summary["models"]["modalsurv"]["harrell_c"]["std"] == pytest.approx(0.1)  # ddof 1
    table = summary_table(summary)
    assert table.loc[0, "harrell_c"] == "0.700 ± 0.100"
    assert table.loc[0, "ibs"] == "0.150 ± 0.071 (2 of 3 folds)"


def _tercile_cohort(events_at: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 patients with times 1..30 (tercile by hand: 1-10, 11-20, 21-30) and events at
    the given times."""
    time = np.arange(1, 31, dtype=float)
    event = np.isin(time, events_at)
    tercile = (time - 1) // 10
    return time, event, tercile.astype(int)


def test_a_stratum_of_exactly_folds_patients_is_stratified_one_smaller_is_not():
    """The boundary of the stratum-size rule: every event x time-tercile stratum with
    exactly ``folds`` (5) patients is enough for the terciles; one stratum of 4 is not,
    and the labels fall back to event x time-half."""
    odd = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]
    time, event, tercile = _tercile_cohort(odd)  # 5 events and 5 censored per tercile
    label, how = stratification_labels(time, event, 5)
    assert how == "event x time-3-quantile"
    np.testing.assert_array_equal(label, event * 3 + tercile)

    time, event, _ = _tercile_cohort([t for t in odd if t != 9])  # 4 events in tercile 1
    label, how = stratification_labels(time, event, 5)
    assert how == "event x time-2-quantile"
    np.testing.assert_array_equal(label, event * 2 + (time > 15))


def test_event_only_stratification_at_exactly_folds_events():
    """Events only among the earliest times (no time stratum has both kinds): exactly
    ``folds`` events still stratify on the event, one fewer cannot."""
    time = np.arange(1, 21, dtype=float)
    event = time <= 5
    label, how = stratification_labels(time, event, 5)
    assert how == "event"
    np.testing.assert_array_equal(label, event.astype(int))
    label, how = stratification_labels(time, time <= 4, 5)
    assert label is None and "none" in how


def test_each_fold_gets_its_share_of_every_event_x_time_stratum():
    """Where stratification is possible, every fold holds the same number (within 1) of
    each event x time-tercile stratum, counted by hand from the times."""
    odd = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]
    time, event, tercile = _tercile_cohort(odd)
    cohort = Cohort([f"p{i}" for i in range(30)], time, event)
    f = make_folds(cohort, 5, 2, seed=3)
    stratum = event * 3 + tercile
    for r in range(2):
        fold = f[f["repeat"] == r]["fold"].to_numpy()
        counts = np.array([[np.sum((fold == k) & (stratum == s)) for s in range(6)]
                           for k in range(5)])  # fmt: skip
        assert (counts.max(0) - counts.min(0) <= 1).all(), counts
        np.testing.assert_array_equal(counts, np.ones((5, 6)))  # 5 of each: one per fold


@pytest.fixture(scope="module")
def cv_run(cohort, make_config):
    cfg = make_config()
    return cross_validate(cohort, cfg, folds=3, baselines=["coxph_clinical", "coxnet", "rsf"])


def test_cv_with_missing_modalities_and_baselines_on_same_folds(cv_run, cohort):
    res = cv_run
    assert not res.optimistic and not res.summary["optimistic"]
    p = res.predictions
    assert sorted(p["patient"]) == sorted(cohort.ids)  # every patient predicted once
    assert np.isfinite(p["risk"]).all() and np.isfinite(p["expected_time"]).all()
    pmf = p.filter(like="pmf_").to_numpy()
    assert pmf.shape[1] == 9 and np.allclose(pmf.sum(1), 1.0, atol=1e-6)
    merged = p.merge(res.folds, on=["patient", "repeat"], suffixes=("", "_assigned"))
    assert (merged["fold"] == merged["fold_assigned"]).all()
    for name in ("coxph_clinical", "coxnet", "rsf"):
        b = res.baseline_predictions[res.baseline_predictions.model == name]
        key = ["patient", "repeat", "fold"]
        pd.testing.assert_frame_equal(
            b[key].sort_values(key).reset_index(drop=True),
            p[key].sort_values(key).reset_index(drop=True),
        )
    m = res.metrics
    assert set(m["model"]) == {"modalsurv", "coxph_clinical", "coxnet", "rsf"}
    assert m[["harrell_c", "uno_c", "ibs"]].notna().all().all(), m["note"].tolist()
    assert not m["failed"].any()
    stats = res.summary["models"]["modalsurv"]["harrell_c"]
    assert stats["n"] == 3 and 0 < stats["mean"] < 1
    assert len(res.models) == 1 and len(res.models[0]) == 3
    table = cv_table(res)
    assert table["model"].iloc[0] == "modalsurv" and "±" in table.loc[0, "harrell_c"]
    ens = res.ensemble(0)
    assert ens.predict_risk(cohort).shape == (len(cohort),)


def test_same_seed_same_numbers(cv_run, cohort, make_config):
    again = cross_validate(
        cohort, make_config(), folds=3, baselines=["coxph_clinical", "coxnet", "rsf"]
    )
    pd.testing.assert_frame_equal(again.metrics, cv_run.metrics)
    pd.testing.assert_frame_equal(again.predictions, cv_run.predictions)


def test_outer_fold_selection_is_labelled_optimistic(tmp_path, cohort, make_config):
    cfg = make_config(cv={"folds": 2, "selection": "outer_fold"}, train__epochs=2)
    res = cross_validate(cohort, cfg, baselines=["coxph_clinical"])
    assert res.optimistic and res.summary["optimistic"]
    m = res.metrics.set_index("model")
    assert m.loc["modalsurv", "optimistic"].all()
    assert not m.loc["coxph_clinical", "optimistic"].any()  # no early stopping there
    table = cv_table(res).set_index("model")
    assert table.loc["modalsurv", "optimistic"] and not table.loc["coxph_clinical", "optimistic"]
    res.save(tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["optimistic"] is True and saved["selection"] == "outer_fold"
    assert saved["models"]["modalsurv"]["optimistic"] is True
    for name in ("folds.csv", "predictions.csv", "metrics.csv", "config.yaml"):
        assert (tmp_path / name).exists()
    assert (tmp_path / "models" / "repeat_0" / "bundle.json").exists()


def test_failing_baseline_is_recorded_not_fatal(cohort, make_config):
    no_clin = cohort.select(["rna", "slide"])
    events = []
    res = cross_validate(
        no_clin,
        make_config(train__epochs=1),
        folds=2,
        baselines=["coxph_clinical"],
        progress=lambda e, **kw: events.append((e, kw)),
    )
    m = res.metrics[res.metrics.model == "coxph_clinical"]
    assert m["failed"].all() and m["harrell_c"].isna().all()
    assert all("clinical" in note for note in m["note"])
    assert sum(e == "baseline_failed" for e, _ in events) == 2
    assert res.summary["models"]["coxph_clinical"]["n_failed_folds"] == 2
    assert res.metrics[res.metrics.model == "modalsurv"]["harrell_c"].notna().all()


def test_a_resumed_run_equals_a_fresh_one_with_na_ids_and_auto_settings(tmp_path, cohort,
                                                                       make_config):  # fmt: skip
    """Patient ids pandas reads as missing ("NA", "None") survive a resume, and the saved
    ensemble is byte for byte the one an uninterrupted run writes (``batch_size: auto``
    recorded resolved either way)."""
    from modalsurv.cohort import Cohort

    ids = list(cohort.ids)
    ids[0], ids[1] = "NA", "None"
    named = Cohort(ids, cohort.time, cohort.event, features=dict(cohort.features),
                   present=dict(cohort.present), bag_mask=dict(cohort.bag_mask))  # fmt: skip
    cfg = make_config(train__epochs=1, train__batch_size="auto")
    fresh = cross_validate(named, cfg, folds=2, baselines=["coxph_clinical"],
                           resume_dir=tmp_path / "r")  # fmt: skip
    resumed = cross_validate(named, cfg, folds=2, baselines=["coxph_clinical"],
                             resume_dir=tmp_path / "r")  # every fold read back  # fmt: skip
    pd.testing.assert_frame_equal(resumed.predictions, fresh.predictions)
    pd.testing.assert_frame_equal(resumed.baseline_predictions, fresh.baseline_predictions)
    assert {"NA", "None"} <= set(resumed.predictions["patient"])
    fresh.save(tmp_path / "a")
    resumed.save(tmp_path / "b")
    bundle = "models/repeat_0/bundle.json"
    assert (tmp_path / "a" / bundle).read_bytes() == (tmp_path / "b" / bundle).read_bytes()


def test_resume_continues_from_finished_folds(tmp_path, cohort, make_config):
    cfg = make_config(train__epochs=2)
    full = cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"])
    first = cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"], resume_dir=tmp_path)
    pd.testing.assert_frame_equal(first.metrics, full.metrics)
    # interruption: fold 1 never finished (its folder half written, no done.json)
    (tmp_path / "repeat_0" / "fold_1" / "done.json").unlink()
    (tmp_path / "repeat_0" / "fold_1" / "metrics.csv").unlink()
    events = []
    resumed = cross_validate(
        cohort,
        cfg,
        folds=2,
        baselines=["coxph_clinical"],
        resume_dir=tmp_path,
        progress=lambda e, **kw: events.append((e, kw)),
    )
    assert ("fold_resumed", {"repeat": 0, "fold": 0}) in events
    assert sum(e == "fold_start" for e, _ in events) == 1
    pd.testing.assert_frame_equal(resumed.metrics, full.metrics)
    pd.testing.assert_frame_equal(resumed.predictions, full.predictions)
    pd.testing.assert_frame_equal(resumed.baseline_predictions, full.baseline_predictions)
    np.testing.assert_array_equal(
        resumed.ensemble().predict_risk(cohort), full.ensemble().predict_risk(cohort)
    )
    # a different run refuses the same directory
    with pytest.raises(ValueError, match="different run"):
        cross_validate(
            cohort,
            make_config(train__epochs=3),
            folds=2,
            baselines=["coxph_clinical"],
            resume_dir=tmp_path,
        )
    shutil.rmtree(tmp_path)


def test_no_leakage_across_folds(cohort, make_config):
    """Changing only fold-0 test rows (extreme canary values) leaves fold 0's fitted state unchanged."""
    cfg = make_config(train__epochs=1)
    base = cross_validate(cohort, cfg, folds=3, baselines=[])
    test0 = (
        base.folds.query("repeat == 0").set_index("patient").loc[cohort.ids, "fold"] == 0
    ).to_numpy()
    slide = cohort.features["slide"].copy()
    slide[test0, 0] = 1e6
    clin = cohort.features["clinical"].copy()
    clin[test0, 1] = -1e6
    feats = dict(cohort.features, slide=slide, clinical=clin)
    # (times stay: changing them would change the time-stratified folds themselves)
    canary = Cohort(
        cohort.ids, cohort.time, cohort.event, feats, cohort.present, bag_mask=cohort.bag_mask
    )
    res = cross_validate(canary, cfg, folds=3, baselines=[])
    pd.testing.assert_frame_equal(res.folds, base.folds)
    a, b = base.models[0][0], res.models[0][0]
    np.testing.assert_array_equal(a.cuts, b.cuts)
    assert a.t_ref_ == b.t_ref_
    (ma, aa), (mb, ab) = a.preprocessor_.get_state(), b.preprocessor_.get_state()
    assert ma == mb
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k])
    np.testing.assert_array_equal(a.predict_risk(cohort), b.predict_risk(cohort))


def test_a_baseline_failing_on_every_fold_is_reported_with_its_reason(make_cohort, make_config):
    from modalsurv.report.tables import paired_summary

    cohort = make_cohort(n=40, seed=4).select(["rna", "slide"])  # no clinical modality
    cfg = make_config(cv__folds=2, train__epochs=2)
    res = cross_validate(cohort, cfg, baselines=["coxph_clinical"])
    stats = res.summary["models"]["coxph_clinical"]
    assert stats["n_failed_folds"] == 2 and "failed:" in stats["failure"]
    table = cv_table(res).set_index("model")
    assert table.loc["coxph_clinical", "harrell_c"] == "failed"
    assert "failed:" in table.loc["coxph_clinical", "failure"]
    assert table.loc["modalsurv", "failure"] == ""
    cell = paired_summary(res).set_index("ModalSurv minus").loc["coxph_clinical", "ΔC (95% CI)"]
    assert "coxph_clinical failed" in cell and "nan" not in cell


def test_summary_holds_the_failure_signature_checks(cv_run, cohort):
    diag = cv_run.summary["diagnostics"]
    checks = {c["check"]: c for c in diag["checks"]}
    assert set(checks) == {"fold_sd", "worse_than_clinical", "embedding_alignment"}
    assert diag["flags"] == [c["check"] for c in diag["checks"] if c["flag"]]
    c = cv_run.metrics.loc[cv_run.metrics.model == "modalsurv", "harrell_c"]
    assert checks["fold_sd"]["value"] == pytest.approx(c.std(ddof=1))
    row = cv_run.paired().set_index("reference").loc["coxph_clinical"]
    assert checks["worse_than_clinical"]["value"] == pytest.approx(row["mean_difference"])
    assert checks["worse_than_clinical"]["ci_high"] == pytest.approx(row["ci_high"])
    pairs = {(p["a"], p["b"]): p for p in checks["embedding_alignment"]["pairs"]}
    assert len(pairs) == 6  # 4 modalities
    both = cohort.present["rna"] & cohort.present["slide"]
    assert pairs[("rna", "slide")]["n_patients"] == both.sum()  # out-of-fold, every patient once
    json.dumps(cv_run.summary)  # metrics.json stays plain JSON


def test_folds_finishing_in_any_order_are_assembled_in_fold_order(cohort, make_config, tmp_path):
    from modalsurv.train.cv import SequentialFolds

    class Reversed(SequentialFolds):
        """Hands the folds back last first, as a parallel executor may."""

        def run_folds(self, cohort, config, baselines, jobs, on_done, progress):
            seen.extend((j.repeat, j.fold) for j in jobs)
            super().run_folds(cohort, config, baselines, jobs[::-1], on_done, progress)

    cfg = make_config(cv__repeats=2)
    seen: list = []
    plain = cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"])
    events = []
    backwards = cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"],
                               resume_dir=tmp_path, executor=Reversed(),
                               progress=lambda e, **kw: events.append((e, kw)))  # fmt: skip
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [(kw["repeat"], kw["fold"]) for e, kw in events if e == "fold_end"] == seen[::-1]
    assert events[0] == ("cv_start", {"n_folds": 2, "n_repeats": 2})
    for name in ("metrics", "predictions", "baseline_predictions", "folds"):
        pd.testing.assert_frame_equal(getattr(backwards, name), getattr(plain, name))
    assert [[m.config.seed for m in r] for r in backwards.models] == [[0, 1], [1000, 1001]]
    assert all((tmp_path / f"repeat_{r}" / f"fold_{f}" / "done.json").is_file() for r, f in seen)


def test_an_executor_that_loses_a_fold_is_an_error(cohort, make_config):
    class Lossy:
        def run_folds(self, cohort, config, baselines, jobs, on_done, progress):
            pass

    with pytest.raises(RuntimeError, match=r"without \(repeat, fold\) \[\(0, 0\), \(0, 1\)\]"):
        cross_validate(cohort, make_config(), folds=2, executor=Lossy())


def test_a_constant_risk_is_noted_where_its_c_of_one_half_is_reported(cohort):
    """A model that ranks no one scores C = 0.5 by ties; the fold's note says so, so a
    reader does not take it for a chance-level ranking (was: no note)."""
    from modalsurv.train.cv import score_fold

    train, test = cohort.subset(np.arange(50)), cohort.subset(np.arange(50, 80))
    scores, notes = score_fold(train, test, np.full(len(test), 0.3), None, np.empty(0))
    assert scores["harrell_c"] == 0.5
    assert any("constant risk on the test fold" in n for n in notes)
    rng = np.random.default_rng(0)
    _, notes = score_fold(train, test, rng.normal(size=len(test)), None, np.empty(0))
    assert not any("constant risk" in n for n in notes)


def test_no_outer_test_row_reaches_the_stack_or_a_baseline(cohort, make_config, monkeypatch):
    """Every modality of the fold-0 test rows rewritten (values, which patients have it,
    which tiles are valid): the stack (its peers' shared feature matrix included) and
    every baseline fitted on that fold predict its training rows exactly as before, and
    each test patient's risk does not depend on which other patients are predicted."""
    import modalsurv.train.cv as cv

    cfg = make_config(train__epochs=1, model__stack=["modalsurv", "coxph_clinical", "coxnet",
                                                     "rsf"])  # fmt: skip
    names = ["coxph_clinical", "coxnet", "rsf"]
    fold = make_folds(cohort, 3, 1, seed=0)["fold"].to_numpy()
    tr, te = np.flatnonzero(fold != 0), np.flatnonzero(fold == 0)
    rng = np.random.default_rng(5)
    feats = {m: x.copy() for m, x in cohort.features.items()}
    present = {m: p.copy() for m, p in cohort.present.items()}
    for m, x in feats.items():
        x[te] = np.abs(rng.normal(size=x[te].shape)) * 50
        if m != "clinical":
            present[m][te] = ~present[m][te]
    masks = {"wsi": cohort.bag_mask["wsi"].copy()}
    masks["wsi"][te] = True
    other = Cohort(cohort.ids, cohort.time, cohort.event, feats, present, bag_mask=masks)
    fitted: list = []
    make = cv.make_baseline
    monkeypatch.setattr(cv, "make_baseline", lambda *a: fitted.append(make(*a)) or fitted[-1])
    runs = [cv._run_fold(c, tr, te, cfg, names, 0, 0, 7, None)[0] for c in (cohort, other)]
    train = cohort.subset(tr)
    for a, b in zip([runs[0], *fitted[:3]], [runs[1], *fitted[3:]]):
        np.testing.assert_array_equal(a.predict_risk(train), b.predict_risk(train))
    test = other.subset(te)
    for model in (runs[1], *fitted[3:]):
        alone = np.concatenate([model.predict_risk(test[i : i + 1]) for i in range(len(te))])
        np.testing.assert_allclose(alone, model.predict_risk(test), rtol=1e-5, atol=1e-6)


def test_a_data_fraction_is_scored_against_the_whole_training_part(cohort, make_config):
    """Under ``cv.train_fraction`` the model fits on a subset, but Uno's censoring estimate
    and the IBS grid come from the whole outer training part's labels (never a test row),
    so each fraction is scored by one yardstick on the same test folds. Was: the subset's
    own estimate, which moved with the fraction."""
    from modalsurv.survival import metrics as sm

    cfg = make_config(cv__train_fraction=0.5)
    res = cross_validate(cohort, cfg, folds=3, baselines=["coxph_clinical"])
    fold_of = res.folds.loc[res.folds["repeat"] == 0, "fold"].to_numpy()
    preds = res.baseline_predictions
    checked = 0
    for f in range(3):
        whole = np.flatnonzero(fold_of != f)
        test = np.flatnonzero(fold_of == f)
        row = res.metrics[(res.metrics["model"] == "coxph_clinical") & (res.metrics["fold"] == f)]
        assert int(row["n_train"].iloc[0]) < len(whole)  # fitted on the fraction
        p = preds[(preds["model"] == "coxph_clinical") & (preds["fold"] == f)]
        p = p.set_index("patient").loc[cohort.ids[test].astype(str)]
        expected = sm.uno_concordance(cohort.time[whole], cohort.event[whole], cohort.time[test],
                                      cohort.event[test], p["risk"].to_numpy())  # fmt: skip
        if np.isfinite(expected):
            assert row["uno_c"].iloc[0] == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked >= 2


def test_a_test_event_past_the_last_censored_training_time_leaves_uno_c_defined():
    """The training part's latest patient is censored, so its censoring estimate is 0
    there; a test event after it had weight 1/0 and the fold's Uno C was NaN. Uno's C now
    weighs the test events before the last training time (as ``evaluate`` does), the
    value scikit-survival gives with that tau."""
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv

    from modalsurv.cohort import Cohort
    from modalsurv.train.cv import score_fold

    rng = np.random.default_rng(3)
    t_tr = rng.uniform(1, 10, 40)
    e_tr = rng.random(40) < 0.6
    e_tr[np.argmax(t_tr)] = False  # the last training time: censored
    t_te = np.append(rng.uniform(1, 9, 19), t_tr.max() + 1.0)
    e_te = np.append(rng.random(19) < 0.6, True)  # an event after it
    x = {"clinical": np.zeros((40, 1), np.float32)}
    train = Cohort([f"a{i}" for i in range(40)], t_tr, e_tr, features=x)
    test = Cohort([f"b{i}" for i in range(20)], t_te, e_te,
                  features={"clinical": np.zeros((20, 1), np.float32)})  # fmt: skip
    risk = rng.normal(size=20)
    scores, notes = score_fold(train, test, risk, None, np.empty(0))
    expected = concordance_index_ipcw(Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e_te, t_te),
                                      risk, tau=t_tr.max())[0]  # fmt: skip
    assert np.isfinite(scores["uno_c"]), notes
    assert scores["uno_c"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("damage", ["empty", "cut_in_a_row", "cut_at_a_row", "baselines_cut"])
def test_a_finished_folds_damaged_table_is_refused_naming_the_file(tmp_path, cohort, make_config,
                                                                   damage):  # fmt: skip
    """A predictions.csv an OS crash left empty (renamed into place before its bytes reached
    the disk) failed the resume with pandas' bare "No columns to parse from file"; one cut
    short was read back as fewer rows or a number missing its last digits, silently."""
    from modalsurv.errors import FeatureError

    cfg = make_config(train__epochs=1)
    cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"], resume_dir=tmp_path)
    fold = tmp_path / "repeat_0" / "fold_1"
    name = "baseline_predictions.csv" if damage == "baselines_cut" else "predictions.csv"
    path = fold / name
    raw = path.read_bytes()
    last_row_dropped = raw[: raw.rindex(b"\n", 0, -1) + 1]
    cut = {"empty": b"", "cut_in_a_row": raw[:-3]}.get(damage, last_row_dropped)
    path.write_bytes(cut)
    with pytest.raises(FeatureError, match="redo this fold") as err:
        cross_validate(cohort, cfg, folds=2, baselines=["coxph_clinical"], resume_dir=tmp_path)
    assert err.value.path == str(path)


def test_a_resume_with_another_train_threads_warns_like_another_omp_num_threads(
        tmp_path, cohort, make_config):  # fmt: skip
    """train.threads changes only the order floats are summed in, as OMP_NUM_THREADS does
    (which warns): it refused the resume as "a different run", where a real change of the
    run still is."""
    import warnings

    from modalsurv.errors import DataWarning

    first = cross_validate(cohort, make_config(train__epochs=1, train__threads=2), folds=2,
                           resume_dir=tmp_path)  # fmt: skip
    with pytest.warns(DataWarning, match=r"train.threads 2, this run has 1.*train.threads=2"):
        again = cross_validate(cohort, make_config(train__epochs=1, train__threads=1), folds=2,
                               resume_dir=tmp_path)  # fmt: skip
    pd.testing.assert_frame_equal(again.predictions, first.predictions)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the same count: no word
        cross_validate(cohort, make_config(train__epochs=1, train__threads=2), folds=2,
                       resume_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="different run"):
        cross_validate(cohort, make_config(train__epochs=2, train__threads=1), folds=2,
                       resume_dir=tmp_path)  # fmt: skip


def test_a_resume_warns_by_each_finished_folds_own_train_threads(tmp_path, cohort, make_config):
    """Only the first run's train.threads was recorded (the run description): after a
    resume with another count had trained a fold, a resume with the first count said
    nothing, though a finished fold was trained with the other."""
    from modalsurv.errors import DataWarning

    def run(threads):
        return cross_validate(cohort, make_config(train__epochs=1, train__threads=threads),
                              folds=2, resume_dir=tmp_path)  # fmt: skip

    first = run(2)
    (tmp_path / "repeat_0" / "fold_1" / "done.json").unlink()  # interrupted before fold 1
    with pytest.warns(DataWarning, match=r"1 of the 1 finished folds trained with train.threads 2"):
        run(1)  # fold 1 trained with 1 thread
    with pytest.warns(DataWarning, match=r"1 of the 2 finished folds .*threads 1, this run"
                                         r" has 2.*mix counts"):  # fmt: skip
        again = run(2)
    pd.testing.assert_frame_equal(again.folds, first.folds)
