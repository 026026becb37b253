"""User-facing errors: every message names the file, the patient and the field at fault.

Validation happens at the boundary (io/, config, Cohort construction); code inside the
package trusts what it is given. These exceptions are what a user sees, so they carry
structured context (``path``, ``patient``, ``field``) as well as a readable message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data. Subclasses ValueError so generic handlers still catch it."""

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        patient: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else str(path)
        self.patient = None if patient is None else str(patient)
        self.field = field
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if self.patient is not None:
            where.append(f"patient {self.patient!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{'; '.join(where)}: {self.reason}" if where else self.reason


class SchemaError(DataError):
    """A value does not match the declared type or vocabulary of its column."""


class LabelError(DataError):
    """A survival label (time or event) is missing, non-finite or malformed."""


class LayoutError(DataError):
    """Files on disk do not follow the expected cohort layout (CHIMERA, manifest)."""


class FeatureError(DataError):
    """A stored or imported embedding has the wrong shape, dtype or provenance."""


class WeightsError(DataError):
    """A local checkpoint cannot be loaded into the requested encoder."""


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the key path."""


class UnreachableError(ConnectionError):
    """A cluster address (``--ray-address``) that nothing answers at."""


@dataclass(frozen=True)
class Problem:
    """One finding of a cohort scan: nothing is skipped silently, everything is listed.

    Severity ``note`` is information, not a problem (a column the schema itself declares a
    label leak, e.g. ``BCR_PSA``): notes are kept apart from the problem lists, so no
    count or ``--strict`` sees them."""

    severity: str  # "error" | "warning" | "note"
    reason: str
    path: str | None = None
    patient: str | None = None
    field: str | None = None

    def to_error(self) -> DataError:
        return DataError(self.reason, path=self.path, patient=self.patient, field=self.field)

    def __str__(self) -> str:
        return f"[{self.severity}] {self.to_error()}"


class DivergedError(ArithmeticError):
    """Training produced non-finite weights (a learning rate far too large, usually): the
    model cannot predict, so the run stops naming the epoch and the settings to change."""


class LockedError(RuntimeError):
    """Another process holds the lock on a run folder or feature store."""


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


class DataWarning(UserWarning):
    """Something in the input was repaired, not refused (an unknown category imputed, a
    gene absent for one patient filled); the message names patient, field and value."""
