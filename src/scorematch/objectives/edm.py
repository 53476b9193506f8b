"""The EDM denoising objective (Karras et al. 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._random import randn_like
from scorematch.errors import ConfigError, ModelError
from scorematch.objectives._common import as_score_fn, check_batch, sq_norm

__all__ = ["edm", "edm_per_sample", "edm_sigmas", "edm_weight"]


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out(sigma)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_sigmas(
    n: int, p_mean: float = -1.2, p_std: float = 1.2, generator: torch.Generator | None = None,
    like: Tensor | None = None,
) -> Tensor:
    """n noise levels ln(sigma) ~ N(P_mean, P_std^2), in the dtype and on the device of ``like``."""
    like = torch.empty(0) if like is None else like
    z = randn_like(like.new_empty(n), generator)
    return (p_mean + p_std * z).exp()


def _residual(model: object, x: Tensor, sigma_b: Tensor, z: Tensor, cond: tuple[Tensor, ...]) -> Tensor:
    """D(x~; sigma) - x at x~ = x + sigma z: from the model's ``denoise`` when it has one, else from its
    score by Tweedie's formula D(x~; sigma) = x~ + sigma^2 s(x~, sigma), i.e. D - x = sigma z + sigma^2 s."""
    denoise = getattr(model, "denoise", None)
    fn = denoise if callable(denoise) else as_score_fn(model)
    out = fn(x + sigma_b * z, *cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelError(f"the model must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return out - x if callable(denoise) else sigma_b * z + sigma_b**2 * out


def edm_per_sample(
    model: object,
    x: Tensor,
    sigma_data: float | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row terms of ``edm`` and the sigma drawn for each row, both of shape (n,).

    Row term: 1/2 lambda(sigma) ||D(x + sigma z; sigma) - x||^2, ln(sigma) ~ N(P_mean, P_std^2), z ~ N(0, I).
    """
    x = check_batch(x)
    residual, sigma, sigma_data = noisy_residual(edm.__name__, model, x, sigma_data, p_mean, p_std, generator, labels)
    return 0.5 * edm_weight(sigma, sigma_data) * sq_norm(residual), sigma


def noisy_residual(name: str, model: object, x: Tensor, sigma_data: float | None, p_mean: float, p_std: float,
                   generator: torch.Generator | None, labels: Tensor | None) -> tuple[Tensor, Tensor, float]:
    """(D(x + sigma z; sigma) - x, sigma of shape (n,), sigma_data) for one ln(sigma) ~ N(P_mean, P_std^2)
    and one z ~ N(0, I) per row of the checked batch ``x``; ``sigma_data`` (None: the model's, refused
    naming the objective ``name`` when it has none) checked positive."""
    if sigma_data is None:
        sigma_data = getattr(model, "sigma_data", None)
        if sigma_data is None:
            raise ConfigError(f"{name} needs sigma_data: pass sigma_data=... "
                              "(scorematch.models.edm.estimate_sigma_data) or use a model that has one "
                              "(EDMPrecond, not wrapped)")
    sigma_data = _checks.positive("sigma_data", sigma_data)
    p_std = _checks.positive("p_std", p_std)
    sigma = edm_sigmas(x.shape[0], float(p_mean), p_std, generator, like=x)
    z = randn_like(x, generator)
    sigma_b = sigma.view(-1, *([1] * (x.dim() - 1)))
    cond = (sigma,) if labels is None else (sigma, labels)
    return _residual(model, x, sigma_b, z, cond), sigma, sigma_data


def edm(
    model: object,
    x: Tensor,
    sigma_data: float | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """EDM training loss (Karras et al. 2022), the batch mean of

        1/2 lambda(sigma) ||D_theta(x + n; sigma) - x||^2,  n ~ N(0, sigma^2 I),  ln(sigma) ~ N(P_mean, P_std^2),

    with lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2. The 1/2 is scorematch's
    convention (DSM is 1/2 E||.||^2): this is half the loss as Karras et al. write it, and equals
    1/2 E||F_theta - F_target||^2 for the preconditioned network, whose target has unit variance.
    One sigma and one n per row. ``model`` is an ``EDMPrecond``, whose ``denoise`` is D_theta, or any
    other noise-conditional score s(x, sigma) (a model or a callable, e.g. a DDP-wrapped model),
    used through Tweedie's formula D = x~ + sigma^2 s(x~, sigma). ``sigma_data`` defaults to the
    model's. ``labels`` (int64, shape (n,)) go to the model as its third argument.
    """
    return edm_per_sample(model, x, sigma_data, p_mean, p_std, generator, labels)[0].mean()
