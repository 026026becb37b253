import numpy as np
import pytest

from modalsurv.survival.metrics import concordance_index
from modalsurv.train.baselines import BASELINES, FeatureMatrix, make_baseline, step_survival


def test_step_survival_right_continuous():
    ut = np.array([1.0, 2.0, 4.0])
    surv = np.array([[0.9, 0.5, 0.2]])
    out = step_survival(ut, surv, np.array([0.5, 1.0, 1.5, 2.0, 3.9, 4.0, 10.0]))
    np.testing.assert_allclose(out, [[1.0, 0.9, 0.9, 0.5, 0.5, 0.2, 0.2]])


def test_feature_matrix_pools_bags_and_flags_missing(cohort, make_config):
    fm = FeatureMatrix(make_config()).fit(cohort)
    x = fm.transform(cohort)
    dims = fm.pre.dims
    assert x.shape == (len(cohort), sum(dims.values()) + len(fm.indicators))
    assert set(fm.indicators) == {"rna", "slide", "wsi"}
    # bag column block = mean of standardised valid tiles
    start = sum(d for m, d in dims.items() if list(dims).index(m) < list(dims).index("wsi"))
    done = fm.pre.transform(cohort)
    i = int(np.flatnonzero(cohort.present["wsi"])[0])
    mk = cohort.bag_mask["wsi"][i]
    np.testing.assert_allclose(
        x[i, start : start + dims["wsi"]], done.features["wsi"][i][mk].mean(0), rtol=1e-5
    )
    assert np.isfinite(x).all()


@pytest.mark.parametrize("name", ["coxnet", "rsf"])
def test_baselines_use_the_configs_modalities(name, cohort, make_config):
    """In an ablation trial (model.modalities set) the peers see that trial's modalities."""
    cfg = make_config()
    cfg.model.modalities = ["clinical", "slide"]
    est = make_baseline(name, cfg, 0).fit(cohort)
    assert est.features.pre.modalities == ["clinical", "slide"]
    width = est.features.transform(cohort).shape[1]
    pre = est.features.pre
    assert width == pre.dims["clinical"] + pre.dims["slide"] + len(est.features.indicators)
    cfg.model.modalities = None  # the default: every modality of the cohort
    assert make_baseline(name, cfg, 0).fit(cohort).features.pre.modalities == cohort.modalities


@pytest.mark.parametrize("name", ["coxph_clinical", "coxnet", "rsf"])
def test_baselines_learn_the_signal(name, make_cohort, make_config):
    train, test = make_cohort(n=150, seed=1), make_cohort(n=100, seed=2)
    est = make_baseline(name, make_config(), 0).fit(train)
    risk = est.predict_risk(test)
    assert concordance_index(test.time, test.event, risk) > 0.6
    surv = est.predict_survival(test, np.array([0.0, 1.0, 5.0]))
    assert surv.shape == (100, 3) and np.all(np.diff(surv, axis=1) <= 1e-12)
    np.testing.assert_allclose(surv[:, 0], 1.0)


def test_registry_matches_config_names():
    from modalsurv.config import RunConfig

    with pytest.raises(ValueError):
        RunConfig(baselines=["nope"])
    assert set(BASELINES) == {"coxph_clinical", "coxnet", "rsf", "modalsurv_clinical"}
    from modalsurv.errors import ConfigError

    with pytest.raises(ConfigError, match="baselines: unknown baseline 'nope'"):
        make_baseline("nope", RunConfig(), 0)


def _overflowing_case() -> tuple[np.ndarray, np.ndarray]:
    """A small fold with rare, large one-hot columns (standardised): scikit-survival's
    ridge Cox tries Newton steps here whose exp(x w) overflows (seed found by search)."""
    from sksurv.util import Surv

    rng = np.random.default_rng(183)
    n, p = 60, 12
    x = rng.normal(size=(n, p))
    x[:, 0] = 0
    x[rng.integers(n), 0] = 11.0
    x[:, 1] = 0
    x[rng.choice(n, 2, replace=False), 1] = 6.0
    t, e = rng.exponential(size=n), rng.random(n) < 0.5
    return x, Surv.from_arrays(e, t)


def test_ridge_cox_recovers_from_overflowing_steps_without_a_warning():
    import warnings

    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from modalsurv.train.baselines import COXPH_ALPHA, fit_ridge_cox

    x, y = _overflowing_case()
    with warnings.catch_warnings(record=True) as seen:  # the library's own fit warns
        warnings.simplefilter("always")
        ref = CoxPHSurvivalAnalysis(alpha=COXPH_ALPHA, ties="efron").fit(x, y)
    assert any("overflow" in str(w.message) for w in seen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ours: no warning, the same coefficients
        ours = fit_ridge_cox(x, y)
    np.testing.assert_array_equal(ours.coef_, ref.coef_)
    assert np.all(np.isfinite(ours.coef_))


def test_coxnet_penalty_choice_survives_an_inner_part_without_a_comparable_pair():
    """The two events have the two longest times and stratification puts them in two
    inner parts: each has an event but no comparable pair, so its C-index is undefined. It
    used to fail the whole fold; now such a part does not vote (here none can: the
    strongest penalty, the first, is kept)."""
    from sksurv.util import Surv

    from modalsurv.train.baselines import select_coxnet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    time = np.arange(1.0, 31.0)
    event = np.zeros(30, dtype=bool)
    event[-2:] = True
    path, alpha = select_coxnet(x, Surv.from_arrays(event, time), seed=0, baseline=False)
    assert alpha == float(path.alphas_[0])


def test_a_forest_on_one_follow_up_time_says_so(make_cohort, make_config):
    """Every training time equal: scikit-survival's forest failed in prediction with a bare
    IndexError (a crash in the stack, which catches only ValueError from its peers)."""
    from modalsurv.cohort import Cohort
    from modalsurv.train.forest import grow_forest

    c = make_cohort(n=30, seed=1)
    same = Cohort(c.ids, np.full(len(c), 5.0), c.event, features=c.features, present=c.present,
                  bag_mask=c.bag_mask)  # fmt: skip
    with pytest.raises(ValueError, match="two distinct follow-up times; every training patient"
                                         " has time 5"):  # fmt: skip
        make_baseline("rsf", make_config(), 0).fit(same)
    with pytest.raises(ValueError, match="two distinct follow-up times"):
        grow_forest(np.zeros((30, 2)), same.survival_array(), n_estimators=2,
                    min_samples_leaf=3, seed=0)  # fmt: skip
