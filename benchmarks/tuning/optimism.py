"""Tuning: how optimistic is a seed member's risk on the validation fold it early-stopped on?

For each outer fold of a cohort: a plain ModalSurv (5 members on rotating inner folds) is
fitted; each member's validation risk is kept after every epoch (``FitResult.val_risks``);
the C-index within each member's fold is computed at the member's own best epoch and at
the median best epoch of the other members (chosen on other rows), and averaged over
members; the outer test fold's C of the ensemble is printed beside them (JSON lines).

    python benchmarks/tuning/optimism.py wpbc 5
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from modalsurv.config import RunConfig
from modalsurv.data.public import load
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.cv import make_folds
from modalsurv.train.estimator import ModalSurv, member_splits


def main() -> None:
    name = sys.argv[1]
    n_folds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    cohort = load(name)
    fold_of = make_folds(cohort, 5, 1, 0)["fold"].to_numpy()
    for f in range(n_folds):
        train = cohort.subset(np.flatnonzero(fold_of != f))
        test = cohort.subset(np.flatnonzero(fold_of == f))
        cfg = RunConfig.model_validate({"model": {"stack": "none"}, "seed": f})
        model = ModalSurv(cfg).fit(train)
        splits = member_splits(train.event, cfg.train.val_fraction, cfg.seed, cfg.train.n_init)
        best = [r.best_epoch for r in model.fit_results_]
        own, cross = [], []
        for k, ((_, va), res) in enumerate(zip(splits, model.fit_results_)):
            other = round(float(np.median([b for j, b in enumerate(best) if j != k])))
            other = min(other, len(res.val_risks) - 1)
            t, e = train.time[va], train.event[va]
            own.append(concordance_index(t, e, res.val_risks[best[k]]))
            cross.append(concordance_index(t, e, res.val_risks[other]))
        print(json.dumps({"cohort": name, "fold": f, "best_epochs": best,
                          "within_fold_c_own_epoch": float(np.mean(own)),
                          "within_fold_c_cross_epoch": float(np.mean(cross)),
                          "test_c": float(concordance_index(test.time, test.event,
                                                            model.predict_risk(test)))}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
