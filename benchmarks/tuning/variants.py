"""Tuning: plain ModalSurv config variants (and peers) on chosen outer folds of a cohort.

The tool behind "Defaults that scale with the data" in docs/benchmarks.md: one
``ModalSurv(config).fit`` per variant on the training part of ``cv.make_folds`` fold(s),
Harrell's C on the test fold; DeepHit / logistic-hazard variants also get the C of other
risk scores of the same fitted network (RMST, the summed cumulative hazard, 1 - S at the
25th / 75th percentile of follow-up). Rows are appended to ``--out`` (CSV).

    python benchmarks/tuning/variants.py --cohort survset:TRACE --folds 0 \\
        --variants default s1=loss.sigma=1.0 b128s1=train.batch_size=128~loss.sigma=1.0 \\
        --peers coxnet rsf=10 rsf=15 --out tuning.csv

A variant is ``name=key=value~key=value`` (``~`` separates settings), or ``default``.
Use tuning cohorts only (docs/benchmarks.md lists them), never the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, set_values
from modalsurv.survival import curves
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.baselines import FeatureMatrix, make_baseline
from modalsurv.train.cv import make_folds, subsample_train
from modalsurv.train.estimator import ModalSurv


def load(name: str) -> Cohort:
    """``synthetic:N:SEED[:signal]`` or a public cohort (``survset:<table>`` included)."""
    if name.startswith("synthetic"):
        from modalsurv.data import synthetic

        parts = name.split(":")
        return synthetic.make_cohort(n=int(parts[1]), seed=int(parts[2]),
                                     signal=parts[3] if len(parts) > 3 else "linear")[0]  # fmt: skip
    from modalsurv.data.public import load as load_public

    return load_public(name)


def variant_config(spec: str, seed: int) -> tuple[str, RunConfig]:
    name, _, sets = spec.partition("=")
    cfg = set_values(RunConfig(), sets.split("~")) if sets else RunConfig()
    cfg = cfg.model_copy(deep=True)
    cfg.seed = seed
    return name, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--peers", nargs="*", default=[], help="baseline names; rsf=LEAF for RSF")
    ap.add_argument("--out", default="tuning.csv")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-train", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cohort = load(args.cohort)
    folds = make_folds(cohort, args.k, args.repeat + 1, 0)
    fold_of = folds.loc[folds.repeat == args.repeat, "fold"].to_numpy()

    def write(row: dict) -> None:
        row = {"sec": None, "epochs": None, **row}
        pd.DataFrame([row]).to_csv(args.out, mode="a", header=not os.path.exists(args.out),
                                   index=False)  # fmt: skip
        print(json.dumps(row), flush=True)

    for f in args.folds:
        seed = 1000 * args.repeat + f
        tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        if args.max_train and len(tr) > args.max_train:
            tr = subsample_train(tr, cohort.event, args.max_train / len(tr), seed)
        train, test = cohort.subset(tr), cohort.subset(te)
        base = {"cohort": args.cohort, "n": len(cohort), "fold": f, "repeat": args.repeat,
                "n_train": len(train)}  # fmt: skip
        for spec in args.variants:
            name, cfg = variant_config(spec, seed)
            t0 = time.perf_counter()
            model = ModalSurv(cfg).fit(train)
            sec = time.perf_counter() - t0
            c = concordance_index(test.time, test.event, model.predict_risk(test))
            write({**base, "variant": name, "score": "own", "c": c, "sec": sec,
                   "epochs": float(np.mean([r.best_epoch for r in model.fit_results_]))})  # fmt: skip
            if not model.family.discrete:
                continue
            pmf, cuts = model.predict_pmf(test), model.cuts
            surv = curves.survival_at(pmf, cuts, cuts[1:])
            scores = {
                "rmst": -curves.rmst(pmf, cuts, float(cuts[-1])),
                "cumhaz": -np.log(np.clip(surv, 1e-12, 1.0)).sum(1),
                "s_q25": 1 - curves.survival_at(pmf, cuts, [np.quantile(train.time, .25)])[:, 0],
                "s_q75": 1 - curves.survival_at(pmf, cuts, [np.quantile(train.time, .75)])[:, 0],
            }
            for score, risk in scores.items():
                write({**base, "variant": name, "score": score, "sec": sec,
                       "c": concordance_index(test.time, test.event, risk)})  # fmt: skip
        for spec in args.peers:
            name, _, opt = spec.partition("=")
            cfg = RunConfig().model_copy(deep=True)
            cfg.seed = seed
            t0 = time.perf_counter()
            if name == "rsf":
                from sksurv.ensemble import RandomSurvivalForest

                fm = FeatureMatrix(cfg).fit(train)
                forest = RandomSurvivalForest(n_estimators=100, min_samples_leaf=int(opt or 10),
                                              n_jobs=args.threads, random_state=seed,
                                              low_memory=True)  # fmt: skip
                forest.fit(fm.transform(train), train.survival_array())
                risk = forest.predict(fm.transform(test))
            else:
                risk = make_baseline(name, cfg, seed).fit(train).predict_risk(test)
            write({**base, "variant": spec, "score": "own", "sec": time.perf_counter() - t0,
                   "c": concordance_index(test.time, test.event, risk)})  # fmt: skip


if __name__ == "__main__":
    main()
