"""The EDM objective on data with missing coordinates: the loss on the observed ones only.

For a row x with observed coordinates m (m_d = 1 where x_d is known) the term is

    1/2 lambda(sigma) sum_d m_d (D_theta(x~; sigma)_d - x_d)^2,   x~ = x' + sigma z,

with x' = x where m = 1 and the caller's fill (e.g. 0, the mean in standardised units) where
m = 0, ln(sigma) ~ N(P_mean, P_std^2), z ~ N(0, I), lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2. With every coordinate observed it is ``edm`` exactly (same draws from the
same generator). Training a denoiser on the observed coordinates only, the missing ones filled and
noised like the others, is the method of Ouyang et al. (2023, MissDiff).

``edm_conditional`` trains a conditional denoiser D(x; sigma, k, c, t) (``scorematch.models.
MaskedDenoiser``) for imputation by self-supervised masking (Tashiro et al. 2021, CSDI): per row a
rate r ~ U(0, 1), each observed coordinate a target (t_d = 1) with probability r, the other observed
ones the clean conditioning k = x on c; the noise goes on the targets only and the term is

    1/2 lambda(sigma) sum_d t_d (D(x + sigma z; sigma, x, c, t)_d - x_d)^2,

so the model learns p(x_t | x_c) for the splits of the observed cells that imputation meets. Here x_d
on a target is the model's standardised residual of the value (``MaskedDenoiser.residual``; the
value itself under its default prior).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorematch._random import randn_like
from scorematch.errors import DataError
from scorematch.objectives._common import check_batch
from scorematch.objectives.edm import edm_sigmas, edm_weight, noisy_residual

__all__ = ["edm_conditional", "edm_masked"]


def edm_masked(
    model: object,
    x: Tensor,
    mask: Tensor,
    sigma_data: float | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """The batch mean of the masked EDM term of the module docstring. ``x`` (n, D) finite (missing
    coordinates hold the fill), ``mask`` bool of the same shape, True where x is observed; ``model``
    as for ``edm`` (an ``EDMPrecond`` or any noise-conditional score); ``labels`` (int64, (n,)) go to
    the model as its third argument."""
    x = check_batch(x)
    if mask.shape != x.shape or mask.dtype != torch.bool:
        raise DataError(f"mask must be a bool tensor of x's shape {tuple(x.shape)}, got {mask.dtype} "
                        f"{tuple(mask.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x must be finite everywhere: fill the missing coordinates (mask False) with a number")
    residual, sigma, sigma_data = noisy_residual(edm_masked.__name__, model, x, sigma_data, p_mean, p_std, generator,
                                                 labels)
    residual = residual * mask
    return (0.5 * edm_weight(sigma, sigma_data) * residual.flatten(1).pow(2).sum(1)).mean()


def edm_conditional(
    model: object,
    x: Tensor,
    mask: Tensor,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    prior: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The batch mean of the conditional term of the module docstring for a ``MaskedDenoiser`` (its
    ``sigma_data``); ``x`` (n, D) finite (missing coordinates hold any fill, they are neither target
    nor conditioning), ``mask`` bool, True where x is observed; ``prior`` (mean (n, D), cov (n, D, D)):
    each row's Gaussian for its residual in place of the model's (out-of-fold Gaussians, so that the
    residuals the network learns are as large as those of rows the Gaussian has not seen). Draws, in
    order from ``generator``: r (n,), the uniforms of the target split (n, D), ln(sigma) (n,), z (n, D)."""
    x = check_batch(x)
    if x.dim() != 2 or mask.shape != x.shape or mask.dtype != torch.bool:
        raise DataError(f"x must be (n, D) and mask a bool tensor of its shape, got x {tuple(x.shape)}, mask "
                        f"{mask.dtype} {tuple(mask.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x must be finite everywhere: fill the missing coordinates (mask False) with a number")
    rate = torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype)
    target = mask & (torch.rand(x.shape, generator=generator, dtype=x.dtype) < rate)
    cond = mask & ~target
    sigma = edm_sigmas(x.shape[0], float(p_mean), p_std, generator, like=x)
    r = model.residual(x, x, cond, target, prior)
    noisy = r + sigma[:, None] * randn_like(x, generator) * target
    residual = (model.denoise(noisy, sigma, x, cond, target) - r) * target
    return (0.5 * edm_weight(sigma, model.sigma_data) * residual.pow(2).sum(1)).mean()
