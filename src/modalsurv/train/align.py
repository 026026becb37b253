"""Match a cohort's feature columns to those a transformer was fitted on, by name.

Why: a fitted model used to read columns by position, so a manifest with the same data
in another column order gave other risks, a renamed column (age → weight) or gene was
accepted, and a category new to the model landed in another category's one-hot slot.
Categories are read per cohort (``io.manifest.clinical_matrix``), so an external cohort
lacking one category had fewer columns and was refused outright. The fitted names are
the reference; :func:`align_columns` applies these rules:

* same names: reordered to the fitted order when needed;
* a fitted one-hot column ``field=category`` the cohort lacks is 0 where the patient's
  field is known (it holds another category) and NaN (imputed) where it is not;
* a category the model never saw makes that patient's field unknown (all its one-hot
  columns NaN, imputed from training), with a DataWarning naming patient, field, value;
* a field read as numbers in one cohort and as text categories in the other is
  converted by value (``grade=2`` ↔ ``grade`` 2.0), unknown values as above; so is a
  category written as another number (``grade=2.0`` is the fitted ``grade=2``);
* a fitted column the model uses and the cohort lacks: FeatureError listing the missing
  and the unexpected names (a rename shows up as one of each);
* cohort columns the model was not fitted on are ignored, with one warning.

Without names on either side (a plain ``.npy`` embedding, a model fitted on an unnamed
matrix: ``x0, x1, ...``) columns can only be matched by position, and the widths must
agree.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from modalsurv.errors import DataWarning, FeatureError


def generic_names(d: int) -> list[str]:
    """The names a transformer fitted without feature names records (``x0 .. x{d-1}``)."""
    return [f"x{j}" for j in range(d)]


def _few(names: Sequence[str], k: int = 10) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - k} more" if len(names) > k else ""
    return ", ".join(map(repr, names[:k])) + more


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _onehot_fields(names: Iterable[str]) -> dict[str, list[str]]:
    """field → its one-hot column names (``field=category``), in order."""
    out: dict[str, list[str]] = {}
    for n in names:
        field, sep, _ = n.partition("=")
        if sep and field:
            out.setdefault(field, []).append(n)
    return out


def _warn_unknown(ids: Sequence[str], rows: np.ndarray, field: str, value: str,
                  known: Sequence[str] | None) -> None:  # fmt: skip
    """One warning per patient: an unknown value is imputed, never refused, never silent."""
    expected = ("a number, as in the data the model was fitted on" if known is None else
                f"one of the categories the model was fitted on ({_few(list(known), 6)})")
    for i in np.flatnonzero(rows):
        warnings.warn(f"patient {ids[i]!r}, field {field!r}: value {value!r} is not {expected};"
                      " imputed as missing", DataWarning, stacklevel=4)  # fmt: skip


def align_columns(
    x: np.ndarray,
    names: Sequence[str] | None,
    fitted: Sequence[str],
    modality: str,
    ids: Sequence[str],
    present: np.ndarray,
    used: Iterable[int] | None = None,
) -> np.ndarray:
    """``x`` (N × D, columns ``names``) as an N × len(fitted) matrix in the fitted order
    (see the module docstring for the rules). ``used``: the fitted columns the transform
    reads (default all); a missing unused column is filled with NaN instead of refused."""
    fitted = [str(n) for n in fitted]
    if names is None or fitted == generic_names(len(fitted)):
        if x.shape[-1] != len(fitted):
            raise FeatureError(f"modality {modality!r} has {x.shape[-1]} features; the model"
                               f" was fitted on {len(fitted)}", field=modality)  # fmt: skip
        return x
    names = [str(n) for n in names]
    if names == fitted:
        return x
    if len(set(names)) != len(names):
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        raise FeatureError(f"modality {modality!r} has duplicated feature names {_few(dup)}",
                           field=modality)  # fmt: skip
    ctx = _Ctx(x, names, fitted, ids, np.asarray(present, dtype=bool))
    need = set(range(len(fitted))) if used is None else {int(j) for j in used}
    missing: list[str] = []
    for j, f in enumerate(fitted):
        if f in ctx.col:
            ctx.out[:, j] = x[:, ctx.col[f]]
            continue
        field, sep, _ = f.partition("=")
        if sep and field in ctx.fit_fields and (field in ctx.new_fields or ctx.is_plain(field)):
            continue  # filled field by field below
        if not sep and f in ctx.new_fields:  # the model read numbers, the cohort categories
            ctx.out[:, j] = ctx.categories_to_number(f)
            continue
        if j in need:
            missing.append(f)
    unexpected = ctx.unexpected()
    if missing:
        raise FeatureError(
            f"modality {modality!r} does not match the model: {len(missing)} feature(s) it was"
            f" fitted on are missing ({_few(missing)}); the cohort has {len(unexpected)} it"
            f" was not fitted on ({_few(unexpected)})",
            field=modality,
        )
    for field in ctx.fit_fields:
        if field in ctx.new_fields:
            ctx.onehot_field(field)
        elif ctx.is_plain(field):
            ctx.number_to_onehot(field)
    if unexpected:
        warnings.warn(f"modality {modality!r}: {len(unexpected)} feature(s) the model was not"
                      f" fitted on are ignored ({_few(unexpected)})", DataWarning,
                      stacklevel=3)  # fmt: skip
    return ctx.out.astype(x.dtype, copy=False)


class _Ctx:
    """The two column sets of one alignment, and the per-field conversions."""

    def __init__(self, x: np.ndarray, names: list[str], fitted: list[str], ids: Sequence[str],
                 present: np.ndarray) -> None:  # fmt: skip
        self.x, self.names, self.fitted, self.ids, self.present = x, names, fitted, ids, present
        self.col = {n: j for j, n in enumerate(names)}
        self.pos = {f: j for j, f in enumerate(fitted)}
        self.fit_fields = _onehot_fields(fitted)
        self.new_fields = _onehot_fields(names)
        self.out = np.full((x.shape[0], len(fitted)), np.nan, dtype=np.float64)

    def is_plain(self, field: str) -> bool:
        """The cohort has ``field`` as one numeric column the model does not have as such."""
        return field in self.col and field not in self.pos

    def unexpected(self) -> list[str]:
        out = []
        for n in self.names:
            field, sep, _ = n.partition("=")
            if n in self.pos or (sep and field in self.fit_fields):
                continue
            if (not sep and n in self.fit_fields) or (sep and field in self.pos):
                continue  # a field converted between numbers and categories
            out.append(n)
        return out

    def _slots(self, field: str) -> tuple[list[int], list[str]]:
        cols = self.fit_fields[field]
        return [self.pos[c] for c in cols], [c.partition("=")[2] for c in cols]

    def onehot_field(self, field: str) -> None:
        """Both one-hot: fitted categories the cohort lacks are 0 where the field is known;
        categories the model never saw make the patient's field unknown."""
        slots, cats = self._slots(field)
        theirs = [self.col[n] for n in self.new_fields[field]]
        known = ~np.isnan(self.x[:, theirs]).all(axis=1)
        for j, c in zip(slots, self.fit_fields[field]):
            if c not in self.col:
                self.out[:, j] = np.where(known, 0.0, np.nan)
        by_value = {}  # fitted category's number → its slot ("grade=2" for "grade=2.0")
        for j, cat in zip(slots, cats):
            if _number(cat) is not None:
                by_value.setdefault(_number(cat), j)
        for n in self.new_fields[field]:
            if n not in self.pos:
                is_one = self.x[:, self.col[n]] == 1
                slot = by_value.get(_number(n.partition("=")[2]))
                if slot is not None:  # the same number written otherwise: its category
                    self.out[is_one, slot] = 1.0
                    continue
                rows = is_one & self.present
                self.out[np.ix_(rows, slots)] = np.nan
                _warn_unknown(self.ids, rows, field, n.partition("=")[2], cats)

    def number_to_onehot(self, field: str) -> None:
        """The cohort read the field as numbers (no text value in it): one-hot by value."""
        slots, cats = self._slots(field)
        v = self.x[:, self.col[field]].astype(np.float64)
        matched = np.zeros(len(v), dtype=bool)
        for j, cat in zip(slots, cats):
            c = _number(cat)
            if c is not None and self.x.dtype.kind == "f":  # float32 0.1 is not float64 0.1
                c = float(self.x.dtype.type(c))
            hit = v == c if c is not None else np.zeros(len(v), dtype=bool)
            self.out[:, j] = hit
            matched |= hit
        self.out[np.ix_(np.isnan(v), slots)] = np.nan
        bad = ~matched & ~np.isnan(v)
        self.out[np.ix_(bad, slots)] = np.nan
        for value in sorted({float(v[i]) for i in np.flatnonzero(bad & self.present)}):
            _warn_unknown(self.ids, bad & self.present & (v == value), field, f"{value:g}", cats)

    def categories_to_number(self, field: str) -> np.ndarray:
        """A numeric field the cohort read as categories (one text value made it text): each
        patient's value back as a number; a non-numeric category is unknown (warned)."""
        v = np.full(self.x.shape[0], np.nan)
        for n in self.new_fields[field]:
            cat = n.partition("=")[2]
            rows = self.x[:, self.col[n]] == 1
            num = _number(cat)
            if num is None:
                _warn_unknown(self.ids, rows & self.present, field, cat, None)
            else:
                v[rows] = num
        return v
