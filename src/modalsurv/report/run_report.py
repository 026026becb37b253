"""A run folder's ``report.html``, built from the folder's files alone (``run_files``), so
``modalsurv report RUN`` rebuilds it anywhere, without the cohort and without retraining;
``train`` and ``evaluate`` call the same code.

The page: the failure-signature checks (``train.diagnostics``, flagged at the top), the
data read, the C-index table with the paired differences to each baseline, per-fold
scores, Kaplan–Meier curves by out-of-fold risk group with the log-rank test,
time-dependent AUC, the Brier score over time with the IBS (against the Kaplan–Meier
no-skill curve), calibration at reference times (grouped Kaplan–Meier against predicted
S(t), slope, ICI) and D-calibration, gating weights per modality, per-patient uncertainty
(risk with the interval over ensemble members) and the CV → external gap. Each figure's
numbers are written beside the page as ``report_data/<figure>.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.errors import ConfigError, DataError
from modalsurv.report import analysis as A
from modalsurv.report import plots as P
from modalsurv.report.html import Chart, Note, render_report
from modalsurv.report.run_files import RunFolder
from modalsurv.report.tables import (
    checks_table,
    paired_display,
    stack_weights_table,
    summary_table,
)
from modalsurv.train.compare import MAIN, compare_all
from modalsurv.train.diagnostics import bundle, table_checks, with_external
from modalsurv.train.members import interval_names
from modalsurv.utils import atomic_write_text

SETTINGS = "report.json"  # the title of the last page built in the run folder
Section = tuple[str, Any]


def data_sections(summary: dict[str, Any] | None) -> list[Section]:
    """The report's data sections from ``data.json``: headline, modalities, problems and a
    warning when an encoder ran with random weights."""
    from modalsurv.data.summary import headline, modality_table, problem_table

    if summary is None:
        return []
    sections: list[Section] = [(f"Data: {summary.get('source', '')}", headline(summary)),
                               ("Modalities", modality_table(summary))]  # fmt: skip
    if summary.get("random_weights"):
        sections.append(("", Note("features extracted with RANDOM-INIT encoder(s) (no"
                                  f" pretrained weights): {', '.join(summary['random_weights'])}")))
    problems = problem_table(summary)
    if len(problems):
        sections.append((f"Problems found reading the data ({len(problems)})", problems))
    return sections


def diagnostics_of(run: RunFolder) -> dict[str, Any]:
    """The run's checks: those recorded in ``metrics.json`` (or, for a run trained before
    they were, those its metrics table supports), with the external cohorts' drops from
    the ``evaluation_*.json`` files present now."""
    diag = run.summary.get("diagnostics")
    if diag is None:
        diag = bundle(table_checks(run.metrics, run.test_train_ratio))
    return with_external(diag, run.cv_harrell_c, run.evaluations)


# ---------------------------------------------------------------------- sections
def _discrimination(run: RunFolder) -> list[Section]:
    first = run.first
    time, event, risk = (first["time"].to_numpy(float), first["event"].to_numpy(bool),
                         first["risk"].to_numpy(float))  # fmt: skip
    out: list[Section] = []
    finite = np.isfinite(risk)
    if not finite.all():  # risk_groups and AUC(t) refuse them: leave them out, say so
        out.append(("", Note(f"{int((~finite).sum())} of {len(risk)} patients have no finite"
                             " out-of-fold risk; the risk groups and AUC(t) leave them out",
                             "warn")))  # fmt: skip
        time, event, risk = time[finite], event[finite], risk[finite]
    groups = 3
    labels = A.risk_groups(risk, groups)
    km = A.km_by_group(time, event, labels, groups)
    try:
        chisq, p = A.logrank(time, event, labels)
        caption = f"log-rank test across the {groups} groups: χ² = {chisq:.2f}, {P._p(p)}"
    except ValueError as err:
        p, caption = math.nan, f"log-rank test undefined: {err}"
    out.append(("Out-of-fold risk groups (ModalSurv)",
                Chart(P.km_by_group(km, p), km, "km_by_risk_group", caption)))  # fmt: skip
    grid = A.auc_times(time, event)
    auc, mean_auc, notes = A.td_auc_table(time, event, risk, grid) if len(grid) else (
        pd.DataFrame(columns=["time", "auc"]), math.nan, ["AUC(t): too few events"])
    if len(auc):
        out.append(("Time-dependent AUC (out-of-fold risk)", Chart(
            P.over_time(auc, {"auc": "ModalSurv"}, "AUC(t)",
                        f"cumulative/dynamic AUC(t); mean {mean_auc:.3f}", hline=0.5),
            auc, "time_dependent_auc")))  # fmt: skip
    out += [("", Note(n, "warn")) for n in notes]
    return out


def _curves(run: RunFolder, times: list[float] | None) -> list[Section]:
    """Brier over time, calibration and D-calibration: they need each fold model's bins."""
    from modalsurv.train.cv import ibs_grid

    first = run.first
    time, event = first["time"].to_numpy(float), first["event"].to_numpy(bool)
    if run.models() is None:
        return [("Brier score and calibration", Note("the run folder has no models/: survival"
                                                     " curves, Brier score and calibration"
                                                     " need the fold models' time bins"))]
    out: list[Section] = []
    # a patient without a finite prediction is left out, as from the risk groups: one such
    # patient used to void the Brier score, every calibration time and D-calibration
    ok = np.isfinite(first["risk"].to_numpy(float))
    if not ok.all():
        out.append(("", Note(f"{int((~ok).sum())} of {len(ok)} patients have no finite"
                             " out-of-fold risk; the Brier score, calibration and"
                             " D-calibration leave them out", "warn")))  # fmt: skip
    # the grid of the patients scored: one built from everyone reached past the follow-up
    # of those left (the shortest left out), and the whole Brier figure was dropped
    grid = ibs_grid(time[ok], time[ok]) if ok.any() else np.empty(0)
    if len(grid) >= 2:
        surv = run.out_of_fold_survival(grid)
        table, ibs, notes = A.brier_table(time[ok], event[ok], surv[ok], grid)
        if len(table):
            fold_ibs = run.summary.get("models", {}).get(MAIN, {}).get("ibs", {})
            # the summary's mean pools every repeat's folds, under a heading of repeat 0
            repeats = int(run.predictions["repeat"].nunique())
            caption = (f"pooled out-of-fold IBS {ibs['ibs']:.3f} (Kaplan–Meier curve for"
                       f" everyone: {ibs['ibs_km']:.3f}); mean IBS over folds"
                       + (f" of all {repeats} repeats" if repeats > 1 else "")
                       + f" {fold_ibs.get('mean', math.nan):.3f}")
            out.append(("Brier score over time", Chart(
                P.over_time(table, {"brier": "ModalSurv", "brier_km": "Kaplan–Meier (no skill)"},
                            "Brier score", "IPCW Brier score (lower is better)"),
                table, "brier_score", caption)))  # fmt: skip
        out += [("", Note(n)) for n in notes]
    # the times of the patients scored: the quartiles of everyone's event times moved
    # with the follow-up of patients the calibration leaves out
    ref = list(times) if times else A.reference_times(time[ok], event[ok])
    ref = [t for t in ref if ok.any() and 0 < t < time[ok].max()]
    if ref:
        surv_t = run.out_of_fold_survival(ref)
        follow = np.column_stack([run.survival_at_own(np.minimum(time, t)) for t in ref])
        groups, stats, notes = A.calibration_at(time[ok], event[ok], surv_t[ok], follow[ok], ref)
        if len(groups):
            out.append((f"Calibration at t = {', '.join(f'{t:g}' for t in ref)}", Chart(
                P.calibration(groups), groups, "calibration",
                "predicted S(t) against the Kaplan–Meier S(t) of each risk group (deciles,"
                " fewer when a group's follow-up ends before t), 95% CI")))  # fmt: skip
        out.append(("Calibration slope (1 = ideal), intercept (0 = ideal) and ICI", stats))
        out += [("", Note(n)) for n in notes]
    own = run.survival_at_own(time)
    try:
        table, stat, p = A.d_calibration_table(event[ok], own[ok])
        out.append(("D-calibration", Chart(
            P.d_calibration(table, p), table, "d_calibration",
            f"χ² = {stat:.2f} on {len(table) - 1} df, {P._p(p)}: a small p rejects"
            " calibration of the whole predicted curves")))  # fmt: skip
    except ValueError as err:
        out.append(("D-calibration", Note(f"undefined: {err}")))
    return out


def _gates(run: RunFolder) -> list[Section]:
    w = run.gate_weights
    if w is None or len(w.columns) < 2:
        return []
    data = w.reset_index()
    return [("Gating weights (out-of-fold; absent modalities left out)", Chart(
        P.gate_weights(w), data, "gate_weights",
        "mean weight: " + ", ".join(f"{m} {w[m].mean():.2f}" if w[m].notna().any()
                                    else f"{m} – (no patient has it)"  # was "nan"
                                    for m in w.columns)))]  # fmt: skip


def _uncertainty(run: RunFolder) -> list[Section]:
    out: list[Section] = []
    tables = []
    if run.uncertainty is not None:
        tables.append(("out-of-fold", run.uncertainty, "uncertainty_out_of_fold"))
    for name, table in run.evaluation_predictions.items():
        tables.append((f"external cohort {name}", table, f"uncertainty_{name}"))
    for what, table, key in tables:
        lo, hi = next(((a, b) for a, b in [interval_names("risk", lv) for lv in (0.9, 0.8, 0.95)]
                       if a in table and b in table), (None, None))  # fmt: skip
        if lo is None:
            continue
        ranked = A.ranked(table)
        n = ranked["n_members"] if "n_members" in ranked else pd.Series([0])
        m, low_m = int(n.max()), int(n.min())
        count = f"{m}" if m == low_m else f"{low_m}–{m}"
        q_lo, q_hi = (float(c.rsplit("_p", 1)[1]) for c in (lo, hi))
        caption = (f"{count} member model(s) per patient ({what}: "
                   + ("the seed members of each repeat's fold model that held it out"
                      if what == "out-of-fold" else "every fold's seed members")
                   + "; the stacked default's members are its inner models, networks and"
                   f" peers); bars: the {q_lo:g}th to {q_hi:g}th percentile of their risks")
        if m <= 1:
            caption += (" (one member: no spread; train with train.n_init > 1 or"
                        " cv.repeats > 1)")
        elif low_m <= 1:
            single = int((n <= 1).sum())
            caption += f" ({single} patient(s) with one member: no spread shown for them)"
        out.append((f"Per-patient uncertainty: {what} risk with the members' interval", Chart(
            P.risk_intervals(ranked, lo, hi, f"{what}: risk ranked, member interval"),
            ranked, key, caption)))  # fmt: skip
    return out


def _external(run: RunFolder) -> list[Section]:
    if not run.evaluations:
        return []
    scores = run.metrics.loc[run.metrics["model"] == MAIN, "harrell_c"].to_numpy(float)
    mean, lo, hi = A.cv_interval(scores, run.test_train_ratio)
    rows = [{"label": "cross-validation", "cohort": "CV (out-of-fold)", "n": len(run.first),
             "events": int(run.first["event"].sum()), "mean": mean, "low": lo, "high": hi,
             "drop": 0.0}]  # fmt: skip
    for name, ev in run.evaluations.items():
        c = float(ev.get("harrell_c", math.nan))
        ci = ev.get("harrell_c_ci95") or [math.nan, math.nan]
        rows.append({"label": name, "cohort": name, "n": ev.get("n"), "events": ev.get("events"),
                     "mean": c, "low": ci[0], "high": ci[1], "drop": mean - c})  # fmt: skip
    table = pd.DataFrame(rows)
    shown = table.rename(columns={"mean": "harrell_c", "low": "ci_low", "high": "ci_high",
                                  "drop": "CV minus external"}).drop(columns="label")  # fmt: skip
    notes: list[Section] = [
        ("", Note(f"external cohort {name}: no patient has {', '.join(ev['absent_modalities'])}"
                  " (the model was trained with it): every patient was predicted without it,"
                  " so part of the gap is the cohort's"))
        for name, ev in run.evaluations.items() if ev.get("absent_modalities")]  # fmt: skip
    return [*notes, ("CV → external gap", Chart(
        P.points_with_ci(table, "Harrell C: cross-validation against external cohorts",
                         "Harrell C (95% CI)"),
        table, "cv_external_gap",
        "CV interval: corrected resampled t over folds; external: bootstrap")),
        ("CV → external gap (table)", shown)]  # fmt: skip


# ---------------------------------------------------------------------- the page
def _of_repeats(sections: list[Section], label: str) -> list[Section]:
    """``sections`` with ``label`` after each heading (none when ``label`` is empty): with
    cv.repeats > 1 some figures show repeat 0 (one out-of-fold prediction per patient, its
    fold models) and others every repeat, and the page must say which is which."""
    return [(f"{h} ({label})" if h and label else h, body) for h, body in sections]


def _saved_title(path: Path) -> str | None:
    """The title kept in ``report.json`` (None without one). A damaged file is a DataError
    naming it and the way out, where it was an "internal error" (a JSON traceback)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        saved = f"{type(err).__name__}: {err}"
    title = saved.get("title") if isinstance(saved, dict) else None
    if isinstance(saved, dict) and (title is None or isinstance(title, str)):
        return title
    raise DataError(f"is not the report's settings ({str(saved)[:80]}; expected"
                    ' {"title": "..."}): delete it, or give the title (--title), and the'
                    " page is rebuilt with it", path=path)  # fmt: skip


def build_run_report(run: str | Path, out: str | Path | None = None, title: str | None = None,
                     times: list[float] | None = None) -> Path:  # fmt: skip
    """(Re)build a run folder's HTML report from its files; returns the page's path.

    ``out``: the page (default ``RUN/report.html``; the charts' CSVs go to
    ``report_data/`` beside it). ``title`` defaults to that of the last page built in the
    run folder (``report.json``); ``times`` (calibration reference times, duplicates
    dropped) to the quartiles of the event times, each time: a page built without times
    is the documented default, not whatever an earlier rebuild was asked for."""
    with P.figures_closed_on_error():
        return _build_run_report(run, out, title, times)


def _build_run_report(run: str | Path, out: str | Path | None, title: str | None,
                      times: list[float] | None) -> Path:  # fmt: skip
    """:func:`build_run_report`'s work (the caller closes its figures if it fails)."""
    run_path = Path(run)
    rf = RunFolder.load(run_path)
    settings_path = run_path / SETTINGS
    title = title or _saved_title(settings_path) or f"modalsurv run: {run_path.resolve().name}"
    times = list(dict.fromkeys(float(t) for t in times)) if times else None
    if times:  # asked for now: each must lie inside the follow-up, or nothing is built
        # of the patients scored (a finite risk): a time past their follow-up was dropped
        scored = rf.first[np.isfinite(rf.first["risk"].to_numpy(float))]
        follow = float(scored["time"].max()) if len(scored) else 0.0
        outside = [t for t in times if not 0 < t < follow]
        if outside:
            raise ConfigError(f"--times {', '.join(f'{t:g}' for t in outside)}: calibration"
                              " times must lie inside the follow-up of the patients scored"
                              f" (a finite out-of-fold risk), 0 < t < {follow:g}")  # fmt: skip
    page = Path(out) if out is not None else run_path / "report.html"

    diag = diagnostics_of(rf)
    sections: list[Section] = []
    if rf.optimistic:
        sections.append(("", Note("selection=outer_fold: early stopping used the reported fold,"
                                  " as in the original protocol. These numbers are OPTIMISTIC.")))
    for c in diag["checks"]:
        if c["flag"]:
            sections.append(("", Note(f"⚠ {c['check']}: {c['message']}")))
    first = rf.first
    sections.append(("Cohort", f"{len(first)} patients, {int(first['event'].sum())} events,"
                     f" {rf.n_folds} outer folds, {int(rf.predictions['repeat'].nunique())}"
                     " repeat(s) (out-of-fold predictions)"))  # fmt: skip
    sections += data_sections(rf.data)
    kind = ("the stacked default (model.stack: ModalSurv, ModalSurv on clinical data and"
            " classical peers weighed on inner out-of-fold risks); modalsurv_plain is its"
            " ModalSurv network alone" if rf.summary.get("model_kind") == "stack"
            else "the plain ModalSurv network (model.stack: none)")  # fmt: skip
    sections.append(("Model", f"modalsurv is {kind}"))
    sections.append(("Failure-signature checks", checks_table(diag)))
    repeats = int(rf.predictions["repeat"].nunique())
    pooled, repeat0 = ((f"all {repeats} repeats", f"repeat 0 of {repeats}") if repeats > 1
                         else ("", ""))  # fmt: skip
    if repeats > 1:
        sections.append(("", Note(f"cv.repeats = {repeats}: the scores and per-fold figures"
                                  " pool every repeat; the out-of-fold figures (risk groups,"
                                  " AUC(t), Brier, calibration, gating weights) show repeat 0,"
                                  " one prediction per patient from its fold models; each"
                                  " heading says which", "ok")))  # fmt: skip
    sections += _of_repeats([("Mean ± std over outer folds", summary_table(rf.summary)),
                             ("Per-fold scores", Chart(P.fold_scores(rf.metrics), rf.metrics,
                                                       "fold_scores"))], pooled)  # fmt: skip
    paired = paired_display(compare_all(rf.metrics, MAIN,
                                        test_train_ratio=rf.test_train_ratio), rf.summary)
    if paired is not None:
        sections += _of_repeats([("ModalSurv minus each baseline, paired on the same folds"
                                  " (corrected resampled t-test, Nadeau & Bengio 2003)",
                                  paired)], pooled)  # fmt: skip
    weights = stack_weights_table(rf.summary)
    if weights is not None:
        sections.append(("Stack weights per outer fold (non-negative, sum to 1; fitted on the"
                         " training part's inner out-of-fold risks)", weights))
    sections += _of_repeats(_discrimination(rf) + _curves(rf, times) + _gates(rf), repeat0)
    sections += _uncertainty(rf)
    sections += _external(rf)
    alignment = next((c for c in diag["checks"] if c["check"] == "embedding_alignment"), None)
    if alignment and alignment.get("pairs"):
        pairs = pd.DataFrame(alignment["pairs"])
        sections.append(("Modality embedding alignment (out-of-fold)", Chart(
            P.alignment(pairs), pairs, "embedding_alignment", alignment["message"])))  # fmt: skip
    render_report(title, sections, page)
    if out is None:
        atomic_write_text(settings_path, json.dumps({"title": title}, indent=1))
    return page


# ---------------------------------------------------------------------- at training time
def write_run_extras(out: Path, result: Any, cohort: Cohort) -> None:
    """The files a report needs that only the cohort can give, written at training time:
    ``gate_weights.csv`` (out-of-fold modality weights, when the fusion has them) and
    ``uncertainty.csv`` (out-of-fold member spread, ``train.members``)."""
    from modalsurv.train.members import out_of_fold_spread
    from modalsurv.utils import atomic_path, atomic_write_csv

    weights = out_of_fold_gate_weights(result, cohort)
    if weights is not None and len(weights.columns) > 1:
        with atomic_path(out / "gate_weights.csv") as tmp:
            weights.to_csv(tmp)
    atomic_write_csv(out / "uncertainty.csv",
                     out_of_fold_spread(result.folds, result.models, cohort, result.predictions))


def out_of_fold_gate_weights(result: Any, cohort: Cohort, repeat: int = 0) -> pd.DataFrame | None:
    """Each patient's modality weights from the fold model that did *not* train on them.

    Absent modalities (weight 0 by construction) are NaN so summaries describe only the
    modalities a patient actually had. None when the fusion has no per-sample weights.
    """
    folds = result.folds[result.folds["repeat"] == repeat]
    frames = []
    for f, model in enumerate(result.models[repeat]):
        ids = folds.loc[folds["fold"] == f, "patient"].astype(str)
        idx = cohort.index_of(ids)
        try:
            w = model.gate_weights(cohort.subset(idx))
        except (AttributeError, ValueError, NotImplementedError):
            return None
        if w is None or w.isna().all().all():
            return None
        frames.append(w)
    weights = pd.concat(frames).reindex(pd.Index(cohort.ids, name="patient"))
    for m in weights.columns:
        if m in cohort.present:
            weights.loc[~cohort.present[m], m] = np.nan
    return weights
