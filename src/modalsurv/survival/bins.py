"""Time discretisation for discrete-time survival heads (DeepHit), fitted on training data.

Bin k is ``(cuts[k], cuts[k+1]]`` with ``cuts[0] = 0`` and ``cuts[-1]`` = the largest
training time. Conventions (chosen so the DeepHit loss equals pycox's on these indices):

* An event at t goes to the bin containing t.
* A censored time goes to the bin containing it too; the DeepHit likelihood then uses
  ``S`` at the end of that bin (``1 - CDF(bin)``, pycox ``nll_pmf``), i.e. a censored patient
  is credited with surviving the bin it was censored in, and ranks as outliving an event in
  the same bin (pycox ``pair_rank_mat``; the same tie rule as Harrell's C). pycox's own
  ``LabTransDiscreteTime`` rounds censoring *down* to the previous grid point instead; with
  our K-bin layout that would put censorings in the first bin outside any bin, and the two
  differ by at most one bin width.
* A time of exactly 0 goes to bin 0.
* A time past the last cut goes to the last bin **censored**: we only know the patient
  outlived the horizon. (The original ModalSurv clamped such follow-up into the last bin as
  an observed event; that inflates late hazard and is deliberately not repeated.)

Schemes: ``"equidistant"`` spaces cuts evenly on ``[0, max training time]`` (pycox);
``"quantile"`` places interior cuts at Kaplan–Meier quantiles of the event time, so each bin
carries about the same estimated event probability (pycox's ``cuts_quantiles`` idea; a cut
is the first time the Kaplan–Meier curve reaches its level, which can be one step later
than pycox's cut). Quantiles that coincide (few distinct event times) are deduplicated,
and the widest bins are split at their midpoint until there are again ``n_bins`` distinct
bins, so the network's output size never depends on the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SCHEMES", "TimeBins"]

SCHEMES = ("equidistant", "quantile")


def _labels(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e_raw = np.asarray(event).reshape(-1)
    if t.size != e_raw.size:
        raise ValueError(f"mismatched lengths: time has {t.size}, event has {e_raw.size}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"time[{i}] = {float(t[i])!r}: times must be finite and >= 0")
    if e_raw.dtype != np.bool_:
        num = e_raw.astype(np.float64)
        bad = ~((num == 0) | (num == 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"event[{i}] = {e_raw[i]!r}: event indicators must be 0/1 or bool")
        e_raw = num == 1
    return t, e_raw


def _km_quantile_cuts(t: np.ndarray, e: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior cuts at equal steps of the KM event probability, between 0 and max time."""
    uniq, inv = np.unique(t, return_inverse=True)
    deaths = np.bincount(inv, weights=e.astype(np.float64))
    at_risk = t.size - np.concatenate(([0], np.cumsum(np.bincount(inv))[:-1]))
    surv = np.cumprod(1.0 - deaths / at_risk)
    drop = 1.0 - surv[-1]  # total estimated event probability within follow-up
    levels = 1.0 - drop * np.arange(1, n_bins) / n_bins
    # first time the KM curve reaches each level (surv is non-increasing)
    idx = np.searchsorted(-surv, -levels, side="left")
    interior = uniq[np.clip(idx, 0, uniq.size - 1)]
    return np.unique(np.concatenate(([0.0], interior, [t.max()])))


def _fill_to(cuts: np.ndarray, n_bins: int) -> np.ndarray:
    """Split the widest bin at its midpoint until there are ``n_bins`` bins."""
    cuts = list(cuts)
    while len(cuts) - 1 < n_bins:
        widths = np.diff(cuts)
        k = int(np.argmax(widths))
        cuts.insert(k + 1, cuts[k] + widths[k] / 2)
    return np.asarray(cuts, dtype=np.float64)


class TimeBins:
    """``fit`` on training labels only; ``transform`` any split with the same cuts."""

    def __init__(self, n_bins: int = 30, scheme: str = "equidistant") -> None:
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins = {n_bins!r}: need a positive integer")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme = {scheme!r}: use one of {SCHEMES}")
        self.n_bins = int(n_bins)
        self.scheme = scheme
        self.cuts: np.ndarray | None = None

    def fit(self, time: Any, event: Any) -> TimeBins:
        t, e = _labels(time, event)
        if t.size == 0 or t.max() <= 0:
            raise ValueError("time: need at least one positive training time to place cuts")
        if self.scheme == "equidistant":
            self.cuts = np.linspace(0.0, float(t.max()), self.n_bins + 1)
        else:
            if not e.any():
                raise ValueError("event: the quantile scheme needs at least one training event")
            self.cuts = _fill_to(_km_quantile_cuts(t, e, self.n_bins), self.n_bins)
        return self

    def transform(self, time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(bin_index int64, event bool)``; times past the last cut become censored."""
        if self.cuts is None:
            raise RuntimeError("TimeBins.transform called before fit")
        t, e = _labels(time, event)
        idx = np.searchsorted(self.cuts, t, side="left") - 1  # t in (cuts[k], cuts[k+1]] -> k
        beyond = t > self.cuts[-1]
        idx = np.clip(idx, 0, self.n_bins - 1).astype(np.int64)
        return idx, e & ~beyond

    def fit_transform(self, time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.fit(time, event).transform(time, event)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (cuts as a list of floats)."""
        return {"n_bins": self.n_bins, "scheme": self.scheme,
                "cuts": None if self.cuts is None else [float(c) for c in self.cuts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimeBins:
        out = cls(n_bins=int(d["n_bins"]), scheme=str(d["scheme"]))
        if d.get("cuts") is not None:
            cuts = np.asarray(d["cuts"], dtype=np.float64).reshape(-1)
            # NaN compares False both ways, so the increase check alone would let it through
            if (cuts.size != out.n_bins + 1 or not np.isfinite(cuts).all() or cuts[0] != 0
                    or (np.diff(cuts) <= 0).any()):
                raise ValueError("cuts: expected n_bins + 1 finite, strictly increasing values "
                                 "from 0")
            out.cuts = cuts
        return out

    def __repr__(self) -> str:
        return f"TimeBins(n_bins={self.n_bins}, scheme={self.scheme!r}, fitted={self.cuts is not None})"
