"""Data sources: a spec string or config → the cohort and every problem met reading it."""

from __future__ import annotations

import numpy as np
import pytest

from modalsurv.data.sources import load_data, parse_data_spec
from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import ConfigError, DataError
from modalsurv.io.store import FeatureStore


def test_a_labelled_patient_without_stored_features_is_a_problem(tmp_path):
    store = FeatureStore(tmp_path / "store")
    store.write_many("slide", {"001": np.ones(4), "002": np.zeros(4)})
    (store.root / "labels.csv").write_text("patient,time,event\n001,5,1\n002,3,0\n003,2,0\n")
    loaded = load_data(f"store:{store.root}")
    assert list(loaded.cohort.ids) == ["001", "002", "003"]
    assert [(p.patient, p.severity) for p in loaded.problems] == [("003", "warning")]
    assert "no features for this patient" in loaded.problems[0].reason


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:300:1:5", "synthetic::3",
                                  "synthetic-external:1e3"])  # fmt: skip
def test_a_malformed_synthetic_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="N and SEED must be integers"):
        parse_data_spec(spec)


def test_synthetic_spec_numbers():
    assert parse_data_spec("synthetic:300:").params == {"external": False, "n": 300}
    assert parse_data_spec("synthetic-external:50:2").params == {"external": True, "n": 50,
                                                                 "seed": 2}  # fmt: skip


@pytest.mark.parametrize("spec", ["public:", "public: ", "chimera-task1:", "chimera-task3: ",
                                  "manifest:", "store:"])  # fmt: skip
def test_a_spec_without_its_name_or_path_is_refused(spec):
    # an empty path used to read the working directory
    with pytest.raises(ConfigError, match="needs a"):
        parse_data_spec(spec)


def test_a_missing_chimera_root_names_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"chimera-task1:{tmp_path / 'nope'}")


def test_cases_of_the_other_chimera_layout_are_a_problem_when_loading(tmp_path):
    cohort = make_cohort(6, 1, max_tiles=4, tile_dim=8, slide_dim=4, mri_dim=4, n_genes=10)[0]
    root = write_chimera(cohort, tmp_path / "t1", images=False)
    (root / "data" / "3A_000").mkdir(parents=True)
    (root / "data" / "3A_000" / "3A_000_CD.json").write_text("{}")
    loaded = load_data(f"chimera-task1:{root}")  # a warning: the task-1 cohort is read
    assert len(loaded.cohort) == 6
    layout = [p for p in loaded.problems if p.field == "layout"]
    assert [p.severity for p in layout] == ["warning"] and "3A_000" in layout[0].reason
    # the wrong layout: refused (no patient), and the message says which layout it holds
    with pytest.raises(DataError, match="6 case\\(s\\) in the chimera-task1 layout"):
        load_data(f"chimera-task3:{root}")


@pytest.mark.parametrize("body, needle", [
    ("data:\n  source: manifest\n", "data.path: required for source 'manifest'"),
    ("data:\n  source: public\n", "data.name: a public cohort name is required"),
    ("data:\n  source: chimera\n  path: x\n  name: task2\n", "data.name: a CHIMERA task is"),
    ("data:\n  source: manifest\n  path: m.csv\n  features: s\n", "data.features: a feature"),
])  # fmt: skip
def test_a_data_config_file_missing_a_field_names_the_file(tmp_path, body, needle):
    """The field was named only when the data were loaded, without the file it came from."""
    path = tmp_path / "cohort.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match="invalid data config") as err:
        parse_data_spec(str(path))
    assert str(path) in str(err.value) and needle in str(err.value)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):  # in code: as it was
        load_data(_config(body))


def test_a_typo_in_a_data_config_file_says_which_key_was_meant(tmp_path):
    """`--data cohort.yaml` said only "featurs: unknown key", where a run config's typo
    says which key was meant."""
    path = tmp_path / "cohort.yaml"
    path.write_text("data:\n  source: chimera\n  name: task1\n  path: x\n  featurs: s\n")
    with pytest.raises(ConfigError, match="invalid data config") as err:
        parse_data_spec(str(path))
    assert "featurs: unknown key (did you mean features?)" in str(err.value)


def _config(body):
    import yaml

    from modalsurv.config import DataConfig

    return DataConfig.model_validate(yaml.safe_load(body)["data"])


def test_a_data_config_file_with_an_upper_case_suffix_is_read(tmp_path):
    path = tmp_path / "cohort.YML"
    path.write_text("data:\n  source: synthetic\n  params: {n: 12}\n")
    assert parse_data_spec(str(path)).params == {"n": 12}


def test_a_chimera_read_without_a_store_notes_the_images_it_leaves_out(tmp_path):
    """``--data chimera-task1:ROOT`` without ``--features`` trained on clinical + RNA (+ the
    organisers' tile features) and only the coverage table showed that the folder's MRI
    was never read; now one note per image kind says so (no problem: --strict passes)."""
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort = make_cohort(6, 1, max_tiles=4, tile_dim=8, slide_dim=4, mri_dim=4, n_genes=10,
                         missing={"wsi": 0.0, "rna": 0.0, "mri": 0.0})[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "t1", slide_px=256, mri_shape=(4, 16, 16),
                         max_slides=1)  # fmt: skip
    loaded = load_data(f"chimera-task1:{root}")
    notes = {p.field: p.reason for p in loaded.notes if p.field != "BCR_PSA"}
    assert list(notes) == ["mri"]  # the .pt tile features gave wsi: the slides are used
    assert notes["mri"].startswith("6 patient(s) have MRI in the folder, not used")
    assert "--features" in notes["mri"] and "modalsurv extract" in notes["mri"]
    loaded.check_strict()
    for f in (root / "pathology/features").rglob("*.pt"):
        f.unlink()
    notes = {p.field for p in load_data(f"chimera-task1:{root}").notes}
    assert {"mri", "wsi"} <= notes
