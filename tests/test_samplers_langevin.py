"""Langevin, MALA and annealed Langevin against closed forms and known distributions.

Settings (stated here because the assertions depend on them):

- gmm1d: 5000 chains from Uniform[-3, 3], eta = 0.005, 1000 steps.
- imbalanced, plain Langevin: chains from Uniform([-8, 8]^2), eta = 0.1, L*T + 1 = 1001 steps.
- imbalanced, annealed Langevin: 3000 chains from Uniform([-8, 8]^2), sigmas geometric
  20 -> 0.1 with L = 10, T = 100 steps per level, eps = 4e-3 (alpha-form). eps / sigma_L^2 = 0.4
  is the relative step of the NCSN code default (step_lr = 2e-5 as an eta, i.e. eps = 4e-5, with
  sigma_L = 0.01); sigma_1 = 20 is about the largest pairwise distance of the data (NCSNv2).
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import GaussianMixture, toy
from scorematch.errors import ConfigError
from scorematch.metrics import mode_weights
from scorematch.noise import geometric_sigmas
from scorematch.samplers.langevin import annealed_langevin, langevin, mala


def normal_cdf(x: torch.Tensor, m: float, s: float) -> torch.Tensor:
    return 0.5 * (1 + torch.erf((x - m) / (s * math.sqrt(2))))


def gmm1d_cdf(x: torch.Tensor) -> torch.Tensor:
    """0.6 N(2, 0.5^2) + 0.4 N(-2, 0.2^2) with math.erf (elementwise, float64)."""
    return torch.tensor(
        [0.6 * 0.5 * (1 + math.erf((v - 2) / (0.5 * math.sqrt(2))))
         + 0.4 * 0.5 * (1 + math.erf((v + 2) / (0.2 * math.sqrt(2)))) for v in x.tolist()],
        dtype=torch.float64,
    )


def ks_distance(samples: torch.Tensor, cdf) -> float:
    s = samples.flatten().double().sort().values
    n = len(s)
    f = cdf(s)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def box(n: int, half: float, d: int, g: torch.Generator) -> torch.Tensor:
    return 2 * half * torch.rand(n, d, generator=g) - half


# --------------------------------------------------------------------------------------------
# unadjusted Langevin


def test_langevin_gmm1d_ks(gen: torch.Generator) -> None:
    dist = toy("gmm1d")
    x0 = box(5000, 3.0, 1, gen)
    x = langevin(dist.score, x0, step_size=0.005, n_steps=1000, generator=gen)
    ks = ks_distance(x, gmm1d_cdf)
    # Langevin cannot move mass between the two modes (the density between them is ~e^-12), so
    # the left mode keeps the share of Uniform[-3, 3] that falls in its basin, ~0.37 instead of
    # 0.4; that split alone is a KS distance of ~0.028. Measured: KS = 0.029 (seed 0).
    left = float((x < 0).double().mean())
    assert 0.35 < left < 0.42
    assert ks < 0.04, ks
    # within each mode the chains sample the component exactly (KS at the sampling-noise level,
    # 1.8/sqrt(n) is a p ~ 0.003 bound); a step without the sqrt(2) would shrink the spread
    xl, xr = x[x < 0], x[x > 0]
    assert ks_distance(xl, lambda v: normal_cdf(v, -2.0, 0.2)) < 1.8 / math.sqrt(len(xl))
    assert ks_distance(xr, lambda v: normal_cdf(v, 2.0, 0.5)) < 1.8 / math.sqrt(len(xr))


def test_langevin_gaussian_closed_form(gen: torch.Generator) -> None:
    """Score -x of N(0,1): x <- (1 - eta) x + sqrt(2 eta) z, so the mean is x0 (1-eta)^k and the
    variance 2/(2 - eta) (1 - (1-eta)^(2k)) -- the eta-form step exactly, bias included."""
    eta, k, n = 0.5, 100, 40_000
    x = langevin(lambda y: -y, torch.full((n, 1), 3.0), eta, n_steps=k, generator=gen)
    var = 2 / (2 - eta) * (1 - (1 - eta) ** (2 * k))
    assert abs(float(x.mean()) - 3 * (1 - eta) ** k) < 4 * math.sqrt(var / n)
    assert abs(float(x.var()) / var - 1) < 4 * math.sqrt(2 / n)
    # a short chain: the transient, deterministic part is exact
    x5 = langevin(lambda y: -y, torch.full((n, 1), 3.0), 0.1, n_steps=5, generator=gen)
    assert abs(float(x5.mean()) - 3 * 0.9**5) < 4 * math.sqrt(2 / 1.9 * (1 - 0.9**10) / n)


def test_langevin_imbalanced_keeps_start_split(gen: torch.Generator) -> None:
    """The documented failure: from a uniform box plain Langevin keeps ~0.5/0.5, not 0.2/0.8."""
    dist = toy("imbalanced")
    x = langevin(dist.score, box(2000, 8.0, 2, gen), 0.1, n_steps=1001, generator=gen)
    w = mode_weights(x, dist.means)
    assert abs(float(w[0]) - 0.2) > 0.1, w
    assert abs(float(w[0]) - 0.5) < 0.05, w


def test_langevin_reproducible_and_trajectory(make_gen) -> None:
    dist = toy("gmm2d")
    x0 = box(64, 4.0, 2, make_gen(0))
    a = langevin(dist.score, x0, 0.05, n_steps=30, generator=make_gen(1))
    b = langevin(dist.score, x0, 0.05, n_steps=30, generator=make_gen(1))
    c = langevin(dist.score, x0, 0.05, n_steps=30, generator=make_gen(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(x0, box(64, 4.0, 2, make_gen(0)))  # x0 not modified in place
    x, traj = langevin(dist.score, x0, 0.05, n_steps=30, generator=make_gen(1), return_trajectory=True,
                       trajectory_every=7)
    assert traj.shape == (1 + 30 // 7, 64, 2)
    assert torch.equal(traj[0], x0) and torch.equal(x, a)
    x, traj = langevin(dist.score, x0, 0.05, n_steps=30, generator=make_gen(1), return_trajectory=True,
                       trajectory_every=5)
    assert traj.shape == (7, 64, 2) and torch.equal(traj[-1], x)
    # the trajectory of the first 10 steps is the 10-step chain with the same seed
    torch.testing.assert_close(traj[2], langevin(dist.score, x0, 0.05, n_steps=10, generator=make_gen(1)))
    with pytest.raises(ConfigError):
        langevin(dist.score, x0, 0.0, n_steps=10)


def test_langevin_without_noise_collapses_onto_modes(gen: torch.Generator) -> None:
    dist = toy("imbalanced")
    x = langevin(dist.score, box(500, 8.0, 2, gen), 0.2, n_steps=300, noise=False)
    dist_to_mode = torch.cdist(x.double(), dist.means).min(1).values
    assert float(dist_to_mode.max()) < 1e-4
    assert float(dist.score(x).norm(dim=1).max()) < 1e-4
    # gradient ascent: both modes are reached, each chain the one of its basin
    w = mode_weights(x, dist.means)
    assert 0.4 < float(w[0]) < 0.6


# --------------------------------------------------------------------------------------------
# MALA


class GaussianEnergy:
    def __init__(self, mu: torch.Tensor, cov: torch.Tensor) -> None:
        self.mu, self.prec = mu, torch.linalg.inv(cov)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mu
        return 0.5 * ((d @ self.prec) * d).sum(1)


def mala_with_rate(*args, **kwargs) -> tuple[torch.Tensor, float]:
    """MALA's samples and its acceptance rate over the run (the last callback's)."""
    seen: list[dict] = []
    x = mala(*args, callback=seen.append, **kwargs)
    return x, seen[-1]["acceptance_rate"]


def test_mala_gaussian_moments(gen: torch.Generator) -> None:
    mu = torch.tensor([1.0, -1.0])
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    x, rate = mala_with_rate(GaussianEnergy(mu, cov), 3 * torch.randn(4000, 2, generator=gen), 0.1, n_steps=300,
                             generator=gen)
    x = x.double()
    assert 0.5 < rate < 1
    se = math.sqrt(1.8 / 4000)
    torch.testing.assert_close(x.mean(0), mu.double(), rtol=0, atol=4 * se)
    torch.testing.assert_close(torch.cov(x.T), cov.double(), rtol=0, atol=0.1)


def test_mala_corrects_the_langevin_bias(gen: torch.Generator) -> None:
    """eta = 0.5 on N(0,1): ULA's stationary variance is 2/(2 - eta) = 1.33, MALA's is exactly 1."""
    n = 20_000
    x = mala(lambda y: 0.5 * (y**2).sum(1), torch.randn(n, 1, generator=gen), 0.5, n_steps=100, generator=gen)
    assert abs(float(x.var()) - 1) < 4 * math.sqrt(2 / n)
    ula = langevin(lambda y: -y, torch.randn(n, 1, generator=gen), 0.5, n_steps=100, generator=gen)
    assert abs(float(ula.var()) - 4 / 3) < 4 * (4 / 3) * math.sqrt(2 / n)


def test_mala_double_well_moments_by_quadrature(gen: torch.Generator) -> None:
    """E(x) = (x^2 - 1)^2 + x/2, every chain started in the minor (right) well at x = 1."""

    def energy(x: torch.Tensor) -> torch.Tensor:
        return ((x**2 - 1) ** 2 + 0.5 * x).sum(1)

    grid = torch.linspace(-4, 4, 200_001, dtype=torch.float64)
    p = torch.exp(-energy(grid[:, None]))
    p = p / p.sum()
    m1, m2 = float((grid * p).sum()), float((grid**2 * p).sum())
    right = float(p[grid > 0].sum())  # ~0.30
    n = 4000
    x, rate = mala_with_rate(energy, torch.ones(n, 1), 0.05, n_steps=1500, generator=gen)
    x = x.double().flatten()
    assert 0 < rate < 1
    assert abs(float(x.mean()) - m1) < 0.05, (float(x.mean()), m1)
    assert abs(float((x**2).mean()) - m2) < 0.04, (float((x**2).mean()), m2)
    assert abs(float((x > 0).double().mean()) - right) < 0.03


def test_mala_acceptance_decreases_with_step_size(gen: torch.Generator) -> None:
    energy = GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    x0 = torch.randn(1000, 2, generator=gen) @ torch.linalg.cholesky(torch.tensor([[1.0, 0.8], [0.8, 1.0]])).T
    rates = [mala_with_rate(energy, x0, eta, n_steps=40, generator=gen)[1] for eta in (0.02, 0.2, 1.0, 4.0)]
    assert all(0 < r < 1 for r in rates), rates
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)), rates


def test_mala_accepts_energy_module_and_trajectory(make_gen) -> None:
    class Energy(torch.nn.Module):
        def energy(self, x):
            return 0.5 * (x**2).sum(1)

        forward = energy

    x, traj = mala(Energy(), torch.zeros(10, 3), 0.1, n_steps=12, generator=make_gen(0), return_trajectory=True,
                   trajectory_every=4)
    assert traj.shape == (4, 10, 3) and torch.equal(traj[-1], x)
    again = mala(Energy(), torch.zeros(10, 3), 0.1, n_steps=12, generator=make_gen(0))
    assert torch.equal(again, x)


# --------------------------------------------------------------------------------------------
# annealed Langevin (Algorithm 1)


SIGMAS = geometric_sigmas(20.0, 0.1, 10)
EPS, T = 4e-3, 100


@pytest.mark.slow
def test_annealed_recovers_imbalanced_weights_plain_does_not(gen: torch.Generator) -> None:
    dist = toy("imbalanced")
    x0 = box(3000, 8.0, 2, gen)
    x = annealed_langevin(dist.noisy_score, x0, SIGMAS, eps=EPS, steps_per_sigma=T, generator=gen)
    w_annealed = mode_weights(x, dist.means)
    plain = langevin(dist.score, x0, 0.1, n_steps=len(SIGMAS) * T + 1, generator=gen)
    w_plain = mode_weights(plain, dist.means)
    # measured (seed 0): annealed 0.21 / 0.79, plain 0.51 / 0.49
    assert abs(float(w_annealed[0]) - 0.2) < 0.03, w_annealed
    assert abs(float(w_plain[0]) - 0.2) > 0.2, w_plain
    # and the samples sit on the unit-variance components
    near = x[dist.responsibilities(x).argmax(1) == 1]
    torch.testing.assert_close(near.mean(0), torch.tensor([5.0, 5.0]), rtol=0, atol=0.1)
    torch.testing.assert_close(near.std(0), torch.tensor([1.0, 1.0]), rtol=0, atol=0.1)


def test_annealed_calls_and_step_sizes(make_gen) -> None:
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.5])
    n, t, eps = 7, 3, 0.01
    calls: list[torch.Tensor] = []

    def spy(x, sigma):
        calls.append(sigma.clone())
        return torch.zeros_like(x)

    annealed_langevin(spy, torch.zeros(n, 2), sigmas, eps=eps, steps_per_sigma=t, denoise=False, generator=make_gen(0))
    assert len(calls) == len(sigmas) * t
    for k, sigma in enumerate(calls):
        assert sigma.shape == (n,)
        assert torch.all(sigma == sigmas[k // t])
    calls.clear()
    annealed_langevin(spy, torch.zeros(n, 2), sigmas, eps=eps, steps_per_sigma=t, denoise=True, generator=make_gen(0))
    assert len(calls) == len(sigmas) * t + 1 and torch.all(calls[-1] == sigmas[-1])


def test_annealed_zero_score_variance_is_sum_of_alphas(make_gen) -> None:
    """s = 0: x_end - x_0 = sum_i sum_t sqrt(alpha_i) z, variance T sum_i alpha_i,
    alpha_i = eps sigma_i^2 / sigma_L^2; level by level the increments have variance T alpha_i."""
    sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    eps, t, n = 0.01, 4, 50_000
    alphas = eps * sigmas**2 / sigmas[-1] ** 2  # 0.16, 0.04, 0.01
    x, traj = annealed_langevin(lambda x, s: torch.zeros_like(x), torch.zeros(n, 1, dtype=torch.float64),
                                sigmas, eps=eps, steps_per_sigma=t, denoise=True, generator=make_gen(0),
                                return_trajectory=True)
    assert traj.shape == (len(sigmas) + 2, n, 1)
    assert torch.equal(traj[-1], traj[-2])  # denoising with s = 0 does nothing
    tol = 4 * math.sqrt(2 / n)
    assert abs(float(x.var()) / float(t * alphas.sum()) - 1) < tol
    for i in range(len(sigmas)):
        inc = traj[i + 1] - traj[i]
        assert abs(float(inc.var()) / float(t * alphas[i]) - 1) < tol, i


def test_annealed_drift_is_half_alpha_exactly(make_gen) -> None:
    """Same seed, constant score c vs zero score: the chains differ by exactly
    c * (T sum_i alpha_i / 2 + sigma_L^2) (the last term from the denoising step)."""
    sigmas = torch.tensor([3.0, 1.0, 0.2], dtype=torch.float64)
    eps, t = 0.002, 5
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    zero = annealed_langevin(lambda x, s: torch.zeros_like(x), x0, sigmas, eps=eps, steps_per_sigma=t,
                             generator=make_gen(3))
    const = annealed_langevin(lambda x, s: c.expand_as(x), x0, sigmas, eps=eps, steps_per_sigma=t,
                              generator=make_gen(3))
    alphas = eps * sigmas**2 / sigmas[-1] ** 2
    shift = c * (t * alphas.sum() / 2 + sigmas[-1] ** 2)
    torch.testing.assert_close(const - zero, shift.expand(4, 2), rtol=1e-12, atol=1e-12)
    no_denoise = annealed_langevin(lambda x, s: c.expand_as(x), x0, sigmas, eps=eps, steps_per_sigma=t, denoise=False,
                                   generator=make_gen(3))
    torch.testing.assert_close(const - no_denoise, (c * sigmas[-1] ** 2).expand(4, 2))


def test_annealed_denoise_is_tweedie(make_gen) -> None:
    """One point mass at mu: the noisy score at sigma_L is -(x - mu)/sigma_L^2, so the Tweedie step
    x + sigma_L^2 s(x, sigma_L) lands exactly on mu."""
    mu = torch.tensor([1.5, -0.5], dtype=torch.float64)

    def score(x, sigma):
        return -(x - mu) / sigma[:, None] ** 2

    x = annealed_langevin(score, torch.zeros(5, 2, dtype=torch.float64), [1.0, 0.3], eps=0.01, steps_per_sigma=10,
                          generator=make_gen(0))
    torch.testing.assert_close(x, mu.expand(5, 2))


def test_annealed_trajectory_seed_and_errors(make_gen) -> None:
    dist = toy("gmm2d")
    sigmas = geometric_sigmas(5.0, 0.1, 4)
    x0 = box(16, 4.0, 2, make_gen(0))
    a, traj = annealed_langevin(dist.noisy_score, x0, sigmas, eps=1e-3, steps_per_sigma=5, generator=make_gen(1),
                                return_trajectory=True)
    assert traj.shape == (len(sigmas) + 2, 16, 2)
    assert torch.equal(traj[0], x0) and torch.equal(traj[-1], a)
    _, traj_nd = annealed_langevin(dist.noisy_score, x0, sigmas, eps=1e-3, steps_per_sigma=5, denoise=False,
                                   generator=make_gen(1), return_trajectory=True)
    assert traj_nd.shape == (len(sigmas) + 1, 16, 2)
    b = annealed_langevin(dist.noisy_score, x0, sigmas, eps=1e-3, steps_per_sigma=5, generator=make_gen(1))
    c = annealed_langevin(dist.noisy_score, x0, sigmas, eps=1e-3, steps_per_sigma=5, generator=make_gen(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    for bad in (sigmas.flip(0), [1.0, 1.0], [1.0, -0.1]):
        with pytest.raises(ConfigError):
            annealed_langevin(dist.noisy_score, x0, bad, eps=1e-3, steps_per_sigma=5)
    with pytest.raises(ConfigError):
        annealed_langevin(dist.noisy_score, x0, sigmas, eps=0.0, steps_per_sigma=5)


def test_annealed_gaussian_moments_follow_the_recursion(make_gen) -> None:
    """Data N(mu, s^2 I) and its exact noisy score -(x - mu)/(s^2 + sigma_i^2) (from
    GaussianMixture.noisy_score): one step at level i is x - mu <- (1 - k_i)(x - mu) + sqrt(alpha_i) z
    with k_i = alpha_i / (2 (s^2 + sigma_i^2)), so mean and variance follow a closed recursion."""
    mu, s2 = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.5
    dist = GaussianMixture([1.0], mu[None], [s2])
    sigmas = geometric_sigmas(4.0, 0.2, 5).double()
    eps, t, n = 0.004, 100, 8000
    x = annealed_langevin(dist.noisy_score, torch.zeros(n, 2, dtype=torch.float64), sigmas, eps=eps, steps_per_sigma=t,
                          denoise=False, generator=make_gen(0))
    m, v = -mu.clone(), 0.0  # moments of x - mu, starting at x = 0
    for sigma in sigmas.tolist():
        alpha = eps * sigma**2 / float(sigmas[-1]) ** 2
        k = alpha / (2 * (s2 + sigma**2))
        for _ in range(t):
            m, v = (1 - k) * m, (1 - k) ** 2 * v + alpha
    assert abs(v - 0.54) > 0.03  # not yet at equilibrium: the recursion matters
    torch.testing.assert_close(x.mean(0), mu + m, rtol=0, atol=4 * math.sqrt(v / n))
    torch.testing.assert_close(x.var(0), torch.full((2,), v, dtype=torch.float64), rtol=4 * math.sqrt(2 / n),
                               atol=0)
