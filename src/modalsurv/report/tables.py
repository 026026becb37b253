"""Tables for people: mean ± std per model, paired differences as intervals.

Presentation only: the numbers come from ``train.cv`` (``CVResult``) and ``train.compare``
(``PairedComparison``); the command line, the reports, the demo and the benchmarks format
them here, the same way everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from modalsurv.train.compare import PairedComparison
from modalsurv.train.cv import METRICS, CVResult


def format_difference(mean: float, low: float, high: float) -> str:
    """``+0.012 [-0.031, +0.055]``: a paired difference and its interval, signed, for tables;
    ``+0.012 (no CI: one pair)`` when the interval is undefined (one paired fold), ``–``
    when the difference is (no pair): never ``[+nan, +nan]``."""
    if not math.isfinite(mean):
        return "–"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.3f} (no CI: one pair)"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def describe_comparison(p: PairedComparison) -> str:
    """One line for tables and logs, e.g. ``modalsurv - coxnet: -0.009 [-0.034, +0.016]``."""
    if not math.isfinite(p.mean_difference):
        return f"{p.model} - {p.reference}: n/a ({p.n_pairs} paired folds)"
    return (f"{p.model} - {p.reference}: {format_difference(p.mean_difference, p.ci_low, p.ci_high)}"
            f" ({p.level:.0%} CI), p {format_p(p.p_value, '= ')} (corrected resampled t,"
            f" {p.n_pairs} folds)")


def format_p(p: float, equals: str = "") -> str:
    """A p-value to two decimals, ``< 0.01`` below that (never ``0.00``: no test gives
    p = 0), ``–`` when undefined; ``equals`` goes before a number (``p = 0.23``)."""
    if p != p:
        return "–"
    return "< 0.01" if p < 0.01 else f"{equals}{p:.2f}"


def cv_table(result: CVResult) -> pd.DataFrame:
    """One row per model: mean ± std of each metric (the sample std, ddof = 1, over the
    folds of every repeat: the spread of fold scores, not a standard error; "(n of N
    folds)" when a metric is undefined on some), the ``optimistic`` flag, and for a model
    that failed the reason (never a bare NaN)."""
    return summary_table(result.summary)


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """:func:`cv_table` from a run's summary (``metrics.json``)."""
    rows = []
    models = summary["models"]
    runs = summary.get("n_folds", 0) * summary.get("n_repeats", 1)  # folds scored per model
    for model, stats in models.items():
        row: dict[str, Any] = {"model": model}
        all_failed = stats["n_failed_folds"] and not any(stats[m]["n"] for m in METRICS)
        for m in METRICS:
            row[m] = "failed" if all_failed else _mean_std(stats[m]["mean"], stats[m]["std"])
            if not all_failed and stats[m]["n"] < runs:  # a mean over fewer folds: said
                row[m] += f" ({stats[m]['n']} of {runs} folds)"
        row["n_failed_folds"] = stats["n_failed_folds"]
        row["optimistic"] = stats["optimistic"]
        if any(s.get("failure") for s in models.values()):
            row["failure"] = stats.get("failure") or ""
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(mean: Any, std: Any) -> str:
    """``0.712 ± 0.031``; the mean alone when the std is undefined (one finite fold), ``–``
    when the mean is (no finite fold): never ``± nan`` (the grid report's rule)."""
    mean, std = (math.nan if v is None else float(v) for v in (mean, std))
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f}" if not math.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def paired_summary(result: CVResult) -> pd.DataFrame | None:
    """ModalSurv minus each baseline in Harrell's C on the same folds, formatted for tables
    (``CVResult.paired``); None when the run has no baseline."""
    return paired_display(result.paired(), result.summary)


def paired_display(paired: pd.DataFrame, summary: dict[str, Any]) -> pd.DataFrame | None:
    """:func:`paired_summary` from a paired table (``train.compare.compare_all``) and the
    run's summary."""
    if paired.empty:
        return None
    models = summary["models"]

    def cell(row: pd.Series) -> str:
        if not row["n_pairs"] and models.get(row["reference"], {}).get("failure"):
            return f"– ({row['reference']} failed: {models[row['reference']]['failure']})"
        return format_difference(row["mean_difference"], row["ci_low"], row["ci_high"])

    return pd.DataFrame({
        "ModalSurv minus": paired["reference"],
        "ΔC (95% CI)": [cell(r) for _, r in paired.iterrows()],
        "p": [format_p(v) for v in paired["p_value"]],
        "folds": paired["n_pairs"],
    })  # fmt: skip


FLAG_TEXT = {True: "⚠ raised", False: "ok", None: "n/a"}


def checks_table(diagnostics: dict[str, Any]) -> pd.DataFrame:
    """The failure-signature checks (``train.diagnostics``) as rows: check, flag
    (raised / ok / n/a), value, threshold and what was found."""
    rows = [{"check": c["check"], "flag": FLAG_TEXT[c.get("flag")],
             "value": "–" if c.get("value") is None else f"{c['value']:+.3f}",
             "threshold": "–" if c.get("threshold") is None else f"{c['threshold']:g}",
             "finding": c.get("message", "")}
            for c in diagnostics.get("checks", [])]  # fmt: skip
    return pd.DataFrame(rows, columns=["check", "flag", "value", "threshold", "finding"])
def stack_weights_table(summary: dict[str, Any]) -> pd.DataFrame | None:
    """The stacked default's weights per outer fold (``metrics.json``'s ``stack`` record)
    and their mean, one column per candidate, plus what backward elimination dropped;
    None for a plain ModalSurv run."""
    folds = summary.get("stack")
    if not folds:
        return None
    names = list(dict.fromkeys(n for f in folds for n in f["weights"]))
    rows = [{"fold": f"{f['repeat']}/{f['fold']}",
             **{n: f["weights"].get(n, float("nan")) for n in names},
             "dropped": ", ".join(f.get("dropped", [])) or "–"} for f in folds]  # fmt: skip
    table = pd.DataFrame(rows)
    # a candidate missing from a fold's stack (a peer that failed there, or a modality
    # the training part lacked) had weight 0 in it: the mean counts that 0, so the mean
    # row sums to 1 like each fold's, where skipping the fold overstated the candidate
    mean = {"fold": "mean", **{n: float(table[n].fillna(0.0).mean()) for n in names},
            "dropped": ""}  # fmt: skip
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    if any(f.get("fallback") for f in folds):  # equal weights: said where the weights are
        table["weights from"] = [("equal (too few inner events)" if f.get("fallback")
                                  else "inner out-of-fold risks") for f in folds] + [""]  # fmt: skip
    return table


def timing_table(timings: pd.DataFrame, wall: float | None = None) -> pd.DataFrame | None:
    """Seconds per part of a run summed over the folds fitted (``CVResult.timings``): the
    whole ModalSurv (or stack) fit, each stack candidate (``modalsurv/<name>``), the stack's
    weights, each baseline; with ``wall``, the rest of the run (data, preprocessing for
    scoring, saving, the report) as ``other``."""
    if timings is None or timings.empty:
        return None
    parts = [c for c in timings.columns if c not in ("repeat", "fold")]
    total = {c: float(timings[c].sum()) for c in parts}
    labels = {"modalsurv": "ModalSurv fit (all of it)",
              "modalsurv/modalsurv": "  stack: ModalSurv members (fusion)",
              "modalsurv/modalsurv_clinical": "  stack: ModalSurv members (clinical only)",
              "modalsurv/modalsurv_cox": "  stack: ModalSurv members (Cox head)",
              "modalsurv/coxph_clinical": "  stack: ridge Cox on clinical, one fit per inner fold",
              "modalsurv/coxnet": "  stack: Coxnet, one fit per inner fold",
              "modalsurv/search": "  inner hyperparameter search (search.trials)",
              "modalsurv/rsf": "  stack: random survival forest, one per inner fold",
              "modalsurv/weights": "  stack: weights and baseline hazard"}  # fmt: skip
    def label(c: str) -> str:
        if c in labels:
            return labels[c]
        return f"  stack: {c.split('/', 1)[1]}" if "/" in c else f"baseline {c}"

    rows = [{"part": label(c), "seconds": total[c]} for c in parts]
    if wall is not None:
        fitted = sum(v for c, v in total.items() if "/" not in c)
        rows.append({"part": "other (data, scoring, saving, report)",
                     "seconds": max(wall - fitted, 0.0)})
        rows.append({"part": "total (wall)", "seconds": wall})
    return pd.DataFrame(rows)
