"""DPM-Solver++(2M) SDE and (3M) SDE (Lu et al. 2022): multistep exponential integrators of the
reverse SDE in sigma, in the VE view of ``scorematch.samplers.denoising`` (x at noise level sigma
is x_0 + sigma eps, D(x, sigma) = x + sigma^2 s(x, sigma)).

They solve the family of reverse SDEs with the marginals of the data convolved with N(0, sigma^2 I),

    dx = -(1 + eta) sigma s(x, sigma) dsigma + sqrt(2 eta sigma) dw_bar    (sigma decreasing),

whose linear part integrates exactly: with lambda = -log sigma, h = log(sigma_i / sigma_{i+1}) and D
frozen at its polynomial extrapolation in lambda, step i from sigma_i to sigma_{i+1} > 0 is

    x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i + (1 - e^{-(1 + eta) h}) D_i + correction
              + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i,

eta = 0 the probability-flow ODE (DPM-Solver++ 2M / 3M), eta = 1 the reverse SDE. Each sampler is
called as the denoising samplers are, ``name(score_fn, x, sigmas, *, generator=None, callback=None,
progress=False, return_trajectory=False, ...)``, with ``noise(sigma, sigma_next)`` an optional
source of the z_i (a tensor shaped like x, N(0, I) per step; default ``randn_like(x, generator)``;
with ``noise`` given the generator is not used): a Brownian-tree noise plugs in there. A last step to sigma = 0 returns
D (no noise). NFE N for N = len(sigmas) - 1 steps; one z per step to a positive sigma when eta > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._random import randn_like
from scorematch.errors import ConfigError
from scorematch.samplers._loop import Callback
from scorematch.samplers.denoising import _Loop

__all__ = ["NoiseFn", "dpmpp_2m_sde", "dpmpp_3m_sde"]

#: ``noise(sigma, sigma_next)``: the standard normal z of the step from sigma to sigma_next, shaped like x
NoiseFn = Callable[[float, float], Tensor]
SOLVER_TYPES = ("midpoint", "heun")


def _noise_options(eta: float, s_noise: float | None, noise: NoiseFn | None) -> tuple[float, float]:
    """(eta, s_noise) checked: eta finite >= 0; s_noise (None: 1) positive, and other than 1 only with eta > 0."""
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 0):
        raise ConfigError(f"eta must be a finite number >= 0, got {eta!r}")
    if eta == 0 and s_noise is not None and s_noise != 1:
        raise ConfigError("s_noise only applies with eta > 0")
    if noise is not None and not callable(noise):
        raise ConfigError(f"noise must be callable as noise(sigma, sigma_next), got {type(noise).__name__}")
    return eta, 1.0 if s_noise is None else _checks.positive("s_noise", s_noise)


def draw(noise: NoiseFn | None, x: Tensor, generator: torch.Generator | None, sigma: float,
         sigma_next: float) -> Tensor:
    """z for the step sigma -> sigma_next: ``noise(sigma, sigma_next)`` when given (checked to be
    shaped like x), else ``randn_like(x, generator)``."""
    if noise is None:
        return randn_like(x, generator)
    z = noise(sigma, sigma_next)
    if not isinstance(z, Tensor) or z.shape != x.shape:
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ConfigError(f"noise(sigma, sigma_next) must return a tensor of shape {tuple(x.shape)}, got {got}")
    return z.to(device=x.device, dtype=x.dtype)


def _add_noise(x: Tensor, eta: float, s_noise: float, noise: NoiseFn | None, generator: torch.Generator | None,
               sigma: float, sigma_next: float) -> Tensor:
    """x + s_noise sigma_next sqrt(1 - e^{-2 eta h}) z, h = log(sigma / sigma_next), z from ``draw``
    (x itself, no z drawn, when eta = 0)."""
    if eta == 0:
        return x
    h = math.log(sigma / sigma_next)
    z = draw(noise, x, generator, sigma, sigma_next)
    return x.add_(z, alpha=s_noise * sigma_next * math.sqrt(-math.expm1(-2 * eta * h)))


def dpmpp_2m_sde(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
    noise: NoiseFn | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """DPM-Solver++(2M) SDE. With h = log(sigma_i / sigma_{i+1}), hh = (1 + eta) h, D_i = D(x_i, sigma_i)
    and r = h_{i-1} / h (the previous step's h):

        x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i + (1 - e^{-hh}) D_i + c (D_i - D_{i-1}) / r
                  + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i,
        c = (1 - e^{-hh}) / 2               (solver_type "midpoint", default)
        c = 1 - (1 - e^{-hh}) / hh          ("heun")

    without the D_{i-1} term on the first step. eta = 0 is the deterministic DPM-Solver++(2M)
    (with "midpoint" exactly ``dpm_solver(order=2)``); eta = 1 (default) the reverse SDE;
    ``s_noise`` (default 1) only applies with eta > 0 (another value with eta = 0 is refused).
    A last step to sigma = 0 returns D. NFE N.
    """
    eta, s_noise = _noise_options(eta, s_noise, noise)
    _checks.choice("solver_type", solver_type, SOLVER_TYPES)
    run = _Loop(dpmpp_2m_sde.__name__, score_fn, x, sigmas, callback, progress, return_trajectory)
    previous: list[tuple[Tensor, float]] = []  # [(D_{i-1}, h_{i-1})] after the first step

    def step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
        h = math.log(sigma / sigma_next)
        hh = (1 + eta) * h
        a = -math.expm1(-hh)
        x = x.mul(sigma_next / sigma * math.exp(-eta * h)).add_(denoised, alpha=a)
        if previous:
            d_prev, h_prev = previous[0]
            c = 0.5 * a if solver_type == "midpoint" else 1 - a / hh
            x = x.add_(denoised - d_prev, alpha=c * h / h_prev)
        previous[:] = [(denoised, h)]
        return _add_noise(x, eta, s_noise, noise, generator, sigma, sigma_next)

    return run.multistep(step)


def dpmpp_3m_sde(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise: NoiseFn | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """DPM-Solver++(3M) SDE. With h, hh = (1 + eta) h and D_i as in ``dpmpp_2m_sde``,
    r0 = h_{i-1} / h, r1 = h_{i-2} / h, phi_2 = 1 - (1 - e^{-hh}) / hh, phi_3 = phi_2 / hh - 1/2:

        x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i + (1 - e^{-hh}) D_i + phi_2 D1 - phi_3 D2
                  + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) z_i,
        d_0 = (D_i - D_{i-1}) / r0,  d_1 = (D_{i-1} - D_{i-2}) / r1,
        D1 = d_0 + (d_0 - d_1) r0 / (r0 + r1),  D2 = (d_0 - d_1) / (r0 + r1),

    the divided differences of D in lambda = -log sigma times h and h^2; on the first step
    without D1, D2, on the second with D1 = d_0 and D2 = 0. eta = 0 is the deterministic
    DPM-Solver++(3M) (exactly ``dpm_solver(order=3)``); eta = 1 (default) the reverse SDE.
    A last step to sigma = 0 returns D. NFE N.
    """
    eta, s_noise = _noise_options(eta, s_noise, noise)
    run = _Loop(dpmpp_3m_sde.__name__, score_fn, x, sigmas, callback, progress, return_trajectory)
    history: list[tuple[Tensor, float]] = []  # (D_j, h_j) of the previous steps, newest first

    def step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
        h = math.log(sigma / sigma_next)
        hh = (1 + eta) * h
        x = x.mul(sigma_next / sigma * math.exp(-eta * h)).add_(denoised, alpha=-math.expm1(-hh))
        phi2 = math.expm1(-hh) / hh + 1
        if len(history) == 1:
            d1, h1 = history[0]
            x = x.add_(denoised - d1, alpha=phi2 * h / h1)
        elif len(history) == 2:
            (d1, h1), (d2, h2) = history
            r0, r1 = h1 / h, h2 / h
            d1_0 = (denoised - d1) / r0
            d1_1 = (d1 - d2) / r1
            second = (d1_0 - d1_1) / (r0 + r1)
            x = x.add_(d1_0 + second * r0, alpha=phi2).add_(second, alpha=-(phi2 / hh - 0.5))
        history[:] = [(denoised, h), *history[:1]]
        return _add_noise(x, eta, s_noise, noise, generator, sigma, sigma_next)

    return run.multistep(step)
