"""Figures for the run and grid reports. Each function takes the table it draws (the one
written beside the page as CSV) and returns a matplotlib Figure (no I/O)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


@contextlib.contextmanager
def figures_closed_on_error() -> Iterator[None]:
    """Close the figures drawn inside the block when it raises: a report's figures are
    closed as the page embeds them, so a build that failed half-way left every figure it
    had drawn open in pyplot, piling up over the reports of a long session."""
    before = set(plt.get_fignums())
    try:
        yield
    except BaseException:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        raise


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def km_by_group(km: pd.DataFrame, p_value: float | None = None, title: str = "") -> Figure:
    """Kaplan–Meier curves per risk group (``analysis.km_by_group``), with the log-rank p.

    Well-separated curves (high risk falling first) are what a clinician looks for; the
    groups come from out-of-fold risks, so the separation is honest."""
    fig, ax = plt.subplots(figsize=(5.8, 4))
    for (_, name), g in km.groupby(["group", "name"], sort=True):
        ax.step(g["time"], g["survival"], where="post",
                label=f"{name} (n={g['n'].iloc[0]}, events={g['events'].iloc[0]})")
    ax.set_xlabel("time")
    ax.set_ylabel("event-free probability")
    ax.set_ylim(0, 1.02)
    text = title or "Kaplan–Meier by out-of-fold risk group"
    if p_value is not None and np.isfinite(p_value):
        text += f"\nlog-rank {_p(p_value)}"
    ax.set_title(text, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fold_scores(metrics: pd.DataFrame, metric: str = "harrell_c") -> Figure:
    """Per-fold scores of every model, so fold-to-fold spread is visible, not only means."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    models = list(dict.fromkeys(metrics["model"]))
    for i, m in enumerate(models):
        vals = metrics.loc[metrics["model"] == m, metric].to_numpy(float)
        ax.scatter(np.full(len(vals), i), vals, alpha=0.7)
        if np.isfinite(vals).any():
            ax.hlines(np.nanmean(vals), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per outer fold (bar = mean)", fontsize=10)
    fig.tight_layout()
    return fig


def over_time(table: pd.DataFrame, columns: dict[str, str], ylabel: str, title: str,
              hline: float | None = None) -> Figure:  # fmt: skip
    """Lines of ``table[column]`` against ``table['time']`` (``columns``: column → label):
    time-dependent AUC, Brier score."""
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for col, label in columns.items():
        ax.plot(table["time"], table[col], marker=".", label=label)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration(groups: pd.DataFrame) -> Figure:
    """Predicted S(t) against the Kaplan–Meier S(t) (with its 95 % CI) per risk group, one
    panel per reference time; the diagonal is perfect calibration."""
    times = list(dict.fromkeys(groups["t"]))
    fig, axes = plt.subplots(1, max(len(times), 1), figsize=(3.4 * max(len(times), 1), 3.5),
                             squeeze=False)  # fmt: skip
    for ax, t in zip(axes[0], times):
        g = groups[groups["t"] == t]
        err = np.vstack([g["observed"] - g["lower"], g["upper"] - g["observed"]]).clip(0)
        ax.errorbar(g["predicted"], g["observed"], yerr=err, fmt="o", ms=4, capsize=2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"predicted S({t:g})")
        ax.set_title(f"t = {t:g} ({len(g)} groups)", fontsize=10)
    axes[0][0].set_ylabel("observed S(t) (Kaplan–Meier)")
    fig.tight_layout()
    return fig


def d_calibration(table: pd.DataFrame, p_value: float) -> Figure:
    """Patients per bin of S_i(T_i) against the uniform expectation (D-calibration)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    mid = (table["low"] + table["high"]) / 2
    ax.bar(mid, table["observed"], width=(table["high"] - table["low"]) * 0.9, alpha=0.7,
           label="observed")
    ax.plot(mid, table["expected"], color="k", ls="--", label="expected if calibrated")
    ax.set_xlabel("predicted S at the patient's own time")
    ax.set_ylabel("patients")
    ax.set_title(f"D-calibration (Haider et al. 2020): {_p(p_value)}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gate_weights(weights: pd.DataFrame) -> Figure:
    """Distribution of per-patient modality weights from the fusion's gating network
    (violins with the quartiles marked; absent modalities left out)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    cols = list(weights.columns)
    data = [weights[c].dropna().to_numpy(float) for c in cols]
    keep = [i for i, d in enumerate(data) if len(d)]
    if keep:
        ax.violinplot([data[i] for i in keep], positions=[i + 1 for i in keep],
                      showmedians=True, quantiles=[[0.25, 0.75]] * len(keep))
    ax.set_xticks(range(1, len(cols) + 1), cols)
    ax.set_ylabel("gate weight")
    ax.set_title("Per-patient modality weights (out-of-fold)", fontsize=10)
    fig.tight_layout()
    return fig


def risk_intervals(table: pd.DataFrame, low: str, high: str, title: str) -> Figure:
    """Patients ranked by risk, each with the interval of its members' risks (the
    ``analysis.ranked`` table); events in red when the table has them."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = table["rank"].to_numpy()
    y = table["risk"].to_numpy(float)
    colours = np.where(table["event"].to_numpy(bool), "tab:red", "tab:blue") \
        if "event" in table else "tab:blue"
    # the interval drawn from its own ends: the point (e.g. one repeat's prediction) need
    # not lie inside the members' interval, and error bars around it would misdraw it
    ax.vlines(x, table[low].to_numpy(float), table[high].to_numpy(float), colors="0.6", lw=0.8)
    ax.scatter(x, y, c=colours, s=8, zorder=3)
    ax.set_xlabel("patients ranked by risk")
    ax.set_ylabel("risk")
    ax.set_title(title, fontsize=10)
    if "event" in table:
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], ls="", marker="o", color="tab:red", label="event"),
                           Line2D([], [], ls="", marker="o", color="tab:blue", label="censored")],
                  fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig


def forest(table: pd.DataFrame, title: str, xlabel: str = "ΔC (Harrell) to the reference"
           ) -> Figure:  # fmt: skip
    """Forest plot of ``label, mean, low, high`` rows (a paired difference and its 95 %
    CI each), with the zero line; rows whose CI excludes 0 are drawn solid."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.42 * max(n, 1)))
    y = np.arange(n)[::-1]
    mean = table["mean"].to_numpy(float)
    lo, hi = table["low"].to_numpy(float), table["high"].to_numpy(float)
    sure = (lo > 0) | (hi < 0)
    ax.hlines(y, lo, hi, color=np.where(sure, "k", "0.55"))
    ax.scatter(mean, y, color=np.where(sure, "k", "0.55"), zorder=3, marker="s", s=22)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, table["label"], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def scaling(table: pd.DataFrame, mark: float | None = None, xlabel: str = "training patients"
            ) -> Figure:  # fmt: skip
    """One line per ``line`` of ``x, mean, low, high`` (the C-index against the training
    size with its 95 % band); ``mark``: the x where fusion first beats clinical-only."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, g in table.groupby("line", sort=False):
        g = g.sort_values("x")
        (line,) = ax.plot(g["x"], g["mean"], marker="o", label=str(name))
        ax.fill_between(g["x"], g["low"].clip(0, 1), g["high"].clip(0, 1),
                        color=line.get_color(), alpha=0.15)  # a C-index lies in [0, 1]
    if mark is not None:
        ax.axvline(mark, color="k", ls=":", lw=1)
        ax.annotate("fusion > clinical", (mark, ax.get_ylim()[1]), fontsize=8, ha="left",
                    va="top", xytext=(3, -3), textcoords="offset points")  # fmt: skip
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(max(0.0, ax.get_ylim()[0]), min(1.0, ax.get_ylim()[1]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Harrell C (mean over folds and seeds, 95% CI)")
    ax.set_title("Data scaling", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def points_with_ci(table: pd.DataFrame, title: str, ylabel: str, hline: float | None = 0.5
                   ) -> Figure:  # fmt: skip
    """``label, mean, low, high`` rows as points with error bars (e.g. CV against
    external C-index)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    x = np.arange(len(table))
    mean = table["mean"].to_numpy(float)
    err = np.vstack([mean - table["low"].to_numpy(float),
                     table["high"].to_numpy(float) - mean]).clip(0)  # fmt: skip
    ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", capsize=3)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, table["label"], fontsize=8, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def alignment(pairs: pd.DataFrame, title: str = "Modality embedding alignment") -> Figure:
    """Per modality pair (and ``group``, e.g. a fusion, when the table has one): the mean
    cosine distance of same-patient embeddings next to that of random pairs."""
    labels = (pairs["group"].astype(str) + ": " if "group" in pairs else "") \
        + pairs["a"].astype(str) + "–" + pairs["b"].astype(str)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.4 * max(len(pairs), 1)))
    y = np.arange(len(pairs))[::-1]
    ax.barh(y + 0.18, pairs["same_patient"], height=0.36, label="same patient")
    ax.barh(y - 0.18, pairs["random_pairs"], height=0.36, label="random pairs")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("mean cosine distance")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def stack_weights_by_size(weights: pd.DataFrame, candidates: tuple[str, ...] = (
        "modalsurv", "modalsurv_clinical")) -> Figure:  # fmt: skip
    """The stacked default's weight on each candidate against the training size: mean over
    outer folds (and seeds) per training size (per ``data_fraction`` when given), with the
    folds' spread (± 1 sd) as a band.

    ``weights``: rows ``n_train, candidate, weight`` (``experiments.runners.
    stack_weight_curve`` of a data-scaling grid). The multimodal network's weight rising
    above the clinical-only network's as the cohort grows says where fusion pays."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    shown = [c for c in candidates if c in set(weights["candidate"])] or sorted(
        set(weights["candidate"]))
    # one point per training fraction when the grid has one (folds differ by a patient or
    # two in size), at the folds' mean training size
    key = "data_fraction" if "data_fraction" in weights and weights["data_fraction"].notna().all() \
        else "n_train"
    for name in shown:
        g = weights[weights["candidate"] == name].groupby(key)
        stats = g.agg(x=("n_train", "mean"), mean=("weight", "mean"), std=("weight", "std"))
        stats = stats.sort_values("x")
        x, m = stats["x"].to_numpy(float), stats["mean"].to_numpy(float)
        sd = np.nan_to_num(stats["std"].to_numpy(float))
        ax.plot(x, m, marker="o", label=name)
        ax.fill_between(x, np.clip(m - sd, 0, 1), np.clip(m + sd, 0, 1), alpha=0.2)
    ax.set_xlabel("training patients per outer fold")
    ax.set_ylabel("stack weight")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Stack weight by training size (when does fusion pay?)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
