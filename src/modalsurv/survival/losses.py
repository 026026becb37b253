"""Survival losses in torch: DeepHit (single risk), Cox partial likelihood, logistic hazard.

All are differentiable, vectorised over the batch (no Python loop over patients or times)
and finite on a batch without events or with one sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cox_loss", "deephit_loss", "deephit_loss_fused", "nll_logistic_hazard"]

_EPS = 1e-7  # pycox's floor inside log() of the PMF likelihood


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction = {reduction!r}: use 'mean', 'sum' or 'none'")


def _check_discrete(logits: Tensor, bin_index: Tensor, event: Tensor) -> tuple[Tensor, Tensor]:
    if logits.ndim != 2:
        raise ValueError(f"logits: expected B x K, got shape {tuple(logits.shape)}")
    idx = bin_index.reshape(-1).long()
    ev = event.reshape(-1)
    if idx.numel() != logits.shape[0] or ev.numel() != logits.shape[0]:
        raise ValueError(f"mismatched lengths: logits has {logits.shape[0]} rows, bin_index "
                         f"{idx.numel()}, event {ev.numel()}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= logits.shape[1]):
        bad = int(torch.nonzero((idx < 0) | (idx >= logits.shape[1]))[0, 0])
        raise ValueError(f"bin_index[{bad}] = {int(idx[bad])} is outside [0, "
                         f"{logits.shape[1] - 1}] (logits has {logits.shape[1]} bins)")
    return idx, ev.to(logits.dtype)


#: how far below the shift (in units of sigma) a column's largest term may sit before its
#: sum underflows float32's exp (about e^-87); the shift then moves to that largest term
_SHIFT_HEADROOM = 60.0


def _rank_shift(cdf: Tensor, outlives: Tensor, sigma: float) -> Tensor:
    """Per-bin shift of the ranking term's column sums: the batch's largest CDF in the bin,
    or, where the patients that outlive the bin all sit more than ``_SHIFT_HEADROOM`` sigmas
    below it (a small sigma), their own largest CDF, so the sum keeps a term of 1 instead
    of underflowing to zero (which dropped or inflated that bin's pairs). The shift cancels
    in every pair term; at the default sigma the first choice always holds (CDFs lie in
    [0, 1]), so results are unchanged there."""
    full = cdf.max(dim=0).values
    among = cdf.masked_fill(~outlives, -torch.inf).max(dim=0).values
    keep = torch.isinf(among) | ((full - among) / sigma < _SHIFT_HEADROOM)
    return torch.where(keep, full, among)


def _shifted_terms(cdf: Tensor, outlives: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """(per-bin shift, B x K terms ``exp((F_j(k) - shift_k) / sigma)`` of the patients that
    outlive bin k, 0 elsewhere). Masked inside the exponent: a patient that does not outlive
    the bin may sit above a small-sigma shift, and exp would overflow (inf * 0 = NaN)."""
    shift = _rank_shift(cdf.detach(), outlives, sigma)
    diff = torch.where(outlives, cdf - shift[None, :], 0.0)
    return shift, (diff / sigma).exp() * outlives.to(cdf.dtype)


def deephit_loss(logits: Tensor, bin_index: Tensor, event: Tensor, alpha: float = 0.2,
                 sigma: float = 0.1, reduction: str = "mean") -> Tensor:
    """Single-risk DeepHit loss ``alpha * NLL + (1 - alpha) * ranking`` (pycox convention).

    Note: the DeepHit paper (Lee et al. 2018) writes ``L_lik + alpha * L_rank``, so its
    ``alpha`` weighs the *ranking* term; here, as in ``pycox.models.loss.DeepHitSingleLoss``,
    ``alpha`` weighs the likelihood. The value equals pycox's (with ``pair_rank_mat``).

    * PMF: ``softmax([logits, 0])`` (K bins + mass beyond the last cut).
    * NLL: events ``-log f_i(k_i)``, censored ``-log(1 - F_i(k_i))``; mean over patients.
    * Ranking: over pairs where i had an event and (``k_j > k_i``, or ``k_j == k_i`` and j
      censored), ``exp(-(F_i(k_i) - F_j(k_i)) / sigma)``, summed and divided by ``B^2``
      (pycox averages over the full B x B rank matrix).

    The pair sum never forms a B x B matrix: ``sum_j exp(F_j(k)/sigma)`` over the j that
    outlive bin k depends on i only through k, so it is one masked B x K column sum, shifted
    by the per-bin maximum for stability; memory is O(B K). ``reduction="none"`` returns the
    per-patient terms (likelihood plus that patient's row of the ranking sum / B), whose mean
    and sum equal the ``"mean"`` and ``"sum"`` reductions.
    """
    idx, ev = _check_discrete(logits, bin_index, event)
    b, k = logits.shape
    padded = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
    pmf = torch.softmax(padded, dim=1)
    col = idx.view(-1, 1)

    # likelihood (pycox nll_pmf, with its epsilon)
    m = padded.max(dim=1).values
    z = (padded - m[:, None]).exp()
    total = z.sum(dim=1)
    tail = z.flip(1).cumsum(1).flip(1)  # mass from bin j on; tail[:, k+1] = beyond bin k
    surv_mass = tail[:, 1:].gather(1, col).view(-1)
    log_total = (total + _EPS).log()
    log_f = padded.gather(1, col).view(-1) - m - log_total
    log_s = (surv_mass + _EPS).log() - log_total
    nll = -(ev * log_f + (1.0 - ev) * log_s)

    # ranking term, O(B K)
    cdf = pmf[:, :k].cumsum(1)  # F_j(bin) for bins 0..K-1
    bins = torch.arange(k, device=logits.device)
    outlives = (idx[:, None] > bins[None, :]) | ((idx[:, None] == bins[None, :]) & (ev[:, None] == 0))
    shift, expo = _shifted_terms(cdf, outlives, sigma)
    col_sum = expo.sum(dim=0)  # per bin k: sum_j outlives_j(k) exp((F_j(k) - shift_k)/sigma)
    log_col = col_sum.clamp_min(torch.finfo(cdf.dtype).tiny).log()
    f_own = cdf.gather(1, col).view(-1)
    # masked in the exponent (not by multiplying), so a censored row never yields 0 * inf
    valid = (ev > 0) & (col_sum[idx] > 0)
    expnt = (shift[idx] - f_own) / sigma + log_col[idx]
    rank_i = torch.where(valid, expnt, torch.full_like(expnt, -torch.inf)).exp()
    rank_row = rank_i / b

    if reduction == "none":
        return alpha * nll + (1.0 - alpha) * rank_row
    if reduction == "mean":
        return alpha * nll.mean() + (1.0 - alpha) * rank_row.sum() / b
    return alpha * _reduce(nll, reduction) + (1.0 - alpha) * rank_row.sum()


def cox_loss(log_risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron",
             reduction: str = "mean") -> Tensor:
    """Negative Cox partial log-likelihood, Efron or Breslow ties, risk set ``T_j >= t``.

    ``"sum"`` equals ``torchsurv.loss.cox.neg_partial_log_likelihood(..., reduction="sum")``
    (torchsurv, without tied *event* times, builds risk sets from sort positions, so a
    censored patient tied with an event time may drop out of that event's risk set; here
    it never does).
    ``"mean"`` divides by the number of events; torchsurv's ``"mean"`` matches this without
    tied event times, but with ties it averages over *distinct* event times instead, which
    makes the loss scale depend on the tie pattern. A batch without events gives 0 (with a
    gradient of 0). Vectorised: sort once, a reverse ``logcumsumexp`` for the risk sets, and
    each tied event's Efron term ``log(D - r/m T)`` from its rank r within its tie group.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties = {ties!r}: use 'efron' or 'breslow'")
    eta = log_risk.reshape(-1)
    t = time.reshape(-1).to(eta.dtype)
    ev = event.reshape(-1).bool()
    if not (eta.numel() == t.numel() == ev.numel()):
        raise ValueError(f"mismatched lengths: log_risk has {eta.numel()}, time {t.numel()}, "
                         f"event {ev.numel()}")
    if not bool(ev.any()):
        return _reduce(eta * 0.0, "sum")
    t_sorted, order = torch.sort(t)
    eta_s = eta[order]
    ev_s = ev[order]
    _, group, counts = torch.unique_consecutive(t_sorted, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # first sorted index of each distinct time
    # log D per distinct time: log sum_{T_j >= t} exp(eta_j), stable for any scale
    log_risk_set = torch.logcumsumexp(eta_s.flip(0), 0).flip(0)[first]
    g = group[ev_s]
    log_d = log_risk_set[g]
    if ties == "efron":
        evf = ev_s.to(eta.dtype)
        n_groups = counts.numel()
        m = torch.zeros(n_groups, dtype=eta.dtype, device=eta.device).index_add(0, group, evf)
        # log T per time: log sum of exp(eta) over its tied events, shifted by the group max
        masked = torch.where(ev_s, eta_s, torch.full_like(eta_s, -torch.inf)).detach()
        gmax = torch.full((n_groups,), -torch.inf, dtype=eta.dtype, device=eta.device)
        gmax = gmax.scatter_reduce(0, group, masked, reduce="amax")
        shifted = torch.zeros(n_groups, dtype=eta.dtype, device=eta.device).index_add(
            0, group[ev_s], (eta_s[ev_s] - gmax[g]).exp())
        log_t = gmax.clamp_min(torch.finfo(eta.dtype).min) + shifted.clamp_min(
            torch.finfo(eta.dtype).tiny).log()
        # rank r of each event within its tie group (events are contiguous in sorted order)
        ev_pos = torch.cumsum(evf, 0)[ev_s] - 1
        r = ev_pos - (torch.cumsum(m, 0) - m)[g]
        # log(D - r/m T) = log D + log1p(-(r/m) T/D), with T <= D so the argument is > -1
        log_denom = log_d + torch.log1p(-(r / m[g]) * (log_t[g] - log_d).exp())
    else:
        log_denom = log_d
    per_event = -(eta_s[ev_s] - log_denom)
    if reduction == "mean":
        return per_event.sum() / per_event.numel()
    return _reduce(per_event, reduction)


def nll_logistic_hazard(logits: Tensor, bin_index: Tensor, event: Tensor,
                        reduction: str = "mean") -> Tensor:
    """Discrete-time hazard NLL, hazard_k = sigmoid(logits_k) (Kvamme & Borgan 2019).

    A patient in bin k contributes binary cross-entropies "no event" for bins < k and
    "event / no event" at bin k; equal to ``pycox.models.loss.nll_logistic_hazard``.
    """
    idx, ev = _check_discrete(logits, bin_index, event)
    target = torch.zeros_like(logits).scatter(1, idx.view(-1, 1), ev.view(-1, 1))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bins = torch.arange(logits.shape[1], device=logits.device)
    loss = (bce * (bins[None, :] <= idx[:, None])).sum(1)
    return _reduce(loss, reduction)


class _DeepHitMean(torch.autograd.Function):
    """``deephit_loss(..., reduction="mean")`` with its gradient in closed form: one
    autograd node instead of ~50 (forward and backward are a few B x K array passes each).

    The value is computed exactly as :func:`deephit_loss` does (the same expressions, so
    the same floats); the gradient is derived by hand, including the paths through the
    row maximum and the likelihood's epsilon that autograd also follows, and equals
    autograd's to float rounding (tested)."""

    @staticmethod
    def forward(ctx, logits: Tensor, idx: Tensor, ev: Tensor, alpha: float,  # type: ignore[override]
                sigma: float) -> Tensor:  # fmt: skip
        b, k = logits.shape
        padded = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
        col = idx.view(-1, 1)
        m, arg = padded.max(dim=1)
        z = (padded - m[:, None]).exp()
        total = z.sum(dim=1)
        tail = z.flip(1).cumsum(1).flip(1)
        surv_mass = tail[:, 1:].gather(1, col).view(-1)
        log_total = (total + _EPS).log()
        log_f = padded.gather(1, col).view(-1) - m - log_total
        log_s = (surv_mass + _EPS).log() - log_total
        nll = -(ev * log_f + (1.0 - ev) * log_s)

        pmf = torch.softmax(padded, dim=1)
        cdf = pmf[:, :k].cumsum(1)
        bins = torch.arange(k, device=logits.device)
        outlives = (idx[:, None] > bins[None, :]) | ((idx[:, None] == bins[None, :]) & (ev[:, None] == 0))
        shift, expo = _shifted_terms(cdf, outlives, sigma)
        col_sum = expo.sum(dim=0)
        log_col = col_sum.clamp_min(torch.finfo(cdf.dtype).tiny).log()
        f_own = cdf.gather(1, col).view(-1)
        valid = (ev > 0) & (col_sum[idx] > 0)
        own = ((shift[idx] - f_own) / sigma).exp()  # exp((shift_k - F_i(k_i)) / sigma)
        expnt = (shift[idx] - f_own) / sigma + log_col[idx]
        rank_i = torch.where(valid, expnt, torch.full_like(expnt, -torch.inf)).exp()
        loss = alpha * nll.mean() + (1.0 - alpha) * (rank_i / b).sum() / b
        ctx.save_for_backward(idx, ev, arg, z, total, surv_mass, pmf, expo, own, rank_i, valid)
        ctx.alpha, ctx.sigma = alpha, sigma
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        idx, ev, arg, z, total, surv_mass, pmf, expo, own, rank_i, valid = ctx.saved_tensors
        alpha, sigma = ctx.alpha, ctx.sigma
        b, k1 = z.shape
        k = k1 - 1
        rows = torch.arange(b, device=z.device)
        # likelihood: d nll_i / d a_j (a = padded logits), the row maximum's path included
        inv_t = 1.0 / (total + _EPS)
        after = (torch.arange(k1, device=z.device)[None, :] > idx[:, None]).to(z.dtype)
        g = z * inv_t[:, None] - ((1.0 - ev) / (surv_mass + _EPS))[:, None] * z * after
        g[rows, idx] -= ev
        at_max = ev + (1.0 - ev) * surv_mass / (surv_mass + _EPS) - total * inv_t
        g[rows, arg] += at_max
        g = g * (alpha / b)
        # ranking: d / d F (B x K), then through the cumulative sum and the softmax
        c = (1.0 - alpha) / (b * b)
        weight = torch.zeros(k, dtype=z.dtype, device=z.device).index_add_(
            0, idx, torch.where(valid, own, torch.zeros_like(own)))  # sum over events per bin
        d_cdf = expo * weight[None, :] / sigma
        d_cdf[rows, idx] -= torch.where(valid, rank_i, torch.zeros_like(rank_i)) / sigma
        d_cdf = d_cdf * c
        d_pmf = torch.zeros_like(z)
        d_pmf[:, :k] = d_cdf.flip(1).cumsum(1).flip(1)
        g = g + pmf * (d_pmf - (pmf * d_pmf).sum(dim=1, keepdim=True))
        return g[:, :k] * grad_out, None, None, None, None


def deephit_loss_fused(logits: Tensor, bin_index: Tensor, event: Tensor, alpha: float = 0.2,
                       sigma: float = 0.1) -> Tensor:
    """:func:`deephit_loss` with ``reduction="mean"``, one autograd node (``_DeepHitMean``)."""
    idx, ev = _check_discrete(logits, bin_index, event)
    return _DeepHitMean.apply(logits, idx, ev, float(alpha), float(sigma))
