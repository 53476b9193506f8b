"""Probability-flow ODE likelihoods against closed-form Gaussian and mixture densities."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.errors import ConfigError, DataError, ModelError
from scorematch.likelihood import bits_per_dim, log_prob
from scorematch.sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64
SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}



def gaussian_marginal(sde, mu: torch.Tensor, cov: torch.Tensor, t: torch.Tensor):
    """Mean (n, D) and covariance (n, D, D) of p_t for data N(mu, cov): m mu, m^2 cov + std^2 I."""
    m, std = sde.mean_coeff(t), sde.marginal_std(t)
    eye = torch.eye(mu.shape[0], dtype=F64)
    return m[:, None] * mu, m[:, None, None] ** 2 * cov + std[:, None, None] ** 2 * eye


def gaussian_score(sde, mu: torch.Tensor, cov: torch.Tensor):
    def score(x, t):
        mean, c = gaussian_marginal(sde, mu, cov, t)
        return -torch.linalg.solve(c, (x - mean).unsqueeze(-1)).squeeze(-1)

    return score


def mixture_terms(x, weights, means, covs, var):
    """Per-row log-density and score of sum_k w_k N(mu_k, Sigma_k + var I) (var of shape (n,))."""
    cov = covs[None] + var[:, None, None, None] * torch.eye(x.shape[1], dtype=x.dtype)
    diff = x[:, None, :] - means[None]
    sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)
    logits = (weights.log() - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(cov)
              - 0.5 * x.shape[1] * math.log(2 * math.pi))
    resp = torch.softmax(logits, dim=1)
    return torch.logsumexp(logits, dim=1), -(resp[..., None] * sol).sum(1)


# the 2-D correlated mixture of the contract
W = torch.tensor([0.5, 0.5], dtype=F64)
MEANS = torch.tensor([[2.0, 2.0], [-2.0, -2.0]], dtype=F64)
COVS = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.5], [-0.5, 1.0]]], dtype=F64)
X = torch.tensor([[2.0, 2.0], [-1.0, -2.5], [0.0, 0.0], [3.0, 1.0], [-2.0, -1.0]], dtype=F64)


@pytest.mark.parametrize("name", list(SDES))
def test_log_prob_of_a_gaussian_equals_its_density(name):
    """Data N(0, s2 I): log_prob = log N(x; 0, (s2 + std(eps_t)^2) I) to 1e-3 (exact trace)."""
    sde, s2, eps_t = SDES[name], 0.25, 1e-5
    cov = s2 * torch.eye(2, dtype=F64)
    x = 0.3 * X
    res = log_prob(gaussian_score(sde, torch.zeros(2, dtype=F64), cov), sde, x, eps_t=eps_t,
                   return_nfe=True)
    var = s2 + float(sde.marginal_std(torch.tensor(eps_t, dtype=F64))) ** 2
    expect = torch.distributions.Normal(0.0, math.sqrt(var)).log_prob(x).sum(1)
    assert (res.log_prob - expect).abs().max() < 1e-3
    assert 10 < res.nfe < 500


@pytest.mark.parametrize("name", list(SDES))
def test_log_prob_integrates_the_exact_gaussian_flow(name):
    """Data N(mu, s2 I): the flow is x_1 = m(1) mu + sqrt(v_1/v_eps) (x - m(eps) mu), so the
    ODE gives exactly log p_T(x_1) + D/2 log(v_1 / v_eps), whatever the prior mismatch
    (tolerances 1e-8 here; the default 1e-5 gives errors up to about 5e-4)."""
    sde, s2, eps_t = SDES[name], 0.25, 1e-5
    mu = torch.tensor([1.0, -0.5], dtype=F64)
    x = mu + 0.5 * X
    lp = log_prob(gaussian_score(sde, mu, s2 * torch.eye(2, dtype=F64)), sde, x, eps_t=eps_t,
                  rtol=1e-8, atol=1e-8)
    tt = torch.tensor([eps_t, 1.0], dtype=F64)
    m = sde.mean_coeff(tt)
    v = m**2 * s2 + sde.marginal_std(tt) ** 2
    x1 = m[1] * mu + (v[1] / v[0]).sqrt() * (x - m[0] * mu)
    expect = sde.prior_log_prob(x1) + torch.log(v[1] / v[0])
    assert (lp - expect).abs().max() < 1e-5


def test_log_prob_of_the_mixture_under_ve():
    """The VE marginal of the mixture is the mixture with Sigma_k + sigma(t)^2 I (analytic score);
    with sigma_max = 100 the prior mismatch at T is below 5e-4."""
    sde = VESDE(0.01, 100.0)

    def score(x, t):
        return mixture_terms(x, W, MEANS, COVS, sde.marginal_std(t) ** 2)[1]

    lp = log_prob(score, sde, X)
    expect = mixture_terms(X, W, MEANS, COVS, torch.zeros(5, dtype=F64))[0]
    assert (lp - expect).abs().max() < 1e-3


def test_hutchinson_estimate_is_unbiased():
    """400 copies of one x, one Rademacher probe each: the mean of the estimates matches the
    exact-trace log-density within 4 standard errors (the Jacobian is not diagonal)."""
    sde = VPSDE()
    mu = torch.zeros(3, dtype=F64)  # a mean offset would add a prior mismatch m(1) mu ~ 1e-2
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.5]], dtype=F64)
    cov = a @ a.T
    score = gaussian_score(sde, mu, cov)
    x = torch.tensor([[0.8, -0.2, 0.4]], dtype=F64)
    exact = log_prob(score, sde, x, exact_trace=True)
    est = log_prob(score, sde, x.expand(400, 3), exact_trace=False,
                   generator=torch.Generator().manual_seed(0))
    se = float(est.std()) / math.sqrt(400)
    assert float(est.std()) > 1e-3
    assert abs(float(est.mean() - exact[0])) < 4 * se
    # many probes per row shrink the spread like 1/sqrt(n_probes)
    est16 = log_prob(score, sde, x.expand(50, 3), exact_trace=False, n_probes=16,
                     generator=torch.Generator().manual_seed(1))
    assert float(est16.std()) < 0.5 * float(est.std())
    # and the exact density of the Gaussian itself
    mean, c = gaussian_marginal(sde, mu, cov, torch.tensor([1e-5], dtype=F64))
    ref = torch.distributions.MultivariateNormal(mean[0], c[0]).log_prob(x)
    assert abs(float(exact[0] - ref[0])) < 1e-3


def test_nfe_counts_right_hand_side_evaluations():
    sde = VPSDE()
    calls = [0]
    base = gaussian_score(sde, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))

    def score(x, t):
        calls[0] += 1
        return base(x, t)

    res = log_prob(score, sde, X, exact_trace=False, return_nfe=True,
                   generator=torch.Generator().manual_seed(0))
    assert res.nfe == calls[0]
    # N(0, I) is invariant under the VP SDE: the ODE is x' = 0 and log p = log N(x; 0, I)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(X).sum(1)
    torch.testing.assert_close(res.log_prob, ref, atol=1e-8, rtol=0)


def test_images_use_hutchinson_and_keep_their_shape():
    """(n, 1, 4, 5) data N(0, I) under VP: D = 20 > 16 gives Hutchinson; exact for this field."""
    sde = VPSDE()
    x = torch.randn(3, 1, 4, 5, dtype=F64, generator=torch.Generator().manual_seed(0))

    def score(y, t):
        assert y.shape[1:] == (1, 4, 5)
        return -y

    lp = log_prob(score, sde, x, generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lp, ref, atol=1e-8, rtol=0)


def test_log_prob_errors():
    sde = VPSDE()
    with pytest.raises(DataError):
        log_prob(lambda y, t: -y, sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ConfigError):
        log_prob(lambda y, t: -y, sde, X, eps_t=2.0)
    with pytest.raises(ConfigError):
        log_prob(lambda y, t: -y, sde, X, method="leapfrog")
    with pytest.raises(ModelError):
        log_prob(lambda y, t: -y[:, :1], sde, X, exact_trace=False)


def test_bits_per_dim_closed_forms():
    d = 12
    # the uniform density on [0, 1]^D has log p = 0: 8 bits per dim at 256 levels
    torch.testing.assert_close(bits_per_dim(torch.zeros(3), d), torch.full((3,), 8.0))
    # the uniform density on [-1, 1]^D has log p = -D log 2: also 8 bits with data_width = 2
    lp = torch.tensor([-d * math.log(2.0)])
    assert float(bits_per_dim(lp, d, data_width=2.0)) == pytest.approx(8.0)
    lp = torch.tensor([-100.0, 50.0])
    expect = -(lp - d * math.log(16)) / (d * math.log(2))
    torch.testing.assert_close(bits_per_dim(lp, d, levels=16), expect)
    with pytest.raises(ConfigError):
        bits_per_dim(lp, 0)
