"""Adaptive DPM-Solver (Lu et al. 2022, DPM-Solver-12 and -23): the probability-flow ODE in
lambda = -log sigma solved to a tolerance instead of on a fixed grid, in the VE view of
``scorematch.samplers.denoising`` (eps(x, sigma) = (x - D(x, sigma)) / sigma = -sigma s(x, sigma)).

Each attempted step from lambda_s to lambda_t = lambda_s + h (sigma(lambda) = e^{-lambda}) computes
a low- and a high-order DPM-Solver step from the same evaluations, with u_r = x - sigma(s + r h)
(e^{r h} - 1) eps_s the first-order prediction at s + r h and eps_r = eps(u_r, sigma(s + r h)):

    DPM-Solver-1:  x_1 = x - sigma_t (e^h - 1) eps_s
    DPM-Solver-2:  x_2 = x_1 - sigma_t (e^h - 1) (eps_{r1} - eps_s) / (2 r1)
    DPM-Solver-3:  x_3 = x_1 - sigma_t ((e^h - 1) / h - 1) (eps_{r2} - eps_s) / r2,   r1 = 1/3, r2 = 2/3,
                   with u_{r2} = x - sigma(s + r2 h) [(e^{r2 h} - 1) eps_s
                                 + (r2 / r1) ((e^{r2 h} - 1) / (r2 h) - 1) (eps_{r1} - eps_s)],

order 2 pairing (x_1, x_2 with r1 = 1/2), order 3 (default) pairing (x_2 with r1 = 1/3, x_3). The
error of the step is the root mean square over all entries of a row (per sample, the default;
see ``scorematch.samplers.adaptive_rows``) or of the batch (k-diffusion's choice) of
(x_low - x_high) / max(atol, rtol max(|x_low|, |x_low, previous accepted|)), and a PID controller
(Soderlind 2003, as in k-diffusion) with exponents b1 = (p + i + d) / k, b2 = -(p + 2d) / k,
b3 = d / k (k = the order, 1.5 with eta > 0) sets

    factor = 1 + atan(e_n^{b1} e_{n-1}^{b2} e_{n-2}^{b3} - 1),   e = 1 / (error + 1e-8),   h <- factor h,

accepting the step when factor >= accept_safety. With eta > 0 each accepted step is an ancestral
step: the ODE is solved down to sigma_down and s_noise sigma_up z is added (``euler_ancestral``'s
sigma_up, sigma_down for the proposed sigma_t), with z from ``noise(sigma_s, sigma_t)`` or
``randn_like(x, generator)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._progress import progress as progress_reporter
from scorematch._random import Generators
from scorematch.errors import ConfigError, ModelError
from scorematch.samplers._loop import Callback, check_callback, check_trajectory_size
from scorematch.samplers.adaptive_rows import solve_rows
from scorematch.samplers.dpmpp_sde import NoiseFn, _noise_options, draw

__all__ = ["dpm_adaptive", "end_levels"]


def end_levels(n_steps: int | None, sigma_min: float, sigma_max: float) -> Tensor:
    """The only levels ``dpm_adaptive`` reads: [sigma_max, sigma_min, 0] (float64); ``n_steps`` is
    ignored, the controller picks the steps (the grid of its catalogue entry)."""
    return torch.tensor([float(sigma_max), float(sigma_min), 0.0], dtype=torch.float64)


def _options(order: int, rtol: float, atol: float, h_init: float, coeffs: tuple[float, float, float],
             accept_safety: float) -> tuple[float, float, float]:
    if isinstance(order, bool) or order not in (2, 3):
        raise ConfigError(f"dpm_adaptive order must be 2 or 3, got {order!r}")
    tol = []
    for name, v in (("rtol", rtol), ("atol", atol)):
        v = float(v)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        tol.append(v)
    if tol[0] == 0 and tol[1] == 0:
        raise ConfigError("rtol and atol cannot both be 0 (give a tolerance, e.g. rtol=0.05, atol=0.0078)")
    for name, v in zip(("pcoeff", "icoeff", "dcoeff"), coeffs, strict=True):
        if not math.isfinite(float(v)):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if not (0 < float(accept_safety) <= 1):
        raise ConfigError(f"accept_safety must be in (0, 1], got {accept_safety!r}")
    return tol[0], tol[1], _checks.positive("h_init", h_init)


class _PID:
    """The step-size controller: h and the last three inverse errors."""

    def __init__(self, h: float, p: float, i: float, d: float, order: float, accept_safety: float) -> None:
        self.h = h
        self.b = ((p + i + d) / order, -(p + 2 * d) / order, d / order)
        self.accept_safety = accept_safety
        self.inv: list[float] = []

    def propose(self, error: float) -> bool:
        e = 1 / (error + 1e-8)
        if not self.inv:
            self.inv = [e, e, e]
        self.inv[0] = e
        factor = 1 + math.atan(self.inv[0] ** self.b[0] * self.inv[1] ** self.b[1] * self.inv[2] ** self.b[2] - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inv[2], self.inv[1] = self.inv[1], self.inv[0]
        self.h *= factor
        return accept


def dpm_adaptive(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float | None = None,
    noise: NoiseFn | None = None,
    return_trajectory: bool = False,
    return_info: bool = False,
    per_sample: bool = True,
) -> Any:
    """Adaptive DPM-Solver-12 (``order=2``) or -23 (``order=3``, default) from sigma_max = sigmas[0]
    down to sigma_min = the last positive entry of ``sigmas`` (the levels in between are not used:
    the controller picks the steps), then, when ``sigmas`` ends with 0, the denoising step
    x <- D(x, sigma_min). Tolerances ``rtol``/``atol`` (defaults 0.05, 0.0078: about 1/128 of a
    [-1, 1] pixel), first step ``h_init`` in lambda = -log sigma, PID coefficients ``pcoeff``,
    ``icoeff``, ``dcoeff`` (default: the integral controller) and ``accept_safety``: see the module
    docstring. With ``per_sample=True`` (default) every row has its own error (the root mean
    square over its entries), step size, PID history and accept/reject decision, and with eta > 0
    its own noise, from its own stream of ``generator`` when it is per-row
    (``scorematch.samplers.adaptive_rows``): row i's result is what the batch of row i alone
    gives, whatever the other rows, and the running rows are evaluated together, each at its own
    sigma. With ``per_sample=False`` the step sizes are chosen for the batch as a whole (one error
    over all its entries), so a sample depends on the batch it is drawn with, exactly as
    k-diffusion's ``sample_dpm_adaptive`` (which a batch of one row matches either way); a
    ``noise`` function, called with the step's two sigmas, needs it when eta > 0.

    Score evaluations: ``order`` per attempted step, less one for each attempt after a rejected
    one (the evaluation at its start is reused), plus one for the final denoising step:
    nfe = order n_accept + (order - 1) n_reject (+ 1). Per sample this is each row's own count,
    and ``info`` then holds ``row_nfe`` (those counts summed over the rows), ``n_accept`` and
    ``n_reject`` summed over the rows, ``steps`` the batched attempts and ``nfe`` the batched calls
    of the score (order per attempt, less one when every running row had its start cached, + 1),
    what a counting wrapper of the score sees. Batch-wide, ``callback`` is called after every attempt
    with {i, sigma, sigma_hat, sigma_next, x, denoised, error, accepted, h, nfe, n_accept,
    n_reject} (x and denoised at sigma, before the attempt; sigma_next the attempt's target; h the
    next step size), and once for the denoising step as the other samplers do; per sample after
    every batched attempt with {i, x (after it), rows (the rows attempted), sigma, sigma_next, h,
    accepted, error (theirs), nfe, row_nfe, n_accept, n_reject}. Returns the final x, (x,
    trajectory) with ``return_trajectory`` (the start and the state after every accepted step,
    per sample after every batched attempt, and after the denoising step), and with
    ``return_info`` one more element, the dict {nfe, steps, n_accept, n_reject} (steps =
    attempts; per sample also row_nfe).
    """
    rtol, atol, h_init = _options(order, rtol, atol, h_init, (pcoeff, icoeff, dcoeff), accept_safety)
    eta, s_noise = _noise_options(eta, s_noise, noise)
    if per_sample and eta > 0 and noise is not None:
        raise ConfigError("a noise function noise(sigma, sigma_next) needs per_sample=False (per sample every row "
                          "steps between its own sigmas); give per-row generators for per-sample noise")
    score = _checks.score_callable(score_fn, "score_fn(x, sigma)")
    x = _checks.batch("x", x).detach()
    levels = _checks.sampler_sigmas(sigmas).tolist()
    callback = check_callback(callback)
    denoise_at_end = levels[-1] == 0
    positive = levels[:-1] if denoise_at_end else levels
    if len(positive) < 2:
        raise ConfigError("dpm_adaptive needs sigma_max > sigma_min > 0 in sigmas (e.g. [sigma_max, sigma_min, 0])")
    t_end = -math.log(positive[-1])
    s = -math.log(positive[0])
    traj = [x.clone()] if return_trajectory else None
    info = {"nfe": 0, "steps": 0, "n_accept": 0, "n_reject": 0}
    bar = progress_reporter(None, dpm_adaptive.__name__, progress, unit="evaluation")

    def eps(y: Tensor, lam: Any) -> Tensor:
        """eps(y, sigma) = -sigma s(y, sigma) at sigma = e^{-lam} (a float, or per row shaped like s)."""
        info["nfe"] += 1
        if bar is not None:
            bar.update(1)
        if isinstance(lam, Tensor):
            sigma = torch.exp(-lam)
            return score(y, sigma.reshape(-1).to(y.dtype)).mul(-sigma)
        sigma = math.exp(-lam)
        return score(y, torch.full((y.shape[0],), sigma, dtype=y.dtype, device=y.device)).mul(-sigma)

    if per_sample:
        coeffs = (float(pcoeff), float(icoeff), float(dcoeff))
        with torch.no_grad():
            x = solve_rows(eps, _pair, x, s, t_end, order, rtol, atol, h_init, coeffs, float(accept_safety), info,
                           callback, denoise_at_end, eta, s_noise, generator, traj)
        if bar is not None:
            bar.close()
        rows_out: tuple[Any, ...] = (x,) if traj is None else (x, torch.stack(traj))
        rows_out = (*rows_out, dict(info)) if return_info else rows_out
        return rows_out[0] if len(rows_out) == 1 else rows_out
    pid = _PID(h_init, float(pcoeff), float(icoeff), float(dcoeff), 1.5 if eta > 0 else order, float(accept_safety))
    x_prev = x
    eps_s: Tensor | None = None
    with torch.no_grad():
        while s < t_end - 1e-5:
            t = min(t_end, s + pid.h)
            sigma_s, sigma_t = math.exp(-s), math.exp(-t)
            t_down, up = t, 0.0
            if eta > 0:
                up = min(sigma_t, eta * sigma_t * math.sqrt(max(0.0, 1 - (sigma_t / sigma_s) ** 2)))
                down = math.sqrt(max(0.0, sigma_t**2 - up**2))
                t_down = t_end if down == 0 else min(t_end, -math.log(down))
                up = math.sqrt(max(0.0, sigma_t**2 - math.exp(-2 * t_down)))
            if eps_s is None:
                eps_s = eps(x, s)
            x_low, x_high = _pair(eps, x, eps_s, s, t_down, order)
            delta = torch.maximum(x_low.abs(), x_prev.abs()).mul_(rtol).clamp_(min=atol)
            error = float(torch.linalg.vector_norm((x_low - x_high) / delta)) / math.sqrt(x.numel())
            if not math.isfinite(error):
                raise ModelError(f"dpm_adaptive: the score gave non-finite values at sigma = {sigma_s:.4g}")
            accepted = pid.propose(error)
            info["steps"] += 1
            info["n_accept" if accepted else "n_reject"] += 1
            if callback is not None:
                callback({"i": info["steps"] - 1, "sigma": sigma_s, "sigma_hat": sigma_s, "sigma_next": sigma_t,
                          "x": x, "denoised": x - sigma_s * eps_s, "error": error, "accepted": accepted,
                          "h": pid.h, **info})
            if accepted:
                x_prev = x_low
                x = x_high
                if up > 0:
                    x = x.add_(draw(noise, x, generator, sigma_s, sigma_t), alpha=s_noise * up)
                s, eps_s = t, None
                if traj is not None:
                    check_trajectory_size(len(traj) + 1, x.shape, x.dtype, dpm_adaptive.__name__)
                    traj.append(x.clone())
        if denoise_at_end:
            sigma = math.exp(-s)
            x_eps = eps(x, s)
            denoised = x - sigma * x_eps
            if callback is not None:
                callback({"i": info["steps"], "sigma": sigma, "sigma_hat": sigma, "sigma_next": 0.0, "x": x,
                          "denoised": denoised, **info})
            x = denoised
            if traj is not None:
                traj.append(x.clone())
    if bar is not None:
        bar.close()
    out: tuple[Any, ...] = (x,) if traj is None else (x, torch.stack(traj))
    if return_info:
        out = (*out, dict(info))
    return out[0] if len(out) == 1 else out


def _exp(v: Any) -> Any:
    return torch.exp(v) if isinstance(v, Tensor) else math.exp(v)


def _expm1(v: Any) -> Any:
    return torch.expm1(v) if isinstance(v, Tensor) else math.expm1(v)


def _pair(eps: Any, x: Tensor, eps_s: Tensor, s: Any, t: Any, order: int) -> tuple[Tensor, Tensor]:
    """(x_low, x_high) of one attempt from lambda s to t: (DPM-Solver-1, -2) or (-2, -3); s and t
    floats, or per-row tensors shaped to broadcast against x."""
    h = t - s
    sigma_t = _exp(-t)
    em1 = _expm1(h)
    x1 = x - (sigma_t * em1) * eps_s
    r1 = 0.5 if order == 2 else 1 / 3
    s1 = s + r1 * h
    eps_r1 = eps(x - (_exp(-s1) * _expm1(r1 * h)) * eps_s, s1)
    x2 = x1 - (sigma_t / (2 * r1) * em1) * (eps_r1 - eps_s)
    if order == 2:
        return x1, x2
    r2 = 2 / 3
    s2 = s + r2 * h
    sigma_s2, em2 = _exp(-s2), _expm1(r2 * h)
    u2 = x - (sigma_s2 * em2) * eps_s - (sigma_s2 * (r2 / r1) * (em2 / (r2 * h) - 1)) * (eps_r1 - eps_s)
    eps_r2 = eps(u2, s2)
    x3 = x1 - (sigma_t / r2 * (em1 / h - 1)) * (eps_r2 - eps_s)
    return x2, x3
