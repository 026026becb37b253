"""Failure signatures (train.diagnostics): each check on tables built to raise it or not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from modalsurv.train.compare import compare_models
from modalsurv.train.diagnostics import (
    alignment_check,
    alignment_sums,
    bundle,
    clinical_check,
    external_drop_check,
    fold_sd_check,
    guarded,
    table_checks,
    with_external,
)


def _metrics(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"model": m, "repeat": 0, "fold": f, "harrell_c": v}
            for m, vals in scores.items() for f, v in enumerate(vals)]  # fmt: skip
    return pd.DataFrame(rows)


def test_fold_sd_is_flagged_above_the_limit():
    spread = fold_sd_check(_metrics({"modalsurv": [0.5, 0.7, 0.6, 0.8]}))
    assert spread["flag"] is True and spread["value"] == pytest.approx(np.std([.5, .7, .6, .8],
                                                                               ddof=1))
    steady = fold_sd_check(_metrics({"modalsurv": [0.60, 0.62, 0.61, np.nan]}))
    assert steady["flag"] is False and steady["n_folds"] == 3  # the NaN fold is left out
    assert fold_sd_check(_metrics({"modalsurv": [0.6]}))["flag"] is None
    assert fold_sd_check(_metrics({"modalsurv": [0.6, 0.7]}), limit=0.05)["flag"] is True


def test_worse_than_clinical_needs_the_whole_interval_below_zero():
    worse = _metrics({"modalsurv": [0.55, 0.56, 0.54, 0.55, 0.53],
                      "coxph_clinical": [0.65, 0.66, 0.63, 0.66, 0.64]})  # fmt: skip
    c = clinical_check(worse)
    p = compare_models(worse, "modalsurv", "coxph_clinical")
    assert c["flag"] is True and c["reference"] == "coxph_clinical"
    assert (c["value"], c["ci_low"], c["ci_high"]) == pytest.approx(
        (p.mean_difference, p.ci_low, p.ci_high))
    assert c["ci_high"] < 0 and "hurt" in c["message"]
    noisy = _metrics({"modalsurv": [0.55, 0.75, 0.50, 0.70, 0.52],
                      "coxph_clinical": [0.65, 0.66, 0.63, 0.66, 0.64]})  # fmt: skip
    assert clinical_check(noisy)["flag"] is False
    # the neural clinical-only baseline is preferred when the run has both
    both = pd.concat([worse, _metrics({"modalsurv_clinical": [0.5] * 5})])
    assert clinical_check(both)["reference"] == "modalsurv_clinical"
    none = clinical_check(_metrics({"modalsurv": [0.6, 0.7], "rsf": [0.6, 0.6]}))
    assert none["flag"] is None and "no clinical-only baseline" in none["message"]
    # the overlap correction widens the interval: with a large ratio the flag goes away
    assert clinical_check(worse, test_train_ratio=50.0)["flag"] is False


def test_external_drop_is_flagged_above_the_limit():
    big = external_drop_check("site_b", 0.72, 0.58)
    assert big["check"] == "external_drop:site_b" and big["flag"] is True
    assert big["value"] == pytest.approx(0.14) and big["external"] == 0.58
    assert external_drop_check("site_b", 0.72, 0.66)["flag"] is False
    assert external_drop_check("site_b", 0.72, math.nan)["flag"] is None


def _brute(emb: np.ndarray, a: int, b: int) -> tuple[float, float]:
    za = emb[:, a] / np.linalg.norm(emb[:, a], axis=1, keepdims=True)
    zb = emb[:, b] / np.linalg.norm(emb[:, b], axis=1, keepdims=True)
    n = len(emb)
    same = np.mean([1 - za[i] @ zb[i] for i in range(n)])
    rand = np.mean([1 - za[i] @ zb[j] for i in range(n) for j in range(n) if i != j])
    return float(same), float(rand)


def test_alignment_compares_same_patient_with_random_pairs():
    rng = np.random.default_rng(0)
    n, h = 30, 6
    base = rng.normal(size=(n, h))
    aligned = np.stack([base, base + 0.1 * rng.normal(size=(n, h)), -base], axis=1)
    present = np.ones((n, 3), dtype=bool)
    sums = alignment_sums(aligned, present)
    same, n_same, rand, n_rand, patients = sums[(0, 1)]
    assert (same / n_same, rand / n_rand) == pytest.approx(_brute(aligned, 0, 1))
    assert patients == n and n_rand == n * (n - 1)
    c = alignment_check(sums, ["clinical", "wsi", "rna"])
    pairs = {(p["a"], p["b"]): p for p in c["pairs"]}
    assert pairs[("clinical", "wsi")]["gap"] > 0.5  # aligned: same patient much closer
    assert pairs[("clinical", "rna")]["gap"] < -0.5  # opposite: farther than random
    assert c["value"] == pytest.approx(np.mean([p["gap"] for p in c["pairs"]]))
    flipped = alignment_check(alignment_sums(aligned[:, [0, 2]], present[:, :2]), ["a", "b"])
    assert flipped["flag"] is True and "no closer" in flipped["message"]
    assert alignment_check(alignment_sums(aligned[:, :2], present[:, :2]), ["a", "b"])["flag"] is False


def test_alignment_uses_only_patients_with_both_modalities_and_every_member():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2, 12, 2, 4))  # 2 seed members
    present = np.ones((12, 2), dtype=bool)
    present[:4, 1] = False
    garbage = emb.copy()
    garbage[:, :4, 1] = 1e3  # what absent rows hold must not matter
    a, b = alignment_sums(emb, present)[(0, 1)], alignment_sums(garbage, present)[(0, 1)]
    np.testing.assert_allclose(a, b)
    assert a[4] == 8 and a[1] == 2 * 8  # patients once, pairs per member
    s0, s1 = (_brute(emb[k, 4:], 0, 1) for k in range(2))
    assert a[0] / a[1] == pytest.approx((s0[0] + s1[0]) / 2)
    assert alignment_check({}, ["clinical"])["flag"] is None
    assert alignment_check({(0, 1): np.zeros(5)}, ["a", "b"])["flag"] is None
    with pytest.raises(ValueError, match="do not match"):
        alignment_sums(emb, present[:5])


def test_a_failing_check_is_recorded_not_raised():
    def boom():
        raise KeyError("harrell_c")

    c = guarded("fold_sd", boom)
    assert c["flag"] is None and "KeyError" in c["message"]
    checks = table_checks(pd.DataFrame({"model": ["modalsurv"], "repeat": [0], "fold": [0]}))
    assert [c["check"] for c in checks] == ["fold_sd", "worse_than_clinical"]
    assert all(c["flag"] is None for c in checks)


def test_external_checks_replace_older_ones_and_flags_list_raised_checks():
    diag = bundle([fold_sd_check(_metrics({"modalsurv": [0.5, 0.8]}))])
    diag = with_external(diag, 0.7, {"a": {"harrell_c": 0.5}, "b": {"harrell_c": 0.68}})
    assert [c["check"] for c in diag["checks"]] == ["fold_sd", "external_drop:a",
                                                    "external_drop:b"]
    assert diag["flags"] == ["fold_sd", "external_drop:a"]
    again = with_external(diag, 0.7, {"a": {"harrell_c": 0.69}})
    assert [c["check"] for c in again["checks"]] == ["fold_sd", "external_drop:a"]
    assert again["flags"] == ["fold_sd"]
    assert with_external(None, 0.7, {})["checks"] == []
