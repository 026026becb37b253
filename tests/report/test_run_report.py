"""A run's report is built from the run folder's files alone: by `train`, by `evaluate`,
and by `modalsurv report` on a copy anywhere, with every figure's data beside it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modalsurv.config import load_config
from modalsurv.data.sources import load_data
from modalsurv.errors import ConfigError
from modalsurv.report import analysis as A
from modalsurv.report.run_files import RunFolder, is_run_folder
from modalsurv.report.run_report import build_run_report, diagnostics_of
from modalsurv.train.cv import ibs_grid
from modalsurv.train.ensemble import FoldEnsemble

from .conftest import RUNNER, invoke

SECTIONS = ["Failure-signature checks", "Mean ± std over outer folds", "Per-fold scores",
            "ModalSurv minus each baseline", "Out-of-fold risk groups", "Time-dependent AUC",
            "Brier score over time", "Calibration at t =", "Calibration slope", "D-calibration",
            "Gating weights", "Per-patient uncertainty: out-of-fold",
            "Per-patient uncertainty: external cohort site_b", "CV → external gap",
            "Modality embedding alignment"]  # fmt: skip


def _headings(page: Path) -> list[str]:
    return re.findall(r"<h2 id='[^']*'>([^<]*)</h2>", page.read_text("utf-8"))


def _links(page: Path) -> list[str]:
    return re.findall(r"href='(report_data/[^']+\.csv)'", page.read_text("utf-8"))


def test_train_and_evaluate_write_the_full_page(run_dir):
    page = run_dir / "report.html"
    heads = " / ".join(_headings(page))
    for section in SECTIONS:
        assert section in heads, section
    links = _links(page)
    assert len(links) >= 10 and len(set(links)) == len(links)
    for link in links:  # every figure has its data beside the page
        assert not pd.read_csv(run_dir / link).empty, link
    gap = pd.read_csv(run_dir / "report_data" / "cv-external-gap.csv")
    assert gap["label"].tolist() == ["cross-validation", "site_b"]
    ev = json.loads((run_dir / "evaluation_site_b.json").read_text())
    assert gap["mean"].iloc[1] == pytest.approx(ev["harrell_c"])
    summary = json.loads((run_dir / "metrics.json").read_text())
    names = [c["check"] for c in summary["diagnostics"]["checks"]]
    assert names == ["fold_sd", "worse_than_clinical", "embedding_alignment",
                     "external_drop:site_b"]
    drop = summary["diagnostics"]["checks"][-1]
    assert drop["value"] == pytest.approx(summary["models"]["modalsurv"]["harrell_c"]["mean"]
                                          - ev["harrell_c"])  # fmt: skip
    assert "external_drop:site_b" in page.read_text("utf-8")


def test_out_of_fold_curves_from_files_equal_the_fold_models_predictions(run_dir):
    rf = RunFolder.load(run_dir)
    config = load_config(run_dir / "config.yaml")
    cohort = load_data(config.data, seed=config.seed).cohort
    ens = FoldEnsemble.load(run_dir / "models" / "repeat_0")
    first = rf.first
    grid = ibs_grid(first["time"], first["time"])
    surv = rf.out_of_fold_survival(grid)
    own = rf.survival_at_own(first["time"].to_numpy())
    for f, rows in first.groupby("fold"):
        held_out = cohort.subset(cohort.index_of(rows["patient"]))
        model = ens.members[int(f)]
        np.testing.assert_allclose(surv[rows.index], model.predict_survival(held_out, grid),
                                   rtol=0, atol=1e-12)  # fmt: skip
        direct = np.diag(model.predict_survival(held_out, rows["time"].to_numpy()))
        np.testing.assert_allclose(own[rows.index], direct, rtol=0, atol=1e-12)
    unc = pd.read_csv(run_dir / "uncertainty.csv", dtype={"patient": str})
    assert unc["patient"].tolist() == first["patient"].tolist()
    # one fold model per patient; the stacked default's members are its inner models
    assert (unc["n_members"] == ens.members[0].n_members).all()
    assert ens.members[0].n_members > 1
    np.testing.assert_allclose(unc["risk_mean"], unc["risk"], atol=1e-6)


def test_report_rebuilds_a_copied_folder_without_models_or_checkpoints(run_dir, tmp_path):
    copy = Path(shutil.copytree(run_dir, tmp_path / "moved", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    assert is_run_folder(copy) and not (copy / "report.html").exists()
    out = tmp_path / "elsewhere" / "page.html"
    res = invoke("report", copy, "--out", out, "--title", "Moved run")
    assert str(out) in "".join(res.output.split())
    text = out.read_text("utf-8")
    assert "<title>Moved run</title>" in text and "has no models/" in text
    assert "Calibration at" not in text and "Out-of-fold risk groups" in text
    for link in _links(out):
        assert (out.parent / link).is_file()
    assert not (copy / "report.html").exists()  # --out: the folder is left as it was


def test_a_patient_without_a_finite_risk_is_left_out_of_the_risk_groups_with_a_note(
        run_dir, tmp_path):  # fmt: skip
    """risk_groups refuses a NaN risk (it used to make a garbage group of it): the page
    still builds, without that patient in the groups and AUC(t), and says so."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "nan", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    pred = pd.read_csv(copy / "predictions.csv", dtype={"patient": str})
    pred.loc[pred.index[0], "risk"] = np.nan
    pred.to_csv(copy / "predictions.csv", index=False)
    invoke("report", copy)
    text = (copy / "report.html").read_text("utf-8")
    assert "Out-of-fold risk groups" in text
    assert "1 of " in text and "no finite out-of-fold risk" in text


def test_rebuilding_keeps_the_title_and_takes_calibration_times(run_dir, tmp_path):
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints")))  # fmt: skip
    invoke("report", copy, "--times", "4,9")
    text = (copy / "report.html").read_text("utf-8")
    assert "<title>modalsurv run</title>" in text  # train's title, kept in report.json
    assert "Calibration at t = 4, 9" in text
    assert pd.read_csv(copy / "report_data" / "calibration.csv")["t"].unique().tolist() == [4, 9]


def test_calibration_times_are_not_kept_for_later_pages_and_duplicates_are_dropped(run_dir,
                                                                                   tmp_path):
    """--times is for the page asked for: a later rebuild without it uses the default (the
    quartiles of the event times), as the help says; a time given twice is drawn once."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints")))  # fmt: skip
    invoke("report", copy, "--times", "4,9,4")
    assert "Calibration at t = 4, 9</h2>" in (copy / "report.html").read_text("utf-8")
    assert pd.read_csv(copy / "report_data" / "calibration.csv")["t"].unique().tolist() == [4, 9]
    assert "times" not in json.loads((copy / "report.json").read_text())
    invoke("report", copy)
    data = RunFolder.load(copy).first
    quartiles = A.reference_times(data["time"].to_numpy(float), data["event"].to_numpy(bool))
    shown = [t for t in quartiles if 0 < t < data["time"].max()]
    text = (copy / "report.html").read_text("utf-8")
    assert f"Calibration at t = {', '.join(f'{t:g}' for t in shown)}</h2>" in text


def test_a_run_trained_before_diagnostics_still_gets_its_checks(run_dir, tmp_path):
    copy = Path(shutil.copytree(run_dir, tmp_path / "old", ignore=shutil.ignore_patterns(
        "checkpoints", "evaluation_*")))  # fmt: skip
    summary = json.loads((copy / "metrics.json").read_text())
    del summary["diagnostics"]
    (copy / "metrics.json").write_text(json.dumps(summary))
    (copy / "evaluation_far.json").write_text(json.dumps({"cohort": "far", "n": 30, "events": 9,
                                                          "harrell_c": 0.2}))  # fmt: skip
    diag = diagnostics_of(RunFolder.load(copy))
    assert [c["check"] for c in diag["checks"]] == ["fold_sd", "worse_than_clinical",
                                                    "external_drop:far"]
    assert "external_drop:far" in diag["flags"]
    page = build_run_report(copy)
    text = page.read_text("utf-8")
    assert "<p class='warn'>⚠ external_drop:far" in text  # flagged at the top
    assert "Modality embedding alignment" not in text  # needs the cohort: not recorded


def test_report_refuses_what_is_not_a_run_or_grid_folder(tmp_path):
    res = RUNNER.invoke(__import__("modalsurv.cli").cli.app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "metrics.csv is missing" in " ".join(res.output.split())
    res = RUNNER.invoke(__import__("modalsurv.cli").cli.app, ["report", str(tmp_path / "no")])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_cox_curves_come_from_each_fold_models_breslow_baseline(tmp_path):
    from modalsurv.config import parse_config
    from modalsurv.runs import train_run

    from .conftest import run_config

    cfg = run_config(n=40)
    cfg.update(baselines=[], cv={"folds": 2})
    cfg["model"] = {**cfg["model"], "head": "cox", "fusion": "concat"}
    cfg["train"] = {**cfg["train"], "n_init": 1}
    config = parse_config(cfg)
    result = train_run(config, tmp_path / "cox")
    rf = RunFolder.load(tmp_path / "cox")
    cohort = load_data(config.data, seed=config.seed).cohort
    grid = np.array([1.0, 5.0, 12.0])
    surv = rf.out_of_fold_survival(grid)
    for f, rows in rf.first.groupby("fold"):
        held_out = cohort.subset(cohort.index_of(rows["patient"]))
        np.testing.assert_allclose(surv[rows.index],
                                   result.models[0][int(f)].predict_survival(held_out, grid),
                                   rtol=0, atol=1e-12)  # fmt: skip
    heads = _headings(tmp_path / "cox" / "report.html")
    assert "Brier score over time" in heads and "D-calibration" in heads
    assert not any(h.startswith("Gating weights") for h in heads)  # concat: no gates


def test_with_repeats_each_heading_says_whether_it_is_repeat_0_or_every_repeat(run_dir,
                                                                               tmp_path):
    """cv.repeats > 1: the out-of-fold figures are repeat 0's, the scores every repeat's;
    the page used to mix them without a word."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints")))  # fmt: skip
    for name in ("predictions.csv", "metrics.csv"):  # a second repeat, as cv.repeats: 2 writes
        table = pd.read_csv(copy / name, dtype={"patient": str})
        pd.concat([table, table.assign(repeat=1)]).to_csv(copy / name, index=False)
    heads = _headings(build_run_report(copy, tmp_path / "page.html"))
    for head in ("Mean ± std over outer folds", "Per-fold scores", "ModalSurv minus each"):
        assert any(h.startswith(head) and h.endswith("(all 2 repeats)") for h in heads), head
    for head in ("Out-of-fold risk groups", "Time-dependent AUC", "Brier score over time",
                 "Calibration at t =", "D-calibration", "Gating weights"):
        assert any(h.startswith(head) and h.endswith("(repeat 0 of 2)") for h in heads), head
    text = (tmp_path / "page.html").read_text("utf-8")
    assert "cv.repeats = 2" in text
    # one repeat: the headings are as they were
    assert "Per-fold scores" in _headings(build_run_report(run_dir, tmp_path / "one.html"))


def test_patient_ids_like_na_are_kept_in_every_table_the_report_reads(run_dir, tmp_path):
    """"NA", "nan", "null" are patient ids: predictions.csv kept them, but the folds, gate
    weights, uncertainty and external predictions were read with pandas' default and made
    them NaN, so the uncertainty figure's data lost those patients' ids."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "ids", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    names = ["NA", "nan", "null"]
    for name in ("predictions.csv", "folds.csv", "gate_weights.csv", "uncertainty.csv",
                 "evaluation_site_b_predictions.csv"):  # fmt: skip
        table = pd.read_csv(copy / name, dtype={"patient": str})
        ids = dict(zip(sorted(set(table["patient"]))[:3], names))
        table.assign(patient=table["patient"].replace(ids)).to_csv(copy / name, index=False)
    rf = RunFolder.load(copy)
    for table in (rf.first, rf.folds, rf.uncertainty, rf.evaluation_predictions["site_b"],
                  rf.gate_weights.reset_index()):  # fmt: skip
        assert set(names) <= set(table["patient"]), table.columns.tolist()
    assert rf.uncertainty.select_dtypes("number").columns.size >= 5  # numbers still numbers
    build_run_report(copy)
    shown = pd.read_csv(copy / "report_data" / "uncertainty-out-of-fold.csv",
                        dtype={"patient": str}, keep_default_na=False)  # fmt: skip
    assert set(names) <= set(shown["patient"])


def test_a_build_that_fails_half_way_leaves_no_figure_open(run_dir, tmp_path, monkeypatch):
    """The page closes each figure as it embeds it; a build that raised after drawing some
    (a damaged evaluation file, an interrupt) left them all open in pyplot, piling up over
    the reports of a long session."""
    import matplotlib.pyplot as plt

    from modalsurv.report import run_report as R

    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    before = set(plt.get_fignums())
    drawn = []

    def fails(run):
        drawn.extend(set(plt.get_fignums()) - before)  # the figures drawn by then
        raise RuntimeError("evaluation file damaged")

    monkeypatch.setattr(R, "_external", fails)
    with pytest.raises(RuntimeError, match="damaged"):
        build_run_report(copy)
    assert len(drawn) >= 2
    assert set(plt.get_fignums()) == before
    assert not (copy / "report.html").exists()
    caller = plt.figure()  # a figure of the caller's, drawn before, is left alone
    kept = set(plt.get_fignums())
    with pytest.raises(RuntimeError):
        build_run_report(copy)
    assert set(plt.get_fignums()) == kept
    plt.close(caller)


def test_a_modality_no_patient_has_is_named_so_in_the_gating_caption(run_dir, tmp_path):
    """A modality absent for every patient has no gate weight (NaN by construction): the
    caption printed its mean weight as "nan"."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    gates = pd.read_csv(copy / "gate_weights.csv", dtype={"patient": str})
    absent = gates.columns[-1]
    gates.assign(**{absent: np.nan}).to_csv(copy / "gate_weights.csv", index=False)
    text = build_run_report(copy).read_text("utf-8")
    caption = re.search(r"<p>mean weight: ([^<]*)</p>", text).group(1)
    assert f"{absent} – (no patient has it)" in caption and "nan" not in caption
    shown = pd.read_csv(copy / "report_data" / "gate-weights.csv")
    assert shown[absent].isna().all() and shown.drop(columns=[absent, "patient"]).notna().any().all()


@pytest.mark.parametrize("content", ['{"title": "cut sho', '["a list"]', '{"title": 3}'])
def test_a_damaged_report_json_is_a_data_error_naming_it_not_an_internal_error(
        run_dir, tmp_path, content):  # fmt: skip
    """report.json only keeps the page's title; a damaged one (cut short, edited) stopped
    `modalsurv report` with "internal error: JSONDecodeError ... this is a bug"."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints", "models", "report*")))  # fmt: skip
    (copy / "report.json").write_text(content)
    res = RUNNER.invoke(__import__("modalsurv.cli").cli.app, ["report", str(copy)])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and "report.json" in said and "--title" in said, said
    assert "internal error" not in said and not (copy / "report.html").exists()
    invoke("report", copy, "--title", "Kept")  # the way out it names
    assert "<title>Kept</title>" in (copy / "report.html").read_text("utf-8")
    assert json.loads((copy / "report.json").read_text()) == {"title": "Kept"}


def test_a_patient_without_a_finite_prediction_is_left_out_of_brier_and_calibration(
        run_dir, tmp_path):  # fmt: skip
    """With the fold models at hand, one patient without a finite prediction voided the
    Brier score, the calibration at every time and D-calibration (a note each), though
    the risk groups leave such a patient out: the curves now leave it out too, and say so."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "nan", ignore=shutil.ignore_patterns(
        "checkpoints", "report*")))  # fmt: skip
    pred = pd.read_csv(copy / "predictions.csv", dtype={"patient": str})
    lost = [c for c in pred.columns if c.startswith("pmf_")] + ["risk"]
    pred.loc[pred.index[0], lost] = np.nan
    pred.to_csv(copy / "predictions.csv", index=False)
    heads = " / ".join(_headings(build_run_report(copy)))
    for head in ("Brier score over time", "Calibration at t =", "D-calibration"):
        assert head in heads, head
    text = (copy / "report.html").read_text("utf-8")
    assert "the Brier score, calibration and D-calibration leave them out" in text
    assert "is not finite" not in text
    rf = RunFolder.load(copy)
    keep = rf.first["risk"].notna().to_numpy()
    assert (~keep).sum() == 1
    calib = pd.read_csv(copy / "report_data" / "calibration.csv")
    assert (calib.groupby("t")["n"].sum() == keep.sum()).all()
    shown = pd.read_csv(copy / "report_data" / "brier-score.csv")
    time, event = rf.first["time"].to_numpy(float), rf.first["event"].to_numpy(bool)
    surv = rf.out_of_fold_survival(shown["time"].to_numpy())
    expect, _, _ = A.brier_table(time[keep], event[keep], surv[keep], shown["time"])
    np.testing.assert_allclose(shown["brier"], expect["brier"], rtol=1e-12)
    d_cal = pd.read_csv(copy / "report_data" / "d-calibration.csv")
    assert d_cal["observed"].sum() == pytest.approx(keep.sum())


def test_the_brier_grid_lies_inside_the_follow_up_of_the_patients_it_scores(run_dir, tmp_path):
    """The Brier grid was built from every patient's times, then scored on those with a
    finite prediction: with the shortest follow-ups among those left out, its first
    times lay before the rest's follow-up and the whole Brier figure was dropped
    ("times must lie within the test follow-up")."""
    from modalsurv.train.cv import ibs_grid

    copy = Path(shutil.copytree(run_dir, tmp_path / "short", ignore=shutil.ignore_patterns(
        "checkpoints", "report*")))  # fmt: skip
    pred = pd.read_csv(copy / "predictions.csv", dtype={"patient": str})
    first = pred.index[pred["repeat"] == 0]
    shortest = pred.loc[first, "time"].sort_values(kind="stable").index[:10]
    lost = [c for c in pred.columns if c.startswith("pmf_")] + ["risk"]
    pred.loc[shortest, lost] = np.nan
    pred.to_csv(copy / "predictions.csv", index=False)
    text = build_run_report(copy).read_text("utf-8")
    assert "Brier score over time" in " / ".join(_headings(copy / "report.html"))
    assert "times must lie within" not in text
    rf = RunFolder.load(copy)
    keep = np.isfinite(rf.first["risk"].to_numpy(float))
    time = rf.first["time"].to_numpy(float)[keep]
    shown = pd.read_csv(copy / "report_data" / "brier-score.csv")
    assert shown["time"].min() >= time.min() and shown["time"].max() < time.max()
    np.testing.assert_allclose(shown["time"], ibs_grid(time, time))


def test_with_repeats_the_brier_caption_says_its_mean_ibs_pools_every_repeat(run_dir, tmp_path):
    """The Brier figure (headed "repeat 0 of 2") quoted the summary's mean IBS over folds,
    which pools every repeat, as if it were repeat 0's: the caption now says so."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(
        "checkpoints", "report*")))  # fmt: skip
    for name in ("predictions.csv", "metrics.csv"):  # a second repeat, as cv.repeats: 2 writes
        table = pd.read_csv(copy / name, dtype={"patient": str})
        pd.concat([table, table.assign(repeat=1)]).to_csv(copy / name, index=False)
    text = build_run_report(copy, tmp_path / "page.html").read_text("utf-8")
    assert "mean IBS over folds of all 2 repeats" in text
    one = build_run_report(run_dir, tmp_path / "one.html").read_text("utf-8")
    assert "mean IBS over folds 0." in one  # one repeat: as it was


def test_models_of_fewer_folds_than_the_predictions_are_a_named_error(run_dir, tmp_path):
    """A models/ folder left from an earlier run with fewer folds: the report's curves said
    IndexError (an internal error); now a FeatureError naming models/repeat_0."""
    from modalsurv.errors import FeatureError

    copy = Path(shutil.copytree(run_dir, tmp_path / "stale", ignore=shutil.ignore_patterns(
        "checkpoints", "report*")))  # fmt: skip
    preds = pd.read_csv(copy / "predictions.csv", dtype={"patient": str})
    preds.loc[preds["fold"] == preds["fold"].max(), "fold"] = 7
    preds.to_csv(copy / "predictions.csv", index=False)
    rf = RunFolder.load(copy)
    with pytest.raises(FeatureError, match=r"fold 7.*fold models.*not this run's") as err:
        rf.out_of_fold_survival([1.0, 2.0])
    assert "repeat_0" in str(err.value)


def test_calibration_times_come_from_the_patients_scored(run_dir, tmp_path):
    """The default calibration times were the quartiles of every patient's event times,
    though the calibration scores only those with a finite out-of-fold risk: with the
    early events left unscored, the times sat where the scored patients have few events
    (and an asked time past their follow-up passed the check, then vanished)."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "early", ignore=shutil.ignore_patterns(
        "checkpoints", "report*")))  # fmt: skip
    pred = pd.read_csv(copy / "predictions.csv", dtype={"patient": str})
    first = pred[pred["repeat"] == 0]
    early = first[first["event"].astype(bool)].sort_values("time", kind="stable").index[:8]
    longest = first.index[first["time"] == first["time"].max()]  # censored at the end
    lost = [c for c in pred.columns if c.startswith("pmf_")] + ["risk"]
    pred.loc[[*early, *longest], lost] = np.nan
    pred.to_csv(copy / "predictions.csv", index=False)
    rf = RunFolder.load(copy)
    time, event = rf.first["time"].to_numpy(float), rf.first["event"].to_numpy(bool)
    keep = np.isfinite(rf.first["risk"].to_numpy(float))
    want = A.reference_times(time[keep], event[keep])
    assert want != A.reference_times(time, event)  # the unscored patients move the times
    build_run_report(copy)
    calib = pd.read_csv(copy / "report_data" / "calibration.csv")
    assert sorted(calib["t"].unique()) == pytest.approx(sorted(want))
    past = (float(time[keep].max()) + float(time.max())) / 2
    assert time[keep].max() < past < time.max()  # inside everyone's follow-up, not the scored
    with pytest.raises(ConfigError, match="patients scored"):
        build_run_report(copy, tmp_path / "p.html", times=[past])
