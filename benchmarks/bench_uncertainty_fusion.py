"""Does uncertainty-aware fusion (``model.fusion: uncertainty``, precision-weighted) beat
the default ``cross_attention_gated`` where a modality is unreliable or the site shifts?
Measured on synthetic CHIMERA-like cohorts, against the reference in the same run.

Three settings, every fusion on the same folds with the same seeds (the one default
config, only ``model.fusion`` differs):

(a) clean: the synthetic cohort as generated;
(b) corrupted: one modality (``--corrupt``, WSI tile bags by default) replaced by noise for
    a random half of the patients, still marked present: Gaussian noise with that
    modality's own per-feature mean and std (over the present rows or valid tiles), so
    its scale gives nothing away; what a model can learn is that those rows carry no risk;
(c) external: the shifted external cohort (``make_cohort(external=True)``: other feature
    offsets and scales, an RNA batch factor, older patients, shorter follow-up) scored by
    the fold ensemble (``FoldEnsemble``) of each fusion's clean run: the CV → external gap.

Reported per setting and fusion: Harrell's C (mean ± std over folds; for (c) the
ensemble's C on the external cohort) and the paired difference to cross_attention_gated
with its 95 % CI and p: the corrected resampled t-test over the shared folds
(``train.compare``) for (a) and (b), a paired bootstrap over the external patients
(both fusions' risks resampled together) for (c).

    nice -n 10 python benchmarks/bench_uncertainty_fusion.py        # N=400, 5 folds, 2 nets
    # 16 min of CPU time: about 10 min on 2 idle cores (27 min beside other jobs)
    python benchmarks/bench_uncertainty_fusion.py --n 1000 --n-init 5 --fusions \
        cross_attention_gated uncertainty mean concat                # bigger, more fusions
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from modalsurv.cohort import Cohort
from modalsurv.config import parse_config
from modalsurv.data.synthetic import make_cohort
from modalsurv.report.tables import format_difference
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.compare import corrected_resampled_ttest
from modalsurv.train.cv import CVResult, cross_validate

REFERENCE = "cross_attention_gated"


def corrupt(cohort: Cohort, modality: str, fraction: float, seed: int) -> tuple[Cohort, np.ndarray]:
    """``modality`` replaced by matched Gaussian noise for a random ``fraction`` of the
    patients that have it (still present); returns the cohort and the corrupted rows."""
    rng = np.random.default_rng([seed, 31337])
    present = cohort.present[modality]
    rows = np.flatnonzero(present & (rng.random(len(cohort)) < fraction))
    x = cohort.features[modality].copy()
    if x.ndim == 3:  # a bag: noise for every valid tile, moments over the valid tiles
        valid = cohort.bag_mask[modality] & present[:, None]
        mu, sd = x[valid].mean(0), x[valid].std(0)
        for i in rows:
            k = cohort.bag_mask[modality][i]
            x[i, k] = rng.normal(mu, sd, size=(int(k.sum()), x.shape[-1]))
        mask = cohort.bag_mask[modality]
    else:
        mu, sd = x[present].mean(0), x[present].std(0)
        x[rows] = rng.normal(mu, sd, size=(len(rows), x.shape[-1]))
        mask = None
    return cohort.with_modality(modality, x, present=present, bag_mask=mask), rows


def paired_bootstrap(time_: np.ndarray, event: np.ndarray, a: np.ndarray, b: np.ndarray,
                     n: int, seed: int) -> tuple[float, float, float, float]:
    """C(a) - C(b) on the same patients: estimate, percentile 95 % CI and two-sided p
    (twice the smaller share of resampled differences on either side of 0)."""
    est = concordance_index(time_, event, a) - concordance_index(time_, event, b)
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n):
        i = rng.integers(0, len(time_), len(time_))
        if event[i].any():
            d.append(concordance_index(time_[i], event[i], a[i])
                     - concordance_index(time_[i], event[i], b[i]))  # fmt: skip
    boots = np.asarray(d)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    p = min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))
    return float(est), float(lo), float(hi), float(p)


def fold_c(res: CVResult) -> np.ndarray:
    m = res.metrics[res.metrics["model"] == "modalsurv"].sort_values(["repeat", "fold"])
    return m["harrell_c"].to_numpy(float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="training cohort size")
    ap.add_argument("--external-n", type=int, default=400, help="external cohort size")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-init", type=int, default=2, help="networks per fold (train.n_init)")
    ap.add_argument("--fusions", nargs="+", default=[REFERENCE, "uncertainty"])
    ap.add_argument("--corrupt", default="wsi", help="modality corrupted in setting (b)")
    ap.add_argument("--fraction", type=float, default=0.5, help="share of patients corrupted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    if REFERENCE not in args.fusions:
        ap.error(f"--fusions must include the reference {REFERENCE}")
    torch.set_num_threads(args.threads)

    clean, _ = make_cohort(n=args.n, seed=args.seed)
    broken, rows = corrupt(clean, args.corrupt, args.fraction, args.seed)
    external, _ = make_cohort(n=args.external_n, seed=args.seed + 1, external=True)
    settings = {"clean": clean, f"{args.corrupt} corrupted ({len(rows)} of {len(clean)} patients)": broken}

    t0 = time.perf_counter()
    results: dict[str, dict[str, CVResult]] = {}
    for name, cohort in settings.items():
        results[name] = {}
        for fusion in args.fusions:
            cfg = parse_config({"seed": args.seed, "model": {"fusion": fusion},
                                "train": {"n_init": args.n_init, "device": "cpu"},
                                "cv": {"folds": args.folds}, "baselines": []})  # fmt: skip
            t = time.perf_counter()
            results[name][fusion] = cross_validate(cohort, cfg)
            print(f"  {name:<28} {fusion:<22} {time.perf_counter() - t:5.0f} s", flush=True)

    table = []
    for name, by_fusion in results.items():
        ref = fold_c(by_fusion[REFERENCE])
        ratio = by_fusion[REFERENCE].test_train_ratio()
        for fusion, res in by_fusion.items():
            c = fold_c(res)
            row = {"setting": name, "fusion": fusion, "C": f"{c.mean():.3f} ± {c.std(ddof=1):.3f}"}
            if fusion != REFERENCE:
                mean, lo, hi, p = corrected_resampled_ttest(c - ref, ratio)
                row.update({"Δ C vs reference [95% CI]": format_difference(mean, lo, hi),
                            "p": f"{p:.2f}"})  # fmt: skip
            table.append(row)

    # (c) the clean runs' fold ensembles on the external cohort
    risks = {f: res.ensemble().predict_risk(external) for f, res in results["clean"].items()}
    for fusion, risk in risks.items():
        c_ext = concordance_index(external.time, external.event, risk)
        cv_c = fold_c(results["clean"][fusion]).mean()
        row = {"setting": f"external ({len(external)}), gap to CV {c_ext - cv_c:+.3f}",
               "fusion": fusion, "C": f"{c_ext:.3f}"}  # fmt: skip
        if fusion != REFERENCE:
            mean, lo, hi, p = paired_bootstrap(external.time, external.event, risk,
                                               risks[REFERENCE], args.n_boot, args.seed)  # fmt: skip
            row.update({"Δ C vs reference [95% CI]": format_difference(mean, lo, hi),
                        "p": f"{p:.2f}"})  # fmt: skip
        table.append(row)

    seconds = time.perf_counter() - t0
    print(f"\nsynthetic N={args.n} (seed {args.seed}), {args.folds} folds, n_init {args.n_init},"
          f" external N={args.external_n}; {seconds:.0f} s; reference {REFERENCE}")
    print(pd.DataFrame(table).fillna("").to_string(index=False))


if __name__ == "__main__":
    main()
