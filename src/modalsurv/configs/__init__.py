"""Example configs shipped with the package: run configs (``NAME.yaml``) and experiment
grids (``experiments/NAME.yaml``); ``modalsurv init-config NAME --out FILE`` copies one."""

from __future__ import annotations

from importlib import resources

from modalsurv.errors import ConfigError


def available() -> list[str]:
    """Names of the shipped configs (``synthetic``, ``experiments/ablation``, ...)."""
    root = resources.files("modalsurv.configs")
    names = [p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml")]
    names += [f"experiments/{p.name[:-5]}" for p in root.joinpath("experiments").iterdir()
              if p.name.endswith(".yaml")]  # fmt: skip
    return sorted(names)


def text(name: str) -> str:
    """The YAML text of a shipped config."""
    if name not in available():
        raise ConfigError(f"no shipped config {name!r}; available: {available()}")
    return resources.files("modalsurv.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
