"""A Gaussian N(mu, C) of vectors with missing coordinates: fitted by EM, conditioned row by row.

``gaussian_em(z)`` fits mu and C to rows z (n, D) whose missing coordinates are NaN by the EM
algorithm for the multivariate normal with data missing at random (Dempster, Laird & Rubin 1977;
Little & Rubin 2019, section 11.2). Each iteration fills every row's missing block m with its
conditional mean given the observed block o under the current (mu, C),

    E[x_m | x_o] = mu_m + C_mo C_oo^-1 (x_o - mu_o),   Cov[x_m | x_o] = C_mm - C_mo C_oo^-1 C_om,

and sets mu to the mean of the filled rows and C to their covariance plus the mean of the
conditional covariances, plus ``ridge`` I (which keeps C invertible when coordinates are exactly
dependent, as the one-hot coordinates of a categorical column are).

``gaussian_conditional(x, cond, mu, C)`` gives, per row and coordinate, the mean and sd of x_d given
the row's conditioning coordinates (cond True) under N(mu, C): on a conditioning coordinate its
own value and sd 0 up to rounding (floored at ``min_sd``), elsewhere the formulas above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorematch.errors import DataError

__all__ = ["gaussian_conditional", "gaussian_em"]


def _condition(x: Tensor, cond: Tensor, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """(n, D) conditional means and (n, D, D) conditional covariances of every coordinate given the
    row's coordinates where ``cond`` is True: mu + C_.o C_oo^-1 (x_o - mu_o) and C - C_.o C_oo^-1 C_o.
    (C_oo is solved with the identity on the other coordinates, one batched solve per row.)"""
    c = cond.to(x.dtype)
    mean, cov = mean.to(x.dtype), cov.to(x.dtype)
    a = cov * c[:, :, None] * c[:, None, :] + torch.diag_embed(1 - c)
    k = torch.linalg.solve(a, cov * c[:, :, None])  # rows o: C_oo^-1 C_o. ; other rows 0
    mu = mean + ((x - mean) * c)[:, None, :].matmul(k)[:, 0]
    return mu, cov - (cov * c[:, None, :]) @ k


def gaussian_conditional(x: Tensor, cond: Tensor, mean: Tensor, cov: Tensor,
                         min_sd: float = 1e-3) -> tuple[Tensor, Tensor]:
    """(mean, sd), both shaped like ``x`` (n, D): the conditional mean and sd of each coordinate given
    the coordinates where ``cond`` (bool (n, D)) is True, under N(``mean``, ``cov``) (one Gaussian,
    (D,) and (D, D), or one per row, (n, D) and (n, D, D)); ``x`` is read on the conditioning
    coordinates only."""
    mu, cond_cov = _condition(x, cond, mean, cov)
    return mu, torch.diagonal(cond_cov, dim1=-2, dim2=-1).clamp_min(min_sd**2).sqrt()


def _e_step(z: Tensor, miss: Tensor, mean: Tensor, cov: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """The rows with their missing coordinates filled by E[x_m | x_o], and the sum over rows of
    Cov[x_m | x_o] placed in the (m, m) block."""
    filled = torch.where(miss, torch.zeros_like(z), z)
    extra = torch.zeros_like(cov)
    rows = torch.nonzero(miss.any(1)).flatten()
    for part in rows.split(chunk):
        mu, cond_cov = _condition(filled[part], ~miss[part], mean, cov)
        filled[part] = torch.where(miss[part], mu, filled[part])
        m = miss[part].to(z.dtype)
        extra += (cond_cov * m[:, :, None] * m[:, None, :]).sum(0)
    return filled, extra


def gaussian_em(z: Tensor, ridge: float = 1e-3, iters: int = 30, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """(mean (D,), cov (D, D)) float64 of the Gaussian fitted to the rows ``z`` (n, D; NaN = missing)
    by ``iters`` EM iterations (see the module docstring), started from the observed means and
    variances. Every coordinate needs at least one observed value."""
    z = torch.as_tensor(z, dtype=torch.float64)
    if z.dim() != 2 or z.shape[0] < 2:
        raise DataError(f"gaussian_em needs rows (n >= 2, D), got shape {tuple(z.shape)}")
    miss = torch.isnan(z)
    seen = (~miss).sum(0)
    if bool((seen == 0).any()):
        raise DataError("a coordinate has no observed value; the Gaussian cannot be fitted")
    zero = torch.where(miss, torch.zeros_like(z), z)
    mean = zero.sum(0) / seen
    var = (torch.where(miss, torch.zeros_like(z), z - mean) ** 2).sum(0) / seen
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    cov = torch.diag(var) + ridge * eye
    for _ in range(iters):
        filled, extra = _e_step(z, miss, mean, cov, chunk)
        mean = filled.mean(0)
        dev = filled - mean
        cov = (dev.T @ dev + extra) / z.shape[0] + ridge * eye
    return mean, cov
