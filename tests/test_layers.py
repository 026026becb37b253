"""The layering of docs/ARCHITECTURE.md holds for every import in the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "modalsurv"


def _rules() -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Layer of every top-level unit, and the allowed upward imports, from the doc."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("layers (lowest first)")[1].split("```")[0]
    layers, exceptions, in_exceptions = {}, set(), False
    for line in block.strip().splitlines():
        if line.startswith("exceptions"):
            in_exceptions = True
            continue
        if in_exceptions:
            m = re.match(r"(\S+) -> (\S+):", line)
            assert m, line
            exceptions.add((m.group(1), m.group(2)))
            continue
        rank, *units = line.split()
        for u in units:
            layers[u] = int(rank)
    return layers, exceptions


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported top-level unit, line) for every modalsurv import, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "modalsurv":
                continue
            if len(parts) > 1:
                out.append((parts[1], node.lineno))
            else:  # from modalsurv import x
                out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "modalsurv" and len(parts) > 1:
                    out.append((parts[1], node.lineno))
    return out


def test_every_unit_has_a_layer():
    layers, _ = _rules()
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(layers) == set(), "add these to docs/ARCHITECTURE.md"


def test_no_lower_layer_imports_an_upper_one():
    layers, exceptions = _rules()
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        for target, line in _imports(path):
            if target == unit or target not in layers:
                continue
            rel = path.relative_to(PACKAGE)
            if layers[target] > layers[unit] and (unit, target) not in exceptions:
                bad.append(f"{rel}:{line} ({unit}, layer {layers[unit]}) imports {target}"
                           f" (layer {layers[target]})")
            if layers[target] == layers[unit]:
                bad.append(f"{rel}:{line}: {unit} and {target} share layer {layers[unit]};"
                           " neither may import the other")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The check itself can fail: an io module importing train is reported."""
    layers, exceptions = _rules()
    assert layers["io"] < layers["train"] and ("io", "train") not in exceptions
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from modalsurv.train.cv import cross_validate\n")
    assert _imports(fake) == [("train", 2)]
