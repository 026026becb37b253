import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

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


def _write_grid(out, trials, cv):
    """A finished grid folder as ``run_grid`` leaves it, written by hand: ``trials`` maps a
    trial id to (modalities, data_fraction, seed, per-fold metrics rows); ``cv`` is the
    ``cv`` block of every trial's config.yaml."""
    rows = []
    for trial, (modalities, fraction, seed, folds) in trials.items():
        (out / "trials" / trial).mkdir(parents=True)
        (out / "trials" / trial / "config.yaml").write_text(yaml.safe_dump({"cv": cv}))
        pd.DataFrame(folds).assign(model="modalsurv").to_csv(
            out / "trials" / trial / "metrics.csv", index=False)
        rows.append({"trial": trial, "status": "ok", "model": "modalsurv", "seed": seed,
                     "modalities": modalities, "encoder": "default", "fusion": "concat",
                     "data_fraction": fraction})  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)


def _by_hand(d, ratio, level=0.95):
    """The corrected resampled t-test (Nadeau & Bengio 2003) of differences ``d``."""
    d = np.asarray(d, dtype=float)
    j = len(d)
    se = np.sqrt((1 / j + ratio) * d.var(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, j - 1) * se
    return d.mean(), d.mean() - half, d.mean() + half, 2 * stats.t.sf(abs(d.mean() / se), j - 1)


def test_repeats_are_paired_repeat_by_repeat_not_across(tmp_path):
    """With ``cv.repeats: 2`` fold ``f`` of repeat 0 and fold ``f`` of repeat 1 are
    different test sets: each is paired only with the reference's same repeat and fold,
    so 3 folds x 2 repeats give 6 pairs, with the differences computed here by hand."""
    keys = [(r, f) for r in range(2) for f in range(3)]
    ref_c = [0.60, 0.70, 0.65, 0.55, 0.75, 0.62]
    mine_c = [0.62, 0.69, 0.70, 0.60, 0.74, 0.70]
    folds = [{"repeat": r, "fold": f, "n_test": 20, "n_train": 40} for r, f in keys]

    def rows(c):
        return [{**k, "harrell_c": v} for k, v in zip(folds, c, strict=True)]

    _write_grid(tmp_path, {"a": ("clinical+rna", 1.0, 0, rows(ref_c)),
                           "b": ("clinical", 1.0, 0, rows(mine_c))},
                {"folds": 3, "repeats": 2})  # fmt: skip
    (row,) = paired_table(tmp_path).itertuples()
    d = np.array(mine_c) - np.array(ref_c)
    assert row.n_pairs == 6 and row.n_seeds == 1
    expect = _by_hand(d, 1 / 2)  # 3 folds: n_test / n_train = 1 / (3 - 1)
    assert (row.mean_difference, row.ci_low, row.ci_high, row.p_value) == pytest.approx(expect)


def test_a_split_two_seeds_share_counts_once(tmp_path):
    """Repeat r of seed s draws its folds with random_state s + r: with 2 repeats, seed 0's
    repeat 1 is seed 1's repeat 0. Was: 12 pairs as if 4 independent splits; now the
    shared split's differences are averaged: 3 splits x 3 folds = 9 pairs."""
    from modalsurv.data.synthetic import make_cohort as synthetic
    from modalsurv.train.cv import make_folds

    cohort, _ = synthetic(n=30, seed=3, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                          n_genes=8)  # fmt: skip
    keys = [(r, f) for r in range(2) for f in range(3)]
    rng = np.random.default_rng(0)
    trials, folds_of = {}, {}
    for seed in (0, 1):
        folds_of[seed] = make_folds(cohort, 3, 2, seed)
        for name, mods in (("a", "clinical+rna"), ("b", "clinical")):
            c = rng.uniform(0.5, 0.8, size=6)
            rows = [{"repeat": r, "fold": f, "n_test": 10, "n_train": 20, "harrell_c": v}
                    for (r, f), v in zip(keys, c, strict=True)]  # fmt: skip
            trials[f"{name}{seed}"] = (mods, 1.0, seed, rows)
    _write_grid(tmp_path, trials, {"folds": 3, "repeats": 2})
    for seed in (0, 1):
        for name in "ab":
            folds_of[seed].to_csv(tmp_path / "trials" / f"{name}{seed}" / "folds.csv", index=False)
    same = folds_of[0][folds_of[0].repeat == 1].drop(columns="repeat").reset_index(drop=True)
    other = folds_of[1][folds_of[1].repeat == 0].drop(columns="repeat").reset_index(drop=True)
    pd.testing.assert_frame_equal(same, other)  # the premise: one split under two seeds
    (row,) = paired_table(tmp_path).itertuples()
    assert row.n_pairs == 9 and row.n_seeds == 2
    d = {}
    for seed in (0, 1):
        mine, ref = trials[f"b{seed}"][3], trials[f"a{seed}"][3]
        for m, r in zip(mine, ref, strict=True):
            split = "shared" if (seed, m["repeat"]) in ((0, 1), (1, 0)) else (seed, m["repeat"])
            d.setdefault((split, m["fold"]), []).append(m["harrell_c"] - r["harrell_c"])
    expect = _by_hand([np.mean(v) for v in d.values()], 1 / 2)
    assert (row.mean_difference, row.ci_low, row.ci_high, row.p_value) == pytest.approx(expect)


def test_grouped_folds_take_the_larger_test_train_ratio_of_the_two_settings(tmp_path):
    """Leave-one-group-out with unequal groups: the half-data setting trains on half the
    rows, so its folds' mean n_test / n_train is twice the reference's; the variance
    correction must use that larger ratio (the conservative one), by hand here."""
    sizes = [40, 24, 16]  # patients per site: each fold tests one site
    total = sum(sizes)

    def rows(c, fraction):
        return [{"repeat": 0, "fold": f, "harrell_c": v, "n_test": n,
                 "n_train": int((total - n) * fraction)}
                for f, (n, v) in enumerate(zip(sizes, c, strict=True))]  # fmt: skip

    ref_c, mine_c = [0.70, 0.64, 0.58], [0.66, 0.65, 0.50]
    _write_grid(tmp_path, {"a": ("clinical", 1.0, 0, rows(ref_c, 1.0)),
                           "b": ("clinical", 0.5, 0, rows(mine_c, 0.5))},
                {"groups": "site"})  # fmt: skip
    (row,) = paired_table(tmp_path).itertuples()
    ratio_ref = np.mean([n / (total - n) for n in sizes])
    ratio_half = np.mean([n / int((total - n) * 0.5) for n in sizes])
    assert ratio_half > 1.9 * ratio_ref
    expect = _by_hand(np.array(mine_c) - np.array(ref_c), ratio_half)
    assert (row.mean_difference, row.ci_low, row.ci_high, row.p_value) == pytest.approx(expect)
    assert row.n_pairs == 3


def test_a_numeric_reference_matches_by_value_and_the_error_lists_the_values():
    """`--reference data_fraction=1` is the grid's 1.0 (the command line gives text)."""
    from modalsurv.experiments.paired import check_comparison

    rows = [{"modalities": m, "encoder": "default", "fusion": "concat", "data_fraction": f,
             "seed": 0} for m in ("clinical", "clinical+rna") for f in (0.5, 1.0)]  # fmt: skip
    check_comparison(rows, {"modalities": "clinical", "data_fraction": "1"})
    check_comparison(rows, {"modalities": "clinical", "data_fraction": "0.50"})
    check_comparison(rows, {"modalities": "clinical", "data_fraction": "1"}, by=["fusion"])
    with pytest.raises(ConfigError, match=r"data_fraction=0\.5\|1\.0.*numbers match by value"):
        check_comparison(rows, {"modalities": "clinical", "data_fraction": "0.7"})
    with pytest.raises(ConfigError, match=r"modalities=clinical\|clinical\+rna"):
        check_comparison(rows, {"modalities": "rna"})


def test_a_finished_grid_trial_has_fold_fingerprints(grid_dir):
    """A grid trial kept no folds.csv (it lived in its checkpoints, removed at the end), so
    split_keys found nothing in a real grid and a split shared by two seeds counted twice;
    now a finished trial keeps folds.csv (and predictions.csv stands in for older ones):
    fingerprints equal for same-seed trials."""
    from modalsurv.experiments.paired import split_keys

    out, res = grid_dir
    ok = res[res.model == "modalsurv"]
    for seed in (0, 1):
        keys = [split_keys(out / "trials" / t, seed) for t in ok[ok.seed == seed]["trial"]]
        assert keys[0] and all(k == keys[0] for k in keys)


def _split_grid(tmp_path, assign_b):
    """Trials a (reference) and b of seed 0 and 1, 3 folds x 2 repeats; predictions.csv (no
    folds.csv, as a grid leaves them) from make_folds, b's seed-0 folds via ``assign_b``."""
    from modalsurv.data.synthetic import make_cohort as synthetic
    from modalsurv.train.cv import make_folds

    cohort, _ = synthetic(n=30, seed=3, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                          n_genes=8)  # fmt: skip
    rng = np.random.default_rng(0)
    trials, folds_of = {}, {s: make_folds(cohort, 3, 2, s) for s in (0, 1)}
    for seed in (0, 1):
        for name, mods in (("a", "clinical+rna"), ("b", "clinical")):
            c = rng.uniform(0.5, 0.8, size=6)
            rows = [{"repeat": i // 3, "fold": i % 3, "n_test": 10, "n_train": 20,
                     "harrell_c": v} for i, v in enumerate(c)]  # fmt: skip
            trials[f"{name}{seed}"] = (mods, 1.0, seed, rows)
    _write_grid(tmp_path, trials, {"folds": 3, "repeats": 2})
    for name, seed in [(n, s) for n in "ab" for s in (0, 1)]:
        folds = folds_of[seed] if (name, seed) != ("b", 0) else assign_b(folds_of[0])
        folds.assign(risk=0.0).to_csv(tmp_path / "trials" / f"{name}{seed}" / "predictions.csv",
                                      index=False)  # fmt: skip
    return trials


def test_a_shared_split_counts_once_from_the_predictions(tmp_path):
    """As test_a_split_two_seeds_share_counts_once, with predictions.csv only: 9 pairs, not
    12 (the old code found no fingerprint and took 4 independent splits)."""
    _split_grid(tmp_path, lambda f: f)
    (row,) = paired_table(tmp_path).itertuples()
    assert row.n_pairs == 9 and row.n_seeds == 2


def test_trials_on_different_folds_are_not_paired(tmp_path):
    """Same seed, same fold numbers, other patients in them: pairing fold f with fold f
    would compare different test sets; it is refused, naming the settings."""

    def shuffled(f):
        return f.assign(fold=(f["fold"] + f.index.to_numpy() % 2) % 3)

    _split_grid(tmp_path, shuffled)
    with pytest.raises(ValueError, match="seed 0: clinical .* different outer folds"):
        paired_table(tmp_path)
