"""A random survival forest as plain arrays (train.forest): the same risks as
scikit-survival's forest, saved without pickle."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.ensemble import RandomSurvivalForest

from modalsurv.train.forest import FlatForest, grow_forest


def _data(n=300, p=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    t = rng.exponential(np.exp(-x[:, 0]))
    c = rng.exponential(1.5, n)
    y = np.empty(n, dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = t <= c, np.minimum(t, c)
    return x, y


def test_flat_forest_predicts_as_scikit_survival():
    x, y = _data()
    ref = RandomSurvivalForest(n_estimators=20, min_samples_leaf=10, random_state=0,
                               low_memory=True).fit(x[:200], y[:200])  # fmt: skip
    flat = FlatForest.from_sksurv(ref)
    np.testing.assert_allclose(flat.predict(x[200:]), ref.predict(x[200:]), rtol=1e-12)
    full = RandomSurvivalForest(n_estimators=20, min_samples_leaf=10, random_state=0).fit(
        x[:200], y[:200])
    np.testing.assert_allclose(flat.predict(x[200:]), full.predict(x[200:]), rtol=1e-12)
    np.testing.assert_allclose(flat.predict(x[200:], chunk=7), flat.predict(x[200:]))
    back = FlatForest(flat.arrays(), flat.n_features)
    np.testing.assert_array_equal(back.predict(x), flat.predict(x))
    assert flat.n_trees == 20


def test_grow_and_refusals():
    x, y = _data(seed=1)
    forest = grow_forest(x, y, n_estimators=5, min_samples_leaf=20, seed=3)
    assert forest.predict(x).shape == (300,)
    with pytest.raises(ValueError, match="features"):
        forest.predict(x[:, :3])
    with pytest.raises(ValueError, match="low_memory"):
        FlatForest.from_sksurv(RandomSurvivalForest(n_estimators=2).fit(x, y))
    bad = forest.arrays()
    bad["roots"] = np.array([len(bad["left"]) + 5])
    with pytest.raises(ValueError, match="roots"):
        FlatForest(bad, 5)
