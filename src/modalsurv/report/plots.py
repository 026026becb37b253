"""Figures for a run: Kaplan–Meier curves by predicted risk group, per-fold scores,
gating weights per modality. Each function returns a matplotlib Figure (no I/O)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sksurv.nonparametric import kaplan_meier_estimator


def km_by_risk_group(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, groups: int = 3, title: str = ""
) -> Figure:
    """Kaplan–Meier curves of patients split into equal-size groups by predicted risk.

    Well-separated curves (high risk falling first) are what a clinician looks for; the
    split uses out-of-fold risks, so the separation is honest.
    """
    time = np.asarray(time, float)
    event = np.asarray(event, bool)
    risk = np.asarray(risk, float)
    edges = np.quantile(risk, np.linspace(0, 1, groups + 1))
    labels = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, groups - 1)
    names = {0: "low risk", groups - 1: "high risk"}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for g in range(groups):
        sel = labels == g
        if sel.sum() < 2:
            continue
        t, s = kaplan_meier_estimator(event[sel], time[sel])
        ax.step(np.r_[0, t], np.r_[1, s], where="post",
                label=f"{names.get(g, f'group {g + 1}')} (n={sel.sum()}, events={event[sel].sum()})")
    ax.set_xlabel("time")
    ax.set_ylabel("event-free probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "Kaplan–Meier by out-of-fold risk group")
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
    ax.set_title(f"{metric} per outer fold (bar = mean)")
    fig.tight_layout()
    return fig


def gate_weights(weights: pd.DataFrame) -> Figure:
    """Distribution of per-patient modality weights from the fusion's gating network."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    cols = list(weights.columns)
    data = [weights[c].dropna().to_numpy(float) for c in cols]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(cols) + 1), cols)
    ax.set_ylabel("gate weight")
    ax.set_title("Per-patient modality weights (out-of-fold)")
    fig.tight_layout()
    return fig


def stack_weights_by_size(weights: pd.DataFrame, candidates: tuple[str, ...] = (
        "modalsurv", "modalsurv_clinical")) -> Figure:  # fmt: skip
    """The stacked default's weight on each candidate against the training size: mean over
    outer folds (and seeds) per training size, with the folds' spread (± 1 sd) as a band.

    ``weights``: rows ``n_train, candidate, weight`` (``experiments.runners.
    stack_weight_curve`` of a data-scaling grid). The multimodal network's weight rising
    above the clinical-only network's as the cohort grows says where fusion pays."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    shown = [c for c in candidates if c in set(weights["candidate"])] or sorted(
        set(weights["candidate"]))
    for name in shown:
        g = weights[weights["candidate"] == name].groupby("n_train")["weight"]
        stats = g.agg(["mean", "std"]).reset_index().sort_values("n_train")
        x, m = stats["n_train"].to_numpy(float), stats["mean"].to_numpy(float)
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
