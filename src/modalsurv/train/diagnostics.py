"""Failure signatures: the checks that say when a run's numbers should not be trusted.

Computed for every cross-validation (``train.cv.cross_validate`` puts them in its summary,
so in a run's ``metrics.json`` and a grid trial's ``summary.json``), completed by
``runs.evaluate_run`` when an external cohort is scored, and shown by the reports:

* ``fold_sd``: the standard deviation of ModalSurv's Harrell C over the outer folds above
  :data:`FOLD_SD_LIMIT` (0.08): the folds disagree so much that the mean says little (too
  few events per fold, or a model that sometimes fails to train).
* ``worse_than_clinical``: ModalSurv minus its clinical-only baseline (``modalsurv_clinical``
  or else ``coxph_clinical``, whichever the run has) in Harrell C on the same folds, with
  the corrected resampled t-test's 95 % interval (``train.compare``); flagged when the
  whole interval lies below 0: the extra modalities hurt.
* ``embedding_alignment``: for each pair of modalities, the mean cosine distance between
  the two modalities' embeddings of the *same* patient against that of *different*
  patients (every other pair), from each fold model on the patients it did not train on.
  An attention fusion mixes modalities by similarity in the latent space, so same-patient
  embeddings no closer than random pairs (a gap ``random - same <= 0`` averaged over the
  modality pairs) is flagged: the fusion cannot be using cross-modal agreement.
* ``external_drop:<cohort>``: the cross-validated Harrell C minus the one on an external
  cohort (``evaluation_<cohort>.json``) above :data:`EXTERNAL_DROP_LIMIT` (0.1): the model
  does not transfer (site, scanner or population shift, or an optimistic CV).

Every check is a dict ``check, flag, value, threshold, message`` (plus its own details);
``flag`` is True (raised), False (passed) or None (not applicable: ``message`` says why).
A check that fails to compute becomes ``flag: None`` with the error, never an exception:
the diagnostics must not lose a finished run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.train.compare import MAIN, compare_models

FOLD_SD_LIMIT = 0.08
EXTERNAL_DROP_LIMIT = 0.1
CLINICAL_REFERENCES = ("modalsurv_clinical", "coxph_clinical")


def _finite(x: Any) -> float | None:
    """A JSON-friendly number: None for NaN/inf."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def check(name: str, flag: bool | None, message: str, value: Any = None,
          threshold: float | None = None, **details: Any) -> dict[str, Any]:  # fmt: skip
    """One check as a JSON-friendly dict (see module docstring)."""
    return {"check": name, "flag": None if flag is None else bool(flag),
            "value": _finite(value), "threshold": threshold, "message": message,
            **details}  # fmt: skip


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or a not-applicable check carrying the error that stopped it."""
    try:
        return fn()
    except Exception as err:  # a diagnostic must never lose a finished run
        return check(name, None, f"could not be computed: {type(err).__name__}: {err}")


# ---------------------------------------------------------------------- fold spread
def fold_sd_check(metrics: pd.DataFrame, model: str = MAIN, metric: str = "harrell_c",
                  limit: float = FOLD_SD_LIMIT) -> dict[str, Any]:  # fmt: skip
    """``fold_sd``: the sample std of ``model``'s ``metric`` over folds (and repeats)."""
    v = metrics.loc[metrics["model"] == model, metric].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return check("fold_sd", None, f"{len(v)} scored fold(s) of {model}: no spread to judge",
                     threshold=limit, n_folds=len(v))  # fmt: skip
    sd = float(v.std(ddof=1))
    flag = sd > limit
    verdict = "above" if flag else "within"
    return check("fold_sd", flag, f"std of {model}'s {metric} over {len(v)} folds is {sd:.3f},"
                 f" {verdict} the {limit:g} limit", sd, limit, n_folds=len(v))  # fmt: skip


# ---------------------------------------------------------------------- clinical
def clinical_check(metrics: pd.DataFrame, model: str = MAIN,
                   references: Sequence[str] = CLINICAL_REFERENCES,
                   test_train_ratio: float | None = None,
                   metric: str = "harrell_c") -> dict[str, Any]:  # fmt: skip
    """``worse_than_clinical``: ``model`` minus the first clinical-only baseline the table
    holds (``references`` order), paired on folds; flagged when the CI lies below 0."""
    known = set(metrics["model"].astype(str))
    refs = [r for r in references if r in known]
    if model not in known or not refs:
        return check("worse_than_clinical", None, "no clinical-only baseline in this run"
                     f" (add one of {list(references)} to baselines)", threshold=0.0)  # fmt: skip
    ref = refs[0]
    p = compare_models(metrics, model, ref, metric, test_train_ratio=test_train_ratio)
    details = {"reference": ref, "ci_low": _finite(p.ci_low), "ci_high": _finite(p.ci_high),
               "p_value": _finite(p.p_value), "n_pairs": p.n_pairs}  # fmt: skip
    if not math.isfinite(p.ci_high):
        return check("worse_than_clinical", None, f"{p.n_pairs} paired fold(s) with {ref}: no"
                     " interval", p.mean_difference, 0.0, **details)  # fmt: skip
    flag = p.ci_high < 0
    text = (f"{model} - {ref}: {p.mean_difference:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}]"
            f" over {p.n_pairs} paired folds")
    text += ("; the whole 95% CI is below 0: the other modalities hurt" if flag
             else "; not worse on these folds")  # fmt: skip
    return check("worse_than_clinical", flag, text, p.mean_difference, 0.0, **details)


# ---------------------------------------------------------------------- external
def external_drop_check(cohort: str, cv_value: float, external_value: float,
                        limit: float = EXTERNAL_DROP_LIMIT) -> dict[str, Any]:  # fmt: skip
    """``external_drop:<cohort>``: CV Harrell C minus the external cohort's."""
    name = f"external_drop:{cohort}"
    details = {"cohort": cohort, "cv": _finite(cv_value), "external": _finite(external_value)}
    if not (math.isfinite(cv_value) and math.isfinite(external_value)):
        return check(name, None, f"C-index missing (CV {cv_value}, {cohort} {external_value})",
                     threshold=limit, **details)  # fmt: skip
    drop = float(cv_value - external_value)
    flag = drop > limit
    return check(name, flag, f"Harrell C {cv_value:.3f} in CV, {external_value:.3f} on {cohort}:"
                 f" a drop of {drop:+.3f} ({'above' if flag else 'within'} the {limit:g} limit)",
                 drop, limit, **details)  # fmt: skip


# ---------------------------------------------------------------------- alignment
def _unit(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.maximum(norm, 1e-12)


def alignment_sums(embeddings: np.ndarray, present: np.ndarray
                   ) -> dict[tuple[int, int], np.ndarray]:  # fmt: skip
    """Per modality pair ``(a, b)``: ``[sum of same-patient cosine distances, their count,
    sum over different-patient pairs, their count, patients]`` over the patients with both
    modalities, the sums and counts over members. ``embeddings``: ``S x N x M x H`` (or ``N x M x H``);
    ``present``: ``N x M``."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim == 3:
        e = e[None]
    p = np.asarray(present, dtype=bool)
    if e.ndim != 4 or p.shape != e.shape[1:3]:
        raise ValueError(f"embeddings {e.shape} and present {p.shape} do not match"
                         " (S x N x M x H and N x M)")  # fmt: skip
    out = {}
    m = e.shape[2]
    for a in range(m):
        for b in range(a + 1, m):
            both = p[:, a] & p[:, b]
            n = int(both.sum())
            acc = np.zeros(5)
            if n >= 2:
                acc[4] = n
                for member in e:
                    d = 1.0 - _unit(member[both, a]) @ _unit(member[both, b]).T
                    same = float(np.trace(d))
                    acc[:4] += [same, n, float(d.sum()) - same, n * (n - 1)]
            out[(a, b)] = acc
    return out


def alignment_check(sums: dict[tuple[int, int], np.ndarray], modalities: Sequence[str]
                    ) -> dict[str, Any]:  # fmt: skip
    """``embedding_alignment`` from (summed) :func:`alignment_sums`."""
    if len(modalities) < 2:
        return check("embedding_alignment", None, "one modality: nothing to align",
                     threshold=0.0, pairs=[])  # fmt: skip
    pairs = []
    for (a, b), (same, n_same, rand, n_rand, patients) in sums.items():
        if n_same == 0 or n_rand == 0:
            continue
        s, r = same / n_same, rand / n_rand
        pairs.append({"a": modalities[a], "b": modalities[b], "same_patient": s,
                      "random_pairs": r, "gap": r - s,
                      "n_patients": int(patients)})  # fmt: skip
    if not pairs:
        return check("embedding_alignment", None, "no two patients share a pair of modalities",
                     threshold=0.0, pairs=[])  # fmt: skip
    gap = float(np.mean([q["gap"] for q in pairs]))
    flag = gap <= 0
    text = (f"mean cosine distance, same patient vs random pairs, averaged over {len(pairs)}"
            f" modality pair(s): gap {gap:+.3f}")
    text += ("; same-patient embeddings are no closer than random ones" if flag
             else "; same-patient embeddings are closer")  # fmt: skip
    return check("embedding_alignment", flag, text, gap, 0.0, pairs=pairs)


def out_of_fold_alignment(folds: pd.DataFrame, models: Sequence[Any], cohort: Cohort,
                          repeat: int = 0) -> dict[str, Any]:  # fmt: skip
    """``embedding_alignment`` of one repeat's fold models (``ModalSurv``), each on the
    patients it held out (each fold model has its own latent space: pairs never cross
    folds)."""
    assign = folds[folds["repeat"] == repeat]
    total: dict[tuple[int, int], np.ndarray] = {}
    modalities: list[str] = []
    for f, model in enumerate(models):
        ids = assign.loc[assign["fold"] == f, "patient"].astype(str)
        if not len(ids):
            continue
        modalities = model.embedding_modalities
        emb, present = model.predict_embeddings(cohort.subset(cohort.index_of(ids)))
        for key, acc in alignment_sums(emb, present).items():
            total[key] = total.get(key, np.zeros(5)) + acc
    return alignment_check(total, modalities)


# ---------------------------------------------------------------------- together
def table_checks(metrics: pd.DataFrame, test_train_ratio: float | None = None
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """The checks a metrics table alone supports (``fold_sd``, ``worse_than_clinical``)."""
    return [guarded("fold_sd", lambda: fold_sd_check(metrics)),
            guarded("worse_than_clinical",
                    lambda: clinical_check(metrics, test_train_ratio=test_train_ratio))]  # fmt: skip


def bundle(checks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"flags": [names of raised checks], "checks": [...]}`` (``metrics.json``)."""
    checks = list(checks)
    return {"flags": [c["check"] for c in checks if c["flag"]], "checks": checks}


def cv_diagnostics(result: Any, cohort: Cohort) -> dict[str, Any]:
    """Every check a cross-validation supports (``CVResult`` and its cohort)."""
    checks = table_checks(result.metrics, result.test_train_ratio())
    checks.append(guarded("embedding_alignment", lambda: out_of_fold_alignment(
        result.folds, result.models[0], cohort)))  # fmt: skip
    return bundle(checks)


def with_external(diagnostics: dict[str, Any] | None, cv_value: float,
                  evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """``diagnostics`` with one ``external_drop:<cohort>`` check per scored external cohort
    (``evaluations``: cohort name → ``evaluation_<name>.json``), replacing older ones."""
    kept = [c for c in (diagnostics or {}).get("checks", [])
            if not str(c.get("check", "")).startswith("external_drop:")]  # fmt: skip
    for name in sorted(evaluations):
        ev = evaluations[name]
        kept.append(guarded(f"external_drop:{name}", lambda ev=ev, name=name: external_drop_check(
            name, float(cv_value), float(ev.get("harrell_c", math.nan)))))  # fmt: skip
    return bundle(kept)
