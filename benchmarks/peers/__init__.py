"""The contract between the peer benchmark (benchmarks/compare.py) and each contender.

Every contender is a module here with

    NAME: str                          # shown in the table
    DISTRIBUTION: str                  # PyPI name, for the version (importlib.metadata)
    def operations(s: Setup) -> dict[str, Op]

``operations`` imports its library lazily (inside the function) and returns only the
operations the library offers; a missing one is an empty cell. Every contender gets the same
networks, batch, sigmas and device from ``Setup`` and wraps them in whatever interface its
library wants (an elementwise rescale at most). The keys and what one call of ``Op.fn`` does:

Training steps (zero the grads, loss, backward; the optimizer update is the same for everyone
and left out):
    dsm, dsm_energy        Vincent's DSM at sigma = s.dsm_sigma, score net / energy net
    ncsn                   multi-scale DSM over s.sigmas, lambda = sigma^2, noise-conditional net
    ssm, ssm_energy        sliced score matching, one Gaussian projection per row
    ssm_vr, ssm_vr_energy  its variance-reduced form
    ism, ism_energy        implicit score matching with the exact Jacobian trace
Sampling (no grad, from s.x, the noise-conditional net):
    annealed_step          one Langevin update at one noise level sigma_i (Algorithm 1's inner step)
    annealed_run           Algorithm 1 over all of s.sigmas, s.steps_per_sigma steps each
    reverse_sde_step       s.n_steps reverse-diffusion predictor steps of the VE SDE (Op.per = s.n_steps)
    pc_step                s.n_steps predictor + one Langevin-corrector steps (Op.per = s.n_steps)
    ode_likelihood         log p of s.x by the probability-flow ODE of the VE SDE, dopri5,
                           rtol = atol = 1e-5, Hutchinson trace with one fixed Gaussian probe
    heun_step              Heun (EDM Algorithm 1) over s.karras_sigmas (s.n_steps levels + 0), from
                           s.x * sigma_max (Op.per = s.n_steps: 2 evaluations a step, 1 for the last)
    euler_step             Euler on the probability-flow ODE in sigma, same grid (Op.per = s.n_steps)
    euler_ancestral_step   ancestral Euler, eta = 1, same grid (Op.per = s.n_steps)
    dpm_solver_step        DPM-Solver++(2M), same grid (Op.per = s.n_steps)

``Op.note`` is printed beside the figure: a known bug, a different algorithm, the NFE.
``Op.valid = False`` marks a figure timed as shipped but computing a wrong result (a known bug):
it is shown with its note and left out of the "fastest peer" ratio.

A contender module may also define ``checks(s: Setup) -> dict[str, str]``: for each operation,
a sentence with numbers saying whether it computes what scorematch computes on the same input
(for example "loss 0.8131 vs scorematch 0.8131 on the same noise"); the benchmark stores these
in its JSON beside the timings.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from scorematch.models import EnergyMLP, NoiseConditionalMLP, ScoreMLP
from scorematch.noise import geometric_sigmas
from scorematch.sde import VESDE, ve_from_sigmas

TRAINING = ["dsm", "dsm_energy", "ncsn", "ssm", "ssm_energy", "ssm_vr", "ssm_vr_energy", "ism", "ism_energy"]
SAMPLING = ["annealed_step", "annealed_run", "reverse_sde_step", "pc_step", "ode_likelihood"]
DENOISING = ["heun_step", "euler_step", "euler_ancestral_step", "dpm_solver_step"]
OPERATIONS = TRAINING + SAMPLING + DENOISING

#: contender modules, scorematch first
CONTENDERS = ["ours", "torchebm_peer", "score_models_peer", "diffusers_peer", "k_diffusion_peer"]


@dataclass
class Op:
    """One timed operation: ``fn()`` runs it once; the table shows time / ``per``."""

    fn: Callable[[], object]
    note: str = ""
    per: int = 1
    valid: bool = True


@dataclass
class Setup:
    """What every contender is given: the same networks, data, sigmas and device."""

    d: int
    batch: int
    hidden: int
    device: torch.device
    x: torch.Tensor
    score_net: ScoreMLP
    energy_net: EnergyMLP
    nc_net: NoiseConditionalMLP  # returns the score: its last layer's output / sigma
    sigmas: torch.Tensor  # descending, sigma_1 > ... > sigma_L
    dsm_sigma: float
    eps: float  # Algorithm 1's step size: alpha_i = eps sigma_i^2 / sigma_L^2
    steps_per_sigma: int
    n_steps: int  # reverse-SDE / PC steps of one run
    snr: float
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def sde(self) -> VESDE:
        return ve_from_sigmas(self.sigmas)

    @property
    def karras_sigmas(self) -> torch.Tensor:
        """The denoising samplers' grid: n_steps Karras levels from sigma_max to sigma_min, then 0."""
        from scorematch.noise import karras_sigmas

        return karras_sigmas(self.n_steps, self.sigma_min, self.sigma_max).to(self.device)

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[-1])

    def generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed)

    def nc_raw(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The noise-conditional net before its division by sigma (for libraries that divide)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.nc_net(x, sigma) * sigma[:, None]


def make_setup(d: int, batch: int, hidden: int, device: torch.device, seed: int = 0) -> Setup:
    """Networks with depth 2 and SiLU, data N(0, I), 10 geometric sigmas from 10 (or sqrt(D)) to 0.01."""
    torch.manual_seed(seed)
    sigma_max = max(10.0, float(d) ** 0.5)
    return Setup(
        d=d,
        batch=batch,
        hidden=hidden,
        device=device,
        x=torch.randn(batch, d, device=device),
        score_net=ScoreMLP(d, hidden=hidden, depth=2).to(device),
        energy_net=EnergyMLP(d, hidden=hidden, depth=2).to(device),
        nc_net=NoiseConditionalMLP(d, hidden=hidden, depth=2).to(device),
        sigmas=geometric_sigmas(sigma_max, 0.01, 10).to(device),
        dsm_sigma=0.1,
        eps=2e-5,
        steps_per_sigma=10,
        n_steps=100,
        snr=0.16,
        seed=seed,
    )


class Contender(NamedTuple):
    """A contender module, loaded: ``operations``/``checks`` are None when its library is absent."""

    name: str
    version: str | None
    operations: Callable[[Setup], dict[str, Op]] | None
    checks: Callable[[Setup], dict[str, str]] | None
    missing: str


def load(module: str) -> Contender:
    """The contender module benchmarks.peers.MODULE with its library's version, or why it is absent."""
    mod = importlib.import_module(f"benchmarks.peers.{module}")
    try:
        version = importlib.metadata.version(mod.DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return Contender(mod.NAME, None, None, None,
                         f"{mod.DISTRIBUTION} is not installed (pip install -e '.[bench]')")
    return Contender(mod.NAME, version, mod.operations, getattr(mod, "checks", None), "")


def standard_normal_score(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The exact score of N(0, I) data noised at sigma, -x / (1 + sigma^2) (sigma a float or one
    per row): the analytic reference the peers' samplers and likelihoods are checked on."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return -x / (1 + sigma.reshape(-1, *([1] * (x.dim() - 1))).square())


def standard_normal_score_t(s: Setup) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The same as a time-conditional score s(x, t) of the setup's VE SDE."""
    return lambda x, t: standard_normal_score(x, s.sde.marginal_std(t))


def training_step(net: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A zero-argument training step: zero the grads, loss, backward."""

    def step() -> None:
        net.zero_grad(set_to_none=True)
        loss_fn().backward()

    return step
