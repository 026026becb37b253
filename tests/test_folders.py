"""folder_kind tells each command's output apart from its files; refuse_other_kind stops a
command from writing into another command's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalsurv.errors import ConfigError
from modalsurv.folders import (
    CASE,
    EXPORT,
    GRID,
    RUN,
    STORE,
    folder_kind,
    refuse_other_kind,
)
from modalsurv.io.store import FeatureStore


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}", encoding="utf-8")
    return folder


def test_nothing_of_ours_has_no_kind(tmp_path: Path) -> None:
    assert folder_kind(tmp_path / "absent") is None
    assert folder_kind(_files(tmp_path / "empty")) is None
    assert folder_kind(_files(tmp_path / "notes", "notes.txt", "config.yaml")) is None
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert folder_kind(tmp_path / "file") is None
    # an HDF5 file some other tool wrote is not a feature store
    import h5py

    with h5py.File(_files(tmp_path / "h5") / "x.h5", "w") as f:
        f.attrs["format"] = "someone.else"
    assert folder_kind(tmp_path / "h5") is None
    (tmp_path / "h5" / "broken.h5").write_bytes(b"not hdf5")
    assert folder_kind(tmp_path / "h5") is None


@pytest.mark.parametrize(("names", "kind"), [
    (("config.yaml", "checkpoints/"), RUN),  # a run that stopped before its first fold
    (("config.yaml", "metrics.json", "predictions.csv", "models/repeat_0/"), RUN),
    (("grid.yaml", "trials/"), GRID),
    (("results.csv", "trials/"), GRID),
    (("config.yaml", "models/repeat_0/", "extraction.json", "data.json"), EXPORT),
    (("inputs.json", "clinical-data.json", "images/"), CASE),
    (("images/x/",), CASE),
])  # fmt: skip
def test_each_kind_by_its_files(tmp_path: Path, names: tuple[str, ...], kind: str) -> None:
    assert folder_kind(_files(tmp_path / "f", *names)) == kind


def test_a_store_is_told_by_its_files_format(tmp_path: Path) -> None:
    FeatureStore(tmp_path / "store").write("rna", "P1", np.zeros(3, np.float32),
                                           encoder="test")  # fmt: skip
    assert folder_kind(tmp_path / "store") == STORE


def test_refuse_other_kind_names_both_kinds_and_the_writer(tmp_path: Path) -> None:
    grid = _files(tmp_path / "g", "grid.yaml")
    refuse_other_kind(grid, GRID)  # its own kind: resumed or extended
    refuse_other_kind(tmp_path / "new", RUN)  # absent: fine
    with pytest.raises(ConfigError, match=r"--out .* holds a grid folder .*modalsurv experiment"
                       r".*not a run folder"):  # fmt: skip
        refuse_other_kind(grid, RUN)
    with pytest.raises(ConfigError, match="--model"):
        refuse_other_kind(grid, STORE, option="--model")


def test_refuse_other_kind_refuses_a_file_where_a_folder_is_written(tmp_path: Path) -> None:
    """A file given as a run folder failed only at the first write, after the data were
    read, with an OSError ('[Errno 17] File exists', exit 1)."""
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--out .*notes.txt is a file, not a folder"):
        refuse_other_kind(tmp_path / "notes.txt", RUN)


def test_unit_folder_takes_only_markers_where_its_units_lie(tmp_path: Path) -> None:
    """With its units' layout given, a UnitFolder neither counts nor deletes (unfinish_all,
    a grid's --no-resume) a file of its marker's name among a user's files below its root;
    without it, any depth as before."""
    from modalsurv.resume import UnitFolder

    _files(tmp_path, "trials/a/summary.json", "notes/summary.json", "trials/a/x/summary.json")
    units = UnitFolder(tmp_path, "summary.json", "cohort.json", units="trials/*")
    assert units.markers() == [tmp_path / "trials" / "a" / "summary.json"]
    assert units.any_finished()
    units.unfinish_all()
    assert not units.any_finished()
    assert (tmp_path / "notes" / "summary.json").is_file()
    assert (tmp_path / "trials" / "a" / "x" / "summary.json").is_file()
    anywhere = UnitFolder(tmp_path, "summary.json", "cohort.json")
    assert len(anywhere.markers()) == 2 and anywhere.any_finished()
