"""Tuning: fit the stack once per outer fold with every candidate and keep what is needed to
compare weighting rules afterwards (``weighting.py``), without refitting.

Per fold: every candidate's standardised out-of-fold scores (members read at their own
best epoch and at the other members' median best epoch), its test-time scores, each
network candidate's plain mixture risk on the test fold and the labels, saved to
``--dumps/<cohort>_<tag>_r<repeat>_f<fold>.npz``; the C-index of the stack as configured
and of each candidate alone is printed as JSON lines (and the peers refitted as the
baselines are).

    python benchmarks/tuning/stack_study.py --cohort wpbc --tag c6 \\
        --stack modalsurv,modalsurv_cox,modalsurv_clinical,coxph_clinical,coxnet,rsf
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from modalsurv.config import RunConfig, set_values
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.baselines import make_baseline
from modalsurv.train.cv import make_folds
from modalsurv.train.stack_weights import standardise
from modalsurv.train.stacking import StackedSurv

try:  # run as a script from the repository root or from this folder
    from variants import load
except ImportError:  # pragma: no cover
    from benchmarks.tuning.variants import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides")
    ap.add_argument("--tag", default="base")
    ap.add_argument("--stack", default="modalsurv,modalsurv_cox,modalsurv_clinical,"
                    "coxph_clinical,coxnet,rsf")  # fmt: skip
    ap.add_argument("--dumps", default="tuning_dumps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peers", nargs="*", default=["coxnet", "rsf"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cohort = load(args.cohort)
    folds = make_folds(cohort, args.k, args.repeat + 1, 0)
    fold_of = folds.loc[folds.repeat == args.repeat, "fold"].to_numpy()
    Path(args.dumps).mkdir(parents=True, exist_ok=True)

    def emit(row: dict) -> None:
        print(json.dumps({"sec": None, "w": None, **row}), flush=True)

    for f in args.folds:
        seed = 1000 * args.repeat + f
        train = cohort.subset(np.flatnonzero(fold_of != f))
        test = cohort.subset(np.flatnonzero(fold_of == f))
        cfg = set_values(RunConfig(), [*args.set, f"model.stack=[{args.stack}]"])
        cfg = cfg.model_copy(deep=True)
        cfg.seed = seed
        base = {"cohort": args.cohort, "n": len(cohort), "fold": f, "repeat": args.repeat,
                "tag": args.tag}  # fmt: skip

        def c_of(risk: np.ndarray, test=test) -> float:
            return float(concordance_index(test.time, test.event, risk))

        t0 = time.perf_counter()
        model = StackedSurv(cfg).fit(train)
        emit({**base, "variant": "stack:default", "c": c_of(model.predict_risk(test)),
              "sec": time.perf_counter() - t0, "w": json.dumps(model.stack_info_["weights"])})  # fmt: skip
        names = list(model.candidates_)
        dump: dict[str, np.ndarray] = {
            "train_time": train.time, "train_event": train.event,
            "test_time": test.time, "test_event": test.event, "names": np.array(names),
        }  # fmt: skip
        for name in names:
            cand = model.candidates_[name]
            risks = cand.model_risks(test)
            for oof in ("own", "cross"):
                z, mu, sd = standardise(cand.oof(oof), len(train), "model")
                dump[f"{oof}/oof/{name}"] = z
                dump[f"{oof}/test/{name}"] = ((risks - mu[:, None]) / sd[:, None]).mean(0)
            net = model.candidate_model(name)
            if net is not None:
                dump[f"mixture/{name}"] = net.predict_risk(test)
                emit({**base, "variant": f"alone:{name}:mixture", "c": c_of(dump[f"mixture/{name}"]),
                      "sec": model.timings_[name]})  # fmt: skip
            emit({**base, "variant": f"alone:{name}:stdmean", "c": c_of(dump[f"own/test/{name}"]),
                  "sec": model.timings_[name]})  # fmt: skip
        tag = args.cohort.replace(":", "_")
        np.savez(os.path.join(args.dumps, f"{tag}_{args.tag}_r{args.repeat}_f{f}.npz"), **dump)
        for peer in args.peers:
            t0 = time.perf_counter()
            est = make_baseline(peer, cfg, seed).fit(train)
            emit({**base, "variant": f"peer:{peer}", "c": c_of(est.predict_risk(test)),
                  "sec": time.perf_counter() - t0})  # fmt: skip


if __name__ == "__main__":
    main()
