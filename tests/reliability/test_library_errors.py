"""The Python API raises the project's errors too (what the CLI turns into one line)."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.cohort import Cohort
from modalsurv.config import DataConfig, parse_config
from modalsurv.errors import ConfigError, DataError, FeatureError, LabelError
from modalsurv.train.cv import cross_validate
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv


def _cohort(n: int, events: int) -> Cohort:
    rng = np.random.default_rng(0)
    event = np.zeros(n, dtype=bool)
    event[:events] = True
    return Cohort([f"P{i}" for i in range(n)], rng.uniform(1, 10, n), event,
                  features={"clinical": rng.normal(size=(n, 3))})  # fmt: skip


def test_fit_on_one_patient(rel):
    with pytest.raises(DataError, match="at least 2 patients.*1 patient"):
        ModalSurv(parse_config(rel.tiny_config())).fit(_cohort(1, 1))


def test_fit_without_events(rel):
    with pytest.raises(LabelError, match="no event"):
        ModalSurv(parse_config(rel.tiny_config())).fit(_cohort(6, 0))


@pytest.mark.parametrize(("n", "events", "folds", "words"), [
    (3, 3, 5, "5 folds need at least 5 patients; the cohort has 3 patients"),
    (8, 0, 2, "all 8 patients are censored"),
    (8, 2, 3, "2 events for 3 folds.*set cv.folds to at most 2"),
    # one event: 'at most 1' would be advice no config accepts
    (8, 1, 2, "1 event for 2 folds.*needs at least 2 .*add patients with an event"),
])  # fmt: skip
def test_cross_validate_refuses_unusable_cohorts(rel, n, events, folds, words, tmp_path):
    with pytest.raises(DataError, match=words):
        cross_validate(_cohort(n, events), parse_config(rel.tiny_config(cv={"folds": folds})),
                       resume_dir=tmp_path / "ck")  # fmt: skip
    assert not (tmp_path / "ck").exists()  # refused before writing


def test_loading_a_missing_ensemble_names_the_file(tmp_path):
    with pytest.raises(FeatureError, match="bundle.json"):
        FoldEnsemble.load(tmp_path)


def test_data_params_are_checked_before_loading():
    from modalsurv.data.sources import load_cohort

    with pytest.raises(ConfigError, match=r"data.params: unknown key\(s\) \['size'\]"):
        load_cohort(DataConfig(source="synthetic", params={"size": 3}))
