"""Samplers of the score SDEs (Song et al. 2021): reverse-SDE predictors, the Langevin
corrector, predictor-corrector and the probability-flow ODE.

Each sampler is called as every sampler is (``scorematch.samplers``), ``name(score_fn, x, sde, *,
generator, callback, progress, return_trajectory, **options)``: a time-conditional score function
``score_fn(x, t)`` (or a module with ``.score(x, t)``), t of shape (n,); the start ``x`` (or a
shape: x is then drawn from the SDE's prior, in ``dtype`` on ``device``); the ``SDE``. Each runs
under ``torch.no_grad()``.  The time grid is
t_k = 1 - k (1 - eps_t) / n_steps, k = 0..n_steps (dt = (1 - eps_t) / n_steps): step k evaluates
the score at t_k and moves to t_{k+1}.  ``denoise=True`` ends with Tweedie's step at eps_t,
x <- (x + std(eps_t)^2 s(x, eps_t)) / m(eps_t) = E[x_0 | x_eps_t], one more score evaluation.

Number of score evaluations (NFE): euler_maruyama and reverse_diffusion n_steps (+1 with
denoise), pc n_steps * (1 + n_corrector) (+1 with denoise); ``ode`` reports its own (adaptive).

``progress=True`` reports progress on stderr; ``callback(info)`` is called after every step
with ``{"i", "nfe", "x", "t"}`` (``ode``: at every evaluation of the velocity, and once more
after the denoising step, so the last call's ``nfe`` is the run's). Each returns the samples, or
``(samples, trajectory)`` with ``return_trajectory=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._brownian import step_noise
from scorematch._random import Generators, randn_like
from scorematch.errors import ConfigError
from scorematch.samplers._loop import Callback, Loop, check_trajectory_size
from scorematch.sde import ODE_METHODS, SDE

#: the adaptive torchdiffeq solvers of ODE_METHODS (the others step on a fixed grid)
ODE_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _score_callable(score_fn: Any) -> ScoreFn:
    return _checks.score_callable(score_fn, "score_fn(x, t)")


def _check_sde(sde: SDE) -> SDE:
    if not isinstance(sde, SDE):
        raise ConfigError(f"sde must be a scorematch.sde.SDE, got {type(sde).__name__}")
    return sde


def _start(
    sde: SDE,
    shape_or_x0: Sequence[int] | Tensor,
    generator: Generators,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> Tensor:
    if isinstance(shape_or_x0, Tensor):
        x = _checks.batch("x", shape_or_x0)
        return x.detach().to(dtype=dtype or x.dtype, device=device or x.device).clone()
    if not isinstance(shape_or_x0, Sequence | torch.Size) or not all(
        isinstance(s, int) and s > 0 for s in shape_or_x0
    ):
        raise ConfigError(
            f"x must be the start tensor or a shape tuple like (n, D), got {shape_or_x0!r}"
        )
    return sde.prior_sample(tuple(shape_or_x0), generator=generator, dtype=dtype, device=device)


def _bc(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def _check_eps(eps_t: float, sde: SDE) -> float:
    _check_sde(sde)
    eps_t = _checks.positive("eps_t", eps_t)
    if eps_t >= sde.T:
        raise ConfigError(f"eps_t must be in (0, {sde.T}), got {eps_t}")
    return eps_t


def _spec(
    shape_or_x0: Sequence[int] | Tensor, dtype: torch.dtype | None
) -> tuple[tuple[int, ...], torch.dtype]:
    """Shape and dtype of the start, known before anything is allocated."""
    if isinstance(shape_or_x0, Tensor):
        return tuple(shape_or_x0.shape), dtype or shape_or_x0.dtype
    try:
        shape = tuple(int(s) for s in shape_or_x0)
    except (TypeError, ValueError):
        raise ConfigError(
            f"x must be the start tensor or a shape tuple like (n, D), got {shape_or_x0!r}"
        ) from None
    return shape, dtype or torch.get_default_dtype()


def _tweedie(score: ScoreFn, sde: SDE, x: Tensor, eps_t: float) -> Tensor:
    """x_0 estimate E[x_0 | x_t] = (x_t + std(t)^2 s(x_t, t)) / m(t) at t = eps_t."""
    t = torch.full((x.shape[0],), eps_t, dtype=x.dtype, device=x.device)
    std = _bc(sde.marginal_std(t), x)
    return (x + std.pow(2) * score(x, t)) / _bc(sde.mean_coeff(t), x)


def _em_step(score: ScoreFn, sde: SDE, x: Tensor, t: Tensor, dt: float, z: Tensor) -> Tensor:
    """x <- x - [f(x, t) - g(t)^2 s(x, t)] dt + g(t) sqrt(dt) z (reverse time, dt > 0)."""
    g = _bc(sde.diffusion(t), x)
    drift = sde.drift(x, t) - g.pow(2) * score(x, t)
    return x - drift * dt + g * math.sqrt(dt) * z


def _rd_step(score: ScoreFn, sde: SDE, x: Tensor, t: Tensor, dt: float, z: Tensor) -> Tensor:
    """x <- x - f_dt + g_dt^2 s(x, t) + g_dt z with (f_dt, g_dt) = sde.discretize(x, t, dt)."""
    f, g = sde.discretize(x, t, dt)
    g = _bc(g, x)
    return x - f + g.pow(2) * score(x, t) + g * z


def _langevin(
    score: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor,
    dt: float,
    snr: float,
    n_corrector: int,
    generator: Generators,
    per_sample_step: bool,
) -> Tensor:
    alpha = _bc(sde.langevin_alpha(t, dt), x)
    for _ in range(n_corrector):
        s = score(x, t)
        z = randn_like(x, generator)
        s_norm = s.flatten(1).norm(dim=1)
        z_norm = z.flatten(1).norm(dim=1)
        if not per_sample_step:
            s_norm, z_norm = s_norm.mean().expand_as(s_norm), z_norm.mean().expand_as(z_norm)
        ratio = snr * z_norm / s_norm.clamp_min(torch.finfo(x.dtype).tiny)
        eps = 2 * alpha * _bc(ratio.pow(2), x)
        x = x + eps * s + (2 * eps).sqrt() * z
    return x


@torch.no_grad()
def langevin_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    t: Tensor | float,
    dt: float,
    snr: float = 0.16,
    n_corrector: int = 1,
    generator: Generators = None,
    per_sample_step: bool = False,
) -> Tensor:
    """Langevin corrector at time t with the signal-to-noise step rule (Song et al. 2021, Alg. 4/5).

    Repeated ``n_corrector`` times: eps = 2 alpha_t (snr ||z|| / ||s(x, t)||)^2,
    x <- x + eps s(x, t) + sqrt(2 eps) z, the eta-form Langevin step of the contract with
    eta = eps; alpha_t = 1 for VE and 1 - beta(t) dt (the VP chain's alpha, dt = 1/N) for VP
    and sub-VP.  Norms are over all non-batch dims.  By default ||z|| and ||s|| are the batch
    means of the per-sample norms (one eps for the batch, as in the reference code); with
    ``per_sample_step=True`` each sample uses its own norms (eps_i), which is only sensible in
    high dimension: in low dimension ||s_i|| -> 0 near a mode makes eps_i blow up.
    Returns the new x.
    """
    score = _score_callable(score_fn)
    _check_sde(sde)
    x = _checks.batch("x", x)
    t_vec = _checks.per_row("t", t, x)
    snr = _checks.positive("snr", snr)
    dt = _checks.positive("dt", dt)
    n_corrector = _checks.positive_int("n_corrector", n_corrector, minimum=0)
    return _langevin(score, sde, x, t_vec, dt, snr, n_corrector, generator, per_sample_step)


def _run(
    label: str,
    score_fn: ScoreFn,
    shape_or_x0: Sequence[int] | Tensor,
    sde: SDE,
    step: Callable[..., Tensor],
    n_steps: int,
    eps_t: float,
    denoise: bool,
    generator: Generators,
    callback: Callback | None,
    progress: bool,
    return_trajectory: bool,
    trajectory_every: int | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    corrector: tuple[float, int, bool] = (1.0, 0, False),
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The loop of the SDE samplers: at each t_k, ``n_corrector`` corrector steps then one
    ``step``; the trajectory holds the start, the state every ``trajectory_every`` steps strictly
    inside the run (default: about 100 snapshots) and the returned samples."""
    score = _score_callable(score_fn)
    n_steps = _checks.positive_int("n_steps", n_steps)
    eps_t = _check_eps(eps_t, sde)
    every = _checks.positive_int("trajectory_every", max(1, math.ceil(n_steps / 100)) if trajectory_every is None
                                 else trajectory_every)
    snapshots = 2 + (n_steps - 1) // every
    if return_trajectory:
        check_trajectory_size(snapshots, *_spec(shape_or_x0, dtype), label)
    x = _start(sde, shape_or_x0, generator, dtype, device)
    snr, n_corrector, per_sample_step = corrector
    loop = Loop(label, x, n_steps, callback, progress, return_trajectory, snapshots)
    loop.snapshot(x)
    dt = (sde.T - eps_t) / n_steps
    noise = step_noise(generator, bool(brownian), eps_t, sde.T)
    with loop:
        for k in range(n_steps):
            t = torch.full((x.shape[0],), sde.T - k * dt, dtype=x.dtype, device=x.device)
            if n_corrector:
                x = _langevin(score, sde, x, t, dt, snr, n_corrector, generator, per_sample_step)
            x = step(score, sde, x, t, dt, noise(x, sde.T - k * dt, sde.T - (k + 1) * dt))
            loop.nfe += 1 + n_corrector
            if k + 1 < n_steps and (k + 1) % every == 0:
                loop.snapshot(x)
            loop.step({"x": x, "t": sde.T - k * dt})
        if denoise:
            x = _tweedie(score, sde, x, eps_t)
            loop.nfe += 1
    loop.snapshot(x)
    return loop.finish(x)


@torch.no_grad()
def euler_maruyama(
    score_fn: ScoreFn,
    x: Tensor | Sequence[int],
    sde: SDE,
    *,
    n_steps: int = 500,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    eps_t: float = 1e-3,
    denoise: bool = True,
    trajectory_every: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Euler-Maruyama on the reverse SDE dx = [f - g^2 s] dt + g dw_bar from t = 1 to eps_t.

    x_{t-dt} = x_t - [f(x_t, t) - g(t)^2 s(x_t, t)] dt + g(t) sqrt(dt) z.  Starts from ``x`` (or
    sde.prior_sample(x) for a shape).  NFE = n_steps (+1 with denoise).
    Returns samples, or (samples, trajectory) with ``return_trajectory``: trajectory of shape
    (S, *x.shape) holding the start, the state every ``trajectory_every`` steps (default: about
    100 snapshots) and the returned samples last. ``brownian=True`` takes the increments
    sqrt(dt) z = W(t) - W(t - dt) of one Brownian path per row over [eps_t, T] (a Brownian tree,
    ``scorematch._brownian``) instead of fresh draws, so that at one seed the sample converges
    as n_steps grows.
    """
    return _run(euler_maruyama.__name__, score_fn, x, sde, _em_step, n_steps, eps_t, denoise, generator, callback,
                progress, return_trajectory, trajectory_every, dtype, device, brownian=brownian)


@torch.no_grad()
def reverse_diffusion(
    score_fn: ScoreFn,
    x: Tensor | Sequence[int],
    sde: SDE,
    *,
    n_steps: int = 500,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    eps_t: float = 1e-3,
    denoise: bool = True,
    trajectory_every: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reverse-diffusion predictor (Song et al. 2021, Eq. 46): the forward chain run backwards.

    With (f_dt, g_dt) = sde.discretize(x, t, dt) (VE: the NCSN chain, g_dt^2 = sigma(t)^2 -
    sigma(t - dt)^2; VP: the DDPM chain), x_{t-dt} = x_t - f_dt + g_dt^2 s(x_t, t) + g_dt z.
    NFE = n_steps (+1 with denoise).  Returns as ``euler_maruyama``.
    """
    return _run(reverse_diffusion.__name__, score_fn, x, sde, _rd_step, n_steps, eps_t, denoise, generator, callback,
                progress, return_trajectory, trajectory_every, dtype, device, brownian=brownian)


@torch.no_grad()
def pc(
    score_fn: ScoreFn,
    x: Tensor | Sequence[int],
    sde: SDE,
    *,
    n_steps: int = 500,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    snr: float = 0.16,
    n_corrector: int = 1,
    predictor: str | None = None,
    per_sample_step: bool = False,
    eps_t: float = 1e-3,
    denoise: bool = True,
    trajectory_every: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    brownian: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1): at each t_k, ``n_corrector``
    Langevin corrector steps (see ``langevin_corrector``, dt = (1 - eps_t) / n_steps), then one
    predictor step (``predictor``: the name of ``reverse_diffusion``, the default, or of
    ``euler_maruyama``) from t_k to t_{k+1}.

    NFE = n_steps * (1 + n_corrector) (+1 with denoise).  Returns as ``euler_maruyama``;
    ``brownian`` as there, for the predictor's noise (the corrector's is drawn afresh: it is a
    Markov chain at a fixed t, not a step of the SDE).  With the default batch-wide step size a
    row's step depends on the other rows of its batch; ``per_sample_step=True`` makes every row
    independent of the others (per-row seeds then reproduce a row in any batch).
    """
    predictors = {reverse_diffusion.__name__: _rd_step, euler_maruyama.__name__: _em_step}
    predictor = _checks.choice("predictor", reverse_diffusion.__name__ if predictor is None else predictor,
                               list(predictors))
    snr = _checks.positive("snr", snr)
    n_corrector = _checks.positive_int("n_corrector", n_corrector, minimum=0)
    return _run(pc.__name__ if n_corrector else predictor, score_fn, x, sde, predictors[predictor], n_steps, eps_t,
                denoise, generator, callback, progress, return_trajectory, trajectory_every, dtype, device,
                (snr, n_corrector, per_sample_step), brownian)


@torch.no_grad()
def ode(
    score_fn: ScoreFn,
    x: Tensor | Sequence[int],
    sde: SDE,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict[str, Any] | None = None,
    eps_t: float = 1e-3,
    denoise: bool | None = None,
    n_snapshots: int = 11,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_log_prob: bool = False,
    exact_trace: bool | None = None,
    n_probes: int = 1,
    per_sample: bool = True,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, ...]:
    """Probability-flow ODE dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t), solved from t = 1 to eps_t
    (then Tweedie's step with ``denoise``).

    ``per_sample=True`` (default) with ``method`` "dopri5": every sample is solved with its own
    steps (Dormand-Prince 5(4), torchdiffeq's controller with the error norm of its row, in the
    scaled state y = x / c(t); ``scorematch.samplers.ode_rows``), so a sample does not depend on
    the others drawn with it, the rows still running evaluated together, each at its own t.
    ``per_sample=False``, or another ``method``: torchdiffeq.odeint on the whole batch, whose
    adaptive steps are then shared by the batch (one error norm over all its entries; a
    fixed-grid method, with ``options={"step_size": h}``, keeps the rows independent); the
    other adaptive solvers of ODE_METHODS need it. The only randomness is the start
    sde.prior_sample(shape, generator) when ``x`` is a shape.  Times the adaptive solver probes past
    the end of [eps_t, 1] (when a step overshoots before interpolating) are clamped into it.
    Returns the samples, or (samples, trajectory) with ``return_trajectory``: (n_snapshots,
    *x.shape) at n_snapshots equally spaced times from 1 to eps_t (the last before the denoising
    step). ``callback({"i", "nfe", "x", "t"})`` at every evaluation of the velocity and once more
    after the denoising step: the last call's ``nfe`` counts the run's score evaluations (the
    solver's function evaluations, +1 with denoise); per sample it is called at each batched
    evaluation with x and t of the rows evaluated (``rows``). ``return_info``: one more element,
    last, the dict {nfe, steps, n_accept, n_reject, row_nfe}: nfe the batched evaluations (+1),
    per sample ``row_nfe`` the rows' own evaluations summed (each row 2 + 6 per attempted step, + 1),
    steps the batched attempts and the accepted and rejected steps summed over rows (batch-wide:
    nfe only).

    ``return_log_prob``: the same solve also integrates the divergence of the velocity (the
    instantaneous change of variables, as ``scorematch.likelihood.log_prob`` does), giving each
    sample's log-density under the model the ODE defines,

        log p_eps_t(x(eps_t)) = log p_prior(x(1)) + int_{eps_t}^{1} div v(x(t), t) dt,

    returned as one more element, (samples, log_prob) or (samples, trajectory, log_prob), log_prob
    of shape (n,): the exact trace for D <= 16 (or ``exact_trace=True``), else the Hutchinson
    estimate with ``n_probes`` Rademacher probes per row from ``generator``, drawn after the start.
    It is the density of the ODE's end point, so Tweedie's step is off by default then (``denoise``
    None: on without ``return_log_prob``, off with it; asking for both is refused). The solver
    controls the error of the log-density too, so it takes more steps than without.
    """
    from torchdiffeq import odeint

    score = _score_callable(score_fn)
    eps_t = _check_eps(eps_t, sde)
    _checks.choice("method", method, ODE_METHODS)
    rtol = _checks.positive("rtol", rtol)
    atol = _checks.positive("atol", atol)
    if denoise is None:
        denoise = not return_log_prob
    elif denoise and return_log_prob:
        raise ConfigError("return_log_prob gives the density of the ODE's end point, before Tweedie's denoising "
                          "step: leave denoise unset (or False)")
    rows_solver = bool(per_sample) and method == "dopri5"
    if per_sample and method in ODE_ADAPTIVE and not rows_solver:
        raise ConfigError(f"per_sample=True solves every sample with its own dopri5 steps; method {method!r} "
                          "shares its steps across the batch: give per_sample=False")
    if rows_solver and options:
        raise ConfigError("options go to torchdiffeq, which per_sample=True does not use: give per_sample=False")
    snaps = _checks.positive_int("n_snapshots", n_snapshots, minimum=2) if return_trajectory else 2
    if return_trajectory:
        check_trajectory_size(snaps, *_spec(x, dtype), ode.__name__)
    x = _start(sde, x, generator, dtype, device)
    n = x.shape[0]
    loop = Loop(ode.__name__, x, None, callback, progress, False, snaps, unit="evaluation")

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        loop.nfe += 1
        loop.step({"x": y, "t": float(t)})
        tv = t.to(y.dtype).clamp(eps_t, sde.T).expand(n)
        g2 = _bc(sde.diffusion(tv).pow(2), y)
        return sde.drift(y, tv) - 0.5 * g2 * score(y, tv)

    times = torch.linspace(sde.T, eps_t, snaps, dtype=x.dtype, device=x.device)
    if rows_solver:
        from scorematch.samplers.ode_rows import solve_flow_rows

        with loop:
            out, traj, lp, info = solve_flow_rows(score_fn, sde, x, eps_t, rtol, atol, loop,
                                                  times if return_trajectory else None, return_log_prob,
                                                  exact_trace, n_probes, generator)
        if denoise:
            out = _tweedie(score, sde, out, eps_t)
            loop.nfe += 1
            info["nfe"] += 1
            info["row_nfe"] += n
            loop.step({"x": out, "t": eps_t}, advance=0)
        parts = (out, traj, lp, info if return_info else None)
        result = tuple(p for p in parts if p is not None)
        return result[0] if len(result) == 1 else result
    rhs: Any = velocity
    state: Any = x
    if return_log_prob:
        from scorematch.likelihood import velocity_and_divergence

        with_div = velocity_and_divergence(score_fn, sde, x, exact_trace, n_probes, generator, eps_t)

        def rhs(t: Tensor, st: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            loop.nfe += 1
            loop.step({"x": st[0], "t": float(t)})
            return with_div(st[0], t.to(st[0].dtype).clamp(eps_t, sde.T).expand(n))

        state = (x, torch.zeros(n, dtype=x.dtype, device=x.device))
    with loop:
        sol = odeint(rhs, state, times, rtol=rtol, atol=atol, method=method, options=options)
    lp = None
    if return_log_prob:
        # d delta/dt = div v from t = 1 down to eps_t: delta(eps_t) = -int_{eps_t}^1 div v dt
        sol, delta = sol
        lp = sde.prior_log_prob(x) - delta[-1]
    out = sol[-1]
    if denoise:
        out = _tweedie(score, sde, out, eps_t)
        loop.nfe += 1
        loop.step({"x": out, "t": eps_t}, advance=0)
    result = (out, sol) if return_trajectory else (out,)
    if lp is not None:
        result = (*result, lp)
    if return_info:
        result = (*result, {"nfe": loop.nfe})
    return result[0] if len(result) == 1 else result
