"""Denoising score matching (Vincent 2011) and its multi-scale form (NCSN, Song & Ermon 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from scorematch._checks import descending_sigmas, positive
from scorematch._random import randint, randn_like
from scorematch.objectives._common import as_score_fn, check_batch, sq_norm


def dsm(
    score_fn: Callable,
    x: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoising score matching, 1/2 E_{x, x~ = x + sigma z}[ ||s_theta(x~) - (x - x~)/sigma^2||^2 ].

    The target (x - x~)/sigma^2 = -z/sigma; the minimiser is the score of p * N(0, sigma^2 I).
    With ``labels`` (int64, shape (n,)) the score is called as s_theta(x~, labels).
    """
    x = check_batch(x)
    sigma = positive("sigma", sigma)
    z = randn_like(x, generator)
    s = as_score_fn(score_fn)(x + sigma * z, *_labels(labels))
    return 0.5 * sq_norm(s + z / sigma).mean()


def _labels(labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The extra trailing argument of a class-conditional score: (labels,), or () without labels."""
    return () if labels is None else (labels,)


def ncsn_per_sample(
    score_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row terms of ``ncsn`` and the index i of the sigma_i drawn for each row.

    Row term: lambda(sigma_i) 1/2 ||s_theta(x~, sigma_i) + z/sigma_i||^2 = 1/2 ||sigma_i s_theta + z||^2
    with lambda(sigma) = sigma^2 and x~ = x + sigma_i z. With ``labels`` (int64, shape (n,)) the score
    is called as s_theta(x~, sigma_i, labels).
    """
    x = check_batch(x)
    sig = descending_sigmas(sigmas).to(device=x.device, dtype=x.dtype)
    idx = randint(len(sig), x.shape[0], x.device, generator)
    sigma = sig[idx]
    z = randn_like(x, generator)
    sigma_b = sigma.view(-1, *([1] * (x.dim() - 1)))
    s = as_score_fn(score_fn)(x + sigma_b * z, sigma, *_labels(labels))
    return 0.5 * sq_norm(sigma_b * s + z), idx


def ncsn(
    score_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-scale denoising score matching (NCSN): the batch mean of

        lambda(sigma_i) * 1/2 ||s_theta(x + sigma_i z, sigma_i) - (-z/sigma_i)||^2,  lambda(sigma) = sigma^2,

    with one sigma_i drawn uniformly per row from sigma_1 > ... > sigma_L; ``labels`` as in ``ncsn_per_sample``.
    """
    return ncsn_per_sample(score_fn, x, sigmas, generator, labels)[0].mean()
