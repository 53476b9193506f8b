"""Likelihoods in one pass and bits per dimension under uniform dequantisation.

``ode(..., return_log_prob=True)`` against the closed form of the 2-D Gaussian mixture noised at
sigma(eps_t) and against ``log_prob`` run afterwards on the same samples;
``dequantized_bits_per_dim`` on a discretised Gaussian whose exact score is known: per draw the
closed form of its log-density, and the bound positive, above the exact discrete code length
(from the normal CDF per cell) and equal on average to its closed-form expectation over u.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import toy
from scorematch.errors import ConfigError, DataError
from scorematch.likelihood import dequantized_bits_per_dim, log_prob
from scorematch.samplers import ode
from scorematch.sde import VESDE

F64 = torch.float64


# --------------------------------------------------------------------------- ode(return_log_prob=True)


def mixture_score(mix, sde):
    """The exact time-conditional score of the mixture under the VE SDE, in plain tensor operations
    (differentiable under vmap): sum_k r_k C_k^{-1} (mu_k - x), C_k = Sigma_k + sigma(t)^2 I."""
    w, mu, covs = mix.weights, mix.means, mix.covs
    eye = torch.eye(mu.shape[1], dtype=F64)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sig2 = sde.marginal_std(t).reshape(-1, 1, 1, 1) ** 2
        cov = covs[None] + sig2 * eye
        diff = mu[None] - x[:, None]
        sol = torch.linalg.solve(cov, diff[..., None])[..., 0]
        logits = w.log() - 0.5 * torch.logdet(cov) - 0.5 * (diff * sol).sum(-1)
        return (torch.softmax(logits, 1)[..., None] * sol).sum(1)

    return score


@pytest.fixture(scope="module")
def mixture_run():
    mix = toy("gmm2d")
    sde = VESDE(sigma_min=0.01, sigma_max=200.0)
    score = mixture_score(mix, sde)

    eps_t = 1e-3
    samples, lp = ode(score, (400, 2), sde, eps_t=eps_t, rtol=1e-6, atol=1e-6, return_log_prob=True,
                      generator=torch.Generator().manual_seed(0), dtype=F64)
    return mix, sde, score, eps_t, samples, lp


def test_ode_log_prob_is_the_mixture_density(mixture_run) -> None:
    """The model density is the prior pushed through the flow: p_eps_t of the mixture up to the
    prior's mismatch with p_T, small at sigma_max = 200 (measured: largest error 9e-4 nats, mean
    -5e-6, 170 evaluations at rtol = atol = 1e-6)."""
    mix, sde, _, eps_t, samples, lp = mixture_run
    assert lp.shape == (400,) and samples.shape == (400, 2)
    exact = mix.noisy(float(sde.marginal_std(torch.tensor(eps_t, dtype=F64)))).log_prob(samples)
    err = lp - exact
    assert float(err.abs().max()) < 5e-3 and abs(float(err.mean())) < 1e-3, (float(err.abs().max()), float(err.mean()))


def test_ode_log_prob_equals_a_second_pass(mixture_run) -> None:
    _, sde, score, eps_t, samples, lp = mixture_run
    again = log_prob(score, sde, samples, eps_t=eps_t, rtol=1e-6, atol=1e-6)
    # measured 8.7e-4: the sampler steps each row on its own, log_prob the batch as a whole
    assert float((again - lp).abs().max()) < 2e-3


def test_ode_log_prob_options() -> None:
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    score = mixture_score(toy("gmm2d"), sde)
    plain = ode(score, (16, 2), sde, generator=torch.Generator().manual_seed(1), dtype=F64, denoise=False)
    both, lp = ode(score, (16, 2), sde, generator=torch.Generator().manual_seed(1), dtype=F64, return_log_prob=True)
    # the same start; the end points agree to the solver's accuracy (the log-density's error steers
    # the steps too; measured 1.2e-3, the row furthest from a 1e-10 solve without it); no Tweedie step
    assert isinstance(plain, torch.Tensor) and lp.shape == (16,)
    assert float((plain - both).abs().max()) < 3e-3
    _, hutch = ode(score, (16, 2), sde, generator=torch.Generator().manual_seed(1), dtype=F64, return_log_prob=True,
                   exact_trace=False, n_probes=4)
    assert float((hutch - lp).abs().mean()) < 0.5
    seen = []
    out, traj, lp2 = ode(score, (16, 2), sde, generator=torch.Generator().manual_seed(1), dtype=F64,
                         return_log_prob=True, return_trajectory=True, n_snapshots=5, callback=seen.append)
    assert traj.shape == (5, 16, 2) and torch.equal(traj[-1], out)
    assert [d["nfe"] for d in seen] == list(range(1, len(seen) + 1)) and torch.equal(lp2, lp)
    with pytest.raises(ConfigError, match="denoise"):
        ode(score, (4, 2), sde, return_log_prob=True, denoise=True)


# --------------------------------------------------------------------------- dequantised bits per dimension

S = 0.3      # data N(0, S^2 I) in the model's space [-1, 1]
LEVELS = 16
D = 4


def _quantised(n: int, seed: int) -> torch.Tensor:
    z = S * torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)
    k = ((z + 1) / 2 * LEVELS).floor().clamp(0, LEVELS - 1)
    return k / (LEVELS - 1)


def _gauss_sde():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)

    def score(x, t):
        return -x / (S**2 + sde.marginal_std(t).reshape(-1, 1) ** 2)

    return sde, score


def test_dequantized_bits_per_dim_is_the_closed_form_per_draw() -> None:
    sde, score = _gauss_sde()
    x = _quantised(32, 0)
    res = dequantized_bits_per_dim(score, sde, x, levels=LEVELS, data_range=(-1.0, 1.0),
                                   generator=torch.Generator().manual_seed(5), rtol=1e-7, atol=1e-7)
    # the same u: the first draw of the same generator
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    y = (x * (LEVELS - 1) + u) / LEVELS
    v = S**2 + float(sde.marginal_std(torch.tensor(1e-5, dtype=F64))) ** 2
    log_p_model = torch.distributions.Normal(0.0, math.sqrt(v)).log_prob(2 * y - 1).sum(1)
    expect = -(log_p_model + D * math.log(2) - D * math.log(LEVELS)) / (D * math.log(2))
    torch.testing.assert_close(res.variational_bound, expect, rtol=0, atol=1e-4)
    assert (res.variational_bound > 0).all()


def test_dequantized_bits_per_dim_bounds_the_discrete_code_length() -> None:
    """E_u of the bound in closed form per coordinate: -log N(c; 0, v) + w^2 / (24 v) with c the
    cell's centre and w = 2 / levels its width in the model's space (+ log(levels) - log 2 for
    the map); the exact -log2 P(x_int) from the normal CDF is below it, and the bound estimated
    with 256 draws per row is within 4 standard errors of its expectation."""
    sde, score = _gauss_sde()
    x = _quantised(6, 1)
    res = dequantized_bits_per_dim(score, sde, x, levels=LEVELS, data_range=(-1.0, 1.0), n_draws=256,
                                   generator=torch.Generator().manual_seed(2))
    v = S**2 + 0.01**2
    w = 2 / LEVELS
    k = (x * (LEVELS - 1)).round()
    c = -1 + (k + 0.5) * w
    normal = torch.distributions.Normal(0.0, math.sqrt(v))
    expected_bits = (-(normal.log_prob(c) - w**2 / (24 * v)) - math.log(w)).sum(1) / (D * math.log(2))
    cell = normal.cdf(c + w / 2) - normal.cdf(c - w / 2)
    discrete_bits = -cell.log().sum(1) / (D * math.log(2))
    assert (discrete_bits > 0).all() and (discrete_bits < expected_bits).all()
    # the spread of one draw's bound: per coordinate (y - c) (2c) / (2v) varies with sd |c| w / (sqrt(12) v)
    se = (c.abs() * w / (math.sqrt(12) * v)).pow(2).sum(1).sqrt() / (D * math.log(2)) / math.sqrt(256)
    assert ((res.variational_bound - expected_bits).abs() < 4 * se + 1e-4).all(), (res.variational_bound,
                                                                                   expected_bits, se)


def test_dequantized_bits_per_dim_refuses_data_off_the_grid() -> None:
    sde, score = _gauss_sde()
    with pytest.raises(DataError, match="quantised values"):
        dequantized_bits_per_dim(score, sde, torch.full((2, D), 0.5013, dtype=F64), levels=LEVELS)
    with pytest.raises(DataError, match="quantised values"):
        dequantized_bits_per_dim(score, sde, torch.full((2, D), 2.0, dtype=F64), levels=LEVELS)
    with pytest.raises(ConfigError, match="data_range"):
        dequantized_bits_per_dim(score, sde, _quantised(2, 0), levels=LEVELS, data_range=(1.0, -1.0))
