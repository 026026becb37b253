"""Data sources: a spec string or config → the cohort and every problem met reading it."""

from __future__ import annotations

import numpy as np

from modalsurv.data.sources import load_data
from modalsurv.io.store import FeatureStore


def test_a_labelled_patient_without_stored_features_is_a_problem(tmp_path):
    store = FeatureStore(tmp_path / "store")
    store.write_many("slide", {"001": np.ones(4), "002": np.zeros(4)})
    (store.root / "labels.csv").write_text("patient,time,event\n001,5,1\n002,3,0\n003,2,0\n")
    loaded = load_data(f"store:{store.root}")
    assert list(loaded.cohort.ids) == ["001", "002", "003"]
    assert [(p.patient, p.severity) for p in loaded.problems] == [("003", "warning")]
    assert "no features for this patient" in loaded.problems[0].reason
