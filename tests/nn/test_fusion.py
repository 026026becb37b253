import pytest
import torch
from torch import nn

from modalsurv.config import ModelConfig
from modalsurv.nn.fusion import (
    FUSIONS,
    CrossAttentionFusion,
    CrossAttentionSelfFusion,
    MaskedMultiheadAttention,
    get_fusion,
)

M, H = 3, 8
ALL = sorted(FUSIONS)


def _cfg(**kw) -> ModelConfig:
    base = dict(latent_dim=H, hidden_dim=12, n_heads=2, n_bins=5, dropout=0.1)
    return ModelConfig(**(base | kw))


def _fusion(name: str, m: int = M):
    torch.manual_seed(0)
    return FUSIONS[name](m, H, _cfg()).eval()


def _present(b: int = 12, seed: int = 0) -> torch.Tensor:
    """Random missingness plus the edge cases: all present, one present, none present."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(b, M, generator=g) > 0.4
    p[0] = True
    p[1] = torch.tensor([False, True, False])
    p[2] = False
    return p


def _z(b: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, M, H, generator=torch.Generator().manual_seed(seed + 100))


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_no_nan_under_random_masks(name):
    fusion = _fusion(name)
    for seed in range(3):
        z, p = _z(seed=seed), _present(seed=seed)
        out = fusion(z, p)
        assert out.fused.shape == (12, H)
        assert torch.isfinite(out.fused).all()
        assert torch.equal(out.fused[2], torch.zeros(H))  # no modality at all → zeros
        if out.weights is not None:
            assert out.weights.shape == (12, M)
            assert torch.isfinite(out.weights).all()
        if out.per_modality is not None:
            assert out.per_modality.shape == (12, M, H)


@pytest.mark.parametrize("name", ALL)
def test_weights_sum_to_one_over_present_and_zero_for_absent(name):
    out = _fusion(name)(_z(), _present())
    if name == "concat":
        assert out.weights is None
        return
    p = _present()
    w = out.weights
    assert (w >= 0).all()
    assert torch.equal(w[~p], torch.zeros(int((~p).sum())))
    torch.testing.assert_close(w.sum(1), p.any(1).float())
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("name", ALL)
def test_row_unchanged_when_another_sample_loses_a_modality(name):
    fusion = _fusion(name)
    z, p = _z(), _present()
    ref = fusion(z, p)
    dropped = 0
    for i in range(12):
        present_mods = torch.nonzero(p[i]).flatten()
        if len(present_mods) < 2:
            continue
        p2 = p.clone()
        p2[i, present_mods[i % len(present_mods)]] = False
        out = fusion(z, p2)
        others = torch.arange(12) != i
        torch.testing.assert_close(out.fused[others], ref.fused[others], rtol=0, atol=1e-6)
        if ref.weights is not None:
            torch.testing.assert_close(out.weights[others], ref.weights[others], rtol=0, atol=1e-6)
        assert not torch.allclose(out.fused[i], ref.fused[i])  # the sample itself does change
        dropped += 1
    assert dropped >= 3


@pytest.mark.parametrize("name", ALL)
def test_absent_slot_content_is_ignored(name):
    fusion = _fusion(name)
    z, p = _z(), _present()
    ref = fusion(z, p)
    z2 = z.clone()
    z2[~p] = float("nan")
    out = fusion(z2, p)
    torch.testing.assert_close(out.fused, ref.fused)


@pytest.mark.parametrize("name", ALL)
def test_single_modality_sample_and_single_modality_fusion(name):
    fusion = _fusion(name)
    z = _z(b=2)
    p = torch.tensor([[True, False, False], [False, False, True]])
    out = fusion(z, p)
    assert torch.isfinite(out.fused).all() and out.fused.abs().sum() > 0
    single = FUSIONS[name](1, H, _cfg()).eval()
    out1 = single(torch.randn(4, 1, H), torch.tensor([[True], [False], [True], [True]]))
    assert out1.fused.shape == (4, H) and torch.isfinite(out1.fused).all()
    assert torch.equal(out1.fused[1], torch.zeros(H))


@pytest.mark.parametrize("name", ALL)
def test_gradients_flow_without_nan_with_missing_modalities(name):
    fusion = FUSIONS[name](M, H, _cfg()).train()
    z = _z().requires_grad_(True)
    p = _present()
    out = fusion(z, p)
    loss = out.fused.pow(2).sum() + (out.weights.pow(2).sum() if out.weights is not None else 0)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(z.grad[~p], torch.zeros(int((~p).sum()), H))
    grads = [q.grad for q in fusion.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert not grads or any(g.abs().sum() > 0 for g in grads)


def test_mean_and_modality_weight_values():
    z, p = (
        _z(b=4),
        torch.tensor([[True, True, False], [True, False, True], [True] * 3, [False] * 3]),
    )
    mean = FUSIONS["mean"](M, H, _cfg())(z, p)
    torch.testing.assert_close(mean.fused[0], (z[0, 0] + z[0, 1]) / 2)
    fw = FUSIONS["modality_weight"](M, H, _cfg())
    with torch.no_grad():
        fw.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    out = fw(z, p)
    soft = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    torch.testing.assert_close(out.weights[2], soft)
    torch.testing.assert_close(
        out.weights[1], torch.tensor([soft[0], 0, soft[2]]) / (soft[0] + soft[2])
    )
    torch.testing.assert_close(
        out.fused[1], out.weights[1, 0] * z[1, 0] + out.weights[1, 2] * z[1, 2]
    )


def test_concat_uses_presence_indicators():
    fusion = FUSIONS["concat"](M, H, _cfg())
    z = torch.zeros(2, M, H)  # same (zero) embeddings, different presence
    out = fusion(z, torch.tensor([[True, True, True], [True, False, True]]))
    assert not torch.allclose(out.fused[0], out.fused[1])


def test_masked_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MaskedMultiheadAttention(H, 2)
    ref = nn.MultiheadAttention(H, 2, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(5, 4, H)
    allowed = torch.rand(5, 4, 4) > 0.5
    allowed |= torch.eye(
        4, dtype=torch.bool
    )  # every row keeps a key: torch would give NaN otherwise
    out, w = ours(x, allowed)
    ref_out, ref_w = ref(
        x, x, x, attn_mask=~allowed.repeat_interleave(2, dim=0), average_attn_weights=False
    )
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)


def test_masked_attention_row_without_keys_is_zero_not_nan():
    att = MaskedMultiheadAttention(H, 2)
    allowed = torch.zeros(1, 3, 3, dtype=torch.bool)
    allowed[0, 0, 1] = True
    out, w = att(torch.randn(1, 3, H), allowed)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 1:], torch.zeros(2, H))
    assert torch.equal(w[0, :, 1:], torch.zeros(2, 2, 3))


@pytest.mark.parametrize(
    "name", ["cross_attention", "cross_attention_gated", "cross_attention_self"]
)
def test_attention_maps_respect_presence_and_diagonal(name):
    fusion = _fusion(name)
    p = _present()
    out = fusion(_z(), p)
    a = out.attention  # B×M×M (query, key)
    assert torch.equal(a[~p.unsqueeze(1).expand_as(a)], torch.zeros(int((~p).sum()) * M))
    diag = a.diagonal(dim1=1, dim2=2)
    if name == "cross_attention_self":
        assert (diag[p] > 0).all()
    else:
        assert torch.equal(diag, torch.zeros_like(diag))


def test_cross_attention_two_modalities_attends_only_to_the_other():
    """With two modalities, A's only key is B: softmax weight is 1 whatever A's query is, so
    A's attended output depends on B alone; with self-attention it depends on A too."""
    torch.manual_seed(0)
    cross = CrossAttentionFusion(2, H, _cfg()).eval()
    selfa = CrossAttentionSelfFusion(2, H, _cfg()).eval()
    z = torch.randn(4, 2, H)
    p = torch.ones(4, 2, dtype=torch.bool)
    z_a = z.clone()
    z_a[:, 0] += torch.randn(4, H)  # perturb A
    z_b = z.clone()
    z_b[:, 1] += torch.randn(4, H)  # perturb B
    _, att, _ = cross.attend(z, p)
    _, att_a, _ = cross.attend(z_a, p)
    _, att_b, _ = cross.attend(z_b, p)
    torch.testing.assert_close(att_a[:, 0], att[:, 0])  # A's own embedding is not a key/value
    assert not torch.allclose(att_b[:, 0], att[:, 0])  # B's is
    tokens, _, _ = cross.attend(z, p)
    tokens_a, _, _ = cross.attend(z_a, p)
    assert not torch.allclose(tokens_a[:, 0], tokens[:, 0])  # residual still carries A
    _, s, _ = selfa.attend(z, p)
    _, s_a, _ = selfa.attend(z_a, p)
    assert not torch.allclose(s_a[:, 0], s[:, 0])


def test_cross_attention_query_changes_attention_over_other_modalities():
    torch.manual_seed(0)
    cross = CrossAttentionFusion(M, H, _cfg()).eval()
    z = torch.randn(2, M, H)
    p = torch.ones(2, M, dtype=torch.bool)
    _, _, a = cross.attend(z, p)
    z2 = z.clone()
    z2[:, 0] += torch.randn(2, H)
    _, _, a2 = cross.attend(z2, p)
    assert not torch.allclose(a2[:, 0], a[:, 0])  # A's query moved its weights over B and C
    assert torch.equal(a2[:, 0, 0], torch.zeros(2))


def test_cross_attention_single_modality_falls_back_to_own_embedding():
    fusion = CrossAttentionFusion(M, H, _cfg()).eval()
    z = torch.randn(1, M, H)
    p = torch.tensor([[False, True, False]])
    out = fusion(z, p)
    torch.testing.assert_close(out.fused[0], fusion.norm(z[0, 1]))


def test_cross_attention_weights_are_the_attention_each_modality_receives():
    """Plain cross-attention reports, per sample, the share of attention each present
    modality receives as a key, summed over the present queries (a query with no key
    counts as attending to itself) and normalised: computed here sample by sample."""
    fusion = _fusion("cross_attention")
    z, p = _z(), _present()
    out = fusion(z, p)
    for i in range(len(p)):
        on = [m for m in range(M) if p[i, m]]
        received = torch.zeros(M)
        for q in on:
            keys = [k for k in on if k != q]
            if keys:
                received[keys] += out.attention[i, q, keys]
            else:
                received[q] += 1.0
        want = received / received.sum() if on else received
        torch.testing.assert_close(out.weights[i], want)
    assert (p.sum(1) >= 3).any() and (p.sum(1) == 1).any()  # both cases were met


def test_cross_attention_gated_weights_are_gating_softmax():
    fusion = _fusion("cross_attention_gated")
    z, p = _z(), _present()
    tokens, _, _ = fusion.attend(torch.where(p.unsqueeze(-1), z, 0.0), p)
    logits = fusion.gate(tokens).squeeze(-1) + fusion.gate_bias
    out = fusion(z, p)
    for i in [0, 3, 5]:
        keep = p[i]
        torch.testing.assert_close(out.weights[i, keep], torch.softmax(logits[i, keep], 0))


def test_heads_must_divide_latent_dim():
    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionFusion(M, 6, _cfg(latent_dim=6, n_heads=4))


def test_fusion_rejects_wrong_shapes():
    fusion = _fusion("mean")
    with pytest.raises(ValueError, match="B×3×8"):
        fusion(torch.randn(2, 2, H), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="present"):
        fusion(torch.randn(2, M, H), torch.ones(2, 2, dtype=torch.bool))


def test_unknown_fusion_error_lists_known_names():
    with pytest.raises(ValueError, match="unknown fusion 'cross_atention'") as err:
        get_fusion("cross_atention")
    for name in FUSIONS:
        assert name in str(err.value)


# ------------------------------------------------------------ uncertainty-aware fusion
def test_uncertainty_fusion_is_inverse_variance_weighting():
    fusion = _fusion("uncertainty")
    with torch.no_grad():  # a non-trivial head
        fusion.logvar_weight.normal_(0.0, 0.5)
        fusion.logvar_bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
    z, p = _z(), _present()
    out = fusion(z, p)
    log_var = fusion.log_variance(torch.where(p.unsqueeze(-1), z, 0.0))
    precision = torch.exp(-log_var) * p
    torch.testing.assert_close(out.precision, precision)
    assert torch.equal(out.precision[~p], torch.zeros(int((~p).sum())))  # exactly zero
    total = precision.sum(1, keepdim=True)
    want = torch.where(total > 0, precision / total.clamp_min(1e-30), 0.0)
    torch.testing.assert_close(out.weights, want)
    torch.testing.assert_close(out.fused, torch.einsum("bm,bmh->bh", want, z.nan_to_num()))
    # a patient with one present modality gets that embedding unchanged
    torch.testing.assert_close(out.fused[1], z[1, 1])
    # the head's bound: |log variance| < max_log_variance however large the input
    huge = fusion.log_variance(1e6 * z)
    assert huge.abs().max() <= fusion.max_log_variance


def test_uncertainty_fusion_starts_as_the_mean_fusion():
    z, p = _z(), _present()
    out = _fusion("uncertainty")(z, p)
    ref = _fusion("mean")(z, p)
    torch.testing.assert_close(out.fused, ref.fused)
    torch.testing.assert_close(out.weights, ref.weights)


def test_uncertainty_fusion_gradient_reaches_the_log_variance_head():
    fusion = FUSIONS["uncertainty"](M, H, _cfg()).train()
    z, p = _z(), _present()
    target = torch.randn(12, H, generator=torch.Generator().manual_seed(3))
    loss = (fusion(z, p).fused - target).pow(2).sum()
    loss.backward()
    assert fusion.logvar_weight.grad.abs().sum() > 0
    assert fusion.logvar_bias.grad.abs().sum() > 0
    # an absent modality's head row gets no gradient from the patients missing it
    only_first = torch.zeros(12, M, dtype=torch.bool)
    only_first[:, 0] = True
    fusion.zero_grad()
    (fusion(z, only_first).fused - target).pow(2).sum().backward()
    assert torch.equal(fusion.logvar_weight.grad, torch.zeros(M, H))  # one expert: w = 1


def test_uncertainty_fusion_learns_per_patient_reliability():
    """Modality 1 is corrupted by heavy noise for half the patients, which its embedding
    flags (last dimension). Trained to predict the signal, the fusion must give modality 1
    less weight exactly where it is corrupted: per-patient, not per-modality, weighting."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 256
    signal = torch.randn(n, H - 1, generator=g)
    bad = torch.rand(n, generator=g) < 0.5
    z = torch.zeros(n, 2, H)
    z[:, 0, :-1] = signal + 0.7 * torch.randn(n, H - 1, generator=g)  # always so-so
    z[:, 1, :-1] = signal + 0.2 * torch.randn(n, H - 1, generator=g)  # good when clean...
    z[bad, 1, :-1] += 3.0 * torch.randn(int(bad.sum()), H - 1, generator=g)  # ...else noise
    z[:, 1, -1] = bad.float()
    present = torch.ones(n, 2, dtype=torch.bool)
    fusion = FUSIONS["uncertainty"](2, H, _cfg())
    opt = torch.optim.Adam(fusion.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss = (fusion(z, present).fused[:, :-1] - signal).pow(2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        w = fusion(z, present).weights
    assert w[~bad, 1].mean() > 0.7  # clean: the precise modality dominates
    assert w[bad, 1].mean() < 0.15  # corrupted: down-weighted for those patients only


def test_gated_fusion_is_normalised_sigmoid_gates_and_survives_underflow():
    """The gates are sigmoid(l_m) / sum_j sigmoid(l_j) over present modalities; with every
    logit below fp32 sigmoid's underflow (~ -104) the weights are still a distribution
    (their ratio is exp of the logit difference) instead of all zeros."""
    fusion = _fusion("gated")
    z, p = _z(), _present()
    logits = torch.einsum("bmh,mh->bm", z, fusion.gate_weight) + fusion.gate_bias
    gates = torch.sigmoid(logits).masked_fill(~p, 0.0)
    expected = gates / gates.sum(-1, keepdim=True).clamp_min(1e-30)
    out = fusion(z, p)
    torch.testing.assert_close(out.weights, expected)
    with torch.no_grad():
        fusion.gate_bias.fill_(-200.0)
    out = fusion(z, p)
    both = p.sum(-1) > 0
    torch.testing.assert_close(out.weights[both].sum(-1), torch.ones(int(both.sum())))
    torch.testing.assert_close(out.weights, torch.softmax(logits.masked_fill(~p, -torch.inf), -1)
                               .nan_to_num(0.0))
    assert out.fused[both].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("name", ALL)
def test_batch_prediction_equals_one_patient_at_a_time(name):
    """In eval mode a patient's fused vector and weights do not depend on who else is in
    the batch: the batch equals the patients fused one by one (to float rounding)."""
    fusion = _fusion(name)
    z, p = _z(), _present()
    batch = fusion(z, p)
    for i in range(len(z)):
        one = fusion(z[i : i + 1], p[i : i + 1])
        torch.testing.assert_close(one.fused, batch.fused[i : i + 1], rtol=0, atol=1e-6)
        if batch.weights is not None:
            torch.testing.assert_close(one.weights, batch.weights[i : i + 1], rtol=0, atol=1e-6)
