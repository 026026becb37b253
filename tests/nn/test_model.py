import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalsurv.config import ModelConfig
from modalsurv.nn import fusion as fusion_mod
from modalsurv.nn.fusion import FUSIONS, Fusion, FusionOutput
from modalsurv.nn.heads import pmf_from_logits
from modalsurv.nn.model import ModalSurvNet

DIMS = {"clinical": 5, "wsi": 6, "rna": 4}
BAG = {"wsi": True}
B, K_TILES = 10, 7
ALL = sorted(FUSIONS)


def _cfg(**kw) -> ModelConfig:
    base = dict(latent_dim=8, hidden_dim=12, attention_pool_dim=4, n_heads=2, n_bins=5, dropout=0.1)
    return ModelConfig(**(base | kw))


def _net(fusion: str = "cross_attention_gated", head: str = "deephit", **kw) -> ModalSurvNet:
    torch.manual_seed(0)
    return ModalSurvNet(DIMS, BAG, _cfg(fusion=fusion, head=head, **kw))


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = {
        "clinical": torch.randn(B, 5, generator=g),
        "wsi": torch.randn(B, K_TILES, 6, generator=g),
        "rna": torch.randn(B, 4, generator=g),
    }
    present = {m: torch.rand(B, generator=g) > 0.35 for m in DIMS}
    for m in DIMS:
        present[m][0] = True  # all present
        present[m][1] = m == "rna"  # only rna
        present[m][2] = False  # nothing
    mask = {"wsi": torch.rand(B, K_TILES, generator=g) > 0.3}
    mask["wsi"][:, 0] = True
    return x, present, mask


@pytest.mark.parametrize("head", ["deephit", "cox"])
@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_finite_and_backward(name, head):
    net = _net(name, head).train()
    x, present, mask = _batch()
    out = net(x, present, mask)
    assert out["logits"].shape == (B, 5 if head == "deephit" else 1)
    assert out["fused"].shape == (B, 8)
    assert set(out["tile_attention"]) == {"wsi"}
    assert out["tile_attention"]["wsi"].shape == (B, K_TILES)
    assert out["present"].shape == (B, 3)
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["fused"]).all()
    if out["weights"] is not None:
        assert out["weights"].shape == (B, 3) and out["gates"] is out["weights"]
        torch.testing.assert_close(out["weights"].sum(1), out["present"].any(1).float())
    out["logits"].pow(2).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("name", ALL)
def test_sample_output_independent_of_other_samples_missingness(name):
    net = _net(name).eval()
    x, present, mask = _batch()
    ref = net(x, present, mask)
    p2 = {m: v.clone() for m, v in present.items()}
    p2["clinical"][0] = False  # sample 0 loses clinical
    p2["wsi"][3] = not p2["wsi"][3]
    mask2 = {"wsi": mask["wsi"].clone()}
    mask2["wsi"][5] = False  # sample 5's slide has no valid tile: absent
    out = net(x, p2, mask2)
    same = torch.tensor([i not in (0, 3, 5) for i in range(B)])
    torch.testing.assert_close(out["logits"][same], ref["logits"][same], rtol=0, atol=1e-6)
    assert not torch.allclose(out["logits"][0], ref["logits"][0])
    assert not out["present"][5, 1]


@pytest.mark.parametrize("name", ALL)
def test_absent_inputs_and_masked_tiles_do_not_matter(name):
    net = _net(name).eval()
    x, present, mask = _batch()
    ref = net(x, present, mask)
    x2 = {m: v.clone() for m, v in x.items()}
    for m in ("clinical", "rna"):
        x2[m][~present[m]] = float("nan")
    x2["wsi"][~mask["wsi"]] = 1e3
    x2["wsi"][~present["wsi"]] = float("nan")
    out = net(x2, present, mask)
    torch.testing.assert_close(out["logits"], ref["logits"])
    att = out["tile_attention"]["wsi"]
    assert torch.equal(att[~mask["wsi"]], torch.zeros(int((~mask["wsi"]).sum())))
    assert torch.equal(att[~present["wsi"]], torch.zeros(int((~present["wsi"]).sum()), K_TILES))
    torch.testing.assert_close(att.sum(1), out["present"][:, 1].float())


def test_nan_padding_gives_finite_gradients():
    net = _net().train()
    x, present, mask = _batch()
    x["rna"][~present["rna"]] = float("nan")
    x["wsi"][~mask["wsi"]] = float("nan")
    net(x, present, mask)["logits"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_late_fusion_logits_encode_mean_pmf_of_present_modalities():
    net = _net("late").eval()
    assert len(net.heads) == 3
    x, present, mask = _batch()
    out = net(x, present, mask)
    with torch.no_grad():
        z = {
            "clinical": net.projections["clinical"](x["clinical"]),
            "wsi": net.projections["wsi"](x["wsi"], mask["wsi"])[0],
            "rna": net.projections["rna"](x["rna"]),
        }
        pmfs = [pmf_from_logits(net.heads[i](z[m])) for i, m in enumerate(DIMS)]
    p = out["present"]
    checked = [b for b in range(B) if p[b].any()]
    assert len(checked) >= 5
    for b in checked:
        expect = sum(pmfs[i][b] for i in range(3) if p[b, i]) / p[b].sum()
        torch.testing.assert_close(pmf_from_logits(out["logits"])[b], expect, atol=1e-5, rtol=1e-4)


def test_config_drives_architecture():
    net = _net("concat", "cox", latent_dim=16, projection_layers=2, layer_norm=False)
    assert net.modalities == ["clinical", "wsi", "rna"]
    assert net.is_bag == {"clinical": False, "wsi": True, "rna": False}
    assert type(net.fusion).__name__ == "ConcatFusion"
    assert net.heads[0].linear.out_features == 1
    assert net.projections["clinical"].out_dim == 16


def test_determinism_same_seed_same_output():
    x, present, mask = _batch()
    a = _net().eval()(x, present, mask)["logits"]
    b = _net().eval()(x, present, mask)["logits"]
    assert torch.equal(a, b)


def test_unknown_names_raise_readable_errors():
    with pytest.raises(ValueError, match=r"unknown fusion 'attn'.*cross_attention_gated"):
        ModalSurvNet(DIMS, BAG, _cfg().model_copy(update={"fusion": "attn"}))
    with pytest.raises(ValueError, match=r"unknown survival family 'aft'.*'cox', 'deephit'"):
        ModalSurvNet(DIMS, BAG, _cfg().model_copy(update={"head": "aft"}))


def test_bad_construction_and_inputs_raise():
    with pytest.raises(ValueError, match="at least one modality"):
        ModalSurvNet({}, {}, _cfg())
    with pytest.raises(ValueError, match="not in dims"):
        ModalSurvNet(DIMS, {"mri": True}, _cfg())
    net = _net("mean")
    x, present, mask = _batch()
    with pytest.raises(ValueError, match="'rna': missing from x"):
        net({k: v for k, v in x.items() if k != "rna"}, present, mask)
    with pytest.raises(ValueError, match="'clinical': expected a B×D vector with D=5"):
        net(x | {"clinical": torch.randn(B, 3)}, present, mask)
    with pytest.raises(ValueError, match="'wsi': no tile mask"):
        net(x, present, {})


def test_registry_extension_is_one_class_one_line(monkeypatch):
    class MaxFusion(Fusion):
        def _fuse(self, z, present):
            filled = torch.where(present.unsqueeze(-1), z, torch.full_like(z, -1e9))
            return FusionOutput(fused=filled.max(dim=1).values)

    monkeypatch.setitem(fusion_mod.FUSIONS, "max", MaxFusion)
    net = _net("max").eval()
    out = net(*_batch())
    assert out["weights"] is None and torch.isfinite(out["logits"]).all()
    assert torch.equal(out["fused"][2], torch.zeros(8))


@pytest.mark.parametrize("name", ["cross_attention_gated", "gated", "modality_weight"])
def test_network_learns_and_weights_favour_the_informative_modality(name):
    """The label depends on one modality only. Every fusion must learn it; fusions without
    cross-modal mixing must also move their weight to that modality (after cross-attention
    the other token carries the signal too, so its gate need not prefer the source)."""
    torch.manual_seed(0)
    n = 128
    signal = torch.randn(n, 3)
    label = (signal[:, 0] > 0).long() * 3  # bin 0 or bin 3
    x = {"noise": torch.randn(n, 3), "signal": signal}
    present = {m: torch.ones(n, dtype=torch.bool) for m in x}
    net = ModalSurvNet({"noise": 3, "signal": 3}, {}, _cfg(dropout=0.0, fusion=name))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        out = net(x, present, {})
        loss = torch.nn.functional.nll_loss(torch.log(pmf_from_logits(out["logits"])), label)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        out = net(x, present, {})
    acc = (pmf_from_logits(out["logits"]).argmax(1) == label).float().mean()
    assert acc > 0.9
    if name != "cross_attention_gated":
        assert out["weights"][:, 1].mean() > 0.6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_runs_on_cuda(name):
    net = _net(name).cuda()
    x, present, mask = _batch()
    move = lambda d: {k: v.cuda() for k, v in d.items()}  # noqa: E731
    out = net(move(x), move(present), move(mask))
    out["logits"].sum().backward()
    cpu = _net(name).eval()(x, present, mask)["logits"]
    torch.testing.assert_close(
        net.eval()(move(x), move(present), move(mask))["logits"].cpu(), cpu, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("head", ["deephit", "cox"])
def test_linear_skip_adds_masked_linear_term_to_every_logit(head):
    skip = _net(head=head, linear_skip=True).eval()
    assert set(skip.linear) == {"clinical", "rna"}  # vectors only, not the wsi bag
    x, present, mask = _batch()
    base = skip(x, present, mask)["logits"]  # zero-initialised: the deep model alone
    plain = _net(head=head, linear_skip=False).eval()
    torch.testing.assert_close(base, plain(x, present, mask)["logits"])
    with torch.no_grad():
        for m, layer in skip.linear.items():
            layer.weight.copy_(torch.arange(1.0, DIMS[m] + 1).unsqueeze(0))
    shift = sum(
        torch.where(present[m].unsqueeze(-1), x[m], 0.0) @ torch.arange(1.0, DIMS[m] + 1)
        for m in skip.linear
    )
    out = skip(x, present, mask)["logits"]
    torch.testing.assert_close(out - base, shift.unsqueeze(-1).expand_as(out))
    # an absent modality's values (even NaN) never reach the output
    x2 = {m: v.clone() for m, v in x.items()}
    x2["rna"][~present["rna"]] = float("nan")
    torch.testing.assert_close(skip(x2, present, mask)["logits"], out)


def test_linear_skip_shift_raises_deephit_risk_monotonically():
    logits = torch.randn(1, 5)
    cdf = [pmf_from_logits(logits + s)[0, :3].sum() for s in (-1.0, 0.0, 1.0, 2.0)]
    assert all(a < b for a, b in itertools.pairwise(cdf))


def test_seed_ensemble_mixes_pmfs_and_means_weights():
    from modalsurv.nn.model import SeedEnsemble

    torch.manual_seed(1)
    nets = [_net(), ModalSurvNet(DIMS, BAG, _cfg())]  # _net seeds 0; the second differs
    ens = SeedEnsemble(nets).eval()
    x, present, mask = _batch()
    outs = [n.eval()(x, present, mask) for n in nets]
    out = ens(x, present, mask)
    want = (pmf_from_logits(outs[0]["logits"]) + pmf_from_logits(outs[1]["logits"])) / 2
    torch.testing.assert_close(pmf_from_logits(out["logits"]), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["weights"], (outs[0]["weights"] + outs[1]["weights"]) / 2)
    assert out["gates"] is out["weights"] and ens.modalities == list(DIMS)
    with pytest.raises(ValueError, match="at least one"):
        SeedEnsemble([])


@pytest.mark.parametrize("name", ["concat", "cross_attention_gated"])
def test_embeddings_are_the_projections_before_fusion(name):
    net = _net(name).eval()
    x, present, mask = _batch()
    out = net(x, present, mask)
    assert out["embeddings"].shape == (B, 3, 8)  # B x M x latent
    # each modality's slot is that modality's projection alone, whatever the others are
    torch.testing.assert_close(out["embeddings"][:, 0], net.projections["clinical"](
        x["clinical"].masked_fill(~present["clinical"].unsqueeze(-1), 0.0)))
    x2 = {**x, "rna": x["rna"] + 5.0}
    other = net(x2, present, mask)["embeddings"]
    torch.testing.assert_close(other[:, 0], out["embeddings"][:, 0])
    assert not torch.allclose(other[:, 2], out["embeddings"][:, 2])


def test_seed_ensemble_keeps_each_members_outputs():
    from modalsurv.nn.model import SeedEnsemble

    torch.manual_seed(1)
    nets = [_net(), ModalSurvNet(DIMS, BAG, _cfg())]
    ens = SeedEnsemble(nets).eval()
    x, present, mask = _batch()
    outs = [n.eval()(x, present, mask) for n in nets]
    out = ens(x, present, mask)
    assert out["member_logits"].shape == (2, B, 5)
    assert out["member_embeddings"].shape == (2, B, 3, 8)
    for k in range(2):
        torch.testing.assert_close(out["member_logits"][k], outs[k]["logits"])
        torch.testing.assert_close(out["member_embeddings"][k], outs[k]["embeddings"])
    torch.testing.assert_close(out["embeddings"], out["member_embeddings"].mean(0))


@pytest.mark.parametrize("shape", [(1, K_TILES), (K_TILES,)])
def test_bag_mask_of_another_shape_is_refused_not_broadcast(shape):
    # a 1×K or K mask used to broadcast through `& present` to every patient and pass the
    # bag check: one patient's tile mask silently stood for the whole batch
    net = _net().eval()
    x, present, mask = _batch()
    with pytest.raises(ValueError, match=r"'wsi': tile mask has shape"):
        net(x, present, {"wsi": mask["wsi"][0].reshape(shape)})


def test_modalities_with_different_batch_sizes_raise_a_value_error_naming_them():
    net = _net("mean").eval()
    x, present, mask = _batch()
    with pytest.raises(ValueError, match=r"modality 'rna' has 1 patients, modality 'clinical' 10"):
        net(x | {"rna": x["rna"][:1]}, present | {"rna": present["rna"][:1]}, mask)


_PAD = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(ALL), head=st.sampled_from(["deephit", "cox", "logistic_hazard"]),
    narrow=st.booleans(), train=st.booleans(), bf16=st.booleans(), data=st.data(),
)  # fmt: skip
def test_missing_modality_invariants_hold_for_every_fusion_head_and_precision(
    name, head, narrow, train, bf16, data
):
    """Per patient, outputs ignore padding values and other patients (batch of one, any
    order), masks stay exact under bf16 autocast, and gradients are finite and exactly zero
    for a modality no patient has. ``narrow`` tiles take the pool's folded path."""
    dw = 2 if narrow else 6  # attention_pool_dim is 4
    torch.manual_seed(0)
    net = ModalSurvNet(DIMS | {"wsi": dw}, BAG, _cfg(fusion=name, head=head, dropout=0.0))
    net.train(train)
    b, k = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    x = {"clinical": torch.randn(b, 5, generator=g), "wsi": torch.randn(b, k, dw, generator=g),
         "rna": torch.randn(b, 4, generator=g)}  # fmt: skip
    bools = st.lists(st.booleans(), min_size=b, max_size=b)
    present = {m: torch.tensor(data.draw(bools)) for m in DIMS}
    # mostly valid tiles: the folded pool has a dense branch for bags at least 3/4 full
    tile = st.sampled_from([True, True, True, False])
    mask = {"wsi": torch.tensor([data.draw(st.lists(tile, min_size=k, max_size=k))
                                 for _ in range(b)])}  # fmt: skip
    valid = mask["wsi"] & present["wsi"][:, None]
    padded = {m: v.clone() for m, v in x.items()}
    for m in ("clinical", "rna"):
        padded[m][~present[m]] = data.draw(_PAD)
    padded["wsi"][~valid] = data.draw(_PAD)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    keys = ["logits", "fused", "weights", "attention", "embeddings"]
    with ctx:
        ref, out = net(x, present, mask), net(padded, present, mask)
    eff = out["present"]
    assert torch.equal(eff[:, 1], valid.any(1))
    for key in keys:
        if ref[key] is not None:
            assert torch.isfinite(out[key]).all(), key
            assert torch.equal(out[key], ref[key]), key
    tiles = out["tile_attention"]["wsi"]
    assert torch.equal(tiles, ref["tile_attention"]["wsi"])
    assert (tiles[~valid] == 0).all()
    if out["weights"] is not None:
        assert (out["weights"][~eff] == 0).all()
    if out["attention"] is not None:
        assert (out["attention"][~(eff[:, :, None] & eff[:, None, :])] == 0).all()
    tol = 3e-2 if bf16 else 1e-5
    order = torch.randperm(b, generator=g)
    for rows in [order] + [torch.tensor([i]) for i in range(b)]:
        with ctx:
            part = net(*({m: v[rows] for m, v in d.items()} for d in (padded, present, mask)))
        for key in [*keys, "tile_attention"]:
            got, want = part[key], out[key]
            if key == "tile_attention":
                got, want = got["wsi"], want["wsi"]
            if want is not None:
                torch.testing.assert_close(got.float(), want[rows].float(), atol=tol, rtol=tol)
    net.zero_grad()
    with ctx:
        again = net(padded, present, mask)
    (again["logits"].float().pow(2).sum() + again["fused"].float().sum()).backward()
    for pname, p in net.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    for j, m in enumerate(DIMS):
        if not eff[:, j].any():
            for pname, p in net.projections[m].named_parameters():
                assert p.grad is None or not p.grad.any(), (m, pname)
