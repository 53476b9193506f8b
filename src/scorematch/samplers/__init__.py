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

Every sampler takes ``generator``: a torch.Generator, or per-row generators (``RowGenerators``, or
a list of torch.Generators, one per row, as diffusers takes them). With per-row generators row i
of the start and of every noise draw comes from generator i alone, so
``RowGenerators.from_seed(seed, n, start)`` makes sample i depend on (seed, start + i) only: the
first k samples of n are those of k, whatever the batch. The stochastic denoising and SDE samplers
take ``brownian=True`` for the increments of one Brownian path per row (a Brownian tree) instead
of fresh noise, so that at one seed the sample converges as the steps grow. ``CountedScore``
counts a score's evaluations and ``evaluations`` gives the count of each sampler.
"""

from scorematch._brownian import BrownianTree
from scorematch._random import RowGenerators, row_seed
from scorematch.samplers.conditional import guided, inpaint, inpaint_sde, inpaint_smc, replace_known
from scorematch.samplers.counting import CountedScore, evaluations
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
SAMPLER_NAMES = ("langevin", "mala", "annealed", "euler_maruyama", "reverse_diffusion", "pc", "ode",
                 "heun", "euler", "euler_ancestral", "ddim", "dpm_solver", "continuous_langevin")

__all__ = [
    "DENOISING_SAMPLERS", "BrownianTree", "CountedScore", "MALAResult", "ODEResult", "RowGenerators",
    "SAMPLER_NAMES", "annealed", "annealed_langevin", "continuous_langevin", "ddim", "dpm_solver", "euler",
    "euler_ancestral", "euler_maruyama", "evaluations", "guided", "heun", "inpaint", "inpaint_sde", "inpaint_smc",
    "langevin", "langevin_corrector", "mala", "ode", "pc", "replace_known", "reverse_diffusion", "row_seed",
    "sample",
]
