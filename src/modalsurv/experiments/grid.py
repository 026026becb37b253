"""Declarative experiment grids: one base RunConfig crossed with the axes ModalSurv studies.

Axes (each optional; a missing axis takes its single value from ``base``):

- ``modalities``: modality sets for ablations, either listed (``[[clinical], [clinical,
  wsi]]``) or generated (``{generate: [all, single, leave_one_out], from: [clinical, wsi,
  rna], always: [clinical]}``, see :func:`modality_sets`). Each set becomes
  ``model.modalities``; the cohort itself is never cut, so baselines still see clinical.
- ``fusion``: names from the fusion registry (``concat``, ``cross_attention_gated``, ...).
- ``data_fraction``: share of each outer fold's *training* part that is used (stratified on
  event; ``cv.train_fraction``). The test folds do not depend on it, so a scaling curve
  compares every fraction on the very same held-out patients.
- ``seed``: ``RunConfig.seed``; it moves both the fold split and the network initialisation,
  so the spread over seeds includes split variance. The data itself stays fixed.
- ``encoder``: frozen vs fine-tuned encoders. The built-in labels ``frozen``,
  ``finetune_last``, ``finetune_all`` and ``lora`` set ``finetune.mode`` (``frozen``;
  ``last_k`` for the ``wsi`` tile encoder or ``last_stage`` for the ``mri`` one; ``all``;
  ``lora``) for the encoder ``base.finetune.encoder`` names, trained inside ModalSurv on the
  same folds (``train.finetune``; the image cache must exist). A modality set without that
  modality keeps the base's setting. Any other label is defined under ``encoders`` as a
  renaming ``{logical modality: cohort modality}``, e.g. ``finetuned: {wsi: wsi_finetuned}``:
  the grid only chooses which FeatureStore modality feeds the model under the logical
  name's slot; the cohort must hold both.

``expand()`` gives one :class:`Trial` per combination, with a resolved RunConfig and a
stable id (a hash of that resolved config), so an interrupted grid resumes by id and two
combinations that resolve to the same run (e.g. an encoder label on a set without the
renamed modality) are run once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modalsurv.config import (
    RunConfig,
    TrainConfig,
    check_data_params,
    format_validation_error,
)
from modalsurv.errors import ConfigError
from modalsurv.utils import read_yaml_mapping

GENERATORS = ("all", "single", "leave_one_out", "pairs")
DEFAULT_ENCODER = "default"
# built-in encoder labels → finetune.mode (by finetune.encoder where the modes differ)
FINETUNE_LABELS: dict[str, dict[str, str]] = {
    "frozen": {"wsi": "frozen", "mri": "frozen"},
    "finetune_last": {"wsi": "last_k", "mri": "last_stage"},
    "finetune_all": {"wsi": "all", "mri": "all"},
    "lora": {"wsi": "lora"},
}


def modality_sets(
    modalities: list[str], generate: list[str], always: list[str] | str | None = None
) -> list[list[str]]:
    """Modality sets for an ablation, in a stable order and without duplicates.

    ``all``: every modality; ``single``: each one alone; ``leave_one_out``: all but one;
    ``pairs``: every pair. ``always`` (e.g. ``[clinical]``) is added to each set first,
    so ``single`` with ``always=[clinical]`` gives clinical + each other modality.
    """
    always = [always] if isinstance(always, str) else list(always or [])  # `always: clinical`
    rest = [m for m in modalities if m not in always]
    unknown = [g for g in generate if g not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown generator(s) {unknown}; known: {list(GENERATORS)}")
    out: list[list[str]] = []
    for g in generate:
        if g == "all":
            sets = [rest]
        elif g == "single":
            sets = [[m] for m in rest]
        elif g == "leave_one_out":
            # with ``always``, leaving out the only other modality is ``always`` alone (the
            # clinical-only arm); without it, the empty set is skipped below
            sets = [[m for m in rest if m != drop] for drop in rest]
        else:
            sets = [list(p) for p in itertools.combinations(rest, 2)]
        for s in sets:
            full = always + s
            if full and full not in out:
                out.append(full)
    return out


def _no_duplicates(values: list[Any], key: str) -> None:
    seen: list[Any] = []
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"{key}[{i}] = {v!r} repeats {key}[{seen.index(v)}]")
        seen.append(v)


class ExperimentGrid(BaseModel):
    """A base RunConfig and the axes to cross (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "grid"
    description: str = ""
    base: RunConfig = Field(default_factory=RunConfig)
    modalities: list[list[str]] | None = None
    fusion: list[str] | None = None
    data_fraction: list[float] | None = None
    seed: list[int] | None = None
    encoder: list[str] | None = None
    encoders: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("modalities", mode="before")
    @classmethod
    def _generate_sets(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        extra = set(v) - {"generate", "from", "always"}
        if extra:
            raise ValueError(f"unknown key(s) {sorted(extra)}; expected generate, from, always")
        if not isinstance(v.get("from"), list) or not v["from"]:
            raise ValueError("'from' must list the modalities to build sets of")
        gen = v.get("generate", ["all"])
        gen = [gen] if isinstance(gen, str) else gen
        return modality_sets(list(v["from"]), list(gen), v.get("always"))

    @field_validator("modalities")
    @classmethod
    def _check_sets(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one modality set")
        for i, s in enumerate(v):
            if not s:
                raise ValueError(f"modalities[{i}] is empty")
            _no_duplicates(s, f"modalities[{i}]")
        _no_duplicates([sorted(s) for s in v], "modalities")
        return v

    @field_validator("fusion")
    @classmethod
    def _check_fusion(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from modalsurv.nn.fusion import FUSIONS

        if not v:
            raise ValueError("must list at least one fusion")
        for i, name in enumerate(v):
            if name not in FUSIONS:
                raise ValueError(f"fusion[{i}] = {name!r} is unknown; known: {sorted(FUSIONS)}")
        _no_duplicates(v, "fusion")
        return v

    @field_validator("data_fraction")
    @classmethod
    def _check_fraction(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one fraction")
        for i, f in enumerate(v):
            if not 0.0 < f <= 1.0:
                raise ValueError(f"data_fraction[{i}] = {f} must be in (0, 1]")
        _no_duplicates(v, "data_fraction")
        return v

    @field_validator("seed", "encoder")
    @classmethod
    def _check_list(cls, v: list[Any] | None, info: Any) -> list[Any] | None:
        if v is not None:
            if not v:
                raise ValueError("must list at least one value")
            _no_duplicates(v, info.field_name)
        return v

    @model_validator(mode="after")
    def _check_encoders(self) -> ExperimentGrid:
        for i, label in enumerate(self.encoder or []):
            if label != DEFAULT_ENCODER and label not in self.encoders:
                if label not in FINETUNE_LABELS:
                    raise ValueError(
                        f"encoder[{i}] = {label!r} is not defined under 'encoders' "
                        f"(defined: {sorted(self.encoders)}; built in: {list(FINETUNE_LABELS)})"
                    )
                target = self.base.finetune.encoder
                if target not in FINETUNE_LABELS[label]:
                    raise ValueError(f"encoder[{i}] = {label!r} does not apply to"
                                     f" base.finetune.encoder {target!r}")  # fmt: skip
                if label != "frozen" and self.base.model.stack != "none":
                    raise ValueError(f"encoder[{i}] = {label!r} fine-tunes the plain network;"
                                     " set base.model.stack: none (the stacked default"
                                     " would fine-tune once per candidate)")  # fmt: skip
            renames = self.encoders.get(label)
            if renames and self.modalities is None and self.base.model.modalities is None:
                raise ValueError(
                    f"encoder[{i}] = {label!r} renames {sorted(renames)}, which needs explicit "
                    "modality sets: set 'modalities' (or base.model.modalities)"
                )
        return self

    # ------------------------------------------------------------------ expansion
    def axes(self) -> dict[str, list[Any]]:
        """Every axis with its values (a missing axis: the base's single value)."""
        base = self.base
        mods = base.model.modalities
        return {
            "modalities": self.modalities or [mods],
            "encoder": self.encoder or [DEFAULT_ENCODER],
            "fusion": self.fusion or [base.model.fusion],
            "data_fraction": self.data_fraction or [base.cv.train_fraction],
            "seed": self.seed or [base.seed],
        }

    def expand(self) -> list[Trial]:
        """One Trial per combination (modalities × encoder × fusion × fraction × seed),
        in that nesting order; combinations resolving to the same config appear once."""
        axes = self.axes()
        trials: list[Trial] = []
        seen: set[str] = set()
        for combo in itertools.product(*axes.values()):
            settings = dict(zip(axes, combo))
            config = self._resolve(settings)
            tid = trial_id(config)
            if tid in seen:
                continue
            seen.add(tid)
            trials.append(Trial(id=tid, settings=settings, config=config))
        return trials

    def _resolve(self, s: dict[str, Any]) -> RunConfig:
        data = self.base.model_dump(mode="json")
        mods = s["modalities"]
        rename = {src: dst for src, dst in self.encoders.get(s["encoder"], {}).items()
                  if mods is not None and src in mods}  # fmt: skip
        data["model"]["modalities"] = None if mods is None else [rename.get(m, m) for m in mods]
        for key in ("clinical_modalities", "rna_modalities"):  # a renamed slot keeps its transform
            listed = data["preprocess"][key]
            listed += [dst for src, dst in rename.items() if src in listed and dst not in listed]
        label = s["encoder"]
        if label not in self.encoders and label in FINETUNE_LABELS:
            target = self.base.finetune.encoder
            if mods is None or target in mods:
                data.setdefault("finetune", {})
                data["finetune"]["mode"] = FINETUNE_LABELS[label][target]
        data["model"]["fusion"] = s["fusion"]
        data["cv"]["train_fraction"] = s["data_fraction"]
        data["seed"] = s["seed"]
        try:
            return RunConfig.model_validate(data)
        except ValidationError as err:  # a combination of axes the config cannot take
            shown = ", ".join(f"{k}={v}" for k, v in s.items())
            raise ConfigError(format_validation_error(
                err, f"experiment grid {self.name!r}", f"trial {shown}")) from None

    def check_cohort(self, modalities: list[str]) -> None:
        """Fail before any training when a trial asks for a modality the cohort lacks."""
        for t in self.expand():
            need = t.config.model.modalities or []
            missing = [m for m in need if m not in modalities]
            if missing:
                raise ConfigError(
                    f"experiment grid {self.name!r}: trial {t.label} needs modalities "
                    f"{missing} that the cohort lacks (it has {modalities}); check the "
                    "'modalities', 'encoder' and 'encoders' keys"
                )


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its settings, the resolved RunConfig, and a stable id."""

    id: str
    settings: dict[str, Any]
    config: RunConfig

    @property
    def label(self) -> str:
        """Human-readable settings, e.g. ``clinical+wsi | concat | 50% | seed 0``."""
        s = self.settings
        mods = "all" if s["modalities"] is None else "+".join(s["modalities"])
        enc = "" if s["encoder"] == DEFAULT_ENCODER else f" | {s['encoder']}"
        return f"{mods}{enc} | {s['fusion']} | {s['data_fraction']:.0%} | seed {s['seed']}"

    def row(self) -> dict[str, Any]:
        """The settings as flat table columns (modality sets joined by '+')."""
        s = dict(self.settings)
        s["modalities"] = "all" if s["modalities"] is None else "+".join(s["modalities"])
        return {"trial": self.id, **s}


def trial_id(config: RunConfig) -> str:
    """12 hex digits of the SHA-256 of the resolved config (key order does not matter).

    ``train.threads`` is hashed as its default, whatever it is: it changes only the order
    floats are summed in, so a grid resumed with another count is the same grid (its
    finished trials skipped, an interrupted trial's folds resumed with a warning, as
    ``train --resume`` does); it gave every trial another id, and the grid ran again from
    nothing. Ids of grids with the default count are unchanged."""
    data = config.model_dump(mode="json")
    data["train"]["threads"] = TrainConfig.model_fields["threads"].default
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------- loading
def parse_grid(data: dict[str, Any], source: str = "<dict>", root: Path | None = None
               ) -> ExperimentGrid:  # fmt: skip
    """Validate a mapping into an ExperimentGrid; errors name every offending key.

    ``base`` may be a mapping or the path of a RunConfig YAML (relative to ``root``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"experiment grid {source}: top level must be a mapping")
    data = dict(data)
    if isinstance(data.get("base"), str):
        path = Path(data["base"])
        path = path if path.is_absolute() or root is None else root / path
        data["base"] = read_yaml_mapping(path, f"experiment grid {source}: base: file")
    try:
        grid = ExperimentGrid.model_validate(data)
    except ValidationError as err:
        # ExperimentGrid: an unknown key says which was meant, as a run config's does
        raise ConfigError(format_validation_error(err, "experiment grid", source,
                                                  ExperimentGrid)) from None
    # the base's data.params, as a run's config file gets them checked (was: found only
    # when the first trial loaded its data, naming "<dict>")
    check_data_params(grid.base.data, f"experiment grid {source}", key="base.data")
    return grid


def load_grid(path: str | Path) -> ExperimentGrid:
    """Read an experiment grid from YAML."""
    path = Path(path)
    return parse_grid(read_yaml_mapping(path, "experiment grid"), str(path), root=path.parent)


def dump_grid(grid: ExperimentGrid) -> str:
    """The grid as YAML (base fully resolved)."""
    return yaml.safe_dump(grid.model_dump(mode="json"), sort_keys=False)
