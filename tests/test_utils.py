import numpy as np
import pytest
import torch

from modalsurv.errors import DataError, Problem
from modalsurv.utils import atomic_path, atomic_write_text, set_seed


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_set_seed_controls_numpy_and_torch():
    g1 = set_seed(3)
    a = (g1.normal(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    g2 = set_seed(3)
    b = (g2.normal(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b


def test_error_message_names_where():
    e = DataError("expected a number, found 'abc'", path="x.json", patient="P1", field="age")
    assert str(e) == "file x.json; patient 'P1'; field 'age': expected a number, found 'abc'"
    p = Problem("warning", "label leak column ignored", "c.json", "P2", "BCR_PSA")
    assert str(p).startswith("[warning] file c.json; patient 'P2'; field 'BCR_PSA'")
