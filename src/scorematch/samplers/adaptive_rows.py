"""The adaptive DPM-Solver with one step-size controller per row (``dpm_adaptive(per_sample=True)``).

Row i carries its own lambda_i = -log sigma_i, step h_i, PID history (the last three inverse
errors), previous accepted low-order state and cached eps at its start, and its error is the root
mean square over its own entries,

    err_i = sqrt(mean_j ((x_low - x_high)_ij / max(atol, rtol max(|x_low|_ij, |x_prev|_ij)))^2),

so every decision of row i (step, accept or reject, the noise of an ancestral step) is the one the
batch-wide controller of ``scorematch.samplers.adaptive`` takes for a batch holding row i alone:
row i's result depends on row i only. One attempt evaluates, in one batched call per stage, the
rows that have not reached lambda_end, each at its own sigma (the score takes sigma of shape (n,));
rows that have finished drop out of the batch. The start of an attempt that follows a rejected
one is not evaluated again (its eps is kept), so a row takes

    nfe_i = order n_accept_i + (order - 1) n_reject_i (+ 1 for the final denoising step)

evaluations, the count of the batch-wide controller on that row alone; the batched calls are
order per attempt, less one when every running row had its start cached, plus one for the
denoising step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scorematch._random import Generators, per_row, randn_like
from scorematch.errors import ModelError
from scorematch.samplers._loop import Callback, check_trajectory_size

__all__ = ["solve_rows"]


def _noise_rows(generator: Generators, x: Tensor, rows: Tensor) -> Tensor:
    """z ~ N(0, I) shaped like x for the rows ``rows`` of the batch: from those rows' own streams
    with per-row generators (so a row's noise does not depend on which other rows step with it),
    else from the one generator."""
    g = per_row(generator)
    if g is None:
        return randn_like(x, generator)
    return randn_like(x, g.rows(rows))


def solve_rows(eps: Any, pair: Any, x: Tensor, s0: float, t_end: float, order: int, rtol: float, atol: float,
               h_init: float, coeffs: tuple[float, float, float], accept_safety: float, info: dict[str, int],
               callback: Callback | None, denoise_at_end: bool, eta: float = 0.0, s_noise: float = 1.0,
               generator: Generators = None, trajectory: list[Tensor] | None = None) -> Tensor:
    """The per-row controller (module docstring) from lambda = s0 to t_end, then with
    ``denoise_at_end`` x <- x - sigma eps(x, sigma) at each row's last sigma. ``eps(y, lam)`` is
    eps at sigma = e^{-lam} (lam a per-row tensor shaped to broadcast against y); ``pair(eps, x,
    eps_s, s, t, order)`` gives (x_low, x_high) of one attempt. With eta > 0 an accepted step of a
    row is ancestral: solved down to that row's sigma_down, then s_noise sigma_up z added, z from
    that row's stream of ``generator``. ``info`` gets ``steps`` (batched attempts), ``n_accept``
    and ``n_reject`` (summed over rows) and ``row_nfe`` (the evaluations of the rows, summed); its
    ``nfe`` is counted by ``eps`` (batched calls). ``trajectory`` (a list holding the start) gets
    the state after every batched attempt (each row at its own sigma, finished rows unchanged) and
    after the denoising step."""
    n, dims = x.shape[0], (1,) * (x.dim() - 1)
    dev, dt = x.device, torch.float64
    s = torch.full((n,), s0, dtype=dt, device=dev)
    h = torch.full((n,), h_init, dtype=dt, device=dev)
    inv = torch.zeros(n, 3, dtype=dt, device=dev)
    started = torch.zeros(n, dtype=torch.bool, device=dev)
    cached = torch.zeros(n, dtype=torch.bool, device=dev)
    eps_cache = torch.empty_like(x)
    row_nfe = torch.zeros(n, dtype=torch.int64, device=dev)
    p, i, d = coeffs
    k = 1.5 if eta > 0 else order
    b = ((p + i + d) / k, -(p + 2 * d) / k, d / k)
    x, x_prev = x.clone(), x.clone()
    base = info.get("row_nfe", 0)

    def shaped(v: Tensor) -> Tensor:
        return v.reshape(-1, *dims).to(x.dtype)

    while True:
        rows = torch.nonzero(s < t_end - 1e-5).flatten()
        if rows.numel() == 0:
            break
        need = rows[~cached[rows]]
        if need.numel():
            eps_cache[need] = eps(x[need], shaped(s[need]))
            cached[need] = True
            row_nfe[need] += 1
        xa, sa, eps_s = x[rows], s[rows], eps_cache[rows]
        ta = torch.clamp(sa + h[rows], max=t_end)
        t_down, up = ta, None
        if eta > 0:
            sig_s, sig_t = torch.exp(-sa), torch.exp(-ta)
            up = torch.minimum(sig_t, eta * sig_t * torch.sqrt(torch.clamp(1 - (sig_t / sig_s) ** 2, min=0)))
            down = torch.sqrt(torch.clamp(sig_t**2 - up**2, min=0))
            t_down = torch.where(down == 0, torch.full_like(ta, t_end),
                                 torch.clamp(-torch.log(down.clamp(min=1e-300)), max=t_end))
            up = torch.sqrt(torch.clamp(sig_t**2 - torch.exp(-2 * t_down), min=0))
        x_low, x_high = pair(eps, xa, eps_s, shaped(sa), shaped(t_down), order)
        row_nfe[rows] += order - 1
        delta = torch.maximum(x_low.abs(), x_prev[rows].abs()).mul_(rtol).clamp_(min=atol)
        error = ((x_low - x_high) / delta).flatten(1).double().pow(2).mean(1).sqrt()
        if not bool(torch.isfinite(error).all()):
            raise ModelError("dpm_adaptive: the score gave non-finite values")
        e = 1 / (error + 1e-8)
        fresh = ~started[rows]
        inv[rows[fresh]] = e[fresh, None].expand(-1, 3)
        started[rows] = True
        inv[rows, 0] = e
        prev = inv[rows]
        factor = 1 + torch.atan(prev[:, 0] ** b[0] * prev[:, 1] ** b[1] * prev[:, 2] ** b[2] - 1)
        ok = factor >= accept_safety
        done = rows[ok]
        inv[done, 2], inv[done, 1] = inv[done, 1], inv[done, 0]
        h[rows] = h[rows] * factor
        if up is not None:
            noisy = ok & (up > 0)
            if bool(noisy.any()):
                z = _noise_rows(generator, x_high[noisy], rows[noisy])
                x_high[noisy] = x_high[noisy] + (s_noise * shaped(up[noisy])) * z
        x[done], x_prev[done], s[done] = x_high[ok], x_low[ok], ta[ok]
        cached[done] = False
        if trajectory is not None:
            check_trajectory_size(len(trajectory) + 1, x.shape, x.dtype, "the adaptive DPM-Solver")
            trajectory.append(x.clone())
        info["steps"] += 1
        info["n_accept"] += int(ok.sum())
        info["n_reject"] += int((~ok).sum())
        info["row_nfe"] = base + int(row_nfe.sum())
        if callback is not None:
            callback({"i": info["steps"] - 1, "x": x, "rows": rows, "sigma": torch.exp(-sa), "sigma_next":
                      torch.exp(-ta), "accepted": ok, "error": error, "h": h[rows], **info})
    if denoise_at_end:
        sb = shaped(s)
        x = x - torch.exp(-sb) * eps(x, sb)
        row_nfe += 1
        if trajectory is not None:
            trajectory.append(x.clone())
    info["row_nfe"] = base + int(row_nfe.sum())
    return x
