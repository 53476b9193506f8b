"""Langevin samplers: unadjusted Langevin, Metropolis-adjusted Langevin (MALA), and annealed
Langevin dynamics (NCSN, Algorithm 1 of Song & Ermon 2019).

One Langevin step is written three ways in the literature, all the same chain:
alpha-form x + (alpha/2) s + sqrt(alpha) z, eta-form x + eta s + sqrt(2 eta) z, and
epsilon-form x + (eps^2/2) s + eps z, with alpha = 2 eta = eps^2. ``langevin`` and ``mala``
take the eta-form ``step_size``; ``annealed_langevin`` takes Algorithm 1's alpha-form ``eps``
(the common code default "step_lr = 2e-5" is an eta, i.e. eps = 4e-5 here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from scorematch import _compile
from scorematch._checks import batch, descending_sigmas, positive, positive_int
from scorematch._progress import progress as progress_bar
from scorematch._random import Generators, rand_like, randn_like
from scorematch.errors import ConfigError
from scorematch.objectives._common import as_score_fn

#: ``callback(info)`` is called after every step with a dict holding at least ``i`` (the step,
#: 0-based) and ``x`` (the state after it), and ``sigma`` where the sampler has one
Callback = Callable[[dict], None]

#: trajectories larger than this many bytes are refused before anything is allocated
MAX_TRAJECTORY_BYTES = 2 * 1024**3


def check_trajectory_size(n_snapshots: int, x: torch.Tensor, what: str) -> None:
    """Raise ConfigError before allocating a trajectory that would not fit in memory."""
    size = n_snapshots * x.numel() * x.element_size()
    if size > MAX_TRAJECTORY_BYTES:
        raise ConfigError(
            f"{what}: a trajectory of {n_snapshots} snapshots of shape {tuple(x.shape)} needs "
            f"{size / 1024**3:.1f} GiB (limit {MAX_TRAJECTORY_BYTES / 1024**3:.0f} GiB); keep fewer "
            "snapshots (trajectory_every), fewer chains, or return_trajectory=False"
        )


def langevin(
    score_fn: Callable,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: Generators = None,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
    noise: bool = True,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Unadjusted Langevin dynamics, x_{k+1} = x_k + eta s(x_k) + sqrt(2 eta) z_k, z_k ~ N(0, I).

    ``step_size`` is eta. Returns x_K, or (x_K, trajectory) with the trajectory of shape
    (1 + K // trajectory_every, *x0.shape) holding x_0 and every ``trajectory_every``-th
    iterate. ``noise=False`` drops the sqrt(2 eta) z term (gradient ascent on log p: every chain
    collapses onto a mode), for illustration. ``callback({"i", "x", "step_size"})`` after every
    step; ``progress`` shows a progress bar on stderr.
    """
    x = batch("x0", x0).detach().clone()
    eta = positive("step_size", step_size)
    n_steps = positive_int("n_steps", n_steps, minimum=0)
    every = positive_int("trajectory_every", trajectory_every)
    score = as_score_fn(score_fn)
    traj = [x.clone()] if return_trajectory else None
    if return_trajectory:
        check_trajectory_size(1 + n_steps // every, x, "langevin")
    noise_scale = math.sqrt(2 * eta) if noise else 0.0
    bar = progress_bar(n_steps, "langevin", progress)
    with torch.no_grad():
        for k in range(n_steps):
            x = x + eta * score(x)
            if noise:
                x = x + noise_scale * randn_like(x, generator)
            if traj is not None and (k + 1) % every == 0:
                traj.append(x.clone())
            if callback is not None:
                callback({"i": k, "x": x, "step_size": eta})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return (x, torch.stack(traj)) if traj is not None else x


class MALAResult(NamedTuple):
    """Samples of MALA, the fraction of accepted proposals, and the optional trajectory."""

    samples: torch.Tensor
    acceptance_rate: float
    trajectory: torch.Tensor | None = None


def mala(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: Generators = None,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
    callback: Callback | None = None,
    progress: bool = False,
) -> MALAResult:
    """Metropolis-adjusted Langevin for p = exp(-E)/Z.

    Proposal y = x - eta grad E(x) + sqrt(2 eta) z (the Langevin step), accepted with
    probability min(1, exp(-E(y) + E(x)) q(x|y) / q(y|x)),
    q(y|x) = N(y; x - eta grad E(x), 2 eta I). ``energy_fn`` maps (n, ...) to (n,) (an energy
    model's ``energy``). Returns MALAResult(samples, acceptance_rate, trajectory).
    ``callback({"i", "x", "acceptance_rate"})`` after every step (the rate so far); ``progress``
    shows a progress bar on stderr.
    """
    energy = _compile.method(energy_fn, "energy")
    x = batch("x0", x0).detach().clone()
    eta = positive("step_size", step_size)
    n_steps = positive_int("n_steps", n_steps, minimum=0)
    every = positive_int("trajectory_every", trajectory_every)
    if return_trajectory:
        check_trajectory_size(1 + n_steps // every, x, "mala")
    traj = [x.clone()] if return_trajectory else None

    def energy_and_grad(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            e = energy(y)
            (g,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), g

    def log_q(to: torch.Tensor, frm: torch.Tensor, grad_frm: torch.Tensor) -> torch.Tensor:
        return -(to - frm + eta * grad_frm).flatten(1).pow(2).sum(1) / (4 * eta)

    bar = progress_bar(n_steps, "mala", progress)
    e_x, g_x = energy_and_grad(x)
    accepted = torch.zeros((), dtype=torch.float64, device=x.device)
    for k in range(n_steps):
        y = x - eta * g_x + math.sqrt(2 * eta) * randn_like(x, generator)
        e_y, g_y = energy_and_grad(y)
        log_alpha = -e_y + e_x + log_q(x, y, g_y) - log_q(y, x, g_x)
        u = rand_like(e_x, generator)
        accept = torch.log(u) < log_alpha
        mask = accept.view(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, y, x)
        e_x, g_x = torch.where(accept, e_y, e_x), torch.where(mask, g_y, g_x)
        accepted += accept.double().sum()
        if traj is not None and (k + 1) % every == 0:
            traj.append(x.clone())
        if callback is not None:
            callback({"i": k, "x": x, "acceptance_rate": float(accepted) / ((k + 1) * x.shape[0])})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    rate = float(accepted) / max(1, n_steps * x.shape[0])
    return MALAResult(x, rate, torch.stack(traj) if traj is not None else None)


def annealed_langevin(
    score_fn: Callable,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    eps: float,
    steps_per_sigma: int,
    denoise: bool = True,
    generator: Generators = None,
    return_trajectory: bool = False,
    progress: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Annealed Langevin dynamics, exactly Algorithm 1 of Song & Ermon (2019):

        for i = 1..L:  alpha_i = eps * sigma_i^2 / sigma_L^2
            repeat T times:  x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z,

    then, if ``denoise``, one Tweedie step x <- x + sigma_L^2 s(x, sigma_L). ``eps`` is the
    alpha-form step of Algorithm 1 (eps = 2 * the "step_lr" eta of common code). Uses L*T
    (+1 when denoising) score evaluations. With ``return_trajectory`` also returns the snapshots
    (x_0, then x after each noise level, then the denoised x), shape (L + 1 [+1], *x0.shape).
    ``callback({"i", "x", "level", "sigma"})`` after every Langevin step (``i`` counts all L*T
    steps, ``level`` is the 0-based noise level); ``progress`` shows a progress bar on stderr.
    """
    x = batch("x0", x0).detach().clone()
    sig = descending_sigmas(sigmas).to(device=x.device, dtype=x.dtype)
    eps = positive("eps", eps)
    steps = positive_int("steps_per_sigma", steps_per_sigma)
    score = as_score_fn(score_fn)
    sigma_l = float(sig[-1])
    if return_trajectory:
        check_trajectory_size(len(sig) + 2, x, "annealed_langevin")
    traj = [x.clone()] if return_trajectory else None
    n = x.shape[0]
    levels = sig.tolist()
    bar = progress_bar(len(levels) * steps, "annealed Langevin", progress)
    with torch.no_grad():
        for li, (sigma_i, sigma_t) in enumerate(zip(levels, sig[:, None].expand(-1, n), strict=True)):
            alpha = eps * sigma_i**2 / sigma_l**2
            half, root = 0.5 * alpha, math.sqrt(alpha)
            for k in range(steps):
                x.add_(score(x, sigma_t), alpha=half).add_(randn_like(x, generator), alpha=root)
                if callback is not None:
                    callback({"i": li * steps + k, "x": x, "level": li, "sigma": sigma_i})
            if bar is not None:
                bar.update(steps)
            if traj is not None:
                traj.append(x.clone())
        if denoise:
            x.add_(score(x, sig[-1].expand(n)), alpha=sigma_l**2)
            if traj is not None:
                traj.append(x.clone())
    if bar is not None:
        bar.close()
    return (x, torch.stack(traj)) if traj is not None else x
