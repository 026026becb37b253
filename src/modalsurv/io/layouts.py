"""The names of cohort layouts on disk (``--layout``, the ``--data`` spec kinds): the one
list, so scan, extract and the data sources dispatch on the same names."""

from __future__ import annotations

from modalsurv.errors import ConfigError

CHIMERA_LAYOUTS: dict[str, int] = {"chimera-task1": 1, "chimera-task3": 3}  # name → task
FILE_LAYOUTS: tuple[str, ...] = (*CHIMERA_LAYOUTS, "manifest")  # what scan and extract read
#: whole-slide image files by extension (what a CHIMERA case folder's unread slides are
#: recognised by)
SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".bif")


def check_layout(name: str) -> str:
    """``name`` when it is a known file layout, else a ConfigError naming ``--layout``."""
    if name not in FILE_LAYOUTS:
        raise ConfigError(f"--layout: unknown layout {name!r}; expected {', '.join(FILE_LAYOUTS)}")
    return name


def chimera_task(name: str) -> int | None:
    """The CHIMERA task of a layout name (1 or 3), None for other layouts."""
    return CHIMERA_LAYOUTS.get(name)
