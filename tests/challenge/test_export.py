"""export-model takes the task in every spelling `modalsurv challenge` takes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modalsurv.cli import app


@pytest.mark.parametrize("task", ["1", "TASK1", "task_1"])
def test_export_model_reads_the_task_as_the_challenge_command_does(task1, tmp_path, task):
    """Was: '--task 1' refused with 'trained on CHIMERA task1; these inputs are 1'."""
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(out),
                                   "--task", task])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "models" / "repeat_0").is_dir()


def test_export_model_refuses_an_unknown_task_as_a_usage_error(task1, tmp_path):
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out",
                                   str(tmp_path / "m"), "--task", "task2"])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "task1 or task3" in text, res.output
    assert not (tmp_path / "m").exists()


def test_export_model_refuses_an_out_inside_the_run_folder(task1):
    inside = task1["run"] / "exported"
    res = CliRunner().invoke(app, ["export-model", str(task1["run"]), "--out", str(inside)])
    assert res.exit_code == 2 and "inside the run folder" in res.output, res.output
    assert not inside.exists()


def test_two_encoders_with_one_weight_file_name_both_keep_their_weights(tmp_path):
    """Presets share file names (``pytorch_model.bin``): the volume encoder's file was
    copied onto the tile encoder's in weights/. The export's own check still passed (it
    found the tile weights at their recorded path, outside the model folder); in the
    container, without that path, the model could not answer."""
    from modalsurv.challenge.export import _fill
    from modalsurv.features.encoders import find_weights, sha256_file

    run = tmp_path / "run"
    (run / "models" / "repeat_0").mkdir(parents=True)
    record = {}
    for key, body in (("tile_encoder", b"tile weights"), ("volume_encoder", b"mri weights")):
        src = tmp_path / key / "pytorch_model.bin"
        src.parent.mkdir()
        src.write_bytes(body)
        record[key] = {"name": key, "weights": str(src), "weights_name": src.name,
                       "checksum": sha256_file(src)}  # fmt: skip
    out = tmp_path / "model"
    out.mkdir()
    _fill(out, run, record, [])
    for key in ("tile_encoder", "volume_encoder"):
        moved = {**record[key], "weights": None}  # as in the container: the run is elsewhere
        found = find_weights(moved, [out / "weights"])
        assert found is not None and found.is_relative_to(out / "weights")
        assert sha256_file(found) == record[key]["checksum"], key


def test_weights_of_an_encoder_the_model_does_not_use_are_neither_needed_nor_copied(task1,
                                                                                   tmp_path,
                                                                                   monkeypatch):  # fmt: skip
    """A store's extraction record names every encoder it extracted with; a model trained
    on some of its modalities only (``model.modalities=[clinical, rna]``) answers without
    the others, yet its export looked the tile encoder's weights up (a WeightsError when
    they were not at hand; gigabytes copied into the container when they were)."""
    import json
    import shutil

    from modalsurv.challenge.export import export_model
    from modalsurv.challenge.model import ChallengeModel

    run = shutil.copytree(task1["run"], tmp_path / "run")
    record = json.loads((run / "extraction.json").read_text())
    record["tile_encoder"].update(weights=str(tmp_path / "elsewhere" / "uni.bin"),
                                  weights_name="uni.bin")  # fmt: skip
    (run / "extraction.json").write_text(json.dumps(record))
    load = ChallengeModel.load.__func__  # type: ignore[attr-defined]

    def without_slides(cls, *args, **kwargs):  # a model of clinical, MRI and RNA features
        model = load(cls, *args, **kwargs)
        model.modalities = [m for m in model.modalities if m not in ("wsi", "slide")]
        return model

    monkeypatch.setattr(ChallengeModel, "load", classmethod(without_slides))
    out = export_model(run, tmp_path / "model", "task1")
    assert (out / "models" / "repeat_0" / "bundle.json").is_file()
    assert not any(p.name == "uni.bin" for p in out.rglob("*"))
