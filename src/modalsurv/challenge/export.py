"""Package a trained run folder as the model a challenge container mounts at
``/opt/ml/model``: only what answering needs, and the encoder weights it names.

Why a separate step: a run folder also holds fold checkpoints, out-of-fold predictions
and reports (large, not needed to answer), while the encoder weights live elsewhere
(``modalsurv extract --tile-weights ...``). The export copies ``config.yaml``,
``models/repeat_0/``, ``extraction.json`` and ``data.json``, plus every weight file the
extraction record names into ``weights/`` (checksums verified), then loads the result as
the challenge command would, so a broken export fails here and not on the platform.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from modalsurv.challenge.model import ChallengeModel
from modalsurv.config import load_config
from modalsurv.errors import ConfigError, WeightsError
from modalsurv.features.encoders import find_weights, sha256_file

KEEP = ("config.yaml", "extraction.json", "data.json")


def export_model(run: str | Path, out: str | Path, task: str | None = None,
                 weight_folders: Sequence[str | Path] = ()) -> Path:  # fmt: skip
    """Write the model folder (or, for ``out`` ending in ``.tar.gz``, a tarball of it)."""
    run, out = Path(run), Path(out)
    config = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    if task is None:
        if config is None or config.data.source != "chimera":
            raise ConfigError("--task is needed: the run was not trained on a CHIMERA folder")
        task = config.data.name or "task1"
    source = ChallengeModel.load(run, task, weight_folders)  # refuses a run that cannot answer
    tarball = out.name.endswith(".tar.gz")
    folder = out.with_name(out.name[: -len(".tar.gz")] + ".tmp") if tarball else out
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty; choose a new --out")
    folder.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (run / name).is_file():
            shutil.copy2(run / name, folder / name)
    shutil.copytree(run / "models" / "repeat_0", folder / "models" / "repeat_0")
    record = source.record or {}
    folders = [Path(f) for f in weight_folders] + [run / "weights"]
    for key in ("tile_encoder", "slide_encoder", "volume_encoder"):
        entry = record.get(key) or {}
        if not entry.get("weights_name"):
            continue
        path = find_weights(entry, folders)
        assert path is not None
        if path.is_file() and entry.get("checksum") and sha256_file(path) != entry["checksum"]:
            raise WeightsError(f"weights of {entry.get('name')!r} do not match the extraction"
                               " record's checksum", path=path, field="weights")  # fmt: skip
        dest = folder / "weights" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest)
        else:
            shutil.copy2(path, dest)
    ChallengeModel.load(folder, task).encoders([folder / "weights"])  # loads as it will run
    if not tarball:
        return folder
    with tarfile.open(out.with_name(out.name + ".part"), "w:gz") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(folder)), recursive=False)
    out.with_name(out.name + ".part").replace(out)
    shutil.rmtree(folder)
    return out
