"""The EDM objective on data with missing coordinates: the loss on the observed ones only.

For a row x with observed coordinates m (m_d = 1 where x_d is known) the term is

    1/2 lambda(sigma) sum_d m_d (D_theta(x~; sigma)_d - x_d)^2,   x~ = x' + sigma z,

with x' = x where m = 1 and the caller's fill (e.g. 0, the mean in standardised units) where
m = 0, ln(sigma) ~ N(P_mean, P_std^2), z ~ N(0, I), lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2. With every coordinate observed it is ``edm`` exactly (same draws from the
same generator). Training a denoiser on the observed coordinates only, the missing ones filled and
noised like the others, is the method of Ouyang et al. (2023, MissDiff).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorematch.errors import DataError
from scorematch.objectives._common import check_batch
from scorematch.objectives.edm import edm_weight, noisy_residual

__all__ = ["edm_masked"]


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
