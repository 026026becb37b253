import pytest
import torch
from torch import nn

from modalsurv.config import ModelConfig
from modalsurv.nn.projection import BagProjection, GatedAttentionPool, VectorProjection


def _cfg(**kw) -> ModelConfig:
    base = dict(latent_dim=8, hidden_dim=12, attention_pool_dim=6, n_heads=2, n_bins=5)
    return ModelConfig(**(base | kw))


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_vector_projection_architecture(layers, layer_norm):
    proj = VectorProjection(5, _cfg(projection_layers=layers, layer_norm=layer_norm, dropout=0.3))
    linears = [m for m in proj.net if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == (
        [(5, 8)] if layers == 1 else [(5, 12), (12, 12), (12, 8)]
    )
    assert sum(isinstance(m, nn.LayerNorm) for m in proj.net) == (layers if layer_norm else 0)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.3 for m in proj.net) == layers
    out = proj.eval()(torch.randn(4, 5))
    assert out.shape == (4, 8)
    assert (out >= 0).all()  # ends in ReLU


def _reference_pool(pool: GatedAttentionPool, h: torch.Tensor, mask: torch.Tensor):
    """Ilse et al. formula on the embedded valid tiles of each bag alone, V and U written out."""
    d = pool.out_dim
    emb, vu = pool.embed, pool.VU
    wv, bv, wu, bu = vu.weight[:d], vu.bias[:d], vu.weight[d:], vu.bias[d:]
    pooled, weights = [], []
    for b in range(h.shape[0]):
        z = h[b][mask[b]] @ emb.weight.T + emb.bias
        w = torch.zeros(h.shape[1])
        if len(z) == 0:
            pooled.append(torch.zeros(d))
        else:
            gate = torch.tanh(z @ wv.T + bv) * torch.sigmoid(z @ wu.T + bu)
            a = torch.softmax((gate @ pool.w.weight.T + pool.w.bias).squeeze(-1), 0)
            w[mask[b]] = a
            pooled.append(a @ z)
        weights.append(w)
    return torch.stack(pooled), torch.stack(weights)


def test_gated_attention_pool_matches_reference_and_masks_exactly():
    torch.manual_seed(0)
    pool = GatedAttentionPool(4, 6)
    h = torch.randn(4, 7, 4)
    mask = torch.rand(4, 7) > 0.4
    mask[0] = True
    mask[2] = False
    mask[3] = False
    mask[3, 5] = True
    pooled, weights = pool(h, mask)
    assert pooled.shape == (4, 6)
    ref_pooled, ref_weights = _reference_pool(pool, h, mask)
    torch.testing.assert_close(pooled, ref_pooled)
    torch.testing.assert_close(weights, ref_weights)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(weights.sum(1), mask.any(1).float())
    assert torch.equal(pooled[2], torch.zeros(6))  # empty bag
    # one valid tile gets all the weight: the output is that tile's embedding
    torch.testing.assert_close(pooled[3], pool.embed(h[3, 5]))
    # the pooled embedding is the embedding of the attention-weighted mean tile
    mean_tile = torch.einsum("bk,bkd->bd", weights, h.nan_to_num())
    torch.testing.assert_close(pooled[[0, 1, 3]], pool.embed(mean_tile)[[0, 1, 3]])


def test_gated_attention_pool_full_and_padded_bags_agree():
    """All-valid batches skip the gather; appending padded tiles must change nothing."""
    torch.manual_seed(3)
    pool = GatedAttentionPool(5, 4)
    h = torch.randn(3, 6, 5)
    full = torch.ones(3, 6, dtype=torch.bool)
    pooled, weights = pool(h, full)
    ref_pooled, ref_weights = _reference_pool(pool, h, full)
    torch.testing.assert_close(pooled, ref_pooled)
    torch.testing.assert_close(weights, ref_weights)
    padded = torch.cat([h, torch.full((3, 2, 5), float("nan"))], dim=1)
    mask = torch.cat([full, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    pooled2, weights2 = pool(padded, mask)
    torch.testing.assert_close(pooled2, pooled)
    torch.testing.assert_close(weights2[:, :6], weights)
    assert torch.equal(weights2[:, 6:], torch.zeros(3, 2))


def test_masked_tile_features_never_reach_output_or_gradients():
    torch.manual_seed(1)
    proj = BagProjection(4, _cfg()).eval()
    h = torch.randn(3, 6, 4)
    mask = torch.rand(3, 6) > 0.5
    mask[:, 0] = True
    mask[2] = False  # absent slide
    out, att = proj(h, mask)
    h2 = h.clone()
    h2[~mask] = torch.randn(int((~mask).sum()), 4) * 100
    out2, att2 = proj(h2, mask)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(att, att2)
    h3 = h.clone()
    h3[~mask] = float("nan")
    h3.requires_grad_(True)
    out3, att3 = proj(h3, mask)
    assert torch.isfinite(out3).all() and torch.isfinite(att3).all()
    out3.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in proj.parameters() if p.grad is not None)
    assert torch.equal(att3[2], torch.zeros(6))


def test_bag_projection_changes_when_valid_tile_changes():
    torch.manual_seed(2)
    proj = BagProjection(4, _cfg()).eval()
    h = torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out, _ = proj(h, mask)
    h2 = h.clone()
    h2[0, 1] += 3.0
    out2, _ = proj(h2, mask)
    assert not torch.allclose(out[0], out2[0])
    torch.testing.assert_close(out[1], out2[1])


def test_bag_projection_rejects_bad_shapes():
    with pytest.raises(ValueError, match=">= 1"):
        BagProjection(0, _cfg())
    proj = BagProjection(4, _cfg())
    assert proj.project.in_dim == 6  # the MLP reads the pooled attention_pool_dim embedding
    with pytest.raises(ValueError, match="B×K×D"):
        proj(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        proj(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize(("d", "fill"), [(1, 0.7), (3, 0.7), (3, 0.95)])
def test_folded_pool_equals_the_unfolded_maths(d, fill):
    """Tiles narrower than the pool take the folded path; its output, weights and
    gradients equal the embed-then-gate computation, NaN padding never leaks."""
    from modalsurv.nn.masking import masked_softmax
    from modalsurv.nn.projection import GatedAttentionPool

    torch.manual_seed(0)
    pool = GatedAttentionPool(d, 16).double()
    h = torch.randn(6, 9, d, dtype=torch.float64)
    mask = torch.rand(6, 9) < fill  # sparse bags: the gathered path; full ones: dense
    mask[0], mask[1] = False, True
    padded = h.clone()
    padded[~mask] = float("nan")
    out, w = pool(padded, mask)
    z = pool.embed(h)
    scores = pool.score(z.reshape(-1, 16)).view(6, 9)
    ref_w = masked_softmax(scores, mask, dim=-1)
    ref = torch.bmm(ref_w.unsqueeze(1), z).squeeze(1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w, ref_w, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(out).all() and (out[0] == 0).all()
    g = torch.autograd.grad(out.sum(), list(pool.parameters()))
    g_ref = torch.autograd.grad(ref.sum(), list(pool.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gate_score_is_the_tanh_gate_of_ilse_et_al_to_float64_rounding():
    """``score`` computes ``w^T (tanh(V z) ⊙ sigmoid(U z))`` through ``tanh(v) = 2
    sigmoid(2v) - 1`` (one sigmoid: torch's CPU tanh is slow); values and gradients must
    equal the written-out formula."""
    from modalsurv.nn.projection import GatedAttentionPool

    torch.manual_seed(1)
    pool = GatedAttentionPool(7, 5).double()
    z = torch.randn(40, 5, dtype=torch.float64) * 3  # large and small gate inputs
    wv, bv = pool.VU.weight[:5], pool.VU.bias[:5]
    wu, bu = pool.VU.weight[5:], pool.VU.bias[5:]
    ref = (torch.tanh(z @ wv.T + bv) * torch.sigmoid(z @ wu.T + bu)) @ pool.w.weight.T
    ref = (ref + pool.w.bias).squeeze(-1)
    out = pool.score(z)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    params = [pool.VU.weight, pool.VU.bias, pool.w.weight, pool.w.bias]
    for a, b in zip(torch.autograd.grad(out.square().sum(), params),
                    torch.autograd.grad(ref.square().sum(), params)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert "_gate_scale" not in pool.state_dict()  # checkpoints unchanged
