from pathlib import Path

import pytest

from modalsurv.config import RunConfig
from modalsurv.errors import ConfigError
from modalsurv.experiments.grid import (
    ExperimentGrid,
    load_grid,
    modality_sets,
    parse_grid,
    trial_id,
)

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "modalsurv" / "configs" / "experiments"


def grid_dict(**over):
    data = {
        "name": "t",
        "base": {"cv": {"folds": 2}, "baselines": []},
        "modalities": [["clinical"], ["clinical", "wsi", "rna"]],
        "encoder": ["frozen", "finetuned"],
        "encoders": {"frozen": {}, "finetuned": {"wsi": "wsi_ft", "rna": "rna_v2"}},
        "fusion": ["concat", "cross_attention", "cross_attention_gated"],
        "data_fraction": [0.5, 1.0],
        "seed": [0, 1],
    }
    data.update(over)
    return data


def test_expand_counts_settings_and_resolved_configs():
    trials = parse_grid(grid_dict()).expand()
    # [clinical] is the same run under both encoder labels: kept once
    assert len(trials) == (1 + 2) * 3 * 2 * 2
    assert len({t.id for t in trials}) == len(trials)
    by = {(t.settings["encoder"], tuple(t.settings["modalities"]), t.settings["fusion"],
           t.settings["data_fraction"], t.settings["seed"]): t for t in trials}  # fmt: skip
    t = by[("finetuned", ("clinical", "wsi", "rna"), "concat", 0.5, 1)]
    assert t.config.model.modalities == ["clinical", "wsi_ft", "rna_v2"]
    assert t.config.model.fusion == "concat"
    assert t.config.cv.train_fraction == 0.5 and t.config.seed == 1
    assert t.config.cv.folds == 2 and t.config.baselines == []
    assert "rna_v2" in t.config.preprocess.rna_modalities  # a renamed slot keeps its transform
    assert t.label == "clinical+wsi+rna | finetuned | concat | 50% | seed 1"
    assert t.row()["modalities"] == "clinical+wsi+rna" and t.row()["trial"] == t.id
    f = by[("frozen", ("clinical", "wsi", "rna"), "concat", 0.5, 1)]
    assert f.config.model.modalities == ["clinical", "wsi", "rna"] and f.id != t.id
    assert f.config.preprocess.rna_modalities == ["rna"]
    c = by[("frozen", ("clinical",), "concat", 0.5, 1)]
    assert c.config.preprocess == f.config.preprocess  # renames only touch the sets they hit
    assert ("finetuned", ("clinical",), "concat", 0.5, 1) not in by


def test_missing_axes_take_the_base_value():
    g = parse_grid({"base": {"seed": 7, "model": {"fusion": "concat"}}})
    (t,) = g.expand()
    assert t.settings == {"modalities": None, "encoder": "default", "fusion": "concat",
                          "data_fraction": 1.0, "seed": 7}  # fmt: skip
    assert t.config == RunConfig.model_validate({"seed": 7, "model": {"fusion": "concat"}})
    assert t.label.startswith("all | concat | 100%")


def test_ids_are_stable_and_depend_only_on_the_resolved_config():
    a = parse_grid(grid_dict()).expand()
    b = parse_grid(grid_dict()).expand()
    assert [t.id for t in a] == [t.id for t in b]
    reordered = grid_dict(fusion=["cross_attention_gated", "concat", "cross_attention"],
                          seed=[1, 0])  # fmt: skip
    assert {t.id for t in parse_grid(reordered).expand()} == {t.id for t in a}
    other_base = grid_dict(base={"cv": {"folds": 3}, "baselines": []})
    assert not {t.id for t in parse_grid(other_base).expand()} & {t.id for t in a}
    assert len(a[0].id) == 12 and int(a[0].id, 16) >= 0
    assert trial_id(a[0].config) == a[0].id
    assert trial_id(a[0].config.model_copy(deep=True)) == a[0].id


def test_modality_set_generators():
    mods = ["clinical", "wsi", "rna"]
    assert modality_sets(mods, ["single"]) == [["clinical"], ["wsi"], ["rna"]]
    assert modality_sets(mods, ["leave_one_out"]) == [["wsi", "rna"], ["clinical", "rna"],
                                                      ["clinical", "wsi"]]  # fmt: skip
    assert modality_sets(mods, ["all", "pairs"]) == [mods, ["clinical", "wsi"],
                                                     ["clinical", "rna"], ["wsi", "rna"]]  # fmt: skip
    assert modality_sets(mods, ["single", "all"], always=["clinical"]) == [
        ["clinical", "wsi"], ["clinical", "rna"], ["clinical", "wsi", "rna"]]  # fmt: skip
    g = parse_grid({"modalities": {"generate": ["single", "all"], "from": mods}})
    assert g.modalities == [["clinical"], ["wsi"], ["rna"], mods]
    one = parse_grid({"modalities": {"generate": ["single"], "from": mods, "always": "clinical"}})
    assert one.modalities == [["clinical", "wsi"], ["clinical", "rna"]]  # a name, not letters
    with pytest.raises(ValueError, match="unknown generator"):
        modality_sets(mods, ["triples"])
    # one modality besides `always`: leaving it out is the `always` arm (was: no set at all)
    assert modality_sets(["clinical", "wsi"], ["leave_one_out"], always="clinical") == [
        ["clinical"]]  # fmt: skip
    assert modality_sets(["wsi"], ["leave_one_out"]) == []
    assert modality_sets(["clinical", "wsi"], ["all", "leave_one_out"], always="clinical") == [
        ["clinical", "wsi"], ["clinical"]]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"fusion": ["concat", "concatt"]}, "fusion: fusion[1] = 'concatt' is unknown"),
        ({"data_fraction": [0.0]}, "data_fraction: data_fraction[0] = 0.0 must be in (0, 1]"),
        ({"data_fraction": [0.5, 1.5]}, "data_fraction[1] = 1.5"),
        ({"seed": [0, 0]}, "seed[1] = 0 repeats seed[0]"),
        ({"seed": []}, "seed: must list at least one value"),
        ({"modalities": [["clinical"], []]}, "modalities[1] is empty"),
        ({"modalities": [["wsi", "clinical"], ["clinical", "wsi"]]}, "modalities[1]"),
        ({"modalities": [["wsi", "wsi"]]}, "modalities[0][1] = 'wsi' repeats"),
        ({"modalities": {"generate": ["single"]}}, "'from' must list"),
        ({"modalities": {"from": ["wsi"], "genrate": ["all"]}}, "unknown key(s) ['genrate']"),
        ({"encoder": ["frozen", "tuned"]}, "encoder[1] = 'tuned' is not defined under 'encoders'"),
        ({"modalities": None}, "encoder[1] = 'finetuned' renames ['rna', 'wsi'], which needs"),
        ({"fusoin": ["concat"]}, "fusoin: unknown key"),
        ({"base": {"model": {"fusoin": "concat"}}}, "base.model.fusoin: unknown key"),
        ({"base": {"cv": {"train_fraction": 2}}}, "base.cv.train_fraction:"),
    ],
)
def test_validation_errors_name_the_key(over, needle):
    with pytest.raises(ConfigError) as err:
        parse_grid(grid_dict(**over), source="g.yaml")
    assert "invalid experiment grid g.yaml" in str(err.value)
    assert needle in str(err.value)


@pytest.mark.parametrize("over, needle", [
    ({"seeds": [0, 1]}, "seeds: unknown key (did you mean seed?)"),
    ({"base": {"model": {"fusoin": "concat"}}},
     "base.model.fusoin: unknown key (did you mean base.model.fusion?)"),
    ({"base": {"train": {"epoch": 3}}}, "base.train.epoch: unknown key (did you mean"
                                        " base.train.epochs?)"),
])  # fmt: skip
def test_a_typo_in_a_grid_says_which_key_was_meant(over, needle):
    """A grid's unknown key was named without the suggestion a run config's typo gets."""
    with pytest.raises(ConfigError) as err:
        parse_grid(grid_dict(**over), source="g.yaml")
    assert needle in str(err.value)


def test_the_base_data_params_are_checked_when_the_grid_is_read():
    """Was: found only when the first trial loaded its data, as "invalid config <dict>"."""
    base = {"data": {"source": "chimera", "name": "task1", "path": "/x",
                     "params": {"max_tiles": 0}}}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_grid(grid_dict(base=base), source="g.yaml")
    assert "experiment grid g.yaml" in str(err.value)
    assert "base.data.params.max_tiles: 0" in str(err.value)
    from modalsurv.config import DataConfig
    from modalsurv.data.sources import load_data

    with pytest.raises(ConfigError) as err:  # a DataConfig built in code: named by source
        load_data(DataConfig(**base["data"]))
    assert "<dict>" not in str(err.value) and "chimera task1 /x" in str(err.value)


def test_load_grid_with_base_path_and_cohort_check(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ncv: {folds: 4}\n")
    (tmp_path / "g.yaml").write_text(
        "base: base.yaml\nmodalities: [[clinical, mri]]\nfusion: [concat]\n"
    )
    g = load_grid(tmp_path / "g.yaml")
    (t,) = g.expand()
    assert t.config.seed == 3 and t.config.cv.folds == 4
    g.check_cohort(["clinical", "mri", "wsi"])
    with pytest.raises(ConfigError, match=r"needs modalities \['mri'\] that the cohort lacks"):
        g.check_cohort(["clinical", "wsi"])
    (tmp_path / "bad.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base: file .*nowhere.yaml does not exist"):
        load_grid(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_grid(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    ("name", "n_trials"),
    [("ablation.yaml", 11 * 2), ("fusion.yaml", 5 * 3), ("scaling.yaml", 4 * 3),
     ("clinical_baseline.yaml", 2 * 3)],
)
def test_example_grids_load_and_expand(name, n_trials):
    g = load_grid(CONFIGS / name)
    assert isinstance(g, ExperimentGrid)
    trials = g.expand()
    assert len(trials) == n_trials
    from modalsurv.data.sources import load_cohort  # noqa: F401 - data section must be loadable

    assert g.base.data.source == "synthetic"


def test_built_in_encoder_labels_set_the_fine_tuning_mode():
    plain = {"stack": "none"}  # fine-tuning adapts the plain network
    g = parse_grid({"name": "ft", "base": {"baselines": [], "finetune": {"lr": 1e-4},
                                           "model": plain},
                    "modalities": [["clinical"], ["clinical", "wsi"]],
                    "encoder": ["frozen", "finetune_last", "lora"]})  # fmt: skip
    trials = g.expand()
    modes = {(t.settings["modalities"][-1], t.settings["encoder"]): t.config.finetune.mode
             for t in trials}  # fmt: skip
    # a set without wsi keeps the base (frozen): its three labels are one trial
    assert len(trials) == 1 + 3 and modes[("clinical", "frozen")] == "frozen"
    assert modes[("wsi", "finetune_last")] == "last_k" and modes[("wsi", "lora")] == "lora"
    assert all(t.config.finetune.lr == 1e-4 for t in trials)
    mri = parse_grid({"name": "m", "base": {"finetune": {"encoder": "mri"}, "model": plain},
                      "encoder": ["frozen", "finetune_last"]})  # fmt: skip
    with pytest.raises(ConfigError, match="set base.model.stack: none"):
        parse_grid({"name": "m", "base": {"finetune": {"encoder": "mri"}},
                    "encoder": ["frozen", "finetune_last"]})  # fmt: skip
    assert [t.config.finetune.mode for t in mri.expand()] == ["frozen", "last_stage"]
    with pytest.raises(ConfigError, match="'lora' does not apply to base.finetune.encoder 'mri'"):
        parse_grid({"name": "m", "base": {"finetune": {"encoder": "mri"}}, "encoder": ["lora"]})
    # a frozen label resolves to the very config (and trial id) of a plain run
    plain = parse_grid({"name": "p", "base": {"baselines": []}}).expand()[0]
    frozen = parse_grid({"name": "p", "base": {"baselines": []}, "encoder": ["frozen"]})
    assert frozen.expand()[0].id == plain.id


def test_the_shipped_fine_tuning_grid_crosses_encoders_with_data_fractions():
    g = load_grid(CONFIGS / "finetune.yaml")
    trials = g.expand()
    assert len(trials) == 3 * 3 and g.base.train.n_init == 1
    assert {t.config.finetune.mode for t in trials} == {"frozen", "last_k", "lora"}
    assert {t.config.cv.train_fraction for t in trials} == {0.25, 0.5, 1.0}


@pytest.mark.parametrize("over, needle", [
    ({"seed": [0, -1]}, "seed=-1"),
    ({"seed": [2**31]}, "seed=2147483648"),
    ({"base": {"model": {"latent_dim": 30, "n_heads": 4, "fusion": "concat"}, "cv": {"folds": 2}},
      "fusion": ["concat", "cross_attention"]}, "fusion=cross_attention"),
])  # fmt: skip
def test_an_axis_value_the_trial_config_refuses_is_a_config_error_naming_the_trial(over,
                                                                                   needle):  # fmt: skip
    """Was: a raw pydantic ValidationError (an internal error, exit 3) from expand()."""
    g = parse_grid(grid_dict(**{"modalities": None, "encoder": None, "encoders": {},
                                "data_fraction": None, **over}), source="g.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match=rf"invalid experiment grid 't' trial .*{needle}"):
        g.expand()


def test_a_grid_resumed_with_another_train_threads_skips_its_finished_trials(tmp_path):
    """train.threads changes only the order floats are summed in (a resumed `train` warns
    and goes on), but it changed every trial's id: the resumed grid ran every trial again
    from nothing. Another real change still makes other trials."""
    from modalsurv.data.synthetic import make_cohort
    from modalsurv.experiments.runners import run_grid

    def grid(**train):
        return parse_grid({"name": "t", "base": {
            "model": {"latent_dim": 8, "hidden_dim": 8, "n_bins": 5, "stack": "none",
                      "modalities": ["clinical"]},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu", **train},
            "cv": {"folds": 2}, "baselines": []}})  # fmt: skip

    assert grid(threads=2).expand()[0].id == grid(threads=1).expand()[0].id
    import hashlib
    import json

    plain = json.dumps(grid().expand()[0].config.model_dump(mode="json"), sort_keys=True,
                       separators=(",", ":"))  # fmt: skip
    assert grid().expand()[0].id == hashlib.sha256(plain.encode()).hexdigest()[:12]  # kept
    assert grid(threads=2, epochs=2).expand()[0].id != grid(threads=2).expand()[0].id
    cohort, _ = make_cohort(n=40, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=20)  # fmt: skip
    first = run_grid(grid(threads=2), cohort, tmp_path)
    seen = []
    again = run_grid(grid(threads=1), cohort, tmp_path, progress=lambda e, **i: seen.append(e))
    assert "trial_skipped" in seen and "trial_end" not in seen
    assert [p.name for p in (tmp_path / "trials").iterdir()] == list(first["trial"])
    assert list(again["trial"]) == list(first["trial"])
