"""Samplers: each a function of a score function (never a method of a trainer).

    =================  =============================================================
    langevin           x + eta s(x) + sqrt(2 eta) z
    mala               Langevin proposal + Metropolis-Hastings correction (energy models)
    annealed_langevin  NCSN Algorithm 1 over sigma_1 > ... > sigma_L (alias ``annealed``)
    euler_maruyama     reverse SDE dx = [f - g^2 s] dt + g dw_bar
    reverse_diffusion  the reverse-diffusion predictor of the score-SDE paper
    pc                 predictor-corrector (predictor + Langevin corrector with an SNR rule)
    ode                probability-flow ODE dx = [f - 1/2 g^2 s] dt, adaptive solver
    =================  =============================================================
"""

from scorematch.samplers.langevin import MALAResult, annealed_langevin, langevin, mala
from scorematch.samplers.sde import (
    ODEResult,
    euler_maruyama,
    langevin_corrector,
    ode,
    pc,
    reverse_diffusion,
)

annealed = annealed_langevin

#: names accepted by ``scorematch sample --sampler``
SAMPLER_NAMES = ("langevin", "mala", "annealed", "euler_maruyama", "reverse_diffusion", "pc", "ode")

__all__ = [
    "MALAResult", "ODEResult", "SAMPLER_NAMES", "annealed", "annealed_langevin", "euler_maruyama",
    "langevin", "langevin_corrector", "mala", "ode", "pc", "reverse_diffusion",
]
