"""Restart sampling (Xu et al. 2023): Heun's method on the probability-flow ODE, interrupted by
restarts that add noise and solve a stretch of the ODE again.

In the VE view of ``scorematch.samplers.denoising`` (x at noise level sigma is x_0 + sigma eps,
dx/dsigma = -sigma s(x, sigma)), the main pass runs ``heun``'s steps over the grid
sigma_0 > ... > sigma_N (the last step, to sigma_N = 0, an Euler step). When it reaches the level
t_min = sigma_j of the grid below ``restart_max`` nearest to ``restart_min`` (in log sigma), it
restarts K times:

    x <- x + sqrt(t_max^2 - t_min^2) z,   z ~ N(0, I)            (forward: from t_min up to t_max)
    x <- Heun over karras_sigmas(M + 1, t_min, t_max)           (backward: M steps from t_max to t_min)

with t_max = ``restart_max`` (default 2, or sigma_0 where that is smaller), K = ``restarts`` and M
= ``restart_steps``, then goes on along the grid. For data whose law at t_min is exact, the forward
step gives exactly the law at t_max (a Gaussian of variance t_max^2 - t_min^2 added to a variable
of level t_min is one of level t_max), so a restart keeps the marginals while the noise contracts
the errors the ODE steps accumulated before t_min (Xu et al. 2023, Theorem 2): an SDE's error
contraction at about an ODE's step count.
With K = 0 it is ``heun`` exactly.

Score evaluations: 2N - 1 for the main pass with the final 0 (2N without it), plus 2 M K for the
restarts (each restart step ends at t_min > 0: a full Heun step).
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

__all__ = ["restart", "restart_level", "restart_nfe"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def restart_level(levels: Sequence[float], restart_min: float, restart_max: float) -> int:
    """The index j >= 1 of the positive level of the grid below ``restart_max`` nearest to
    ``restart_min`` (in log sigma): the level the main pass restarts from, t_min = levels[j]."""
    candidates = [j for j in range(1, len(levels)) if 0 < levels[j] < restart_max]
    if not candidates:
        raise ConfigError(f"restart needs a positive noise level of the grid after the first one below restart_max = "
                          f"{restart_max:g}; give more steps or a larger restart_max")
    target = math.log(restart_min)
    return min(candidates, key=lambda j: abs(math.log(levels[j]) - target))


def restart_nfe(n_steps: int, restarts: int, restart_steps: int, final_zero: bool = True) -> int:
    """The score evaluations of ``restart`` over a grid of ``n_steps`` steps: 2N - 1 (2N without the
    final 0) + 2 M K."""
    return 2 * n_steps - (1 if final_zero else 0) + 2 * restart_steps * restarts


#: t_max when none is given (or the grid's sigma_0 where that is smaller)
DEFAULT_RESTART_MAX = 2.0


def _options(restarts: int, restart_steps: int, restart_min: float, restart_max: float) -> tuple[int, int, float,
                                                                                               float]:
    restarts = _checks.positive_int("restarts", restarts, minimum=0)
    restart_steps = _checks.positive_int("restart_steps", restart_steps)
    lo, hi = _checks.positive("restart_min", restart_min), _checks.positive("restart_max", restart_max)
    if hi <= lo:
        raise ConfigError(f"need restart_min < restart_max, got restart_min={restart_min!r}, "
                          f"restart_max={restart_max!r}")
    return restarts, restart_steps, lo, hi


def _heun_step(score: ScoreFn, x: Tensor, sigma: float, sigma_next: float, rows: Tensor, rows_next: Tensor,
               report: Callable[[Tensor, Tensor], None]) -> Tensor:
    """One step of ``heun`` (s_churn = 0) from sigma to sigma_next: Heun's, or Euler's to sigma_next = 0."""
    s = score(x, rows)
    report(x, s)
    h = sigma * (sigma - sigma_next)
    if sigma_next == 0:
        return torch.add(x, s, alpha=h)
    s2 = score(torch.add(x, s, alpha=h), rows_next)
    dt = 0.5 * (sigma - sigma_next)
    return x.add(s, alpha=dt * sigma).add_(s2, alpha=dt * sigma_next)


def restart(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    restarts: int = 1,
    restart_steps: int = 4,
    restart_min: float = 0.1,
    restart_max: float | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Restart sampling (Xu et al. 2023) with Heun steps (see the module docstring): the main pass
    over ``sigmas`` as ``heun``, and at the grid level t_min below ``restart_max`` nearest to
    ``restart_min`` (in log sigma), ``restarts``
    times (K): x + sqrt(t_max^2 - t_min^2) z with t_max = ``restart_max``, then ``restart_steps`` (M)
    Heun steps back over ``karras_sigmas(M + 1, t_min, t_max)``. NFE 2N - 1 + 2 M K with the final 0.

    ``restart_max`` (default 2, or sigmas[0] where that is smaller) must not lie above sigmas[0]. z
    comes from ``generator`` (a torch.Generator or per-row generators: sample i's restarts then
    depend on its own stream only).
    ``callback`` gets every Heun step, the restart steps with ``pass`` = k (1..K; 0 on the main
    pass); the trajectory holds the start and the state after every main step (N + 1 states).
    """
    from scorematch.noise import karras_sigmas

    sig = _checks.sampler_sigmas(sigmas)
    levels: list[float] = sig.tolist()
    if restart_max is None:
        restart_max = min(DEFAULT_RESTART_MAX, levels[0])
    restarts, restart_steps, lo, hi = _options(restarts, restart_steps, restart_min, restart_max)
    score_fn = _checks.score_callable(score_fn, "score_fn(x, sigma)")
    x = _checks.batch("x", x).detach()
    steps = len(levels) - 1
    if restarts and hi > levels[0]:
        raise ConfigError(f"restart_max must not exceed the grid's largest level sigma_0 = {levels[0]:.4g}, got {hi:g}")
    j = restart_level(levels, lo, hi) if restarts else steps + 1
    t_min = levels[j] if restarts else 0.0
    n = x.shape[0]
    rows = sig.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, n)
    back = karras_sigmas(restart_steps + 1, t_min, hi, append_zero=False).tolist() if restarts else []
    if back:
        back[-1] = t_min  # the restart ends on the grid's level itself
    back_rows = torch.tensor(back, dtype=x.dtype, device=x.device)[:, None].expand(-1, n)
    draw = step_noise(generator, False, 0.0, 1.0)
    loop = Loop(restart.__name__, x, steps + restarts * restart_steps, callback, progress, return_trajectory,
                steps + 1)
    loop.snapshot(x)

    def counted(x: Tensor, sigma: Tensor) -> Tensor:
        loop.nfe += 1
        return score_fn(x, sigma)

    def reporter(sigma: float, sigma_next: float, k: int) -> Callable[[Tensor, Tensor], None]:
        def report(x: Tensor, s: Tensor) -> None:
            loop.step({"sigma": sigma, "sigma_hat": sigma, "sigma_next": sigma_next, "x": x,
                       "denoised": x + sigma**2 * s, "pass": k})

        return report

    with torch.no_grad():
        for i in range(steps):
            x = _heun_step(counted, x, levels[i], levels[i + 1], rows[i], rows[i + 1],
                           reporter(levels[i], levels[i + 1], 0))
            if i + 1 == j:
                for k in range(1, restarts + 1):
                    x = x.add(draw(x, t_min, hi), alpha=math.sqrt(hi**2 - t_min**2))
                    for m in range(restart_steps):
                        x = _heun_step(counted, x, back[m], back[m + 1], back_rows[m], back_rows[m + 1],
                                       reporter(back[m], back[m + 1], k))
            loop.snapshot(x)
    return loop.finish(x)
