"""How the stacked default weighs its candidates: standardised out-of-fold scores, a
likelihood-ratio screen and a non-negative Cox model on the kept scores.

Why a module of its own: this is the statistics of the stack (``train.stacking`` steps 3
and 4), pure NumPy/SciPy on arrays of out-of-fold risks, testable without fitting a
single model.

* :func:`standardise`: each inner model's risks centred and scaled by its own out-of-fold
  rows, so members stopped at different epochs become comparable.
* :func:`screen`: a candidate enters only if a Cox model on its score alone (coefficient
  >= 0) beats no model by a likelihood ratio of ``LR_THRESHOLD``.
* :func:`fit_weights`: one Cox model on the kept scores, partial likelihood (Breslow
  ties) under non-negative coefficients, a weak ridge (``RIDGE``) and a pull towards
  equal coefficients (``SHRINK``).
* :func:`equal_weights`: the fallback when too few out-of-fold events weigh anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modalsurv.survival.metrics import concordance_index, cox_partial_likelihood

#: twice the log partial likelihood a candidate's out-of-fold score must reach on its own
#: to enter the stack (the 95 % point of chi-square with one degree of freedom)
LR_THRESHOLD = 3.84
#: the pull of the stack's coefficients towards equal coefficients (log partial
#: likelihood units): small against the hundreds of events of a large cohort, it keeps a
#: 30-event training part near the equal-weight average, the low-variance choice
SHRINK = 20.0
#: smallest coefficient of the stacked score (keeps the ranking when nothing is significant)
MIN_SCALE = 1e-3
#: L2 penalty on the stack's coefficients (a N(0, 1) prior on the log hazard ratio per
#: standard deviation of a candidate's score): negligible against dozens of events, it
#: keeps the weights finite when a few rows are perfectly separated
RIDGE = 1.0


def standardise(oof: Sequence[tuple[np.ndarray, np.ndarray]], n: int, how: str = "model"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(out-of-fold score per row, NaN where none; per-model means; per-model scales).

    ``how="model"``: each inner model's risks centred and scaled by its own out-of-fold
    rows; ``"pooled"``: one mean and scale over all out-of-fold risks. A row predicted by
    several inner models gets the mean of their scores."""
    if how not in ("model", "pooled"):
        raise ValueError(f"standardise must be 'model' or 'pooled'; found {how!r}")
    if how == "pooled":
        allr = np.concatenate([r for _, r in oof])
        mu = np.full(len(oof), allr.mean())
        sd = np.full(len(oof), allr.std())
    else:
        mu = np.array([r.mean() for _, r in oof])
        sd = np.array([r.std() for _, r in oof])
    sd = np.where(sd > 1e-12, sd, 1.0)
    total, count = np.zeros(n), np.zeros(n)
    for (rows, r), m, s in zip(oof, mu, sd):
        np.add.at(total, rows, (r - m) / s)
        np.add.at(count, rows, 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), mu, sd


def _neg_log_pl(z: np.ndarray, time: np.ndarray, event: np.ndarray, shrink: float = 0.0):
    """Minus the penalised log partial likelihood (Breslow ties; ``RIDGE / 2 * |beta|^2``
    plus ``shrink / 2 * sum_k (beta_k - mean(beta))^2``) and its gradient
    (``metrics.cox_partial_likelihood`` plus the penalties)."""
    parts = cox_partial_likelihood(time, event, z, information=False)

    def f(beta: np.ndarray) -> tuple[float, np.ndarray]:
        loglik, grad, _ = parts(beta)
        dev = beta - beta.mean() if len(beta) else beta
        loss = -loglik + 0.5 * RIDGE * beta @ beta + 0.5 * shrink * dev @ dev
        return float(loss), -grad + RIDGE * beta + shrink * dev

    return f


def nonnegative_cox(z: np.ndarray, time: np.ndarray, event: np.ndarray, shrink: float = 0.0
                    ) -> tuple[np.ndarray, float]:  # fmt: skip
    """(coefficients >= 0, penalised log partial likelihood) of a Cox model on ``z``'s
    columns (``shrink``: the pull towards equal coefficients, :func:`_neg_log_pl`)."""
    from scipy.optimize import minimize

    k = z.shape[1]
    if k == 0:
        return np.zeros(0), -_neg_log_pl(np.zeros((len(time), 1)), time, event)(np.zeros(1))[0]
    f = _neg_log_pl(z, time, event, shrink)
    res = minimize(f, np.full(k, 0.1), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * k,
                   options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-9})  # fmt: skip
    beta = np.clip(res.x, 0.0, None)
    return beta, -f(beta)[0]


def screen(z: np.ndarray, time: np.ndarray, event: np.ndarray, threshold: float = LR_THRESHOLD
           ) -> list[dict[str, float]]:  # fmt: skip
    """Per column: the likelihood-ratio statistic of a Cox model on that column alone
    (coefficient >= 0) against none, and whether it reaches ``threshold``."""
    _, null = nonnegative_cox(z[:, :0], time, event)
    out = []
    for j in range(z.shape[1]):
        _, ll = nonnegative_cox(z[:, [j]], time, event)
        lr = float(2.0 * (ll - null))
        out.append({"column": j, "lr": lr, "kept": lr >= threshold})
    return out


def fit_weights(z: np.ndarray, time: np.ndarray, event: np.ndarray,
                threshold: float = LR_THRESHOLD, shrink: float = SHRINK
                ) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """The stack's coefficients (module docstring): each candidate is screened on its own
    (kept when its out-of-fold score alone is associated with the outcome, a likelihood
    ratio of at least ``threshold``); the kept ones get a non-negative Cox model pulled
    towards equal coefficients by ``shrink``.

    Returns (beta over all columns, zero for screened-out ones; a record: the screening
    and the log partial likelihood). When no candidate passes the screen, the one with the
    best out-of-fold C-index is kept with coefficient ``MIN_SCALE`` or more."""
    k = z.shape[1]
    tests = screen(z, time, event, threshold)
    active = [t["column"] for t in tests if t["kept"]]
    beta = np.zeros(k)
    ll = float("nan")
    if active:
        beta_a, ll = nonnegative_cox(z[:, active], time, event, shrink)
        beta[active] = beta_a
    kept_alone = None
    if not (beta > 0).any():
        # a constant score (ties everywhere: C = 0.5) only wins when nothing ranks better
        c = [concordance_index(time, event, z[:, j]) for j in range(k)]
        best = int(np.argmax(c))
        b, _ = nonnegative_cox(z[:, [best]], time, event)
        beta[:] = 0.0
        beta[best] = max(float(b[0]), MIN_SCALE)
        kept_alone = {"column": best, "cindex": float(c[best]),
                      "constant": bool(np.ptp(z[:, best]) <= 1e-12)}  # fmt: skip
    elif beta.sum() < MIN_SCALE:
        beta *= MIN_SCALE / beta.sum()
    dropped = [{"column": t["column"], "lr": t["lr"]} for t in tests if not beta[t["column"]] > 0]
    return beta, {"log_pl": ll, "dropped": dropped, "screen": tests, "kept_alone": kept_alone}


def equal_weights(z: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, str]:
    """The fallback when too few out-of-fold events weigh the candidates: equal
    coefficients whose common scale is a one-coefficient Cox model on the mean
    standardised score over the rows given (with the RIDGE prior, which shrinks it
    towards zero when the events are few), at least ``MIN_SCALE``. A bare ``MIN_SCALE`` gave every
    patient nearly the same survival curve."""
    k = z.shape[1]
    if k == 0 or not event.any():
        return np.full(k, MIN_SCALE / max(k, 1)), f"scale {MIN_SCALE:g}: no event to fit it on"
    g, _ = nonnegative_cox(z.mean(axis=1, keepdims=True), time, event)
    scale = max(float(g[0]), MIN_SCALE)
    return np.full(k, scale / k), f"scale {scale:.3g} fitted on their mean score"
