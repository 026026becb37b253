"""A grid folder's ``report.html``, from its files (``results.csv``, ``trials/<id>/``
``metrics.csv`` + ``summary.json``, ``paired.csv`` when ``experiment`` wrote it).

The page: the results per trial; the modality ablation, the fusion comparison and the
frozen / fine-tuned encoders as forest plots of the paired difference to the reference
setting with 95 % CIs (``experiments.paired``: same outer folds, seeds pooled, corrected
resampled t-test); the data-scaling curve (Harrell C against the number of training
patients, one line per modality set × fusion and per baseline, with 95 % bands) with the
smallest training size at which fusion beats clinical-only, or the statement that none
does; and each trial's failure-signature checks with the modality embeddings' alignment
per fusion (``train.diagnostics``). Every figure's numbers are written beside the page
as ``report_data/<figure>.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.errors import ConfigError
from modalsurv.experiments.paired import (
    SETTINGS,
    describe_setting,
    one_per_split,
    paired_table,
    split_keys,
    split_label,
    trial_grouped,
)
from modalsurv.experiments.runners import SETTINGS as TRIAL_SETTINGS
from modalsurv.experiments.runners import stack_weight_curve
from modalsurv.report import plots as P
from modalsurv.report.html import Chart, Note, render_report
from modalsurv.report.tables import FLAG_TEXT, format_difference, format_p
from modalsurv.train.compare import corrected_resampled_ttest, fold_overlap_ratio, fold_ratio
from modalsurv.train.cv import MAIN, PLAIN
from modalsurv.train.diagnostics import CLINICAL_REFERENCES, bundle, table_checks

Section = tuple[str, Any]


def is_grid_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a grid's results (``results.csv`` and ``trials/``)."""
    path = Path(path)
    return (path / "results.csv").is_file() and (path / "trials").is_dir()


def _label(setting: dict[str, Any]) -> str:
    parts = []
    for k in SETTINGS:
        v = setting[k]
        if k == "data_fraction":
            parts.append(f"{float(v):.0%}")
        elif k == "encoder" and v == "default":
            continue
        else:
            parts.append(str(v))
    return " | ".join(parts)


def _stack_weight_sections(out: Path) -> list[Section]:
    """The stacked default's weight on the multimodal network against ModalSurv on clinical
    data, by training size: the operational answer to "when does fusion pay?". Trials of the
    largest modality set only (a clinical-only trial has no fusion to weigh); none for
    grids run with ``model.stack: none``. Folds whose weights are the equal-weights
    fallback were not weighed on data: left out of the figure and the means (kept, marked
    ``fallback``, in the CSV), and said in the caption."""
    title = "Stack weight by training size (when does fusion pay?)"
    weights = stack_weight_curve(out)
    if weights.empty or weights["n_train"].isna().all():
        return []
    if "modalities" in weights and weights["modalities"].notna().any():
        size = weights["modalities"].astype(str).str.count(r"\+") + 1
        weights = weights[size == size.max()]
    shown = ", ".join(sorted(set(weights["modalities"].dropna().astype(str)))) \
        if "modalities" in weights else ""
    fold_keys = ["trial", "repeat", "fold"]
    weights = _absent_as_zero(weights, fold_keys)
    folds = weights.drop_duplicates(fold_keys)
    n_fallback = int(folds["fallback"].sum())
    learned = weights[~weights["fallback"]]
    fell_back = (f"{n_fallback} of {len(folds)} folds fell back to equal weights (too few"
                 " inner events): not weighed on data, so left out of the figure and the"
                 " means (marked in the data's fallback column)")  # fmt: skip
    if learned.empty:
        return [(title, Note(f"no weights to draw: all {len(folds)} folds fell back to equal"
                             " weights (too few inner events), none was weighed on data"))]
    means = learned.groupby("candidate")["weight"].mean()
    caption = ("stack weights per outer fold (mean ± 1 sd over folds and seeds per training"
               f" size){'; modality set ' + shown if shown else ''}; mean weight over all: "
               + ", ".join(f"{k} {v:.2f}" for k, v in means.items())
               + (f"; {fell_back}" if n_fallback else ""))  # fmt: skip
    return [(title, Chart(P.stack_weights_by_size(learned), weights, "stack-weights-by-size",
                          caption))]


def _absent_as_zero(weights: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``weights`` with a row per fold (``keys``) for every candidate: one missing from a
    fold's stack (a peer that failed there) had weight 0 in it, as the run report's mean
    counts it; left out, the means over folds overstated it (each fold sums to 1)."""
    names = pd.DataFrame({"candidate": list(dict.fromkeys(weights["candidate"]))})
    folds = weights.drop_duplicates(keys).drop(columns=["candidate", "weight"])
    full = folds.merge(names, how="cross").merge(
        weights[[*keys, "candidate", "weight"]], on=[*keys, "candidate"], how="left")
    return full.assign(weight=full["weight"].fillna(0.0))[list(weights.columns)]


# ---------------------------------------------------------------------- reading
def missing_trials(out: Path, results: pd.DataFrame) -> list[str]:
    """Labels of the grid's trials (``grid.yaml``, written when the grid started) that have
    neither a result nor a failure: a grid stopped half-way, or grown since it ran."""
    from modalsurv.experiments.grid import load_grid

    if not (out / "grid.yaml").is_file():
        return []
    trials = load_grid(out / "grid.yaml").expand()
    have = set(results["trial"].astype(str)) if "trial" in results.columns else set()
    return [t.label for t in trials if t.id not in have]


def load_results(out: Path) -> pd.DataFrame:
    """``results.csv``; a ConfigError when the folder is not a grid folder."""
    if not is_grid_folder(out):
        raise ConfigError(f"{out} is not a grid folder (no results.csv and trials/): give a"
                          " folder written by `modalsurv experiment`")  # fmt: skip
    return pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])


def fold_table(out: Path, results: pd.DataFrame) -> pd.DataFrame:
    """Every finished trial's fold scores, long: the settings, ``trial``, ``model``,
    ``repeat``, ``fold``, ``harrell_c``, ``n_train``, ``n_test``, ``grouped`` (the
    trial's folds are leave-one-group-out, ``cv.groups``: their sizes follow the groups)
    and ``split`` (which outer split the repeat is, ``paired.split_label``: two seeds may
    share one)."""
    ok = results[results["status"] == "ok"].drop_duplicates("trial")
    frames = []
    for _, row in ok.iterrows():
        d = out / "trials" / row["trial"]
        m = pd.read_csv(d / "metrics.csv")
        m = m[["model", "repeat", "fold", "harrell_c", "n_train", "n_test"]].copy()
        for s in TRIAL_SETTINGS:
            m[s] = row[s]
        m["trial"] = row["trial"]
        m["grouped"] = trial_grouped(d)
        keys = split_keys(d, int(row["seed"]))
        m["split"] = [split_label(keys, int(row["seed"]), int(r)) for r in m["repeat"]]
        frames.append(m)
    cols = [*TRIAL_SETTINGS, "trial", "model", "repeat", "fold", "harrell_c", "n_train", "n_test",
            "grouped", "split"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def _ratio(rows: pd.DataFrame, k: int, fraction: float) -> float:
    """n_test / n_train for the corrected resampled t-test over ``rows``' folds: the folds'
    own mean for leave-one-group-out folds (as ``paired`` and ``CVResult`` use), else the
    k-fold value (``compare.fold_ratio``)."""
    if "grouped" in rows and rows["grouped"].astype(bool).any():
        return float((rows["n_test"] / rows["n_train"]).mean())
    return fold_ratio(k, fraction)


def trial_diagnostics(out: Path, results: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per finished trial its checks: those its summary recorded (``train.diagnostics``),
    or those its metrics table supports for trials run before they were recorded."""
    ok = results[results["status"] == "ok"].drop_duplicates("trial")
    found = {}
    for _, row in ok.iterrows():
        d = out / "trials" / row["trial"]
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
        diag = (summary.get("cv") or {}).get("diagnostics")
        if diag is None:
            metrics = pd.read_csv(d / "metrics.csv")
            k = int(metrics.loc[metrics["model"] == MAIN, "fold"].nunique()) or 2
            ratio = fold_overlap_ratio(metrics, k, float(row["data_fraction"]), trial_grouped(d))
            diag = bundle(table_checks(metrics, ratio))
        found[row["trial"]] = diag
    return found


# ---------------------------------------------------------------------- paired
def reference_setting(results: pd.DataFrame, paired: pd.DataFrame) -> dict[str, Any] | None:
    """The setting ``paired`` compares with: the one finished setting it has no row for."""
    ok = results[(results["status"] == "ok") & (results["model"] == MAIN)]
    settings = ok[list(SETTINGS)].drop_duplicates()
    listed = {tuple(str(v) for v in r) for r in paired[list(SETTINGS)].itertuples(index=False)}
    rest = [r for r in settings.itertuples(index=False)
            if tuple(str(v) for v in r) not in listed]  # fmt: skip
    return dict(zip(SETTINGS, rest[0], strict=True)) if len(rest) == 1 else None


def _settings_finished(results: pd.DataFrame, paired: pd.DataFrame) -> bool:
    """Whether every setting ``paired`` compares is a finished setting of ``results``."""
    ok = results[(results["status"] == "ok") & (results["model"] == MAIN)]
    finished = {tuple(str(v) for v in r) for r in ok[list(SETTINGS)].itertuples(index=False)}
    return all(tuple(str(v) for v in r) in finished
               for r in paired[list(SETTINGS)].itertuples(index=False))  # fmt: skip


def axis_rows(paired: pd.DataFrame, reference: dict[str, Any], axis: str) -> pd.DataFrame:
    """Rows of ``paired`` that differ from ``reference`` in ``axis`` only, as forest-plot
    rows ``label, mean, low, high, p_value, n_pairs``."""
    same = np.ones(len(paired), dtype=bool)
    for s in SETTINGS:
        if s != axis:
            same &= paired[s].astype(str).to_numpy() == str(reference[s])
    rows = paired[same]
    return pd.DataFrame({"label": rows[axis].astype(str).to_numpy(),
                         "mean": rows["mean_difference"].to_numpy(float),
                         "low": rows["ci_low"].to_numpy(float),
                         "high": rows["ci_high"].to_numpy(float),
                         "p_value": rows["p_value"].to_numpy(float),
                         "n_pairs": rows["n_pairs"].to_numpy(int)})  # fmt: skip


# ---------------------------------------------------------------------- scaling
def _line(row: pd.Series, axes: list[str]) -> str:
    """The stack (``modalsurv``) and its network alone (``modalsurv_plain``) get a line per
    setting; a baseline, the same in every trial of one seed and fraction, one line."""
    setting = " | ".join(str(row[a]) for a in axes)
    if row["model"] == PLAIN:
        return f"{setting or MAIN} (network alone)"
    if row["model"] != MAIN:
        return str(row["model"])
    return setting or MAIN


def _per_split(g: pd.DataFrame, values: pd.Series) -> np.ndarray:
    """``values`` of ``g``'s folds, one per distinct (split, fold): the mean over the seeds
    that share a split (``paired.one_per_split``), so a shared split is one resample."""
    return one_per_split([pd.DataFrame({"split": g["split"], "fold": g["fold"], "d": values})])


def scaling_table(folds: pd.DataFrame, line_axes: list[str]) -> pd.DataFrame:
    """Per line (ModalSurv per ``line_axes`` setting; each baseline once) and training
    fraction: ``x`` (mean training patients), the mean Harrell C over folds and seeds and
    its corrected resampled 95 % interval, ``n`` scores. A split two seeds share
    (``folds``' ``split``, from :func:`fold_table`) counts once, its scores averaged over
    those seeds, as in ``fusion_vs_clinical``: ``n`` counts distinct (split, fold) pairs,
    and a leave-one-group-out n_test / n_train is theirs."""
    rows = []
    f = _with_splits(folds).copy()
    f["line"] = [_line(r, line_axes) for _, r in f.iterrows()]
    # a baseline is the same in every trial of one seed and fraction: count it once
    f = f.drop_duplicates(["line", "data_fraction", "seed", "repeat", "fold"])
    for (line, fraction), g in f.groupby(["line", "data_fraction"], sort=False):
        k = int(g.groupby(["seed", "repeat"])["fold"].nunique().max())
        scores = _per_split(g, g["harrell_c"])
        ratio = fold_ratio(k, float(fraction))
        if "grouped" in g and g["grouped"].astype(bool).any():
            ratio = float(_per_split(g, g["n_test"] / g["n_train"]).mean())
        mean, lo, hi, _ = corrected_resampled_ttest(scores, ratio)
        rows.append({"line": line, "data_fraction": float(fraction),
                     "x": float(g["n_train"].mean()), "mean": mean, "low": lo, "high": hi,
                     "n": int(np.isfinite(scores).sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["line", "data_fraction", "x", "mean", "low", "high", "n"])


def _is_clinical_only(modalities: Any) -> bool:
    return str(modalities) == "clinical"


def _is_multimodal(modalities: Any) -> bool:
    """Two or more modalities ('+'-joined, or 'all'): a single modality other than clinical
    has no fusion, so its difference to clinical-only says nothing about fusion."""
    return str(modalities) == "all" or "+" in str(modalities)


def _with_splits(folds: pd.DataFrame) -> pd.DataFrame:
    """``folds`` with a ``split`` column: a fold table without one (its folds not known)
    takes each seed's repeats as its own splits, as ``paired_table`` does then."""
    if "split" in folds.columns:
        return folds
    return folds.assign(split=[split_label({}, int(s), int(r))
                               for s, r in zip(folds["seed"], folds["repeat"], strict=True)])


def _same_split(both: pd.DataFrame) -> np.ndarray:
    """Per merged row: its two sides' ``split`` are one split, or one side's folds are not
    known (``split_label``'s fallback), as ``paired``'s check of the same folds."""
    unknown = [split_label({}, int(s), int(r)) for s, r in zip(both["seed"], both["repeat"],
                                                                   strict=True)]  # fmt: skip
    a, b = both["split"].astype(str).to_numpy(), both["split_ref"].astype(str).to_numpy()
    return (a == b) | (a == np.asarray(unknown, dtype=str)) | (b == np.asarray(unknown, dtype=str))


def fusion_vs_clinical(folds: pd.DataFrame, line_axes: list[str]) -> pd.DataFrame:
    """Per training fraction and multimodal ModalSurv line (two or more modalities; a
    single other modality is no fusion and is left out): its Harrell C minus the
    clinical-only one on the same folds (seeds pooled): the ModalSurv setting on
    ``clinical`` alone with the same other settings when the grid has it, else the
    trial's own clinical baseline (``modalsurv_clinical``, then ``coxph_clinical``).
    Columns ``line, reference, data_fraction, x, mean, low, high, p_value, n_pairs,
    beats`` (the whole CI above 0), ``worse`` (the whole CI below 0). A split two seeds
    share (``folds``' ``split``, from :func:`fold_table`) counts once, as in
    ``paired_table``: ``n_pairs`` counts distinct (split, fold) pairs."""
    keys = ["seed", "repeat", "fold"]
    main = _with_splits(folds[folds["model"] == MAIN])
    rows = []
    others = [a for a in SETTINGS if a != "modalities"]
    clinical_only = main["modalities"].map(_is_clinical_only)
    multimodal = main["modalities"].map(_is_multimodal)
    for _, g in main[multimodal].groupby([*others, "modalities"], sort=False):
        first = g.iloc[0]
        clin = main[clinical_only]
        for a in others:
            clin = clin[clin[a].astype(str) == str(first[a])]
        ref_name = "ModalSurv on clinical"
        if clin.empty:
            trials = set(g["trial"])
            pool = _with_splits(folds[folds["trial"].isin(trials)])
            name = next((r for r in CLINICAL_REFERENCES if (pool["model"] == r).any()), None)
            if name is None:
                continue
            clin, ref_name = pool[pool["model"] == name].drop_duplicates(keys), name
        both = g.merge(clin[[*keys, "split", "harrell_c"]], on=keys, suffixes=("", "_ref"))
        # fold k of each side is one pairing only when both hold the same patients (one
        # split): trials run on other outer folds were paired by fold number alone, where
        # paired_table refuses them; folds not known on a side are paired, as there
        both = both[_same_split(both)]
        d = _per_split(both, both["harrell_c"] - both["harrell_c_ref"])
        k = int(g.groupby(["seed", "repeat"])["fold"].nunique().max())
        fraction = float(first["data_fraction"])  # grouped: the larger of the two settings'
        ratio = max(_ratio(g, k, fraction), _ratio(clin, k, fraction))
        mean, lo, hi, p = corrected_resampled_ttest(d, ratio)
        rows.append({"line": _line(first, line_axes), "reference": ref_name,
                     "data_fraction": float(first["data_fraction"]),
                     "x": float(g["n_train"].mean()), "mean": mean, "low": lo, "high": hi,
                     "p_value": p, "n_pairs": int(np.isfinite(d).sum()),
                     "beats": bool(lo > 0), "worse": bool(hi < 0)})  # fmt: skip
    cols = ["line", "reference", "data_fraction", "x", "mean", "low", "high", "p_value",
            "n_pairs", "beats", "worse"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["line", "x"], kind="stable").reset_index(drop=True)


def smallest_winning_size(comparison: pd.DataFrame) -> dict[str, Any] | None:
    """The comparison row with the fewest training patients where fusion beats
    clinical-only (``beats``), or None when no fraction does."""
    wins = comparison[comparison["beats"]]
    if wins.empty:
        return None
    return wins.sort_values("x", kind="stable").iloc[0].to_dict()


# ---------------------------------------------------------------------- alignment
def alignment_table(results: pd.DataFrame, diagnostics: dict[str, dict[str, Any]],
                    group_axes: list[str]) -> pd.DataFrame:  # fmt: skip
    """Per ``group_axes`` setting (e.g. the fusion) and modality pair: same-patient and
    random-pair cosine distances averaged over the trials (seeds), weighted by patients."""
    ok = results[(results["status"] == "ok") & (results["model"] == MAIN)]
    rows = []
    for _, r in ok.iterrows():
        for c in diagnostics.get(r["trial"], {}).get("checks", []):
            if c.get("check") != "embedding_alignment":
                continue
            for p in c.get("pairs") or []:
                rows.append({"group": " | ".join(str(r[a]) for a in group_axes) or MAIN, **p})
    cols = ["group", "a", "b", "same_patient", "random_pairs", "gap", "n_patients"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    out = []
    for (g, a, b), part in df.groupby(["group", "a", "b"], sort=False):
        w = part["n_patients"].to_numpy(float)
        same = float(np.average(part["same_patient"], weights=w))
        rand = float(np.average(part["random_pairs"], weights=w))
        out.append({"group": g, "a": a, "b": b, "same_patient": same, "random_pairs": rand,
                    "gap": rand - same, "n_patients": int(w.sum())})  # fmt: skip
    return pd.DataFrame(out, columns=cols)


# ---------------------------------------------------------------------- the page
def _varying(results: pd.DataFrame) -> list[str]:
    ok = results[results["status"] == "ok"]
    return [a for a in SETTINGS if ok[a].astype(str).nunique() > 1]


def _results_section(results: pd.DataFrame) -> pd.DataFrame:
    shown = results.copy()
    for m in ("harrell_c", "ibs"):
        # one finite fold has no spread: its mean alone, not "± nan"
        shown[m] = [("–" if not math.isfinite(a) else f"{a:.3f}" if not math.isfinite(b)
                     else f"{a:.3f} ± {b:.3f}")
                    for a, b in zip(shown[f"{m}_mean"].astype(float),
                                    shown[f"{m}_std"].astype(float))]  # fmt: skip
    if "n_failed_folds" in shown:  # a count: NaN on a failed trial's row made it 0.000
        shown["n_failed_folds"] = ["–" if pd.isna(v) else str(int(v))
                                   for v in shown["n_failed_folds"]]  # fmt: skip
    cols = ["label", "model", "status", "harrell_c", "ibs", "n_failed_folds", "error"]
    return shown[[c for c in cols if c in shown.columns]]


SECTION_OF_AXIS = {"modalities": "Modality ablation", "fusion": "Fusion comparison",
                   "encoder": "Frozen / fine-tuned encoders",
                   "data_fraction": "Data scaling and fusion against clinical-only by training"
                                    " size"}  # fmt: skip


def _failed_note(results: pd.DataFrame) -> list[Section]:
    """Failed trials, and what they take off the page: the settings with no finished trial
    (left out of every comparison) and the sections of an axis that no longer varies among
    the finished trials, so a missing section is explained, not silently absent."""
    failed = results[results["status"] != "ok"]
    if failed.empty:
        return []
    text = f"{failed['trial'].nunique()} trial(s) failed: see the table and trials/<id>/error.json"
    ok = results[results["status"] == "ok"]
    done = {tuple(str(v) for v in r) for r in ok[list(SETTINGS)].itertuples(index=False)}
    lost = [label for r, label in zip(failed[list(SETTINGS)].itertuples(index=False),
                                      failed["label"].astype(str), strict=True)
            if tuple(str(v) for v in r) not in done]  # fmt: skip
    if lost:
        text += ("; settings with no finished trial, left out of the paired table, forest"
                 f" plots, scaling curve and fusion against clinical-only: {'; '.join(lost)}")
    every = [a for a in SETTINGS if results[a].astype(str).nunique() > 1]
    gone = [a for a in every if a in SECTION_OF_AXIS and a not in _varying(results)]
    if gone:
        text += ("; not shown, as only one value of the axis has a finished trial: "
                 + "; ".join(f"{SECTION_OF_AXIS[a]} ({a})" for a in gone))
    return [("", Note(text))]


def _forest_sections(paired: pd.DataFrame, reference: dict[str, Any] | None,
                     varying: list[str], group: str = "") -> list[Section]:  # fmt: skip
    """A forest plot per varying axis of ``paired``'s rows against ``reference``; ``group``
    (``experiment --by``: one reference per group) keeps each group's data file apart."""
    if paired.empty or reference is None:
        return []
    out: list[Section] = []
    ref = _label(reference)
    names = {"modalities": ("Modality ablation", "ablation"),
             "fusion": ("Fusion comparison", "fusion"),
             "encoder": ("Frozen / fine-tuned encoders", "encoder")}
    for axis in ("modalities", "fusion", "encoder"):
        if axis not in varying:
            continue
        rows = axis_rows(paired, reference, axis)
        title, key = names[axis]
        if group:  # the heading names the reference already: the file needs it too
            key = f"{key}_{group}"
        if rows.empty:
            out.append((title, Note(f"no setting differs from the reference ({ref}) in"
                                    f" {axis} alone", "ok")))
            continue
        out.append((f"{title}: ΔC to {reference[axis]} (reference {ref})", Chart(
            P.forest(rows, f"{title}: Harrell C minus the reference, 95% CI",
                     f"ΔC to {reference[axis]}"),
            rows, f"forest_{key}", "paired on the same outer folds, seeds pooled (corrected"
            " resampled t-test); black: the CI excludes 0")))  # fmt: skip
    return out


def _group_forest_sections(results: pd.DataFrame, paired: pd.DataFrame,
                           varying: list[str]) -> list[Section]:  # fmt: skip
    """``experiment --by``: each group's rows against its own reference (``paired``'s
    ``reference`` column), so the forest plots are drawn per group, not dropped."""
    ok = results[(results["status"] == "ok") & (results["model"] == MAIN)]
    settings = {describe_setting(tuple(r)): dict(zip(SETTINGS, r, strict=True))
                for r in ok[list(SETTINGS)].drop_duplicates().itertuples(index=False)}
    out: list[Section] = []
    for name in dict.fromkeys(paired["reference"]):
        reference = settings.get(name)
        if reference is None:
            out.append(("", Note(f"forest plots against {name}: that reference setting has no"
                                 " finished trial, none drawn")))
            continue
        out += _forest_sections(paired[paired["reference"] == name], reference, varying,
                                group=name)
    return out


def _line_axes(varying: list[str]) -> list[str]:
    return [a for a in ("modalities", "encoder", "fusion") if a in varying] or ["modalities"]


def _clinical_sections(comp: pd.DataFrame) -> list[Section]:
    """Multimodal ModalSurv minus clinical-only, per setting (and training size): a table,
    and a flag for each one whose whole interval lies below 0."""
    if comp.empty:
        return [("Fusion against clinical-only", Note(
            "the grid has no multimodal setting (two or more modalities) with a clinical-only"
            " reference (a ModalSurv setting on clinical alone or a baseline among"
            f" {list(CLINICAL_REFERENCES)}): nothing to compare", "ok"))]
    out: list[Section] = []
    for _, r in comp[comp["worse"]].iterrows():
        out.append(("", Note(f"⚠ worse_than_clinical: {r['line']} at {r['data_fraction']:.0%}"
                             f" of the training part: ΔC to {r['reference']}"
                             f" {format_difference(r['mean'], r['low'], r['high'])}, the whole"
                             " 95% CI below 0")))  # fmt: skip
    shown = comp.assign(**{"ΔC (95% CI)": [format_difference(a, b, c) for a, b, c in
                                           zip(comp["mean"], comp["low"], comp["high"])],
                           # a count of patients: not 21.000 under the tables' 3 decimals
                           "training patients": ["–" if pd.isna(v) else f"{v:.0f}"
                                                 for v in comp["x"]],
                           # the run report's rule: "< 0.01", not 0.000 (no test gives 0)
                           "p_value": [format_p(v) for v in comp["p_value"]]})  # fmt: skip
    cols = ["line", "reference", "data_fraction", "training patients", "ΔC (95% CI)",
            "p_value", "n_pairs", "beats", "worse"]
    out.append(("Multimodal minus clinical-only, paired on folds (seeds pooled)", shown[cols]))
    return out


def _scaling_sections(folds: pd.DataFrame, varying: list[str], comp: pd.DataFrame
                      ) -> list[Section]:  # fmt: skip
    """The data-scaling curve and where fusion first beats clinical-only (``comp``:
    :func:`fusion_vs_clinical`)."""
    if "data_fraction" not in varying:
        return []
    table = scaling_table(folds, _line_axes(varying))
    win = smallest_winning_size(comp) if len(comp) else None
    out: list[Section] = [("Data scaling", Chart(
        P.scaling(table, None if win is None else win["x"]), table, "data_scaling",
        "Harrell C (mean over outer folds; a split two seeds share counted once) against the"
        " training patients per fold;"
        " bands: corrected resampled 95% CI"))]  # fmt: skip
    if comp.empty:
        return out
    if win is None:
        text = ("at no training size of this grid does fusion beat clinical-only (the paired"
                " 95% CI never lies wholly above 0)")
    else:
        text = (f"fusion ({win['line']}) beats clinical-only ({win['reference']}) from"
                f" {win['x']:.0f} training patients per fold ({win['data_fraction']:.0%} of"
                f" the training part) on: ΔC {format_difference(win['mean'], win['low'], win['high'])}")
    out.append(("Fusion against clinical-only by training size",
                Note(text, "ok" if win is not None else "warn")))
    return out


def _diagnostic_sections(results: pd.DataFrame, diagnostics: dict[str, dict[str, Any]],
                         varying: list[str]) -> list[Section]:  # fmt: skip
    ok = results[(results["status"] == "ok") & (results["model"] == MAIN)]
    rows = []
    for _, r in ok.iterrows():
        checks = {c["check"]: c for c in diagnostics.get(r["trial"], {}).get("checks", [])}
        row = {"trial": r["label"]}
        for name in ("fold_sd", "worse_than_clinical", "embedding_alignment"):
            c = checks.get(name, {})
            v = c.get("value")
            row[name] = f"{FLAG_TEXT[c.get('flag')]}" + ("" if v is None else f" ({v:+.3f})")
        rows.append(row)
    out: list[Section] = []
    flagged = [(r["label"], c) for _, r in ok.iterrows()
               for c in diagnostics.get(r["trial"], {}).get("checks", []) if c.get("flag")]
    for label, c in flagged:
        out.append(("", Note(f"⚠ {label}: {c['check']}: {c['message']}")))
    out.append(("Failure-signature checks per trial (value: fold std, ΔC to clinical,"
                " alignment gap)", pd.DataFrame(rows)))
    group_axes = [a for a in ("fusion", "modalities") if a in varying] or ["fusion"]
    align = alignment_table(results, diagnostics, group_axes)
    if len(align):
        out.append(("Modality embedding alignment" + (" per fusion" if "fusion" in varying
                                                      else ""), Chart(
            P.alignment(align), align, "embedding_alignment",
            "mean cosine distance between two modalities' embeddings of the same patient and"
            " of different patients (out-of-fold, seeds pooled): same-patient distances"
            " below the random ones mean aligned embeddings")))  # fmt: skip
    return out


def build_grid_report(out: str | Path, page: str | Path | None = None,
                      title: str | None = None) -> Path:  # fmt: skip
    """(Re)build a grid folder's report from its files; returns the page's path
    (default ``OUT/report.html``; the figures' CSVs go to ``report_data/`` beside it).
    A build that fails half way closes the figures it drew."""
    with P.figures_closed_on_error():
        return _build_grid_report(out, page, title)


def _build_grid_report(out: str | Path, page: str | Path | None, title: str | None) -> Path:
    out = Path(out)
    results = load_results(out)
    page = Path(page) if page is not None else out / "report.html"
    title = title or f"modalsurv grid: {out.resolve().name}"
    ok = results[results["status"] == "ok"]
    sections: list[Section] = []
    missing = missing_trials(out, results)
    if missing:
        shown = "; ".join(missing[:20]) + (f"; ... ({len(missing) - 20} more)" if len(missing) > 20
                                           else "")  # fmt: skip
        sections.append(("", Note(f"{len(missing)} trial(s) of the grid have not run (the grid"
                                  f" was stopped, or grew since): {shown}. Run `modalsurv"
                                  " experiment` again to finish them; finished trials are"
                                  " kept.")))
    sections += _failed_note(results)
    sections.append(("Trials", _results_section(results)))
    if ok.empty or not (ok["model"] == MAIN).any():
        sections.append(("", Note("no finished trial: nothing else to show")))
        render_report(title, sections, page)
        return page
    varying = _varying(results)
    stored = (out / "paired.csv").is_file()
    if stored:
        paired = pd.read_csv(out / "paired.csv", keep_default_na=False, na_values=[""])
    else:
        paired = paired_table(out)
    if stored and not _settings_finished(results, paired):  # an earlier grid's: redo
        paired = paired_table(out)
    # `experiment --by` writes one reference per group: kept as written (no single
    # reference for the forest plots); otherwise the one finished setting without a row
    refs = list(dict.fromkeys(paired["reference"])) if len(paired) else []
    reference = reference_setting(results, paired) if len(refs) == 1 else None
    if stored and len(refs) == 1 and reference is None:  # written before the grid grew: redo
        paired = paired_table(out)
        refs = list(dict.fromkeys(paired["reference"])) if len(paired) else []
        reference = reference_setting(results, paired) if len(paired) else None
    if len(paired):
        shown = paired.assign(**{"ΔC (95% CI)": [format_difference(a, b, c) for a, b, c in zip(
            paired["mean_difference"], paired["ci_low"], paired["ci_high"])],
            "p_value": [format_p(v) for v in paired["p_value"]]})  # fmt: skip
        cols = [*SETTINGS, *(["reference"] if len(refs) > 1 else []), "ΔC (95% CI)",
                "p_value", "n_pairs", "n_seeds"]  # fmt: skip
        heading = (f"Every setting minus the reference ({refs[0]}), paired on folds"
                   if len(refs) == 1 else "Every setting minus its group's reference, paired"
                   " on folds")  # fmt: skip
        sections.append((heading, shown[cols]))
    if len(refs) > 1:
        sections += _group_forest_sections(results, paired, varying)
    else:
        sections += _forest_sections(paired, reference, varying)
    folds = fold_table(out, results)
    comp = fusion_vs_clinical(folds, _line_axes(varying))
    sections += _scaling_sections(folds, varying, comp)
    sections += _clinical_sections(comp)
    sections += _stack_weight_sections(out)
    sections += _diagnostic_sections(results, trial_diagnostics(out, results), varying)
    render_report(title, sections, page)
    return page


def build_report(folder: str | Path, page: str | Path | None = None, title: str | None = None,
                 times: list[float] | None = None) -> Path:  # fmt: skip
    """The report of a run folder or a grid folder, whichever ``folder`` is. ``times``
    (calibration times) are for a run's page: a grid's page has no calibration, so they
    are a ConfigError there rather than silently ignored."""
    from modalsurv.report.run_report import build_run_report

    if is_grid_folder(folder):
        if times:
            raise ConfigError(f"--times: {folder} is a grid folder, whose page has no"
                              " calibration; leave --times out (it is for run folders)")
        return build_grid_report(folder, page, title)
    return build_run_report(folder, page, title, times)
