"""A run folder read back from its files, for the report (no training, no cohort).

What ``runs.train_run`` writes and the report reads: ``metrics.csv`` / ``metrics.json``
(fold scores, summary, diagnostics), ``predictions.csv`` (out-of-fold risk, time, event
and each fold model's PMF), ``folds.csv``, ``config.yaml``, ``data.json``,
``gate_weights.csv``, ``uncertainty.csv`` (out-of-fold member spread),
``evaluation_<cohort>.json`` and ``evaluation_<cohort>_predictions.csv`` (``evaluate``)
and ``models/repeat_0`` (the fold models: their bins, for survival curves). Only the
first three are required, so a folder copied without its models still has a report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.config import RunConfig, load_config
from modalsurv.errors import ConfigError, DataError, FeatureError
from modalsurv.survival import curves
from modalsurv.train.compare import MAIN, fold_overlap_ratio

REQUIRED = ("metrics.csv", "metrics.json", "predictions.csv")
EVALUATION = "evaluation_{}.json"
EVALUATION_PREDICTIONS = "evaluation_{}_predictions.csv"


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a finished run (its required files)."""
    return all((Path(path) / name).is_file() for name in REQUIRED)


#: how every table with patients is read: "NA", "nan", "null" ... are patient ids (pandas'
#: default would make them NaN, losing those patients' rows in the report's data); the
#: run's writers (``utils.atomic_write_csv``, ``DataFrame.to_csv``) write a missing value as ""
IDS: dict[str, Any] = {"dtype": {"patient": str}, "keep_default_na": False, "na_values": [""]}

#: columns the report cannot do without, per required table
COLUMNS = {"metrics.csv": ("model", "fold"),
           "predictions.csv": ("repeat", "fold", "risk", "time", "event")}  # fmt: skip


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot be read ({type(err).__name__}: {err}); the run folder is damaged"
                     " (rerun `modalsurv train` with --resume, or restore the file)",
                     path=path)  # fmt: skip


def _json(path: Path) -> Any:
    """A JSON file of the run; a damaged one is a DataError naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _unreadable(path, err) from None
    if not isinstance(value, dict):
        raise DataError(f"holds a JSON {type(value).__name__}, not an object; the run folder is"
                        " damaged", path=path)  # fmt: skip
    return value


def _csv(path: Path, **kw: Any) -> pd.DataFrame | None:
    """A CSV file of the run (None when absent); a damaged one is a DataError naming it, as
    is a required table (``COLUMNS``) without a column the report needs."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, float_precision="round_trip", **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as err:  # fmt: skip
        raise _unreadable(path, err) from None
    missing = [c for c in COLUMNS.get(path.name, ()) if c not in table.columns]
    if missing:
        raise DataError(f"has no column {missing[0]!r} (columns: {list(table.columns)}); the run"
                        " folder is damaged", path=path, field=missing[0])  # fmt: skip
    return table


@dataclass
class RunFolder:
    """The files of one finished run (see module docstring)."""

    path: Path
    summary: dict[str, Any]
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    folds: pd.DataFrame | None = None
    config: RunConfig | None = None
    data: dict[str, Any] | None = None
    gate_weights: pd.DataFrame | None = None
    uncertainty: pd.DataFrame | None = None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation_predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    _models: Any = None

    @classmethod
    def load(cls, path: str | Path) -> RunFolder:
        """Read a run folder; a ConfigError names the first required file missing."""
        path = Path(path)
        missing = [n for n in REQUIRED if not (path / n).is_file()]
        if missing:
            raise ConfigError(f"{path} is not a finished run folder: {missing[0]} is missing"
                              " (give a folder written by `modalsurv train`, or a grid folder"
                              " written by `modalsurv experiment`)")  # fmt: skip
        summary = _json(path / "metrics.json")
        metrics = _csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
        preds = _csv(path / "predictions.csv", **IDS)
        assert metrics is not None and preds is not None  # REQUIRED: checked above
        config = load_config(path / "config.yaml") if (path / "config.yaml").is_file() else None
        data = _json(path / "data.json") if (path / "data.json").is_file() else None
        gates = _csv(path / "gate_weights.csv", index_col="patient", **IDS)
        evaluations, eval_preds = {}, {}
        for p in sorted(path.glob(EVALUATION.format("*"))):
            name = p.name[len("evaluation_"):-len(".json")]
            evaluations[name] = _json(p)
            table = _csv(path / EVALUATION_PREDICTIONS.format(name), **IDS)
            if table is not None:
                eval_preds[name] = table
        return cls(path=path, summary=summary, metrics=metrics, predictions=preds,
                   folds=_csv(path / "folds.csv", **IDS), config=config,
                   data=data, gate_weights=gates,
                   uncertainty=_csv(path / "uncertainty.csv", **IDS),
                   evaluations=evaluations, evaluation_predictions=eval_preds)  # fmt: skip

    # ------------------------------------------------------------------ derived
    @cached_property
    def first(self) -> pd.DataFrame:
        """Out-of-fold predictions of repeat 0 (one row per patient)."""
        return self.predictions[self.predictions["repeat"] == 0].reset_index(drop=True)

    @property
    def n_folds(self) -> int:
        return int(self.metrics.loc[self.metrics["model"] == MAIN, "fold"].nunique()) or 1

    @property
    def test_train_ratio(self) -> float:
        """n_test / n_train of the folds, grouped folds included (as ``CVResult``'s:
        ``train.compare.fold_overlap_ratio``)."""
        fraction = self.config.cv.train_fraction if self.config is not None else 1.0
        grouped = self.folds is not None and "group" in self.folds.columns
        return fold_overlap_ratio(self.metrics, self.n_folds, fraction, grouped)

    @property
    def optimistic(self) -> bool:
        return bool(self.summary.get("optimistic", False))

    @property
    def cv_harrell_c(self) -> float:
        """ModalSurv's mean Harrell C over the outer folds."""
        try:
            return float(self.summary["models"][MAIN]["harrell_c"]["mean"])
        except (KeyError, TypeError, ValueError):
            return math.nan

    def models(self) -> Any:
        """The fold ensemble of repeat 0 (``FoldEnsemble``), or None without ``models/``."""
        if self._models is None:
            path = self.path / "models" / "repeat_0"
            if not (path / "bundle.json").is_file():
                return None
            from modalsurv.train.ensemble import FoldEnsemble

            self._models = FoldEnsemble.load(path)
        return self._models

    def out_of_fold_survival(self, times: Any) -> np.ndarray | None:
        """``N x T`` survival of each repeat-0 row at ``times`` from its own fold model's
        curve (the PMF in predictions.csv on that model's bins; Cox: its Breslow curve at
        the saved log-risk), or None without the models."""
        grid = np.asarray(times, dtype=np.float64).reshape(-1)
        out = np.full((len(self.first), grid.size), np.nan)
        for f, rows in self.first.groupby("fold").groups.items():
            idx = np.asarray(rows)
            surv = self._fold_survival(int(f), idx, grid)
            if surv is None:
                return None
            out[idx] = surv
        return out

    def survival_at_own(self, times: Any) -> np.ndarray | None:
        """Each repeat-0 row's survival at its own time ``times[i]`` (e.g. its follow-up),
        from its own fold model's curve; None without the models."""
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        first = self.first
        if len(t) != len(first):
            raise ValueError(f"times: {len(t)} values for {len(first)} patients")
        out = np.full(len(t), np.nan)
        for f, rows in first.groupby("fold").groups.items():
            idx = np.asarray(rows)
            order = np.argsort(t[idx])
            grid = t[idx][order]
            curves_f = self._fold_survival(int(f), idx, grid)
            if curves_f is None:
                return None
            own = np.empty(len(idx))
            own[order] = curves_f[order, np.arange(len(idx))]
            out[idx] = own
        return out

    def _fold_survival(self, fold: int, idx: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
        ens = self.models()
        if ens is None:
            return None
        first = self.first
        if not 0 <= fold < len(ens.members):  # e.g. models/ left from an earlier run
            raise FeatureError(f"predictions.csv has fold {fold}, but the fold ensemble holds"
                               f" {len(ens.members)} fold models: models/ is not this run's"
                               " (retrain, or remove models/ to report without curves)",
                               path=self.path / "models" / "repeat_0")  # fmt: skip
        model = ens.members[fold]
        if model.family.discrete:
            pmf_cols = [c for c in first.columns if c.startswith("pmf_")][: len(model.cuts)]
            pmf = first.loc[idx, pmf_cols].to_numpy(float)
            return curves.survival_at(pmf, model.cuts, grid, interpolation="linear")
        risk = first.loc[idx, "risk"].to_numpy(float)[:, None]
        return model.family.survival(risk, model.cuts, grid, model.fitted_)
