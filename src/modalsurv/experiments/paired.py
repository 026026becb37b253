"""Which settings really differ: every grid setting against a reference, fold by fold.

Why: an ablation table of means ± std cannot say whether dropping a modality hurts,
because the spread over folds is mostly the folds' own difficulty, shared by every
setting. Trials of one grid with the same seed use the same outer folds (a data fraction
shrinks only the training parts), so a setting and the reference can be compared on each
fold and the differences tested with the corrected resampled t-test
(:mod:`modalsurv.train.compare`), pooling the seeds as further repeats.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from modalsurv.errors import ConfigError
from modalsurv.experiments.runners import SETTINGS as GRID_SETTINGS
from modalsurv.train.compare import corrected_resampled_ttest

SETTINGS = tuple(s for s in GRID_SETTINGS if s != "seed")  # a setting: all but the seed


def trial_grouped(trial: Path) -> bool:
    """Whether a trial's folds were leave-one-group-out (its config's ``cv.groups``): their
    sizes follow the groups, so the corrected test takes the folds' own n_test / n_train."""
    path = trial / "config.yaml"
    if not path.is_file():
        return False
    return bool(((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("cv") or {})
                .get("groups"))  # fmt: skip


def _setting(row: pd.Series) -> tuple[Any, ...]:
    return tuple(row[s] for s in SETTINGS)


def describe_setting(setting: tuple[Any, ...]) -> str:
    """A setting as ``paired.csv``'s ``reference`` column names it (the grid report finds
    each group's reference setting back from it)."""
    s = dict(zip(SETTINGS, setting, strict=True))
    enc = "" if s["encoder"] == "default" else f" | {s['encoder']}"
    return f"{s['modalities']}{enc} | {s['fusion']} | {float(s['data_fraction']):.0%}"


def _pick_reference(settings: list[tuple[Any, ...]], reference: dict[str, Any] | None
                    ) -> tuple[Any, ...]:  # fmt: skip
    if not reference:
        return settings[0]
    unknown = sorted(set(reference) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"reference keys {unknown} are not grid settings; use {list(SETTINGS)}")

    def matches(s: tuple[Any, ...]) -> bool:
        d = dict(zip(SETTINGS, s, strict=True))
        return all(_same_value(d[k], v) for k, v in reference.items())

    hits = [s for s in settings if matches(s)]
    if len(hits) != 1:
        known = [describe_setting(s) for s in settings]
        what = "no" if not hits else f"{len(hits)}"
        values = {k: dict.fromkeys(str(s[i]) for s in settings) for i, k in enumerate(SETTINGS)}
        spellings = "; ".join(f"{k}={'|'.join(v)}" for k, v in values.items())
        raise ConfigError(
            f"reference {reference} matches {what} grid settings (it must match exactly one);"
            f" the settings are {known}; accepted values: {spellings} (numbers match by value,"
            " e.g. data_fraction=1 or 1.0)"
        )
    return hits[0]


def _same_value(setting: Any, asked: Any) -> bool:
    """Whether a setting's value is the one asked for: numbers by value (``--reference
    data_fraction=1`` is the grid's 1.0), anything else by its text."""
    if str(setting) == str(asked):
        return True
    try:
        return math.isclose(float(setting), float(asked))
    except (TypeError, ValueError):
        return False


def _groups(settings: list[tuple[Any, ...]], reference: dict[str, Any] | None,
            by: tuple[str, ...] | list[str]) -> tuple[Any, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """(the group key of a setting, each group's reference): ``by`` must name grid settings
    and ``reference`` match exactly one setting of every group (ConfigError otherwise)."""
    unknown = sorted(set(by) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"by {unknown}: not grid settings; use {list(SETTINGS)}")
    pos = [SETTINGS.index(b) for b in by]

    def group(s: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(s[i] for i in pos)

    refs = {}
    for g in dict.fromkeys(group(s) for s in settings):
        refs[g] = _pick_reference([s for s in settings if group(s) == g], reference)
    return group, refs


def check_comparison(rows: list[dict[str, Any]], reference: dict[str, Any] | None = None,
                     by: tuple[str, ...] | list[str] = ()) -> None:  # fmt: skip
    """Before a grid runs: the comparison :func:`paired_table` will make is possible on the
    grid's settings (``rows``: ``Trial.row()`` of each trial), so a mistyped ``--reference``
    or ``--by`` fails at once and not after hours of trials."""
    settings = list(dict.fromkeys(tuple(r[s] for s in SETTINGS) for r in rows))
    _groups(settings, reference, by)


def split_keys(trial: Path, seed: int) -> dict[int, str]:
    """Repeat → a fingerprint of that repeat's outer folds (which patient is in which test
    fold: ``folds.csv``, else the main model's ``predictions.csv``, which holds every
    patient once per repeat); {} when the trial has neither.

    Why: repeat ``r`` of seed ``s`` draws its folds with ``random_state = s + r``, so with
    ``cv.repeats > 1`` seed 0's repeat 1 is seed 1's repeat 0: the same split, which must
    not count twice as independent in the corrected t-test (:func:`one_per_split`). Grid
    trials finished before they kept a folds.csv have only their predictions."""
    cols = ["patient", "repeat", "fold"]
    path = next((p for p in (trial / "folds.csv", trial / "predictions.csv") if p.is_file()),
                None)  # fmt: skip
    if path is None:
        return {}
    folds = pd.read_csv(path, usecols=cols, dtype={"patient": str}, keep_default_na=False)
    out = {}
    for r, g in folds.groupby("repeat"):
        pairs = sorted(zip(g["patient"].astype(str), g["fold"].astype(int), strict=True))
        out[int(r)] = hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
    return out


def split_label(keys: dict[int, str], seed: int, repeat: int) -> str:
    """The split of ``repeat`` of a trial of ``seed`` (``keys``: its :func:`split_keys`):
    the fingerprint, else (its folds not known) that seed's own repeat."""
    return keys.get(repeat) or f"seed {seed} repeat {repeat}"


def one_per_split(diffs: list[pd.DataFrame]) -> np.ndarray:
    """The paired differences (frames ``split, fold, d``), one per distinct (split, fold):
    a split met under two grid seeds (their models trained from other initial weights) is
    one split, its differences averaged, not two independent resamples that would narrow
    the CI. The grid report's fusion against clinical-only counts the same way."""
    if not diffs:
        return np.empty(0)
    d = pd.concat(diffs, ignore_index=True)
    return d.groupby(["split", "fold"], sort=False)["d"].mean().to_numpy(dtype=float)


def _check_same_folds(both: pd.DataFrame, setting: tuple[Any, ...], ref: tuple[Any, ...],
                      seed: int) -> None:  # fmt: skip
    """Refuse to pair a fold with the reference's fold of the same number when the two
    trials' folds (their :func:`split_keys`) hold other patients: that is no pairing."""
    known = both["prints"].ne("") & both["prints_ref"].ne("")
    bad = both[known & (both["prints"] != both["prints_ref"])]
    if not bad.empty:
        raise ValueError(
            f"seed {seed}: {describe_setting(setting)} and the reference"
            f" {describe_setting(ref)} were run on different outer folds (repeat"
            f" {int(bad['repeat'].iloc[0])}); their fold scores cannot be paired")  # fmt: skip


def paired_table(
    out: str | Path,
    reference: dict[str, Any] | None = None,
    metric: str = "harrell_c",
    model: str = "modalsurv",
    level: float = 0.95,
    by: tuple[str, ...] | list[str] = (),
) -> pd.DataFrame:
    """One row per setting of the finished grid in ``out`` other than ``reference``:
    ``setting - reference`` on ``metric`` over the folds both were scored on, with the
    mean difference, its CI, p, and how many folds and seeds were paired. A split (the
    outer folds of one repeat) that two seeds share counts once (:func:`split_keys`):
    ``n_pairs`` counts distinct (split, fold) pairs.

    ``reference``: some of ``modalities`` (joined by '+', or 'all'), ``encoder``,
    ``fusion``, ``data_fraction``, matching exactly one setting; default: the grid's first
    setting. For ``ibs`` lower is better, so a negative difference is an improvement.
    ``n_test / n_train`` of the test uses the smaller training fraction of the two; for
    leave-one-group-out folds (``cv.groups``), whose sizes follow the groups, the folds'
    own mean n_test / n_train (the larger of the two settings').

    ``by`` (grid settings, e.g. ``["data_fraction"]``): compare within each group of
    settings equal on these, each against its own reference (``reference`` then matches
    exactly one setting per group): fine-tuning vs frozen at every training fraction.
    """
    out = Path(out)
    path = out / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no grid results here (run the grid first)")
    results = pd.read_csv(path, keep_default_na=False, na_values=[""])
    ok = results[(results["status"] == "ok") & (results["model"] == model)]
    if ok.empty:
        raise ValueError(f"{path}: no finished trial has model {model!r}")
    settings = list(dict.fromkeys(_setting(r) for _, r in ok.iterrows()))
    group, refs = _groups(settings, reference, by)

    def folds_of(trial: str, seed: int) -> pd.DataFrame:
        m = pd.read_csv(out / "trials" / trial / "metrics.csv")
        if metric not in m.columns:
            raise ValueError(f"{out / 'trials' / trial / 'metrics.csv'}: no column {metric!r}")
        m = m[m["model"] == model]
        keys = split_keys(out / "trials" / trial, seed)
        prints = [keys.get(int(r), "") for r in m["repeat"]]  # "": the folds are not known
        return m[["repeat", "fold", metric]].assign(
            ratio=m["n_test"] / m["n_train"], prints=prints,
            split=[split_label(keys, seed, int(r)) for r in m["repeat"]])

    grouped = trial_grouped(out / "trials" / str(ok["trial"].iloc[0]))
    by_setting: dict[tuple[Any, ...], dict[int, pd.DataFrame]] = {}
    for _, row in ok.iterrows():
        seed = int(row["seed"])
        by_setting.setdefault(_setting(row), {})[seed] = folds_of(row["trial"], seed)

    rows = []
    for setting in settings:
        ref = refs[group(setting)]
        if setting == ref:
            continue
        diffs, seeds, k, ratios = [], 0, 2, [math.nan]
        for seed, mine in by_setting[setting].items():
            theirs = by_setting[ref].get(seed)
            if theirs is None:
                continue
            both = mine.merge(theirs, on=["repeat", "fold"], suffixes=("", "_ref"))
            _check_same_folds(both, setting, ref, seed)
            diffs.append(pd.DataFrame({"split": both["split"], "fold": both["fold"],
                                       "d": both[metric] - both[f"{metric}_ref"]}))  # fmt: skip
            ratios += [both["ratio"].mean(), both["ratio_ref"].mean()]
            seeds += 1
            k = max(k, int(mine.groupby("repeat")["fold"].nunique().max()))
        d = one_per_split(diffs)
        fraction = min(float(setting[3]), float(ref[3]))
        ratio = float(np.nanmax(ratios)) if grouped and diffs else 1.0 / ((k - 1) * fraction)
        mean, lo, hi, p = corrected_resampled_ttest(d, ratio, level)
        rows.append({
            **dict(zip(SETTINGS, setting, strict=True)),
            "reference": describe_setting(ref),
            "metric": metric,
            "mean_difference": mean,
            "ci_low": lo,
            "ci_high": hi,
            "p_value": p,
            "n_pairs": int(np.isfinite(d).sum()),
            "n_seeds": seeds,
        })  # fmt: skip
    return pd.DataFrame(rows)
