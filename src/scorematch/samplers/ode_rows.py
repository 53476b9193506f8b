"""The probability-flow ODE sampler with one step-size controller per sample (``ode(per_sample=True)``).

Every row is solved by the Dormand-Prince 5(4) method with its own time, step and accept/reject
decision (``scorematch._rowode``), in the scaled state y = x / c(t) of
``scorematch.likelihood.scaled_flow`` (c(t)^2 = m(t)^2 + std(t)^2):

    dy/dt = (v(x, t) - (a + g^2 / (2 c^2)) x) / c,   x = c(t) y,   v = f - 1/2 g^2 s,

and, with the log-density, d delta/dt = div v alongside, each row's error the larger of the
RMS of its y-error and its delta-error (each over atol + rtol max(|before|, |after|)). Row i's
sample, log-density and evaluations are what the solver gives for row i alone: the batch only
shares the calls of the score (one per stage over the rows still running, each at its own t).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scorematch._rowode import solve_rows
from scorematch.samplers._loop import Loop
from scorematch.sde import SDE


def solve_flow_rows(score_fn: Any, sde: SDE, x: Tensor, eps_t: float, rtol: float, atol: float, loop: Loop,
                    snapshot_times: Tensor | None, return_log_prob: bool, exact_trace: bool | None, n_probes: int,
                    generator: Any) -> tuple[Tensor, Tensor | None, Tensor | None, dict[str, int]]:
    """The ODE from t = T (``x`` the start) down to eps_t, per row; returns (x(eps_t), the
    trajectory at ``snapshot_times`` (S, n, ...) or None, log p_eps_t(x(eps_t)) or None, counts
    {nfe: batched calls, row_nfe: the rows' evaluations, steps: batched attempts, n_accept,
    n_reject}). ``loop.step`` is called at every batched call with {x, t, rows} (x and t of the
    rows evaluated) and ``loop.nfe`` counts the calls."""
    from scorematch.likelihood import scaled_flow

    n, dims = x.shape[0], (1,) * (x.dim() - 1)
    flow = scaled_flow(score_fn, sde, x, exact_trace, n_probes, generator, eps_t, divergence=return_log_prob)

    def scale(t: Tensor | float) -> Tensor:
        tv = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(n) if not isinstance(t, Tensor) else t
        return flow.scale(tv).reshape(-1, *dims)

    def rhs(t: Tensor, state: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
        tv = t.to(x.dtype).clamp(eps_t, sde.T)
        loop.nfe += 1
        loop.step({"x": scale(tv) * state[0], "t": tv, "rows": rows} if loop.callback is not None else {})
        dy, div = flow.rhs(state[0], tv, rows)
        return (dy, div) if return_log_prob else (dy,)

    y0: tuple[Tensor, ...] = (x / scale(sde.T),)
    if return_log_prob:
        y0 = (*y0, torch.zeros(n, dtype=x.dtype, device=x.device))
    marks = [] if snapshot_times is None else [float(t) for t in snapshot_times]
    res = solve_rows(rhs, y0, sde.T, eps_t, rtol, atol, snapshots=marks)
    out = scale(eps_t) * res.y[0]
    traj = None
    if snapshot_times is not None:
        traj = torch.stack([scale(m) * snap[0] for m, snap in zip(marks, res.snapshots, strict=True)])
    lp = None
    if return_log_prob:  # d delta/dt = div v from T down to eps_t: delta(eps_t) = -int_{eps_t}^T div v dt
        lp = sde.prior_log_prob(x) - res.y[1]
    info = {"nfe": res.calls, "row_nfe": res.evaluations, "steps": res.steps, "n_accept": res.n_accept,
            "n_reject": res.n_reject}
    return out, traj, lp, info
