"""Tuning: compare rules for the stack's weights on the candidates ``stack_study.py`` saved.

For every saved fold and each rule: the weights are fitted on the training part's
out-of-fold scores, the test-fold score is their weighted sum, and Harrell's C of it is
tabulated per cohort (mean over folds) with the mean over cohorts, best first. Rules:
``lr`` (the stack's own ``fit_weights``: screen + non-negative Cox pulled to equal
weights), ``nn`` (non-negative Cox, no pull), ``shrink<L>`` (pulled with strength L, no
screen), ``screen_shrink20``, ``equal`` and ``best1`` (the candidate with the best
out-of-fold C), each on every candidate and without the clinical Cox one; plus every
candidate alone.

    python benchmarks/tuning/weighting.py "tuning_dumps/*.npz"
"""

from __future__ import annotations

import glob
import sys

import numpy as np
import pandas as pd

from modalsurv.survival.metrics import concordance_index
from modalsurv.train.stack_weights import LR_THRESHOLD, fit_weights, nonnegative_cox

SUBSETS = {"all": None,
           "no_coxph": ["modalsurv", "modalsurv_cox", "modalsurv_clinical", "coxnet", "rsf"]}  # fmt: skip


def rules(z: np.ndarray, time: np.ndarray, event: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule's coefficients for out-of-fold scores ``z`` (rows x candidates)."""
    k = z.shape[1]
    out = {"lr": fit_weights(z, time, event)[0], "nn": nonnegative_cox(z, time, event)[0],
           "equal": np.ones(k)}  # fmt: skip
    for lam in (5.0, 20.0, 100.0):
        out[f"shrink{int(lam)}"] = nonnegative_cox(z, time, event, lam)[0]
    null = nonnegative_cox(z[:, :0], time, event)[1]
    keep = [j for j in range(k)
            if 2 * (nonnegative_cox(z[:, [j]], time, event)[1] - null) >= LR_THRESHOLD]  # fmt: skip
    screened = np.zeros(k)
    if keep:
        screened[keep] = nonnegative_cox(z[:, keep], time, event, 20.0)[0]
    out["screen_shrink20"] = screened
    oof_c = [concordance_index(time, event, z[:, j]) for j in range(k)]
    out["best1"] = np.eye(k)[int(np.argmax(oof_c))]
    return out


def main() -> None:
    pattern = sys.argv[1] if len(sys.argv) > 1 else "tuning_dumps/*.npz"
    rows = []
    for path in sorted(glob.glob(pattern)):
        d = np.load(path, allow_pickle=False)
        names = [str(n) for n in d["names"]]
        t, e = d["train_time"], d["train_event"].astype(bool)
        cohort = path.split("/")[-1].rsplit("_r", 1)[0]

        def c_of(risk: np.ndarray, d: np.lib.npyio.NpzFile = d) -> float:
            return float(concordance_index(d["test_time"], d["test_event"].astype(bool), risk))

        for oof in ("cross", "own"):
            for sub_name, sub in SUBSETS.items():
                sub = [n for n in (sub or names) if n in names]
                z = np.column_stack([d[f"{oof}/oof/{n}"] for n in sub])
                test = np.column_stack([d[f"{oof}/test/{n}"] for n in sub])
                ok = np.isfinite(z).all(1)
                for rule, beta in rules(z[ok], t[ok], e[ok]).items():
                    score = test @ beta if beta.sum() > 0 else test.sum(1)
                    rows.append((cohort, f"{oof}/{sub_name}/{rule}", c_of(score)))
        for n in names:
            key = f"mixture/{n}" if f"mixture/{n}" in d else f"own/test/{n}"
            rows.append((cohort, f"alone:{n}", c_of(d[key])))
    table = pd.DataFrame(rows, columns=["cohort", "variant", "c"])
    pivot = table.pivot_table(index="variant", columns="cohort", values="c", aggfunc="mean")
    pivot["mean"] = pivot.mean(1)
    print(pivot.sort_values("mean", ascending=False).round(4).to_string())


if __name__ == "__main__":
    main()
