"""Drawing samples from a trained model with any sampler, with defaults taken from its run.

``generate(model, run_info, n, sampler=None, seed=0)`` picks the sampler the model's
conditioning calls for (Langevin for an unconditional score or energy model, annealed Langevin
for a noise-conditional one, predictor-corrector for a time-conditional one), starts it where
the method starts (a uniform box over the data range for Langevin and NCSN, the SDE prior for
score SDEs), and returns samples in data space with the data's sample shape.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from scorematch._checks import choice, positive_int
from scorematch.errors import ConfigError
from scorematch.run.limits import check_sampling
from scorematch.run.validate import check_seed
from scorematch.samplers import SAMPLER_NAMES

DEFAULT_SAMPLER = {"none": "langevin", "sigma": "annealed", "time": "pc"}
CONTINUOUS = ("euler_maruyama", "reverse_diffusion", "pc", "ode")


def _is_flat_model(model: nn.Module, shape: tuple[int, ...]) -> bool:
    return len(shape) > 1 and getattr(model, "dim", None) == math.prod(shape)


def generate(model: nn.Module, run_info: dict[str, Any], n: int, sampler: str | None = None, seed: int = 0,
             return_trajectory: bool = False, **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n samples from ``model`` (a module with ``score``) using ``run_info`` (run.json contents).

    Options go to the sampler (e.g. ``step_size``, ``n_steps`` for langevin; ``eps``,
    ``steps_per_sigma`` for annealed; ``n_steps``, ``snr`` for pc). Returns a tensor of shape
    (n, *sample_shape), and the trajectory too when ``return_trajectory``.
    """
    from scorematch import samplers
    from scorematch.sde import get_sde, sigma_conditioned, ve_from_sigmas

    n = positive_int("n", n)
    check_seed("seed", seed)
    cond = getattr(model, "conditioning", "none")
    name = sampler or DEFAULT_SAMPLER[cond]
    choice("sampler", name, SAMPLER_NAMES)
    data, schedule = run_info["data"], run_info.get("schedule", {})
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

    if cond == "none" and name in CONTINUOUS + ("annealed",):
        raise ConfigError(
            f"sampler {name!r} needs a noise- or time-conditional model; this model is unconditional: "
            "use --sampler langevin (or mala for an energy model)"
        )
    if cond != "none" and name in ("langevin", "mala"):
        raise ConfigError(f"sampler {name!r} is for unconditional models; use annealed, euler_maruyama, pc or ode")
    if name == "langevin":
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        out = samplers.langevin(model.score, uniform_start(), generator=g, return_trajectory=return_trajectory, **opts)
    elif name == "mala":
        if not hasattr(model, "energy"):
            raise ConfigError("mala needs an energy model (--model energy); use --sampler langevin")
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        res = samplers.mala(model.energy, uniform_start(), generator=g, return_trajectory=return_trajectory, **opts)
        out = (res.samples, res.trajectory) if return_trajectory else res.samples
    elif name == "annealed":
        if cond != "sigma":
            raise ConfigError("the annealed sampler needs a noise-conditional (NCSN) model; use pc or ode")
        opts = {"eps": schedule["eps"], "steps_per_sigma": schedule["steps_per_sigma"], **options}
        out = samplers.annealed_langevin(model.score, uniform_start(), schedule["sigmas"], generator=g,
                                         return_trajectory=return_trajectory, **opts)
    else:
        if cond == "sigma":
            sde = ve_from_sigmas(schedule["sigmas"])
            score_fn = sigma_conditioned(model, sde)
        else:
            sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
            score_fn = model.score
        fn = getattr(samplers, name)
        res = fn(score_fn, sde, (n, *work_shape), generator=g, return_trajectory=return_trajectory,
                 device=device, dtype=dtype, **options)
        if name == "ode":
            out = (res.samples, res.trajectory) if return_trajectory else res.samples
        else:
            out = res
    x, traj = (out if return_trajectory else (out, None))
    x = x.reshape(n, *shape)
    if data.get("kind") == "image":
        x = x.clamp(0.0, 1.0)
    return (x, traj) if return_trajectory else x
