import numpy as np
import torch

from modalsurv.train.trainer import Tensors, batches, choose_monitor, drop_modalities


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


def test_monitor_prefers_loss_when_asked():
    with_events = _tensors([1.0, 2.0], [True, False])
    assert choose_monitor(with_events, "deephit", "loss") == "val_loss"
    assert choose_monitor(with_events, "cox", "loss") == "val_loss"
    # Cox partial likelihood without events is undefined: fall back as documented
    assert choose_monitor(_tensors([1.0, 2.0], [False, False]), "cox", "loss") == "train_loss"
    assert choose_monitor(None, "deephit", "loss") == "train_loss"
