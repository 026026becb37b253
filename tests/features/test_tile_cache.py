"""The image cache's entries (features.tile_cache): atomic per patient, readable only
when complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalsurv.features import tile_cache
from modalsurv.features.tile_cache import ImageCache


def _tiles(value: int, n: int = 4) -> np.ndarray:
    return np.full((n, 8, 8, 3), value, np.uint8)


@pytest.mark.parametrize("crash_at", ["sidecar", "coords"])
def test_an_interrupted_rewrite_does_not_leave_the_old_entry_vouching_for_new_tiles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str) -> None:  # fmt: skip
    """Was: rewriting a patient (its slide re-extracted) replaced the arrays one by one and
    the sidecar last, so a crash in between left the old sidecar (old fingerprint, which
    the extraction's resume and training trust) over the new tiles."""
    cache = ImageCache(tmp_path / "cache")
    coords = np.zeros((4, 2), np.int64)
    cache.write_tiles("p1", _tiles(1), coords, fingerprint="old-slide")
    assert cache.fingerprint("wsi", "p1") == "old-slide"

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    if crash_at == "sidecar":
        monkeypatch.setattr(tile_cache, "atomic_write_text", crash)
    else:  # the tiles are replaced, the coordinates are not
        real, calls = tile_cache._save, []

        def save(path: Path, arr: np.ndarray) -> None:
            calls.append(path)
            if len(calls) == 2:
                crash()
            real(path, arr)

        monkeypatch.setattr(tile_cache, "_save", save)
    with pytest.raises(KeyboardInterrupt):
        cache.write_tiles("p1", _tiles(2), coords + 1, fingerprint="new-slide")
    monkeypatch.undo()
    assert not cache.has("wsi", "p1") and cache.fingerprint("wsi", "p1") is None
    assert "p1" not in cache.patients("wsi")
    cache.write_tiles("p1", _tiles(2), coords + 1, fingerprint="new-slide")  # resumed
    assert cache.fingerprint("wsi", "p1") == "new-slide"
    np.testing.assert_array_equal(cache.tiles("p1"), _tiles(2))
