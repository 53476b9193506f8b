"""The sampler catalogue: what each sampler is, written once, read by everything else.

One ``Sampler`` entry per method, plain data. The command line (``--sampler`` choices, the
option flags and their help), ``scorematch.run.sampling`` (which sampler fits which model, the
default sampler of each model kind, the options it accepts, its default steps), the README's
sampler table and the refusal messages all read this module; nothing else names a sampler.

Built-in entries name their function lazily (``scorematch._lazy.Lazy("module:name")``, imported on
first call, so that the command line's help imports no torch); an added entry may give the function
itself. Adding a sampler is one function plus one entry::

    def my_sampler(score_fn, x, sigmas, *, generator=None, callback=None, progress=False,
                   return_trajectory=False, my_option=0.5):
        ...

    register(Sampler(
        name="my_sampler", function=my_sampler, family=DENOISING,
        summary="one line: the update rule",
        options=(steps_option(18), Option("my_option", 0.5, float, "what it does")),
        default_steps=18, nfe=lambda steps, options: steps, nfe_text="N",
        kinds=NOISE_CONDITIONAL, conditioning="sigma"))

The fields of an entry (``name`` to ``nfe_text`` required, the rest optional; ``register`` checks
them against each other and the other entries, and replaces an entry of the same name):

- ``name``: the name ``--sampler`` and ``generate(sampler=...)`` accept (a Python identifier);
- ``summary``: its update rule in one line (the README's sampler table);
- ``function``: the sampler, called as ``function(score_fn, x, schedule, *, generator, callback,
  progress, return_trajectory, **options)`` (see ``scorematch.samplers``): ``schedule`` is what
  its ``family`` prescribes;
- ``family``: how the run layer starts it and what it passes as ``schedule``:
  ``UNCONDITIONAL`` (Langevin-type chains of an unconditional score or energy; x a uniform box over
  the data range; schedule the step size eta), ``NCSN_LEVELS`` (x the same box; schedule the
  run's own noise levels sigma_1 > ... > sigma_L), ``SCORE_SDE`` (x the SDE's prior sample;
  schedule the ``scorematch.sde.SDE``) or ``DENOISING`` (x ~ N(0, sigma_max^2 I); schedule the
  noise levels of ``grid(n_steps, sigma_min, sigma_max)`` with a final 0; the ``n_steps`` option
  is spent on the grid, not passed on);
- ``options``: its own options, each ``Option(name, default, type, help, flag=True)``: the keyword
  arguments the run layer passes on; ``default`` None means "from the run" (stated in the help);
  ``flag`` False keeps an option out of the command line (Python API only). An option of the same
  name in two entries has the same type (one ``--flag`` serves both). ``UNCONDITIONAL`` samplers
  list ``step_size``, which the run layer passes as their schedule;
- ``default_steps``: the steps (or noise levels) when none are given, or None;
- ``nfe(steps, options)``: the number of score evaluations for that many steps with those
  options (None where the solver chooses, e.g. the adaptive ODE), and ``nfe_text`` the same as a
  formula of N for tables;
- ``kinds``: the model kinds it fits (``KINDS``: score, energy, ncsn, edm, ve, vp, subvp; see
  ``model_kind``); ``conditioning``: what its ``score_fn`` takes ("none": s(x); "sigma": s(x, sigma);
  "time": s(x, t)); the run layer converts a model of another kind's conditioning into it;
- ``defaults_for``: the model kinds whose default sampler this is, each with the settings it then
  runs with (each kind has exactly one default sampler; today's are the decisions of
  ``python -m benchmarks.nfe_quality``, docs/benchmarks.md, and a test keeps them equal);
- ``grid``, ``min_steps``, ``own_levels``: for ``DENOISING`` samplers, the noise-level grid
  function (``scorematch.noise.karras_sigmas`` or ``linear_sigmas``), the fewest levels it takes,
  and whether an NCSN run is sampled on its own levels when no steps are given; a denoising
  sampler without an ``n_steps`` option (one that picks its own steps) gets ``grid(None,
  sigma_min, sigma_max)``;
- ``log_prob``: the function takes ``return_log_prob=True`` and then returns one more element,
  each sample's log-density under the model, shape (n,) (``scorematch sample --log-prob``);
- ``info``: the function takes ``return_info=True`` and then returns one more element (last), a
  dict holding at least ``nfe``, the score evaluations it took (where ``nfe`` of the entry is
  None because the solver chooses); the run layer prints and records it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scorematch import _catalogue
from scorematch._lazy import Lazy, resolve
from scorematch.errors import ConfigError

__all__ = [
    "DENOISING", "FAMILIES", "KINDS", "NCSN_LEVELS", "NOISE_CONDITIONAL", "Option", "SCORE_SDE", "Sampler",
    "UNCONDITIONAL", "default_for", "entries", "entry", "fitting", "model_kind", "names", "register", "sample",
    "steps_option", "table", "unregister",
]

#: the families: how the run layer starts a sampler and what it passes as its schedule
UNCONDITIONAL, NCSN_LEVELS, SCORE_SDE, DENOISING = "unconditional", "ncsn_levels", "score_sde", "denoising"
FAMILIES = (UNCONDITIONAL, NCSN_LEVELS, SCORE_SDE, DENOISING)
#: each family in a few words (help texts and tables)
FAMILY_TEXT = {UNCONDITIONAL: "Langevin chains of unconditional models", NCSN_LEVELS: "NCSN models, on the run's "
               "noise levels", SCORE_SDE: "score-SDE samplers, for every NCSN, SDE and EDM model",
               DENOISING: "denoising samplers over Karras noise levels (or an NCSN run's own levels), for every "
               "NCSN, SDE and EDM model"}
#: the model kinds (``model_kind``): unconditional score and energy models, noise-conditional NCSN and
#: EDM models, and time-conditional models of the VE, VP and sub-VP SDEs
KIND_SCORE, KIND_ENERGY, KIND_NCSN, KIND_EDM = "score", "energy", "ncsn", "edm"
KINDS = (KIND_SCORE, KIND_ENERGY, KIND_NCSN, KIND_EDM, "ve", "vp", "subvp")
#: each kind in words (messages and tables)
KIND_TEXT = {KIND_SCORE: "unconditional score", KIND_ENERGY: "energy", KIND_NCSN: "noise-conditional NCSN",
             KIND_EDM: "EDM", "ve": "VE SDE", "vp": "VP SDE", "subvp": "sub-VP SDE"}
#: the kinds with a noise level: every sampler of the SDE and denoising families fits them all
NOISE_CONDITIONAL = KINDS[2:]
CONDITIONINGS = ("none", "sigma", "time")


@dataclass(frozen=True)
class Option:
    """One option of a sampler: keyword ``name``, its ``default`` (None: from the run, said in
    ``help``), its ``type`` (int, float, str or bool) and a one-line ``help``; ``flag`` False keeps
    it off the command line."""

    name: str
    default: Any
    type: type
    help: str
    flag: bool = True


@dataclass(frozen=True)
class Sampler:
    """One sampler of the catalogue (the fields are described in the module docstring)."""

    name: str
    function: Callable[..., Any]
    family: str
    summary: str
    options: tuple[Option, ...]
    kinds: tuple[str, ...]
    conditioning: str
    nfe: Callable[[int, Mapping[str, Any]], int | None]
    nfe_text: str
    default_steps: int | None = None
    defaults_for: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    grid: Callable[..., Any] | None = None
    min_steps: int = 1
    own_levels: bool = True
    log_prob: bool = False
    info: bool = False

    def resolved(self) -> Callable[..., Any]:
        """The sampler function itself (built-in entries name it lazily: see ``scorematch._lazy``)."""
        return resolve(self.function)

    def option_names(self) -> list[str]:
        return [o.name for o in self.options]

    @property
    def schedule_option(self) -> str | None:
        """The option the run layer spends on the schedule instead of passing it on: a denoising
        sampler's ``n_steps`` (its noise levels), an unconditional chain's ``step_size``."""
        return {DENOISING: "n_steps", UNCONDITIONAL: "step_size"}.get(self.family)

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)


_CATALOGUE: dict[str, Sampler] = {}


def _check_entry(e: Sampler) -> None:
    if not (isinstance(e.name, str) and e.name.isidentifier()):
        raise ConfigError(f"a sampler name is a Python identifier, got {e.name!r}")
    if e.family not in FAMILIES:
        raise ConfigError(f"sampler {e.name!r}: family must be one of {', '.join(FAMILIES)}, got {e.family!r}")
    if e.conditioning not in CONDITIONINGS:
        raise ConfigError(f"sampler {e.name!r}: conditioning must be one of {', '.join(CONDITIONINGS)}")
    if not e.kinds or set(e.kinds) - set(KINDS) or set(e.defaults_for) - set(e.kinds):
        raise ConfigError(f"sampler {e.name!r}: kinds must be among {', '.join(KINDS)} and include those it is "
                          "the default for")
    if not callable(e.function):
        raise ConfigError(f"sampler {e.name!r}: function must be callable")
    if e.family == DENOISING and e.grid is None:
        raise ConfigError(f"sampler {e.name!r}: a denoising sampler needs its noise-level grid")
    if not isinstance(e.function, Lazy):
        params = inspect.signature(e.function).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        passed = [o.name for o in e.options if o.name != e.schedule_option]
        missing = [k for k in passed if k not in params and not takes_any]
        if missing:
            raise ConfigError(f"sampler {e.name!r}: its function takes no option(s) {', '.join(missing)}")
    for other in _CATALOGUE.values():
        if other.name == e.name:
            continue
        clash = sorted(set(e.defaults_for) & set(other.defaults_for))
        if clash:
            raise ConfigError(f"sampler {e.name!r}: {other.name!r} is already the default for {', '.join(clash)}")
        for o in e.options:
            same = [p for p in other.options if p.name == o.name]
            if same and same[0].type is not o.type:
                raise ConfigError(f"sampler {e.name!r}: option {o.name} is a {same[0].type.__name__} in "
                                  f"{other.name!r}; one flag serves both, so give it the same type")


def register(e: Sampler) -> Sampler:
    """Add (or replace) the entry ``e.name``; checked for consistency with the others. Returns it."""
    return _catalogue.add(_CATALOGUE, e, Sampler, _check_entry)


def unregister(name: str) -> None:
    """Remove the entry ``name`` (for tests that register a method of their own)."""
    _CATALOGUE.pop(name, None)


def names() -> list[str]:
    """Every sampler name, in catalogue order."""
    return list(_CATALOGUE)


def entries(family: str | None = None) -> list[Sampler]:
    """Every entry (of ``family``), in catalogue order."""
    return [e for e in _CATALOGUE.values() if family is None or e.family == family]


def entry(name: str) -> Sampler:
    """The entry ``name``; ConfigError listing the known names otherwise."""
    return _catalogue.lookup(_CATALOGUE, name, "sampler")


def fitting(kind: str) -> list[str]:
    """The samplers that fit a model of ``kind``."""
    return [e.name for e in _CATALOGUE.values() if kind in e.kinds]


def default_for(kind: str) -> tuple[str, dict[str, Any]]:
    """(default sampler, its settings) for a model of ``kind``."""
    for e in _CATALOGUE.values():
        if kind in e.defaults_for:
            return e.name, dict(e.defaults_for[kind])
    raise ConfigError(f"no default sampler for models of kind {kind!r}; name one with --sampler")


def model_kind(conditioning: str, has_energy: bool, schedule: Mapping[str, Any]) -> str:
    """The kind of a model (``KINDS``) from its conditioning ("none", "sigma", "time"), whether it
    has an energy, and its run's noise schedule: "score" or "energy" (unconditional), "ncsn" or
    "edm" (noise-conditional: an NCSN schedule of sigmas, or EDM's sigma_data), "ve", "vp" or
    "subvp" (time-conditional, by the run's SDE)."""
    if conditioning == "none":
        return KIND_ENERGY if has_energy else KIND_SCORE
    if conditioning == "sigma":
        return KIND_EDM if "sigma_data" in schedule else KIND_NCSN
    return str(schedule.get("sde", "ve"))


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """ConfigError naming the options that sampler ``name`` does not take, and those it takes."""
    valid = entry(name).option_names()
    bad = [k for k in options if k not in valid]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        takes = ", ".join(valid) if valid else "no options"
        raise ConfigError(f"{flags} do{'es' if len(bad) == 1 else ''} not apply to sampler {name!r}, which takes "
                          f"{takes}")


def sample(name: str, score_fn: Any, x: Any, schedule: Any, **kwargs: Any) -> Any:
    """Run sampler ``name`` on ``(score_fn, x, schedule)`` with ``generator``, ``callback``,
    ``progress``, ``return_trajectory`` and its options; an option it does not take is refused
    with a ConfigError naming the ones it takes."""
    e = entry(name)
    common = {"generator", "callback", "progress", "return_trajectory"}
    options = {k: v for k, v in kwargs.items() if k not in common}
    own = [o for o in e.option_names() if o != e.schedule_option]
    wrong = sorted(set(options) - set(own))
    if wrong:
        valid = ", ".join(own) if own else "none"
        raise ConfigError(f"option(s) {', '.join(wrong)} do not apply to the {name} sampler (its options: {valid})")
    return e.function(score_fn, x, schedule, **kwargs)


def table() -> str:
    """The samplers as a Markdown table (the README's)."""
    rows = ["| `--sampler` | fits | update | options | steps | score evaluations |",
            "| --- | --- | --- | --- | --- | --- |"]
    for e in _CATALOGUE.values():
        fits = ("NCSN, SDE, EDM" if set(e.kinds) == set(NOISE_CONDITIONAL)
                else ", ".join(KIND_TEXT[k] for k in e.kinds))
        flags = ", ".join(f"`--{o.name.replace('_', '-')}`" for o in e.options if o.flag and o.name != "n_steps")
        steps = "-" if e.default_steps is None else str(e.default_steps)
        summary = e.summary.replace("||", "\u2016")
        rows.append(f"| `{e.name}` | {fits} | {summary} | {flags or '-'} | {steps} | {e.nfe_text} |")
    return "\n".join(rows)


def steps_option(default: int | None, what: str = "noise levels") -> Option:
    """The ``n_steps`` option: number of steps (or noise levels) with its default."""
    shown = "from the run" if default is None else str(default)
    return Option("n_steps", default, int, f"{what} (default {shown})")


#: the noise of a stochastic sampler from one Brownian path per sample (``scorematch._brownian``)
_BROWNIAN = Option("brownian", False, bool, "noise from one Brownian path per sample (a Brownian tree), so that at "
                   "one seed the samples converge as the steps grow (default: fresh noise at every step)")


def _churn() -> tuple[Option, ...]:
    return (Option("s_churn", 0.0, float, "stochastic churn of EDM Algorithm 2 (default 0: Algorithm 1, "
                                          "deterministic)"),
            Option("s_tmin", None, float, "with --s-churn: lowest sigma that gets churn (default 0)"),
            Option("s_tmax", None, float, "with --s-churn: highest sigma that gets churn (default: no limit)"),
            Option("s_noise", None, float, "with --s-churn: scale of the added noise (default 1)"))


_LANGEVIN_STEP = Option("step_size", None, float, "Langevin step size eta (eta-form; default 0.01 (range / 10)^2 "
                                                  "of the run's data range)")
_DENOISE = 1  # the final Tweedie step of the SDE samplers with denoise=True
_SDE_ETA = Option("eta", 1.0, float, "SDE share of the noise (default 1: the reverse SDE; 0: the ODE)")
_SDE_NOISE = Option("s_noise", 1.0, float, "scale of the added noise (default 1)")


def _plus_denoise(n: int, options: Mapping[str, Any]) -> int:
    return n + (_DENOISE if options.get("denoise", True) else 0)


def _fn(module: str, name: str) -> Lazy:
    return Lazy(f"scorematch.samplers.{module}:{name}")


#: the denoising sampler of inpainting by replacement when none is named
DEFAULT_DENOISING = "heun"
_KARRAS = Lazy("scorematch.noise:karras_sigmas")


def _register_builtins() -> None:
    sde_options = (steps_option(500, "steps"),
                   Option("eps_t", 1e-3, float, "the time the reverse process stops at", flag=False),
                   Option("denoise", True, bool, "end with Tweedie's denoising step", flag=False),
                   Option("trajectory_every", None, int, "steps between trajectory snapshots", flag=False),
                   _BROWNIAN)
    chain = Option("trajectory_every", 1, int, "steps between trajectory snapshots", flag=False)
    for e in (
        Sampler(name="langevin", function=_fn("langevin", "langevin"), family=UNCONDITIONAL,
                summary="x + eta s(x) + sqrt(2 eta) z",
                options=(steps_option(1000, "steps"), _LANGEVIN_STEP, chain,
                         Option("noise", True, bool, "add the noise term (False: gradient ascent)", flag=False)),
                kinds=(KIND_SCORE, KIND_ENERGY), conditioning="none", nfe=lambda n, o: n, nfe_text="N",
                default_steps=1000, defaults_for={KIND_SCORE: {}, KIND_ENERGY: {}}),
        Sampler(name="mala", function=_fn("langevin", "mala"), family=UNCONDITIONAL,
                summary="the Langevin proposal, Metropolis-Hastings accepted",
                options=(steps_option(1000, "steps"), _LANGEVIN_STEP, chain),
                kinds=(KIND_ENERGY,), conditioning="none", nfe=lambda n, o: n + 1,
                nfe_text="N + 1 (energy and its gradient)", default_steps=1000),
        Sampler(name="annealed", function=_fn("langevin", "annealed_langevin"), family=NCSN_LEVELS,
                summary="Algorithm 1 of Song & Ermon (2019) over the run's sigma_1 > ... > sigma_L",
                options=(Option("eps", None, float, "annealed Langevin eps (alpha-form, Algorithm 1; default: the "
                                                    "run's)"),
                         Option("steps_per_sigma", None, int, "annealed Langevin steps per noise level T (default: "
                                                              "the run's)"),
                         Option("denoise", True, bool, "end with Tweedie's denoising step", flag=False)),
                kinds=(KIND_NCSN,), conditioning="sigma",
                nfe=lambda n, o: n * o["steps_per_sigma"] + _plus_denoise(0, o) if "steps_per_sigma" in o else None,
                nfe_text="L T + 1 (L levels)", defaults_for={KIND_NCSN: {}}),
        Sampler(name="euler_maruyama", function=_fn("sde", "euler_maruyama"), family=SCORE_SDE,
                summary="reverse SDE dx = [f - g^2 s] dt + g dw_bar", options=sde_options,
                kinds=NOISE_CONDITIONAL, conditioning="time", nfe=_plus_denoise, nfe_text="N + 1", default_steps=500),
        Sampler(name="reverse_diffusion", function=_fn("sde", "reverse_diffusion"), family=SCORE_SDE,
                summary="the reverse-diffusion predictor of the score-SDE paper", options=sde_options,
                kinds=NOISE_CONDITIONAL, conditioning="time", nfe=_plus_denoise, nfe_text="N + 1", default_steps=500),
        Sampler(name="pc", function=_fn("sde", "pc"), family=SCORE_SDE,
                summary="predictor-corrector: Langevin corrector steps with an SNR rule, then a predictor step",
                options=(*sde_options[:1],
                         Option("snr", 0.16, float, "signal-to-noise ratio of the PC corrector"),
                         Option("n_corrector", 1, int, "corrector steps per step", flag=False),
                         Option("predictor", None, str, "the predictor: reverse_diffusion (default) or "
                                                        "euler_maruyama", flag=False),
                         Option("per_sample_step", False, bool, "each sample's own corrector step size instead of "
                                "the batch mean (every sample then independent of the others drawn with it; "
                                "unstable in low dimension)"),
                         *sde_options[1:]),
                kinds=NOISE_CONDITIONAL, conditioning="time",
                nfe=lambda n, o: _plus_denoise(n * (1 + o.get("n_corrector", 1)), o),
                nfe_text="N (1 + n_corrector) + 1", default_steps=500),
        Sampler(name="ode", function=_fn("sde", "ode"), family=SCORE_SDE,
                summary="probability-flow ODE dx = [f - 1/2 g^2 s] dt, adaptive solver (with --log-prob also each "
                        "sample's log-likelihood)",
                options=(Option("rtol", 1e-5, float, "relative tolerance of the adaptive solver (default 1e-5)"),
                         Option("atol", 1e-5, float, "absolute tolerance of the adaptive solver (default 1e-5)"),
                         Option("method", "dopri5", str, "torchdiffeq solver", flag=False),
                         Option("options", None, dict, "solver options", flag=False),
                         Option("eps_t", 1e-3, float, "the time the ODE stops at", flag=False),
                         Option("denoise", None, bool, "end with Tweedie's denoising step (default: yes, unless "
                                                       "the log-likelihood is returned)", flag=False),
                         Option("n_snapshots", 11, int, "trajectory snapshots", flag=False),
                         Option("exact_trace", None, bool, "with the log-likelihood: the exact divergence (default: "
                                                           "for D <= 16), else Hutchinson's estimate", flag=False),
                         Option("n_probes", 1, int, "with the log-likelihood: Hutchinson probes per sample",
                                flag=False),
                         Option("per_sample", True, bool, "each sample its own dopri5 steps (default; False: "
                                "torchdiffeq's steps, shared by the batch)", flag=False)),
                kinds=NOISE_CONDITIONAL, conditioning="time", nfe=lambda n, o: None,
                nfe_text="adaptive (the solver's evaluations + 1)", log_prob=True, info=True),
        Sampler(name="heun", function=_fn("denoising", "heun"), family=DENOISING,
                summary="EDM Algorithm 1/2: Heun on dx/dsigma = (x - D(x, sigma)) / sigma",
                options=(steps_option(18), *_churn(), _BROWNIAN), kinds=NOISE_CONDITIONAL, conditioning="sigma",
                nfe=lambda n, o: 2 * n - 1, nfe_text="2N - 1 (the last step, to 0, is an Euler step)",
                default_steps=18, grid=_KARRAS),
        Sampler(name="euler", function=_fn("denoising", "euler"), family=DENOISING,
                summary="Euler on the same ODE in sigma", options=(steps_option(50), *_churn(), _BROWNIAN),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=50,
                grid=_KARRAS),
        Sampler(name="euler_ancestral", function=_fn("denoising", "euler_ancestral"), family=DENOISING,
                summary="Euler step to sigma_down + noise sigma_up",
                options=(steps_option(100), Option("eta", 1.0, float, "share of each step's noise drawn afresh "
                                                                      "(default 1)"),
                         Option("s_noise", None, float, "scale of the added noise (default 1)"), _BROWNIAN),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=100,
                grid=_KARRAS),
        Sampler(name="ddim", function=_fn("denoising", "ddim"), family=DENOISING,
                summary="DDIM with eta, in the VE view",
                options=(steps_option(50), Option("eta", 0.0, float, "share of each step's noise drawn afresh "
                                                                     "(default 0, in [0, 1])"), _BROWNIAN),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=50,
                grid=_KARRAS),
        Sampler(name="dpm_solver", function=_fn("denoising", "dpm_solver"), family=DENOISING,
                summary="DPM-Solver++(2M) / (3M), multistep",
                options=(steps_option(18), Option("order", 2, int, "2 (DPM-Solver++(2M), default) or 3 (3M)")),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=18,
                defaults_for={"ve": {"n_steps": 10}, "vp": {"order": 3, "n_steps": 50}, "subvp": {"n_steps": 50},
                              KIND_EDM: {"n_steps": 20}},
                grid=_KARRAS),
        Sampler(name="dpmpp_2m_sde", function=_fn("dpmpp_sde", "dpmpp_2m_sde"), family=DENOISING,
                summary="DPM-Solver++(2M) SDE (Lu et al. 2022): multistep exponential integrator of the reverse SDE",
                options=(steps_option(35), _SDE_ETA, _SDE_NOISE,
                         Option("solver_type", "midpoint", str, "the second-order correction: midpoint (default) or "
                                                                "heun")),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=35,
                grid=_KARRAS),
        Sampler(name="dpmpp_3m_sde", function=_fn("dpmpp_sde", "dpmpp_3m_sde"), family=DENOISING,
                summary="DPM-Solver++(3M) SDE: the same with a third-order multistep correction",
                options=(steps_option(20), _SDE_ETA, _SDE_NOISE),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N", default_steps=20,
                grid=_KARRAS),
        Sampler(name="dpm_adaptive", function=_fn("adaptive", "dpm_adaptive"), family=DENOISING,
                summary="adaptive DPM-Solver-12/23 with a PID step-size controller, from sigma_max to sigma_min",
                options=(Option("order", 3, int, "3 (DPM-Solver-23, default) or 2 (DPM-Solver-12)"),
                         Option("rtol", 0.05, float, "relative tolerance of the step-size controller (default 0.05)"),
                         Option("atol", 0.0078, float, "absolute tolerance of the step-size controller (default "
                                                       "0.0078)"),
                         Option("h_init", 0.05, float, "first step in lambda = -log sigma (default 0.05)"),
                         Option("eta", 0.0, float, "share of each step's noise drawn afresh (default 0: the ODE)"),
                         Option("per_sample", True, bool, "one error, step size and controller per sample "
                                "(default; False: one for the batch, as k-diffusion)", flag=False)),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: None,
                nfe_text="adaptive (order per accepted step, order - 1 per rejected one, + 1)",
                grid=Lazy("scorematch.samplers.adaptive:end_levels"), own_levels=False, info=True),
        Sampler(name="restart", function=_fn("restart", "restart"), family=DENOISING,
                summary="Restart (Xu et al. 2023): Heun, and K times at t_min: noise up to t_max, M Heun steps back",
                options=(steps_option(18),
                         Option("restarts", 1, int, "restarts K at the interval (default 1; 0: heun)"),
                         Option("restart_steps", 4, int, "Heun steps M of each restart, from t_max back to t_min "
                                                         "(default 4)"),
                         Option("restart_min", 0.1, float, "t_min: the grid level nearest this (default 0.1)"),
                         Option("restart_max", None, float, "t_max, the noise level a restart goes up to (default 2, "
                                                            "or sigma_max where smaller)")),
                kinds=NOISE_CONDITIONAL, conditioning="sigma",
                nfe=lambda n, o: 2 * n - 1 + 2 * o.get("restart_steps", 4) * o.get("restarts", 1),
                nfe_text="2N - 1 + 2 M K", default_steps=18, grid=_KARRAS, min_steps=2),
        Sampler(name="continuous_langevin", function=_fn("denoising", "continuous_langevin"), family=DENOISING,
                summary="the tutorial notes' dx = s dt + sqrt(2 sigma(t)) dw", options=(steps_option(1000), _BROWNIAN),
                kinds=NOISE_CONDITIONAL, conditioning="sigma", nfe=lambda n, o: n, nfe_text="N",
                default_steps=1000, grid=Lazy("scorematch.samplers.denoising:continuous_levels"), own_levels=False),
    ):
        register(e)


_register_builtins()
#: read-only view of the catalogue, name -> entry
CATALOGUE: Mapping[str, Sampler] = MappingProxyType(_CATALOGUE)
