"""Cohort: the one currency passed between layers.

A cohort holds, for N patients, an id, a follow-up time, an event flag and, per modality,
a float32 feature array: ``N x D`` for vectors, ``N x K x D`` for bags (e.g. WSI tiles)
with a boolean ``N x K`` tile mask in ``bag_mask``. A missing modality is ``False`` in
``present[m]``; the feature rows of absent patients are not trusted and are zeroed here so
that no NaN can leak from them. Within present rows, NaN marks a missing *value* (e.g. an
unrecorded clinical variable) that a preprocessing step fitted on training data imputes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from modalsurv.errors import DataError, LabelError

_EVENT_TOKENS = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}


def coerce_events(event: Sequence | np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
    """Coerce 0/1, bool or the strings "0", "1", "0.0", "1.0" to a bool array; else raise."""
    raw = np.asarray(event, dtype=object).ravel()
    out = np.empty(raw.shape[0], dtype=bool)
    for i, v in enumerate(raw):
        if isinstance(v, bool | np.bool_):
            out[i] = bool(v)
            continue
        if isinstance(v, str):
            key = v.strip().lower()
            if key in _EVENT_TOKENS:
                out[i] = _EVENT_TOKENS[key]
                continue
        elif isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
            out[i] = bool(v)
            continue
        who = None if ids is None or i >= len(ids) else str(ids[i])
        hint = ""
        if str(v).strip() in ("2", "2.0"):  # R's Surv(time, status) codes 1/2
            hint = " (R's survival convention: 1 = censored, 2 = event; convert it with"
            hint += " event = status == 2)"
        raise LabelError(
            f"event must be 0/1, a bool or one of '0', '1', '0.0', '1.0'; found {v!r}{hint}",
            patient=who,
            field="event",
        )
    return out


def _as_floats(values: Sequence | np.ndarray, field: str, ids: np.ndarray) -> np.ndarray:
    """A 1-d float64 array, or a LabelError naming the first patient whose value is not a
    number (a raw 'could not convert' names nobody)."""
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        pass
    raw = np.asarray(values, dtype=object).ravel()
    for i, v in enumerate(raw):
        try:
            float(v)
        except (TypeError, ValueError):
            who = str(ids[i]) if i < len(ids) else None
            raise LabelError(f"{field} must be a number; found {v!r}", patient=who,
                             field=field) from None  # fmt: skip
    raise LabelError(f"{field} must be a flat list of numbers", field=field)


def _as_bools(values: Sequence | np.ndarray, what: str, field: str, flat: bool = True
              ) -> np.ndarray:  # fmt: skip
    """Booleans from bools or numbers 0/1; anything else is a DataError naming ``what``."""
    arr = np.asarray(values)
    if arr.dtype != bool:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise DataError(f"{what} must hold booleans (or 0/1); found dtype {arr.dtype}",
                            field=field)  # fmt: skip
        arr = arr.astype(bool)
    return arr.ravel() if flat else arr


def stack_patients(
    items: Sequence[np.ndarray | None], dim: int, bag: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-patient arrays (None = modality absent) -> Cohort layout ``(x, present, mask)``.

    1-d items become an ``N x D`` matrix (mask None); 2-d items (bags of instances) are
    zero-padded to the longest bag, ``N x K x D``, with an ``N x K`` mask of real rows.
    ``bag=None`` infers the kind from the items (a modality absent for everyone needs it
    said). Every reader that assembles a modality patient by patient goes through here.
    """
    present = np.array([x is not None for x in items], dtype=bool)
    n = len(items)
    if bag is None:
        bag = any(x is not None and x.ndim == 2 for x in items)
    if not bag:
        out = np.zeros((n, dim), dtype=np.float32)
        for i, x in enumerate(items):
            if x is not None:
                out[i] = x
        return out, present, None
    k = max([x.shape[0] for x in items if x is not None], default=1)
    out = np.zeros((n, k, dim), dtype=np.float32)
    mask = np.zeros((n, k), dtype=bool)
    for i, x in enumerate(items):
        if x is not None:
            out[i, : x.shape[0]] = x
            mask[i, : x.shape[0]] = True
    return out, present, mask


class Cohort:
    """Patients, survival labels and per-modality features (see module docstring)."""

    def __init__(
        self,
        ids: Sequence[str] | np.ndarray,
        time: Sequence[float] | np.ndarray,
        event: Sequence | np.ndarray,
        features: Mapping[str, np.ndarray] | None = None,
        present: Mapping[str, np.ndarray] | None = None,
        meta: pd.DataFrame | None = None,
        bag_mask: Mapping[str, np.ndarray] | None = None,
        feature_names: Mapping[str, Sequence[str]] | None = None,
        copy: bool = True,
    ) -> None:
        """``copy=False``: adopt the given float32 feature arrays instead of copying them
        (they are zeroed in place where absent or masked); for callers that just built
        them, e.g. ``subset`` and the feature store, so a large bag is not copied twice."""
        self.ids = np.asarray([str(i) for i in ids], dtype=object)
        n = self.ids.shape[0]
        uniq, counts = np.unique(self.ids.astype(str), return_counts=True)
        if (counts > 1).any():
            dup = ", ".join(map(str, uniq[counts > 1][:5]))
            raise DataError(f"patient ids must be unique; duplicated: {dup}", field="id")

        t = _as_floats(time, "time", self.ids)
        if t.shape[0] != n:
            raise LabelError(f"time has {t.shape[0]} values for {n} patients", field="time")
        bad = ~np.isfinite(t) | (t <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LabelError(
                f"follow-up time must be finite and > 0; found {t[i]!r}",
                patient=self.ids[i],
                field="time",
            )
        self.time = t
        ev = coerce_events(event, self.ids)
        if ev.shape[0] != n:
            raise LabelError(f"event has {ev.shape[0]} values for {n} patients", field="event")
        self.event = ev

        self.features: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self.bag_mask: dict[str, np.ndarray] = {}
        self.feature_names: dict[str, list[str]] = {}
        present = dict(present or {})
        bag_mask = dict(bag_mask or {})
        feature_names = dict(feature_names or {})
        for m, x in (features or {}).items():
            self._add(m, x, present.get(m), bag_mask.get(m), feature_names.get(m), copy)
        for extra in set(present) - set(self.features):
            raise DataError(f"present mask given for unknown modality {extra!r}", field=extra)

        if meta is None:
            meta = pd.DataFrame(index=pd.Index(self.ids, name="patient"))
        else:
            meta = meta.copy()
            if len(meta) != n:
                raise DataError(f"meta has {len(meta)} rows for {n} patients", field="meta")
            keys = meta.index.astype(str)
            if (not isinstance(meta.index, pd.RangeIndex) and list(keys) != list(self.ids)
                    and set(keys) == set(self.ids)):
                # indexed by patient: joined by id (another order used to be taken by
                # position, so every row's site or group went to another patient)
                if not keys.is_unique:
                    raise DataError("meta names a patient twice", field="meta",
                                    patient=str(keys[keys.duplicated()][0]))  # fmt: skip
                meta = meta.set_axis(keys).loc[list(self.ids)]
            meta.index = pd.Index(self.ids, name="patient")
        self.meta = meta

    # ------------------------------------------------------------------ building
    def _add(
        self,
        m: str,
        x: np.ndarray,
        present: np.ndarray | None,
        mask: np.ndarray | None,
        names: Sequence[str] | None,
        copy: bool = True,
    ) -> None:
        n = len(self.ids)
        adopt = not copy and isinstance(x, np.ndarray) and x.flags.writeable
        try:
            x = np.asarray(x, dtype=np.float32) if adopt else np.array(x, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise DataError(f"features must be numbers: {err}", field=m) from None
        if x.ndim not in (2, 3) or x.shape[0] != n:
            raise DataError(
                f"features must be N x D or N x K x D with N={n}; found shape {x.shape}",
                field=m,
            )
        if present is None:
            p = np.ones(n, dtype=bool)
        else:
            p = _as_bools(present, f"present mask of {m!r}", m)
            if p.shape[0] != n:
                raise DataError(f"present mask has {p.shape[0]} entries for {n} patients", field=m)
        if x.ndim == 3:
            if mask is None:
                mk = np.ones(x.shape[:2], dtype=bool)
            else:
                mk = _as_bools(mask, f"bag mask of {m!r}", m, flat=False)
                if mk.shape != x.shape[:2]:
                    raise DataError(
                        f"bag mask must have shape {x.shape[:2]}; found {mk.shape}", field=m
                    )
            mk = mk & p[:, None]
            empty = p & ~mk.any(axis=1)
            if empty.any():
                i = int(np.flatnonzero(empty)[0])
                raise DataError(
                    "a present bag needs at least one valid instance (or mark the modality"
                    " absent for this patient)",
                    patient=self.ids[i],
                    field=m,
                )
            x[~mk] = 0.0
            self.bag_mask[m] = mk
        elif mask is not None:
            raise DataError("bag_mask given for a vector modality", field=m)
        x[~p] = 0.0
        step = max(1, (1 << 24) // max(1, x[:1].size))  # ~16 M values: no full-size temporary
        for start in range(0, n, step):
            block = x[start : start + step]
            rows = np.isinf(block).reshape(block.shape[0], -1).any(axis=1)
            if rows.any():
                i = start + int(np.flatnonzero(rows)[0])
                raise DataError("features contain +/-inf", patient=self.ids[i], field=m)
        if names is not None:
            names = [str(s) for s in names]
            if len(names) != x.shape[-1]:
                raise DataError(
                    f"{len(names)} feature names for {x.shape[-1]} feature columns", field=m
                )
            self.feature_names[m] = names
        self.features[m] = x
        self.present[m] = p

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def shape(self) -> tuple[int]:
        """``(n_patients,)``: a cohort is indexed by patient, like the rows of an array."""
        return (len(self),)

    def __getitem__(self, key: object) -> Cohort:
        """Patients by position (integer array, boolean mask or slice) as a new cohort, so
        scikit-learn's model selection (``cross_val_score``, ``GridSearchCV``) can split a
        cohort like an array (it indexes ``X[idx, ...]``)."""
        if isinstance(key, tuple):
            key = key[0] if len(key) == 2 and key[1] is Ellipsis else key
            if isinstance(key, tuple):
                raise TypeError("a Cohort is indexed by patient only")
        if isinstance(key, slice):
            return self.subset(np.arange(len(self))[key])
        idx = np.asarray(key)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.size == 0:  # ``cohort[[]]``: an empty list is float64 to NumPy
            idx = idx.astype(np.int64)
        if not (idx.dtype == bool or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"a Cohort is indexed by integer positions or a mask; found {idx.dtype}")
        return self.subset(idx)

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())

    def is_bag(self, modality: str) -> bool:
        return self.features[modality].ndim == 3

    def dim(self, modality: str) -> int:
        return int(self.features[modality].shape[-1])

    def index_of(self, ids: Iterable[str]) -> np.ndarray:
        """Positions of the given patient ids (raises naming the first unknown id)."""
        pos = {p: i for i, p in enumerate(self.ids)}
        out = []
        for p in ids:
            if str(p) not in pos:
                raise DataError("unknown patient id", patient=str(p))
            out.append(pos[str(p)])
        return np.asarray(out, dtype=np.int64)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Cohort:
        """Rows ``idx`` (integer positions or a boolean mask) as a new cohort."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            # a mask of another length (another cohort's) used to select silently
            if idx.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {idx.shape} for a cohort of"
                                 f" {len(self)} patients")  # fmt: skip
            idx = np.flatnonzero(idx)
        elif idx.size == 0:  # ``subset([])``: an empty list is float64 to NumPy
            idx = idx.astype(np.int64)
        return Cohort(
            self.ids[idx],
            self.time[idx],
            self.event[idx],
            features={m: x[idx] for m, x in self.features.items()},
            present={m: p[idx] for m, p in self.present.items()},
            meta=self.meta.iloc[idx],
            bag_mask={m: k[idx] for m, k in self.bag_mask.items()},
            feature_names=self.feature_names,
            copy=False,  # x[idx] above is already a fresh copy
        )

    def select(self, modalities: Iterable[str]) -> Cohort:
        """Keep only the named modalities (in that order)."""
        mods = list(modalities)
        missing = [m for m in mods if m not in self.features]
        if missing:
            raise DataError(
                f"modalities {missing} not in cohort; available: {self.modalities}",
                field="modalities",
            )
        return Cohort(
            self.ids,
            self.time,
            self.event,
            features={m: self.features[m] for m in mods},
            present={m: self.present[m] for m in mods},
            meta=self.meta,
            bag_mask={m: self.bag_mask[m] for m in mods if m in self.bag_mask},
            feature_names={m: self.feature_names[m] for m in mods if m in self.feature_names},
        )

    def with_modality(
        self,
        name: str,
        x: np.ndarray,
        present: np.ndarray | None = None,
        bag_mask: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> Cohort:
        """A copy with one modality added or replaced."""
        out = self.subset(np.arange(len(self)))
        out._add(name, x, present, bag_mask, feature_names)
        if bag_mask is None and x.ndim == 2:
            out.bag_mask.pop(name, None)
        old = out.feature_names.get(name)
        if feature_names is None and old is not None and len(old) != out.dim(name):
            del out.feature_names[name]  # another width: the old names name other columns
        return out

    def digests(self) -> dict[str, str]:
        """A short sha256 of each part a model fitted on this cohort depends on: patients,
        times, events, and per modality its features with their names, presence and tile
        mask (zero-valued tiles read like padding without it). What resumes compare, so
        one edited data file between an interrupted run and its resume is caught and named
        (``runs.check_same_cohort``, the grid's ``cohort.json``)."""

        def digest(*parts: np.ndarray) -> str:
            h = hashlib.sha256()
            for part in parts:
                a = np.ascontiguousarray(part)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
            return h.hexdigest()[:16]

        out = {"patients": hashlib.sha256("\0".join(map(str, self.ids)).encode()).hexdigest()[:16],
               "time": digest(np.asarray(self.time, dtype=np.float64)),
               "event": digest(np.asarray(self.event, dtype=bool))}  # fmt: skip
        for m in sorted(self.modalities):
            names = "\0".join(map(str, self.feature_names.get(m) or []))
            parts = [self.features[m], self.present[m], np.frombuffer(names.encode(), np.uint8)]
            if m in self.bag_mask:
                parts.append(np.asarray(self.bag_mask[m], dtype=bool))
            out[f"features.{m}"] = digest(*parts)
        return out

    def missingness(self) -> dict[str, float]:
        """Fraction of patients missing each modality."""
        return {m: float(1.0 - p.mean()) if len(p) else 0.0 for m, p in self.present.items()}

    def survival_array(self) -> np.ndarray:
        """Structured (event, time) array as scikit-survival expects."""
        y = np.empty(len(self), dtype=[("event", bool), ("time", np.float64)])
        y["event"] = self.event
        y["time"] = self.time
        return y

    def __repr__(self) -> str:
        parts = []
        for m, x in self.features.items():
            shape = "x".join(map(str, x.shape[1:]))
            miss = 1.0 - self.present[m].mean() if len(self) else 0.0
            parts.append(f"{m}[{shape}, {miss:.0%} missing]")
        mods = ", ".join(parts) if parts else "no modalities"
        return f"Cohort(N={len(self)}, events={self.n_events}, modalities: {mods})"


def concat_cohorts(cohorts: Sequence[Cohort]) -> Cohort:
    """The patients of several cohorts (e.g. sites) as one cohort, in the given order.

    Every cohort must hold the same modalities with the same feature width and, where
    named, the same feature names (columns are not matched by guessing); bags are padded
    to the widest one (the padding is masked). Patient ids must be unique across cohorts.
    ``meta`` columns are joined (a column one cohort lacks is missing for its patients),
    so e.g. each cohort's ``site`` survives for leave-one-site-out cross-validation."""
    cohorts = list(cohorts)
    if not cohorts:
        raise DataError("concat_cohorts: no cohort given", field="cohorts")
    first = cohorts[0]
    for i, c in enumerate(cohorts[1:], start=1):
        if c.modalities != first.modalities:
            raise DataError(f"cohort {i} has modalities {c.modalities}; cohort 0 has"
                            f" {first.modalities}", field="modalities")  # fmt: skip
        for m in first.modalities:
            if c.dim(m) != first.dim(m) or c.is_bag(m) != first.is_bag(m):
                raise DataError(f"cohort {i}: {m!r} has shape {c.features[m].shape[1:]};"
                                f" cohort 0 has {first.features[m].shape[1:]}", field=m)  # fmt: skip
            if c.feature_names.get(m) != first.feature_names.get(m):
                raise DataError(f"cohort {i}: the feature names of {m!r} differ from cohort"
                                " 0's", field=m)  # fmt: skip
    features, masks = {}, {}
    for m in first.modalities:
        if not first.is_bag(m):
            features[m] = np.concatenate([c.features[m] for c in cohorts])
            continue
        k = max(c.features[m].shape[1] for c in cohorts)
        xs, ms = [], []
        for c in cohorts:
            pad = k - c.features[m].shape[1]
            xs.append(np.pad(c.features[m], ((0, 0), (0, pad), (0, 0))))
            ms.append(np.pad(c.bag_mask[m], ((0, 0), (0, pad))))
        features[m], masks[m] = np.concatenate(xs), np.concatenate(ms)
    return Cohort(
        np.concatenate([c.ids for c in cohorts]),
        np.concatenate([c.time for c in cohorts]),
        np.concatenate([c.event for c in cohorts]),
        features=features,
        present={m: np.concatenate([c.present[m] for c in cohorts]) for m in first.modalities},
        meta=pd.concat([c.meta for c in cohorts]),
        bag_mask=masks,
        feature_names=first.feature_names,
        copy=False,  # the concatenations above are fresh arrays
    )
