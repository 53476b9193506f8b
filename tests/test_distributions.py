"""GaussianMixture and the named toys against independent references: torch.distributions,
autograd, numerical convolution (quadrature), Monte-Carlo moments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as td

from scorematch.distributions import GaussianMixture, SampleOnlyToy, toy, toy_names
from scorematch.errors import ConfigError, DataError


def random_mixture(k: int, d: int, g: torch.Generator) -> GaussianMixture:
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    w = w / w.sum()
    mu = 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) / d + 0.3 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(w, mu, cov)


def reference(gm: GaussianMixture) -> td.MixtureSameFamily:
    return td.MixtureSameFamily(
        td.Categorical(probs=gm.weights), td.MultivariateNormal(gm.means, covariance_matrix=gm.covs)
    )


def mixture_moments(gm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a mixture: sum pi_k mu_k and sum pi_k (Sigma_k + mu_k mu_k^T) - m m^T."""
    w, mu, cov = gm.weights, gm.means, gm.covs
    m = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return m, second - m[:, None] * m[None, :]


@pytest.mark.parametrize("d", [1, 2, 5])
def test_log_prob_matches_torch_distributions(d: int, gen: torch.Generator) -> None:
    gm = random_mixture(3, d, gen)
    x = 3 * torch.randn(200, d, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(x), reference(gm).log_prob(x), rtol=1e-10, atol=1e-10)
    # float32 in, float32 out, same numbers
    lp32 = gm.log_prob(x.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32, reference(gm).log_prob(x.float().double()).float())


@pytest.mark.parametrize("d", [1, 2, 5])
def test_score_is_autograd_gradient_of_log_prob(d: int, gen: torch.Generator) -> None:
    gm = random_mixture(4, d, gen)
    x = (3 * torch.randn(100, d, generator=gen, dtype=torch.float64)).requires_grad_(True)
    (g_own,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    (g_ref,) = torch.autograd.grad(reference(gm).log_prob(x).sum(), x)
    s = gm.score(x.detach())
    torch.testing.assert_close(s, g_own, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s, g_ref, rtol=1e-9, atol=1e-9)


def test_responsibilities_are_the_posterior(gen: torch.Generator) -> None:
    gm = random_mixture(3, 2, gen)
    x = 3 * torch.randn(50, 2, generator=gen, dtype=torch.float64)
    comp = td.MultivariateNormal(gm.means, covariance_matrix=gm.covs).log_prob(x[:, None])
    post = torch.softmax(comp + gm.weights.log(), dim=1)
    torch.testing.assert_close(gm.responsibilities(x), post, rtol=1e-10, atol=1e-12)


def test_noisy_is_the_monte_carlo_convolution(gen: torch.Generator) -> None:
    gm, sigma, n = toy("gmm2d"), 0.8, 400_000
    x = gm.sample(n, generator=gen).double()
    y = x + sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    m, c = mixture_moments(gm.noisy(sigma))
    # the noisy mixture's moments are the clean ones plus sigma^2 I on the covariance
    m0, c0 = mixture_moments(gm)
    torch.testing.assert_close(m, m0)
    torch.testing.assert_close(c, c0 + sigma**2 * torch.eye(2, dtype=torch.float64))
    # Monte-Carlo: standard errors are about sqrt(c / n) ~ 0.005 for the mean, ~0.01 for the cov
    torch.testing.assert_close(y.mean(0), m, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(y.T), c, rtol=0, atol=0.05)
    torch.testing.assert_close(gm.noisy(sigma).covs, gm.covs + sigma**2 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_noisy_log_prob_is_numerical_convolution_1d(sigma: float) -> None:
    gm = toy("gmm1d")
    grid = torch.linspace(-8, 8, 160_001, dtype=torch.float64)  # spacing 1e-4 << 0.2
    dx = float(grid[1] - grid[0])
    p = gm.log_prob(grid[:, None]).exp()
    assert abs(float(p.sum()) * dx - 1) < 1e-8
    y = torch.linspace(-4, 4, 17, dtype=torch.float64)
    kernel = torch.exp(-((y[:, None] - grid[None]) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    conv = (kernel * p[None]).sum(1) * dx
    noisy = gm.noisy(sigma).log_prob(y[:, None]).exp()
    torch.testing.assert_close(noisy, conv, rtol=1e-6, atol=1e-12)


def test_sample_moments(gen: torch.Generator) -> None:
    for name in ("gmm2d", "gmm1d", "imbalanced", "8gaussians"):
        gm = toy(name)
        x = gm.sample(200_000, generator=gen).double()
        m, c = mixture_moments(gm)
        torch.testing.assert_close(x.mean(0), m, rtol=0, atol=0.03)
        torch.testing.assert_close(torch.cov(x.T).reshape(c.shape), c, rtol=0.02, atol=0.03)
    # component frequencies: the imbalanced toy's 0.2/0.8 (SE 0.0009)
    gm = toy("imbalanced")
    x = gm.sample(200_000, generator=gen)
    frac = gm.responsibilities(x).argmax(1).bincount(minlength=2).double() / len(x)
    torch.testing.assert_close(frac, torch.tensor([0.2, 0.8], dtype=torch.float64), rtol=0, atol=0.004)


def test_sample_reproducible(make_gen) -> None:
    gm = toy("gmm2d")
    a, b = gm.sample(100, generator=make_gen(3)), gm.sample(100, generator=make_gen(3))
    c = gm.sample(100, generator=make_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noisy_score_per_row_sigma(gen: torch.Generator) -> None:
    gm = toy("gmm2d")
    x = 3 * torch.randn(60, 2, generator=gen)
    levels = torch.tensor([0.05, 0.3, 1.0, 4.0])
    sig = levels[torch.randint(0, 4, (60,), generator=gen)]
    s = gm.noisy_score(x, sig)
    expected = torch.stack([gm.noisy(float(sig[i])).score(x[i:i + 1])[0] for i in range(60)])
    torch.testing.assert_close(s, expected, rtol=1e-6, atol=1e-6)
    # a float sigma is the same as a constant per-row sigma and as noisy(sigma).score
    torch.testing.assert_close(gm.noisy_score(x, 0.3), gm.noisy(0.3).score(x))
    torch.testing.assert_close(gm.noisy_score(x, torch.full((60,), 0.3)), gm.noisy(0.3).score(x))
    with pytest.raises(DataError):
        gm.noisy_score(x, torch.ones(7))
    with pytest.raises(ConfigError):
        gm.noisy(0.0)


def test_noisy_score_of_gaussian_closed_form(gen: torch.Generator) -> None:
    """One component N(mu, s^2 I): the noisy score is -(x - mu) / (s^2 + sigma^2)."""
    mu, s2 = torch.tensor([[1.0, -2.0, 0.5]]), 1.7
    gm = GaussianMixture([1.0], mu, [s2])
    x = torch.randn(40, 3, generator=gen)
    sig = torch.rand(40, generator=gen) + 0.1
    torch.testing.assert_close(gm.noisy_score(x, sig), -(x - mu) / (s2 + sig[:, None] ** 2))


def test_every_toy_samples(gen: torch.Generator) -> None:
    names = toy_names()
    assert {"gmm2d", "gmm1d", "imbalanced", "moons", "swissroll"} <= set(names)
    for name in names:
        dist = toy(name)
        d = 1 if name == "gmm1d" else 2
        assert dist.dim == d
        x = dist.sample(500, generator=gen)
        assert x.shape == (500, d), name
        assert x.dtype == torch.get_default_dtype()
        assert torch.isfinite(x).all(), name
        assert float(x.std(0).min()) > 0.05, name  # not collapsed
        if not isinstance(dist, SampleOnlyToy):
            assert torch.isfinite(dist.score(x)).all()


def test_documented_toy_parameters() -> None:
    g2 = toy("gmm2d")
    torch.testing.assert_close(g2.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(g2.means, torch.tensor([[2.0, 2.0], [-2.0, -2.0]], dtype=torch.float64))
    torch.testing.assert_close(
        g2.covs, torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.5], [-0.5, 1.0]]], dtype=torch.float64)
    )
    g1 = toy("gmm1d")
    torch.testing.assert_close(g1.covs.flatten(), torch.tensor([0.25, 0.04], dtype=torch.float64))
    torch.testing.assert_close(g1.means.flatten(), torch.tensor([2.0, -2.0], dtype=torch.float64))
    im = toy("imbalanced")
    torch.testing.assert_close(im.weights, torch.tensor([0.2, 0.8], dtype=torch.float64))


def test_unknown_toy_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        toy("gmm3d")
    for name in toy_names():
        assert name in str(info.value)


@pytest.mark.parametrize(
    "weights, means, covs",
    [
        ([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0]),  # does not sum to 1
        ([-0.5, 1.5], [[0.0], [1.0]], [1.0, 1.0]),  # negative
        ([0.0, 1.0], [[0.0], [1.0]], [1.0, 1.0]),  # zero
        ([float("nan"), 0.5], [[0.0], [1.0]], [1.0, 1.0]),
        ([0.5, 0.5], [[0.0], [1.0], [2.0]], [1.0, 1.0]),  # K mismatch
        ([0.5, 0.5], [[0.0], [float("nan")]], [1.0, 1.0]),  # non-finite mean
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, -1.0]),  # negative variance
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [1.0, 0.0]),  # singular
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]]] * 2),  # indefinite
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [[1.0, float("nan")]] * 2),
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], torch.ones(3, 2, 2)),  # wrong shape
    ],
)
def test_invalid_parameters_raise(weights, means, covs) -> None:
    with pytest.raises(ConfigError):
        GaussianMixture(weights, means, covs)


def test_wrong_input_shape_raises() -> None:
    gm = toy("gmm2d")
    with pytest.raises(DataError):
        gm.log_prob(torch.zeros(5, 3))
    with pytest.raises(DataError):
        gm.score(torch.zeros(2))
