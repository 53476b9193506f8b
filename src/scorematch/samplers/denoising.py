"""Denoising samplers over a grid of noise levels sigma_0 > sigma_1 > ... > sigma_N >= 0, in the
VE view of Karras et al. (2022): x at noise level sigma is x_0 + sigma eps, the denoiser is
D(x, sigma) = x + sigma^2 s(x, sigma) (Tweedie) and the probability-flow ODE in sigma is

    dx/dsigma = (x - D(x, sigma)) / sigma = -sigma s(x, sigma).

Each sampler is called as ``name(score_fn, x, sigmas, *, generator=None, callback=None,
progress=False, return_trajectory=False, **options)``: ``score_fn(x, sigma)`` a
noise-conditional score (sigma of shape (n,); a model with ``.score`` works, and
``scorematch.denoise.sigma_view`` turns a time-conditional SDE model into one), ``x`` the start
already at the scale of sigmas[0] (x ~ N(0, sigma_0^2 I) for sigma_0 >> the data's scale: the
caller draws it), ``sigmas`` strictly descending with only the last allowed to be 0
(``scorematch.noise.karras_sigmas``). ``callback`` is called once per step with a dict
{i, nfe, sigma, sigma_hat, sigma_next, x, denoised} (x and denoised at sigma_hat, before the
step, as k-diffusion's), ``progress`` reports progress on stderr. Each returns the final x, or
(x, trajectory) with ``return_trajectory``: the start and the state after every step, shape
(N + 1, *x.shape). All run under ``torch.no_grad()``.

Score evaluations (NFE) for N = len(sigmas) - 1 steps: heun 2N - 1 when the last sigma is 0
(the last step is an Euler step), else 2N; every other sampler N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._brownian import step_noise
from scorematch._random import Generators
from scorematch.errors import ConfigError
from scorematch.samplers._loop import Callback, Loop

__all__ = ["continuous_langevin", "ddim", "dpm_solver", "euler", "euler_ancestral", "heun"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class _Loop:
    """What every denoising sampler shares: the checked score, per-row sigma vectors, and the
    callback, progress and trajectory of ``scorematch.samplers._loop.Loop``."""

    def __init__(self, name: str, score_fn: Any, x: Tensor, sigmas: Tensor | Sequence[float],
                 callback: Callback | None, progress: bool, return_trajectory: bool,
                 generator: Generators = None, brownian: bool = False) -> None:
        self.score = _checks.score_callable(score_fn, "score_fn(x, sigma)")
        self.x = _checks.batch("x", x).detach()
        sig = _checks.sampler_sigmas(sigmas)
        self.levels: list[float] = sig.tolist()
        positive = [v for v in self.levels if v > 0]
        # the Brownian path runs in log sigma over [log sigma_min, log(sqrt(2) sigma_max)] (room for
        # churn's sigma_hat <= sqrt(2) sigma): the same path for every grid with these end points
        self._log_lo, self._log_hi = math.log(min(positive)), math.log(max(positive)) + 0.5 * math.log(2)
        self._noise = step_noise(generator, bool(brownian), self._log_lo, self._log_hi)
        self.steps = len(self.levels) - 1
        self.rows = sig.to(device=self.x.device, dtype=self.x.dtype)[:, None].expand(-1, self.x.shape[0])
        self.loop = Loop(name, self.x, self.steps, callback, progress, return_trajectory, self.steps + 1)
        self.loop.snapshot(self.x)
        self.counted = self._count(self.score)

    def _count(self, score: Any) -> Any:
        def counted(x: Tensor, sigma: Tensor) -> Tensor:
            self.loop.nfe += 1
            return score(x, sigma)

        return counted

    def noise(self, x: Tensor, sigma_a: float, sigma_b: float) -> Tensor:
        """z ~ N(0, I) for the step from sigma_a to sigma_b: a fresh draw, or the Brownian path's
        increment (W(log sigma_b) - W(log sigma_a)) / sqrt(|log sigma_b - log sigma_a|), a sigma of
        0 taken as the grid's smallest positive one."""
        def log(v: float) -> float:
            return math.log(v) if v > 0 else self._log_lo

        return self._noise(x, log(sigma_a), log(sigma_b))

    def sigma_rows(self, i: int, value: float) -> Tensor:
        """sigma as a per-row tensor (n,): the grid's own row when value is sigma_i."""
        if value == self.levels[i]:
            return self.rows[i]
        return torch.full_like(self.rows[i], value)

    def report(self, i: int, x: Tensor, sigma_hat: float, s: Tensor) -> None:
        """Step i's callback, with x and the denoised x at sigma_hat before the step (k-diffusion's)."""
        self.loop.step({"sigma": self.levels[i], "sigma_hat": sigma_hat, "sigma_next": self.levels[i + 1], "x": x,
                        "denoised": x + sigma_hat**2 * s})

    def done(self, i: int, x: Tensor) -> None:
        self.loop.snapshot(x)

    def finish(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.loop.finish(x)

    def multistep(self, step: Callable[[Tensor, Tensor, float, float], Tensor]) -> Tensor | tuple[Tensor, Tensor]:
        """The loop of the multistep samplers: at step i, D_i = x_i + sigma_i^2 s(x_i, sigma_i) (reported
        to the callback), x_{i+1} = D_i on a last step to sigma = 0, else ``step(x_i, D_i, sigma_i,
        sigma_{i+1})`` (which may keep its own history of D_i). NFE N."""
        x, score, levels = self.x, self.counted, self.levels
        with torch.no_grad():
            for i in range(self.steps):
                sigma, sigma_next = levels[i], levels[i + 1]
                s = score(x, self.rows[i])
                self.report(i, x, sigma, s)
                denoised = torch.add(x, s, alpha=sigma**2)
                x = denoised if sigma_next == 0 else step(x, denoised, sigma, sigma_next)
                self.done(i, x)
        return self.finish(x)


def _churn_options(s_churn: float, s_tmin: float | None, s_tmax: float | None,
                   s_noise: float | None) -> tuple[float, float, float, float]:
    s_churn = float(s_churn)
    if not math.isfinite(s_churn) or s_churn < 0:
        raise ConfigError(f"s_churn must be a finite number >= 0, got {s_churn!r}")
    if s_churn == 0:
        given = [n for n, v in (("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with stochastic churn (s_churn > 0)")
        return 0.0, 0.0, math.inf, 1.0
    tmin = 0.0 if s_tmin is None else float(s_tmin)
    tmax = math.inf if s_tmax is None else float(s_tmax)
    if not (tmin >= 0 and tmax > tmin):
        raise ConfigError(f"need 0 <= s_tmin < s_tmax, got s_tmin={s_tmin!r}, s_tmax={s_tmax!r}")
    noise = 1.0 if s_noise is None else _checks.positive("s_noise", s_noise)
    return s_churn, tmin, tmax, noise


def _karras(name: str, second_order: bool, score_fn: Any, x: Tensor, sigmas: Tensor | Sequence[float],
            generator: Generators, callback: Callback | None, progress: bool,
            return_trajectory: bool, s_churn: float, s_tmin: float | None, s_tmax: float | None,
            s_noise: float | None, brownian: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """EDM Algorithm 2 (Algorithm 1 when s_churn = 0) with Heun or Euler steps."""
    churn, tmin, tmax, noise = _churn_options(s_churn, s_tmin, s_tmax, s_noise)
    if brownian and churn == 0:
        raise ConfigError("brownian noise only applies with stochastic churn (s_churn > 0)")
    run = _Loop(name, score_fn, x, sigmas, callback, progress, return_trajectory, generator, brownian)
    x, score, levels = run.x, run.counted, run.levels
    gamma_max = min(churn / run.steps, math.sqrt(2) - 1)
    with torch.no_grad():
        for i in range(run.steps):
            sigma, sigma_next = levels[i], levels[i + 1]
            sigma_hat = sigma
            if churn > 0:
                gamma = gamma_max if tmin <= sigma <= tmax else 0.0
                # fresh noise is drawn every step, as EDM and k-diffusion do; a Brownian path only
                # where it is used
                z = None if brownian and gamma == 0 else run.noise(x, sigma, sigma * (1 + gamma))
                if gamma > 0:
                    sigma_hat = sigma * (1 + gamma)
                    x = x + (noise * math.sqrt(sigma_hat**2 - sigma**2)) * z
            s = score(x, run.sigma_rows(i, sigma_hat))
            run.report(i, x, sigma_hat, s)
            # Euler: x + (sigma_next - sigma_hat) d with d = (x - D) / sigma_hat = -sigma_hat s
            h = sigma_hat * (sigma_hat - sigma_next)
            if not second_order or sigma_next == 0:
                x = torch.add(x, s, alpha=h)
            else:  # Heun: average d at both ends, d_2 = -sigma_next s(x_2, sigma_next)
                s2 = score(torch.add(x, s, alpha=h), run.rows[i + 1])
                dt = 0.5 * (sigma_hat - sigma_next)
                x = x.add(s, alpha=dt * sigma_hat).add_(s2, alpha=dt * sigma_next)
            run.done(i, x)
    return run.finish(x)


def heun(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float | None = None,
    s_tmax: float | None = None,
    s_noise: float | None = None,
    return_trajectory: bool = False,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Heun's second-order method on the probability-flow ODE in sigma (Karras et al. 2022,
    Algorithm 1; with ``s_churn > 0`` their Algorithm 2). Step i, with d(x, sigma) = -sigma s(x, sigma):

        gamma_i = min(s_churn / N, sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax else 0
        sigma_hat = (1 + gamma_i) sigma_i,  x_hat = x_i + s_noise sqrt(sigma_hat^2 - sigma_i^2) z
        x' = x_hat + (sigma_{i+1} - sigma_hat) d(x_hat, sigma_hat)
        x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) [d(x_hat, sigma_hat) + d(x', sigma_{i+1})] / 2,

    the last step an Euler step (x') when sigma_{i+1} = 0. NFE 2N - 1 with the final 0 (18 Karras
    steps: 35). ``s_tmin``, ``s_tmax`` (default 0, inf) and ``s_noise`` (default 1) only apply with
    churn; with churn one z is drawn every step.
    """
    return _karras(heun.__name__, True, score_fn, x, sigmas, generator, callback, progress, return_trajectory,
                   s_churn, s_tmin, s_tmax, s_noise, brownian)


def euler(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float | None = None,
    s_tmax: float | None = None,
    s_noise: float | None = None,
    return_trajectory: bool = False,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma:

        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i, sigma_i)) / sigma_i
                = x_i + sigma_i (sigma_i - sigma_{i+1}) s(x_i, sigma_i).

    NFE N. ``s_churn`` etc. add Algorithm 2's churn as in ``heun``.
    """
    return _karras(euler.__name__, False, score_fn, x, sigmas, generator, callback, progress, return_trajectory,
                   s_churn, s_tmin, s_tmax, s_noise, brownian)


def _ancestral(name: str, score_fn: Any, x: Tensor, sigmas: Tensor | Sequence[float], eta: float,
               s_noise: float, generator: Generators, callback: Callback | None, progress: bool,
               return_trajectory: bool, brownian: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """x_{i+1} = x_i + (sigma_down - sigma_i) d_i + s_noise sigma_up z with
    sigma_up = min(sigma_{i+1}, eta sigma_{i+1} sqrt(1 - sigma_{i+1}^2 / sigma_i^2)),
    sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)."""
    if brownian and eta == 0:
        raise ConfigError("brownian noise only applies with eta > 0")
    run = _Loop(name, score_fn, x, sigmas, callback, progress, return_trajectory, generator, brownian)
    x, score, levels = run.x, run.counted, run.levels
    with torch.no_grad():
        for i in range(run.steps):
            sigma, sigma_next = levels[i], levels[i + 1]
            up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
            down = math.sqrt(max(0.0, sigma_next**2 - up**2))
            s = score(x, run.rows[i])
            run.report(i, x, sigma, s)
            x = torch.add(x, s, alpha=sigma * (sigma - down))
            if up > 0:
                x = x.add_(run.noise(x, sigma, sigma_next), alpha=s_noise * up)
            run.done(i, x)
    return run.finish(x)


def _eta(eta: float, most: float = math.inf) -> float:
    eta = float(eta)
    if not (math.isfinite(eta) and 0 <= eta <= most):
        raise ConfigError(f"eta must be in [0, {most}], got {eta!r}")
    return eta


def euler_ancestral(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    s_noise: float | None = None,
    return_trajectory: bool = False,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Ancestral sampling with Euler steps: step down to sigma_down by the ODE, then add noise
    sigma_up so that sigma_down^2 + sigma_up^2 = sigma_{i+1}^2:

        sigma_up = min(sigma_{i+1}, eta sigma_{i+1} sqrt(1 - sigma_{i+1}^2 / sigma_i^2)),
        x_{i+1} = x_i + sigma_i (sigma_i - sigma_down) s(x_i, sigma_i) + s_noise sigma_up z.

    eta = 1 (default) is the ancestral (DDPM-like) step, eta = 0 the Euler step; ``s_noise``
    (default 1) only applies with eta > 0. No noise is added on a last step to sigma = 0. NFE N.

    ``brownian=True`` takes z of step i from one Brownian path W per row (a Brownian tree,
    ``scorematch._brownian``) in log sigma, z_i = (W(log sigma_{i+1}) - W(log sigma_i)) /
    sqrt(|log sigma_{i+1} - log sigma_i|) instead of a fresh draw: the noise of a coarse grid is
    the sum of that of a fine one, so at one seed the sample converges as the steps grow.
    """
    eta = _eta(eta)
    if eta == 0 and s_noise is not None:
        raise ConfigError("s_noise only applies with eta > 0")
    noise = 1.0 if s_noise is None else _checks.positive("s_noise", s_noise)
    return _ancestral(euler_ancestral.__name__, score_fn, x, sigmas, eta, noise, generator, callback, progress,
                      return_trajectory, brownian)


def ddim(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 0.0,
    return_trajectory: bool = False,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """DDIM (Song, Meng & Ermon 2021) in the VE view. DDIM's step on x_vp = a x with
    a_i^2 = 1 / (1 + sigma_i^2),

        x_vp' = a_{i+1} x0_hat + sqrt(1 - a_{i+1}^2 - c^2) eps_hat + c z,
        c = eta sqrt((1 - a_{i+1}^2) / (1 - a_i^2)) sqrt(1 - a_i^2 / a_{i+1}^2),

    divided by a_{i+1}, with x0_hat = D(x_i, sigma_i) and eps_hat = (x_i - x0_hat) / sigma_i, is

        x_{i+1} = D + sigma_down eps_hat + sigma_up z,
        sigma_up = eta sigma_{i+1} sqrt(1 - sigma_{i+1}^2 / sigma_i^2), sigma_down^2 = sigma_{i+1}^2 - sigma_up^2:

    the Euler step for eta = 0 and ``euler_ancestral``'s step for 0 < eta <= 1. NFE N.
    """
    eta = _eta(eta, 1.0)
    return _ancestral(ddim.__name__, score_fn, x, sigmas, eta, 1.0, generator, callback, progress, return_trajectory,
                      brownian)


def dpm_solver(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    order: int = 2,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """DPM-Solver++ in its multistep form (Lu et al. 2022), order 2 ("2M", default) or 3 ("3M").

    With lambda = -log sigma, h = lambda_{i+1} - lambda_i = log(sigma_i / sigma_{i+1}), D_i = D(x_i, sigma_i)
    and r = h_{i-1} / h:

        order 1 (first step):  x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - e^{-h}) D_i
        order 2:               the same with D_i -> (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}
        order 3:               x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) D_i + phi_2 D1 - phi_3 D2,
                               phi_2 = (e^{-h} - 1)/h + 1, phi_3 = phi_2/h - 1/2, D1, D2 the first and
                               second divided differences of D_i, D_{i-1}, D_{i-2} in lambda
                               (second step: phi_2 (D_i - D_{i-1}) / r).

    A last step to sigma = 0 returns D. NFE N. The random generator is not used.
    """
    order = _checks.positive_int("order", order)
    if order not in (2, 3):
        raise ConfigError(f"dpm_solver order must be 2 or 3, got {order}")
    run = _Loop(f"{dpm_solver.__name__}_{order}m", score_fn, x, sigmas, callback, progress, return_trajectory)
    history: list[tuple[Tensor, float]] = []  # (D_j, h_j) of the previous steps, newest first

    def step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
        h = math.log(sigma / sigma_next)
        x = _dpm_step(x, denoised, history, sigma_next / sigma, h, order)
        history[:] = [(denoised, h), *history[:1]]
        return x

    return run.multistep(step)


def _dpm_step(x: Tensor, d0: Tensor, history: list[tuple[Tensor, float]], ratio: float, h: float,
              order: int) -> Tensor:
    a = -math.expm1(-h)
    if not history:
        return x.mul(ratio).add_(d0, alpha=a)
    d1, h1 = history[0]
    r0 = h1 / h
    if order == 2:
        c = a / (2 * r0)
        return x.mul(ratio).add_(d0, alpha=a + c).add_(d1, alpha=-c)
    phi2 = math.expm1(-h) / h + 1
    if len(history) == 1:
        return x.mul(ratio).add_(d0, alpha=a + phi2 / r0).add_(d1, alpha=-phi2 / r0)
    d2, h2 = history[1]
    r1 = h2 / h
    phi3 = phi2 / h - 0.5
    # D1 = D1_0 + (D1_0 - D1_1) r0 / (r0 + r1), D2 = (D1_0 - D1_1) / (r0 + r1),
    # D1_0 = (d0 - d1) / r0, D1_1 = (d1 - d2) / r1; collected per denoised
    k = r0 / (r0 + r1)
    c0 = (1 + k) / r0
    c1 = -(1 + k) / r0 - k / r1
    c2 = k / r1
    e0, e1, e2 = 1 / (r0 * (r0 + r1)), -1 / (r0 * (r0 + r1)) - 1 / (r1 * (r0 + r1)), 1 / (r1 * (r0 + r1))
    return (x.mul(ratio).add_(d0, alpha=a + phi2 * c0 - phi3 * e0)
            .add_(d1, alpha=phi2 * c1 - phi3 * e1).add_(d2, alpha=phi2 * c2 - phi3 * e2))


def continuous_levels(n_steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """The grid of ``n_steps`` steps of ``continuous_langevin``: ``linear_sigmas(n_steps + 1, ...)``,
    n_steps + 1 levels from sigma_max down to sigma_min, so dt = 1 / n_steps and NFE n_steps."""
    from scorematch.noise import linear_sigmas

    return linear_sigmas(n_steps + 1, sigma_min, sigma_max)


def continuous_langevin(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The continuous-noise recipe of the tutorial notes on score matching: with
    sigma(t) = sigma_min + t (sigma_max - sigma_min), run dx = s(x, sigma(t)) dt + sqrt(2 sigma(t)) dw
    from t = 1 down to t = 0 by Euler-Maruyama:

        x_{k+1} = x_k + s(x_k, sigma_k) dt_k + sqrt(2 sigma_k dt_k) z_k,
        dt_k = (sigma_k - sigma_{k+1}) / (sigma_0 - sigma_N)   (t = (sigma - sigma_N) / (sigma_0 - sigma_N)).

    With ``scorematch.noise.linear_sigmas(n, sigma_min, sigma_max)`` every dt_k = 1 / (n - 1), the
    recipe exactly. It is Langevin dynamics at temperature sigma(t) for a total time 1, not the
    reverse of a noising process: see the docs page for how it compares with the VE SDE. NFE N.
    """
    run = _Loop(continuous_langevin.__name__, score_fn, x, sigmas, callback, progress, return_trajectory, generator,
                brownian)
    x, score, levels = run.x, run.counted, run.levels
    span = levels[0] - levels[-1]
    with torch.no_grad():
        for i in range(run.steps):
            sigma = levels[i]
            dt = (sigma - levels[i + 1]) / span
            s = score(x, run.rows[i])
            run.report(i, x, sigma, s)
            x = torch.add(x, s, alpha=dt).add_(run.noise(x, sigma, levels[i + 1]), alpha=math.sqrt(2 * sigma * dt))
            run.done(i, x)
    return run.finish(x)
