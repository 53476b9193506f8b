"""Drawing samples from a trained model with any sampler, with defaults taken from its run.

``generate(model, run_info, n, sampler=None, seed=0)`` picks the sampler the model's
conditioning calls for (Langevin for an unconditional score or energy model, annealed Langevin
for a noise-conditional one, predictor-corrector for a time-conditional one), starts it where
the method starts (a uniform box over the data range for Langevin and NCSN, the SDE prior for
score SDEs), and returns samples in data space with the data's sample shape: a model trained
on standardised data (``scorematch.models.Standardized``) is sampled in its own space, where
the run's schedule and data range hold, and its samples mapped back, x = mu + sd z.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scorematch._checks import choice, positive_int
from scorematch.errors import ConfigError, ScoreMatchWarning
from scorematch.models import Standardized
from scorematch.run.limits import check_sampling
from scorematch.run.validate import check_seed
from scorematch.samplers import SAMPLER_NAMES

DEFAULT_SAMPLER = {"none": "langevin", "sigma": "annealed", "time": "pc"}
CONTINUOUS = ("euler_maruyama", "reverse_diffusion", "pc", "ode")
#: the sampler function behind each name
FUNCTIONS = {"langevin": "langevin", "mala": "mala", "annealed": "annealed_langevin",
             "euler_maruyama": "euler_maruyama", "reverse_diffusion": "reverse_diffusion", "pc": "pc", "ode": "ode"}
#: arguments generate sets itself (not options)
_OWN = {"score_fn", "energy_fn", "x0", "sde", "shape_or_x0", "sigmas", "generator", "return_trajectory", "device",
        "dtype", "progress", "callback"}


def sampler_options(name: str) -> list[str]:
    """The options sampler ``name`` takes (its keyword arguments that ``generate`` passes on)."""
    from scorematch import samplers

    params = inspect.signature(getattr(samplers, FUNCTIONS[name])).parameters
    return [p for p in params if p not in _OWN]


def check_options(name: str, options: dict[str, Any]) -> None:
    """ConfigError naming the options that sampler ``name`` does not take (e.g. ``eps`` for langevin)."""
    valid = sampler_options(name)
    bad = [k for k in options if k not in valid]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise ConfigError(f"{flags} do{'es' if len(bad) == 1 else ''} not apply to sampler {name!r}, which takes "
                          f"{', '.join(valid)}")


def resolve_sampler(model: nn.Module, sampler: str | None = None, options: dict[str, Any] | None = None) -> str:
    """The sampler ``generate`` will run for ``model`` (``sampler``, or the default its
    conditioning calls for), after checking that it fits the model and takes ``options``;
    ConfigError with the fix otherwise."""
    cond = getattr(model, "conditioning", "none")
    name = sampler or DEFAULT_SAMPLER[cond]
    choice("sampler", name, SAMPLER_NAMES)
    check_options(name, options or {})
    if cond == "none" and name in CONTINUOUS + ("annealed",):
        raise ConfigError(
            f"sampler {name!r} needs a noise- or time-conditional model; this model is unconditional: "
            "use --sampler langevin (or mala for an energy model)"
        )
    if cond != "none" and name in ("langevin", "mala"):
        raise ConfigError(f"sampler {name!r} is for unconditional models; use annealed, euler_maruyama, pc or ode")
    if name == "mala" and not hasattr(model, "energy"):
        raise ConfigError("mala needs an energy model (--model energy); use --sampler langevin")
    if name == "annealed" and cond != "sigma":
        raise ConfigError("the annealed sampler needs a noise-conditional (NCSN) model; use pc or ode")
    return name


def count_nonfinite(x: torch.Tensor) -> int:
    """Samples (rows) with a NaN or inf entry."""
    return int((~torch.isfinite(x.flatten(1)).all(1)).sum())


def _is_flat_model(model: nn.Module, shape: tuple[int, ...]) -> bool:
    return len(shape) > 1 and getattr(model, "dim", None) == math.prod(shape)


def generate(model: nn.Module, run_info: dict[str, Any], n: int, sampler: str | None = None, seed: int = 0,
             return_trajectory: bool = False, progress: bool = False, callback: Callable[[dict], None] | None = None,
             warn_nonfinite: bool = True, **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n samples from ``model`` (a module with ``score``) using ``run_info`` (run.json contents).

    Options go to the sampler (e.g. ``step_size``, ``n_steps`` for langevin; ``eps``,
    ``steps_per_sigma`` for annealed; ``n_steps``, ``snr`` for pc); one it does not take is a
    ConfigError. ``progress`` and ``callback`` go to the sampler too (the callback sees the
    sampler's own space: standardised for a ``Standardized`` model). Returns a tensor of shape
    (n, *sample_shape) in data space, and the trajectory too when ``return_trajectory``. Samples
    with NaN or inf entries are returned as they are, with a ScoreMatchWarning giving their count
    (unless ``warn_nonfinite`` is False: the caller reports them).
    """
    n = positive_int("n", n)
    check_seed("seed", seed)
    name = resolve_sampler(model, sampler, options)
    outer = model if isinstance(model, Standardized) else None
    inner = outer.model if outer is not None else model
    out = _sample(inner, run_info, n, name, seed, return_trajectory, progress, callback, options)
    x, traj = (out if return_trajectory else (out, None))
    if outer is not None:
        x = outer.to_data_space(x)
        traj = outer.to_data_space(traj) if traj is not None else None
    bad = count_nonfinite(x) if warn_nonfinite else 0
    if bad:
        warnings.warn(f"{bad} of {n} samples have NaN or inf entries (sampler {name}); try a smaller step, more "
                      "steps, or a model trained on standardised data", ScoreMatchWarning, stacklevel=2)
    return (x, traj) if return_trajectory else x


def _sample(model: nn.Module, run_info: dict[str, Any], n: int, name: str, seed: int, return_trajectory: bool,
            progress: bool, callback: Callable[[dict], None] | None,
            options: dict[str, Any]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``generate`` in the model's own space."""
    from scorematch import samplers
    from scorematch.sde import get_sde, sigma_conditioned, ve_from_sigmas

    cond = getattr(model, "conditioning", "none")
    data, schedule = run_info["data"], run_info.get("schedule", {})
    extra = {"progress": progress, "callback": callback}
    shape = tuple(data["sample_shape"])
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    check_sampling(n, shape, device)
    g = torch.Generator(device=device).manual_seed(int(seed))
    flat = _is_flat_model(model, shape)
    work_shape = (math.prod(shape),) if flat else shape
    lo, hi = float(data["lo"]), float(data["hi"])

    def uniform_start() -> torch.Tensor:
        """Langevin and NCSN start from a uniform box over the data range (SDEs from their prior)."""
        return lo + (hi - lo) * torch.rand((n, *work_shape), generator=g, device=device, dtype=dtype)

    if name == "langevin":
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        out = samplers.langevin(model, uniform_start(), generator=g, return_trajectory=return_trajectory,
                                **extra, **opts)
    elif name == "mala":
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        res = samplers.mala(model, uniform_start(), generator=g, return_trajectory=return_trajectory,
                            **extra, **opts)
        out = (res.samples, res.trajectory) if return_trajectory else res.samples
    elif name == "annealed":
        opts = {"eps": schedule["eps"], "steps_per_sigma": schedule["steps_per_sigma"], **options}
        out = samplers.annealed_langevin(model, uniform_start(), schedule["sigmas"], generator=g,
                                         return_trajectory=return_trajectory, **extra, **opts)
    else:
        if cond == "sigma":
            sde = ve_from_sigmas(schedule["sigmas"])
            score_fn = sigma_conditioned(model, sde)
        else:
            sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
            score_fn = model
        fn = getattr(samplers, name)
        res = fn(score_fn, sde, (n, *work_shape), generator=g, return_trajectory=return_trajectory,
                 device=device, dtype=dtype, **extra, **options)
        if name == "ode":
            out = (res.samples, res.trajectory) if return_trajectory else res.samples
        else:
            out = res
    x, traj = (out if return_trajectory else (out, None))
    x = x.reshape(n, *shape)
    if data.get("kind") == "image":
        x = x.clamp(0.0, 1.0)
    return (x, traj) if return_trajectory else x
