"""Likelihood of a score-SDE model by the probability-flow ODE (Song et al. 2021, App. D).

The probability-flow ODE dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t) with the instantaneous
change of variables d log p_t(x(t))/dt = -div v(x(t), t) gives, integrating [x, delta] jointly
from eps_t to T = 1 (delta(eps_t) = 0),

    log p_eps_t(x) = log p_T(x(T)) + int_{eps_t}^{T} div v(x(t), t) dt,

with p_T the SDE's prior.  Under a VE, VP or sub-VP SDE the solver integrates the scaled state
y = x / c(t), c(t)^2 = m(t)^2 + std(t)^2 (the marginal variance that data of unit variance would
have at t): for the drift f = a(t) x, d(c^2)/dt = 2 a c^2 + g^2, so

    dy/dt = (v - (a + g^2 / (2 c^2)) x) / c = -(g^2 / (2 c)) (s(x, t) + x / c^2),

which vanishes where p_t is N(0, c^2 I): at the large noise levels of a VE SDE, where x grows like
sigma(t) and its own equation is stiff in t, y barely moves and the adaptive solver takes few
steps there (for a VP SDE c = 1 and y = x). The solution is the same ODE's; only the variable
whose error the solver controls changes (its tolerance applies to y).

The divergence is the exact trace of the Jacobian or the Hutchinson-Skilling estimate E_eps[eps^T
(dv/dx) eps] with Rademacher probes eps drawn once per solve. Under a VE, VP or sub-VP SDE (drift
f = c(t) x, div f = D c(t)) the exact divergence of a score network with linear ends
(scorematch.autodiff.structured: the library's MLPs, directly or through ``sigma_conditioned``) is
div v = D c(t) - 1/2 g(t)^2 tr(grad_x s) with the trace taken in the network's widths; any other
exact trace is D vector-Jacobian products with the unit vectors (D <= 16) or torch.func.jacrev
under vmap, chunked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._random import rademacher_like, rand_like
from scorematch.autodiff.plan import plan, structured_score_and_trace
from scorematch.autodiff.trace import prefer_structured
from scorematch.errors import ConfigError, DataError
from scorematch.sde import ODE_METHODS, SDE, VESDE, VPSDE

__all__ = ["BitsPerDim", "LogProbResult", "ScaledFlow", "bits_per_dim", "dequantized_bits_per_dim", "log_prob",
           "scaled_flow", "velocity_and_divergence"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
_EXACT_MAX_DIM = 16
_JAC_CHUNK_ELEMENTS = 2**22


class LogProbResult(NamedTuple):
    """``log_prob(..., return_nfe=True)``: log_prob of shape (n,), nfe = drift evaluations."""

    log_prob: Tensor
    nfe: int


def _score_callable(model: Any) -> ScoreFn:
    return _checks.score_callable(model, "score_fn(x, t)")


#: drifts of the form f(x, t) = c(t) x (VE: c = 0; VP and sub-VP: c = -beta(t)/2): div f = D c(t)
_SCALAR_DRIFTS = (VESDE.drift, VPSDE.drift)


def _structured_velocity(score_fn: Any, sde: SDE, x: Tensor, eps_t: float) -> Callable | None:
    """(v, div v) of the probability-flow ODE through the structured trace, or None where it does not apply."""
    if type(sde).drift not in _SCALAR_DRIFTS:
        return None
    fn = score_fn if isinstance(score_fn, torch.nn.Module) else getattr(score_fn, "score", score_fn)
    p = plan(fn, x, (torch.full((x.shape[0],), eps_t, dtype=x.dtype, device=x.device),))
    if p is None or not prefer_structured(p, x.shape[1]):
        return None

    def velocity_and_div(y: Tensor, tv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, tr = structured_score_and_trace(plan(fn, y, (tv,)), y)
        g2 = sde.diffusion(tv).pow(2)
        div_f = sde.drift(torch.ones_like(y), tv).flatten(1).sum(1)  # D c(t)
        v = sde.drift(y, tv) - 0.5 * g2[:, None] * s
        return v, div_f - 0.5 * g2 * tr

    return velocity_and_div


def velocity_and_divergence(
    score_fn: ScoreFn | torch.nn.Module,
    sde: SDE,
    x: Tensor,
    exact_trace: bool | None = None,
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    eps_t: float = 1e-5,
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``f(y, t) -> (v, div v)`` for batches shaped like ``x``: the probability-flow velocity
    v = f(y, t) - 1/2 g(t)^2 s(y, t) and its divergence, exact (default for D <= 16; the structured
    trace where it applies, else for D <= 16 D vector-Jacobian products with the unit vectors after
    one forward pass, above torch.func.jacrev under vmap, chunked) or the Hutchinson-Skilling
    estimate with ``n_probes`` Rademacher probes per row drawn now from ``generator`` and fixed for
    every call. ``t`` is (n,); neither output is differentiable. The function also takes ``rows``,
    an index of the rows of x that ``y`` holds (None: all of them), for their probes."""
    score = _score_callable(score_fn)
    d = math.prod(x.shape[1:])
    exact = d <= _EXACT_MAX_DIM if exact_trace is None else bool(exact_trace)

    def drift(y: Tensor, tv: Tensor) -> Tensor:
        g2 = sde.diffusion(tv).pow(2).reshape(-1, *([1] * (y.dim() - 1)))
        return sde.drift(y, tv) - 0.5 * g2 * score(y, tv)

    structured = _structured_velocity(score_fn, sde, x, eps_t) if exact else None
    if structured is not None:
        return structured
    if exact and d <= _EXACT_MAX_DIM:
        basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:])

        def basis_div(y: Tensor, tv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
            # one forward pass, then D vector-Jacobian products with the unit vectors e_j (rows are
            # independent, so e_j^T J e_j of every row at once): div = sum_j (e_j^T J)_j
            with torch.enable_grad():
                yr = y.detach().requires_grad_(True)
                v = drift(yr, tv)
                div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
                for j in range(d):
                    e = basis[j].expand_as(yr)
                    (vjp,) = torch.autograd.grad(v, yr, grad_outputs=e, retain_graph=j < d - 1)
                    div = div + (vjp * e).flatten(1).sum(1)
            return v.detach(), div

        return basis_div
    if exact:
        chunk = max(1, _JAC_CHUNK_ELEMENTS // (d * d))

        def one(yi: Tensor, ti: Tensor) -> tuple[Tensor, Tensor]:
            v = drift(yi[None], ti[None])[0]
            return v, v

        jac_fn = torch.func.vmap(torch.func.jacrev(one, has_aux=True), chunk_size=chunk)

        def exact_div(y: Tensor, tv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                jac, v = jac_fn(y, tv)
            div = jac.reshape(y.shape[0], d, d).diagonal(dim1=1, dim2=2).sum(-1)
            return v.detach(), div.detach()

        return exact_div
    n_probes = _checks.positive_int("n_probes", n_probes)
    probes = rademacher_like(x.expand(n_probes, *x.shape), generator)

    def hutchinson(y: Tensor, tv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        probe = probes if rows is None else probes[:, rows]
        with torch.enable_grad():
            yr = y.detach().requires_grad_(True)
            v = drift(yr, tv)
            div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
            for k in range(n_probes):
                (vjp,) = torch.autograd.grad(v, yr, grad_outputs=probe[k], retain_graph=k < n_probes - 1)
                div = div + (vjp * probe[k]).flatten(1).sum(1)
        return v.detach(), div / n_probes

    return hutchinson


class ScaledFlow(NamedTuple):
    """The probability-flow ODE in the scaled state y = x / c(t) (module docstring): ``scale(t)``
    gives c(t) of shape (n,) for t of shape (n,); ``rhs(y, t, rows)`` gives (dy/dt, div v) at x =
    c(t) y for the rows ``rows`` of the batch (None: all; a subset keeps their Hutchinson probes)."""

    scale: Callable[[Tensor], Tensor]
    rhs: Callable[..., tuple[Tensor, Tensor]]


def scaled_flow(
    score_fn: ScoreFn | torch.nn.Module,
    sde: SDE,
    x: Tensor,
    exact_trace: bool | None = None,
    n_probes: int = 1,
    generator: Any = None,
    eps_t: float = 1e-5,
    divergence: bool = True,
) -> ScaledFlow:
    """``velocity_and_divergence`` in the scaled state y = x / c(t), c(t) = sqrt(m(t)^2 + std(t)^2),
    dy/dt = (v - (a + g^2 / (2 c^2)) x) / c for a VE, VP or sub-VP SDE (drift a(t) x); for any
    other SDE c = 1 and dy/dt = v. The second output, d delta/dt = div_x v, is unchanged; with
    ``divergence=False`` it is None (and no probe is drawn)."""
    dims = (1,) * (x.dim() - 1)
    if divergence:
        with_div = velocity_and_divergence(score_fn, sde, x, exact_trace, n_probes, generator, eps_t)
    else:
        score = _score_callable(score_fn)

        def with_div(y: Tensor, tv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Any]:
            g2 = sde.diffusion(tv).pow(2).reshape(-1, *dims)
            return sde.drift(y, tv) - 0.5 * g2 * score(y, tv), None
    if type(sde).drift not in _SCALAR_DRIFTS:
        return ScaledFlow(lambda t: torch.ones_like(t), lambda y, t, rows=None: with_div(y, t, rows))

    def scale(t: Tensor) -> Tensor:
        return torch.sqrt(sde.mean_coeff(t) ** 2 + sde.marginal_std(t) ** 2)

    def rhs(y: Tensor, t: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c = scale(t).reshape(-1, *dims)
        xs = c * y
        v, div = with_div(xs, t, rows)
        a = sde.drift(y.new_ones(y.shape[0], 1), t).reshape(-1, *dims)  # f = a(t) x
        g2 = sde.diffusion(t).pow(2).reshape(-1, *dims)
        return (v - (a + g2 / (2 * c * c)) * xs) / c, div

    return ScaledFlow(scale, rhs)


def log_prob(
    score_fn: ScoreFn | torch.nn.Module,
    sde: SDE,
    x: Tensor,
    exact_trace: bool | None = None,
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps_t: float = 1e-5,
    method: str = "dopri5",
    options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    return_nfe: bool = False,
) -> Tensor | LogProbResult:
    """``log p_0(x) ~ log p_eps_t(x) = log p_T(x(T)) + int_{eps_t}^1 div[f - 1/2 g^2 s](x(t), t) dt``.

    ``score_fn`` is a time-conditional score function s(x, t) or a module with ``.score(x, t)``;
    x is (n, D) or (n, C, H, W).  ``exact_trace`` (default: D <= 16) uses the exact Jacobian
    trace, in the network's widths for a score network with linear ends under a VE, VP or sub-VP
    SDE (see the module docstring; its cost against Hutchinson's: docs/benchmarks.md); otherwise the
    Hutchinson-Skilling estimator averages ``n_probes`` Rademacher probes per row, fixed for the
    whole solve and drawn from ``generator`` (unbiased for the divergence).
    ``method``/``options`` go to torchdiffeq.odeint (fixed-grid solvers need
    ``options={"step_size": h}``); times an adaptive step probes past [eps_t, 1] are clamped
    into it.  The result is log p_eps_t with p_T replaced by the prior, so it is off by the
    mismatch of p_T and the prior at x(T): small when the prior dominates the data scale (about
    |m(1) mu| |x(T)| / prior_std^2 for data of mean mu).  Returns the (n,) tensor of
    log-densities (not differentiable), or ``LogProbResult(log_prob, nfe)`` with
    ``return_nfe=True`` (nfe = evaluations of the ODE right-hand side; each costs one score
    call plus its Jacobian trace or vector-Jacobian products). The solver works on the scaled
    state y = x / c(t) (module docstring), so ``rtol``/``atol`` bound y's error.
    """
    from torchdiffeq import odeint

    x = _checks.batch("x", x)
    if not torch.isfinite(x).all():
        raise DataError("x contains NaN or inf")
    if not isinstance(sde, SDE):
        raise ConfigError(f"sde must be a scorematch.sde.SDE, got {type(sde).__name__}")
    eps_t = _checks.positive("eps_t", eps_t)
    if eps_t >= sde.T:
        raise ConfigError(f"eps_t must be in (0, {sde.T}), got {eps_t}")
    _checks.choice("method", method, ODE_METHODS)
    rtol = _checks.positive("rtol", rtol)
    atol = _checks.positive("atol", atol)
    n = x.shape[0]
    flow = scaled_flow(score_fn, sde, x, exact_trace, n_probes, generator, eps_t)

    count = [0]

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        count[0] += 1
        y = state[0]
        return flow.rhs(y, t.to(y.dtype).clamp(eps_t, sde.T).expand(n))

    times = torch.tensor([eps_t, sde.T], dtype=x.dtype, device=x.device)
    ends = flow.scale(times[:, None].expand(2, n))
    state0 = (x.detach() / ends[0].reshape(-1, *([1] * (x.dim() - 1))), torch.zeros(n, dtype=x.dtype, device=x.device))
    with torch.no_grad():
        y_traj, delta_traj = odeint(
            rhs, state0, times, rtol=rtol, atol=atol, method=method, options=options
        )
        x_end = y_traj[-1] * ends[1].reshape(-1, *([1] * (x.dim() - 1)))
        out = sde.prior_log_prob(x_end) + delta_traj[-1]
    if return_nfe:
        return LogProbResult(out, count[0])
    return out


def bits_per_dim(
    log_prob_values: Tensor, n_dims: int, levels: int = 256, data_width: float = 1.0
) -> Tensor:
    """Bits per dimension of dequantised data: bpd = -(log p(y) - D log(levels)) / (D log 2).

    y = (x_int + u) / levels in [0, 1]^D with u ~ U[0, 1)^D (uniform dequantisation), so
    -(log p(y) - D log levels) / log 2 is the code length of x_int in bits, an upper bound on
    -log2 P(x_int).  For a model of the data mapped affinely onto an interval of width
    ``data_width`` (2 for [-1, 1]), log p(y) = log p_model(x) + D log(data_width).
    """
    d = _checks.positive_int("n_dims", n_dims)
    lv = _checks.positive_int("levels", levels, minimum=2)
    w = _checks.positive("data_width", data_width)
    lp = torch.as_tensor(log_prob_values)
    log_p_y = lp + d * math.log(w)
    return -(log_p_y - d * math.log(lv)) / (d * math.log(2))


class BitsPerDim(NamedTuple):
    """``dequantized_bits_per_dim``: per row, the variational bound in bits per dimension, the
    log-density log p(y) of the dequantised points in [0, 1)^D (the mean over the draws), and nfe."""

    variational_bound: Tensor
    log_prob_dequantized: Tensor
    nfe: int


def dequantized_bits_per_dim(
    score_fn: ScoreFn | torch.nn.Module,
    sde: SDE,
    x: Tensor,
    levels: int = 256,
    data_range: tuple[float, float] = (0.0, 1.0),
    n_draws: int = 1,
    generator: torch.Generator | None = None,
    **log_prob_options: Any,
) -> BitsPerDim:
    """Bits per dimension of quantised data under uniform dequantisation (Theis et al. 2016), the
    variational bound

        -log2 P(x_int) / D <= -(E_u[log p(y)] - D log levels) / (D log 2),   y = (x_int + u) / levels,

    u ~ U[0, 1)^D (Jensen over the cell of x_int, of volume levels^-D); always >= 0 for a density
    with p(y) <= levels^D on each cell, unlike the log-density of the quantised points themselves,
    which a continuous model can push to +inf. ``x`` holds the quantised values k / (levels - 1),
    k = 0..levels-1, as the image loaders return them (checked: already dequantised or unscaled
    data is refused with a DataError). The model sees y mapped affinely onto ``data_range``
    (lo + (hi - lo) y; (-1, 1) for a model trained on [-1, 1] images), so log p(y) = log p_model
    + D log(hi - lo). E_u is estimated with ``n_draws`` draws per row from ``generator``, solved
    in one batch; the remaining options go to ``log_prob`` (``generator`` also draws its
    Hutchinson probes).
    """
    x = _checks.batch("x", x)
    lv = _checks.positive_int("levels", levels, minimum=2)
    draws = _checks.positive_int("n_draws", n_draws)
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConfigError(f"data_range must be (lo, hi) with lo < hi, got {data_range!r}")
    k = x.double() * (lv - 1)
    if not torch.isfinite(k).all() or float(k.min()) < -1e-3 or float(k.max()) > lv - 1 + 1e-3 or \
            float((k - k.round()).abs().max()) > 1e-3:
        raise DataError(f"x must hold quantised values k / {lv - 1} in [0, 1] (k = 0..{lv - 1}, as the image "
                        "loaders return them); for data already dequantised or in another range, convert its "
                        "log_prob with bits_per_dim")
    n, d = x.shape[0], math.prod(x.shape[1:])
    reps = x.repeat_interleave(draws, dim=0)
    y = (k.round().to(x.dtype).repeat_interleave(draws, dim=0) + rand_like(reps, generator)) / lv
    res = log_prob(score_fn, sde, lo + (hi - lo) * y, generator=generator, return_nfe=True, **log_prob_options)
    log_p_y = (res.log_prob + d * math.log(hi - lo)).reshape(n, draws).mean(1)
    return BitsPerDim(bits_per_dim(log_p_y, d, levels=lv), log_p_y, res.nfe)
