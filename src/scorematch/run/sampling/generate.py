"""Drawing samples from a trained model with any sampler, with defaults taken from its run.

``generate(model, run_info, n, sampler=None, seed=0)`` picks the default sampler of the model's
kind (``scorematch.samplers.catalogue.default_for``), starts it where its family starts (a
uniform box over the data range for the Langevin chains and annealed Langevin, the SDE prior for
the score-SDE samplers, the model's noise-level view's prior N(0, sigma_max^2 I) for the
denoising samplers), and returns samples in data space with the data's sample shape: a model
trained on standardised data is sampled in its own space (``scorematch.run.sampling.space``) and
its samples mapped back.

The denoising samplers see every noise- or time-conditional model through
``scorematch.denoise.sigma_view`` over the noise range of its run (NCSN: sigma_L .. sigma_1;
EDM: the schedule's sigma_min .. sigma_max; SDE models: sigma(1e-3) .. sigma(1) of their SDE),
on their catalogue entry's grid of noise levels. A class-conditional model is sampled for class ``label`` with
classifier-free guidance of weight ``guidance`` (``scorematch.samplers.guided``); without a label
from the data's distribution p(x) = sum_y p(y) p(x | y), each sample's class y drawn from its own
random stream with the data's class shares (run.json's ``data.class_prior``) and guided with
``MIXTURE_GUIDANCE`` unless another weight is given (w = 0 samples p(x) as the model has it; a
small w trades some diversity for cleaner samples); with the label
``"null"`` from the null label's (unconditional) score.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from scorematch._checks import positive_int
from scorematch._random import RowGenerators, rand
from scorematch.errors import ConfigError, ScoreMatchWarning
from scorematch.run.folder.validate import check_seed
from scorematch.run.sampling.space import ModelSpace, noise_view, space_of, time_sde, unwrap
from scorematch.run.system.limits import MAX_STEPS, check_sampling
from scorematch.samplers import catalogue
from scorematch.samplers.counting import CountedScore

#: the classifier-free guidance weight w of a class-conditional model sampled with a label
DEFAULT_GUIDANCE = 1.0
#: the guidance weight w of a class-conditional model sampled without a label (each sample's class
#: drawn from the data's class shares): the image benchmark's decision (benchmarks/results/images.json)
MIXTURE_GUIDANCE = 0.5
#: the --label that samples the null label's (unconditional) score of a class-conditional model
NULL_LABEL = "null"
#: at most this many noise levels for a denoising sampler (each one is a step)
MAX_LEVELS = MAX_STEPS


def model_kind(model: nn.Module, run_info: dict[str, Any] | None = None) -> str:
    """The kind of a trained model (``scorematch.samplers.catalogue.model_kind``): "score" or
    "energy" (unconditional), "ncsn" or "edm" (noise-conditional), "ve", "vp" or "subvp"
    (time-conditional, by the run's SDE)."""
    info = run_info if run_info is not None else getattr(model, "run_info", None) or {}
    return catalogue.model_kind(getattr(model, "conditioning", "none"), hasattr(model, "energy"),
                                info.get("schedule", {}))


def sampler_options(name: str) -> list[str]:
    """The options sampler ``name`` takes (its catalogue entry's), e.g. ``n_steps`` and its own."""
    return catalogue.entry(name).option_names()


def _describe(kinds: Sequence[str]) -> str:
    if set(catalogue.NOISE_CONDITIONAL) == set(kinds):
        return "noise- or time-conditional models"
    return " and ".join(f"{catalogue.KIND_TEXT[k]} models" for k in kinds)


def resolve_sampler(model: nn.Module, sampler: str | None = None, options: dict[str, Any] | None = None,
                    run_info: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The sampler ``generate`` will run for ``model`` and its options: ``sampler`` and ``options``,
    or with ``sampler`` None the default of the model's kind with its settings (the catalogue's
    ``default_for``) under ``options``; checked to fit the model (ConfigError with the fix otherwise)."""
    kind = model_kind(model, run_info)
    options = dict(options or {})
    chosen = sampler is not None
    if not chosen:
        sampler, defaults = catalogue.default_for(kind)
        options = {**defaults, **options}
    e = catalogue.entry(sampler)
    try:
        catalogue.check_options(e.name, options)
    except ConfigError as err:
        if chosen:
            raise
        raise ConfigError(f"{err} (the default sampler of this run; name the sampler the option is for with "
                          "--sampler)") from None
    if kind not in e.kinds:
        fits = catalogue.fitting(kind)
        raise ConfigError(f"sampler {e.name!r} is for {_describe(e.kinds)}; this model is of kind {kind} "
                          f"({catalogue.KIND_TEXT[kind]}): use --sampler {' | '.join(fits)}")
    if e.family == catalogue.DENOISING:
        _check_values(e, dict(options))
    return e.name, options


def _check_values(e: catalogue.Sampler, options: dict[str, Any]) -> None:
    """The values of a denoising sampler's options, checked by the sampler itself: one step of it
    on one zero point with a zero score (so a bad value fails before any work)."""
    if "n_steps" in options:
        steps = positive_int("n_steps", options.pop("n_steps"), minimum=e.min_steps)
        if steps > MAX_LEVELS:
            raise ConfigError(f"--n-steps {steps} is more than {MAX_LEVELS} noise levels; use fewer")
    catalogue.sample(e.name, lambda x, sigma: torch.zeros_like(x), torch.zeros(1, 1), [1.0, 0.5], **options)


def check_label(model: nn.Module, run_info: dict[str, Any], label: int | str | None,
                guidance: float | None) -> tuple[int | None, float]:
    """(class index, guidance weight) for sampling ``model``: ``label`` is a class index, a
    class name of run.json's ``data.classes`` or ``"null"`` (the null label, index K, without
    guidance); ``guidance`` (default ``DEFAULT_GUIDANCE`` with a class) a finite w >= 0, for a
    class-conditional model only; without a label a class is drawn per sample (``mixture_labels``)
    and w defaults to ``MIXTURE_GUIDANCE``. ConfigError naming the fix otherwise."""
    n_classes = getattr(unwrap(model)[0], "n_classes", 0) or 0
    if label is None and not n_classes:
        if guidance is not None:
            raise ConfigError("--guidance applies to class-conditional runs (train with --class-conditional); "
                              "drop --guidance")
        return None, 0.0
    if label is not None and not n_classes:
        raise ConfigError("this run is not class-conditional (train it with --class-conditional on labelled data); "
                          "drop --label")
    if label is None:  # each sample's class drawn from p(y), guided with w
        return None, _guidance(MIXTURE_GUIDANCE if guidance is None else guidance)
    if isinstance(label, str) and label.strip() == NULL_LABEL:
        if guidance is not None:
            raise ConfigError("--guidance applies to a class, not to --label null; drop --guidance")
        return n_classes, 0.0
    names = list(run_info.get("data", {}).get("classes") or [])
    k = label
    if isinstance(label, str):
        text = label.strip()
        k = names.index(text) if text in names else int(text) if text.lstrip("-").isdigit() else None
    if isinstance(k, bool) or not isinstance(k, int):
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(f"--label must be a class index 0..{n_classes - 1}" + (f", a class name ({shown})"
                                                                                 if names else "")
                          + f" or {NULL_LABEL} (the unconditional score), got {label!r}")
    if not 0 <= k < n_classes:
        raise ConfigError(f"--label {k} is out of range: this run has {n_classes} classes, 0..{n_classes - 1}")
    return k, _guidance(guidance)


def _guidance(guidance: Any) -> float:
    w = DEFAULT_GUIDANCE if guidance is None else guidance
    if isinstance(w, bool) or not isinstance(w, int | float) or not (0 <= w < math.inf):
        raise ConfigError(f"--guidance must be a finite number >= 0, got {guidance!r}")
    return float(w)


def mixture_labels(prior: Sequence[float], rows: RowGenerators) -> torch.Tensor:
    """One class per row, y_i ~ ``prior`` (shares of the classes) from row i's own stream: the
    inverse CDF of a uniform, so row i's class depends only on its seed."""
    cdf = torch.tensor(prior, dtype=torch.float64).cumsum(0)
    u = rand((len(rows),), rows, dtype=torch.float64, device=rows.device) * cdf[-1].to(rows.device)
    return torch.searchsorted(cdf.to(u.device), u, right=True).clamp(max=len(prior) - 1)


def count_nonfinite(x: torch.Tensor) -> int:
    """Samples (rows) with a NaN or inf entry."""
    return int((~torch.isfinite(x.flatten(1)).all(1)).sum())


def generate(model: nn.Module, run_info: dict[str, Any], n: int, sampler: str | None = None, seed: int = 0,
             return_trajectory: bool = False, progress: bool = False, callback: Callable[[dict], None] | None = None,
             warn_nonfinite: bool = True, label: int | str | None = None, guidance: float | None = None,
             start_index: int = 0, batch_size: int | None = None, stats: dict[str, Any] | None = None,
             return_log_prob: bool = False, report: dict[str, Any] | None = None,
             **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n samples from ``model`` (a module with ``score``) using ``run_info`` (run.json contents).

    Options go to the sampler (its catalogue entry's options, e.g. ``step_size``, ``n_steps``
    for langevin; ``eps``, ``steps_per_sigma`` for annealed; ``n_steps``, ``snr`` for pc;
    ``n_steps`` (noise levels) and ``s_churn``, ``eta``, ``order``... for the denoising samplers);
    one it does not take is a ConfigError. ``progress`` and ``callback`` go to the sampler too (the
    callback sees the sampler's own space: standardised for a ``Standardized`` model). ``label`` (a
    class index or name) and ``guidance`` (w >= 0, default ``DEFAULT_GUIDANCE``) sample a
    class-conditional model for that class with classifier-free guidance. Returns a tensor of
    shape (n, *sample_shape) in data space, and the trajectory too when ``return_trajectory``.
    Samples with NaN or inf entries are returned as they are, with a ScoreMatchWarning giving their
    count (unless ``warn_nonfinite`` is False: the caller reports them).

    ``report`` (a dict) is filled with what the sampler gives beside the samples: for a sampler
    whose entry has ``info`` (the solver picks its steps), its counts (``nfe``, the score
    evaluations, and the others it reports); with ``return_log_prob`` (only for a sampler whose
    entry has ``log_prob``, else a ConfigError) ``log_prob``, each sample's log-density under the
    model in data space, (n,) float64: the sampler's, in the model's space, plus log |dz/dx| =
    -sum log sd for a model trained on standardised data (image samples are clamped to [0, 1]
    after, the density is of the point before).

    Per-sample seeds: row i of the result is sample ``start_index + i`` of ``seed``, drawn with its
    own random streams (``scorematch.samplers.RowGenerators``), start and noise alike, so it does not
    depend on ``n``, on ``batch_size`` (rows sampled that many at a time; default all at once) or on
    how rows are split between processes (the adaptive samplers step every row on its own). One
    sampler couples the rows of a batch: ``pc`` with its default batch-wide step size
    (``per_sample_step=True`` makes its rows exact). ``stats``, a dict,
    receives ``evaluations`` (score evaluations per sample: the calls of the score of one batch, the
    most over the batches), ``calls`` (all calls, summed over the batches) and ``batches``.
    """
    n = positive_int("n", n)
    check_seed("seed", seed)
    check_seed("start_index", start_index)
    batch = n if batch_size is None else positive_int("batch_size", batch_size)
    name, options = resolve_sampler(model, sampler, options, run_info)
    e = catalogue.entry(name)
    if return_log_prob:
        check_log_prob(e.name)
    label, w = check_label(model, run_info, label, guidance)
    n_classes = getattr(unwrap(model)[0], "n_classes", 0) or 0
    prior = run_info["data"].get("class_prior") or [1.0 / max(n_classes, 1)] * n_classes
    space = space_of(model, run_info)
    check_sampling(min(n, batch), space.sample_shape, space.device, space.inner, options)
    xs, trajs, lps, infos, counts = [], [], [], [], []
    for a in range(0, n, batch):
        m = min(batch, n - a)
        rows = RowGenerators.from_seed(seed, m, start=start_index + a, device=space.device)
        y = mixture_labels(prior, rows) if label is None and n_classes else label
        out, calls = _sample(space, run_info["data"], m, e, rows, return_trajectory, progress and a == 0, callback,
                             options, y, w, return_log_prob)
        parts = list(out) if isinstance(out, tuple) else [out]
        infos.append(parts.pop() if e.info else None)
        lps.append(parts.pop() if return_log_prob else None)
        xs.append(parts[0])
        trajs.append(parts[1] if return_trajectory else None)
        counts.append(calls)
    x = torch.cat(xs)
    traj = torch.cat(trajs, dim=1) if return_trajectory else None
    lp = torch.cat(lps) if return_log_prob else None
    info = _summed(infos) if e.info else None
    if stats is not None:
        stats.update(evaluations=max(counts), calls=sum(counts), batches=len(counts))
    if report is not None:
        report.update(info or {})
        if lp is not None:
            log_det = -float(space.outer.std.double().log().sum()) if space.outer is not None else 0.0
            report["log_prob"] = lp.detach().double().cpu() + log_det
    x = space.to_data_space(x.detach())
    traj = space.to_data_space(traj.detach()) if traj is not None else None
    if run_info["data"].get("kind") == "image":
        x = x.clamp(0.0, 1.0)
    bad = count_nonfinite(x) if warn_nonfinite else 0
    if bad:
        warnings.warn(f"{bad} of {n} samples have NaN or inf entries (sampler {name}); try a smaller step, more "
                      "steps, or a model trained on standardised data", ScoreMatchWarning, stacklevel=2)
    return (x, traj) if return_trajectory else x


def check_log_prob(name: str) -> None:
    """ConfigError unless sampler ``name`` returns log-likelihoods (its entry's ``log_prob``)."""
    able = [e.name for e in catalogue.entries() if e.log_prob]
    if not catalogue.entry(name).log_prob:
        raise ConfigError(f"--log-prob needs a sampler that returns the log-likelihood of its samples "
                          f"({', '.join(able) or 'none'}); sampler {name!r} does not: add --sampler "
                          f"{' | '.join(able)}")


def _summed(infos: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The info dicts of the batches as one: counts (numbers) summed, anything else the last's."""
    out: dict[str, Any] = {}
    for d in infos:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v if isinstance(v, int | float) and not isinstance(v, bool) else v
    return out


def conditioned_score(model: nn.Module, label: int | torch.Tensor | None, guidance: float) -> Any:
    """``model`` itself, or for a class ``label`` (or one per row) its guided score
    (1 + w) s(x, c, y) - w s(x, c, null)."""
    if label is None:
        return model
    from scorematch.samplers import guided

    return guided(model, label, guidance)


def noise_levels(name: str, n_steps: Any, view: Any, levels: Sequence[float] | None = None) -> torch.Tensor | None:
    """The grid of denoising sampler ``name``: its catalogue entry's ``grid(n_steps, sigma_min,
    sigma_max)`` over the view's range (Karras levels with the final 0, or linear levels)
    (``n_steps`` only checked when ``view`` is None). ``n_steps`` None: the entry's default
    steps, except with ``levels`` (an NCSN run's own sigma_1 > ... > sigma_L) for a sampler that
    takes them (``own_levels``), which are then the grid, followed by 0: the network was trained
    at those levels only (docs/samplers/sampling-a-run.md)."""
    e = catalogue.entry(name)
    if e.schedule_option not in e.option_names():  # the sampler picks its steps: the grid gives its range
        return None if view is None else e.grid(None, view.sigma_min, view.sigma_max)
    if n_steps is None:
        if levels is not None and e.own_levels:
            return torch.tensor([*levels, 0.0], dtype=torch.float64)
        n_steps = e.default_steps
    _check_values(e, {"n_steps": n_steps})
    if view is None:
        return None
    return e.grid(n_steps, view.sigma_min, view.sigma_max)


def _sample(space: ModelSpace, data: dict[str, Any], n: int, e: catalogue.Sampler, g: RowGenerators,
            return_trajectory: bool, progress: bool, callback: Callable[[dict], None] | None,
            options: dict[str, Any], label: int | torch.Tensor | None = None, guidance: float = 0.0,
            return_log_prob: bool = False) -> tuple[Any, int]:
    """``generate`` in the model's own space and shape: the start and the schedule of the
    sampler's family (see ``scorematch.samplers.catalogue``), then one call of the sampler with
    its score counted (with ``return_log_prob`` and, for an entry with ``info``, ``return_info``:
    its result has one more element each, the info dict last); the result and the score
    evaluations."""
    model, kind, schedule = space.inner, space.kind, space.schedule
    shape = (n, *space.work_shape)
    lo, hi = float(data["lo"]), float(data["hi"])
    score = conditioned_score(model, label, guidance)
    defaults = {o.name: o.default for o in e.options if o.default is not None}
    opts = {**defaults, **options}

    def uniform_start() -> torch.Tensor:
        """Langevin chains start from a uniform box over the data range."""
        return lo + (hi - lo) * rand(shape, g, dtype=space.dtype, device=space.device)

    if e.family == catalogue.UNCONDITIONAL:
        scale = max(1e-6, (hi - lo) / 10)
        step = opts.pop(e.schedule_option) if e.schedule_option in opts else 0.01 * scale**2
        args: tuple[Any, ...] = (model, uniform_start(), step)
    elif e.family == catalogue.NCSN_LEVELS:
        opts = {"eps": schedule["eps"], "steps_per_sigma": schedule["steps_per_sigma"], **opts}
        args = (score, uniform_start(), schedule["sigmas"])
    elif e.family == catalogue.DENOISING:
        view = noise_view(score, kind, schedule)
        own = schedule["sigmas"] if kind == catalogue.KIND_NCSN else None
        sigmas = noise_levels(e.name, options.get(e.schedule_option), view, own)
        opts.pop(e.schedule_option, None)
        args = (view, view.prior_sample(shape, generator=g, dtype=space.dtype, device=space.device), sigmas)
    else:
        sde, score_fn = time_sde(score, kind, schedule)
        args = (score_fn, sde.prior_sample(shape, generator=g, dtype=space.dtype, device=space.device), sde)
    if return_log_prob:
        opts["return_log_prob"] = True
    if e.info:
        opts["return_info"] = True
    counted = CountedScore(args[0])
    out = e.function(counted, *args[1:], generator=g, callback=callback, progress=progress,
                     return_trajectory=return_trajectory, **opts)
    return out, counted.calls
