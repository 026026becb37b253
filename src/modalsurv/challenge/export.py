"""Package a trained run folder as the model a challenge container mounts at
``/opt/ml/model``: only what answering needs, and the encoder weights it names.

Why a separate step: a run folder also holds fold checkpoints, out-of-fold predictions
and reports (large, not needed to answer), while the encoder weights live elsewhere
(``modalsurv extract --tile-weights ...``). The export copies ``config.yaml``,
``models/repeat_0/``, ``extraction.json`` and ``data.json``, plus every weight file the
extraction record names into ``weights/`` (checksums verified), then loads the result as
the challenge command would, so a broken export fails here and not on the platform. It
is built in a hidden folder beside ``--out`` and renamed into place only then: a failed
export leaves nothing behind, and its rerun is not refused.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from modalsurv.challenge.model import ChallengeModel
from modalsurv.challenge.sockets import task_name
from modalsurv.config import load_config
from modalsurv.errors import ConfigError, WeightsError
from modalsurv.features.encoders import find_weights, sha256_file
from modalsurv.utils import staged_folder

KEEP = ("config.yaml", "extraction.json", "data.json")


def export_model(run: str | Path, out: str | Path, task: str | None = None,
                 weight_folders: Sequence[str | Path] = ()) -> Path:  # fmt: skip
    """Write the model folder (or, for ``out`` ending in ``.tar.gz``, a tarball of it)."""
    run, out = Path(run), Path(out)
    if out.resolve().is_relative_to(run.resolve()):  # a model inside what it was made from
        raise ConfigError(f"--out {out} lies inside the run folder {run}; export it beside"
                          " the run (e.g. a sibling folder), not into it")  # fmt: skip
    config = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    if task is None:
        if config is None or config.data.source != "chimera":
            raise ConfigError("--task is needed: the run was not trained on a CHIMERA folder")
        task = config.data.name or "task1"
    task = task_name(task)  # the spellings `modalsurv challenge` takes (1, task1, TASK-1)
    source = ChallengeModel.load(run, task, weight_folders)  # refuses a run that cannot answer
    tarball = out.name.endswith(".tar.gz")
    if out.exists() and (tarball or not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists{'' if tarball else ' and is not empty'}; choose a new"
                          " --out")  # fmt: skip
    # built beside ``out`` and renamed into place only once it loads as it will run: a
    # failure (weights missing, checksum wrong) leaves nothing that looks like a model
    with staged_folder(out) as staging:
        _fill(staging, run, source.record or {}, [*map(Path, weight_folders), run / "weights"],
              source.modalities)  # fmt: skip
        ChallengeModel.load(staging, task).encoders([staging / "weights"])
        if not tarball:
            staging.replace(out)  # ``out`` is absent or an empty folder
            return out
        part = out.with_name(out.name + ".part")
        try:
            with tarfile.open(part, "w:gz") as tar:
                for p in sorted(staging.rglob("*")):
                    tar.add(p, arcname=str(p.relative_to(staging)), recursive=False)
            part.replace(out)
        finally:
            part.unlink(missing_ok=True)  # a failed write or rename leaves nothing behind
        return out


# the encoders each image modality needs at inference (``ChallengeModel.encoders``)
_ENCODERS = {"tile_encoder": ("wsi", "slide"), "slide_encoder": ("wsi", "slide"),
             "volume_encoder": ("mri",)}  # fmt: skip


def _fill(folder: Path, run: Path, record: dict, weight_folders: list[Path],
          modalities: Sequence[str] | None = None) -> None:  # fmt: skip
    """Copy what answering needs from ``run`` and the weight files ``record`` names (found
    in ``weight_folders``, checksums verified) into ``folder``: only those of encoders the
    model's ``modalities`` use (all when None), since a store's record names every encoder
    it extracted with, and a clinical + RNA model must not need (nor carry) a tile
    encoder's gigabytes."""
    for name in KEEP:
        if (run / name).is_file():
            shutil.copy2(run / name, folder / name)
    shutil.copytree(run / "models" / "repeat_0", folder / "models" / "repeat_0")
    for key, users in _ENCODERS.items():
        entry = record.get(key) or {}
        if modalities is not None and not set(users) & set(modalities):
            continue
        if not entry.get("weights_name"):
            continue
        path = find_weights(entry, weight_folders)
        assert path is not None
        if path.is_file() and entry.get("checksum") and sha256_file(path) != entry["checksum"]:
            raise WeightsError(f"weights of {entry.get('name')!r} do not match the extraction"
                               " record's checksum", path=path, field="weights")  # fmt: skip
        dest = folder / "weights" / path.name
        if dest.exists():
            if path.is_file() and dest.is_file() and sha256_file(dest) == sha256_file(path):
                continue  # one file serving two encoders
            # presets share file names (pytorch_model.bin): each keeps its own file, and
            # find_weights picks among same-named files by the recorded checksum
            dest = folder / "weights" / key / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest)
        else:
            shutil.copy2(path, dest)
