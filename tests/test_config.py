import re

import pytest

from modalsurv.config import RunConfig, dump_config, load_config, parse_config
from modalsurv.errors import ConfigError


def test_defaults_are_the_paper_setup():
    cfg = RunConfig()
    assert cfg.model.fusion == "cross_attention_gated"
    assert cfg.model.n_bins == 30 and cfg.model.latent_dim == 128
    assert cfg.cv.folds == 5 and cfg.cv.selection == "inner"


def test_unknown_key_is_named_with_its_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  fusoin: concat\ntrain:\n  lr: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "model.fusoin: unknown key" in msg
    assert "train.lr" in msg and str(p) in msg


def test_round_trip_resolved_yaml(tmp_path):
    cfg = parse_config({"seed": 7, "model": {"fusion": "concat"}})
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="baselines"):
        parse_config({"baselines": ["magic"]})


def test_pca_settings_take_a_count_auto_or_none():
    cfg = parse_config({"preprocess": {"bag_pca": "auto", "vector_pca": 32}})
    assert cfg.preprocess.bag_pca == "auto" and cfg.preprocess.vector_pca == 32
    assert parse_config({"preprocess": {"vector_pca": None}}).preprocess.vector_pca is None
    for bad in (0, "most"):
        with pytest.raises(ConfigError, match="preprocess.bag_pca"):
            parse_config({"preprocess": {"bag_pca": bad}})


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"dropout": [0.0, 1.5]}, r"search.dropout must lie in \[0, 1\)"),
        ({"dropout": [0.2, 1.0]}, r"search.dropout must lie in \[0, 1\)"),
        ({"dropout": [-0.1, 0.3]}, r"search.dropout must lie in \[0, 1\)"),
        ({"epochs": [0, 10]}, "search.epochs must be >= 1"),
        ({"latent_dim": [0, 64]}, "search.latent_dim"),
        ({"latent_dim": []}, "search.latent_dim"),
        ({"trials": 2, "latent_dim": [30, 64]}, r"search.latent_dim \[30\] not divisible by"
                                                " model.n_heads 4"),
    ],
)
def test_search_ranges_are_checked_when_the_config_is_read(search, needle):
    """A range a trial would only refuse minutes into the run is refused up front."""
    with pytest.raises(ConfigError, match=needle):
        parse_config({"search": search})


def test_search_sizes_need_the_heads_only_when_searching():
    assert parse_config({"search": {"latent_dim": [30]}}).search.latent_dim == [30]


def test_values_that_would_fail_later_are_refused_when_the_config_is_read(tmp_path):
    """inf (JSON would save it as null), a seed NumPy refuses, a repeated baseline (each
    fold scored twice, found after every fold trained), an empty modality list (it meant
    every modality) and a YAML key given twice (the first section silently dropped)."""
    from modalsurv.config import RunConfig, load_config, set_values
    from modalsurv.errors import ConfigError

    for values, words in ((["train.lr=.inf"], "finite"), (["loss.sigma=.inf"], "finite"),
                          (["search.lr=[1e-4,.inf]"], "finite"), (["seed=-1"], "seed"),
                          (["seed=4294967296"], "seed"),
                          (["baselines=[coxph_clinical,coxph_clinical]"], "repeat"),
                          (["model.modalities=[]"], "model.modalities")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            set_values(RunConfig(), values)
    # a searched latent size only has to divide by the heads when the fusion has heads
    cfg = set_values(RunConfig(), ["search.trials=2", "search.latent_dim=[30]",
                                   "model.fusion=concat"])  # fmt: skip
    assert cfg.search.latent_dim == [30]
    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {epochs: 3}\nmodel: {fusion: concat}\ntrain: {lr: 0.01}\n")
    with pytest.raises(ConfigError, match="'train' given twice"):
        load_config(twice)


def test_data_params_of_the_wrong_type_are_refused_when_read():
    """YAML reads 1e3 as a string: it failed inside the synthetic loader (internal error)."""
    from modalsurv.config import RunConfig, set_values
    from modalsurv.errors import ConfigError

    for value in ("1e3", "abc", "true"):
        with pytest.raises(ConfigError, match=r"data.params.n: expected int"):
            set_values(RunConfig(), [f"data.params.n={value}"])
    cfg = set_values(RunConfig(), ["data.params.n=100", "data.params.noise=1"])  # int as float
    assert cfg.data.params == {"n": 100, "noise": 1}


def test_data_params_values_are_checked_when_read():
    """A loader's choice, the tile cap and the CHIMERA endpoint: these failed inside the
    loader (internal errors, a data error blaming the first patient) or, for ``event`` on
    task 1, were silently ignored."""
    from modalsurv.config import parse_config
    from modalsurv.errors import ConfigError

    def chimera(task, **params):
        return {"data": {"source": "chimera", "name": task, "path": "/x", "params": params}}

    for params, words in (({"layout": "foo"}, r"unknown key\(s\) \['layout'\]"),
                          ({"max_tiles": 0}, r"data.params.max_tiles: 0; a bag keeps at least 1"),
                          ({"max_tiles": -3}, "data.params.max_tiles: -3"),
                          ({"slide_policy": "bogus"}, r"slide_policy: 'bogus' is not one of"),
                          ({"event": "progression"}, "task 1 has one endpoint, BCR")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse_config(chimera("task1", **params))
    with pytest.raises(ConfigError, match=r"task 3's endpoints are \['progression', 'HG_recur'\]"):
        parse_config(chimera("task3", event="HG_recurr"))
    ok = parse_config(chimera("task3", event="HG_recur", max_tiles=None, slide_policy="mean"))
    assert ok.data.params["event"] == "HG_recur"
    assert parse_config(chimera("task1", event="BCR", max_tiles=1)).data.params["max_tiles"] == 1


def test_a_boolean_is_refused_where_a_number_is_meant_and_the_seed_leaves_room():
    """``bag_pca: true`` became 1 component (pydantic reads True as 1), and a seed near
    2**32 crashed the folds whose seeds are derived from it (seed + offsets)."""
    from modalsurv.config import RunConfig, parse_config, set_values
    from modalsurv.errors import ConfigError

    for value in ("preprocess.bag_pca=true", "train.threads=true", "train.epochs=false",
                  "preprocess.rna_top_variance_genes=yes", "model.stack=off"):  # fmt: skip
        with pytest.raises(ConfigError, match="is a boolean, which this key does not take"):
            set_values(RunConfig(), [value])
    assert set_values(RunConfig(), ["preprocess.rna_log1p=true"]).preprocess.rna_log1p is True
    with pytest.raises(ConfigError, match="seed"):
        parse_config({"seed": 2**31})
    assert parse_config({"seed": 2**31 - 1}).seed == 2**31 - 1


def test_a_malformed_set_value_is_one_line_naming_the_key():
    """Was PyYAML's five-line message with carets and '<unicode string>' positions."""
    from modalsurv.config import RunConfig, set_values

    with pytest.raises(ConfigError) as err:
        set_values(RunConfig(), ["train.epochs=[3"])
    text = str(err.value)
    assert "\n" not in text and "train.epochs" in text and "'[3'" in text
    assert "<unicode string>" not in text


def test_an_unknown_key_says_which_known_key_was_meant(tmp_path):
    """A typo was named but not corrected: ``train.dropout`` (a model key), ``model.lr``
    (a train key) or ``cv.fold`` left the user to find the spelling in the docs."""
    p = tmp_path / "run.yaml"
    p.write_text("cv:\n  fold: 3\ntrain:\n  dropout: 0.1\nepochs: 3\nmodle: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg
    assert "cv.fold: unknown key (did you mean cv.folds?)" in msg
    assert "train.dropout: unknown key (did you mean model.dropout" in msg
    assert "epochs: unknown key (did you mean train.epochs" in msg
    assert "modle: unknown key (did you mean model?)" in msg
    with pytest.raises(ConfigError, match=r"train.learning_rate: unknown key$"):
        parse_config({"train": {"learning_rate": 0.1}})  # nothing close: no guess


def test_a_yaml_boolean_in_a_list_of_names_says_why(tmp_path):
    """``modalities: [clinical, no]`` said only 'Input should be a valid string (got
    False)'; a single value already named YAML's yes/no/on/off."""
    p = tmp_path / "run.yaml"
    p.write_text("model:\n  modalities: [clinical, no]\nbaselines: [rsf, off]\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    for key in ("model.modalities.1", "baselines.1"):
        assert re.search(rf"{re.escape(key)}: .*YAML reads yes/no/on/off as booleans", str(err.value))
    p.write_text("model:\n  modalities: [clinical, 'no']\n")  # quoted: a name
    assert load_config(p).model.modalities == ["clinical", "no"]


def test_a_set_value_cut_short_by_a_yaml_comment_is_refused():
    """``--set data.path='/data/run #2/cohort.csv'`` (the shell drops the quotes) read
    '/data/run' silently: YAML starts a comment at ' #'. A '#' YAML keeps is fine."""
    from modalsurv.config import set_values

    for item, read in (("data.path=/data/run #2/cohort.csv", "'/data/run'"),
                       ("data.path=#2.csv", "None")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"reads as {read}, YAML taking '#'.*quote"):
            set_values(RunConfig(), ["data.source=manifest", item])
    for item, path in (("data.path=/data/run#2.csv", "/data/run#2.csv"),
                       ("data.path='/data/run #2.csv'", "/data/run #2.csv")):  # fmt: skip
        assert set_values(RunConfig(), ["data.source=manifest", item]).data.path == path


def test_a_set_list_written_as_a_word_says_how_to_write_a_list():
    from modalsurv.config import set_values

    with pytest.raises(ConfigError, match=r"baselines: .*\(a list is written \[a, b\]\)"):
        set_values(RunConfig(), ["baselines=rsf"])
    assert set_values(RunConfig(), ["baselines=[rsf]"]).baselines == ["rsf"]


def test_an_integer_in_exponent_notation_says_yaml_read_it_as_text(tmp_path):
    """``epochs: 1e2`` is text to PyYAML: 'unable to parse string as an integer' left the
    user staring at a number."""
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  epochs: 1e2\npreprocess:\n  rna_pca: 6.4E1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    for key in ("train.epochs", "preprocess.rna_pca"):
        assert re.search(rf"{key}: .*YAML reads 1e3 as text: write the digits", str(err.value))
    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"epochs": "ten"}})
    assert "YAML reads" not in str(err.value)
    p.write_text("train:\n  lr: 1e-3\n")  # a float key reads the text as the number
    assert load_config(p).train.lr == 0.001


def test_yaml_octal_and_base_60_numbers_are_refused_with_the_reading(tmp_path):
    """YAML 1.1 reads ``seed: 010`` as 8 and ``epochs: 1:30`` as 90: a run then used a seed
    or length its author never wrote. Both are refused (file and --set), saying what YAML
    read; quoted, ``0`` and ``1_000`` are as before."""
    from modalsurv.config import set_values

    p = tmp_path / "cfg.yaml"
    for text, reading in (("seed: 010\n", "octal number 8"),
                          ("train:\n  epochs: 1:30\n", "base-60 .*number 90"),
                          ("train:\n  lr: 1:30.5\n", "base-60 .*number 90.5")):  # fmt: skip
        p.write_text(text)
        with pytest.raises(ConfigError, match=rf"cfg.yaml .*reads as the {reading} in YAML 1.1"):
            load_config(p)
    with pytest.raises(ConfigError, match=r"seed: '010' .*octal number 8 .*leading zeros"):
        set_values(RunConfig(), ["seed=010"])
    p.write_text("seed: 0\ntrain:\n  epochs: 1_000\n")
    cfg = load_config(p)
    assert (cfg.seed, cfg.train.epochs) == (0, 1000)
    assert set_values(RunConfig(), ["seed=10"]).seed == 10
