"""The uncertainty-aware (precision-weighted) fusion end to end: ModalSurv fit / predict /
save / load, per-patient weights, and a noise modality learning a lower weight."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.cohort import Cohort
from modalsurv.experiments.grid import parse_grid
from modalsurv.nn.fusion import FUSIONS, PrecisionWeightedFusion
from modalsurv.train.estimator import ModalSurv


@pytest.fixture(scope="module")
def fitted(cohort, make_config):
    return ModalSurv(make_config(model__fusion="uncertainty")).fit(cohort)


def test_registered_and_accepted_by_the_experiment_grid():
    assert FUSIONS["uncertainty"] is PrecisionWeightedFusion
    (trial,) = parse_grid({"fusion": ["uncertainty"]}).expand()
    assert trial.config.model.fusion == "uncertainty"


def test_fit_predict_and_weights_follow_presence(fitted, cohort):
    assert isinstance(fitted.net_.fusion, PrecisionWeightedFusion)
    n = len(cohort)
    pmf = fitted.predict_pmf(cohort)
    assert pmf.shape == (n, fitted.bins_.n_bins + 1) and np.isfinite(pmf).all()
    assert np.isfinite(fitted.predict_risk(cohort)).all()
    w = fitted.gate_weights(cohort)
    assert list(w.columns) == fitted.net_.modalities
    present = fitted._outputs(cohort, "present").astype(bool)  # effective presence
    assert not present.all()  # the cohort has patients missing modalities
    np.testing.assert_allclose(w.to_numpy().sum(1), 1.0, atol=1e-6)
    assert (w.to_numpy()[~present] == 0).all()
    assert (w.to_numpy()[present] > 0).all()
    # training moved the log-variance head off its zero start: not the mean fusion
    assert fitted.net_.fusion.logvar_weight.abs().sum() > 0


def test_patient_with_a_single_modality(fitted, cohort):
    only = cohort.select(["clinical"])
    risk = fitted.predict_risk(only)
    assert np.isfinite(risk).all()
    w = fitted.gate_weights(only)
    np.testing.assert_array_equal(w["clinical"].to_numpy(), 1.0)
    assert (w.drop(columns="clinical").to_numpy() == 0).all()


def test_save_load_round_trip(fitted, cohort, tmp_path):
    fitted.save(tmp_path)
    back = ModalSurv.load(tmp_path)
    assert isinstance(back.net_.fusion, PrecisionWeightedFusion)
    np.testing.assert_array_equal(back.predict_pmf(cohort), fitted.predict_pmf(cohort))
    np.testing.assert_array_equal(back.gate_weights(cohort), fitted.gate_weights(cohort))


def _signal_and_noise(n: int, seed: int) -> Cohort:
    """Risk from 'signal' only; 'noise' is pure noise with the same shape and scale."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, 4))
    log_risk = 1.5 * signal[:, 0] - signal[:, 1]
    t_event = rng.exponential(np.exp(-log_risk))
    t_cens = rng.exponential(2.0, n)
    return Cohort([f"P{i}" for i in range(n)], np.minimum(t_event, t_cens) + 1e-3,
                  t_event <= t_cens, features={"signal": signal, "noise": noise})


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_modality_ends_with_lower_weight(make_config, seed):
    data = _signal_and_noise(300, seed)
    cfg = make_config(
        seed=seed,
        model={"fusion": "uncertainty", "latent_dim": 8, "hidden_dim": 8, "n_bins": 6,
               "dropout": 0.0, "linear_skip": False},  # the signal must pass the fusion
        train={"epochs": 40, "patience": 40, "batch_size": 32, "device": "cpu", "n_init": 1,
               "monitor": "cindex", "lr": 1e-2},
    )
    model = ModalSurv(cfg).fit(data)
    w = model.gate_weights(data).mean()
    assert w["signal"] > 0.6 > w["noise"]
