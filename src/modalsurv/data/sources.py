"""Turn a data description (config or a short spec string) into a Cohort.

This is the single place that knows every kind of cohort source, so the CLI, the
experiment runner and the benchmarks all load data the same way.

Spec strings (for ``--data`` on the command line):
  ``synthetic[:N[:SEED]]``, ``synthetic-external[:N[:SEED]]``, ``public:NAME``,
  ``chimera-task1:ROOT``, ``chimera-task3:ROOT``, ``manifest:CSV``, ``store:STORE`` (a
  labelled feature store), or a YAML file holding a
  ``data:`` section (or a bare DataConfig mapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modalsurv.cohort import Cohort
from modalsurv.config import DataConfig, check_data_params, format_validation_error
from modalsurv.errors import ConfigError, DataError, Problem
from modalsurv.io.layouts import chimera_task
from modalsurv.utils import read_yaml_mapping


@dataclass
class LoadedData:
    """A cohort with everything reading it found out: the problems (nothing read is
    dropped silently) and, for extracted features, how they were made."""

    cohort: Cohort
    problems: list[Problem] = field(default_factory=list)
    extraction: dict[str, Any] | None = None
    source: str = ""
    # said once and no problem (``--strict`` ignores them): a declared label-leak column
    notes: list[Problem] = field(default_factory=list)

    def check_strict(self) -> None:
        """``--strict``: any problem, warnings included, is one DataError listing all."""
        if self.problems:
            lines = "\n".join(f"  {p}" for p in self.problems)
            raise DataError(f"--strict: {len(self.problems)} problem(s) reading {self.source}:"
                            f"\n{lines}")  # fmt: skip


def parse_data_spec(spec: str) -> DataConfig:
    """Parse a ``--data`` spec string (see module docstring) into a DataConfig."""
    path = Path(spec)
    if path.suffix.lower() in {".yaml", ".yml"}:  # "cohort.YAML" was an unknown spec
        raw = read_yaml_mapping(path, "data config")
        if not raw.get("data", raw):  # an empty file would silently mean the defaults
            raise ConfigError(f"data config {path}: empty; give at least data.source (e.g."
                              " source: manifest, path: cohort.csv)")  # fmt: skip
        try:
            data = DataConfig.model_validate(raw.get("data", raw))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "data config", str(path),
                                                      DataConfig)) from None  # did you mean
        check_data_params(data, str(path))
        missing = field_problem(data)
        if missing:  # said when the file is read, naming it (was: load_data, without the file)
            raise ConfigError(f"invalid data config {path}:\n  {missing}")
        return data
    kind, _, rest = spec.partition(":")
    if kind in {"synthetic", "synthetic-external"}:
        params: dict[str, Any] = {"external": kind == "synthetic-external"}
        parts = rest.split(":") if rest else []
        while parts and not parts[-1]:  # a trailing colon ("synthetic:300:") is harmless
            parts.pop()
        # "synthetic::3" used to read 3 as N, and "synthetic:300:1:5" dropped the 5
        if len(parts) > 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ConfigError(f"data spec {spec!r}: N and SEED must be integers, e.g."
                              f" {kind}:300:1")  # fmt: skip
        if parts:
            params["n"] = int(parts[0])
        if len(parts) > 1:
            params["seed"] = int(parts[1])
        return DataConfig(source="synthetic", params=params)
    if kind == "public":
        if not rest.strip():
            raise ConfigError("data spec 'public:NAME' needs a cohort name")
        return DataConfig(source="public", name=rest.strip())
    if (chimera_task(kind) is not None or kind in {"manifest", "store"}) and not rest.strip():
        # an empty path used to read the working directory ("file : no patient found")
        what = {"manifest": "CSV", "store": "STORE"}.get(kind, "ROOT")
        raise ConfigError(f"data spec {spec!r} needs a path: {kind}:{what}")
    if chimera_task(kind) is not None:
        return DataConfig(source="chimera", name=f"task{chimera_task(kind)}", path=rest)
    if kind in {"manifest", "store"}:
        return DataConfig(source=kind, path=rest)
    raise ConfigError(
        f"unknown data spec {spec!r}; expected synthetic[:N[:SEED]],"
        " synthetic-external[:N[:SEED]], public:NAME, chimera-task1:ROOT, chimera-task3:ROOT,"
        " manifest:CSV, store:STORE or a YAML file"
    )


# source → (module, loader, the arguments load_cohort passes itself)
_LOADERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "synthetic": ("modalsurv.data.synthetic", "make_cohort", ()),
    "public": ("modalsurv.data.public", "load", ("name",)),
    "chimera": ("modalsurv.io.chimera", "read_chimera", ("root", "task", "features", "labels",
                                                          "layout")),
    "manifest": ("modalsurv.io.manifest", "manifest_to_cohort", ("manifest",)),
    "store": ("modalsurv.io.store_read", "labelled_store_cohort", ("root",)),
}


def _loader(source: str) -> Any:
    """The loader function of ``source`` (None for a source without one), imported on use."""
    import importlib

    if source not in _LOADERS:
        return None
    module, name, _ = _LOADERS[source]
    fn: Any = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    return fn


def _loader_hints(source: str) -> dict[str, Any]:
    """The loader's resolved type hints by parameter ({} when there is none to read)."""
    import typing

    fn = _loader(source)
    if fn is None:
        return {}
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved: nothing to check
        return {}


def loader_parameters(source: str) -> set[str] | None:
    """The ``data.params`` keys a source's loader accepts (None: any, it takes **kwargs).

    Why: an unknown key used to surface only at fit time as a TypeError; the config checks
    it when it is read (``config.DataConfig``)."""
    import inspect

    fn = _loader(source)
    if fn is None:
        return None
    fixed = _LOADERS[source][2]
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in fixed and p.kind is not p.VAR_POSITIONAL}


def loader_choices(source: str) -> dict[str, tuple[Any, ...]]:
    """The ``data.params`` a source's loader types as a ``Literal`` (e.g. CHIMERA's
    ``slide_policy``), with the values it takes."""
    import typing

    out = {}
    for key, hint in _loader_hints(source).items():
        lits = [h for h in (hint, *typing.get_args(hint)) if typing.get_origin(h) is typing.Literal]
        if lits:
            out[key] = typing.get_args(lits[0])
    return out


def param_value_problems(data: DataConfig) -> list[str]:
    """What is wrong with the values of ``data.params`` beyond their type: a choice the
    loader does not know, a tile cap below 1, a CHIMERA endpoint the task does not have.
    Why: these failed inside the loader (an internal error, or a data error blaming the
    first patient) or were silently ignored (``event`` on task 1)."""
    out = []
    params = data.params
    for key, values in loader_choices(data.source).items():
        if key in params and params[key] is not None and params[key] not in values:
            out.append(f"{key}: {params[key]!r} is not one of {list(values)}")
    cap = params.get("max_tiles")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap < 1:
        out.append(f"max_tiles: {cap}; a bag keeps at least 1 tile (null keeps every tile)")
    if data.source == "chimera" and params.get("event") is not None:
        from modalsurv.io.clinical import TASK3_LABELS

        task = (data.name or "task1").replace("task", "")
        if task == "1" and params["event"] != "BCR":
            out.append(f"event: {params['event']!r}; task 1 has one endpoint, BCR")
        elif task == "3" and params["event"] not in TASK3_LABELS:
            out.append(f"event: {params['event']!r}; task 3's endpoints are"
                       f" {list(TASK3_LABELS)}")  # fmt: skip
    return out


def loader_scalar_types(source: str) -> dict[str, type]:
    """The ``data.params`` a source's loader types as a plain ``int``, ``float``, ``bool``
    or ``str`` (with or without ``None``), by name: what ``config.check_data_params``
    checks a value against when the config is read."""
    import typing

    out = {}
    for key, hint in _loader_hints(source).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        plain = hint if hint in (int, float, bool, str) else (args[0] if len(args) == 1 else None)
        if plain in (int, float, bool, str):
            out[key] = plain
    return out


def field_problem(data: DataConfig) -> str | None:
    """The first field a source needs that ``data`` lacks or gets wrong (``data.path`` of a
    folder or file source, a public cohort's name, a CHIMERA task), as ``data.KEY: why``;
    None when there is none. One rule for a data config file and for ``load_data``."""
    if data.features is not None and data.source != "chimera":
        return ("data.features: a feature store joins a CHIMERA folder (source 'chimera');"
                f" this source is {data.source!r}")  # fmt: skip
    if data.source == "public":
        return None if data.name else "data.name: a public cohort name is required"
    if data.source != "synthetic" and data.path is None:
        return f"data.path: required for source {data.source!r}"
    if data.source == "chimera" and (data.name or "task1").replace("task", "") not in ("1", "3"):
        return f"data.name: a CHIMERA task is 'task1' or 'task3'; found {data.name!r}"
    return None


def load_cohort(data: DataConfig | str, seed: int = 0) -> Cohort:
    """Load the cohort a DataConfig (or spec string) describes (see :func:`load_data` for
    the problems found on the way)."""
    return load_data(data, seed).cohort


def describe(data: DataConfig) -> str:
    """A short human description of a data source (for messages and summaries)."""
    if data.source == "synthetic":
        return f"synthetic cohort {data.params or ''}".strip()
    if data.source == "public":
        return f"public cohort {data.name}"
    what = f"{data.source} {data.name or ''} {data.path}".replace("  ", " ")
    return what + (f" + features {data.features}" if data.features else "")


def load_data(data: DataConfig | str, seed: int = 0, labels: bool = True) -> LoadedData:
    """Load the cohort a DataConfig (or spec string) describes, with its problems.

    ``labels=False`` (prediction): a CHIMERA case without follow-up and event is kept with
    a placeholder label and ``meta['labelled']`` False; other sources need labels."""
    if isinstance(data, str):
        data = parse_data_spec(data)
    check_data_params(data, f"of the data source ({describe(data)})")
    params = dict(data.params)
    missing = field_problem(data)
    if missing:
        raise ConfigError(missing)
    source = describe(data)
    if data.source == "synthetic":
        from modalsurv.data.synthetic import make_cohort

        params.setdefault("seed", seed)
        params.setdefault("n", 300)
        cohort, _ = make_cohort(**params)
        return LoadedData(cohort, source=source)
    if data.source == "public":
        from modalsurv.data.public import load

        assert data.name  # field_problem
        return LoadedData(load(data.name, **params), source=source)
    assert data.path is not None  # field_problem
    if data.source == "chimera":
        from modalsurv.io.chimera import read_chimera, unextracted_notes

        task = (data.name or "task1").replace("task", "")
        from modalsurv.io.scan import other_layout_problems

        # cases of the other task's layout are not read: said here as in `modalsurv scan`
        other = other_layout_problems(data.path, int(task))
        try:
            read = read_chimera(data.path, task=int(task), features=data.features,
                                labels=labels, **params)  # fmt: skip
        except DataError as exc:
            if not other:
                raise
            lines = "\n".join(f"  {p}" for p in other)
            raise type(exc)(f"{exc.reason}\n{lines}", exc.path, exc.patient, exc.field) from exc
        notes = list(read.notes)
        if data.features is None:  # the folder's MRI (and slides) are not read: said once
            notes += unextracted_notes(read, data.path)
        return LoadedData(read.cohort, [*read.problems, *other], read.extraction, source,
                          notes)  # fmt: skip
    if data.source == "manifest":
        from modalsurv.io.manifest import manifest_to_cohort, read_manifest

        manifest = read_manifest(data.path, params.get("modalities"))  # named path columns
        return LoadedData(manifest_to_cohort(manifest, **params), list(manifest.problems),
                          source=source)  # fmt: skip
    from modalsurv.io.store import read_extraction_record
    from modalsurv.io.store_read import labelled_store_cohort

    cohort = labelled_store_cohort(data.path, **params)
    # a labelled patient the store has nothing for trains with no modality: say so
    problems = [Problem("warning", "labelled, but the feature store has no features for this"
                        " patient: it has no modality", str(data.path), pid, "features")
                for pid, has in zip(cohort.ids, _any_present(cohort), strict=True) if not has]  # fmt: skip
    return LoadedData(cohort, problems, extraction=read_extraction_record(data.path),
                      source=source)  # fmt: skip


def _any_present(cohort: Cohort) -> list[bool]:
    """Per patient: whether any modality is present."""
    import numpy as np

    if not cohort.modalities:
        return [False] * len(cohort)
    return list(np.any([cohort.present[m] for m in cohort.modalities], axis=0))
