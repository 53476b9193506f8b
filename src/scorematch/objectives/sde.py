"""Continuous-time denoising score matching for the score SDEs (Song et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scorematch import _checks, _compile
from scorematch._random import rand_like, randn_like
from scorematch.errors import ConfigError, ModelError
from scorematch.sde import SDE

__all__ = ["sde_dsm"]


def sde_dsm(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sde: SDE,
    eps_t: float = 1e-5,
    likelihood_weighting: bool = False,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Continuous-time DSM: E_t[ lambda(t) E ||s_theta(x_t, t) - grad log p_0t(x_t | x_0)||^2 ] / 2.

    One t ~ U(eps_t, 1) and one z ~ N(0, I) per row; x_t = m(t) x_0 + std(t) z, so
    grad log p_0t(x_t | x_0) = -z / std(t).  lambda(t) = std(t)^2 (the variance of p_0t) by
    default, lambda(t) = g(t)^2 with ``likelihood_weighting=True``.  The squared norm sums over
    all non-batch dims; the result is the batch mean (a scalar tensor).  With ``labels`` (int64,
    shape (n,)) the score is called as s_theta(x_t, t, labels).
    """
    _checks.batch("x", x)
    if not isinstance(sde, SDE):
        raise ConfigError(f"sde must be a scorematch.sde.SDE, got {type(sde).__name__}")
    eps_t = _checks.positive("eps_t", eps_t)
    if eps_t >= sde.T:
        raise ConfigError(f"eps_t must be in (0, {sde.T}), got {eps_t}")
    n = x.shape[0]
    t = eps_t + (sde.T - eps_t) * rand_like(x.new_empty(n), generator)
    z = randn_like(x, generator)
    mean, std = sde.marginal(x, t)
    std_b = std.reshape(n, *([1] * (x.dim() - 1)))
    x_t = mean + std_b * z
    fn = _compile.method(score_fn, "score")
    s = fn(x_t, t) if labels is None else fn(x_t, t, labels)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ModelError(
            f"score_fn(x, t) must return a tensor of shape {tuple(x.shape)}, got {got}"
        )
    if likelihood_weighting:
        # g^2 ||s + z/std||^2
        per_row = sde.diffusion(t).pow(2) * (s + z / std_b).flatten(1).pow(2).sum(1)
    else:
        # std^2 ||s + z/std||^2 = ||std s + z||^2
        per_row = (std_b * s + z).flatten(1).pow(2).sum(1)
    return 0.5 * per_row.mean()
