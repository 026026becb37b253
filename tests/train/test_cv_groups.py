"""Leave-one-group-out (e.g. leave-one-site-out) cross-validation: ``cv.groups``."""

import json

import numpy as np
import pandas as pd
import pytest

from modalsurv.cohort import concat_cohorts
from modalsurv.config import parse_config
from modalsurv.data.synthetic import make_cohort
from modalsurv.errors import ConfigError, DataError, LabelError
from modalsurv.io.chimera import read_chimera
from modalsurv.train.compare import compare_models
from modalsurv.train.cv import cross_validate, make_folds, plan_cv

SMALL = {"max_tiles": 4, "tile_dim": 8, "slide_dim": 8, "mri_dim": 8, "n_genes": 20}


@pytest.fixture(scope="module")
def two_sites():
    """CHIMERA task 3 is two centres: 3A (internal) and 3B (the shifted external one)."""
    a, _ = make_cohort(n=50, seed=0, task=3, **SMALL)
    b, _ = make_cohort(n=34, seed=1, task=3, external=True, **SMALL)
    return concat_cohorts([a, b])


def grouped(make_config, **over):
    cfg = make_config(**over)
    return cfg.model_copy(update={"cv": cfg.cv.model_copy(update={"groups": "site"})})


def test_folds_are_the_sites(two_sites, cohort):
    f = make_folds(two_sites, 5, 1, seed=0, groups="site")
    assert list(f.columns) == ["patient", "repeat", "fold", "group"]
    assert f["fold"].nunique() == 2  # not the 5 asked for: one fold per site
    for fold, site in enumerate(["3A", "3B"]):  # sorted group order
        held = set(f.loc[f["fold"] == fold, "patient"])
        assert held == set(two_sites.ids[two_sites.meta["site"].to_numpy() == site])
        assert set(f.loc[f["fold"] == fold, "group"]) == {site}
    assert f.attrs["stratify"] == "leave-one-group-out on meta['site']"
    # three groups: three folds, every patient in exactly one
    three = cohort.subset(np.arange(60))
    three.meta["centre"] = np.repeat(["x", "y", "z"], 20)
    g = make_folds(three, 5, 1, seed=3, groups="centre")
    assert sorted(g["patient"]) == sorted(three.ids) and g["fold"].nunique() == 3
    assert (g.groupby("fold")["group"].nunique() == 1).all()


def test_two_site_cohort_trains_with_baselines_and_paired_folds(two_sites, make_config, tmp_path):
    cfg = grouped(make_config)
    res = cross_validate(two_sites, cfg, baselines=["coxph_clinical"], resume_dir=tmp_path)
    main = res.metrics[res.metrics["model"] == "modalsurv"]
    assert list(main["fold"]) == [0, 1] and list(main["n_test"]) == [50, 34]
    assert list(main["n_train"]) == [34, 50]  # the other site only
    base = res.metrics[res.metrics["model"] == "coxph_clinical"]
    assert list(base["n_test"]) == [50, 34]  # the baseline on the very same folds
    assert res.summary["groups"] == {"column": "site", "held_out": ["3A", "3B"]}
    assert res.summary["n_folds"] == 2 and "leave-one-group-out" in res.summary["stratify"]
    pred = res.predictions.merge(res.folds, on=["patient", "repeat", "fold"])
    site = two_sites.meta["site"].reindex(pred["patient"]).to_numpy()
    assert (pred["group"].to_numpy() == site).all()  # each patient scored by the other site's model
    # the t-test's overlap term is the folds' own n_test / n_train, not 1 / (k - 1) = 1
    ratio = (50 / 34 + 34 / 50) / 2
    assert res.test_train_ratio() == pytest.approx(ratio)
    paired = res.paired()
    want = compare_models(res.metrics, "modalsurv", "coxph_clinical", test_train_ratio=ratio)
    assert paired.iloc[0]["ci_low"] == pytest.approx(want.ci_low)
    assert paired.iloc[0]["n_pairs"] == 2
    json.dumps(res.summary)  # metrics.json stays writable
    # the grouping is part of the resume spec: the stratified run is not mixed in
    with pytest.raises(ConfigError, match="cv.groups: 'site' there, None here"):
        cross_validate(two_sites, make_config(), baselines=["coxph_clinical"], resume_dir=tmp_path)
    again = cross_validate(two_sites, cfg, baselines=["coxph_clinical"], resume_dir=tmp_path)
    pd.testing.assert_frame_equal(again.metrics, res.metrics)


def test_grouping_errors_are_clear(two_sites, cohort, make_config):
    with pytest.raises(ConfigError, match=r"no meta column 'site'.*unset cv.groups"):
        plan_cv(cohort, grouped(make_config))  # the train/ cohort has no meta at all
    one = make_cohort(n=30, seed=0, task=3, **SMALL)[0]
    with pytest.raises(DataError, match="all 30 patients have site = '3A'.*at least two"):
        plan_cv(one, grouped(make_config))
    no_site = two_sites.subset(np.arange(len(two_sites)))
    no_site.meta.loc[no_site.ids[3], "site"] = None
    with pytest.raises(DataError, match=r"1 patient\(s\) have no 'site'") as err:
        plan_cv(no_site, grouped(make_config))
    assert err.value.patient == no_site.ids[3]
    quiet = two_sites.subset(np.arange(len(two_sites)))
    quiet.event[quiet.meta["site"].to_numpy() == "3B"] = False
    with pytest.raises(LabelError, match=r"site \['3B'\] has no event"):
        plan_cv(quiet, grouped(make_config))
    with pytest.raises(ConfigError, match="one fold per group, here 2"):
        plan_cv(two_sites, grouped(make_config), folds=5)
    with pytest.raises(ConfigError, match="same in every repeat"):
        plan_cv(two_sites, grouped(make_config), repeats=2)
    with pytest.raises(ConfigError, match="cv.repeats = 3 with cv.groups"):
        parse_config({"cv": {"groups": "site", "repeats": 3}})


def test_read_chimera_puts_each_centre_in_site(two_sites, tmp_path):
    from modalsurv.data.synthetic import write_chimera

    write_chimera(two_sites, tmp_path, task=3, images=False)
    read = read_chimera(tmp_path, task=3).cohort
    assert read.meta["site"].value_counts().to_dict() == {"3A": 50, "3B": 34}
    assert make_folds(read, 5, 1, 0, groups="site")["fold"].nunique() == 2


def test_a_grouped_resume_with_another_seed_is_another_run(two_sites, make_config, tmp_path):
    """Leave-one-group-out folds do not depend on the seed, so the fold check could not
    tell a resume with ``seed=`` another value from the run it resumes: the finished
    site's fold (trained with seed 0) was mixed silently with folds trained with seed 7.
    The seed the folds train with is now part of the resume spec."""
    cfg = grouped(make_config, train__epochs=1)
    full = cross_validate(two_sites, cfg, baselines=[], resume_dir=tmp_path)
    (tmp_path / "repeat_0" / "fold_1" / "done.json").unlink()  # interrupted on the 2nd site
    with pytest.raises(ConfigError, match="different run.*seed"):
        cross_validate(two_sites, cfg, seed=7, baselines=[], resume_dir=tmp_path)
    again = cross_validate(two_sites, cfg, seed=0, baselines=[], resume_dir=tmp_path)
    pd.testing.assert_frame_equal(again.predictions, full.predictions)
