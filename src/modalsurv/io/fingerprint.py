"""Fingerprints of a patient's source files: what stored features were computed from.

``modalsurv extract`` writes one with each patient's features (``features.extract``) and
reading a CHIMERA folder with a feature store compares it with the folder's own files
(``io.chimera.store_features``), so features of another cohort whose ids coincide are
never joined silently. Both sides build the string here, from the same list of files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from modalsurv.utils import hidden_below

NO_FILE = "-"


def file_fingerprint(path: Path | None, chunk: int = 1 << 20) -> str:
    """``name:size:hash`` of a source file, the hash over its first and last MiB: cheap on
    gigapixel slides, unchanged when a cohort folder is moved or copied, different for a
    different file that happens to carry the same patient id."""
    if path is None:
        return NO_FILE
    if path.is_dir():  # a DICOM series: its files' names and sizes
        # hidden files are no slices: a .DS_Store or ._* that Finder adds after extraction
        # turned the store's MRI features into a mismatch (clean folders: unchanged)
        sizes = {f.relative_to(path): f.stat().st_size
                 for f in sorted(path.rglob("*"))
                 if f.is_file() and not hidden_below(path, f)}  # fmt: skip
        listing = "\n".join(f"{name}:{size}" for name, size in sizes.items())
        digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
        return f"{path.name}/:{sum(sizes.values())}:{digest}"
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(chunk))
        if size > 2 * chunk:
            fh.seek(size - chunk)
            h.update(fh.read(chunk))
        elif size > chunk:
            h.update(fh.read())
    return f"{path.name}:{size}:{h.hexdigest()[:16]}"


def slide_sources(slides: Iterable[str | Path], masks: Iterable[str | Path | None]
                  ) -> list[Path | None]:  # fmt: skip
    """The files a patient's ``wsi`` / ``slide`` features come from: slides, then masks."""
    return [*(Path(s) for s in slides), *(None if m is None else Path(m) for m in masks)]


def mri_sources(sequences: Mapping[str, str | Path | None], mask: str | Path | None
                ) -> list[Path | None]:  # fmt: skip
    """The files a patient's ``mri`` features come from: sequences by name, then the mask."""
    files = [sequences[q] for q in sorted(sequences)] + [mask]
    return [None if f is None else Path(f) for f in files]


def sources_fingerprint(files: Iterable[Path | None]) -> str:
    """One string for a group of source files (``|``-joined file fingerprints); raises
    OSError when a listed file cannot be read."""
    return "|".join(file_fingerprint(p) for p in files)


def has_files(fingerprint: str) -> bool:
    """Whether a fingerprint names any file at all (a patient without a source has none)."""
    return any(part != NO_FILE for part in fingerprint.split("|"))
