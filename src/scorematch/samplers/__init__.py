"""Samplers: each a function of a score function (never a method of a trainer).

Every sampler is called the same way, the shape of k-diffusion's and EDM's samplers:

    x = sampler(score_fn, x, schedule, *, generator=None, callback=None, progress=False,
                return_trajectory=False, **options)

- ``score_fn``: the model or a callable; what it takes is the sampler's conditioning (s(x) for
  langevin and mala, whose "score" is an energy for mala; s(x, sigma) for annealed Langevin and
  the denoising samplers; s(x, t) for the score-SDE samplers), sigma and t of shape (n,);
- ``x``: the start (n, ...), drawn by the caller where the method starts (the score-SDE samplers
  also take a shape and draw it from the SDE's prior);
- ``schedule``: what the steps run over: the step size eta (langevin, mala), the noise levels
  sigma_1 > ... > sigma_L (annealed Langevin), the grid sigma_0 > ... > sigma_N >= 0 (the
  denoising samplers) or the ``scorematch.sde.SDE`` (the score-SDE samplers);
- ``generator``: every random draw: a torch.Generator, or per-row generators (``RowGenerators``,
  or a list of torch.Generators, one per row, as diffusers takes them), row i of every draw then
  from generator i alone, so that a sample does not depend on the batch it is drawn in
  (``RowGenerators.from_seed(seed, n, start)``: sample i from (seed, start + i));
  ``brownian=True`` (the stochastic samplers) takes the noise from one Brownian path per row;
  ``progress``: a progress report on stderr;
- ``callback(info)``: once per step, ``info`` a dict holding at least ``i`` (the step, 0-based),
  ``nfe`` (score evaluations so far) and ``x``, plus what the sampler has: ``sigma`` or ``t``,
  the denoising samplers' ``denoised`` (with x before the step, as k-diffusion's),
  ``acceptance_rate`` (mala, over the steps so far);
- the result: the samples, shaped like x, or ``(samples, trajectory)`` with
  ``return_trajectory``, the trajectory stacked on a new first axis; a sampler whose catalogue
  entry says so returns one more element on request: each sample's log-density
  (``return_log_prob=True``, entries with ``log_prob``) or, last, a dict of the evaluations it
  chose to take (``return_info=True``, entries with ``info``).

The result is the samples themselves rather than a record type, so that samplers compose (one's
output is another's start, ``inpaint`` wraps any of them) and numbers compare directly; what a
run learns beside the samples (MALA's acceptance rate, the adaptive ODE's evaluations) comes
through the one callback, which sees every step anyway. ``scorematch.samplers._loop`` holds the
callback, progress and trajectory plumbing (with its memory guard) that every sampler shares.

Which samplers there are, their options, defaults, the models they fit and their number of
score evaluations: ``scorematch.samplers.catalogue`` (one entry each); ``sample(name, ...)`` runs
one by name. ``guided`` and ``inpaint`` (``scorematch.samplers.conditional``) wrap a score for
classifier-free guidance and for inpainting / imputation. The names here are imported on first
use, so that reading the catalogue (the command line's help) imports no torch.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from scorematch._lazy import Lazy, lazy_package
from scorematch.samplers import catalogue

#: the functions of the catalogue's entries (by their own names and the catalogue's), and the helpers
_WHERE: dict[str, str] = {
    "guided": "conditional", "inpaint": "conditional", "inpaint_sde": "conditional", "inpaint_smc": "conditional",
    "replace_known": "conditional", "langevin_corrector": "sde", "sample": "catalogue",
    "CountedScore": "counting", "RowGenerators": "streams", "row_seed": "streams", "BrownianTree": "streams",
    "sigma_noise": "streams",
}
for _e in catalogue.entries():
    if isinstance(_e.function, Lazy):
        _module, _, _name = _e.function.path.partition(":")
        _WHERE[_name] = _WHERE[_e.name] = _module.rsplit(".", 1)[1]


def _lookup(name: str, module: ModuleType) -> Any:
    """A catalogue entry's name gives its resolved function, any other name the submodule's."""
    if name in catalogue.CATALOGUE:
        return catalogue.CATALOGUE[name].resolved()
    return getattr(module, name)


lazy_package(__name__, _WHERE, _lookup)
