"""run_inputs: a new cohort is read with the run's loader settings, and image features
made otherwise than the run's are refused by modality, naming what differs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from modalsurv.config import dump_config, parse_config
from modalsurv.data.sources import parse_data_spec
from modalsurv.errors import FeatureError
from modalsurv.run_inputs import check_same_extraction, with_run_params

RECORD = {
    "format": 1, "layout": "chimera-task1",
    "modalities": {"wsi": "timm:resnet10t", "slide": "mean[timm:resnet10t]", "rna": "raw:genes",
                   "mri": "medicalnet_resnet10"},
    "tiles": {"mpp": 0.5, "tile_size": 64, "max_tiles_per_slide": 4, "min_tissue": 0.25,
              "sampling": "uniform", "seed": 0, "mpp_override": None},
    "tile_encoder": {"spec": "timm:resnet10t", "name": "timm:resnet10t", "dim": 512,
                     "checksum": "random-init:7ffcd84e71d6d34e", "weights": None, "kwargs": {}},
    "slide_encoder": {"spec": "mean", "name": "mean", "dim": 512, "checksum": "no-weights"},
    "volume_encoder": {"name": "medicalnet_resnet10", "dim": 512, "checksum": "abc",
                       "weights": "/train/machine/resnet_10.pth"},
    "mri": {"size": [8, 16, 16], "orientation": "RAS"},
}  # fmt: skip


def _run(tmp_path: Path, data: dict, record: dict | None = RECORD) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(parse_config({"data": data})))
    if record is not None:
        (run / "extraction.json").write_text(json.dumps(record))
    return run


def test_a_chimera_spec_takes_the_runs_loader_settings_it_does_not_set(tmp_path):
    run = _run(tmp_path, {"source": "chimera", "name": "task1", "path": "/data/train",
                          "params": {"max_tiles": 6, "event": None, "slide_policy": "mean"}})
    got = with_run_params(run, parse_data_spec("chimera-task1:/data/held"))
    assert got.params == {"max_tiles": 6, "event": None, "slide_policy": "mean"}
    assert got.path == "/data/held"
    mine = parse_data_spec("chimera-task1:/data/held").model_copy(
        update={"params": {"max_tiles": 100}})
    assert with_run_params(run, mine).params == {"max_tiles": 100, "event": None,
                                                 "slide_policy": "mean"}  # fmt: skip
    # another task, another source: nothing to inherit
    assert with_run_params(run, parse_data_spec("chimera-task3:/d")).params == {}
    assert with_run_params(run, parse_data_spec("synthetic:30")).params == {"n": 30,
                                                                            "external": False}


def test_features_from_elsewhere_or_made_otherwise_are_refused_by_modality(tmp_path):
    run = _run(tmp_path, {"source": "synthetic"})
    images = ["clinical", "wsi", "slide", "rna", "mri"]
    every = set(images)
    # the same settings: another tile seed and another local weights path are the same
    same = copy.deepcopy(RECORD)
    same["tiles"]["seed"] = 7
    same["volume_encoder"]["weights"] = "/predict/machine/resnet_10.pth"
    check_same_extraction(run, same, images, every)
    with pytest.raises(FeatureError, match="modality 'wsi'.*from elsewhere.*--features"):
        check_same_extraction(run, None, images, every)
    other = copy.deepcopy(RECORD)
    other["tiles"]["tile_size"] = 224
    with pytest.raises(FeatureError, match=r"'wsi'.*tiles.tile_size: 224 here, 64 in the run"):
        check_same_extraction(run, other, images, every)
    other = copy.deepcopy(RECORD)
    other["volume_encoder"]["checksum"] = "def"
    with pytest.raises(FeatureError, match=r"'mri'.*volume_encoder.checksum: 'def' here"):
        check_same_extraction(run, other, images, every)
    # modalities the model does not use, or the cohort does not have, are not checked
    check_same_extraction(run, None, ["clinical", "rna"], every)
    check_same_extraction(run, None, images, {"clinical", "rna"})


def test_a_run_trained_on_precomputed_features_is_not_checked(tmp_path):
    run = _run(tmp_path, {"source": "synthetic"}, record=None)
    check_same_extraction(run, None, ["wsi"], {"wsi"})
    check_same_extraction(run, RECORD, ["wsi"], {"wsi"})


def test_the_runs_settings_are_inherited_though_a_later_loader_renamed_a_param(tmp_path):
    """config.yaml with a data.params key the loader no longer takes (renamed since the
    run) was read as no config at all: its max_tiles silently not inherited, so the new
    cohort's bags were capped otherwise than those the model was trained on."""
    import yaml

    run = _run(tmp_path, {"source": "chimera", "name": "task1", "path": "/data/train",
                          "params": {"max_tiles": 6}})  # fmt: skip
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["data"]["params"]["tile_cap_v0"] = 6  # what an older version called a setting
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    got = with_run_params(run, parse_data_spec("chimera-task1:/data/held"))
    assert got.params == {"max_tiles": 6}  # only the shaping keys, each checked on load


def test_features_of_another_extraction_revision_are_refused(tmp_path):
    """The same settings made by another revision of the extraction code (tile choice,
    MRI preparation) are other features: a run's record without a revision is revision 1."""
    run = _run(tmp_path, {"source": "synthetic"})
    images = ["clinical", "wsi", "slide", "rna", "mri"]
    newer = copy.deepcopy(RECORD)
    newer["tiles"]["revision"] = 2
    with pytest.raises(FeatureError, match=r"'wsi'.*tiles.revision: 2 here, None in the run"):
        check_same_extraction(run, newer, images, set(images))
    newer = copy.deepcopy(RECORD)
    newer["mri"]["revision"] = 2
    with pytest.raises(FeatureError, match=r"'mri'.*mri.revision: 2 here, None in the run"):
        check_same_extraction(run, newer, images, set(images))
