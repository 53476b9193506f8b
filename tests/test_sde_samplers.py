"""Score-SDE samplers and probability-flow likelihoods driven by the ANALYTIC time-dependent score
of the contract's Gaussian mixtures (Song et al. 2021), so every error measured here is the
sampler's or the ODE solver's, never a network's.

The marginal of a mixture sum_k pi_k N(mu_k, Sigma_k) under an SDE with kernel
N(m(t) x_0, std(t)^2 I) is the mixture with means m(t) mu_k and covariances
m(t)^2 Sigma_k + std(t)^2 I. Under VE (m = 1, std = sigma(t)) that is the library's own
``GaussianMixture.noisy(sigma(t))``, which the VE samplers use through ``sigma_conditioned``.

Sample quality is the unbiased MMD^2 with a fixed RBF bandwidth h = 1 (the components' scale:
more sensitive to a wrong covariance than the median heuristic, which is ~10 on `imbalanced`).
Sample-vs-sample baseline, two fresh draws of n = 2000 (40 repetitions): mean ~0, standard
deviation 3.1e-4 (imbalanced) / 4.2e-4 (gmm2d), maximum 8.5e-4. MMD_TOL = 2e-3 is ~5 standard
deviations of that baseline; a 10-step Euler-Maruyama run scores ~1.6e-2 and a sampler of the
mixture with 1.3x covariances 3e-3 to 4.5e-3, so the bound has power.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import GaussianMixture, toy
from scorematch.likelihood import log_prob
from scorematch.metrics import mmd, mode_weights
from scorematch.samplers import euler_maruyama, ode, pc
from scorematch.sde import SDE, VESDE, VPSDE, SubVPSDE, sigma_conditioned

F64 = torch.float64
MMD_BANDWIDTH = 1.0
MMD_TOL = 2e-3
MODE_TOL = 0.03
# sigma_max = 100 keeps the VE prior mismatch small for the ODE (see the prior-mismatch test)
SDES = {"ve": VESDE(0.01, 100.0), "vp": VPSDE(), "subvp": SubVPSDE()}



# --------------------------------------------------------------------------- analytic marginals


def marginal_terms(mix: GaussianMixture, sde: SDE, x: torch.Tensor, t: torch.Tensor):
    """log p_t(x) and grad log p_t(x), per row, for p_t = sum_k pi_k N(m mu_k, m^2 Sigma_k + std^2 I)
    with m = m(t_i), std = std(t_i) of each row (pure tensor ops, so it also runs under vmap)."""
    m = sde.mean_coeff(t).to(x.dtype)
    s = sde.marginal_std(t).to(x.dtype)
    mu, cov0, w = mix.means.to(x), mix.covs.to(x), mix.weights.to(x)
    d = x.shape[1]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    cov = m[:, None, None, None] ** 2 * cov0[None] + s.pow(2)[:, None, None, None] * eye
    diff = x[:, None, :] - m[:, None, None] * mu[None]
    sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)
    logits = (w.log() - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(cov)
              - 0.5 * d * math.log(2 * math.pi))
    resp = torch.softmax(logits, dim=1)
    return torch.logsumexp(logits, dim=1), -(resp[..., None] * sol).sum(1)


def marginal_mixture(mix: GaussianMixture, sde: SDE, t: float) -> GaussianMixture:
    """p_t as a GaussianMixture (to sample it exactly)."""
    tt = torch.tensor(float(t), dtype=F64)
    m, s = float(sde.mean_coeff(tt)), float(sde.marginal_std(tt))
    eye = torch.eye(mix.dim, dtype=F64)
    return GaussianMixture(mix.weights, m * mix.means, m * m * mix.covs + s * s * eye)


def time_score(mix: GaussianMixture, sde: SDE):
    """The exact score s(x, t) = grad log p_t(x): under VE the library's noisy mixture score."""
    if isinstance(sde, VESDE):
        return sigma_conditioned(mix.noisy_score, sde)
    return lambda x, t: marginal_terms(mix, sde, x, t)[1]


class ExactTerminal(SDE):
    """``sde`` with its prior p_T replaced by the exact terminal marginal p_1 of the mixture, so
    log_prob = log p_1(x(1)) + int div v is exact up to the ODE solver (no prior mismatch)."""

    def __init__(self, base: SDE, mix: GaussianMixture) -> None:
        self.base, self.mix = base, mix

    def drift(self, x, t):
        return self.base.drift(x, t)

    def diffusion(self, t):
        return self.base.diffusion(t)

    def mean_coeff(self, t):
        return self.base.mean_coeff(t)

    def marginal_std(self, t):
        return self.base.marginal_std(t)

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self.base.prior_std

    def prior_log_prob(self, x):
        return marginal_terms(self.mix, self.base, x, torch.ones(x.shape[0], dtype=x.dtype))[0]


def test_marginal_helper_is_the_noisy_mixture_under_ve_and_the_data_at_t0():
    mix = toy("gmm2d")
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(50, 2, generator=g, dtype=F64)
    t = torch.rand(50, generator=g, dtype=F64)
    sde = SDES["ve"]
    lp, s = marginal_terms(mix, sde, x, t)
    torch.testing.assert_close(s, mix.noisy_score(x, sde.sigma(t)))
    torch.testing.assert_close(s, time_score(mix, sde)(x, t))
    torch.testing.assert_close(lp[:1], mix.noisy(float(sde.sigma(t[0]))).log_prob(x[:1]))
    # VP at t = 0 is the data itself (m = 1, std = 0)
    lp0, s0 = marginal_terms(mix, VPSDE(), x, torch.zeros(50, dtype=F64))
    torch.testing.assert_close(s0, mix.score(x))
    torch.testing.assert_close(lp0, mix.log_prob(x))


# --------------------------------------------------------------------------- samplers

N_SAMPLES = {"imbalanced": 4000, "gmm2d": 2000}


def run_sampler(name: str, mix: GaussianMixture, sde: SDE, n: int, seed: int,
                x0: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Samples and the number of score evaluations; EM 300 steps, PC 150 x (1 + 1), ODE dopri5."""
    g = torch.Generator().manual_seed(seed)
    score = time_score(mix, sde)
    start = (n, mix.dim) if x0 is None else x0
    if name == "euler_maruyama":
        return euler_maruyama(score, start, sde, n_steps=300, generator=g, dtype=F64), 301
    if name == "pc":
        return pc(score, start, sde, n_steps=150, generator=g, dtype=F64), 301
    seen: list[dict] = []
    x = ode(score, start, sde, generator=g, dtype=F64, callback=seen.append)
    return x, seen[-1]["nfe"]


CASES = [(d, s, m) for d in ("imbalanced", "gmm2d") for s in SDES
         for m in ("euler_maruyama", "pc", "ode") if d == "imbalanced" or s != "subvp"]


@pytest.mark.parametrize(("data", "sde_name", "sampler"), CASES)
def test_samplers_reproduce_the_mixture(data, sde_name, sampler):
    """MMD^2 to fresh mixture samples within the sample-vs-sample noise, and the mode weights
    (0.2, 0.8) of `imbalanced` / (0.5, 0.5) of gmm2d within 0.03."""
    mix, sde, n = toy(data), SDES[sde_name], N_SAMPLES[data]
    x, nfe = run_sampler(sampler, mix, sde, n, seed=1)
    assert torch.isfinite(x).all()
    fresh = mix.sample(n, torch.Generator().manual_seed(2)).to(F64)
    assert mmd(x, fresh, bandwidth=MMD_BANDWIDTH) < MMD_TOL
    weights = mode_weights(x, mix.means)
    assert (weights - mix.weights).abs().max() < MODE_TOL, weights
    if sampler == "ode":
        assert 20 < nfe < 400


def test_mmd_bound_has_power():
    """A 10-step Euler-Maruyama run is visibly off: its MMD^2 is far above MMD_TOL."""
    mix, sde = toy("imbalanced"), SDES["vp"]
    g = torch.Generator().manual_seed(3)
    x = euler_maruyama(time_score(mix, sde), (2000, 2), sde, n_steps=10, generator=g, dtype=F64)
    fresh = mix.sample(2000, torch.Generator().manual_seed(4)).to(F64)
    assert mmd(x, fresh, bandwidth=MMD_BANDWIDTH) > 3 * MMD_TOL


def test_ode_mode_weights_error_is_the_prior_mismatch():
    """VE with sigma_max = 20 (about the largest pairwise distance of `imbalanced`, the usual
    rule): p_1 is centred at the data mean (3, 3), not at 0, and the deterministic flow carries
    that offset of the prior N(0, 20^2 I) into the mode weights (0.2 -> ~0.25; Euler-Maruyama
    from the same prior gives ~0.235 too). Started from the exact p_1 instead, the same ODE
    recovers 0.2: the error is the prior's, not the sampler's."""
    mix, sde, n = toy("imbalanced"), VESDE(0.01, 20.0), 4000
    x, _ = run_sampler("ode", mix, sde, n, seed=0)
    w_prior = float(mode_weights(x, mix.means)[0])
    x1 = marginal_mixture(mix, sde, 1.0).sample(n, torch.Generator().manual_seed(5)).to(F64)
    x, _ = run_sampler("ode", mix, sde, n, seed=0, x0=x1)
    w_exact = float(mode_weights(x, mix.means)[0])
    assert w_prior > 0.23, w_prior
    assert abs(w_exact - 0.2) < MODE_TOL, w_exact


# --------------------------------------------------------------------------- likelihood

POINTS = {
    "gmm2d": [[2.0, 2.0], [-1.0, -2.5], [0.0, 0.0], [3.0, 1.0], [-2.0, -1.0], [4.0, 4.5]],
    "imbalanced": [[-5.0, -5.0], [5.0, 5.0], [0.0, 0.0], [4.0, 6.5], [-6.0, -3.5], [1.5, 2.0]],
}


@pytest.mark.parametrize("data", ["gmm2d", "imbalanced"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_log_likelihood_is_the_mixture_density(data, sde_name):
    """With the exact terminal density, the probability-flow log-likelihood is log p_eps_t(x) to
    the solver tolerance (measured <= 1.3e-5 at rtol = atol = 1e-7), and the mixture's own
    log_prob up to the eps_t = 1e-5 smoothing (VE: std(eps_t) ~ 0.01, i.e. ~2e-3 nats at the
    low-density midpoint of `imbalanced`, < 3e-5 elsewhere)."""
    mix, sde = toy(data), SDES[sde_name]
    x = torch.tensor(POINTS[data], dtype=F64)
    score = lambda y, t: marginal_terms(mix, sde, y, t)[1]  # noqa: E731
    lp = log_prob(score, ExactTerminal(sde, mix), x, rtol=1e-7, atol=1e-7, eps_t=1e-5)
    at_eps = marginal_terms(mix, sde, x, torch.full((len(x),), 1e-5, dtype=F64))[0]
    assert (lp - at_eps).abs().max() < 1e-4
    assert (lp - mix.log_prob(x)).abs().max() < 5e-3


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_ode_log_likelihood_of_gmm2d_with_the_plain_prior(sde_name):
    """gmm2d has mean 0, so the N(0, I) prior matches p_1 to ~1e-4: log_prob as shipped (default
    tolerances) equals the analytic log-density to 3e-3 (measured 1.1e-3). The VE case is in
    test_likelihood.py."""
    mix, sde = toy("gmm2d"), SDES[sde_name]
    x = torch.tensor(POINTS["gmm2d"], dtype=F64)
    lp = log_prob(time_score(mix, sde), sde, x)
    assert (lp - mix.log_prob(x)).abs().max() < 3e-3


def test_prior_mismatch_is_the_only_other_error_on_imbalanced():
    """`imbalanced` has mean (3, 3): under VP p_1 is offset by m(1) * 3 sqrt(2) ~ 0.03 from the
    N(0, I) prior, which costs ~|m(1) mean| |x(1)| ~ 0.035 nats (documented in log_prob); the
    same solve with the exact p_1 is within 1e-3."""
    mix, sde = toy("imbalanced"), SDES["vp"]
    x = torch.tensor(POINTS["imbalanced"], dtype=F64)
    plain = log_prob(time_score(mix, sde), sde, x)
    exact = log_prob(time_score(mix, sde), ExactTerminal(sde, mix), x)
    ref = mix.log_prob(x)
    assert (exact - ref).abs().max() < 1e-3
    err = (plain - ref).abs().max()
    assert 5e-3 < err < 0.08, err
