import numpy as np
import pandas as pd
import pytest

from modalsurv.data.synthetic import make_cohort
from modalsurv.errors import ConfigError
from modalsurv.experiments.grid import parse_grid
from modalsurv.experiments.paired import paired_table
from modalsurv.experiments.runners import LocalRunner, run_grid
from modalsurv.train.compare import corrected_resampled_ttest

BASE = {
    "preprocess": {"rna_top_variance_genes": 10, "rna_pca": 3},
    "model": {"latent_dim": 8, "hidden_dim": 8, "attention_pool_dim": 8, "n_heads": 2,
              "n_bins": 5},
    "train": {"epochs": 2, "patience": 2, "batch_size": 16, "device": "cpu", "n_init": 1},
    "cv": {"folds": 3},
    "baselines": [],
}


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    cohort, _ = make_cohort(n=48, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=20)  # fmt: skip
    grid = parse_grid({"name": "paired", "base": BASE, "seed": [0, 1],
                       "modalities": [["clinical", "rna"], ["clinical"]],
                       "data_fraction": [1.0, 0.5]})  # fmt: skip
    out = tmp_path_factory.mktemp("grid")
    res = run_grid(grid, cohort, out, runner=LocalRunner())
    assert (res["status"] == "ok").all()
    return out, res


def _folds(out, res, modalities, fraction, seed):
    row = res[(res.modalities == modalities) & (res.data_fraction == fraction)
              & (res.seed == seed) & (res.model == "modalsurv")].iloc[0]  # fmt: skip
    m = pd.read_csv(out / "trials" / row["trial"] / "metrics.csv")
    return m[m.model == "modalsurv"].set_index(["repeat", "fold"])


def _differences(out, res, setting, reference):
    """Harrell C of ``setting`` minus ``reference`` ((modalities, fraction) pairs), seeds 0, 1."""
    return np.concatenate([
        (_folds(out, res, *setting, s)["harrell_c"]
         - _folds(out, res, *reference, s)["harrell_c"]).to_numpy()
        for s in (0, 1)
    ])  # fmt: skip


def test_each_setting_is_paired_with_the_reference_fold_by_fold_and_seed_by_seed(grid_dir):
    out, res = grid_dir
    table = paired_table(out)  # reference: the first setting, clinical+rna at 100 %
    assert len(table) == 3
    assert set(table["reference"]) == {"clinical+rna | cross_attention_gated | 100%"}
    row = table[(table.modalities == "clinical") & (table.data_fraction == 1.0)].iloc[0]
    d = _differences(out, res, ("clinical", 1.0), ("clinical+rna", 1.0))
    expect = corrected_resampled_ttest(d, 1 / 2)  # 3 folds: n_test / n_train = 1/2
    got = (row.mean_difference, row.ci_low, row.ci_high, row.p_value)
    assert got == pytest.approx(expect)
    assert row.n_pairs == 6 and row.n_seeds == 2
    # a half-size training part: the variance correction uses its smaller n_train
    half = table[(table.modalities == "clinical+rna") & (table.data_fraction == 0.5)].iloc[0]
    d = _differences(out, res, ("clinical+rna", 0.5), ("clinical+rna", 1.0))
    assert half.ci_high == pytest.approx(corrected_resampled_ttest(d, 1 / (2 * 0.5))[2])


def test_a_chosen_reference_and_other_metrics(grid_dir):
    out, _ = grid_dir
    table = paired_table(out, reference={"modalities": "clinical", "data_fraction": 1.0},
                         metric="ibs")  # fmt: skip
    assert set(table["reference"]) == {"clinical | cross_attention_gated | 100%"}
    assert (table["metric"] == "ibs").all() and len(table) == 3
    with pytest.raises(ValueError, match="matches 2 grid settings"):
        paired_table(out, reference={"modalities": "clinical"})
    with pytest.raises(ValueError, match="matches no grid settings"):
        paired_table(out, reference={"fusion": "concat"})
    with pytest.raises(ValueError, match="not grid settings"):
        paired_table(out, reference={"seed": 0})
    with pytest.raises(ValueError, match="no finished trial has model 'rsf'"):
        paired_table(out, model="rsf")


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no grid results"):
        paired_table(tmp_path)


def test_leave_one_site_out_grids_use_the_folds_own_sizes(tmp_path):
    from modalsurv.cohort import concat_cohorts

    small = {"max_tiles": 4, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 20}
    sites = concat_cohorts([make_cohort(n=40, seed=0, task=3, **small)[0],
                            make_cohort(n=24, seed=1, task=3, external=True, **small)[0]])
    base = {**BASE, "cv": {"groups": "site"}}
    grid = parse_grid({"name": "sites", "base": base, "fusion": ["concat", "mean"]})
    res = run_grid(grid, sites, tmp_path, runner=LocalRunner())
    assert (res["status"] == "ok").all() and (res["harrell_c_n"] == 2).all()
    (row,) = paired_table(tmp_path).itertuples()
    d = [(_sites_c(tmp_path, res, "mean") - _sites_c(tmp_path, res, "concat"))]
    expect = corrected_resampled_ttest(np.concatenate(d), (40 / 24 + 24 / 40) / 2)
    assert (row.mean_difference, row.ci_low, row.ci_high, row.p_value) == pytest.approx(expect)
    assert row.n_pairs == 2


def _sites_c(out, res, fusion):
    trial = res[res.fusion == fusion]["trial"].iloc[0]
    m = pd.read_csv(out / "trials" / trial / "metrics.csv")
    return m[m.model == "modalsurv"]["harrell_c"].to_numpy()


def test_by_compares_each_group_with_its_own_reference(grid_dir):
    out, res = grid_dir
    table = paired_table(out, reference={"modalities": "clinical+rna"}, by=["data_fraction"])
    assert len(table) == 2  # clinical vs clinical+rna, at 100 % and at 50 %
    for fraction in (1.0, 0.5):
        row = table[table.data_fraction == fraction].iloc[0]
        assert row.modalities == "clinical" and f"{fraction:.0%}" in row.reference
        d = _differences(out, res, ("clinical", fraction), ("clinical+rna", fraction))
        assert row.mean_difference == pytest.approx(d.mean())
    with pytest.raises(ConfigError, match="not grid settings"):
        paired_table(out, by=["colour"])
