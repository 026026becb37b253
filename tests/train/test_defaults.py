"""Defaults that follow the data (train.defaults): the rules, their resolution at fit time,
the saved config, and the CPU thread policy."""

from __future__ import annotations

import torch

from modalsurv.config import parse_config
from modalsurv.train import defaults
from modalsurv.train.defaults import CohortShape
from modalsurv.train.estimator import ModalSurv


def shape(n: int, tiles: int = 0, tile_dim: int = 0, features: int = 20) -> CohortShape:
    return CohortShape(n=n, events=n // 3, features=features, tiles=tiles, tile_dim=tile_dim)


def test_batch_size_rule():
    assert [defaults.batch_size(shape(n)) for n in (100, 1000, 1599)] == [32, 32, 32]
    assert defaults.batch_size(shape(2000)) == 64  # 2000 / 25 = 80 -> 64
    assert defaults.batch_size(shape(3000)) == 128  # 120 -> 128
    assert defaults.batch_size(shape(6300)) == 256 and defaults.batch_size(shape(50_000)) == 256


def test_resolve_replaces_auto_only():
    cfg = parse_config({"seed": 3})
    assert cfg.train.batch_size == "auto"
    out = defaults.resolve(cfg, shape(5000))
    assert out.train.batch_size == 256 and out.seed == 3 and cfg.train.batch_size == "auto"
    fixed = parse_config({"train": {"batch_size": 48}})
    assert defaults.resolve(fixed, shape(5000)) is fixed


def test_fit_resolves_and_saves_the_trained_config(make_cohort, make_config, tmp_path):
    cfg = make_config(train={"epochs": 1, "n_init": 1, "device": "cpu", "batch_size": "auto"})
    model = ModalSurv(cfg).fit(make_cohort(n=40))
    assert model.config.train.batch_size == "auto"  # the parameter, as given
    assert model.fitted_config_.train.batch_size == 32
    back = ModalSurv.load(model.save(tmp_path / "m"))
    assert back.config.train.batch_size == 32 and back.fitted_config_.train.batch_size == 32


def test_one_thread_for_small_steps_and_restored_after():
    cfg = parse_config({"train": {"device": "cpu"}})
    assert defaults.threads(cfg, 32, shape(300, tiles=64, tile_dim=4)) == 1
    assert defaults.threads(cfg, 32, shape(300, tiles=2000, tile_dim=512)) is None
    assert defaults.resolved_threads(parse_config({"train": {"threads": 3}}), shape(10)) == 3
    before = torch.get_num_threads()
    with defaults.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with defaults.torch_threads(None):
        assert torch.get_num_threads() == before


def test_edge_sizes_resolve_to_valid_configs():
    """Tiny, huge, eventless, one-feature and very wide cohorts: the resolved config parses
    (batch size >= 2, at most 256) and the thread policy answers."""
    cfg = parse_config({"train": {"device": "cpu"}})
    for n, events, features in [(0, 0, 0), (1, 0, 1), (10, 0, 1), (10, 3, 5000),
                                (1599, 0, 1), (1600, 10, 10), (100_000, 0, 1),
                                (100_000, 5000, 20_000)]:  # fmt: skip
        s = CohortShape(n=n, events=events, features=features, tiles=0, tile_dim=0)
        out = defaults.resolve(cfg, s)
        assert 2 <= out.train.batch_size <= 256
        assert parse_config(out.model_dump(mode="json")).train.batch_size == out.train.batch_size
        assert defaults.resolved_threads(out, s) in (1, None)
