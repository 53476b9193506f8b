"""Drawing samples from a trained model with any sampler, with defaults taken from its run.

``generate(model, run_info, n, sampler=None, seed=0)`` picks the default sampler of the model's
kind (``DEFAULT_SAMPLER``), starts it where the method starts (a uniform box over the data
range for Langevin and annealed Langevin, the SDE prior for the score-SDE samplers, the
model's noise-level view's prior N(0, sigma_max^2 I) for the denoising samplers heun, euler,
euler_ancestral, ddim, dpm_solver and continuous_langevin), and returns samples in data space
with the data's sample shape: a model trained on standardised data
(``scorematch.models.Standardized``) is sampled in its own space, where the run's schedule and
data range hold, and its samples mapped back, x = mu + sd z.

The denoising samplers see every noise- or time-conditional model through
``scorematch.denoise.sigma_view`` over the noise range of its run (NCSN: sigma_L .. sigma_1;
EDM: the schedule's sigma_min .. sigma_max; SDE models: sigma(1e-3) .. sigma(1) of their SDE),
on ``karras_sigmas(n_steps, sigma_min, sigma_max)`` and a final 0 (continuous_langevin:
``linear_sigmas``). A class-conditional model is sampled for class ``label`` with
classifier-free guidance of weight ``guidance`` (``scorematch.samplers.guided``), or
unconditionally (the null label) without a label.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from scorematch._checks import choice, positive_int
from scorematch.errors import ConfigError, ScoreMatchWarning
from scorematch.models import Standardized
from scorematch.run.folder.validate import check_seed
from scorematch.run.system.limits import check_sampling
from scorematch.samplers import DENOISING_SAMPLERS, SAMPLER_NAMES

#: the default sampler of each kind of model (``model_kind``) and the settings it runs with when no
#: sampler is named: the sampler that reaches the quality bar of ``python -m benchmarks.nfe_quality``
#: with the fewest score evaluations on the trained 2-D models of that kind, and the steps it needed
#: there or on the digits model of that kind (docs/benchmarks.md). NCSN keeps annealed Langevin with
#: the run's own schedule: it is the only sampler that reaches the bar on both toys with an NCSN model.
KIND_DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "score": ("langevin", {}), "energy": ("langevin", {}), "ncsn": ("annealed", {}),
    "ve": ("dpm_solver", {"n_steps": 10}), "vp": ("dpm_solver", {"order": 3, "n_steps": 50}),
    "subvp": ("dpm_solver", {"n_steps": 50}), "edm": ("dpm_solver", {"n_steps": 20})}
DEFAULT_SAMPLER = {kind: name for kind, (name, _) in KIND_DEFAULTS.items()}
#: the default number of noise levels (``n_steps``) of each denoising sampler: heun 18 (35
#: evaluations, EDM's setting), the first-order samplers about where they reach the quality of
#: heun on the analytic mixtures (docs/samplers)
DEFAULT_STEPS = {"heun": 18, "dpm_solver": 18, "euler": 50, "ddim": 50, "euler_ancestral": 100,
                 "continuous_langevin": 1000}
#: the classifier-free guidance weight w of a class-conditional model sampled with a label
DEFAULT_GUIDANCE = 1.0
#: at most this many noise levels for a denoising sampler (each one is a step)
MAX_LEVELS = 10**6
DENOISING = tuple(DENOISING_SAMPLERS)
CONTINUOUS = ("euler_maruyama", "reverse_diffusion", "pc", "ode")
#: the sampler function behind each name
FUNCTIONS = {"langevin": "langevin", "mala": "mala", "annealed": "annealed_langevin",
             "euler_maruyama": "euler_maruyama", "reverse_diffusion": "reverse_diffusion", "pc": "pc", "ode": "ode",
             **{name: name for name in DENOISING}}
#: arguments generate sets itself (not options)
_OWN = {"score_fn", "energy_fn", "x0", "sde", "shape_or_x0", "sigmas", "generator", "return_trajectory", "device",
        "dtype", "progress", "callback"}
_CONDITIONAL = "annealed (NCSN), heun, euler, euler_ancestral, ddim, dpm_solver, euler_maruyama, pc or ode"


def model_kind(model: nn.Module, run_info: dict[str, Any] | None = None) -> str:
    """The kind of a trained model, the key of ``DEFAULT_SAMPLER``: "score" or "energy"
    (unconditional), "ncsn" or "edm" (noise-conditional: an NCSN schedule of sigmas, or EDM's
    sigma_data), "ve", "vp" or "subvp" (time-conditional, by the run's SDE)."""
    cond = getattr(model, "conditioning", "none")
    if cond == "none":
        return "energy" if hasattr(model, "energy") else "score"
    info = run_info if run_info is not None else getattr(model, "run_info", None) or {}
    schedule = info.get("schedule", {})
    if cond == "sigma":
        return "edm" if "sigma_data" in schedule else "ncsn"
    return schedule.get("sde", "ve")


def sampler_options(name: str) -> list[str]:
    """The options sampler ``name`` takes (its keyword arguments that ``generate`` passes on;
    for a denoising sampler ``n_steps``, its number of noise levels, and its own options)."""
    if name in DENOISING_SAMPLERS:
        return ["n_steps", *DENOISING_SAMPLERS[name][1]]
    from scorematch import samplers

    params = inspect.signature(getattr(samplers, FUNCTIONS[name])).parameters
    return [p for p in params if p not in _OWN]


def check_options(name: str, options: dict[str, Any]) -> None:
    """ConfigError naming the options that sampler ``name`` does not take (e.g. ``eps`` for langevin)
    and those it takes."""
    valid = sampler_options(name)
    bad = [k for k in options if k not in valid]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        takes = ", ".join(valid) if valid else "no options"
        raise ConfigError(f"{flags} do{'es' if len(bad) == 1 else ''} not apply to sampler {name!r}, which takes "
                          f"{takes}")


def resolve_sampler(model: nn.Module, sampler: str | None = None, options: dict[str, Any] | None = None,
                    run_info: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The sampler ``generate`` will run for ``model`` and its options: ``sampler`` and ``options``,
    or with ``sampler`` None the default of the model's kind with its settings (``KIND_DEFAULTS``)
    under ``options``; checked to fit the model (ConfigError with the fix otherwise)."""
    kind = model_kind(model, run_info)
    options = dict(options or {})
    chosen = sampler is not None
    if not chosen:
        sampler, defaults = KIND_DEFAULTS[kind]
        options = {**defaults, **options}
    name = sampler
    choice("sampler", name, SAMPLER_NAMES)
    try:
        check_options(name, options)
    except ConfigError as err:
        if chosen:
            raise
        raise ConfigError(f"{err} (the default sampler of this run; name the sampler the option is for with "
                          "--sampler)") from None
    unconditional = kind in ("score", "energy")
    if unconditional and name not in ("langevin", "mala"):
        raise ConfigError(
            f"sampler {name!r} needs a noise- or time-conditional model; this model is unconditional: "
            "use --sampler langevin (or mala for an energy model)"
        )
    if not unconditional and name in ("langevin", "mala"):
        raise ConfigError(f"sampler {name!r} is for unconditional models; use {_CONDITIONAL}")
    if name == "mala" and not hasattr(model, "energy"):
        raise ConfigError("mala needs an energy model (--model energy); use --sampler langevin")
    if name == "annealed" and kind != "ncsn":
        raise ConfigError(f"the annealed sampler needs a noise-conditional (NCSN) model's noise levels; this is "
                          f"{'an EDM' if kind == 'edm' else 'a score-SDE'} model: use heun, dpm_solver, pc or ode")
    if name in DENOISING:
        _check_values(name, dict(options))
    return name, options


def _check_values(name: str, options: dict[str, Any]) -> None:
    """The values of a denoising sampler's options, checked by the sampler itself: one step of it
    on one zero point with a zero score (so a bad value fails before any work)."""
    from scorematch.samplers import sample

    if "n_steps" in options:
        steps = positive_int("n_steps", options.pop("n_steps"), minimum=2 if name == "continuous_langevin" else 1)
        if steps > MAX_LEVELS:
            raise ConfigError(f"--n-steps {steps} is more than {MAX_LEVELS} noise levels; use fewer")
    sample(name, lambda x, sigma: torch.zeros_like(x), torch.zeros(1, 1), [1.0, 0.5], **options)


def check_label(model: nn.Module, run_info: dict[str, Any], label: int | str | None,
                guidance: float | None) -> tuple[int | None, float]:
    """(class index, guidance weight) for sampling ``model``: ``label`` is a class index or a
    class name of run.json's ``data.classes``; ``guidance`` (default ``DEFAULT_GUIDANCE``) a
    finite w >= 0 and only with a label. ConfigError naming the fix otherwise."""
    n_classes = getattr(model.model if isinstance(model, Standardized) else model, "n_classes", 0) or 0
    if label is None:
        if guidance is not None:
            raise ConfigError("--guidance applies to class-conditional sampling; add --label K")
        return None, 0.0
    if not n_classes:
        raise ConfigError("this run is not class-conditional (train it with --class-conditional on labelled data); "
                          "drop --label")
    names = list(run_info.get("data", {}).get("classes") or [])
    k = label
    if isinstance(label, str):
        text = label.strip()
        k = names.index(text) if text in names else int(text) if text.lstrip("-").isdigit() else None
    if isinstance(k, bool) or not isinstance(k, int):
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(f"--label must be a class index 0..{n_classes - 1}" + (f" or a class name ({shown})"
                                                                                 if names else "") + f", got {label!r}")
    if not 0 <= k < n_classes:
        raise ConfigError(f"--label {k} is out of range: this run has {n_classes} classes, 0..{n_classes - 1}")
    w = DEFAULT_GUIDANCE if guidance is None else guidance
    if isinstance(w, bool) or not isinstance(w, int | float) or not (0 <= w < math.inf):
        raise ConfigError(f"--guidance must be a finite number >= 0, got {guidance!r}")
    return k, float(w)


def count_nonfinite(x: torch.Tensor) -> int:
    """Samples (rows) with a NaN or inf entry."""
    return int((~torch.isfinite(x.flatten(1)).all(1)).sum())


def _is_flat_model(model: nn.Module, shape: tuple[int, ...]) -> bool:
    return len(shape) > 1 and getattr(model, "dim", None) == math.prod(shape)


def generate(model: nn.Module, run_info: dict[str, Any], n: int, sampler: str | None = None, seed: int = 0,
             return_trajectory: bool = False, progress: bool = False, callback: Callable[[dict], None] | None = None,
             warn_nonfinite: bool = True, label: int | str | None = None, guidance: float | None = None,
             start_index: int = 0, batch_size: int | None = None, stats: dict[str, Any] | None = None,
             **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n samples from ``model`` (a module with ``score``) using ``run_info`` (run.json contents).

    Options go to the sampler (e.g. ``step_size``, ``n_steps`` for langevin; ``eps``,
    ``steps_per_sigma`` for annealed; ``n_steps``, ``snr`` for pc; ``n_steps`` (noise levels,
    default ``DEFAULT_STEPS``) and ``s_churn``, ``eta``, ``order``... for the denoising
    samplers); one it does not take is a ConfigError. ``progress`` and ``callback`` go to the
    sampler too (the callback sees the sampler's own space: standardised for a ``Standardized``
    model). ``label`` (a class index or name) and ``guidance`` (w >= 0, default
    ``DEFAULT_GUIDANCE``) sample a class-conditional model for that class with classifier-free
    guidance. Returns a tensor of shape (n, *sample_shape) in data space, and the trajectory too
    when ``return_trajectory``. Samples with NaN or inf entries are returned as they are, with a
    ScoreMatchWarning giving their count (unless ``warn_nonfinite`` is False: the caller reports them).

    Per-sample seeds: row i of the result is sample ``start_index + i`` of ``seed``, drawn with its
    own random stream (``scorematch.samplers.RowGenerators``), start and noise alike, so it does not
    depend on ``n``, on ``batch_size`` (rows sampled that many at a time; default all at once) or on
    how rows are split between processes. Two samplers couple the rows of a batch: ``ode``, whose
    adaptive steps are shared by a batch (a row agrees to the solver's tolerance), and ``pc`` with its
    default batch-wide step size (``per_sample_step=True`` makes its rows exact). ``stats``, a dict,
    receives ``evaluations`` (score evaluations per sample: the calls of the score of one batch, the
    most over the batches) and ``calls`` (all calls of the score, summed over the batches).
    """
    n = positive_int("n", n)
    check_seed("seed", seed)
    check_seed("start_index", start_index)
    batch = n if batch_size is None else positive_int("batch_size", batch_size)
    name, options = resolve_sampler(model, sampler, options, run_info)
    label, w = check_label(model, run_info, label, guidance)
    outer = model if isinstance(model, Standardized) else None
    inner = outer.model if outer is not None else model
    parts, trajs, counts = [], [], []
    for a in range(0, n, batch):
        m = min(batch, n - a)
        out, calls = _sample(inner, run_info, m, name, (seed, start_index + a), return_trajectory,
                             progress and a == 0, callback, options, label, w)
        xa, ta = (out if return_trajectory else (out, None))
        parts.append(xa)
        trajs.append(ta)
        counts.append(calls)
    x = torch.cat(parts)
    traj = torch.cat(trajs, dim=1) if return_trajectory else None
    if stats is not None:
        stats.update(evaluations=max(counts), calls=sum(counts), batches=len(counts))
    if outer is not None:
        x = outer.to_data_space(x)
        traj = outer.to_data_space(traj) if traj is not None else None
    bad = count_nonfinite(x) if warn_nonfinite else 0
    if bad:
        warnings.warn(f"{bad} of {n} samples have NaN or inf entries (sampler {name}); try a smaller step, more "
                      "steps, or a model trained on standardised data", ScoreMatchWarning, stacklevel=2)
    return (x, traj) if return_trajectory else x


def conditioned_score(model: nn.Module, label: int | None, guidance: float) -> Any:
    """``model`` itself, or for a class ``label`` its guided score (1 + w) s(x, c, y) - w s(x, c, null)."""
    if label is None:
        return model
    from scorematch.samplers import guided

    return guided(model, label, guidance)


def noise_view(score: Any, kind: str, schedule: dict[str, Any]) -> Any:
    """The ``scorematch.denoise.SigmaView`` of a noise- or time-conditional ``score`` of a run of
    ``kind`` over the run's noise range (NCSN: its sigmas; EDM: sigma_min .. sigma_max of its
    schedule; an SDE model: through its SDE)."""
    from scorematch.denoise import sigma_view
    from scorematch.sde import get_sde

    if kind == "ncsn":
        return sigma_view(score, sigma_min=schedule["sigmas"][-1], sigma_max=schedule["sigmas"][0])
    if kind == "edm":
        return sigma_view(score, sigma_min=schedule["sigma_min"], sigma_max=schedule["sigma_max"])
    return sigma_view(score, get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"}))


def noise_levels(name: str, n_steps: Any, view: Any, levels: Sequence[float] | None = None) -> torch.Tensor | None:
    """The grid of denoising sampler ``name``: ``karras_sigmas(n_steps, ...)`` over the view's
    range with the final 0, or ``linear_sigmas`` for continuous_langevin (``n_steps`` only
    checked when ``view`` is None). ``n_steps`` None: ``DEFAULT_STEPS[name]``, except with
    ``levels`` (an NCSN run's own sigma_1 > ... > sigma_L), which are then the grid, followed by
    0: the network was trained at those levels only (docs/samplers/sampling-a-run.md)."""
    from scorematch.noise import karras_sigmas, linear_sigmas

    if n_steps is None:
        if levels is not None and name != "continuous_langevin":
            return torch.tensor([*levels, 0.0], dtype=torch.float64)
        n_steps = DEFAULT_STEPS[name]
    _check_values(name, {"n_steps": n_steps})
    if view is None:
        return None
    if name == "continuous_langevin":
        return linear_sigmas(n_steps, view.sigma_min, view.sigma_max)
    return karras_sigmas(n_steps, view.sigma_min, view.sigma_max)


def _sample(model: nn.Module, run_info: dict[str, Any], n: int, name: str, rows: tuple[int, int],
            return_trajectory: bool, progress: bool, callback: Callable[[dict], None] | None, options: dict[str, Any],
            label: int | None = None, guidance: float = 0.0) -> tuple[Any, int]:
    """``generate`` of rows ``rows = (seed, start)`` .. start + n - 1 in the model's own space, and the
    number of score evaluations it made."""
    from scorematch import samplers
    from scorematch._random import RowGenerators, rand
    from scorematch.samplers import CountedScore
    from scorematch.sde import VESDE, get_sde, sigma_conditioned, ve_from_sigmas

    kind = model_kind(model, run_info)
    data, schedule = run_info["data"], run_info.get("schedule", {})
    extra = {"progress": progress, "callback": callback}
    shape = tuple(data["sample_shape"])
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    check_sampling(n, shape, device)
    g = RowGenerators.from_seed(rows[0], n, start=rows[1], device=device)
    flat = _is_flat_model(model, shape)
    work_shape = (math.prod(shape),) if flat else shape
    lo, hi = float(data["lo"]), float(data["hi"])
    score = conditioned_score(model, label, guidance)

    def uniform_start() -> torch.Tensor:
        """Langevin and NCSN start from a uniform box over the data range (SDEs from their prior)."""
        return lo + (hi - lo) * rand((n, *work_shape), g, dtype=dtype, device=device)

    if name == "langevin":
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        counted = CountedScore(model)
        out = samplers.langevin(counted, uniform_start(), generator=g, return_trajectory=return_trajectory,
                                **extra, **opts)
    elif name == "mala":
        scale = max(1e-6, (hi - lo) / 10)
        opts = {"step_size": 0.01 * scale**2, "n_steps": 1000, **options}
        counted = CountedScore(model, "energy")
        res = samplers.mala(counted, uniform_start(), generator=g, return_trajectory=return_trajectory,
                            **extra, **opts)
        out = (res.samples, res.trajectory) if return_trajectory else res.samples
    elif name == "annealed":
        opts = {"eps": schedule["eps"], "steps_per_sigma": schedule["steps_per_sigma"], **options}
        counted = CountedScore(score)
        out = samplers.annealed_langevin(counted, uniform_start(), schedule["sigmas"], generator=g,
                                         return_trajectory=return_trajectory, **extra, **opts)
    elif name in DENOISING:
        view = noise_view(score, kind, schedule)
        opts = dict(options)
        own = schedule["sigmas"] if kind == "ncsn" else None
        sigmas = noise_levels(name, opts.pop("n_steps", None), view, own)
        start = view.prior_sample((n, *work_shape), generator=g, dtype=dtype, device=device)
        counted = CountedScore(view)
        out = samplers.sample(name, counted, start, sigmas, generator=g, return_trajectory=return_trajectory,
                              **extra, **opts)
    else:
        if kind in ("ncsn", "edm"):
            sde = (ve_from_sigmas(schedule["sigmas"]) if kind == "ncsn"
                   else VESDE(sigma_min=schedule["sigma_min"], sigma_max=schedule["sigma_max"]))
            score_fn = sigma_conditioned(score, sde)
        else:
            sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
            score_fn = score
        fn = getattr(samplers, name)
        counted = CountedScore(score_fn)
        res = fn(counted, sde, (n, *work_shape), generator=g, return_trajectory=return_trajectory,
                 device=device, dtype=dtype, **extra, **options)
        if name == "ode":
            out = (res.samples, res.trajectory) if return_trajectory else res.samples
        else:
            out = res
    x, traj = (out if return_trajectory else (out, None))
    x = x.reshape(n, *shape)
    if data.get("kind") == "image":
        x = x.clamp(0.0, 1.0)
    return ((x, traj) if return_trajectory else x), counted.calls
