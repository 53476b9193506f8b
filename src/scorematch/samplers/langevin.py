"""Langevin samplers: unadjusted Langevin, Metropolis-adjusted Langevin (MALA), and annealed
Langevin dynamics (NCSN, Algorithm 1 of Song & Ermon 2019).

One Langevin step is written three ways in the literature, all the same chain:
alpha-form x + (alpha/2) s + sqrt(alpha) z, eta-form x + eta s + sqrt(2 eta) z, and
epsilon-form x + (eps^2/2) s + eps z, with alpha = 2 eta = eps^2. ``langevin`` and ``mala``
take the eta-form ``step_size``; ``annealed_langevin`` takes Algorithm 1's alpha-form ``eps``
(the common code default "step_lr = 2e-5" is an eta, i.e. eps = 4e-5 here).

Each is called as every sampler is (``scorematch.samplers``): ``langevin(score_fn, x, step_size,
n_steps=K)``, ``mala(energy_fn, x, step_size, n_steps=K)``, ``annealed_langevin(score_fn, x,
sigmas, eps=..., steps_per_sigma=T)``, with ``generator``, ``callback``, ``progress`` and
``return_trajectory``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from scorematch import _compile
from scorematch._checks import batch, descending_sigmas, positive, positive_int
from scorematch._random import Generators, rand_like, randn_like
from scorematch.objectives._common import as_score_fn
from scorematch.samplers._loop import Callback, Loop


def langevin(
    score_fn: Callable,
    x: torch.Tensor,
    step_size: float,
    *,
    n_steps: int,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
    noise: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Unadjusted Langevin dynamics, x_{k+1} = x_k + eta s(x_k) + sqrt(2 eta) z_k, z_k ~ N(0, I),
    from x_0 = ``x``, for ``n_steps`` steps of size eta = ``step_size`` (the schedule).

    Returns x_K, or (x_K, trajectory) with the trajectory of shape
    (1 + K // trajectory_every, *x.shape) holding x_0 and every ``trajectory_every``-th iterate.
    ``noise=False`` drops the sqrt(2 eta) z term (gradient ascent on log p: every chain collapses
    onto a mode), for illustration. ``callback({"i", "nfe", "x", "step_size"})`` after every step.
    NFE K.
    """
    x = batch("x", x).detach().clone()
    eta = positive("step_size", step_size)
    n_steps = positive_int("n_steps", n_steps, minimum=0)
    every = positive_int("trajectory_every", trajectory_every)
    score = as_score_fn(score_fn)
    loop = Loop(langevin.__name__, x, n_steps, callback, progress, return_trajectory, 1 + n_steps // every)
    loop.snapshot(x)
    noise_scale = math.sqrt(2 * eta) if noise else 0.0
    with loop, torch.no_grad():
        for k in range(n_steps):
            x = x + eta * score(x)
            loop.nfe += 1
            if noise:
                x = x + noise_scale * randn_like(x, generator)
            if (k + 1) % every == 0:
                loop.snapshot(x)
            loop.step({"x": x, "step_size": eta})
    return loop.finish(x)


def mala(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: float,
    *,
    n_steps: int,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Metropolis-adjusted Langevin for p = exp(-E)/Z, from x_0 = ``x``, for ``n_steps`` steps of
    size eta = ``step_size``.

    Proposal y = x - eta grad E(x) + sqrt(2 eta) z (the Langevin step), accepted with
    probability min(1, exp(-E(y) + E(x)) q(x|y) / q(y|x)),
    q(y|x) = N(y; x - eta grad E(x), 2 eta I). ``energy_fn`` maps (n, ...) to (n,) (an energy
    model's ``energy``). Returns x_K, or (x_K, trajectory) as ``langevin``.
    ``callback({"i", "nfe", "x", "acceptance_rate"})`` after every step, the rate over the steps so
    far (after the last step: the run's). NFE K + 1 evaluations of E and grad E.
    """
    energy = _compile.method(energy_fn, "energy")
    x = batch("x", x).detach().clone()
    eta = positive("step_size", step_size)
    n_steps = positive_int("n_steps", n_steps, minimum=0)
    every = positive_int("trajectory_every", trajectory_every)
    loop = Loop(mala.__name__, x, n_steps, callback, progress, return_trajectory, 1 + n_steps // every)
    loop.snapshot(x)

    def energy_and_grad(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            e = energy(y)
            (g,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), g

    def log_q(to: torch.Tensor, frm: torch.Tensor, grad_frm: torch.Tensor) -> torch.Tensor:
        return -(to - frm + eta * grad_frm).flatten(1).pow(2).sum(1) / (4 * eta)

    with loop:
        e_x, g_x = energy_and_grad(x)
        loop.nfe += 1
        accepted = torch.zeros((), dtype=torch.float64, device=x.device)
        for k in range(n_steps):
            y = x - eta * g_x + math.sqrt(2 * eta) * randn_like(x, generator)
            e_y, g_y = energy_and_grad(y)
            loop.nfe += 1
            log_alpha = -e_y + e_x + log_q(x, y, g_y) - log_q(y, x, g_x)
            u = rand_like(e_x, generator)
            accept = torch.log(u) < log_alpha
            mask = accept.view(-1, *([1] * (x.dim() - 1)))
            x = torch.where(mask, y, x)
            e_x, g_x = torch.where(accept, e_y, e_x), torch.where(mask, g_y, g_x)
            accepted += accept.double().sum()
            if (k + 1) % every == 0:
                loop.snapshot(x)
            loop.step({"x": x, "acceptance_rate": float(accepted) / ((k + 1) * x.shape[0])})
    return loop.finish(x)


def annealed_langevin(
    score_fn: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    eps: float,
    steps_per_sigma: int,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    denoise: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Annealed Langevin dynamics, exactly Algorithm 1 of Song & Ermon (2019):

        for i = 1..L:  alpha_i = eps * sigma_i^2 / sigma_L^2
            repeat T times:  x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z,

    then, if ``denoise``, one Tweedie step x <- x + sigma_L^2 s(x, sigma_L). ``eps`` is the
    alpha-form step of Algorithm 1 (eps = 2 * the "step_lr" eta of common code). Uses L*T
    (+1 when denoising) score evaluations. With ``return_trajectory`` also returns the snapshots
    (x_0, then x after each noise level, then the denoised x), shape (L + 1 [+1], *x.shape).
    ``callback({"i", "nfe", "x", "level", "sigma"})`` after every Langevin step (``i`` counts all
    L*T steps, ``level`` is the 0-based noise level).
    """
    x = batch("x", x).detach().clone()
    sig = descending_sigmas(sigmas).to(device=x.device, dtype=x.dtype)
    eps = positive("eps", eps)
    steps = positive_int("steps_per_sigma", steps_per_sigma)
    score = as_score_fn(score_fn)
    sigma_l = float(sig[-1])
    n = x.shape[0]
    levels = sig.tolist()
    loop = Loop("annealed Langevin", x, len(levels) * steps, callback, progress, return_trajectory, len(levels) + 2)
    loop.snapshot(x)
    with loop, torch.no_grad():
        for li, (sigma_i, sigma_t) in enumerate(zip(levels, sig[:, None].expand(-1, n), strict=True)):
            alpha = eps * sigma_i**2 / sigma_l**2
            half, root = 0.5 * alpha, math.sqrt(alpha)
            for _ in range(steps):
                x.add_(score(x, sigma_t), alpha=half).add_(randn_like(x, generator), alpha=root)
                loop.nfe += 1
                loop.step({"x": x, "level": li, "sigma": sigma_i})
            loop.snapshot(x)
        if denoise:
            x.add_(score(x, sig[-1].expand(n)), alpha=sigma_l**2)
            loop.nfe += 1
            loop.snapshot(x)
    return loop.finish(x)
