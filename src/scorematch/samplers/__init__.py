"""Samplers: each a function of a score function (never a method of a trainer).

    ===================  =============================================================
    langevin             x + eta s(x) + sqrt(2 eta) z
    mala                 Langevin proposal + Metropolis-Hastings correction (energy models)
    annealed_langevin    NCSN Algorithm 1 over sigma_1 > ... > sigma_L (alias ``annealed``)
    euler_maruyama       reverse SDE dx = [f - g^2 s] dt + g dw_bar
    reverse_diffusion    the reverse-diffusion predictor of the score-SDE paper
    pc                   predictor-corrector (predictor + Langevin corrector with an SNR rule)
    ode                  probability-flow ODE dx = [f - 1/2 g^2 s] dt, adaptive solver
    heun                 EDM Algorithm 1/2: Heun on dx/dsigma = (x - D(x, sigma)) / sigma
    euler                Euler on the same ODE in sigma
    euler_ancestral      Euler step to sigma_down + noise sigma_up
    ddim                 DDIM with eta, in the VE view
    dpm_solver           DPM-Solver++(2M) / (3M), multistep
    continuous_langevin  the tutorial notes' dx = s dt + sqrt(2 sigma(t)) dw
    ===================  =============================================================

The denoising samplers (heun ... continuous_langevin) take ``(score_fn, x, sigmas)``: see
``scorematch.samplers.denoising``; ``guided`` and ``inpaint`` (``scorematch.samplers.conditional``)
wrap a score for classifier-free guidance and for inpainting / imputation.

What each sampler is (its name, options, defaults, the models it fits) is written once, in
``scorematch.samplers.catalogue``; the names here are imported on first use, so that reading the
catalogue (the command line's help) imports no torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from scorematch._lazy import Lazy
from scorematch.samplers import catalogue

#: the functions of the catalogue's entries (by their own names and the catalogue's), and the helpers
_WHERE: dict[str, str] = {
    "guided": "conditional", "inpaint": "conditional", "inpaint_sde": "conditional", "inpaint_smc": "conditional",
    "replace_known": "conditional", "langevin_corrector": "sde", "sample": "catalogue",
}
for _e in catalogue.entries():
    if isinstance(_e.function, Lazy):
        _module, _, _name = _e.function.path.partition(":")
        _WHERE[_name] = _WHERE[_e.name] = _module.rsplit(".", 1)[1]
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'scorematch.samplers' has no attribute {name!r}")
    module = importlib.import_module(f"scorematch.samplers.{_WHERE[name]}")
    if name in catalogue.CATALOGUE:
        return catalogue.CATALOGUE[name].resolved()
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """This package, whose functions keep their names when a submodule of the same name (the
    module ``langevin`` of the function ``langevin``) is imported: the function wins, as it did
    when the package imported every function at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


