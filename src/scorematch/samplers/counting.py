"""Exact counts of score evaluations: a counting wrapper for any score function, and the number
of evaluations each sampler makes (its NFE), stated once here.

One evaluation is one call of the score function on the whole batch, whatever its number of
rows (a guided score evaluates the doubled batch in one call: one evaluation). For MALA it is one
evaluation of E and grad E together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scorematch import _compile
from scorematch.errors import ConfigError


class CountedScore:
    """``score_fn`` (a callable or an object with a ``.score``, or with ``method`` another method
    such as ``"energy"``) that counts its calls in ``calls``. Every other attribute is the
    wrapped object's, so a counted model still answers ``.sigma_min``, ``.prior_sample``..."""

    def __init__(self, score_fn: Any, method: str = "score") -> None:
        fn = _compile.method(score_fn, method)
        if not callable(fn):
            raise ConfigError(f"score_fn must be callable or have a .{method} method")
        self._fn: Callable[..., Any] = fn
        self._wrapped = score_fn
        self._method = method
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == self._method:  # a sampler that looks for .score (or .energy) gets the counted call
            return self.__call__
        return getattr(self._wrapped, name)


def _int(settings: dict[str, Any], key: str, default: int | None = None) -> int:
    value = settings.get(key, default)
    if value is None:
        raise ConfigError(f"the evaluation count needs {key}")
    return int(value)


def evaluations(name: str, **settings: Any) -> int | None:
    """The score evaluations sampler ``name`` makes with ``settings`` (its keyword arguments), or
    None for ``ode`` (adaptive: it reports its own count).

    ===================  ===========================================================
    langevin             n_steps
    mala                 n_steps + 1  (E and grad E at the start, then per proposal)
    annealed             L * steps_per_sigma (+1 with denoise), L = len(sigmas)
    euler_maruyama       n_steps (+1 with denoise)
    reverse_diffusion    n_steps (+1 with denoise)
    pc                   n_steps * (1 + n_corrector) (+1 with denoise)
    heun                 2N - 1 when the last sigma is 0, else 2N  (N = len(sigmas) - 1)
    every other          N
    denoising sampler
    ===================  ===========================================================

    Denoising samplers take ``sigmas`` (the grid), the others their step counts; defaults as in
    the samplers' signatures (denoise True, n_corrector 1, n_steps 500 for the SDE samplers).
    """
    if name == "ode":
        return None
    if name in ("langevin", "mala"):
        return _int(settings, "n_steps") + (name == "mala")
    denoise = bool(settings.get("denoise", True))
    if name in ("annealed", "annealed_langevin"):
        return len(settings["sigmas"]) * _int(settings, "steps_per_sigma") + denoise
    if name in ("euler_maruyama", "reverse_diffusion", "pc"):
        per_step = 1 + (_int(settings, "n_corrector", 1) if name == "pc" else 0)
        return _int(settings, "n_steps", 500) * per_step + denoise
    from scorematch.samplers.denoising import DENOISING_SAMPLERS

    if name not in DENOISING_SAMPLERS:
        raise ConfigError(f"no evaluation count for sampler {name!r}")
    levels = [float(s) for s in settings["sigmas"]]
    steps = len(levels) - 1
    if name == "heun":
        return 2 * steps - (levels[-1] == 0)
    return steps
