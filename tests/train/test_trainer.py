import numpy as np
import pytest
import torch

from modalsurv.survival.family import get_family
from modalsurv.train import trainer
from modalsurv.train.trainer import (
    Tensors,
    batches,
    choose_monitor,
    drop_modalities,
    drop_tiles,
)


def test_batches_cover_each_index_once_and_drop_only_a_singleton():
    g = torch.Generator().manual_seed(0)
    out = batches(33, 16, g)
    assert [len(b) for b in out] == [16, 16]  # the 33rd alone would be a batch of one
    assert len(torch.cat(out).unique()) == 32
    out = batches(34, 16, g)
    assert sorted(torch.cat(out).tolist()) == list(range(34))
    assert [len(b) for b in batches(1, 16, g)] == [1]  # nothing else to train on


def test_balanced_sampler_draws_events_half_the_time():
    g = torch.Generator().manual_seed(0)
    event = torch.zeros(1000, dtype=torch.bool)
    event[:100] = True
    idx = torch.cat(batches(1000, 100, g, event))
    frac = event[idx].float().mean().item()
    assert 0.45 < frac < 0.55


def test_modality_dropout_never_drops_all_and_never_adds():
    g = torch.Generator().manual_seed(0)
    n = 2000
    rng = np.random.default_rng(0)
    present = {m: torch.from_numpy(rng.random(n) < 0.7) for m in "abc"}
    present["a"][:10] = False
    present["b"][:10] = False
    present["c"][:10] = False  # nothing present: stays that way
    out = drop_modalities(present, 0.5, g)
    stacked_in = torch.stack([present[m] for m in "abc"], 1)
    stacked = torch.stack([out[m] for m in "abc"], 1)
    assert not (stacked & ~stacked_in).any()
    has_any = stacked_in.any(1)
    assert stacked[has_any].any(1).all()
    assert not stacked[:10].any()
    kept = stacked.sum().item() / stacked_in.sum().item()
    assert 0.5 < kept < 0.8  # p=0.5 plus the rescued ones


def test_tile_dropout_hides_only_valid_tiles_and_keeps_one_per_bag():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(1)
    mask = torch.from_numpy(rng.random((500, 40)) < 0.6)
    mask[:5] = False  # empty bags (absent samples) stay empty
    mask[5:50] = False
    mask[5:50, 3] = True  # single-tile bags always keep their tile
    out = drop_tiles(mask, 0.7, g)
    assert out.shape == mask.shape and out.dtype == torch.bool
    assert not (out & ~mask).any()
    assert not out[:5].any()
    assert out[5:50, 3].all()
    assert out[mask.any(1)].any(1).all()
    kept = out[50:].sum().item() / mask[50:].sum().item()
    assert 0.28 < kept < 0.33  # 1 - p, plus the few rescued bags
    assert drop_tiles(mask, 0.0, g) is mask
    again = drop_tiles(mask, 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(again, out)  # seeded


def test_tile_dropout_reaches_the_pooling_in_training(make_cohort, make_config, monkeypatch):
    from modalsurv.nn import projection
    from modalsurv.train.estimator import ModalSurv

    seen = []
    real = projection.GatedAttentionPool.forward

    def spy(self, h, mask):
        if self.training:
            seen.append(mask.sum().item() / mask.numel())
        return real(self, h, mask)

    monkeypatch.setattr(projection.GatedAttentionPool, "forward", spy)
    cohort = make_cohort(n=60, seed=2)
    ModalSurv(make_config(train__tile_dropout=0.0, train__epochs=1)).fit(cohort)
    full = np.mean(seen)
    seen.clear()
    ModalSurv(make_config(train__tile_dropout=0.5, train__epochs=1)).fit(cohort)
    assert np.mean(seen) < 0.7 * full


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("mixed", [False, True])
def test_mixed_precision_autocasts_the_training_forward_only(make_cohort, make_config,
                                                             monkeypatch, mixed, device):  # fmt: skip
    """``train.mixed_precision``: training forwards run in bfloat16 (the same autocast on
    the CPU and on a GPU); the loss, the weights, validation and prediction stay float32."""
    from modalsurv.nn import model as model_mod
    from modalsurv.train.estimator import ModalSurv

    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    losses: list[torch.dtype] = []
    real_forward, real_loss = model_mod.ModalSurvNet.forward, trainer.batch_loss

    def spy(self, x, present, mask):
        out = real_forward(self, x, present, mask)
        seen[self.training].add(out["fused"].dtype)
        return out

    def loss_spy(logits, batch, config):
        losses.append(logits.dtype)
        return real_loss(logits, batch, config)

    monkeypatch.setattr(model_mod.ModalSurvNet, "forward", spy)
    monkeypatch.setattr(trainer, "batch_loss", loss_spy)
    cohort = make_cohort(n=60, seed=2)
    m = ModalSurv(make_config(train__mixed_precision=mixed, train__epochs=2, train__device=device))
    m.fit(cohort)
    assert seen[True] == ({torch.bfloat16} if mixed else {torch.float32})
    assert seen[False] == {torch.float32}  # the validation pass
    assert set(losses) == {torch.float32}
    assert all(v.dtype == torch.float32 for v in m.net_.state_dict().values()
               if v.is_floating_point())  # fmt: skip
    risk = m.predict_risk(cohort)
    assert risk.dtype == np.float64 and np.isfinite(risk).all() and risk.std() > 0


def _tensors(time, event):
    n = len(time)
    return Tensors(
        x={"a": torch.zeros(n, 2)},
        present={"a": torch.ones(n, dtype=torch.bool)},
        mask={},
        time=torch.tensor(time, dtype=torch.float32),
        event=torch.tensor(event),
    )


def test_monitor_falls_back_without_events():
    assert choose_monitor(None, "deephit") == "train_loss"
    assert choose_monitor(_tensors([1.0, 2.0], [True, False]), "deephit") == "val_cindex"
    assert choose_monitor(_tensors([1.0, 2.0], [False, False]), "deephit") == "val_loss"
    assert choose_monitor(_tensors([1.0, 2.0], [False, False]), "cox") == "train_loss"
    # an event only at the last time: no comparable pair
    assert choose_monitor(_tensors([1.0, 2.0], [False, True]), "deephit") == "val_loss"
    # Cox's partial likelihood is defined with an event, comparable pair or not
    assert choose_monitor(_tensors([1.0, 2.0], [False, True]), "cox") == "val_loss"


def test_monitor_prefers_loss_when_asked():
    with_events = _tensors([1.0, 2.0], [True, False])
    assert choose_monitor(with_events, "deephit", "loss") == "val_loss"
    assert choose_monitor(with_events, "cox", "loss") == "val_loss"
    # Cox partial likelihood without events is undefined: fall back as documented
    assert choose_monitor(_tensors([1.0, 2.0], [False, False]), "cox", "loss") == "train_loss"
    assert choose_monitor(None, "deephit", "loss") == "train_loss"


def test_risk_from_logits_rmst_is_minus_the_restricted_mean():
    from modalsurv.survival import curves

    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    cuts = np.array([0.0, 1.0, 2.5, 4.0, 7.0, 9.0])
    pmf = curves.pmf_from_logits(logits.numpy())
    got = trainer.risk_from_logits(logits, "deephit", cuts, 2.0, "rmst")
    np.testing.assert_allclose(got, -curves.rmst(pmf, cuts, 9.0), rtol=1e-6)
    np.testing.assert_allclose(
        trainer.risk_from_logits(logits, "deephit", cuts, 2.0), curves.risk_at(pmf, cuts, 2.0)
    )


@pytest.mark.parametrize("head", ["deephit", "cox"])
def test_a_diverging_network_stops_with_a_clear_error(make_cohort, make_config, head):
    """lr=1e10: the outputs overflow, every loss is NaN and every step was skipped; the
    NaN/inf network used to be kept and prediction failed later as an internal error."""
    from modalsurv.errors import DivergedError
    from modalsurv.train.estimator import ModalSurv

    cfg = make_config(train__lr=1e10, train__epochs=3, model__head=head)
    with pytest.raises(DivergedError, match=r"training diverged.*train\.lr 1e\+10"):
        ModalSurv(cfg).fit(make_cohort(n=60, seed=3))


def test_non_finite_weights_are_caught_at_the_end_of_the_epoch():
    net = torch.nn.Linear(2, 1)
    trainer._check_finite(net, 0, 1e-3)  # finite: nothing
    with torch.no_grad():
        net.bias.fill_(float("nan"))
    from modalsurv.errors import DivergedError

    with pytest.raises(DivergedError, match="'bias' is not finite after epoch 4"):
        trainer._check_finite(net, 3, 1e-3)


@pytest.mark.parametrize("head", ["deephit", "logistic_hazard", "cox"])
def test_batch_loss_reads_the_binned_event_for_discrete_heads_only(make_config, head):
    gen = torch.Generator().manual_seed(0)
    n, k = 12, 8
    event = torch.ones(n, dtype=torch.bool)
    binned = event.clone()
    binned[:4] = False  # followed past the last cut: censored for the bins
    batch = Tensors(x={}, present={}, mask={}, time=torch.linspace(1.0, 5.0, n), event=event,
                    bin_index=torch.randint(0, k, (n,), generator=gen), bin_event=binned)  # fmt: skip
    width = get_family(head).n_outputs(k)
    logits = torch.randn(n, width, generator=gen)
    cfg = make_config(model__head=head, model__n_bins=k)
    got = trainer.batch_loss(logits, batch, cfg)
    want_event = event if head == "cox" else binned
    other_event = binned if head == "cox" else event
    as_want = Tensors(x={}, present={}, mask={}, time=batch.time, event=want_event,
                      bin_index=batch.bin_index)  # fmt: skip
    as_other = Tensors(x={}, present={}, mask={}, time=batch.time, event=other_event,
                       bin_index=batch.bin_index)  # fmt: skip
    assert float(got) == pytest.approx(float(trainer.batch_loss(logits, as_want, cfg)))
    assert float(got) != pytest.approx(float(trainer.batch_loss(logits, as_other, cfg)))
