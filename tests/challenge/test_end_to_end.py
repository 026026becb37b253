"""The spine end to end: a CHIMERA folder of raw files → extract → train (every modality)
→ the challenge command on /input-shaped cases → the JSON answer, and the batch metric."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from modalsurv.challenge.sockets import OUTPUTS, case_to_input
from modalsurv.cli import app
from modalsurv.data.synthetic import write_chimera

runner = CliRunner()


def _run(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_training_used_every_modality_and_recorded_the_extraction(task1):
    run = task1["run"]
    data = json.loads((run / "data.json").read_text())
    assert set(data["modalities"]) == {"clinical", "wsi", "slide", "mri", "rna"}
    assert data["modalities"]["wsi"]["kind"] == "bag" and data["modalities"]["wsi"]["dim"] == 512
    assert data["random_weights"]  # shown, because the test extracts with random weights
    rec = json.loads((run / "extraction.json").read_text())
    assert rec["tile_encoder"]["spec"] == "timm:resnet10t" and rec["tiles"]["tile_size"] == 64
    bundle = json.loads((run / "models/repeat_0/state_0.json").read_text())
    assert set(bundle["modalities"]) == {"clinical", "wsi", "slide", "mri", "rna"}
    assert "RANDOM-INIT" in (run / "report.html").read_text(encoding="utf-8")


def test_one_case_answer_is_a_float_and_deterministic(task1, tmp_path):
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[0]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input")
    outs = []
    for k in range(2):
        out_dir = tmp_path / f"output{k}"
        out_dir.mkdir()
        text = _run(["challenge", "task1", "--model", str(task1["run"]), "--input", str(inp),
                     "--output", str(out_dir)])
        files = list(out_dir.iterdir())
        assert [f.name for f in files] == [OUTPUTS["task1"]]
        value = json.loads(files[0].read_text())
        assert isinstance(value, float) and np.isfinite(value) and value > 0
        outs.append(value)
        assert "clinical" in text
    assert outs[0] == outs[1]  # same case, same model: the same float


def test_batch_metric_is_the_organisers_formula(task1, tmp_path):
    from sksurv.metrics import concordance_index_censored

    csv = tmp_path / "pred.csv"
    out = _run(["challenge", "task1", "--model", str(task1["run"]), "--batch",
                str(task1["held"]), "--out", str(csv)])
    df = pd.read_csv(csv, dtype={"case": str})
    assert len(df) == 6 and df["prediction"].notna().all()
    c = concordance_index_censored(df["event"].astype(bool).to_numpy(), df["time"].to_numpy(),
                                   -df["prediction"].to_numpy())[0]  # fmt: skip
    assert f"{c:.4f}" in out
    metrics = json.loads((tmp_path / "pred_metrics.json").read_text())
    assert metrics["aggregates"]["c_index"] == pytest.approx(c)
    # the batch form and the one-case form give the same number for a case
    case = df["case"].iloc[0]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "in1")
    (tmp_path / "o1").mkdir()
    _run(["challenge", "task1", "--model", str(task1["run"]), "--input", str(inp),
          "--output", str(tmp_path / "o1")])
    single = json.loads((tmp_path / "o1" / OUTPUTS["task1"]).read_text())
    assert single == pytest.approx(df["prediction"].iloc[0], rel=1e-6)


def test_missing_optional_inputs_still_answer(task1, tmp_path):
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[1]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=False)
    for folder in ("axial-adc-prostate-mri", "prostatectomy-tissue-mask"):
        shutil.rmtree(inp / "images" / folder, ignore_errors=True)
    (tmp_path / "out").mkdir()
    text = _run(["challenge", "task1", "--model", str(task1["run"]), "--input", str(inp),
                 "--output", str(tmp_path / "out")])
    assert "MRI sequences missing" in text
    assert json.loads((tmp_path / "out" / OUTPUTS["task1"]).read_text()) > 0


@pytest.mark.parametrize("damage", ["no_clinical", "corrupt_clinical", "wrong_model"])
def test_failures_exit_nonzero_and_leave_output_untouched(task1, tmp_path, damage):
    case = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))[0]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input")
    clinical = inp / "chimera-clinical-data-of-prostate-cancer-patients.json"
    model = task1["run"]
    if damage == "no_clinical":
        clinical.unlink()
        # inputs.json still lists the socket, with its value: drop that too
        entries = json.loads((inp / "inputs.json").read_text())
        (inp / "inputs.json").write_text(json.dumps([e for e in entries if "clinical" not in
                                                     e["interface"]["slug"]]))  # fmt: skip
    elif damage == "corrupt_clinical":  # and no inline value in inputs.json to fall back on
        clinical.write_text("{broken")
        entries = json.loads((inp / "inputs.json").read_text())
        for e in entries:
            e.pop("value") if "clinical" in e["interface"]["slug"] else None
        (inp / "inputs.json").write_text(json.dumps(entries))
    else:
        model = tmp_path / "not_a_run"
        model.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["challenge", "task1", "--model", str(model), "--input", str(inp),
                              "--output", str(out)])  # fmt: skip
    assert res.exit_code != 0
    words = {"no_clinical": "chimera-clinical-data-of-prostate-cancer-patients",
             "corrupt_clinical": "corrupt JSON", "wrong_model": "not a finished modalsurv run"}
    assert words[damage] in res.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_task3_end_to_end(tmp_path, kit):
    root = write_chimera(kit.cohort(3, 20, 1), tmp_path / "chimera", task=3, slide_px=512, mpp=0.5)
    store = tmp_path / "store"
    _run(["extract", str(root), "--layout", "chimera-task3", "--out", str(store), *kit.EXTRACT])
    run = tmp_path / "run"
    _run(["train", "--data", f"chimera-task3:{root}", "--features", str(store), "--out",
          str(run), *kit.TRAIN])
    data = json.loads((run / "data.json").read_text())
    assert set(data["modalities"]) == {"clinical", "wsi", "slide", "rna"}
    held = write_chimera(kit.cohort(3, 5, 7), tmp_path / "held", task=3, slide_px=512, mpp=0.5)
    case = sorted(p.name for p in (held / "data").iterdir())[0]
    inp = case_to_input(held, "task3", case, tmp_path / "input")
    assert (inp / "bulk-rna-seq-bladder-cancer.json").is_file()
    values = {}
    for direction in ("risk", "time"):
        out = tmp_path / f"out_{direction}"
        out.mkdir()
        _run(["challenge", "task3", "--model", str(run), "--input", str(inp), "--output",
              str(out), "--direction", direction])
        values[direction] = json.loads((out / OUTPUTS["task3"]).read_text())
    assert 0.0 <= values["risk"] <= 1.0 and values["time"] > 0
    # the batch form on task 3: the organisers' formula, and the risk reading beside it
    from sksurv.metrics import concordance_index_censored

    csv = tmp_path / "t3.csv"
    out = _run(["challenge", "task3", "--model", str(run), "--batch", str(held), "--out",
                str(csv)])
    df = pd.read_csv(csv, dtype={"case": str})
    assert len(df) == 5 and df["prediction"].between(0, 1).all()
    ev, t = df["event"].astype(bool).to_numpy(), df["time"].to_numpy()
    if ev.any():
        c = concordance_index_censored(ev, t, -df["prediction"].to_numpy())[0]
        assert f"{c:.4f}" in out and "read as a risk" in out
    # a task-1 model cannot answer task 3
    res = runner.invoke(app, ["challenge", "task1", "--model", str(run), "--input", str(inp),
                              "--output", str(tmp_path)])  # fmt: skip
    assert res.exit_code != 0 and "task3" in res.output


@pytest.mark.parametrize("damage", ["negative_rna", "huge_rna", "nan_mri_voxel",
                                    "unreadable_tissue_mask", "unreadable_prostate_mask"])  # fmt: skip
def test_one_bad_optional_input_costs_only_that_input(task1, tmp_path, damage):
    """A case answers with what it can: a bad RNA value drops the RNA, a NaN voxel the MRI
    (as extraction does), an unreadable mask only the mask (Otsu / no cropping)."""
    import SimpleITK as sitk

    cases = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))
    with_rna = [c for c in cases if (task1["held"] / "rna" / f"{c}_RNA.json").is_file()]
    case = with_rna[0] if damage.endswith("_rna") else cases[2]
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=False)
    if damage == "negative_rna":
        rna = inp / "bulk-rna-seq-prostate-cancer.json"
        values = json.loads(rna.read_text())
        values[next(iter(values))] = -0.5
        rna.write_text(json.dumps(values))
        said = "negative expression value"
    elif damage == "huge_rna":  # beyond float32: was inf in the features, and no answer
        rna = inp / "bulk-rna-seq-prostate-cancer.json"
        values = json.loads(rna.read_text())
        values[next(iter(values))] = 1e40
        rna.write_text(json.dumps(values))
        said = "beyond float32"
    elif damage == "nan_mri_voxel":
        (t2,) = (inp / "images" / "axial-t2-prostate-mri").iterdir()
        img = sitk.ReadImage(str(t2))
        arr = sitk.GetArrayFromImage(img)
        arr[arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2] = np.nan
        out_img = sitk.GetImageFromArray(arr)
        out_img.CopyInformation(img)
        sitk.WriteImage(out_img, str(t2))
        said = "NaN or inf voxels"
    elif damage == "unreadable_tissue_mask":
        for mask in (inp / "images" / "prostatectomy-tissue-mask").iterdir():
            mask.write_bytes(b"not an image")
        said = "tissue found by Otsu"
    else:
        (mask,) = (inp / "images" / "prostate-tissue-mask-for-axial-t2-prostate-mri").iterdir()
        mask.write_bytes(b"not an image")
        said = "MRI used without cropping"
    (tmp_path / "out").mkdir()
    text = _run(["challenge", "task1", "--model", str(task1["run"]), "--input", str(inp),
                 "--output", str(tmp_path / "out")])
    assert said in " ".join(text.split()), text
    value = json.loads((tmp_path / "out" / OUTPUTS["task1"]).read_text())
    assert isinstance(value, float) and np.isfinite(value) and value > 0


def test_predict_reads_a_chimera_folder_without_labels(task1, tmp_path, kit):
    """The cases a lab predicts on have no follow-up yet: `predict` keeps them (it used to
    drop every case as 'patient without label' and write nothing), with the same numbers
    as for the same cases read with their labels; `evaluate` still needs labels."""
    held = tmp_path / "held"
    shutil.copytree(task1["held"], held)
    for f in (held / "clinical_data").glob("*.json"):
        rec = json.loads(f.read_text())
        rec.pop("time_to_follow-up/BCR"), rec.pop("BCR")
        f.write_text(json.dumps(rec))
    store = tmp_path / "store"
    kit.run(["extract", str(held), "--layout", "chimera-task1", "--out", str(store),
             *kit.EXTRACT, "--volume-encoder", "medicalnet_resnet10"])
    out = _run(["predict", str(task1["run"]), "--data", f"chimera-task1:{held}", "--features",
                str(store), "--out", str(tmp_path / "p.csv"), "--times", "12"])
    assert "6 without a label" in " ".join(out.split())
    unlabelled = pd.read_csv(tmp_path / "p.csv", dtype={"patient": str})
    assert len(unlabelled) == 6 and unlabelled["risk"].notna().all()
    # the labelled copy of the same cases, read from the same store
    _run(["predict", str(task1["run"]), "--data", f"chimera-task1:{task1['held']}",
          "--features", str(store), "--out", str(tmp_path / "l.csv"), "--times", "12"])
    labelled = pd.read_csv(tmp_path / "l.csv", dtype={"patient": str})
    pd.testing.assert_frame_equal(unlabelled, labelled)
    res = runner.invoke(app, ["evaluate", str(task1["run"]), "--data",
                              f"chimera-task1:{held}", "--features", str(store)])
    assert res.exit_code != 0 and "without label" in res.output


def test_a_case_with_odd_clinical_and_rna_values_answers_and_names_them(task1, tmp_path):
    """A clinical number beyond float32 (1e40) stopped the answer ('features contain
    +/-inf'); problems of the clinical record named 'file clinical socket' instead of the
    file; the RNA warning showed 'np.float64(-0.5)'."""
    from modalsurv.challenge.answer import answer_case
    from modalsurv.challenge.model import ChallengeModel

    cases = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))
    case = next(c for c in cases if (task1["held"] / "rna" / f"{c}_RNA.json").is_file())
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=False)
    clinical = inp / "chimera-clinical-data-of-prostate-cancer-patients.json"
    record = json.loads(clinical.read_text())
    clinical.write_text(json.dumps({**record, "age_at_prostatectomy": 1e40, "ISUP": "bogus"}))
    rna = inp / "bulk-rna-seq-prostate-cancer.json"
    values = json.loads(rna.read_text())
    values[next(iter(values))] = -0.5
    rna.write_text(json.dumps(values))
    (tmp_path / "out").mkdir()
    model = ChallengeModel.load(task1["run"], "task1")
    result, path = answer_case("task1", model, inp, tmp_path / "out")
    assert np.isfinite(json.loads(path.read_text()))
    by_field = {p.field: p for p in result.problems}
    age = by_field["age_at_prostatectomy"]
    assert age.severity == "warning" and "float32" in age.reason and age.path == str(clinical)
    assert by_field["ISUP"].path == str(clinical)
    (neg,) = [p for p in result.problems if "negative expression" in p.reason]
    assert "value -0.5 " in neg.reason and "np." not in neg.reason and neg.path == str(rna)


def test_misused_challenge_options_are_refused_before_any_work(task1, tmp_path):
    """--out without --batch was silently ignored; an --output that is a file failed only
    after the whole case was processed, with a raw 'File exists'; a bad single-case input
    pointed to `modalsurv scan`, which does not read /input folders."""
    inp = case_to_input(task1["held"], "task1", "1000", tmp_path / "input")
    base = ["challenge", "task1", "--model", str(task1["run"]), "--input", str(inp)]
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "o"), "--out",
                              str(tmp_path / "p.csv")])  # fmt: skip
    assert res.exit_code == 2 and "--out is the CSV of --batch" in res.output, res.output
    as_file = tmp_path / "answer"
    as_file.write_text("keep")
    res = runner.invoke(app, [*base, "--output", str(as_file)])
    assert res.exit_code == 2 and "is a file" in res.output, res.output
    assert as_file.read_text() == "keep"
    (inp / "chimera-clinical-data-of-prostate-cancer-patients.json").write_text("[1, 2]")
    (inp / "inputs.json").unlink(missing_ok=True)
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "o2")])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "modalsurv scan" not in text, text
    assert "nothing was written to --output" in text


def test_a_gene_written_twice_is_read_as_training_reads_it(task1, tmp_path):
    """Training merges a repeated gene by the mean of its values (io.rnaseq.align_genes);
    the challenge read the socket into a dict, which kept only the last value."""
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.challenge.sockets import read_case

    cases = sorted(p.stem for p in (task1["held"] / "clinical_data").glob("*.json"))
    case = next(c for c in cases if (task1["held"] / "rna" / f"{c}_RNA.json").is_file())
    inp = case_to_input(task1["held"], "task1", case, tmp_path / "input", inputs_json=False)
    rna = inp / "bulk-rna-seq-prostate-cancer.json"
    values = json.loads(rna.read_text())
    model = ChallengeModel.load(task1["run"], "task1")
    genes = list(model.ensemble.members[0].preprocessor_.steps["rna"].feature_names_in_)
    gene = next(g for g in genes if g in values)
    first = float(values[gene])
    body = json.dumps(values)[:-1] + f', "{gene}": {first + 4.0}}}'  # the gene again, +4
    rna.write_text(body)
    got = model._rna(read_case(inp, "task1"), [])
    assert got is not None
    assert got[genes.index(gene)] == pytest.approx(first + 2.0, rel=1e-6)  # mean, not last
