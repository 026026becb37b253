"""What kind of modalsurv folder a path is, told from the files each command writes.

Why: the commands that write a folder (``train``, ``experiment``, ``extract``,
``export-model``, ``case-input``) each resume or extend a folder of their own kind, and
each writes files of the same names (``config.yaml``, ``extraction.json``). Pointed at a
folder another command wrote, they would overwrite its files and mix two outputs: a run
written into an exported model replaces the model's ``config.yaml``, a grid written into a
run folder puts ``trials/`` beside its metrics. :func:`refuse_other_kind` stops that before
the first write. A folder holding nothing of ours (absent, empty, or a user's files) has no
kind and is never refused here.
"""

from __future__ import annotations

from pathlib import Path

from modalsurv.errors import ConfigError

RUN = "run folder"  # modalsurv train
GRID = "grid folder"  # modalsurv experiment
STORE = "feature store"  # modalsurv extract
EXPORT = "exported model"  # modalsurv export-model
CASE = "case input"  # modalsurv case-input

#: the command that writes each kind, for the error message
WRITER = {RUN: "modalsurv train", GRID: "modalsurv experiment", STORE: "modalsurv extract",
          EXPORT: "modalsurv export-model", CASE: "modalsurv case-input"}  # fmt: skip


def _is_store_file(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file that a FeatureStore wrote (its format attribute)."""
    import h5py

    from modalsurv.io.store_format import FORMAT

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:  # not HDF5, or unreadable: not ours to claim
        return False


def folder_kind(path: str | Path) -> str | None:
    """The kind of modalsurv output in ``path`` (``RUN``, ``GRID``, ``STORE``, ``EXPORT``,
    ``CASE``), or None when it holds none (absent, empty, a file, or other files only).

    Markers: a grid has ``grid.yaml`` (or ``trials/`` with ``results.csv``); a feature
    store has ``<modality>.h5`` files of the store's format; a run has ``metrics.json``,
    ``checkpoints/`` or ``predictions.csv``; an exported model has ``config.yaml`` and
    ``models/`` without them; a case input has ``inputs.json`` or ``images/`` beside JSON
    files only."""
    path = Path(path)
    if not path.is_dir():
        return None
    names = {p.name: p for p in path.iterdir()}
    if not names:
        return None
    if "grid.yaml" in names or ("trials" in names and "results.csv" in names):
        return GRID
    if any(n.endswith(".h5") and _is_store_file(p) for n, p in names.items()):
        return STORE
    if {"metrics.json", "checkpoints", "predictions.csv"} & names.keys():
        return RUN
    if "config.yaml" in names and (path / "models").is_dir():
        return EXPORT
    only_case_files = all((p.is_file() and p.suffix == ".json") or (p.is_dir() and n == "images")
                          for n, p in names.items())  # fmt: skip
    if only_case_files and ("inputs.json" in names or "images" in names):
        return CASE
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def refuse_other_kind(path: str | Path, expected: str, option: str = "--out") -> None:
    """A ConfigError when ``path`` holds modalsurv output of a kind other than ``expected``
    (a command may add to its own kind: resume a run, extend a store), or a file (the
    command would fail only when it first writes there, after reading the data)."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder: give the folder to write"
                          f" ({_a(expected)}, new or of that kind)")  # fmt: skip
    kind = folder_kind(path)
    if kind is not None and kind != expected:
        raise ConfigError(f"{option} {path} holds {_a(kind)} (written by `{WRITER[kind]}`), not"
                          f" {_a(expected)}: writing there would mix the two; choose another"
                          f" {option}")  # fmt: skip
