
import pytest
import torch

from modalsurv.config import ModelConfig
from modalsurv.nn.heads import OutputHead, logits_from_pmf, pmf_from_logits
from modalsurv.survival.family import get_family


def DeepHitHead(in_dim, cfg):
    return OutputHead(in_dim, cfg.model_copy(update={"head": "deephit"}))


def CoxHead(in_dim, cfg):
    return OutputHead(in_dim, cfg.model_copy(update={"head": "cox"}))


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(**(dict(latent_dim=8, n_heads=2, n_bins=5) | kw))


def test_deephit_head_shape_and_pmf():
    head = DeepHitHead(8, _cfg(n_bins=7))
    logits = head(torch.randn(3, 8))
    assert logits.shape == (3, 7) and head.out_dim == 7
    pmf = pmf_from_logits(logits)
    assert pmf.shape == (3, 8)
    torch.testing.assert_close(pmf.sum(1), torch.ones(3))
    # the appended column is the zero logit: pmf_K / pmf_k = exp(-logit_k)
    torch.testing.assert_close(pmf[:, :-1] / pmf[:, -1:], logits.exp())


def test_pmf_matches_survival_curves():
    from modalsurv.survival.curves import pmf_from_logits as curves_pmf

    logits = torch.randn(4, 6)
    torch.testing.assert_close(pmf_from_logits(logits), torch.as_tensor(curves_pmf(logits)))


def test_logits_from_pmf_round_trip():
    logits = torch.randn(5, 6) * 3
    torch.testing.assert_close(
        logits_from_pmf(pmf_from_logits(logits)), logits, atol=1e-4, rtol=1e-4
    )
    zero_bin = torch.tensor([[0.5, 0.0, 0.5]])
    back = logits_from_pmf(zero_bin)
    assert torch.isfinite(back).all() and back[0, 1] < -15


def test_deephit_combine_averages_pmfs_over_present():
    head = DeepHitHead(8, _cfg(n_bins=4))
    outs = torch.randn(3, 3, 4)
    present = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    logits = head.combine(outs, present)
    pmf = pmf_from_logits(logits)
    per = pmf_from_logits(outs)
    torch.testing.assert_close(pmf[0], (per[0, 0] + per[0, 2]) / 2)
    torch.testing.assert_close(pmf[1], per[1, 1])
    assert torch.equal(logits[2], torch.zeros(4))


def test_cox_head_has_no_bias_and_combines_by_mean_log_risk():
    head = CoxHead(8, _cfg())
    assert head.linear.bias is None
    assert head(torch.zeros(2, 8)).abs().sum() == 0
    assert head(torch.randn(4, 8)).shape == (4, 1)
    outs = torch.tensor([[[1.0], [3.0]], [[2.0], [5.0]]])
    present = torch.tensor([[True, True], [False, True]])
    torch.testing.assert_close(head.combine(outs, present), torch.tensor([[2.0], [5.0]]))


def test_family_registry_and_error():
    assert OutputHead(8, _cfg(head="logistic_hazard", n_bins=6)).out_dim == 6
    with pytest.raises(ValueError, match=r"unknown survival family 'weibull'.*'cox', 'deephit'"):
        get_family("weibull")
    with pytest.raises(ValueError, match="unknown survival family"):
        _cfg(head="weibull")
