"""Per-patient uncertainty from the members of an ensemble: how much the networks disagree.

A run's fold ensemble holds folds × ``train.n_init`` networks (``FoldEnsemble``: one
``ModalSurv`` per fold, each possibly a seed ensemble). Each network's own prediction for
a patient is a draw from what the training procedure could have produced; the spread over
them (standard deviation, and a ``level`` percentile interval, 5th–95th by default) says
how stable a patient's prediction is. It is not a confidence interval of the patient's
true risk: members share the training data, so the spread understates that.

* :func:`prediction_table`: ``modalsurv predict``'s table, the ensemble's risk and survival
  with the members' spread.
* :func:`out_of_fold_spread`: the same for the cross-validation's out-of-fold predictions,
  where the members of a patient are the seed members of the fold models that did *not*
  train on it (one per repeat): the run folder's ``uncertainty.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort

LEVEL = 0.9


def _percent(q: float) -> str:
    return f"p{100 * q:02.3g}"


def interval_names(prefix: str, level: float = LEVEL) -> tuple[str, str]:
    """Column names of a ``level`` interval, e.g. ``risk_p05`` and ``risk_p95``."""
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return f"{prefix}_{_percent(lo)}", f"{prefix}_{_percent(hi)}"


def member_interval(values: Any, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles over the members (axis 0,
    linear interpolation); with one member both are that member's value."""
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1)")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or v.shape[0] < 1:
        raise ValueError("member_interval needs at least one member (axis 0)")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def spread_columns(prefix: str, values: Any, level: float = LEVEL) -> dict[str, np.ndarray]:
    """``{prefix}_sd`` (over members, ddof 0: 0 for one member) and the ``level`` interval."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = member_interval(v, level)
    lo_name, hi_name = interval_names(prefix, level)
    return {f"{prefix}_sd": v.std(axis=0), lo_name: lo, hi_name: hi}


def fold_weighted(values: Any, counts: Sequence[int]) -> np.ndarray:
    """``values`` (members on axis 0, fold by fold: ``counts[k]`` rows of fold ``k``) with
    each fold's rows repeated up to the least common multiple of the counts, so every fold
    weighs alike in the spread, as in the ensemble's equal-weight mixture of its folds.

    Why: pooled as they are, a fold with more members (a stack whose kept candidates have
    more inner models than ``train.n_init``) outweighed the others, and the members' mean
    was no longer the ensemble's prediction. Equal counts are returned unchanged."""
    v = np.asarray(values, dtype=np.float64)
    counts = [int(c) for c in counts]
    if sum(counts) != v.shape[0] or min(counts, default=0) < 1:
        raise ValueError(f"member counts {counts} do not add up to the {v.shape[0]} members")
    if len(set(counts)) == 1:
        return v
    lcm = math.lcm(*counts)
    return np.repeat(v, [lcm // c for c in counts for _ in range(c)], axis=0)


def _fold_counts(ensemble: Any, n: int) -> list[int]:
    """Members per fold model of a ``FoldEnsemble`` (``FoldEnsemble.n_members``'s terms);
    one fold of ``n`` for anything else, or when the terms do not add up to ``n``."""
    counts = [int(m.n_members if hasattr(m, "n_members") else m.config.train.n_init)
              for m in getattr(ensemble, "members", [])]  # fmt: skip
    return counts if counts and sum(counts) == n else [n]


def time_label(t: float) -> str:
    """``t`` in a column name: ``f"{t:g}"`` where that reads back as ``t``, else the
    shortest exact form (``1234.567`` and ``1234.568`` are both ``1234.57`` under ``g``:
    one time's column silently overwrote the other's)."""
    short = f"{t:g}"
    return short if float(short) == t else repr(float(t))


def prediction_table(ensemble: Any, cohort: Cohort, times: Any = None, level: float = LEVEL
                     ) -> pd.DataFrame:  # fmt: skip
    """One row per patient: the ensemble's ``risk`` with the members' spread
    (``risk_sd``, ``risk_p05``, ``risk_p95``), ``expected_time``, and per time t the
    ensemble's ``survival_at_t`` with the members' interval (``survival_at_t_p05`` /
    ``_p95``), and ``n_members``. ``ensemble``: a ``FoldEnsemble`` (or anything with its
    ``predict_*`` and ``predict_member_*`` methods); its fold models weigh alike in the
    spread (:func:`fold_weighted`), ``n_members`` counts the networks."""
    members = ensemble.predict_member_risk(cohort)
    counts = _fold_counts(ensemble, members.shape[0])
    df = pd.DataFrame({"patient": cohort.ids, "risk": ensemble.predict_risk(cohort),
                       **spread_columns("risk", fold_weighted(members, counts), level),
                       "expected_time": ensemble.predict_expected_time(cohort)})  # fmt: skip
    if times is not None and len(times):
        grid = np.asarray(times, dtype=np.float64).reshape(-1)
        surv = ensemble.predict_survival(cohort, grid)
        member_surv = ensemble.predict_member_survival(cohort, grid)
        for j, t in enumerate(grid):
            name = f"survival_at_{time_label(t)}"
            df[name] = surv[:, j]
            lo, hi = member_interval(fold_weighted(member_surv[:, :, j], counts), level)
            lo_name, hi_name = interval_names(name, level)
            df[lo_name], df[hi_name] = lo, hi
    df["n_members"] = members.shape[0]
    return df


def out_of_fold_member_risks(folds: pd.DataFrame, models: list[list[Any]], cohort: Cohort
                             ) -> pd.DataFrame:  # fmt: skip
    """Long table ``patient, repeat, fold, member, risk``: every seed member of the fold
    model that held each patient out, for every repeat. ``folds``: the run's assignment
    (``patient, repeat, fold``); ``models[r][f]``: the fitted ModalSurv of fold f."""
    frames = []
    for r, fold_models in enumerate(models):
        assign = folds[folds["repeat"] == r]
        for f, model in enumerate(fold_models):
            ids = assign.loc[assign["fold"] == f, "patient"].astype(str).to_numpy()
            if not len(ids):
                continue
            risk = model.predict_member_risk(cohort.subset(cohort.index_of(ids)))
            for s, row in enumerate(risk):
                frames.append(pd.DataFrame({"patient": ids, "repeat": r, "fold": f,
                                            "member": s, "risk": row}))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["patient", "repeat", "fold", "member", "risk"])
    return pd.concat(frames, ignore_index=True)


def summarise_members(long: pd.DataFrame, order: Any = None, level: float = LEVEL
                      ) -> pd.DataFrame:  # fmt: skip
    """Per patient (in ``order`` when given): ``risk_mean`` over all its members, their
    spread (:func:`spread_columns`) and ``n_members``; each repeat's fold model weighs
    alike (:func:`fold_weighted`) when the table has a ``repeat`` column."""
    lo_name, hi_name = interval_names("risk", level)
    rows = []
    for patient, g in long.groupby("patient", sort=False):
        v, n = g["risk"].to_numpy(float), len(g)
        if "repeat" in g:  # rows by repeat: one block of members per repeat
            g = g.sort_values("repeat", kind="stable")
            v = fold_weighted(g["risk"].to_numpy(float), g.groupby("repeat").size().to_list())
        cols = spread_columns("risk", v[:, None], level)
        rows.append({"patient": str(patient), "risk_mean": float(v.mean()),
                     "risk_sd": float(cols["risk_sd"][0]), lo_name: float(cols[lo_name][0]),
                     hi_name: float(cols[hi_name][0]), "n_members": n})  # fmt: skip
    out = pd.DataFrame(rows, columns=["patient", "risk_mean", "risk_sd", lo_name, hi_name,
                                      "n_members"])  # fmt: skip
    if order is not None:
        out = out.set_index("patient").reindex(pd.Index(np.asarray(order, dtype=str),
                                                        name="patient")).reset_index()
    return out


def out_of_fold_spread(folds: pd.DataFrame, models: list[list[Any]], cohort: Cohort,
                       predictions: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:  # fmt: skip
    """``uncertainty.csv``: per patient its out-of-fold ``risk`` (the CV's prediction of
    repeat 0), ``time``, ``event``, and the spread of the out-of-fold members' risks
    (:func:`summarise_members`)."""
    first = predictions[predictions["repeat"] == 0]
    base = pd.DataFrame({"patient": first["patient"].astype(str).to_numpy(),
                         "time": first["time"].to_numpy(float),
                         "event": first["event"].to_numpy(int),
                         "risk": first["risk"].to_numpy(float)})  # fmt: skip
    spread = summarise_members(out_of_fold_member_risks(folds, models, cohort), base["patient"],
                               level)  # fmt: skip
    return pd.concat([base, spread.drop(columns="patient")], axis=1)
