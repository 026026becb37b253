"""What a command read, on one screen: patients, events, modalities with their coverage,
and every problem found on the way (with its severity).

Why: a patient dropped for a corrupt JSON, an unreadable RNA file or slides that were
never extracted change what a model learns; the user must see that before trusting the
numbers. Every command that reads data prints this (``modalsurv.cli``), and a run folder
keeps it as ``data.json`` (shown in ``report.html``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd

from modalsurv.data.sources import LoadedData


def data_summary(loaded: LoadedData) -> dict[str, Any]:
    """JSON-able summary of a loaded cohort and its problems."""
    c = loaded.cohort
    mods = {}
    for m in c.modalities:
        x = c.features[m]
        mods[m] = {
            "kind": "bag" if x.ndim == 3 else "vector",
            "dim": int(x.shape[-1]),
            "patients": int(c.present[m].sum()),
            "coverage": float(c.present[m].mean()) if len(c) else 0.0,
        }
        if x.ndim == 3:
            sizes = c.bag_mask[m].sum(axis=1)[c.present[m]]
            mods[m]["tiles_median"] = float(pd.Series(sizes).median()) if len(sizes) else 0.0
    extraction = loaded.extraction or {}
    return {
        "source": loaded.source,
        "patients": len(c),
        "events": c.n_events,
        # cases read for prediction without a label (their placeholder is not an event)
        "unlabelled": int((~c.meta["labelled"].astype(bool)).sum()) if "labelled" in c.meta else 0,
        "modalities": mods,
        "random_weights": list(extraction.get("random_weights") or []),
        "n_errors": sum(p.severity == "error" for p in loaded.problems),
        "n_warnings": sum(p.severity != "error" for p in loaded.problems),
        "problems": [asdict(p) for p in loaded.problems],
        "notes": [asdict(p) for p in loaded.notes],
    }


def modality_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per modality: kind, width, patients with it and coverage."""
    rows = [{"modality": m, "kind": v["kind"], "dim": v["dim"], "patients": v["patients"],
             "coverage": f"{v['coverage']:.0%}"} for m, v in summary["modalities"].items()]
    return pd.DataFrame(rows, columns=["modality", "kind", "dim", "patients", "coverage"])


def problem_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Every problem as a row (severity, patient, field, file, reason), errors first."""
    df = pd.DataFrame(summary["problems"], columns=["severity", "reason", "path", "patient",
                                                     "field"])  # fmt: skip
    if df.empty:
        return df
    df = df.sort_values("severity", key=lambda s: s != "error", kind="stable")
    return df[["severity", "patient", "field", "path", "reason"]].reset_index(drop=True)


def headline(summary: dict[str, Any]) -> str:
    """One line: who and what was read, and how many problems."""
    mods = ", ".join(f"{m} {v['coverage']:.0%}" for m, v in summary["modalities"].items())
    unlabelled = summary.get("unlabelled", 0)
    # a partly labelled folder (predict) keeps its events count beside the unlabelled one
    events = (f"{summary['events']} events" if not unlabelled else
              f"{summary['events']} events among {summary['patients'] - unlabelled} labelled,"
              f" {unlabelled} without a label (predicted, not scored)")  # fmt: skip
    out = (f"{summary['patients']} patients, {events}; modalities (coverage):"
           f" {mods or 'none'}; {summary['n_errors']} error(s), {summary['n_warnings']}"
           " warning(s)")  # fmt: skip
    if summary["random_weights"]:
        out += f"; RANDOM-INIT encoder(s): {', '.join(summary['random_weights'])}"
    return out
