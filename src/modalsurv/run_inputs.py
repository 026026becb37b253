"""A new cohort's inputs made the way the run's were: ``evaluate`` and ``predict``.

Why: a fold ensemble reads features by position and width. A CHIMERA folder read with
other loader settings than at training (another tile cap, another task-3 endpoint), or
whose image features come from elsewhere than the run's (the organisers' tile features
where the run used ``modalsurv extract``'s, another encoder or tile size) gives numbers
of the right shape and the wrong meaning, silently. So:

* :func:`with_run_params`: a CHIMERA spec given on the command line takes the run's own
  ``data.params`` (``max_tiles``, ``slide_policy``, ``seed``, ``event``) for every key it
  does not set itself;
* :func:`check_same_extraction`: each image modality the model uses must come with an
  extraction record (the feature store's ``extraction.json``) that matches the run's in
  what shaped the features (encoder and its weights' checksum, tile settings, MRI
  settings); otherwise a FeatureError names the modality, both sides and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modalsurv.config import DataConfig, RunConfig
from modalsurv.errors import ConfigError, FeatureError
from modalsurv.io.store import EXTRACTION_RECORD, read_extraction_record
from modalsurv.utils import read_yaml_mapping

#: CHIMERA loader settings that shape the features a model reads
SHAPING_PARAMS = ("max_tiles", "slide_policy", "seed", "event")
#: per image modality: the parts of an extraction record that shape its features
#: (the tile seed only picks which tiles; a cohort's own seed is its business)
TILE_KEYS = ("mpp", "tile_size", "max_tiles_per_slide", "min_tissue", "sampling", "mpp_override",
             "revision")
RECORD_PARTS = {"wsi": ("tile_encoder",), "slide": ("tile_encoder", "slide_encoder"),
                "mri": ("volume_encoder", "mri")}  # fmt: skip


def run_config(run: str | Path) -> RunConfig | None:
    """The run's ``config.yaml`` (None when it cannot be read: nothing to inherit or
    narrow then).

    Validated as a saved model's config is, without ``config.check_data_params``: a run
    whose ``data.params`` a later loader no longer takes as they are (a key renamed) was
    read as None, so its ``max_tiles`` or endpoint were silently not inherited, though
    its model loads; the params inherited are checked when the new cohort is loaded."""
    path = Path(run) / "config.yaml"
    try:
        return RunConfig.model_validate(read_yaml_mapping(path, "config file"))
    except (ConfigError, ValidationError, OSError):
        return None


def with_run_params(run: str | Path, data: DataConfig) -> DataConfig:
    """``data`` with the run's CHIMERA loader settings for each key it leaves unset, when
    both read a CHIMERA folder of the same task (a spec string carries no settings)."""
    config = run_config(run)
    trained = None if config is None else config.data
    if trained is None or data.source != "chimera" or trained.source != "chimera":
        return data
    if (trained.name or "task1") != (data.name or "task1"):
        return data
    inherited = {k: trained.params[k] for k in SHAPING_PARAMS
                 if k in trained.params and k not in data.params}  # fmt: skip
    if not inherited:
        return data
    return data.model_copy(update={"params": {**inherited, **data.params}})


def _fingerprint(record: dict[str, Any], modality: str) -> dict[str, Any]:
    """What shaped ``modality``'s features in an extraction record (encoders by name and
    checksum, never by local path: the same weights elsewhere are the same features)."""
    out: dict[str, Any] = {"encoder": (record.get("modalities") or {}).get(modality)}
    for part in RECORD_PARTS.get(modality, ()):
        value = record.get(part)
        if isinstance(value, dict) and part.endswith("_encoder"):
            value = {k: value.get(k) for k in ("name", "dim", "checksum", "kwargs")}
        out[part] = value
    if modality in ("wsi", "slide"):
        tiles = record.get("tiles") or {}
        out["tiles"] = {k: tiles.get(k) for k in TILE_KEYS}
    return out


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {y!r} here, {x!r} in the run")
    return out


def check_same_extraction(run: str | Path, cohort_record: dict[str, Any] | None,
                          modalities: list[str], present: set[str]) -> None:  # fmt: skip
    """Refuse a cohort whose image features were not made as the run's were.

    ``cohort_record``: the extraction record of the cohort's feature store (None: its image
    features come from its own files, e.g. the organisers' tile features);
    ``modalities``: those the model uses; ``present``: those the cohort has for at least
    one patient. A run without a record (trained on precomputed features) is not checked:
    there is nothing to compare with."""
    run_record = read_extraction_record(run)
    if run_record is None:
        return
    extracted = set(run_record.get("modalities") or {}) & set(RECORD_PARTS)  # images only
    for m in [m for m in modalities if m in extracted and m in present]:
        made = (cohort_record or {}).get("modalities") or {}
        fix = (f"pass --features with a store that `modalsurv extract` made with the run's"
               f" settings ({Path(run) / EXTRACTION_RECORD})")
        if m not in made:
            raise FeatureError(f"modality {m!r}: the model was trained on features that"
                               f" `modalsurv extract` made ({run_record['modalities'][m]});"
                               " this cohort's come from elsewhere (its own files, no"
                               f" extraction record), so they would be read as if they were"
                               f" the same kind; {fix}", field=m)  # fmt: skip
        diff = _differences(_fingerprint(run_record, m), _fingerprint(cohort_record or {}, m))
        if diff:
            raise FeatureError(f"modality {m!r}: this cohort's features were made otherwise"
                               f" than the run's ({'; '.join(diff)}); {fix}", field=m)


def check_loaded(run: str | Path, loaded: Any) -> None:
    """:func:`check_same_extraction` for a cohort ``load_data`` read (``LoadedData``): the
    modalities the model uses are the run's ``model.modalities`` (all when unset)."""
    config = run_config(run)
    chosen = None if config is None else config.model.modalities
    cohort = loaded.cohort
    present = {m for m in cohort.modalities if cohort.present[m].any()}
    check_same_extraction(run, loaded.extraction, list(chosen or cohort.modalities), present)
