"""Reading one case from a grand-challenge /input folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalsurv.challenge.sockets import (
    SOCKETS,
    ChallengeInputError,
    _pair_slides,
    case_to_input,
    folder_of,
    read_case,
    slug_of,
)
from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cohort, _ = make_cohort(n=3, seed=0, max_tiles=6, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=10, missing={m: 0.0 for m in ("wsi", "slide", "mri", "rna")})  # fmt: skip
    return write_chimera(cohort, tmp_path_factory.mktemp("c"), task=1, slide_px=512,
                         mri_shape=(8, 24, 24), max_slides=3, seed=4)  # fmt: skip


def test_one_table_for_every_socket():
    for task, socks in SOCKETS.items():
        roles = [(s.role, s.index) for s in socks]
        assert len(roles) == len(set(roles)), task
        assert sum(s.required for s in socks) == 1  # the clinical record
    assert slug_of("slide", "task1", 3) == "prostatectomy-tissue-whole-slide-image-3"
    assert folder_of("slide", "task1", 3) == "images/prostatectomy-wsi-z-3"
    assert folder_of("hbv", "task1") == "images/transverse-hbv-prostate-mri"


def test_case_round_trip_with_and_without_inputs_json(folder, tmp_path):
    for listed in (True, False):
        inp = case_to_input(folder, "task1", "1000", tmp_path / f"in{listed}", inputs_json=listed)
        case = read_case(inp, "task1")
        assert "BCR" not in case.clinical and "time_to_follow-up/BCR" not in case.clinical
        assert case.clinical["ISUP"] is not None or "ISUP" in case.clinical
        assert len(case.slides) == len(case.masks) >= 1 and all(case.masks)
        assert set(case.mri) == {"t2w", "adc", "hbv"} and all(case.mri.values())
        assert case.mri_mask is not None and case.rna is not None
        assert (inp / "inputs.json").exists() == listed


def test_inputs_json_paths_win_and_inline_values_are_used(folder, tmp_path):
    inp = case_to_input(folder, "task1", "1001", tmp_path / "in")
    # move the HBV volume to the folder name an older template used, as inputs.json says
    entries = json.loads((inp / "inputs.json").read_text())
    (inp / "images" / "transverse-hbv-prostate-mri").rename(inp / "images" / "axial-dwi-prostate-mri")
    for e in entries:
        if e["interface"]["slug"] == "transverse-hbv-prostate-mri":
            e["interface"] = {"slug": "axial-dwi-prostate-mri",
                              "relative_path": "images/axial-dwi-prostate-mri"}
    (inp / "inputs.json").write_text(json.dumps(entries))
    # the clinical file is gone but inputs.json carries its value inline
    record = json.loads((inp / "chimera-clinical-data-of-prostate-cancer-patients.json").read_text())
    (inp / "chimera-clinical-data-of-prostate-cancer-patients.json").unlink()
    case = read_case(inp, "task1")
    assert case.mri["hbv"] is not None and "axial-dwi-prostate-mri" in str(case.mri["hbv"])
    assert case.clinical == record


def test_extra_slides_keep_socket_order_and_lonely_masks_are_reported(folder, tmp_path):
    inp = case_to_input(folder, "task1", "1002", tmp_path / "in", inputs_json=False)
    # an extra slide (socket 5) without a mask, and a mask (socket 7) without a slide
    src = next((inp / "images" / "prostatectomy-wsi").iterdir())
    (inp / "images" / "prostatectomy-wsi-z-5").mkdir()
    (inp / "images" / "prostatectomy-wsi-z-5" / "extra.tif").write_bytes(src.read_bytes())
    (inp / "images" / "prostatectomy-tissue-mask-wsi-7").mkdir()
    mask = next((inp / "images" / "prostatectomy-tissue-mask").iterdir())
    (inp / "images" / "prostatectomy-tissue-mask-wsi-7" / "m.tif").write_bytes(mask.read_bytes())
    case = read_case(inp, "task1")
    assert case.slides[-1].name == "extra.tif" and case.masks[-1] is None
    reasons = " ".join(p.reason for p in case.problems)
    assert "no tissue mask" in reasons and "mask without its slide" in reasons


def test_required_socket_and_bad_json_name_socket_and_file(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ChallengeInputError, match="chimera-clinical-data-of-prostate-cancer-patients"):
        read_case(tmp_path / "in", "task1")
    (tmp_path / "in" / "chimera-clinical-data-of-prostate-cancer-patients.json").write_text("[1, 2]")
    with pytest.raises(ChallengeInputError, match="one JSON object"):
        read_case(tmp_path / "in", "task1")
    (tmp_path / "in" / "inputs.json").write_text("{oops")
    with pytest.raises(ChallengeInputError, match="inputs.json"):
        read_case(tmp_path / "in", "task1")
    (tmp_path / "in" / "inputs.json").write_text(json.dumps([{"interface": "axial-t2"}]))
    with pytest.raises(ChallengeInputError, match="entry 0: 'interface' must be an object"):
        read_case(tmp_path / "in", "task1")
    with pytest.raises(ChallengeInputError, match="input folder does not exist"):
        read_case(tmp_path / "nowhere", "task3")
    with pytest.raises(ValueError, match="task1 or task3"):
        read_case(tmp_path / "in", "task2")


def test_task3_alternative_clinical_slug(tmp_path):
    inp = tmp_path / "in"
    (inp / "images" / "bladder-cancer-tissue-biopsy-wsi").mkdir(parents=True)
    (inp / "chimera-clinical-data-of-bladder-cancer-recurrence.json").write_text(json.dumps({"age": 70}))
    case = read_case(inp, "task3")
    assert case.clinical == {"age": 70} and case.slides == [] and case.rna is None
    assert any("bulk-rna-seq-bladder-cancer" in (p.field or "") for p in case.problems)


def test_case_input_refuses_a_folder_holding_another_case(folder, tmp_path):
    """Two cases in one /input folder would be read as one (every slide of a socket folder is
    taken): a used folder is refused, and ``replace`` empties it first."""
    dest = tmp_path / "in"
    case_to_input(folder, "task1", "1000", dest)
    with pytest.raises(DataError, match="not empty") as err:
        case_to_input(folder, "task1", "1001", dest)
    assert err.value.patient == "1001" and Path(err.value.path) == dest
    case_to_input(folder, "task1", "1001", dest, replace=True)
    case = read_case(dest, "task1")
    assert case.slides and all(s.name.startswith("1001") for s in case.slides), case.slides


@pytest.mark.parametrize(
    ("slides", "masks", "want"),
    [
        (["p_1", "p_10"], ["p_10_tissue", "p_1_tissue"], ["p_1_tissue", "p_10_tissue"]),
        (["X_HE", "X_HE_2"], ["X_HE_2_mask", "X_HE_mask"], ["X_HE_mask", "X_HE_2_mask"]),
        (["a", "b"], ["m1", "m2"], ["m1", "m2"]),  # no name matches: by position
        (["a", "b"], ["a_mask"], ["a_mask", None]),
    ],
)
def test_slide_masks_pair_by_whole_name_not_substring(slides, masks, want):
    files = [Path(f"in/images/wsi/{s}.tif") for s in slides]
    cands = sorted(Path(f"in/images/mask/{m}.tif") for m in masks)
    got_slides, got = _pair_slides({("slide", 0): files, ("slide_mask", 0): cands}, [])
    assert got_slides == files
    assert [None if m is None else m.stem for m in got] == want


def test_case_input_command_names_the_used_folder_and_replaces_on_request(folder, tmp_path):
    from typer.testing import CliRunner

    from modalsurv.cli import app

    out = tmp_path / "in"
    args = ["case-input", "task1", str(folder), "1000", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    res = CliRunner().invoke(app, [*args[:3], "1001", *args[4:]])
    said = "".join(res.output.split())  # the console wraps long paths at any character
    assert res.exit_code == 1 and "notempty" in said and str(out) in said
    res = CliRunner().invoke(app, [*args[:3], "1001", *args[4:], "--replace"])
    assert res.exit_code == 0, res.output
    assert all(s.name.startswith("1001") for s in read_case(out, "task1").slides)


def test_a_case_with_more_slides_than_the_interface_holds_is_named(folder, tmp_path):
    import shutil

    root = shutil.copytree(folder, tmp_path / "c")
    first = sorted((root / "pathology/images/1000").glob("1000_*.tif"))
    slide = next(p for p in first if not p.name.endswith("_tissue.tif"))
    for i in range(11):
        shutil.copy(slide, slide.with_name(f"1000_{20 + i}.tif"))
    with pytest.raises(DataError, match="holds at most 10") as err:
        case_to_input(root, "task1", "1000", tmp_path / "in")
    assert err.value.patient == "1000" and err.value.field == "slides"


def test_replace_empties_only_a_case_input_folder_and_only_once_the_case_is_read(folder,
                                                                                 tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(DataError, match="not empty"):
        case_to_input(folder, "task1", "1000", run, replace=True)
    assert (run / "config.yaml").is_file()  # not a case-input folder: never emptied
    answer = tmp_path / "output"  # a challenge /output folder: one answer JSON
    answer.mkdir()
    (answer / "time-to-biochemical-recurrence-for-prostate-cancer-months.json").write_text("5.0")
    with pytest.raises(DataError, match="not empty"):
        case_to_input(folder, "task1", "1000", answer, replace=True)
    assert len(list(answer.iterdir())) == 1
    dest = case_to_input(folder, "task1", "1000", tmp_path / "in")
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / "clinical_data" / "1001.json").write_text("{oops")
    with pytest.raises(DataError, match="corrupt JSON"):
        case_to_input(broken, "task1", "1001", dest, replace=True)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before  # kept whole
    assert not list(tmp_path.glob(".in.partial-*"))


@pytest.mark.parametrize("listed", [True, False])
def test_an_empty_optional_json_file_costs_only_that_input(folder, tmp_path, listed):
    """An empty RNA file used to abort the whole case ('corrupt JSON'), even when
    inputs.json carried the RNA values inline: now the inline value is used, or the case
    is predicted without RNA; only the required clinical socket stops a case."""
    inp = case_to_input(folder, "task1", "1000", tmp_path / "in", inputs_json=listed)
    (rna_file,) = inp.glob("*rna*.json")
    whole = read_case(inp, "task1").rna
    rna_file.write_text("")
    case = read_case(inp, "task1")
    said = [p for p in case.problems if "corrupt JSON" in p.reason]
    assert len(said) == 1 and said[0].path == str(rna_file)
    if listed:  # case_to_input writes each JSON socket's value inline in inputs.json too
        assert case.rna == whole and "inputs.json" in said[0].reason
    else:
        assert case.rna is None and "ignored" in said[0].reason
    (clinical,) = inp.glob("chimera-clinical-data*.json")
    record = read_case(inp, "task1").clinical
    clinical.write_text("")
    if listed:
        assert read_case(inp, "task1").clinical == record
    else:
        with pytest.raises(ChallengeInputError, match="corrupt JSON"):
            read_case(inp, "task1")


def test_hidden_files_are_not_inputs_and_do_not_name_the_case(folder, tmp_path):
    """A macOS ``._1000_0.tif`` sorted first: it was taken as the main slide, the case was
    named '' and its tile sample seeded from that; dotfiles in MRI folders were volumes."""
    inp = case_to_input(folder, "task1", "1000", tmp_path / "in", inputs_json=False)
    real = read_case(inp, "task1")
    wsi = inp / "images" / "prostatectomy-wsi"
    t2 = inp / "images" / "axial-t2-prostate-mri"
    (wsi / f"._{real.slides[0].name}").write_bytes(b"\0\5\26\7")
    (t2 / f"._{real.mri['t2w'].name}").write_bytes(b"\0\5\26\7")
    (t2 / ".DS_Store").write_bytes(b"\0")
    case = read_case(inp, "task1")
    assert case.slides == real.slides and case.mri == real.mri
    assert case.case == real.case == real.slides[0].name.split(".")[0] != ""
    assert case.sample_key == real.sample_key
    hidden = [p for p in case.problems if "hidden file" in p.reason]
    assert sorted(Path(p.path).name for p in hidden) == sorted(
        [".DS_Store", f"._{real.slides[0].name}", f"._{real.mri['t2w'].name}"])


def test_a_second_file_in_an_mri_socket_is_named_with_the_one_used(folder, tmp_path):
    inp = case_to_input(folder, "task1", "1000", tmp_path / "in", inputs_json=False)
    t2 = inp / "images" / "axial-t2-prostate-mri"
    (used,) = t2.iterdir()
    (t2 / "zz_other.mha").write_bytes(used.read_bytes())
    case = read_case(inp, "task1")
    assert case.mri["t2w"] == used
    said = [p for p in case.problems if p.field == "axial-t2-prostate-mri"]
    assert len(said) == 1 and said[0].severity == "warning"
    assert f"using {used.name}" in said[0].reason and "ignoring zz_other.mha" in said[0].reason


@pytest.mark.parametrize("listed", [True, False])
def test_sources_name_the_file_each_role_came_from(folder, tmp_path, listed):
    """The clinical record's problems said 'file clinical socket': the sources were kept by
    slug and looked up by role."""
    inp = case_to_input(folder, "task1", "1000", tmp_path / "in", inputs_json=listed)
    clinical = inp / "chimera-clinical-data-of-prostate-cancer-patients.json"
    case = read_case(inp, "task1")
    assert case.sources["clinical"] == str(clinical)
    assert case.sources["rna"] == str(inp / "bulk-rna-seq-prostate-cancer.json")
    assert case.sources["t2w"] == str(case.mri["t2w"])
    if listed:  # the value inline in inputs.json: that file is named
        clinical.unlink()
        assert read_case(inp, "task1").sources["clinical"] == str(inp / "inputs.json")


def test_an_unknown_task_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from modalsurv.challenge.sockets import task_name
    from modalsurv.cli import app
    from modalsurv.errors import ConfigError

    with pytest.raises(ConfigError, match="task1 or task3; found 'task2'"):
        task_name("task2")
    res = CliRunner().invoke(app, ["challenge", "task2", "--model", str(tmp_path), "--input",
                                   str(tmp_path), "--output", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and "task1 or task3" in res.output
