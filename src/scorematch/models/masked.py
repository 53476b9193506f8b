"""A conditional denoiser for vectors with missing coordinates: the target coordinates given clean others.

For a row with clean values k on the conditioning coordinates (c_d = 1) and a noisy state x on the
target coordinates (t_d = 1; c and t disjoint, a coordinate in neither is absent), the denoiser
of the target coordinates is EDM-preconditioned (Karras et al. 2022, Table 1):

    D(x; sigma, k, c, t) = c_skip(sigma) x + c_out(sigma) F([c_in(sigma) x t, k c, c, t], c_noise(sigma)),

F a ``TimeMLP`` on the 4 D inputs, its first D outputs kept. The conditioning values enter F
clean and unscaled; the masks tell F which coordinates are which. Trained by
``scorematch.objectives.masked.edm_conditional`` (targets drawn among a row's observed cells,
the others its conditioning: the self-supervised masking of Tashiro et al. 2021, CSDI), its
samples are draws of p(x_t | x_c) for any split of the coordinates, so it imputes each row from
whichever cells that row has. The score is s = (D - x) / sigma^2 on the target coordinates and 0
on the others, so the samplers move the target coordinates only.

The state x is not the target values themselves but their standardised residuals from a Gaussian
N(mu, C) of the rows (buffers ``prior_mean``, ``prior_cov``; ``set_prior``, e.g. fitted by
``scorematch.models.gaussian.gaussian_em``):

    x_d = (v_d - m_d(k, c)) / s_d(c),   v_d = m_d(k, c) + s_d(c) x_d   (``residual``, ``complete``),

m and s the conditional mean and sd of coordinate d given the conditioning ones under that
Gaussian (``gaussian_conditional``). The network then learns what the linear-Gaussian conditional
leaves out, at unit scale (so sigma_data = 1 fits whichever coordinates a row conditions on);
this is the residual parametrisation of Han et al. (2022, CARD) with the Gaussian conditional as
its prior mean. The default prior (mu = 0, C = I) gives m = 0 and s = 1: the targets themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scorematch import _checks
from scorematch.errors import ModelError
from scorematch.models.edm import edm_coefficients
from scorematch.models.gaussian import gaussian_conditional
from scorematch.models.time import TimeMLP

__all__ = ["MaskedDenoiser"]


class MaskedDenoiser(nn.Module):
    """D(x; sigma, known, cond, target) of the module docstring for vectors of ``dim`` coordinates;
    ``hidden``/``depth`` size the ``TimeMLP``; ``sigma_data`` the preconditioning."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, sigma_data: float = 1.0) -> None:
        super().__init__()
        self.dim = _checks.positive_int("dim", dim)
        self.sigma_data = _checks.positive("sigma_data", sigma_data)
        self.net = TimeMLP(4 * self.dim, hidden, depth)
        self.config: dict[str, Any] = {"dim": self.dim, "hidden": hidden, "depth": depth,
                                       "sigma_data": self.sigma_data}
        self.register_buffer("prior_mean", torch.zeros(self.dim))
        self.register_buffer("prior_cov", torch.eye(self.dim))

    def set_prior(self, mean: Tensor, cov: Tensor) -> MaskedDenoiser:
        """Set the Gaussian prior N(``mean`` (dim,), ``cov`` (dim, dim), symmetric positive definite)."""
        if tuple(mean.shape) != (self.dim,) or tuple(cov.shape) != (self.dim, self.dim):
            raise ModelError(f"the prior of MaskedDenoiser(dim={self.dim}) needs mean ({self.dim},) and cov "
                             f"({self.dim}, {self.dim}), got {tuple(mean.shape)} and {tuple(cov.shape)}")
        if not bool(torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise ModelError("the prior's mean and cov must be finite")
        self.prior_mean.copy_(mean)
        self.prior_cov.copy_(cov)
        return self

    def prior(self, known: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(m, s) of the module docstring, shaped like ``known`` (n, dim)."""
        return gaussian_conditional(known, cond, self.prior_mean, self.prior_cov)

    def residual(self, values: Tensor, known: Tensor, cond: Tensor, target: Tensor,
                 prior: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The standardised residuals (v - m) / s of ``values`` on the target coordinates, 0 elsewhere;
        ``prior`` (mean, cov), one Gaussian or one per row, in place of the model's own."""
        m, s = self.prior(known, cond) if prior is None else gaussian_conditional(known, cond, *prior)
        return torch.where(target, (values - m) / s, torch.zeros_like(values))

    def complete(self, x: Tensor, known: Tensor, cond: Tensor, target: Tensor) -> Tensor:
        """The values m + s x on the target coordinates (``x`` residuals), ``known`` elsewhere."""
        m, s = self.prior(known, cond)
        return torch.where(target, m + s * x, known)

    def _check(self, x: Tensor, known: Tensor, cond: Tensor, target: Tensor) -> None:
        want = (x.shape[0], self.dim)
        for name, v in (("x", x), ("known", known), ("cond", cond), ("target", target)):
            if v.dim() != 2 or tuple(v.shape) != want:
                raise ModelError(f"MaskedDenoiser(dim={self.dim}) needs {name} of shape {want}, got {tuple(v.shape)}")
        if cond.dtype != torch.bool or target.dtype != torch.bool:
            raise ModelError("cond and target must be bool masks")

    def _raw(self, x: Tensor, sigma: Tensor, known: Tensor, cond: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        self._check(x, known, cond, target)
        s = _checks.per_row("sigma", sigma, x)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        inp = torch.cat([c_in[:, None] * x * target, known * cond, cond.to(x.dtype), target.to(x.dtype)], dim=1)
        return s[:, None], c_skip[:, None], c_out[:, None], c_in[:, None], self.net(inp, c_noise)[:, : self.dim]

    def denoise(self, x: Tensor, sigma: float | Tensor, known: Tensor, cond: Tensor, target: Tensor) -> Tensor:
        """D of the module docstring, shaped like x (meaningful on the target coordinates)."""
        _, c_skip, c_out, _, f = self._raw(x, sigma, known, cond, target)
        return c_skip * x + c_out * f

    def score(self, x: Tensor, sigma: float | Tensor, known: Tensor, cond: Tensor, target: Tensor) -> Tensor:
        """(D - x) / sigma^2 on the target coordinates, 0 elsewhere; computed as -c_in^2 x + c_out / sigma^2 F
        (no cancellation in D - x)."""
        s, _, c_out, c_in, f = self._raw(x, sigma, known, cond, target)
        return torch.where(target, -x * c_in**2 + (c_out / s**2) * f, torch.zeros_like(x))
