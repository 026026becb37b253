"""The one resume mechanism: a folder of work units (the folds of a cross-validation, the
trials of an experiment grid), each finished exactly when its marker file is written —
last, atomically — and a description of the run the units belong to (its spec), checked
before anything is added, so a unit of another run is never mixed in.

Why one mechanism: a killed process leaves units that are either complete (marker
present) or worth nothing (no marker: redone), and a refused resume must leave the folder
as it was, whatever is being resumed. Temporary files a killed writer left
(``utils.atomic_path``'s ``.NAME.*.tmp``) are removed only under the folder's lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modalsurv.errors import ConfigError
from modalsurv.utils import atomic_write_text


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: nested specs compared key by key."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    return {k: v for key, val in d.items() for k, v in flatten(val, f"{prefix}{key}.").items()}


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old there, new here`` for every key whose value differs (changed keys first,
    then keys only one side has)."""
    a, b = flatten(old), flatten(json.loads(json.dumps(new)))
    keys = sorted(set(a) | set(b), key=lambda k: (k not in a or k not in b, k))
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys if a.get(k) != b.get(k)]


class UnitFolder:
    """Work units under ``root``, each a folder finished when it holds ``marker``; the run
    they belong to is described by ``root/spec_name``."""

    def __init__(self, root: str | Path, marker: str, spec_name: str, units: str = "**") -> None:
        """``units``: the glob, relative to ``root``, of the unit folders (e.g. ``trials/*``).
        Only markers there are the units': with the default (any depth) a file of the
        marker's name among a user's files below ``root`` is taken for a finished unit, and
        :meth:`unfinish_all` deletes it."""
        self.root = Path(root)
        self.marker = marker
        self.spec_path = self.root / spec_name
        self.units = units

    def markers(self) -> list[Path]:
        """The marker files of the units (finished or not, readable or not)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob(f"{self.units}/{self.marker}") if p.is_file()]

    def unit(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def finished(self, unit: Path) -> bool:
        """Whether ``unit`` holds its marker, readable: a marker an OS crash left empty
        (renamed into place before its bytes reached the disk) marks nothing, so the unit
        is redone instead of failing the resume on reading it (JSONDecodeError)."""
        try:
            self.read_marker(unit)
        except (OSError, ValueError, TypeError):
            return False
        return True

    def any_finished(self) -> bool:
        """Whether any unit is finished (then the folder holds work worth protecting)."""
        return any(self.finished(m.parent) for m in self.markers())

    def unfinish_all(self) -> None:
        """Delete every unit's marker: a run started afresh in this folder must not later
        take an earlier run's units as its own (a resume would skip them)."""
        for marker in self.markers():
            marker.unlink(missing_ok=True)

    def finish(self, unit: Path, content: dict[str, Any]) -> None:
        """Mark ``unit`` finished: call after every other file of the unit is written."""
        atomic_write_text(unit / self.marker, json.dumps(content, indent=1))

    def read_marker(self, unit: Path) -> dict[str, Any]:
        return dict(json.loads((unit / self.marker).read_text(encoding="utf-8")))

    def check_spec(self, spec: dict[str, Any], what: str, hint: str,
                   normalise: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   ) -> None:  # fmt: skip
        """Refuse (ConfigError naming the differences) to add to finished units of another
        run. Reads only: a refused resume leaves the folder exactly as it was.
        ``normalise``: applied to the recorded spec first (an older spelling of a value)."""
        if not self.any_finished() or not self.spec_path.is_file():
            if self.any_finished():
                raise ConfigError(f"{what} {self.root} holds finished work but not its"
                                  f" {self.spec_path.name}; {hint}")  # fmt: skip
            return
        try:
            old = json.loads(self.spec_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{what} {self.root}: cannot read its run description {self.spec_path}:"
                              f" {err}") from None  # fmt: skip
        diff = spec_differences(normalise(old) if normalise is not None else old, spec)
        if diff:
            more = "; ..." if len(diff) > 5 else ""
            raise ConfigError(f"{what} {self.root} holds a different run ({'; '.join(diff[:5])}"
                              f"{more}); {hint}")  # fmt: skip

    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_text(self.spec_path, json.dumps(spec, indent=1))


def remove_stale_temporaries(folder: Path, of: str = "*", recursive: bool = True) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed writer left (utils.atomic_path); only to be
    called while holding the lock that covers them, so no live writer owns them. ``of``:
    only the temporaries of files named so (a lock that covers one file); ``recursive``:
    subfolders too."""
    found = Path(folder).rglob(f".{of}.*.tmp") if recursive else Path(folder).glob(f".{of}.*.tmp")
    stale = [p for p in found if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
