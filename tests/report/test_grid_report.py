"""A grid's report: forest plots per axis, the data-scaling curve with fusion against
clinical-only, the checks per trial and the embedding alignment per fusion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modalsurv.experiments import grid_report as G
from modalsurv.experiments.paired import paired_table
from modalsurv.train.compare import corrected_resampled_ttest

from .conftest import invoke


def test_experiment_writes_the_grid_page(grid_dir):
    text = (grid_dir / "report.html").read_text("utf-8")
    heads = re.findall(r"<h2 id='[^']*'>([^<]*)</h2>", text)
    for want in ("Trials", "Every setting minus the reference", "Modality ablation",
                 "Fusion comparison", "Data scaling", "Fusion against clinical-only by",
                 "Multimodal minus clinical-only",
                 "Failure-signature checks per trial", "Modality embedding alignment per fusion"):
        assert any(h.startswith(want) for h in heads), want
    for name in ("forest-ablation", "forest-fusion", "data-scaling", "embedding-alignment"):
        assert (grid_dir / "report_data" / f"{name}.csv").is_file(), name
    assert "Frozen / fine-tuned" not in text  # the grid has no encoder axis


def test_forest_rows_are_the_paired_table_of_one_axis(grid_dir):
    results = G.load_results(grid_dir)
    paired = pd.read_csv(grid_dir / "paired.csv")
    ref = G.reference_setting(results, paired)
    assert ref == {"modalities": "clinical", "encoder": "default", "fusion": "concat",
                   "data_fraction": 0.5}  # the grid's first setting, as `experiment` used
    rows = G.axis_rows(paired, ref, "fusion")
    assert rows["label"].tolist() == ["cross_attention_gated"]
    want = paired[(paired.fusion == "cross_attention_gated") & (paired.modalities == "clinical")
                  & (paired.data_fraction == 0.5)].iloc[0]  # fmt: skip
    assert rows.iloc[0]["mean"] == want["mean_difference"] and rows.iloc[0]["high"] == want["ci_high"]
    forest = pd.read_csv(grid_dir / "report_data" / "forest-ablation.csv")
    assert forest["label"].tolist() == ["clinical+rna"]


def test_scaling_curve_pools_folds_and_seeds_with_the_corrected_interval(grid_dir):
    results = G.load_results(grid_dir)
    folds = G.fold_table(grid_dir, results)
    table = G.scaling_table(folds, ["modalities", "fusion"])
    lines = set(table["line"])
    assert lines == {"clinical | concat", "clinical | cross_attention_gated",
                     "clinical+rna | concat", "clinical+rna | cross_attention_gated",
                     "clinical | concat (network alone)",
                     "clinical | cross_attention_gated (network alone)",
                     "clinical+rna | concat (network alone)",
                     "clinical+rna | cross_attention_gated (network alone)",
                     "coxph_clinical"}  # the baseline once, not once per trial
    row = table[(table.line == "clinical+rna | concat") & (table.data_fraction == 0.5)].iloc[0]
    trial = results[(results.modalities == "clinical+rna") & (results.fusion == "concat")
                    & (results.data_fraction == 0.5) & (results.model == "modalsurv")]
    m = pd.read_csv(grid_dir / "trials" / trial["trial"].iloc[0] / "metrics.csv")
    m = m[m.model == "modalsurv"]
    mean, lo, hi, _ = corrected_resampled_ttest(m["harrell_c"], 1 / (1 * 0.5))  # 2 folds, 50 %
    assert (row["mean"], row["low"], row["high"]) == pytest.approx((mean, lo, hi))
    assert row["x"] == m["n_train"].mean() and row["n"] == 2
    full = table[(table.line == "clinical+rna | concat") & (table.data_fraction == 1.0)].iloc[0]
    assert full["x"] > row["x"]  # fewer training patients at 50 %
    assert len(table[table.line == "coxph_clinical"]) == 2


def test_fusion_against_clinical_only_is_the_paired_comparison(grid_dir):
    folds = G.fold_table(grid_dir, G.load_results(grid_dir))
    comp = G.fusion_vs_clinical(folds, ["modalities", "fusion"])
    assert len(comp) == 4 and set(comp["reference"]) == {"ModalSurv on clinical"}
    ref = paired_table(grid_dir, reference={"modalities": "clinical", "fusion": "concat",
                                            "data_fraction": 1.0})  # fmt: skip
    want = ref[(ref.modalities == "clinical+rna") & (ref.fusion == "concat")
               & (ref.data_fraction == 1.0)].iloc[0]  # fmt: skip
    got = comp[(comp.line == "clinical+rna | concat") & (comp.data_fraction == 1.0)].iloc[0]
    assert (got["mean"], got["low"], got["high"], got["p_value"]) == pytest.approx(
        (want.mean_difference, want.ci_low, want.ci_high, want.p_value))
    assert got["beats"] == (got["low"] > 0) and got["n_pairs"] == want.n_pairs
    # without a clinical-only setting, the trial's clinical baseline is the reference
    only = G.fusion_vs_clinical(folds[folds.modalities != "clinical"], ["fusion"])
    assert set(only["reference"]) == {"coxph_clinical"} and len(only) == 4


@pytest.fixture(scope="module")
def shared_split_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A finished grid of 2 seeds x 2 repeats (2 folds), clinical and clinical+rna, with
    the coxph_clinical baseline: repeat 1 of seed 0 is repeat 0 of seed 1 (random_state
    seed + repeat), one split. (folder, results)."""
    from modalsurv.data.synthetic import make_cohort
    from modalsurv.experiments.grid import parse_grid
    from modalsurv.experiments.runners import LocalRunner, run_grid

    out = tmp_path_factory.mktemp("shared_split_grid")
    cohort, _ = make_cohort(n=40, seed=0, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                            n_genes=20)  # fmt: skip
    base = {"preprocess": {"rna_top_variance_genes": 10, "rna_pca": 3},
            "model": {"latent_dim": 8, "hidden_dim": 8, "attention_pool_dim": 8, "n_heads": 2,
                      "n_bins": 5, "stack": "none"},
            "train": {"epochs": 1, "patience": 1, "batch_size": 16, "device": "cpu",
                      "n_init": 1},
            "cv": {"folds": 2, "repeats": 2}, "baselines": ["coxph_clinical"]}  # fmt: skip
    grid = parse_grid({"name": "shared", "base": base, "seed": [0, 1],
                       "modalities": [["clinical"], ["clinical", "rna"]]})  # fmt: skip
    res = run_grid(grid, cohort, out, runner=LocalRunner())
    assert (res["status"] == "ok").all()
    return out, res


def test_a_split_two_seeds_share_counts_once_against_clinical_only(shared_split_grid):
    """2 seeds x 2 repeats: repeat 1 of seed 0 is repeat 0 of seed 1 (random_state seed +
    repeat), one split. paired_table counted it once, fusion_vs_clinical twice (8 pairs of
    2 folds where there are 3 splits x 2 folds = 6): a narrower CI for the same
    comparison. Now both count distinct (split, fold) pairs, and agree."""
    from modalsurv.experiments.paired import split_keys

    tmp_path, res = shared_split_grid
    keys = [split_keys(tmp_path / "trials" / t, s) for t, s in zip(res.trial, res.seed)]
    assert len({k for per in keys for k in per.values()}) == 3  # the premise: 4 repeats, 3 splits
    folds = G.fold_table(tmp_path, res)
    (got,) = G.fusion_vs_clinical(folds, ["modalities"]).itertuples()
    (want,) = paired_table(tmp_path, reference={"modalities": "clinical"}).itertuples()
    assert got.n_pairs == want.n_pairs == 6
    assert (got.mean, got.low, got.high, got.p_value) == pytest.approx(
        (want.mean_difference, want.ci_low, want.ci_high, want.p_value))


def _by_split_by_hand(out, res, model: str, modalities: str | None) -> dict:
    """(split fingerprint, fold) -> the Harrell C of ``model`` there, one per seed that
    met the split, read from the trials' own files (a baseline: one trial per seed)."""
    from modalsurv.experiments.paired import split_keys

    rows = res[res.model == "modalsurv"]
    if modalities is not None:
        rows = rows[rows.modalities == modalities]
    scores: dict = {}
    for trial, seed in rows.drop_duplicates("seed")[["trial", "seed"]].itertuples(index=False):
        keys = split_keys(out / "trials" / trial, int(seed))
        m = pd.read_csv(out / "trials" / trial / "metrics.csv")
        for r in m[m.model == model].itertuples():
            scores.setdefault((keys[int(r.repeat)], int(r.fold)), []).append(r.harrell_c)
    return scores


def test_a_split_two_seeds_share_counts_once_in_the_scaling_curve(shared_split_grid):
    """The data-scaling curve pooled the fold scores of every seed: the split seeds 0 and
    1 share entered twice as independent (8 scores where there are 3 splits x 2 folds =
    6), the deterministic baseline's twice the same. Now one score per (split, fold), the
    seeds' mean, as the corrected t-test of fusion against clinical-only counts them."""
    out, res = shared_split_grid
    table = G.scaling_table(G.fold_table(out, res), ["modalities"]).set_index("line")
    base = _by_split_by_hand(out, res, "coxph_clinical", None)
    shared = [v for v in base.values() if len(v) == 2]
    assert len(base) == 6 and len(shared) == 2  # the premise: 3 splits, one met twice
    assert all(a == pytest.approx(b) for a, b in shared)  # the baseline: the same scores
    for line, model, mods in (("clinical+rna", "modalsurv", "clinical+rna"),
                              ("clinical", "modalsurv", "clinical"),
                              ("coxph_clinical", "coxph_clinical", None)):  # fmt: skip
        scores = _by_split_by_hand(out, res, model, mods)
        assert len(scores) == 6 and sum(map(len, scores.values())) == 8, line
        once = [float(np.mean(v)) for v in scores.values()]
        mean, lo, hi, _ = corrected_resampled_ttest(once, 1 / (2 - 1))  # 2 folds, 100 %
        row = table.loc[line]
        assert row["n"] == 6, line
        assert (row["mean"], row["low"], row["high"]) == pytest.approx((mean, lo, hi)), line


def _scaling_as_before(folds: pd.DataFrame, line_axes: list[str]) -> pd.DataFrame:
    """The scaling table as it was computed before shared splits counted once: every
    seed's fold scores pooled as independent."""
    f = folds.copy()
    f["line"] = [G._line(r, line_axes) for _, r in f.iterrows()]
    f = f.drop_duplicates(["line", "data_fraction", "seed", "repeat", "fold"])
    rows = []
    for (line, fraction), g in f.groupby(["line", "data_fraction"], sort=False):
        k = int(g.groupby(["seed", "repeat"])["fold"].nunique().max())
        c = g["harrell_c"].to_numpy(float)
        mean, lo, hi, _ = corrected_resampled_ttest(c, G._ratio(g, k, float(fraction)))
        rows.append({"line": line, "data_fraction": float(fraction),
                     "x": float(g["n_train"].mean()), "mean": mean, "low": lo, "high": hi,
                     "n": int(np.isfinite(c).sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["line", "data_fraction", "x", "mean", "low", "high", "n"])


def test_without_a_shared_split_the_scaling_curve_is_unchanged(shared_split_grid):
    """One seed, or one repeat per seed (cv.repeats = 1), or folds not known (no split
    column): no split is met twice, and the table is exactly what it was."""
    out, res = shared_split_grid
    folds = G.fold_table(out, res)
    for part in (folds[folds.seed == 0], folds[folds.repeat == 0],
                 folds.drop(columns="split"), _grouped_folds(True)):  # fmt: skip
        want = _scaling_as_before(part, ["modalities"])
        assert want["n"].gt(1).all()
        pd.testing.assert_frame_equal(G.scaling_table(part, ["modalities"]), want,
                                      check_exact=True)


def test_the_smallest_winning_training_size_or_none():
    comp = pd.DataFrame({"line": ["a", "a", "b"], "x": [20.0, 40.0, 30.0],
                         "data_fraction": [0.5, 1.0, 0.75], "beats": [False, True, True]})
    assert G.smallest_winning_size(comp)["x"] == 30.0
    assert G.smallest_winning_size(comp.assign(beats=False)) is None


def test_scaling_section_states_the_answer(grid_dir):
    folds = G.fold_table(grid_dir, G.load_results(grid_dir))
    comp = G.fusion_vs_clinical(folds, ["modalities", "fusion"])
    varying = ["modalities", "fusion", "data_fraction"]
    note = dict(G._scaling_sections(folds, varying, comp))[
        "Fusion against clinical-only by training size"]
    if comp["beats"].any():
        win = G.smallest_winning_size(comp)
        assert f"from {win['x']:.0f} training patients" in note.text
    else:
        assert note.text.startswith("at no training size")
    won = comp.assign(beats=comp["data_fraction"] == 1.0)  # as if the full size won
    note = G._scaling_sections(folds, varying, won)[-1][1]
    assert f"from {won['x'].max():.0f} training patients" in note.text
    assert G._scaling_sections(folds, ["modalities"], comp) == []  # no fraction axis: no curve
    # multimodal worse than clinical-only is flagged, whatever the axes
    worse = comp.assign(worse=[True, False, False, False])
    notes = [b for _, b in G._clinical_sections(worse) if hasattr(b, "kind")]
    assert len(notes) == 1 and notes[0].text.startswith("⚠ worse_than_clinical")
    assert "nothing to compare" in G._clinical_sections(comp.iloc[:0])[0][1].text


def test_encoder_axis_gets_its_forest():
    paired = pd.DataFrame({"modalities": ["clinical+wsi"], "encoder": ["finetuned"],
                           "fusion": ["concat"], "data_fraction": [1.0], "mean_difference": [0.02],
                           "ci_low": [-0.01], "ci_high": [0.05], "p_value": [0.2], "n_pairs": [5]})
    ref = {"modalities": "clinical+wsi", "encoder": "frozen", "fusion": "concat",
           "data_fraction": 1.0}
    (title, chart), = G._forest_sections(paired, ref, ["encoder"])
    assert title.startswith("Frozen / fine-tuned encoders") and chart.data["label"].tolist() == [
        "finetuned"]
    (title, note), = G._forest_sections(paired, {**ref, "fusion": "other"}, ["encoder"])
    assert "no setting differs" in note.text


def test_checks_and_alignment_per_trial(grid_dir):
    results = G.load_results(grid_dir)
    diag = G.trial_diagnostics(grid_dir, results)
    assert len(diag) == 8
    table = G.alignment_table(results, diag, ["fusion"])
    assert set(table["group"]) == {"concat", "cross_attention_gated"}
    assert set(zip(table["a"], table["b"])) == {("clinical", "rna")}
    recorded = []
    for trial, d in diag.items():
        row = results[(results.trial == trial) & (results.model == "modalsurv")].iloc[0]
        if row["fusion"] != "concat":
            continue
        c = next(c for c in d["checks"] if c["check"] == "embedding_alignment")
        recorded += c["pairs"]
    w = np.array([p["n_patients"] for p in recorded], float)
    concat = table[table.group == "concat"].iloc[0]
    assert concat["same_patient"] == pytest.approx(
        np.average([p["same_patient"] for p in recorded], weights=w))
    # a trial run before diagnostics were recorded gets those its metrics support
    trial = next(iter(diag))
    path = grid_dir / "trials" / trial / "summary.json"
    saved = path.read_text()
    try:
        summary = json.loads(saved)
        del summary["cv"]["diagnostics"]
        path.write_text(json.dumps(summary))
        old = G.trial_diagnostics(grid_dir, results)[trial]
        assert [c["check"] for c in old["checks"]] == ["fold_sd", "worse_than_clinical"]
    finally:
        path.write_text(saved)


def test_report_command_on_a_grid_folder(grid_dir, tmp_path):
    out = tmp_path / "grid.html"
    invoke("report", grid_dir, "--out", out, "--title", "Grid again")
    text = out.read_text("utf-8")
    assert "<title>Grid again</title>" in text and "Data scaling" in text
    assert (tmp_path / "report_data" / "data-scaling.csv").is_file()


def test_a_stale_paired_table_is_recomputed(grid_dir, tmp_path):
    import shutil

    copy = shutil.copytree(grid_dir, tmp_path / "g", ignore=shutil.ignore_patterns("report*"))
    paired = pd.read_csv(copy / "paired.csv")
    paired.iloc[:3].to_csv(copy / "paired.csv", index=False)  # rows of a smaller, older grid
    text = G.build_grid_report(copy).read_text("utf-8")
    assert "Modality ablation: ΔC to clinical" in text
    assert (copy / "report_data" / "forest-fusion.csv").is_file()


def test_a_half_finished_grid_names_the_trials_that_have_not_run(grid_dir, tmp_path):
    import shutil

    copy = shutil.copytree(grid_dir, tmp_path / "half", ignore=shutil.ignore_patterns("report*"))
    results = pd.read_csv(copy / "results.csv")
    trials = list(dict.fromkeys(results["trial"].astype(str)))
    kept = set(trials[: len(trials) // 2])
    results[results["trial"].astype(str).isin(kept)].to_csv(copy / "results.csv", index=False)
    from modalsurv.experiments.grid import load_grid

    expected = [t.label for t in load_grid(copy / "grid.yaml").expand() if t.id not in kept]
    missing = G.missing_trials(copy, pd.read_csv(copy / "results.csv"))
    assert len(missing) == len(trials) - len(kept) > 0
    assert missing == expected
    text = G.build_grid_report(copy).read_text("utf-8")
    assert f"{len(missing)} trial(s) of the grid have not run" in text
    for label in missing:
        assert label in text
    res = invoke("report", str(copy))  # and the terminal says so, not only the page
    assert res.exit_code == 0 and f"{len(missing)} trial(s) of the grid have not run" in res.output
    # the finished grid has nothing missing
    assert G.missing_trials(grid_dir, G.load_results(grid_dir)) == []


def test_a_stacked_scaling_grid_draws_the_stack_weight_by_training_size(grid_dir):
    text = (grid_dir / "report.html").read_text("utf-8")
    assert "Stack weight by training size (when does fusion pay?)" in text
    # the tiny grid (train.n_init: 1) weighs no fold on data: every fold of the largest
    # modality set fell back to equal weights, said instead of drawn
    assert "no weights to draw: all 8 folds fell back to equal weights" in text
    assert not (grid_dir / "report_data" / "stack-weights-by-size.csv").exists()


def _grouped_folds(grouped: bool) -> pd.DataFrame:
    """Leave-one-site-out folds of sites of 200, 50 and 50 patients, two settings."""
    rng = np.random.default_rng(7)
    rows = []
    for mods in ("clinical", "clinical+rna"):
        for fold, (n_test, n_train) in enumerate(((200, 100), (50, 250), (50, 250))):
            rows.append({"modalities": mods, "encoder": "default", "fusion": "cross_attention_gated",
                         "data_fraction": 1.0, "seed": 0, "trial": mods, "model": "modalsurv",
                         "repeat": 0, "fold": fold, "harrell_c": 0.65 + rng.normal(0, 0.03)
                         + (0.02 if mods != "clinical" else 0.0), "n_train": n_train,
                         "n_test": n_test, "grouped": grouped})  # fmt: skip
    return pd.DataFrame(rows)


def test_grouped_folds_use_their_own_test_train_ratio():
    """Leave-one-group-out folds of unequal sizes: the corrected test uses the folds' own
    mean n_test / n_train (0.8 here), as the paired table does, not the k-fold 1/(k-1)."""
    folds = _grouped_folds(True)
    own = float((folds["n_test"] / folds["n_train"]).iloc[:3].mean())
    assert own == pytest.approx(0.8)
    table = G.scaling_table(folds, ["modalities"]).set_index("line")
    c = folds[folds.modalities == "clinical"]["harrell_c"].to_numpy()
    _, lo, hi, _ = corrected_resampled_ttest(c, own)
    assert (table.loc["clinical", "low"], table.loc["clinical", "high"]) == pytest.approx((lo, hi))
    comp = G.fusion_vs_clinical(folds, ["modalities"]).iloc[0]
    d = (folds[folds.modalities != "clinical"]["harrell_c"].to_numpy() - c)
    _, lo, hi, p = corrected_resampled_ttest(d, own)
    assert (comp["low"], comp["high"], comp["p_value"]) == pytest.approx((lo, hi, p))
    # stratified k folds: the k-fold value, as before
    plain = G.scaling_table(_grouped_folds(False), ["modalities"]).set_index("line")
    _, lo, hi, _ = corrected_resampled_ttest(c, 0.5)
    assert (plain.loc["clinical", "low"], plain.loc["clinical", "high"]) == pytest.approx((lo, hi))


def _stacked_trial(out, trial: str, fraction: float, fallback: set[int]) -> None:
    """A finished trial's summary.json with the stack's weights on two folds; the folds in
    ``fallback`` took the equal-weights fallback."""
    d = out / "trials" / trial
    d.mkdir(parents=True)
    stack = [{"repeat": 0, "fold": f,
              "weights": {"modalsurv": 0.5, "modalsurv_clinical": 0.5} if f in fallback
              else {"modalsurv": 0.9, "modalsurv_clinical": 0.1},
              "fallback": "equal weights (too few events)" if f in fallback else None}
             for f in (0, 1)]  # fmt: skip
    folds = [{"model": "modalsurv", "repeat": 0, "fold": f, "n_train": int(100 * fraction)}
             for f in (0, 1)]  # fmt: skip
    summary = {"trial": trial, "settings": {"modalities": ["clinical", "rna"],
                                            "encoder": "default", "fusion": "concat",
                                            "data_fraction": fraction, "seed": 0},
               "cv": {"stack": stack, "folds": folds}}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def test_stack_weights_leave_out_and_say_the_folds_that_fell_back_to_equal_weights(tmp_path):
    """Equal weights were not weighed on data: the figure and means use learned folds only,
    the CSV marks the others and the caption says how many."""
    from modalsurv.experiments.runners import stack_weight_curve
    from modalsurv.report.html import Chart, Note

    _stacked_trial(tmp_path, "small", 0.5, fallback={0})
    _stacked_trial(tmp_path, "large", 1.0, fallback=set())
    w = stack_weight_curve(tmp_path)
    assert w.groupby("trial")["fallback"].sum().to_dict() == {"large": 0, "small": 2}
    ((_, chart),) = G._stack_weight_sections(tmp_path)
    assert isinstance(chart, Chart) and chart.data["fallback"].sum() == 2
    assert "1 of 4 folds fell back to equal weights" in chart.caption
    assert "modalsurv 0.90" in chart.caption  # the mean of the learned folds only
    line = chart.figure.axes[0].get_lines()[0]  # modalsurv: 0.9 at both sizes, not 0.7
    assert np.allclose(line.get_ydata(), [0.9, 0.9])
    # every fold fell back: nothing to draw, and the page says why
    _stacked_trial(tmp_path / "all", "t", 1.0, fallback={0, 1})
    ((_, note),) = G._stack_weight_sections(tmp_path / "all")
    assert isinstance(note, Note) and "all 2 folds fell back to equal weights" in note.text


def test_only_multimodal_settings_are_compared_with_clinical_only():
    """A single modality other than clinical (rna alone) has no fusion: it is not a row of
    "Multimodal minus clinical-only"; two or more modalities (or 'all') are."""
    rng = np.random.default_rng(3)
    rows = [{"modalities": mods, "encoder": "default", "fusion": "concat", "data_fraction": 1.0,
             "seed": 0, "trial": mods, "model": "modalsurv", "repeat": 0, "fold": fold,
             "harrell_c": 0.6 + rng.normal(0, 0.03), "n_train": 40, "n_test": 20,
             "grouped": False}
            for mods in ("clinical", "rna", "clinical+rna", "all") for fold in range(3)]  # fmt: skip
    comp = G.fusion_vs_clinical(pd.DataFrame(rows), ["modalities"])
    assert comp["line"].tolist() == ["all", "clinical+rna"]
    only_single = pd.DataFrame([r for r in rows if r["modalities"] in ("clinical", "rna")])
    assert G.fusion_vs_clinical(only_single, ["modalities"]).empty
    (_, note), = G._clinical_sections(G.fusion_vs_clinical(only_single, ["modalities"]))
    assert "no multimodal setting" in note.text


def test_with_by_the_forest_plots_are_drawn_per_group(grid_dir, tmp_path):
    """`experiment --by data_fraction`: one reference per training fraction, so one forest
    per fraction (they used to vanish without a word)."""
    import shutil

    copy = shutil.copytree(grid_dir, tmp_path / "by", ignore=shutil.ignore_patterns("report*"))
    paired = paired_table(copy, reference={"modalities": "clinical", "fusion": "concat"},
                          by=["data_fraction"])  # fmt: skip
    paired.to_csv(copy / "paired.csv", index=False)
    text = G.build_grid_report(copy).read_text("utf-8")
    heads = re.findall(r"<h2 id='[^']*'>([^<]*)</h2>", text)
    for fraction in ("50%", "100%"):
        for title in ("Modality ablation: ΔC to clinical", "Fusion comparison: ΔC to concat"):
            assert f"{title} (reference clinical | concat | {fraction})" in heads
        data = pd.read_csv(copy / "report_data" / f"forest-fusion-clinical-concat-{fraction[:-1]}.csv")
        assert data["label"].tolist() == ["cross_attention_gated"]


def test_times_on_a_grid_folder_is_an_error_not_ignored(grid_dir, tmp_path):
    from modalsurv.cli import app

    from .conftest import RUNNER

    res = RUNNER.invoke(app, ["report", str(grid_dir), "--out", str(tmp_path / "g.html"),
                              "--times", "4,9"])  # fmt: skip
    assert res.exit_code == 2 and "grid folder" in res.output and "--times" in res.output
    assert not (tmp_path / "g.html").exists()


def test_failed_trials_say_which_sections_they_take_off_the_page(grid_dir, tmp_path):
    """Every cross_attention_gated trial failed: the fusion comparison cannot be drawn, and
    the page says so and why; counts print as integers, not 0.000."""
    import shutil

    copy = shutil.copytree(grid_dir, tmp_path / "f", ignore=shutil.ignore_patterns("report*"))
    results = pd.read_csv(copy / "results.csv")
    bad = results["fusion"] == "cross_attention_gated"
    failed = results[bad].drop_duplicates("trial").assign(
        model="modalsurv", status="failed", error="DivergedError: boom", n_failed_folds=np.nan)
    pd.concat([results[~bad], failed]).to_csv(copy / "results.csv", index=False)
    text = G.build_grid_report(copy).read_text("utf-8")
    assert "4 trial(s) failed" in text
    assert "only one value of the axis has a finished trial: Fusion comparison (fusion)" in text
    for label in failed["label"]:
        assert label in text.split("trial(s) failed", 1)[1].split("</p>", 1)[0]
    assert "Fusion comparison" not in re.findall(r"<h2 id='[^']*'>([^<]*)</h2>", text)
    shown = G._results_section(G.load_results(copy))
    assert set(shown["n_failed_folds"]) == {"0", "–"}
    trials = text.split('id="t-trials"', 1)[1].split("</table>", 1)[0]
    assert "0.000" not in trials


def test_training_patients_in_the_clinical_table_print_as_counts():
    """The table's training patients are a count: 21, not 21.000 under the page's
    3-decimal float format."""
    from modalsurv.report.html import render_report

    comp = pd.DataFrame({"line": ["clinical+wsi"], "reference": ["ModalSurv on clinical"],
                         "data_fraction": [0.5], "x": [20.75], "mean": [0.05], "low": [-0.3],
                         "high": [0.4], "p_value": [0.66], "n_pairs": [4], "beats": [False],
                         "worse": [False]})  # fmt: skip
    ((_, table),) = G._clinical_sections(comp)
    assert table["training patients"].tolist() == ["21"]
    text = render_report("t", [("Multimodal minus clinical-only", table)])
    row = text.split("clinical+wsi", 1)[1].split("</tr>", 1)[0]
    assert "21.000" not in row and "<td>21</td>" in row


def test_a_trial_with_one_finite_fold_shows_its_mean_without_a_nan_spread(grid_dir, tmp_path):
    """A std over one finite fold is NaN: the table said "0.600 ± nan"."""
    import shutil

    copy = shutil.copytree(grid_dir, tmp_path / "one", ignore=shutil.ignore_patterns("report*"))
    results = pd.read_csv(copy / "results.csv")
    results.loc[0, "harrell_c_mean"], results.loc[0, "harrell_c_std"] = 0.6, np.nan
    results.to_csv(copy / "results.csv", index=False)
    shown = G._results_section(G.load_results(copy))
    assert shown["harrell_c"].iloc[0] == "0.600"
    assert not any("nan" in str(v) for v in shown["harrell_c"])


def test_a_grid_report_that_fails_half_way_leaves_no_figure_open(grid_dir, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    import matplotlib.pyplot as plt

    def broken(*args, **kwargs):
        raise RuntimeError("diagnostics broke")

    monkeypatch.setattr(G, "_diagnostic_sections", broken)  # after every figure is drawn
    plt.close("all")
    with pytest.raises(RuntimeError, match="diagnostics broke"):
        G.build_grid_report(grid_dir, tmp_path / "r.html")
    assert plt.get_fignums() == []


def test_fusion_against_clinical_only_pairs_only_folds_that_hold_the_same_patients():
    """fusion_vs_clinical paired fold k of the multimodal trial with fold k of the
    clinical-only one by number alone: trials run on other outer folds (their split
    fingerprints differ) were "paired" on folds holding other patients, where
    ``paired_table`` refuses such a pairing. Now only folds of one split are paired."""
    rng = np.random.default_rng(5)
    rows = [{"modalities": mods, "encoder": "default", "fusion": "concat", "data_fraction": 1.0,
             "seed": 0, "trial": mods, "model": "modalsurv", "repeat": 0, "fold": fold,
             "harrell_c": 0.6 + rng.normal(0, 0.03), "n_train": 40, "n_test": 20,
             "grouped": False, "split": split}
            for mods, split in (("clinical", "aaaa"), ("clinical+rna", "bbbb"))
            for fold in range(3)]  # fmt: skip
    folds = pd.DataFrame(rows)
    (got,) = G.fusion_vs_clinical(folds, ["modalities"]).itertuples()
    assert got.n_pairs == 0 and not np.isfinite(got.mean)
    same = G.fusion_vs_clinical(folds.assign(split="aaaa"), ["modalities"]).iloc[0]
    assert same["n_pairs"] == 3 and np.isfinite(same["mean"])
    # folds not known on one side (a trial without folds.csv): paired, as paired_table does
    unknown = folds.assign(split=np.where(folds.modalities == "clinical", "seed 0 repeat 0",
                                          folds.split))  # fmt: skip
    assert G.fusion_vs_clinical(unknown, ["modalities"]).iloc[0]["n_pairs"] == 3


def test_p_values_print_as_the_run_report_prints_them(grid_dir, tmp_path):
    """The grid's tables printed p as a raw float under the page's 3 decimals ("0.000",
    as if a test gave p = 0) where the run report prints "< 0.01" (tables.format_p)."""
    import html
    import shutil

    from modalsurv.report.html import render_report
    from modalsurv.report.tables import format_p

    comp = pd.DataFrame({"line": ["clinical+wsi"], "reference": ["ModalSurv on clinical"],
                         "data_fraction": [0.5], "x": [20.0], "mean": [0.05], "low": [0.02],
                         "high": [0.08], "p_value": [1e-5], "n_pairs": [4], "beats": [True],
                         "worse": [False]})  # fmt: skip
    ((_, table),) = G._clinical_sections(comp)
    assert table["p_value"].tolist() == ["< 0.01"]
    row = render_report("t", [("x", table)]).split("clinical+wsi", 1)[1].split("</tr>", 1)[0]
    assert "0.000" not in row
    copy = shutil.copytree(grid_dir, tmp_path / "p", ignore=shutil.ignore_patterns("report*"))
    paired = pd.read_csv(copy / "paired.csv")
    paired.assign(p_value=[1e-5, 0.234, np.nan][: len(paired)] + [0.5] * (len(paired) - 3)
                  ).to_csv(copy / "paired.csv", index=False)  # fmt: skip
    text = G.build_grid_report(copy).read_text("utf-8")
    table = text.split("Every setting minus the reference", 1)[1].split("</table>", 1)[0]
    cells = [html.unescape(c) for c in re.findall(r"<td>([^<]*)</td>", table)]
    for p in (1e-5, 0.234):
        assert format_p(p) in cells
    assert "0.000" not in cells and "0.234" not in cells


def test_a_candidate_missing_from_a_folds_stack_counts_as_weight_0(tmp_path):
    """A peer that failed in a fold has no weight in that fold's stack: it weighed 0
    there (the run report's mean counts the 0), but the grid's means skipped the fold and
    doubled the peer's mean weight."""
    d = tmp_path / "trials" / "t"
    d.mkdir(parents=True)
    stack = [{"repeat": 0, "fold": 0, "fallback": None,
              "weights": {"modalsurv": 0.6, "modalsurv_clinical": 0.2, "coxnet": 0.2}},
             {"repeat": 0, "fold": 1, "fallback": None,  # coxnet failed here
              "weights": {"modalsurv": 0.6, "modalsurv_clinical": 0.4}}]  # fmt: skip
    folds = [{"model": "modalsurv", "repeat": 0, "fold": f, "n_train": 50} for f in (0, 1)]
    summary = {"trial": "t", "settings": {"modalities": ["clinical", "rna"],
                                          "encoder": "default", "fusion": "concat",
                                          "data_fraction": 1.0, "seed": 0},
               "cv": {"stack": stack, "folds": folds}}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    ((_, chart),) = G._stack_weight_sections(tmp_path)
    assert "coxnet 0.10" in chart.caption and "modalsurv_clinical 0.30" in chart.caption
    assert chart.data.groupby("fold")["weight"].sum().tolist() == pytest.approx([1.0, 1.0])
    assert len(chart.data) == 6
