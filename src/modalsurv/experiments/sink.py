"""Progress events from Ray tasks to the driver: a tiny actor the tasks push events to
(fire and forget) and the driver drains while it waits, so the command line's progress
shows what runs on the workers. Kept in its own module, importing nothing, because the
actor's process imports the module that defines it."""

from __future__ import annotations

from typing import Any


class ProgressSink:
    """Event buffer held by one Ray actor (``ray.remote(num_cpus=0)(ProgressSink)``)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def push(self, event: str, info: dict[str, Any]) -> None:
        self.events.append((event, info))

    def flush(self) -> bool:
        """A task calls this (and waits) before it returns: calls from one caller run in
        order, so every event it pushed is buffered by then."""
        return True

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """The buffered events, oldest first; the buffer is emptied."""
        out, self.events = self.events, []
        return out
