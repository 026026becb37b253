import json

import numpy as np
import pytest
import torch

from modalsurv.errors import DataError
from modalsurv.survival.bins import TimeBins
from modalsurv.survival.cox import breslow, breslow_survival
from modalsurv.train.estimator import ModalSurv, inner_split, member_splits


@pytest.fixture(scope="module")
def fitted(cohort, make_config):
    events = []
    model = ModalSurv(make_config()).fit(cohort, progress=lambda e, **kw: events.append(e))
    return model, events


def test_fit_predict_shapes_and_documented_risk(fitted, cohort):
    model, events = fitted
    assert "epoch_end" in events and events[-1] == "fit_end"
    n, k = len(cohort), model.bins_.n_bins
    pmf = model.predict_pmf(cohort)
    assert pmf.shape == (n, k + 1)
    np.testing.assert_allclose(pmf.sum(1), 1.0, atol=1e-5)
    risk = model.predict_risk(cohort)
    s_ref = model.predict_survival(cohort, np.array([model.t_ref_]))[:, 0]
    np.testing.assert_allclose(risk, 1.0 - s_ref, atol=1e-9)
    surv = model.predict_survival(cohort, np.linspace(0, cohort.time.max(), 20))
    assert np.all(np.diff(surv, axis=1) <= 1e-9)
    assert np.all(np.isfinite(model.predict_expected_time(cohort)))


def test_t_ref_is_median_of_inner_training_part(cohort, fitted):
    model, _ = fitted
    tr, _ = inner_split(cohort.event, model.config.train.val_fraction, model.config.seed)
    assert model.t_ref_ == pytest.approx(np.median(cohort.time[tr]))


def test_inner_split_is_stratified_and_disjoint(cohort):
    tr, va = inner_split(cohort.event, 0.25, 3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(cohort)
    assert abs(cohort.event[va].mean() - cohort.event.mean()) < 0.1


def test_member_splits_rotate_through_stratified_folds(cohort):
    splits = member_splits(cohort.event, 0.2, seed=4, n_members=7)
    assert len(splits) == 7
    first = [va for _, va in splits[:5]]
    np.testing.assert_array_equal(np.sort(np.concatenate(first)), np.arange(len(cohort)))
    for tr, va in splits:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(cohort)
        assert abs(cohort.event[va].mean() - cohort.event.mean()) < 0.1
    # members past the fifth validate on a reshuffled split, not a repeat of the first
    assert not np.array_equal(splits[5][1], splits[0][1])
    again = member_splits(cohort.event, 0.2, seed=4, n_members=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))


def test_member_splits_without_enough_events_for_stratification():
    event = np.zeros(12, dtype=bool)
    event[:2] = True  # fewer events than folds: the folds still cover every row
    splits = member_splits(event, 0.25, seed=0, n_members=4)
    np.testing.assert_array_equal(np.sort(np.concatenate([v for _, v in splits])), np.arange(12))


def test_member_splits_train_every_member_on_an_event():
    """Two events, five folds: too few to stratify the old way, and a plain k-fold put
    both in one validation fold for about one seed in seven, so that member trained on no
    event at all. They now lie in different folds; the folds still cover every row."""
    for seed in range(40):
        event = np.zeros(12, dtype=bool)
        event[np.random.default_rng(seed).choice(12, 2, replace=False)] = True
        splits = member_splits(event, 0.2, seed=seed, n_members=5)
        assert all(event[tr].any() for tr, _ in splits), seed
        np.testing.assert_array_equal(np.sort(np.concatenate([v for _, v in splits])),
                                      np.arange(12))  # fmt: skip


def test_inner_split_trains_on_a_lone_event():
    """One event, too few to stratify: drawn for validation, it left the training part
    eventless and the fit was refused as if the cohort had none; it now trains, and the
    split keeps its sizes."""
    for seed in range(30):
        event = np.zeros(10, dtype=bool)
        event[seed % 10] = True
        tr, va = inner_split(event, 0.2, seed)
        assert event[tr].any() and len(va) == 2 and len(np.union1d(tr, va)) == 10


def test_a_rotating_cox_member_without_an_event_is_refused(make_cohort, make_config):
    """A lone event lies in one member's rotating validation fold: every batch of that Cox
    member had no event (partial likelihood 0, zero gradient), so it stayed its initial
    draw and was averaged into the ensemble silently; now a LabelError names the member
    and the remedy."""
    from modalsurv.cohort import Cohort
    from modalsurv.errors import LabelError

    c = make_cohort(n=12, seed=1)
    event = np.zeros(12, dtype=bool)
    event[3] = True
    one = Cohort(c.ids, c.time, event, features=c.features, present=c.present,
                 bag_mask=c.bag_mask)  # fmt: skip
    cfg = make_config(model__head="cox", train__n_init=5, train__member_splits="rotate")
    with pytest.raises(LabelError, match=r"seed member \d.*train\.member_splits: shared"):
        ModalSurv(cfg).fit(one)


def test_rotating_members_validate_on_their_own_fold(cohort, make_config, monkeypatch):
    from modalsurv.train import estimator

    seen = []
    real = estimator.fit_network

    def spy(net, train, val, *args, **kwargs):
        seen.append((len(train), len(val), float(val.time.sum())))
        return real(net, train, val, *args, **kwargs)

    monkeypatch.setattr(estimator, "fit_network", spy)
    model = ModalSurv(make_config(train__n_init=3, train__member_splits="rotate")).fit(cohort)
    assert len(seen) == 3 and len({s[2] for s in seen}) == 3  # three different folds
    assert all(tr + va == len(cohort) for tr, va, _ in seen)
    # with rotation no row is held out of fitting: bins and t_ref come from every row
    bins = TimeBins(n_bins=model.bins_.n_bins, scheme=model.config.model.bin_scheme)
    np.testing.assert_allclose(model.cuts, bins.fit(cohort.time, cohort.event).cuts)
    assert model.t_ref_ == pytest.approx(np.median(cohort.time))
    seen.clear()
    ModalSurv(make_config(train__n_init=3, train__member_splits="shared")).fit(cohort)
    assert len({s[2] for s in seen}) == 1 and seen[0][0] + seen[0][1] == len(cohort)


def test_same_seed_same_predictions(cohort, make_config, fitted):
    again = ModalSurv(make_config()).fit(cohort)
    np.testing.assert_array_equal(again.predict_risk(cohort), fitted[0].predict_risk(cohort))


def test_save_load_identical_and_pickle_free(tmp_path, cohort, fitted):
    model, _ = fitted
    model.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.safetensors", "state.json", "state.npz"}
    meta = json.loads((tmp_path / "state.json").read_text())
    assert set(meta["versions"]) >= {"torch", "numpy", "scikit-learn", "modalsurv"}
    back = ModalSurv.load(tmp_path)
    np.testing.assert_array_equal(back.predict_pmf(cohort), model.predict_pmf(cohort))
    np.testing.assert_array_equal(back.predict_risk(cohort), model.predict_risk(cohort))


def test_fitted_model_predicts_bit_for_bit_as_saved_and_loaded(tmp_path, cohort, make_config):
    """The model a run keeps in memory and the same model saved and loaded (a resumed
    run's finished folds, ``predict``) give the same member outputs to the last bit: the
    trained parameters own their storage (not views at odd offsets of the optimiser's flat
    buffer, where a matrix-vector product rounded differently), as a loaded network's do."""
    model = ModalSurv(make_config(model__head="cox", model__latent_dim=128,
                                  model__hidden_dim=128)).fit(cohort)  # fmt: skip
    params = list(model.net_.parameters())
    assert all(p.storage_offset() == 0 for p in params)
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    model.save(tmp_path)
    back = ModalSurv.load(tmp_path)
    for part in (cohort, cohort[np.arange(27)]):  # 27 rows: a batch where the bits differed
        np.testing.assert_array_equal(back.predict_member_outputs(part),
                                      model.predict_member_outputs(part))  # fmt: skip


def test_gate_weights_per_patient(fitted, cohort):
    w = fitted[0].gate_weights(cohort)
    assert list(w.index) == list(cohort.ids) and w.shape[1] == 4
    assert np.isfinite(w.to_numpy()).all()


def test_predict_on_cohort_lacking_a_modality(fitted, cohort):
    part = cohort.select(["clinical", "rna"])
    risk = fitted[0].predict_risk(part)
    assert risk.shape == (len(cohort),) and np.isfinite(risk).all()


def test_cox_head_breslow_survival_and_round_trip(tmp_path, cohort, make_config):
    model = ModalSurv(make_config(model__head="cox")).fit(cohort)
    risk = model.predict_risk(cohort)
    surv = model.predict_survival(cohort, np.array([1.0, 5.0, 20.0]))
    assert np.all(np.diff(surv, axis=1) <= 0)
    # higher log-risk -> lower survival at any fixed time
    order = np.argsort(risk)
    assert np.all(np.diff(surv[order, 1]) <= 1e-12)
    pmf = model.predict_pmf(cohort)
    np.testing.assert_allclose(pmf.sum(1), 1.0, atol=1e-9)
    model.save(tmp_path)
    back = ModalSurv.load(tmp_path)
    np.testing.assert_array_equal(
        back.predict_survival(cohort, [5.0]), model.predict_survival(cohort, [5.0])
    )


def test_logistic_hazard_family_end_to_end(tmp_path, cohort, make_config):
    """The third family, added as one module and one registry line, trains, predicts, is
    ensembled over seeds and folds, cross-validates and round-trips like the other two."""
    from modalsurv.train.cv import cross_validate
    from modalsurv.train.ensemble import FoldEnsemble

    cfg = make_config(model__head="logistic_hazard", train__n_init=2)
    model = ModalSurv(cfg).fit(cohort)
    assert model.family.name == "logistic_hazard"
    pmf = model.predict_pmf(cohort)
    assert pmf.shape == (len(cohort), cfg.model.n_bins + 1)
    np.testing.assert_allclose(pmf.sum(1), 1.0, atol=1e-9)
    surv = model.predict_survival(cohort, np.array([1.0, 5.0, 20.0]))
    assert np.all(np.diff(surv, axis=1) <= 1e-12)
    risk = model.predict_risk(cohort)
    np.testing.assert_allclose(risk, 1 - model.predict_survival(cohort, [model.t_ref_])[:, 0])
    from modalsurv.survival.metrics import concordance_index

    assert concordance_index(cohort.time, cohort.event, risk) > 0.6  # it learned something
    model.save(tmp_path / "m")
    back = ModalSurv.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict_risk(cohort), risk)
    ens = FoldEnsemble([model, back])
    np.testing.assert_allclose(ens.predict_risk(cohort), risk)
    res = cross_validate(cohort, make_config(model__head="logistic_hazard", cv__folds=2))
    c = res.summary["models"]["modalsurv"]["harrell_c"]["mean"]
    assert np.isfinite(c) and c > 0.55


def test_breslow_matches_scikit_survival():
    from sksurv.linear_model.coxph import BreslowEstimator

    rng = np.random.default_rng(0)
    n = 60
    time = np.round(rng.exponential(5, n), 1) + 0.1  # ties on purpose
    event = rng.random(n) < 0.6
    eta = rng.normal(size=n)
    ref = BreslowEstimator().fit(eta, event, time)
    bt, bh = breslow(time, event, eta)
    grid = np.linspace(0.1, time.max(), 37)
    ours = breslow_survival(bt, bh, eta[:5], grid)
    theirs = np.stack([f(grid) for f in ref.get_survival_function(eta[:5])])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_no_leakage_from_validation_cohort(cohort, make_config):
    """Preprocessors and bins never see validation rows (outer_fold replication path)."""
    idx = np.arange(len(cohort))
    train, val = cohort.subset(idx[:60]), cohort.subset(idx[60:])
    canary_x = val.features["slide"].copy()
    canary_x[:, 0] = 1e6
    canary = val.with_modality("slide", canary_x, val.present["slide"])
    from modalsurv.cohort import Cohort

    canary = Cohort(
        canary.ids,
        canary.time * 50,
        canary.event,
        canary.features,
        canary.present,
        bag_mask=canary.bag_mask,
    )
    cfg = make_config(train__epochs=2)
    a = ModalSurv(cfg).fit(train, val_cohort=val)
    b = ModalSurv(cfg).fit(train, val_cohort=canary)
    np.testing.assert_array_equal(a.cuts, b.cuts)
    assert a.t_ref_ == b.t_ref_
    ma, aa = a.preprocessor_.get_state()
    mb, ab = b.preprocessor_.get_state()
    assert ma == mb and aa.keys() == ab.keys()
    for key in aa:
        np.testing.assert_array_equal(aa[key], ab[key])


def test_validation_without_events_falls_back_to_loss(cohort, make_config):
    idx = np.arange(len(cohort))
    censored = idx[~cohort.event]
    val = cohort.subset(censored[:10])
    train = cohort.subset(np.setdiff1d(idx, censored[:10]))
    model = ModalSurv(make_config()).fit(train, val_cohort=val)
    assert model.fit_result_.monitor == "val_loss"
    assert np.isfinite(model.predict_risk(val)).all()


def test_last_batch_of_one_and_balanced_sampler_and_modality_dropout(make_cohort, make_config):
    c = make_cohort(n=42, seed=3)  # inner train part of 33 -> batches 16, 16 (+1 dropped)
    cfg = make_config(train__balanced_sampler=True, train__modality_dropout=0.3)
    model = ModalSurv(cfg).fit(c)
    assert np.isfinite(model.predict_risk(c)).all()


@pytest.fixture(scope="module")
def seed_ensemble(cohort, make_config):
    cfg = make_config(train__n_init=2, train__monitor="loss")
    return ModalSurv(cfg).fit(cohort)


def test_seed_ensemble_averages_member_pmfs(cohort, seed_ensemble):
    import torch

    from modalsurv.nn.model import SeedEnsemble

    model = seed_ensemble
    assert isinstance(model.net_, SeedEnsemble) and len(model.net_.members) == 2
    assert [r.monitor for r in model.fit_results_] == ["val_loss", "val_loss"]
    pmf = model.predict_pmf(cohort)
    members = []
    for net in model.net_.members:
        single = ModalSurv(model.config)
        single.__dict__.update({k: v for k, v in model.__dict__.items() if k != "net"})
        single.net_ = net
        members.append(single.predict_pmf(cohort))
    np.testing.assert_allclose(pmf, np.mean(members, axis=0), atol=1e-5)
    assert not np.allclose(members[0], members[1])  # different seeds, different members
    assert isinstance(model.net_.members[0].linear["clinical"], torch.nn.Linear)


def test_seed_ensemble_deterministic_and_round_trips(tmp_path, cohort, make_config, seed_ensemble):
    again = ModalSurv(make_config(train__n_init=2, train__monitor="loss")).fit(cohort)
    np.testing.assert_array_equal(again.predict_risk(cohort), seed_ensemble.predict_risk(cohort))
    seed_ensemble.save(tmp_path)
    meta = json.loads((tmp_path / "state.json").read_text())
    assert len(meta["training"]["member_best_epochs"]) == 2
    back = ModalSurv.load(tmp_path)
    np.testing.assert_array_equal(back.predict_pmf(cohort), seed_ensemble.predict_pmf(cohort))
    w = back.gate_weights(cohort)
    np.testing.assert_allclose(w.to_numpy().sum(1), 1.0, atol=1e-5)


def test_seed_ensemble_cox_head_round_trip(tmp_path, cohort, make_config):
    model = ModalSurv(make_config(model__head="cox", train__n_init=2)).fit(cohort)
    logits = [
        m(*_net_inputs(model, cohort))["logits"][:, 0].detach().numpy() for m in model.net_.members
    ]
    centre = float(model.fitted_["cox/centre"])  # the mixture's mean training log-risk
    np.testing.assert_allclose(model.predict_risk(cohort), np.mean(logits, axis=0) - centre,
                               atol=1e-5)  # fmt: skip
    # each member on its own training mean: their spread is disagreement, not offsets
    own = model.predict_member_risk(cohort)
    for k, m in enumerate(logits):
        np.testing.assert_allclose(own[k], m - float(model.fitted_["cox/member_centres"][k]),
                                   atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(own.mean(0), model.predict_risk(cohort), atol=1e-6)
    model.save(tmp_path)
    back = ModalSurv.load(tmp_path)
    np.testing.assert_array_equal(back.predict_risk(cohort), model.predict_risk(cohort))
    np.testing.assert_array_equal(back.predict_member_risk(cohort), own)


def _net_inputs(model, cohort):
    data = model._tensors(model.preprocessor_.transform(cohort))
    return data.x, data.present, data.mask


def test_bag_pca_fits_predicts_and_round_trips(tmp_path, cohort, make_config):
    model = ModalSurv(make_config(preprocess__bag_pca=3)).fit(cohort)
    assert model.preprocessor_.dims["wsi"] == 3
    assert model.net_.projections["wsi"].in_dim == 3  # the network sees the PCA width
    model.save(tmp_path)
    back = ModalSurv.load(tmp_path)
    np.testing.assert_array_equal(back.predict_risk(cohort), model.predict_risk(cohort))


def test_scikit_learn_clone_params_and_grid_search(cohort, make_config):
    """ModalSurv keeps the scikit-learn contract: get_params/set_params on every config
    value, clone gives an unfitted copy, fitted attributes end in "_", and model selection
    (GridSearchCV with a survival scorer) splits a Cohort like an array."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, KFold

    from modalsurv.errors import ConfigError
    from modalsurv.train.estimator import concordance_scorer

    model = ModalSurv(make_config())
    params = model.get_params()
    assert params["config__train__lr"] == model.config.train.lr
    assert params["config__model__fusion"] == model.config.model.fusion
    model.set_params(config__train__lr=0.005, config__model__dropout=0.3)
    assert (model.config.train.lr, model.config.model.dropout) == (0.005, 0.3)
    with pytest.raises(ConfigError, match="train.lrr: unknown key"):
        model.set_params(config__train__lrr=1.0)
    with pytest.raises(ConfigError, match="no parameter"):
        model.set_params(lr=1.0)
    copy = clone(model)
    assert copy.config == model.config and copy.config is not model.config
    assert not copy.__sklearn_is_fitted__()
    model.fit(cohort)
    fitted = {k for k in vars(model) if k.endswith("_") and not k.startswith("_")}
    assert {"preprocessor_", "bins_", "t_ref_", "net_", "modalities_", "fitted_"} <= fitted
    assert not clone(model).__sklearn_is_fitted__()
    assert len(cohort[np.array([0, 2, 4])]) == 3 and len(cohort[cohort.event]) == cohort.n_events
    search = GridSearchCV(ModalSurv(make_config()), {"config__train__lr": [1e-3, 3e-3]},
                          scoring=concordance_scorer, cv=KFold(2, shuffle=True, random_state=0))
    search.fit(cohort)
    assert search.best_params_["config__train__lr"] in (1e-3, 3e-3)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert concordance_scorer(search.best_estimator_, cohort) > 0.5
    with pytest.raises(DataError, match="own labels"):
        ModalSurv(make_config()).fit(cohort, cohort.survival_array()[::-1].copy())


def test_wrong_input_is_refused_by_name(fitted, cohort):
    """Not a Cohort, an empty one, or a modality in another shape than at fit time: each is
    an error naming the call or the modality (was: AttributeError, a torch.cat error, a
    bare KeyError, a DataError naming an internal 'vector' field)."""
    from modalsurv.cohort import Cohort
    from modalsurv.errors import FeatureError

    model = fitted[0]
    with pytest.raises(TypeError, match="ModalSurv.fit takes a modalsurv.Cohort"):
        ModalSurv(model.config).fit(np.zeros((10, 3)))
    with pytest.raises(TypeError, match="ModalSurv.predict takes a modalsurv.Cohort"):
        model.predict_risk(np.zeros((10, 3)))
    empty = cohort.subset(np.arange(0))
    for call in (model.predict_risk, lambda c: model.predict_survival(c, [1.0])):
        with pytest.raises(DataError, match="the cohort has no patient"):
            call(empty)
    with pytest.raises(DataError, match="no modality"):
        ModalSurv(model.config).fit(Cohort(cohort.ids, cohort.time, cohort.event, features={}))

    def reshaped(name, x, masks):
        feats = {**cohort.features, name: x}
        return Cohort(cohort.ids, cohort.time, cohort.event, features=feats,
                      present=cohort.present, bag_mask=masks)  # fmt: skip

    bag_as_vector = reshaped("wsi", cohort.features["wsi"].mean(1), {})
    with pytest.raises(FeatureError, match="'wsi' was fitted as tile bags.*as vectors"):
        model.predict_risk(bag_as_vector)
    slide_bags = np.repeat(cohort.features["slide"][:, None, :], 3, axis=1)
    vector_as_bag = reshaped("slide", slide_bags, {**cohort.bag_mask,
                                                   "slide": np.ones((len(cohort), 3), bool)})
    with pytest.raises(FeatureError, match="'slide' was fitted as one vector.*as tile bags"):
        model.predict_risk(vector_as_bag)


def test_modality_absent_for_every_training_patient_is_named(cohort, make_config):
    from modalsurv.cohort import Cohort

    present = {**cohort.present, "rna": np.zeros(len(cohort), bool)}
    part = Cohort(cohort.ids, cohort.time, cohort.event, features=cohort.features,
                  present=present, bag_mask=cohort.bag_mask)  # fmt: skip
    with pytest.raises(DataError, match="field 'rna'.*absent for every one of the"):
        ModalSurv(make_config()).fit(part)


def test_cox_curves_refuse_bad_times_and_concat_has_no_gate_weights(cohort, make_config):
    from modalsurv.errors import ConfigError

    model = ModalSurv(make_config(model__head="cox", model__fusion="concat")).fit(cohort)
    for bad in ([np.nan, 1.0], [-1.0], [np.inf]):
        with pytest.raises(ValueError, match="times must be finite and >= 0"):
            model.predict_survival(cohort, bad)
        with pytest.raises(ValueError, match="times must be finite and >= 0"):
            model.predict_member_survival(cohort, bad)
    with pytest.raises(ConfigError, match="'concat' produces no modality weights"):
        model.gate_weights(cohort)


def test_fit_leaves_the_callers_global_random_state_alone(cohort, make_config):
    """fit seeds its members (utils.set_seed) for reproducibility; the caller's next draws
    from random, NumPy's and torch's global generators are what they would have been."""
    import random

    import torch

    def draws():
        return random.random(), np.random.random(), float(torch.rand(1))  # noqa: NPY002

    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # noqa: NPY002
    expected = draws()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # noqa: NPY002
    ModalSurv(make_config()).fit(cohort)
    assert draws() == expected


def test_a_fit_where_no_epoch_scored_saves_strict_json(tmp_path, cohort, make_config):
    """best_score is -inf when every epoch's score was NaN: it was written as -Infinity,
    which Python reads back but no strict JSON parser does; now null."""
    import json

    model = ModalSurv(make_config()).fit(cohort)
    model.fit_result_.best_score = float("-inf")
    model.save(tmp_path)

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    for f in tmp_path.glob("*.json"):
        meta = json.loads(f.read_text(), parse_constant=refuse)
        if "training" in meta:
            assert meta["training"]["best_score"] is None
    ModalSurv.load(tmp_path)  # still loads


def test_events_past_the_last_training_cut_are_censored_for_the_discrete_loss(fitted, cohort):
    """A validation patient followed past the last training cut is censored there (as
    ``TimeBins.transform`` defines), not an event in the last bin: the discrete losses
    read ``bin_event``; the C-index and Cox keep the observed event."""
    from modalsurv.cohort import Cohort

    model, _ = fitted
    late = Cohort(cohort.ids, cohort.time + model.bins_.cuts[-1], cohort.event,
                  features=cohort.features, present=cohort.present,
                  bag_mask=cohort.bag_mask)  # fmt: skip
    data = model._tensors(model.preprocessor_.transform(late), with_bins=True)
    assert data.event.any() and not data.bin_event.any()
    assert (data.bin_index == model.bins_.n_bins - 1).all()
    kept = model._tensors(model.preprocessor_.transform(cohort), with_bins=True)
    inside = torch.from_numpy(cohort.time <= model.bins_.cuts[-1])
    assert torch.equal(kept.bin_event[inside], kept.event[inside])
