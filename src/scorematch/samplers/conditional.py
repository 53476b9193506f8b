"""Conditional generation with any sampler: classifier-free guidance (Ho & Salimans 2022) and
inpainting / imputation by replacement (Song et al. 2021, Appendix I).

Both wrap the score function; the sampler itself is unchanged:

- ``guided(score_fn, label, guidance)`` is s(x, sigma) = (1 + w) s(x, sigma, y) - w s(x, sigma, null)
  for a class-conditional model called as ``model.score(x, sigma, labels)`` (labels int64 of
  shape (n,); ``model.null_label`` the label meaning "no label");
- ``inpaint(sampler, score_fn, x, sigmas, known, mask)`` fills the coordinates where ``mask`` is
  False given the values ``known`` where it is True: before every score evaluation at noise level
  sigma the known coordinates are replaced by known + sigma z (a fresh z ~ N(0, I) each time), a
  draw of the known part's own noisy marginal, and the result carries the known values exactly.
  ``inpaint_sde`` does the same for the time-conditional score-SDE samplers (known part
  m(t) known + std(t) z). Replacement only approximates the conditional p(x_unknown | x_known);
  ``inpaint_smc`` (sequential Monte Carlo over the same steps, Trippe et al. 2023) converges to it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._random import Generators, per_row, rand, randn, randn_like
from scorematch.errors import ConfigError, DataError
from scorematch.sde import SDE

__all__ = ["guided", "inpaint", "inpaint_sde", "inpaint_smc", "replace_known"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _labels(label: int | Tensor, n: int, device: torch.device, name: str) -> Tensor:
    if isinstance(label, Tensor):
        if label.dtype.is_floating_point or label.dtype == torch.bool:
            raise ConfigError(f"{name} must be an integer class index, got dtype {label.dtype}")
        if label.dim() == 0:
            return label.to(device=device, dtype=torch.int64).expand(n)
        if label.shape != (n,):
            raise ConfigError(f"{name} must be an int or an int64 tensor of shape ({n},), got {tuple(label.shape)}")
        return label.to(device=device, dtype=torch.int64)
    if isinstance(label, bool) or not isinstance(label, int):
        raise ConfigError(f"{name} must be an integer class index, got {label!r}")
    return torch.full((n,), label, dtype=torch.int64, device=device)


def guided(
    score_fn: Any, label: int | Tensor, guidance: float = 0.0, null_label: int | None = None
) -> ScoreFn:
    """Classifier-free guidance: the noise-conditional score

        s_w(x, sigma) = (1 + w) s(x, sigma, y) - w s(x, sigma, null),   w = ``guidance`` >= 0,

    from a class-conditional ``score_fn(x, sigma, labels)`` (or a model with such a ``.score``).
    ``label`` is an int or an int64 tensor of shape (n,); ``null_label`` defaults to the model's
    ``null_label`` attribute. w = 0 is the conditional score (one evaluation per call); for w > 0
    both terms come from one evaluation of the doubled batch.
    """
    fn = getattr(score_fn, "score", score_fn)
    if not callable(fn):
        raise ConfigError("score_fn must be callable as score_fn(x, sigma, labels) or have such a .score")
    w = float(guidance)
    if not (w >= 0 and w < float("inf")):
        raise ConfigError(f"guidance must be a finite number >= 0, got {guidance!r}")
    if w > 0 and null_label is None:
        null_label = getattr(score_fn, "null_label", None)
        if null_label is None:
            raise ConfigError("guidance > 0 needs the unconditional label: pass null_label=... or give the "
                              "model a null_label attribute")
    _labels(label, label.shape[0] if isinstance(label, Tensor) and label.dim() else 1, torch.device("cpu"), "label")

    def score(x: Tensor, sigma: Tensor | float) -> Tensor:
        n = x.shape[0]
        y = _labels(label, n, x.device, "label")
        sig = _checks.per_row("sigma", sigma, x)
        if w == 0:
            return fn(x, sig, y)
        null = _labels(null_label, n, x.device, "null_label")
        both = fn(torch.cat([x, x]), torch.cat([sig, sig]), torch.cat([y, null]))
        cond, uncond = both[:n], both[n:]
        return torch.lerp(uncond, cond, 1 + w)

    return score


def _mask_like(mask: Tensor, known: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise DataError(f"mask must be a boolean tensor, got {type(mask).__name__}")
    m = mask.to(device=known.device, dtype=torch.bool)
    try:
        m = torch.broadcast_to(m, known.shape)
    except RuntimeError:
        raise DataError(f"mask of shape {tuple(mask.shape)} does not broadcast to the data's shape "
                        f"{tuple(known.shape)}; use a mask of shape (D,), (C, H, W) or that of x") from None
    return m


def _check_known(known: Tensor, x_shape: Sequence[int]) -> Tensor:
    known = _checks.batch("known", known)
    if tuple(known.shape) != tuple(x_shape):
        raise DataError(f"known must have the shape of the samples {tuple(x_shape)}, got {tuple(known.shape)}")
    return known


def replace_known(
    score_fn: Any, known: Tensor, mask: Tensor, sde: SDE | None = None,
    generator: Generators = None, fixed_noise: bool = False,
) -> ScoreFn:
    """The score with the known coordinates replaced before every evaluation:

        s~(x, c) = s(x', c),  x' = where(mask, m known + std z, x),  z ~ N(0, I) fresh per call,

    with (m, std) = (1, sigma) for a noise-conditional score (c = sigma) and (m(t), std(t)) of
    ``sde`` for a time-conditional one (c = t). ``known`` has the shape of the batch (values
    where ``mask`` is False are ignored); ``mask`` (True = known) broadcasts to it. With
    ``fixed_noise`` one z is drawn once and kept, so the known part follows the smooth path
    known + sigma z (the probability-flow path of a known point) and the wrapped field is
    deterministic, as an adaptive ODE solver needs.
    """
    fn = _checks.score_callable(score_fn, "score_fn(x, sigma)" if sde is None else "score_fn(x, t)")
    known = _checks.batch("known", known)
    mask = _mask_like(mask, known)
    z_fixed = randn_like(known, generator) if fixed_noise else None

    def score(x: Tensor, cond: Tensor | float) -> Tensor:
        if x.shape != known.shape:
            raise DataError(f"the sampler's x {tuple(x.shape)} and known {tuple(known.shape)} differ in shape")
        c = _checks.per_row("t" if sde is not None else "sigma", cond, x)
        mean, std = (torch.ones_like(c), c) if sde is None else (sde.mean_coeff(c), sde.marginal_std(c))
        z = z_fixed if z_fixed is not None else randn_like(x, generator)
        shape = (x.shape[0], *([1] * (x.dim() - 1)))
        noisy = mean.to(x).reshape(shape) * known + std.to(x).reshape(shape) * z
        return fn(torch.where(mask, noisy, x), c)

    return score


def _shared_steps(sampler: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with per_sample=False for a sampler that steps each row on its own (it would call
    the score on a subset of the rows, which the replaced known values, one per row, do not fit),
    unless the caller chose."""
    try:
        takes = "per_sample" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        takes = False
    return {"per_sample": False, **options} if takes else options


def inpaint(
    sampler: Callable[..., Any],
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    known: Tensor,
    mask: Tensor,
    generator: Generators = None,
    resample: int = 1,
    fixed_noise: bool = False,
    **options: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fill the masked-out part of ``known`` by replacement (Song et al. 2021, Appendix I) with a
    noise-conditional ``sampler`` (heun, euler, euler_ancestral, ddim, dpm_solver,
    continuous_langevin or annealed_langevin):
    ``sampler(replace_known(score_fn, known, mask), x, sigmas, generator=generator, **options)``,
    then the known coordinates set to ``known`` exactly.

    ``resample = U > 1`` adds the resampling of Lugmayr et al. (2022, RePaint): each step
    sigma_i -> sigma_{i+1} (one call of a denoising sampler on [sigma_i, sigma_{i+1}]) is repeated
    U times, the state sent back to sigma_i by x <- x + sqrt(sigma_i^2 - sigma_{i+1}^2) z in between,
    so that the unknown part can adjust to the known one (U times the evaluations; a multistep
    sampler such as dpm_solver falls back to its first-order step). ``fixed_noise`` keeps one
    noise draw for the known part (see ``replace_known``).

    ``x`` is the start at the scale of sigmas[0] (shape of ``known``: (n, D) or (n, C, H, W));
    ``mask`` is True where a coordinate is known and broadcasts to that shape. A sampler that
    steps each row on its own (``per_sample``) steps the batch as a whole here, unless
    ``per_sample`` is given: the replacement holds one known value per row. Returns the
    completed batch (or (batch, trajectory) if the sampler returns one). Replacement is an
    approximation of the conditional: see ``inpaint_smc`` for a sampler that converges to it.
    """
    from scorematch.samplers import catalogue

    known = _check_known(known, _checks.batch("x", x).shape)
    mask = _mask_like(mask, known)
    resample = _checks.positive_int("resample", resample)
    wrapped = replace_known(score_fn, known, mask, None, generator, fixed_noise)
    options = _shared_steps(sampler, options)
    if resample == 1:
        out = sampler(wrapped, x, sigmas, generator=generator, **options)
        if isinstance(out, tuple):
            return torch.where(mask, known, out[0]), out[1]
        return torch.where(mask, known, out)
    denoising = catalogue.entries(catalogue.DENOISING)
    if sampler not in [e.resolved() for e in denoising]:
        raise ConfigError(f"resample > 1 needs one of the denoising samplers ({', '.join(e.name for e in denoising)})")
    unused = sorted({"callback", "progress", "return_trajectory"} & set(options))
    if unused:
        raise ConfigError(f"{', '.join(unused)} do not apply with resample > 1")
    levels = _checks.sampler_sigmas(sigmas).tolist()
    for hi, lo in zip(levels[:-1], levels[1:], strict=True):
        for u in range(resample):
            x = sampler(wrapped, x, [hi, lo], generator=generator, **options)
            if u < resample - 1:
                x = x.add(randn_like(x, generator), alpha=math.sqrt(hi**2 - lo**2))
    return torch.where(mask, known, x)


def _systematic(weights: Tensor, generator: Generators) -> Tensor:
    """Systematic resampling: indices j_k with u_k = (k + u) / P, u ~ U[0, 1), in each row of (G, P)."""
    g, p = weights.shape
    u = rand((g, 1), generator, torch.float64, weights.device)
    points = (u + torch.arange(p, dtype=torch.float64, device=weights.device)) / p
    cdf = torch.cumsum(weights, dim=1)
    return torch.searchsorted(cdf / cdf[:, -1:], points).clamp_(max=p - 1)


def inpaint_smc(
    score_fn: Any,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    known: Tensor,
    mask: Tensor,
    particles: int | None = None,
    generator: Generators = None,
    ess_threshold: float = 0.5,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Inpainting by sequential Monte Carlo over the replacement sampler (Trippe et al. 2023,
    SMCDiff), which converges to the conditional p(x_unknown | x_known) as particles grow.

    The rows form groups of ``particles`` (default: all n rows, one group); the rows of a group
    share their known values y. Per group one forward path of the known part is drawn,
    y_N = y, y_i = y_{i+1} + sqrt(sigma_i^2 - sigma_{i+1}^2) z. Step i sets the known
    coordinates to y_i, takes the ancestral step (``euler_ancestral`` with eta = 1)

        x' = m + sigma_up z,  m = x + sigma_i (sigma_i - sigma_down) s(x, sigma_i),

    and weights each particle by the step's density of the known part's next value,
    log w += -||y_{i+1} - m_known||^2 / (2 sigma_up^2); a group whose effective sample size
    1 / sum w^2 falls below ``ess_threshold`` x particles is resampled (systematic), and every
    group once more at the end. The result carries duplicates from the resampling.
    ``callback`` gets {i, sigma, sigma_next, x, ess} per step (ess of shape (groups,)). NFE N.
    The particles of a group interact through the resampling, so ``generator`` is one
    torch.Generator or per-group generators (``RowGenerators`` or a list, one per group: every
    draw of group k, its path, particle noise and resampling, then comes from stream k, so a group
    does not depend on the others).
    """
    x = _checks.batch("x", x).detach()
    known = _check_known(known, x.shape)
    mask = _mask_like(mask, known)
    n = x.shape[0]
    p = n if particles is None else _checks.positive_int("particles", particles, minimum=2)
    if n % p:
        raise ConfigError(f"the batch of {n} rows must be whole groups of particles={p}")
    thr = float(ess_threshold)
    if not 0 <= thr <= 1:
        raise ConfigError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}")
    score = _checks.score_callable(score_fn, "score_fn(x, sigma)")
    levels = _checks.sampler_sigmas(sigmas).tolist()
    groups = n // p
    rows = per_row(generator)
    if rows is not None and len(rows) != groups:
        raise ConfigError(f"inpaint_smc couples the particles of a group (resampling): give one torch.Generator "
                          f"or one per group ({groups}), got {len(rows)} per-row generators")
    y = torch.where(mask, known, 0).reshape(groups, p, *known.shape[1:])
    if not bool((y == y[:, :1]).all()):
        raise DataError("the rows of a group of particles must share their known values")
    path = [y[:, 0]]  # y_N, then backwards
    for hi, lo in zip(levels[-2::-1], levels[:0:-1], strict=True):
        path.append(path[-1] + math.sqrt(hi**2 - lo**2) * randn_like(path[-1], generator))
    path.reverse()
    view = (groups, p, *x.shape[1:])
    log_w = torch.zeros(groups, p, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
            x = torch.where(mask, path[i][:, None].expand(view).reshape(x.shape), x)
            up = sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2))
            down = math.sqrt(max(0.0, sigma_next**2 - up**2))
            mean = torch.add(x, score(x, torch.full((n,), sigma, dtype=x.dtype, device=x.device)),
                             alpha=sigma * (sigma - down))
            if up > 0:
                miss = torch.where(mask, path[i + 1][:, None].expand(view).reshape(x.shape) - mean, 0)
                log_w -= miss.reshape(groups, p, -1).double().pow(2).sum(-1) / (2 * up**2)
                z = randn((groups, p, *x.shape[1:]), generator, mean.dtype, mean.device).reshape(mean.shape)
                x = mean.add(z, alpha=up)
            else:
                x = mean
            w = torch.softmax(log_w, dim=1)
            ess = 1 / w.pow(2).sum(1)
            if callback is not None:
                callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "ess": ess})
            low = ess < thr * p
            if i == len(levels) - 2:
                low = torch.ones_like(low)
            # per group, u is drawn at every step, so that a group's stream never depends on the others
            if rows is not None or bool(low.any()):
                idx = _systematic(w, generator)
                keep = torch.arange(p, device=x.device).expand(groups, p)
                idx = torch.where(low[:, None], idx, keep)
                x = torch.gather(x.reshape(groups, p, -1), 1, idx[..., None].expand(-1, -1, x[0].numel()))
                x = x.reshape(n, *known.shape[1:])
                log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
    return torch.where(mask, known, x)


def inpaint_sde(
    sampler: Callable[..., Any],
    score_fn: Any,
    sde: SDE,
    known: Tensor,
    mask: Tensor,
    generator: Generators = None,
    **options: Any,
) -> Any:
    """The same for a time-conditional score and a score-SDE sampler (euler_maruyama,
    reverse_diffusion, pc, ode): ``sampler(replace_known(score_fn, known, mask, sde), start, sde)``
    from start ~ the prior of ``sde`` (shape of ``known``), then the known values put back; for
    ``ode`` the known part's noise is drawn once (``fixed_noise``), so its field stays smooth.
    Returns what the sampler returns (the samples, or (samples, trajectory)) with the samples
    completed."""
    if not isinstance(sde, SDE):
        raise ConfigError(f"sde must be a scorematch.sde.SDE, got {type(sde).__name__}")
    known = _checks.batch("known", known)
    mask = _mask_like(mask, known)
    start = sde.prior_sample(known.shape, generator=generator, dtype=known.dtype, device=known.device)
    from scorematch.samplers.sde import ode

    wrapped = replace_known(score_fn, known, mask, sde, generator, fixed_noise=sampler is ode)
    out = sampler(wrapped, start, sde, generator=generator, **_shared_steps(sampler, options))
    if isinstance(out, tuple):
        return torch.where(mask, known, out[0]), out[1]
    return torch.where(mask, known, out)
