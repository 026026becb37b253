"""A run folder's ``report.html``: the data read, the scores, paired differences, risk
groups and gating weights; built from the run's results, readable in any browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.report.tables import cv_table, paired_summary, stack_weights_table
from modalsurv.utils import atomic_path


def data_sections(out: Path) -> list[tuple[str, Any]]:
    """The report's data sections from ``data.json``: headline, modalities, problems and a
    warning when an encoder ran with random weights."""
    from modalsurv.data.summary import headline, modality_table, problem_table

    path = out / "data.json"
    if not path.is_file():
        return []
    summary = json.loads(path.read_text(encoding="utf-8"))
    sections: list[tuple[str, Any]] = [(f"Data: {summary.get('source', '')}", headline(summary)),
                                       ("Modalities", modality_table(summary))]  # fmt: skip
    if summary.get("random_weights"):
        sections.append(("Warning", "features extracted with RANDOM-INIT encoder(s) (no"
                         f" pretrained weights): {', '.join(summary['random_weights'])}"))
    problems = problem_table(summary)
    if len(problems):
        sections.append((f"Problems found reading the data ({len(problems)})", problems))
    return sections


def write_run_report(out: Path, result: Any, cohort: Cohort, title: str) -> Path:
    """report.html: summary table, per-fold scores, KM by risk group, gate weights."""
    from modalsurv.report.html import render_report
    from modalsurv.report.plots import fold_scores, gate_weights, km_by_risk_group

    preds = result.predictions
    first = preds[preds["repeat"] == 0]
    sections: list[tuple[str, Any]] = [("Cohort", repr(cohort)), *data_sections(out)]
    if result.optimistic:
        sections.append(
            ("Warning", "selection=outer_fold: early stopping used the reported fold, as in the "
             "original protocol. These numbers are OPTIMISTIC.")
        )
    kind = ("the stacked default (model.stack: ModalSurv, ModalSurv on clinical data and"
            " classical peers weighed on inner out-of-fold risks); modalsurv_plain is its"
            " ModalSurv network alone" if result.summary.get("model_kind") == "stack"
            else "the plain ModalSurv network (model.stack: none)")  # fmt: skip
    sections += [
        ("Model", f"modalsurv is {kind}"),
        ("Mean ± std over outer folds", cv_table(result)),
        ("Per-fold scores", fold_scores(result.metrics)),
    ]
    paired = paired_summary(result)
    if paired is not None:
        sections.append(("ModalSurv minus each baseline, paired on the same folds (corrected "
                         "resampled t-test, Nadeau & Bengio 2003)", paired))
    weights = stack_weights_table(result.summary)
    if weights is not None:
        sections.append(("Stack weights per outer fold (non-negative, sum to 1; fitted on the"
                         " training part's inner out-of-fold risks)", weights))
    sections += [
        ("Out-of-fold risk groups (ModalSurv)",
         km_by_risk_group(first["time"].to_numpy(), first["event"].to_numpy(), first["risk"].to_numpy())),
    ]
    weights = out_of_fold_gate_weights(result, cohort)
    if weights is not None and len(weights.columns) > 1:
        with atomic_path(out / "gate_weights.csv") as tmp:
            weights.to_csv(tmp)
        sections.append(("Gating weights (out-of-fold; absent modalities left out)",
                         gate_weights(weights)))
    for note in getattr(result, "notes", []):
        sections.append(("Note", note))
    path = out / "report.html"
    render_report(title, sections, path)
    return path


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
