"""Small cohorts and a tiny config shared by the train/ tests (fast on 2 CPU cores)."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, parse_config


def build_cohort(n: int = 80, seed: int = 0, missing: float = 0.2) -> Cohort:
    """Clinical (with NaN), RNA counts, a slide vector and a WSI bag; risk from all four."""
    rng = np.random.default_rng(seed)
    clin = rng.normal(size=(n, 4))
    rna = rng.gamma(2.0, 20.0, size=(n, 30))
    slide = rng.normal(size=(n, 12))
    k = 6
    wsi = rng.normal(size=(n, k, 8)).astype(np.float32)
    mask = rng.random((n, k)) < 0.8
    mask[:, 0] = True
    log_risk = clin[:, 0] + 0.8 * np.log1p(rna[:, 0]) - 3.0 + 0.5 * slide[:, 0]
    log_risk += 0.5 * (wsi[:, :, 0] * mask).sum(1) / mask.sum(1)
    t_event = rng.exponential(10.0 * np.exp(-log_risk))
    t_cens = rng.uniform(1.0, 30.0, size=n)
    time = np.maximum(np.minimum(t_event, t_cens), 0.05)
    event = t_event <= t_cens
    clin[rng.random((n, 4)) < 0.05] = np.nan
    present = {
        "rna": rng.random(n) > missing,
        "slide": rng.random(n) > missing,
        "wsi": rng.random(n) > missing / 2,
    }
    return Cohort(
        [f"P{i:03d}" for i in range(n)],
        time,
        event,
        features={"clinical": clin, "rna": rna, "slide": slide, "wsi": wsi},
        present=present,
        bag_mask={"wsi": mask},
    )


def tiny_config(**over: object) -> RunConfig:
    """A network small enough to train in well under a second per fit."""
    data = {
        "seed": 0,
        "preprocess": {"rna_top_variance_genes": 20, "rna_pca": 4},
        "model": {
            "latent_dim": 16,
            "hidden_dim": 16,
            "attention_pool_dim": 8,
            "n_heads": 2,
            "n_bins": 8,
            "dropout": 0.1,
            # the plain network: the stacked default (train.stacking) has its own tests
            "stack": "none",
        },
        "train": {
            "epochs": 4,
            "patience": 2,
            "batch_size": 16,
            "device": "cpu",
            # one network, C-index monitor: existing tests pin those paths; the seed
            # ensemble and the loss monitor have their own tests
            "n_init": 1,
            "monitor": "cindex",
        },
        "cv": {"folds": 3},
        "baselines": [],
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value  # type: ignore[index]
        else:
            data[section] = value
    return parse_config(data)


@pytest.fixture(scope="session")
def cohort() -> Cohort:
    return build_cohort()


@pytest.fixture(scope="session")
def make_cohort():
    return build_cohort


@pytest.fixture(scope="session")
def make_config():
    return tiny_config


def cox_times(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-covariate proportional-hazards sample: (x, observed time, event), hazard
    ``exp(x)``, independent exponential censoring (mean 2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-x))
    t_cens = rng.exponential(2.0, size=n)
    return x, np.minimum(t_event, t_cens), t_event <= t_cens


@pytest.fixture(scope="session")
def simulate():
    return cox_times
