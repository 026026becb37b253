import numpy as np
import pytest

from modalsurv.data.public import available, load
from modalsurv.errors import ConfigError


def test_breast_cancer():
    c = load("breast_cancer")
    assert len(c) == 198 and c.n_events == 51
    assert c.modalities == ["clinical", "rna"] and c.dim("rna") == 76
    assert c.feature_names["clinical"] == ["age", "size", "er", "grade"]
    grade = c.features["clinical"][:, 3]
    assert np.isnan(grade).any() and set(np.unique(grade[~np.isnan(grade)])) == {0, 1, 2}
    assert (c.time > 0).all()
    with pytest.raises(ConfigError, match="unknown public cohort"):
        load("nope")


@pytest.mark.parametrize(
    ("name", "n", "other", "dim"),
    [("nki70", 144, "rna", 70), ("dataOvarian1", 912, "rna", 158), ("wpbc", 198, "image", 30)],
)
def test_survset_cohorts(name, n, other, dim):
    pytest.importorskip("SurvSet")
    c = load(name)
    assert len(c) == n and c.dim(other) == dim and (c.time > 0).all()
    assert all("=" in f or not f.startswith("fac_") for f in c.feature_names["clinical"])
    if name == "dataOvarian1":
        assert c.meta["site"].nunique() == 4
    if name == "nki70":
        assert "ER=Positive" in c.feature_names["clinical"]


def test_large_survset_and_available():
    pytest.importorskip("SurvSet")
    c = load("gse4335")
    assert c.dim("rna") > 12000
    tab = available()
    assert {"breast_cancer", "nki70", "gse1992", "gse4335", "dataOvarian1", "wpbc"} <= set(
        tab.index
    )
    assert tab.loc["dataOvarian1", "shifted_times"] == 2


@pytest.mark.parametrize(
    ("name", "n", "events", "n_features"),
    [("flchain", 7874, 2169, 8), ("aids", 1151, 96, 20), ("gbsg2", 686, 299, 8),
     ("whas500", 500, 215, 14)],
)
def test_scikit_survival_tabular_cohorts(name, n, events, n_features):
    c = load(name)
    assert (len(c), c.n_events, c.dim("clinical")) == (n, events, n_features)
    assert c.modalities == ["clinical"] and (c.time > 0).all()
    names = c.feature_names["clinical"]
    if name == "flchain":  # the cause-of-death chapter is known only for the dead: a leak
        assert not any(f.startswith("chapter") for f in names)
        assert np.isnan(c.features["clinical"][:, names.index("creatinine")]).any()
    if name == "aids":
        assert "raceth=1" in names and "karnof" in names
        assert set(np.unique(c.features["clinical"][:, names.index("karnof")])) == {0, 1, 2, 3}
    if name == "gbsg2":
        assert set(np.unique(c.features["clinical"][:, names.index("tgrade")])) == {0, 1, 2}


def test_any_survset_table_and_its_refusals():
    pytest.importorskip("SurvSet")
    c = load("survset:TRACE")
    assert len(c) == 1878 and c.modalities == ["clinical"]
    with pytest.raises(ConfigError, match="no table"):
        load("survset:not_a_table")
    with pytest.raises(ConfigError, match="time-varying"):
        load("survset:heart")


def test_survset_bool_categorical_is_encoded():
    """nwtco's in_subcohort holds bools: True was read as "1" against the level "True", so
    both of its columns were NaN for every patient."""
    pytest.importorskip("SurvSet")
    c = load("survset:nwtco")
    names = c.feature_names["clinical"]
    x = c.features["clinical"][:, [names.index("in_subcohort=False"),
                                   names.index("in_subcohort=True")]]  # fmt: skip
    assert not np.isnan(x).any() and (x.sum(axis=1) == 1).all() and 0 < x[:, 1].sum() < len(c)


@pytest.mark.parametrize(("name", "leaks"), [("flchain", ("chapter",)),
                                             ("support2", ("sfdm2",)),
                                             ("mgus", ("pctime", "pcdx"))])  # fmt: skip
def test_survset_outcome_columns_are_dropped(name, leaks):
    """survset:flchain kept the cause-of-death chapter (missing exactly for the censored),
    survset:support2 the 2-month status whose level "<2 mo. follow-up" is exactly the
    deaths before day 60, survset:mgus the time and type of a later progression in a
    cohort whose outcome is death."""
    pytest.importorskip("SurvSet")
    names = load(f"survset:{name}").feature_names["clinical"]
    assert not [f for f in names if f.split("=")[0] in leaks]
    assert "age" in names


def test_survset_tables_a_cohort_cannot_hold_are_refused_by_name():
    pytest.importorskip("SurvSet")
    with pytest.raises(ConfigError, match=r"'follic' codes its event as \[0, 1, 2\]"):
        load("survset:follic")
    with pytest.raises(ConfigError, match=r"'retinopathy' has 394 rows for 197 patients"):
        load("survset:retinopathy")
