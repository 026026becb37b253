"""A random survival forest kept as plain arrays: grown by scikit-survival, saved and
predicted without pickle.

Why: a fitted scikit-survival forest can only be saved by pickling it, and this project
never unpickles (a model folder must be safe to load). The stacked default
(``train.stacking``) needs a forest's *risk score* only, so the forest is grown with
``low_memory=True`` (each leaf keeps the sum of its Nelson–Aalen cumulative hazard over
the training event times, scikit-survival's risk score, instead of whole curves) and
flattened into five arrays over all trees' nodes: left child, right child (-1 at a
leaf), split feature, threshold and leaf risk, plus each tree's root. Prediction walks
every (sample, tree) pair down its tree in lock-step, one vectorised step per level, and
averages the leaves' risks over trees: exactly ``RandomSurvivalForest.predict`` (tested),
which compares features in float32 against float64 thresholds as scikit-learn's trees do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAYS = ("left", "right", "feature", "threshold", "value", "roots")


class FlatForest:
    """A fitted forest's nodes as arrays (module docstring); ``predict`` = its risk score."""

    def __init__(self, arrays: dict[str, np.ndarray], n_features: int) -> None:
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"a flat forest needs the arrays {missing}")
        self.left = np.asarray(arrays["left"], dtype=np.int64)
        self.right = np.asarray(arrays["right"], dtype=np.int64)
        self.feature = np.asarray(arrays["feature"], dtype=np.int64)
        self.threshold = np.asarray(arrays["threshold"], dtype=np.float64)
        self.value = np.asarray(arrays["value"], dtype=np.float64)
        self.roots = np.asarray(arrays["roots"], dtype=np.int64)
        self.n_features = int(n_features)
        n = len(self.left)
        if not (len(self.right) == len(self.feature) == len(self.threshold) == len(self.value) == n):
            raise ValueError("flat forest arrays differ in length")
        if len(self.roots) == 0 or self.roots.min() < 0 or self.roots.max() >= n:
            raise ValueError("flat forest roots out of range")

    @classmethod
    def from_sksurv(cls, forest: Any) -> FlatForest:
        """Flatten a fitted ``RandomSurvivalForest(low_memory=True)``."""
        if not getattr(forest, "low_memory", False):
            raise ValueError("flatten a forest grown with low_memory=True (leaf risk scores)")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        offset = 0
        for est in forest.estimators_:
            t = est.tree_
            leaf = t.children_left == -1
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, t.feature))
            parts["threshold"].append(np.where(leaf, 0.0, t.threshold))
            parts["value"].append(np.asarray(t.value, dtype=np.float64).reshape(t.node_count, -1)[:, 0])
            parts["roots"].append(np.array([offset]))
            offset += t.node_count
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(arrays, forest.n_features_in_)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ARRAYS}

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def predict(self, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Mean leaf risk over the trees for each row of ``x`` (N × n_features)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"the forest was grown on {self.n_features} features; got"
                             f" shape {x.shape}")  # fmt: skip
        # scikit-learn trees compare float32 features with float64 thresholds
        x = x.astype(np.float32).astype(np.float64)
        out = np.empty(len(x))
        for start in range(0, len(x), chunk):
            xs = x[start : start + chunk]
            rows = np.repeat(np.arange(len(xs)), self.n_trees)
            node = np.tile(self.roots, len(xs))
            active = np.flatnonzero(self.left[node] >= 0)
            while len(active):
                nd = node[active]
                go_left = xs[rows[active], self.feature[nd]] <= self.threshold[nd]
                node[active] = np.where(go_left, self.left[nd], self.right[nd])
                active = active[self.left[node[active]] >= 0]
            out[start : start + chunk] = self.value[node].reshape(len(xs), self.n_trees).mean(1)
        return out


def check_distinct_times(time: np.ndarray) -> None:
    """A survival forest needs two distinct follow-up times: with one, scikit-survival's
    trees fail in prediction with a bare IndexError."""
    if np.unique(np.asarray(time)).size < 2:
        raise ValueError("a random survival forest needs at least two distinct follow-up"
                         f" times; every training patient has time {float(time[0]):g}")  # fmt: skip


def grow_forest(x: np.ndarray, y: np.ndarray, *, n_estimators: int, min_samples_leaf: int,
                seed: int, n_jobs: int = 1) -> FlatForest:  # fmt: skip
    """Grow a scikit-survival random survival forest (risk scores only) and flatten it."""
    from sksurv.ensemble import RandomSurvivalForest

    check_distinct_times(y["time"])

    forest = RandomSurvivalForest(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                  n_jobs=n_jobs, random_state=seed, low_memory=True)  # fmt: skip
    forest.fit(x, y)
    return FlatForest.from_sksurv(forest)
