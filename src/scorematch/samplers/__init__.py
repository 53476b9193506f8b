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
    dpmpp_2m_sde         DPM-Solver++(2M) SDE (eta, midpoint / heun), multistep
    dpmpp_3m_sde         DPM-Solver++(3M) SDE, multistep
    dpm_adaptive         DPM-Solver-12 / -23 with a PID step-size controller (rtol, atol)
    ===================  =============================================================

The denoising samplers (heun ... dpm_adaptive) take ``(score_fn, x, sigmas)``: see
``scorematch.samplers.denoising``; ``guided`` and ``inpaint`` (``scorematch.samplers.conditional``)
wrap a score for classifier-free guidance and for inpainting / imputation.
"""

from scorematch.samplers.adaptive import dpm_adaptive
from scorematch.samplers.conditional import guided, inpaint, inpaint_sde, inpaint_smc, replace_known
from scorematch.samplers.denoising import (
    DENOISING_SAMPLERS,
    continuous_langevin,
    ddim,
    dpm_solver,
    euler,
    euler_ancestral,
    heun,
    sample,
)
from scorematch.samplers.dpmpp_sde import dpmpp_2m_sde, dpmpp_3m_sde
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

# the multistep SDE samplers join the denoising samplers' table (defined before them, in denoising.py)
DENOISING_SAMPLERS.update({
    "dpmpp_2m_sde": (dpmpp_2m_sde, ("eta", "s_noise", "solver_type")),
    "dpmpp_3m_sde": (dpmpp_3m_sde, ("eta", "s_noise")),
})

#: names accepted by ``scorematch sample --sampler``
SAMPLER_NAMES = ("langevin", "mala", "annealed", "euler_maruyama", "reverse_diffusion", "pc", "ode",
                 "heun", "euler", "euler_ancestral", "ddim", "dpm_solver", "continuous_langevin", "dpmpp_2m_sde",
                 "dpmpp_3m_sde")

__all__ = [
    "DENOISING_SAMPLERS", "MALAResult", "ODEResult", "SAMPLER_NAMES", "annealed", "annealed_langevin",
    "continuous_langevin", "ddim", "dpm_adaptive", "dpm_solver", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler",
    "euler_ancestral", "euler_maruyama", "guided",
    "heun", "inpaint", "inpaint_sde", "inpaint_smc", "langevin", "langevin_corrector", "mala", "ode", "pc",
    "replace_known", "reverse_diffusion", "sample",
]
