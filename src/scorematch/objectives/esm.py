"""Explicit score matching: against an analytic score, or against the score of a Gaussian KDE."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scorematch._checks import positive, positive_int
from scorematch.errors import DataError
from scorematch.objectives._common import as_score_fn, check_batch, sq_norm


def esm(score_fn: Callable, x: torch.Tensor, target_score: torch.Tensor | Callable) -> torch.Tensor:
    """Explicit score matching, 1/2 E_x ||s_theta(x) - s*(x)||^2 (batch mean).

    ``target_score`` is the tensor s*(x) or a callable evaluated at x (e.g. ``dist.score``).
    """
    x = check_batch(x)
    target = target_score(x) if callable(target_score) else target_score
    if target.shape != x.shape:
        raise DataError(f"target_score must have the shape of x {tuple(x.shape)}, got {tuple(target.shape)}")
    s = as_score_fn(score_fn)(x)
    return 0.5 * sq_norm(s - target.detach()).mean()


@torch.no_grad()
def kde_score(
    x: torch.Tensor,
    reference: torch.Tensor,
    bandwidth: float,
    leave_one_out: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Score of the Gaussian KDE q_h(x) = 1/N sum_i N(x; x_i, h^2 I):

        grad log q_h(x) = sum_i w_i (x_i - x) / h^2,   w = softmax_i(-||x - x_i||^2 / 2h^2).

    Computed with a streaming (online) softmax over chunks of the reference set, so memory is
    O(batch x chunk). ``leave_one_out`` drops, for each x, the reference points equal to it
    (its own kernel when x is drawn from the reference set).
    """
    h2 = positive("bandwidth", bandwidth) ** 2
    x, reference = check_batch(x), check_batch(reference)
    if x.shape[1:] != reference.shape[1:]:
        raise DataError(
            f"x and reference must have the same sample shape, got {tuple(x.shape[1:])} "
            f"and {tuple(reference.shape[1:])}"
        )
    xf, rf = x.flatten(1), reference.flatten(1).to(x)
    n, d = xf.shape
    chunk = positive_int("chunk_size", chunk_size) if chunk_size else max(1, 2**22 // max(1, n))
    x2 = xf.pow(2).sum(1, keepdim=True)
    m = xf.new_full((n,), -torch.inf)
    denom = xf.new_zeros(n)
    num = xf.new_zeros(n, d)
    for start in range(0, rf.shape[0], chunk):
        r = rf[start:start + chunk]
        d2 = (x2 + r.pow(2).sum(1)[None] - 2 * xf @ r.T).clamp_min_(0)
        logits = -d2 / (2 * h2)
        if leave_one_out:
            same = torch.cdist(xf, r, compute_mode="donot_use_mm_for_euclid_dist") == 0
            logits = logits.masked_fill(same, -torch.inf)
        new_m = torch.maximum(m, logits.max(1).values)
        safe_m = torch.where(torch.isfinite(new_m), new_m, torch.zeros_like(new_m))
        scale = torch.exp(torch.where(torch.isfinite(m), m - safe_m, torch.full_like(m, -torch.inf)))
        w = torch.exp(logits - safe_m[:, None])
        denom = denom * scale + w.sum(1)
        num = num * scale[:, None] + w @ r
        m = new_m
    if not bool((denom > 0).all()):
        raise DataError(
            "the KDE has no reference point left for some x (leave_one_out with a reference set "
            "of one point?); use more reference points or leave_one_out=False"
        )
    return ((num / denom[:, None] - xf) / h2).view_as(x)


def esm_kde(
    score_fn: Callable,
    x: torch.Tensor,
    reference: torch.Tensor,
    bandwidth: float,
    leave_one_out: bool = False,
) -> torch.Tensor:
    """Explicit score matching with a KDE target: 1/2 E_x ||s_theta(x) - grad log q_h(x)||^2,

    q_h(x) = 1/N sum_i N(x; x_i, h^2 I) over ``reference`` (see ``kde_score``).
    """
    return esm(score_fn, x, kde_score(x, reference, bandwidth, leave_one_out))
