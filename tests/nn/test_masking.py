import torch

from modalsurv.nn.masking import masked_mean, masked_softmax, normalise_over, weighted_sum


def test_masked_softmax_matches_softmax_on_valid_entries():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]])
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    w = masked_softmax(scores, mask)
    ref0 = torch.softmax(torch.tensor([1.0, 3.0, 4.0]), 0)
    torch.testing.assert_close(w[0, [0, 2, 3]], ref0)
    assert w[0, 1] == 0.0
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_masked_softmax_all_masked_row_is_zero_with_finite_grads():
    scores = torch.randn(3, 5, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    mask[2, :3] = False
    w = masked_softmax(scores, mask)
    assert torch.equal(w[1], torch.zeros(5))
    torch.testing.assert_close(w.sum(1), torch.tensor([1.0, 0.0, 1.0]))
    (w * torch.randn_like(w)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[1], torch.zeros(5))


def test_masked_mean_ignores_nan_in_absent_slots():
    z = torch.tensor(
        [[[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0]], [[5.0, 6.0], [1.0, 1.0], [0.0, 0.0]]]
    )
    present = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_mean(z, present)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_normalise_over_and_weighted_sum():
    w = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    present = torch.tensor([[True, False, True], [False, False, False]])
    n = normalise_over(w, present)
    torch.testing.assert_close(n, torch.tensor([[0.4, 0.0, 0.6], [0.0, 0.0, 0.0]]))
    z = torch.arange(12.0).view(2, 3, 2)
    torch.testing.assert_close(weighted_sum(z, n)[0], 0.4 * z[0, 0] + 0.6 * z[0, 2])


def test_masked_softmax_ignores_non_finite_scores_in_masked_entries():
    scores = torch.tensor([[float("nan"), 1.0, float("inf")], [float("nan")] * 3])
    scores.requires_grad_(True)
    mask = torch.tensor([[False, True, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    w.sum().backward()
    assert torch.equal(scores.grad, torch.zeros(2, 3))
