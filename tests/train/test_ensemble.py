import json

import numpy as np
import pytest

from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv


@pytest.fixture(scope="module")
def members(cohort, make_config):
    idx = np.arange(len(cohort))
    return [ModalSurv(make_config(seed=s)).fit(cohort.subset(idx[idx % 3 != s])) for s in range(2)]


def test_mixture_of_members(members, cohort):
    ens = FoldEnsemble(members)
    times = np.array([1.0, 4.0, 9.0])
    expect = np.mean([m.predict_survival(cohort, times) for m in members], axis=0)
    np.testing.assert_allclose(ens.predict_survival(cohort, times), expect)
    np.testing.assert_allclose(ens.predict_pmf(cohort).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        ens.predict_risk(cohort), 1 - ens.predict_survival(cohort, [ens.t_ref])[:, 0]
    )
    # one member, twice: the ensemble is that member
    solo = FoldEnsemble([members[0], members[0]])
    np.testing.assert_allclose(solo.predict_pmf(cohort), members[0].predict_pmf(cohort), atol=1e-9)
    np.testing.assert_allclose(solo.predict_risk(cohort), members[0].predict_risk(cohort))


def test_save_load_identical(tmp_path, members, cohort):
    ens = FoldEnsemble(members)
    ens.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "bundle.json",
        "model_0.safetensors",
        "model_1.safetensors",
        "state_0.json",
        "state_1.json",
        "state_0.npz",
        "state_1.npz",
    }
    bundle = json.loads((tmp_path / "bundle.json").read_text())
    assert bundle["n_members"] == 2 and "torch" in bundle["versions"]
    back = FoldEnsemble.load(tmp_path)
    for fn in ("predict_pmf", "predict_risk", "predict_expected_time"):
        np.testing.assert_array_equal(getattr(back, fn)(cohort), getattr(ens, fn)(cohort))
    np.testing.assert_array_equal(back.gate_weights(cohort), ens.gate_weights(cohort))


def test_saving_a_smaller_ensemble_over_a_larger_one_loads(tmp_path, members, cohort):
    FoldEnsemble([*members, members[0]]).save(tmp_path)
    FoldEnsemble(members).save(tmp_path)
    assert not (tmp_path / "state_2.json").exists() and not (tmp_path / "model_2.safetensors").exists()
    back = FoldEnsemble.load(tmp_path)
    assert len(back.members) == 2
    np.testing.assert_array_equal(back.predict_risk(cohort), FoldEnsemble(members).predict_risk(cohort))


def test_cox_ensemble_mean_log_risk(cohort, make_config):
    ms = [ModalSurv(make_config(seed=s, model__head="cox")).fit(cohort) for s in range(2)]
    ens = FoldEnsemble(ms)
    np.testing.assert_allclose(
        ens.predict_risk(cohort), (ms[0].predict_risk(cohort) + ms[1].predict_risk(cohort)) / 2
    )


def test_rejects_mixed_heads(members, cohort, make_config):
    cox = ModalSurv(make_config(model__head="cox")).fit(cohort)
    with pytest.raises(ValueError, match="head"):
        FoldEnsemble([members[0], cox])


def test_rmst_risk_is_the_mixture_restricted_mean(cohort, make_config):
    from modalsurv.survival import curves

    idx = np.arange(len(cohort))
    cfg = make_config(train__risk_score="rmst")
    members = [ModalSurv(cfg).fit(cohort.subset(idx[idx % 3 != s])) for s in range(2)]
    ens = FoldEnsemble(members)
    tau = float(ens.cuts[-1])
    # RMST is linear in S: the mixture's area is the mean of the members' areas
    grid = np.linspace(0.0, tau, 4001)
    area = np.trapezoid(ens.predict_survival(cohort, grid), grid, axis=1)
    np.testing.assert_allclose(ens.predict_risk(cohort), -area, rtol=1e-5)
    for m in members:
        expect = -curves.rmst(m.predict_pmf(cohort), m.cuts, float(m.cuts[-1]))
        np.testing.assert_allclose(m.predict_risk(cohort), expect)
    # one member, twice: the ensemble is that member
    solo = FoldEnsemble([members[0], members[0]])
    np.testing.assert_allclose(solo.predict_risk(cohort), members[0].predict_risk(cohort))


@pytest.mark.parametrize("score", ["survival", "rmst"])
def test_expected_time_is_the_area_under_the_ensemble_curve(cohort, make_config, score):
    """Folds with different last cuts (one held out the longest follow-up): the expected
    time is the mixture's RMST at one horizon, not a mean of differently restricted means."""
    short = np.flatnonzero(cohort.time < np.quantile(cohort.time, 0.6))
    cfg = make_config(train__risk_score=score)
    members = [ModalSurv(cfg).fit(cohort), ModalSurv(cfg).fit(cohort.subset(short))]
    ens = FoldEnsemble(members)
    assert members[1].cuts[-1] < 0.8 * members[0].cuts[-1]
    tau = float(ens.cuts[-1])
    grid = np.linspace(0.0, tau, 8001)
    area = np.trapezoid(ens.predict_survival(cohort, grid), grid, axis=1)
    np.testing.assert_allclose(ens.predict_expected_time(cohort), area, rtol=1e-5)
    if score == "rmst":
        np.testing.assert_allclose(ens.predict_expected_time(cohort), -ens.predict_risk(cohort))
    solo = FoldEnsemble([members[0]])  # one member: its own expected time
    np.testing.assert_allclose(solo.predict_expected_time(cohort),
                               members[0].predict_expected_time(cohort))


def test_fold_models_of_other_settings_are_refused_by_name(tmp_path, members, cohort, make_config):
    """Another bin count crashed in numpy ("inhomogeneous shape") at the first prediction;
    another risk score was silently read with member 0's; a bundle holding such members
    (saved before hashes were recorded) loaded as one ensemble."""
    from modalsurv.errors import FeatureError

    idx = np.arange(len(cohort))
    sub = cohort.subset(idx[idx % 3 != 2])
    bins = ModalSurv(make_config(seed=2, model__n_bins=5)).fit(sub)
    with pytest.raises(ValueError, match=r"member 1 .*time bins \(model.n_bins\): 5, not 8"):
        FoldEnsemble([members[0], bins])
    rmst = ModalSurv(make_config(seed=2, train__risk_score="rmst")).fit(sub)
    with pytest.raises(ValueError, match=r"member 2 .*train.risk_score: 'rmst', not 'survival'"):
        FoldEnsemble([*members, rmst])
    FoldEnsemble(members).save(tmp_path / "a")
    FoldEnsemble([rmst]).save(tmp_path / "b")
    for name in ("model_1.safetensors", "state_1.json", "state_1.npz"):  # member 1 swapped
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name.replace("1", "0")).read_bytes())
    bundle = json.loads((tmp_path / "a" / "bundle.json").read_text())
    del bundle["sha256"]  # a bundle saved before hashes existed
    (tmp_path / "a" / "bundle.json").write_text(json.dumps(bundle))
    with pytest.raises(FeatureError, match=r"bundle\.json.*risk_score|risk_score.*bundle\.json"):
        FoldEnsemble.load(tmp_path / "a")
