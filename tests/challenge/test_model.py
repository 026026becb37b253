"""A trained run folder answering one case (``challenge.model``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modalsurv.challenge.sockets import case_to_input, read_case


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_rna_given_inline_in_inputs_json_is_used(task1, tmp_path, damage):
    """When the RNA socket's file was missing or corrupt, read_case took the value inline
    in inputs.json, but the model then re-read inputs.json itself as the RNA file (the
    'source' the value came from), failed, and predicted without RNA."""
    from modalsurv.challenge.model import ChallengeModel

    cases = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))
    case = next(c for c in cases if (task1["held"] / "rna" / f"{c}_RNA.json").is_file())
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=True)
    model = ChallengeModel.load(task1["run"], "task1")
    want = model._rna(read_case(inp, "task1"), [])
    assert want is not None
    rna = inp / "bulk-rna-seq-prostate-cancer.json"
    if damage == "missing":
        rna.unlink()
    else:
        rna.write_text("")
    inline = read_case(inp, "task1")
    (entry,) = [e for e in json.loads((inp / "inputs.json").read_text())
                if e["interface"]["slug"] == "bulk-rna-seq-prostate-cancer"]  # fmt: skip
    assert inline.rna == entry["value"]
    problems: list = []
    got = model._rna(inline, problems)
    assert not [p for p in problems if "without RNA" in p.reason], problems
    assert got is not None and np.array_equal(got, want)


def test_slide_encoder_weights_are_checked_against_the_record(task1, tmp_path, monkeypatch):
    """The tile and volume encoders' weights were checked against the extraction record,
    the slide encoder's (a TITAN snapshot folder) were not: another snapshot gave other
    slide vectors silently."""
    from types import SimpleNamespace

    from modalsurv.challenge import model as cm
    from modalsurv.errors import WeightsError
    from modalsurv.features.encoders import sha256_file

    snapshot = tmp_path / "TITAN"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    recorded = sha256_file(snapshot)
    monkeypatch.setattr(cm.enc, "get_slide_encoder", lambda spec, dim, weights, device:
                        SimpleNamespace(name="titan", checksum=sha256_file(weights)))  # fmt: skip
    model = cm.ChallengeModel.load(task1["run"], "task1")
    model.record = {**model.record, "slide_encoder": {
        "spec": "titan", "name": "titan", "checksum": recorded, "weights": str(snapshot),
        "weights_name": snapshot.name}}  # fmt: skip
    assert model.encoders().slide.checksum == recorded  # the recorded snapshot: accepted
    (snapshot / "config.json").write_text('{"other": 1}')
    model._encoders = None
    with pytest.raises(WeightsError, match="not the ones") as err:
        model.encoders()
    assert err.value.path == str(snapshot) and err.value.field == "weights"


def test_a_sequence_the_model_never_used_is_not_needed(task1, tmp_path):
    """MRI features extracted from some sequences only (``MriConfig.sequences``, recorded
    in extraction.json): a case lacking another sequence lost its whole MRI, though
    extraction embeds such a patient's MRI."""
    from dataclasses import replace

    from modalsurv.challenge.model import ChallengeModel

    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[0]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=False)
    model = ChallengeModel.load(task1["run"], "task1")
    encoders = model.encoders()
    whole = model._mri(read_case(inp, "task1"), encoders, [])
    assert whole is not None
    encoders.mri = replace(encoders.mri, sequences=("t2w", "adc"))
    two = model._mri(read_case(inp, "task1"), encoders, [])
    for f in (inp / "images" / "transverse-hbv-prostate-mri").iterdir():
        f.unlink()
    problems: list = []
    without_hbv = model._mri(read_case(inp, "task1"), encoders, problems)
    assert without_hbv is not None and np.array_equal(without_hbv, two), problems


@pytest.mark.parametrize(("section", "field"), [("tiles", "tiles.revision"),
                                                ("mri", "mri.revision")])
def test_a_model_of_another_extraction_revision_is_refused(task1, tmp_path, section, field):
    """A case's features are made by this code; a model trained on features of an earlier
    tile / MRI revision (a record without one: revision 1) would read other features."""
    import shutil

    from modalsurv.challenge.model import ChallengeModel, ModelMismatchError
    from modalsurv.features.extract import MRI_REVISION, TILE_REVISION

    run = shutil.copytree(task1["run"], tmp_path / "run")
    record = json.loads((run / "extraction.json").read_text())
    assert (record["tiles"]["revision"], record["mri"]["revision"]) == (TILE_REVISION,
                                                                        MRI_REVISION)  # fmt: skip
    ChallengeModel.load(run, "task1")  # its own revision: answered
    del record[section]["revision"]
    (run / "extraction.json").write_text(json.dumps(record))
    with pytest.raises(ModelMismatchError, match=r"made by revision 1 .* a new store") as err:
        ChallengeModel.load(run, "task1")
    assert err.value.field == field
