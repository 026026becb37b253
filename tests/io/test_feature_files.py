"""Other tools' embedding files: what is refused, naming file and patient."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from modalsurv.errors import FeatureError
from modalsurv.io.feature_files import load_feature_file


def _h5(path, features):
    with h5py.File(path, "w") as f:
        f["features"] = features
    return path


@pytest.mark.parametrize("name", ["text.h5", "complex.h5", "complex.npy", "complex.pt"])
def test_values_that_are_not_real_numbers_are_refused(tmp_path, name):
    """An .h5 of text passed unchecked (a raw ValueError later, in the float32 cast), and
    complex values lost their imaginary part to that cast without a word."""
    path = tmp_path / name
    if name == "text.h5":
        _h5(path, np.array([[b"a", b"b"]]))
    elif name.endswith(".h5"):
        _h5(path, np.ones((3, 4), dtype=complex))
    elif name.endswith(".npy"):
        np.save(path, np.ones((3, 4), dtype=complex))
    else:
        torch.save(torch.ones(3, 4, dtype=torch.cfloat), path)
    with pytest.raises(FeatureError, match="real numbers") as e:
        load_feature_file(path, "P1")
    assert (e.value.path, e.value.patient, e.value.field) == (str(path), "P1", "features")


def test_no_feature_dimension_and_an_empty_file_are_named(tmp_path):
    """A (0,) vector was read as a modality of width 0; a 0-byte .pt said only
    'cannot read feature file: ' (torch's message is empty)."""
    torch.save(torch.zeros(0), tmp_path / "w.pt")
    with pytest.raises(FeatureError, match="D = 0"):
        load_feature_file(tmp_path / "w.pt", "P1")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(FeatureError, match="empty file") as e:
        load_feature_file(tmp_path / "e.pt", "P1")
    assert e.value.path == str(tmp_path / "e.pt") and e.value.patient == "P1"
    x, _ = load_feature_file(_h5(tmp_path / "i.h5", np.arange(12).reshape(1, 3, 4)), "P1")
    assert x.shape == (3, 4)  # integers are numbers: read (cast to float32 by the readers)
