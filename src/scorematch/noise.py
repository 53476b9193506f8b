"""Noise schedules for noise-conditional score networks.

Geometric schedule (conventions.md): sigma_i = sigma_1 (sigma_L/sigma_1)^((i-1)/(L-1)),
descending sigma_1 > ... > sigma_L. ``propose_schedule`` picks sigma_1, L and eps from the
data with the techniques of NCSNv2 (Song & Ermon 2020). ``karras_sigmas`` is the grid of
Karras et al. (2022, eq. 5) for the denoising samplers, ``linear_sigmas`` the linear
sigma(t) = sigma_min + t (sigma_max - sigma_min) of the continuous-noise recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scorematch._checks import batch, positive, positive_int
from scorematch.errors import ConfigError


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """sigma_i = sigma_1 (sigma_L / sigma_1)^((i-1)/(L-1)), i = 1..L, with sigma_1 = sigma_max."""
    hi, lo = positive("sigma_max", sigma_max), positive("sigma_min", sigma_min)
    n = positive_int("n_levels", n_levels)
    if n > 1 and not hi > lo:
        raise ConfigError(f"sigma_max must exceed sigma_min, got {hi} <= {lo}")
    if n == 1:
        return torch.tensor([hi])
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), n, dtype=torch.float64)).float()


def _levels(n: int, sigma_min: float, sigma_max: float) -> tuple[int, float, float]:
    n = positive_int("n", n)
    lo, hi = positive("sigma_min", sigma_min), positive("sigma_max", sigma_max)
    if n > 1 and not hi > lo:
        raise ConfigError(f"sigma_max must exceed sigma_min, got {hi} <= {lo}")
    return n, lo, hi


def _finish(sigmas: torch.Tensor, append_zero: bool) -> torch.Tensor:
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(torch.get_default_dtype())


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero: bool = True
) -> torch.Tensor:
    """The noise levels of Karras et al. (2022, eq. 5), descending, i = 0..n-1:

        sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,

    followed by sigma_n = 0 when ``append_zero`` (as EDM does: the last step lands on the data).
    rho = 7 spends more steps at small sigma; rho = 1 is linear, rho -> infinity geometric.
    Shape (n + 1,) with the zero, (n,) without; n = 1 gives [sigma_max].
    """
    n, lo, hi = _levels(n, sigma_min, sigma_max)
    rho = positive("rho", rho)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_hi, inv_lo = hi ** (1 / rho), lo ** (1 / rho)
    return _finish((inv_hi + ramp * (inv_lo - inv_hi)) ** rho, append_zero)


def linear_sigmas(n: int, sigma_min: float, sigma_max: float, append_zero: bool = False) -> torch.Tensor:
    """sigma(t_k) = sigma_min + t_k (sigma_max - sigma_min) at t_k = 1 - k/(n-1), k = 0..n-1:
    the linear schedule of the continuous-noise recipe of the tutorial notes on score matching,
    descending from sigma_max to sigma_min (then 0 with ``append_zero``)."""
    n, lo, hi = _levels(n, sigma_min, sigma_max)
    t = torch.linspace(1, 0, n, dtype=torch.float64)
    return _finish(lo + t * (hi - lo), append_zero)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def ratio_for_dimension(dim: int) -> float | None:
    """NCSNv2 technique 2: gamma = sigma_{i-1}/sigma_i solving

        Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 1/2,

    so consecutive noise shells overlap. Returns None when D is too small for a solution
    (sqrt(2D) <= 3, i.e. D <= 4: the left side stays above 1/2 for every gamma > 1).
    """
    r = math.sqrt(2 * positive_int("dim", dim))
    if r <= 3:
        return None

    def overlap(g: float) -> float:
        return _normal_cdf(r * (g - 1) + 3 * g) - _normal_cdf(r * (g - 1) - 3 * g)

    lo, hi = 1.0, 2.0
    while overlap(hi) > 0.5:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if overlap(mid) > 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def variance_ratio(eps: float, gamma: float, sigma_min: float, steps_per_sigma: int) -> float:
    """s_T^2 / sigma_i^2 after T annealed-Langevin steps at level i when p is a point mass
    (its noisy score is -x/sigma_i^2) and x starts with variance (gamma sigma_i)^2.

    With the alpha-form step of Algorithm 1, kappa = eps / (2 sigma_L^2) and c = 2 / (2 - kappa):
        s_T^2 / sigma_i^2 = (1 - kappa)^(2T) (gamma^2 - c) + c.
    (NCSNv2's Proposition 3 in the eta-form step of its code.)
    """
    kappa = eps / (2 * sigma_min**2)
    c = 2 / (2 - kappa)
    return (1 - kappa) ** (2 * steps_per_sigma) * (gamma**2 - c) + c


def eps_for_schedule(gamma: float, sigma_min: float, steps_per_sigma: int) -> float:
    """NCSNv2 technique 4: the eps (alpha-form) that brings ``variance_ratio`` closest to 1."""
    grid = torch.logspace(-12, math.log10(1.9), 4000, dtype=torch.float64) * sigma_min**2
    best = min(grid.tolist(), key=lambda e: abs(variance_ratio(e, gamma, sigma_min, steps_per_sigma) - 1))
    return float(best)


@dataclass(frozen=True)
class NoiseSchedule:
    """A proposed schedule: sigmas (descending), Algorithm 1's eps and T, and how they were chosen."""

    sigmas: torch.Tensor
    eps: float
    steps_per_sigma: int
    notes: tuple[str, ...]

    def report(self) -> str:
        """A few lines for the user: the numbers and the rule behind each."""
        head = (
            f"noise schedule: sigma_1 = {float(self.sigmas[0]):.4g}, sigma_L = {float(self.sigmas[-1]):.4g}, "
            f"L = {len(self.sigmas)}, eps = {self.eps:.3g} (alpha-form), T = {self.steps_per_sigma}"
        )
        return "\n".join([head, *("  " + n for n in self.notes)])


def propose_schedule(
    data: torch.Tensor,
    sigma_min: float = 0.01,
    steps_per_sigma: int = 5,
    n_levels: int | None = None,
    max_points: int = 2000,
    max_levels: int = 1000,
) -> NoiseSchedule:
    """Propose sigma_1, L and eps from training data (NCSNv2, Song & Ermon 2020):

    technique 1, sigma_1 = the largest pairwise distance ||x_i - x_j|| (over up to ``max_points``);
    technique 2, the geometric ratio gamma from the data dimension (``ratio_for_dimension``),
    L = 1 + ceil(log(sigma_1/sigma_L) / log gamma); technique 4, eps from ``eps_for_schedule``.
    Pass ``n_levels`` to fix L (needed for D <= 4, where technique 2 has no solution; 10 used).
    """
    x = batch("data", data).flatten(1).double()
    x = x[:max_points]
    sigma_min = positive("sigma_min", sigma_min)
    steps = positive_int("steps_per_sigma", steps_per_sigma)
    sigma_max = float(torch.cdist(x, x).max())
    notes = [f"sigma_1 = {sigma_max:.4g}: the largest pairwise distance of {len(x)} training points"]
    if sigma_max <= sigma_min:
        raise ConfigError(
            f"the data's largest pairwise distance {sigma_max:.3g} is not above sigma_min={sigma_min}; "
            "check the data (all points equal?) or lower sigma_min"
        )
    d = x.shape[1]
    if n_levels is None:
        gamma = ratio_for_dimension(d)
        if gamma is None:
            n_levels = 10
            notes.append(f"D = {d} is too small for the dimension rule; L = 10 levels (set n_levels to change)")
        else:
            n_levels = 1 + math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma))
            notes.append(f"gamma = {gamma:.4f} from D = {d} (shell overlap 1/2), so L = {n_levels}")
            if n_levels > max_levels:
                raise ConfigError(f"the rule gives L = {n_levels} > max_levels = {max_levels}; raise sigma_min")
    sigmas = geometric_sigmas(sigma_max, sigma_min, positive_int("n_levels", n_levels))
    gamma = (sigma_max / sigma_min) ** (1 / max(1, n_levels - 1))
    eps = eps_for_schedule(gamma, sigma_min, steps)
    ratio = variance_ratio(eps, gamma, sigma_min, steps)
    notes.append(f"eps = {eps:.3g} brings s_T^2/sigma_i^2 to {ratio:.3f} with T = {steps} (technique 4)")
    return NoiseSchedule(sigmas, eps, steps, tuple(notes))
