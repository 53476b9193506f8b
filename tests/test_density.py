"""Densities recovered from analytic scores, and the Jacobian-asymmetry test of gradient fields."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.density import density_grid, jacobian_asymmetry, log_density_ratio
from scorematch.errors import ConfigError, DataError, ModelError

F64 = torch.float64



def mixture(weights, means, covs):
    """log_prob(x) and score(x) of sum_k w_k N(mu_k, Sigma_k), x of shape (n, D)."""
    w = torch.tensor(weights, dtype=F64)
    mu = torch.tensor(means, dtype=F64)
    cov = torch.tensor(covs, dtype=F64)

    def terms(x):
        diff = x[:, None, :] - mu[None]
        sol = torch.linalg.solve(cov[None], diff.unsqueeze(-1)).squeeze(-1)
        logits = (w.log() - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(cov)
                  - 0.5 * x.shape[1] * math.log(2 * math.pi))
        return torch.logsumexp(logits, 1), -(torch.softmax(logits, 1)[..., None] * sol).sum(1)

    return (lambda x: terms(x)[0]), (lambda x: terms(x)[1])


# the contract's 2-D correlated mixture and 1-D mixture
LOGP2, SCORE2 = mixture([0.5, 0.5], [[2.0, 2.0], [-2.0, -2.0]],
                        [[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.5], [-0.5, 1.0]]])
LOGP1, SCORE1 = mixture([0.6, 0.4], [[2.0], [-2.0]], [[[0.25]], [[0.04]]])


def test_log_density_ratio_of_the_mixture():
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(64, 2, generator=g, dtype=F64)
    x0 = torch.tensor([0.5, -0.3], dtype=F64)
    expect = LOGP2(x) - LOGP2(x0[None])
    got = log_density_ratio(SCORE2, x, x0)
    assert (got - expect).abs().max() < 1e-4
    # one reference point per row, and longer paths (up to 6 sd out) that cross the sharp
    # switch between the components: the Gauss-Legendre error falls spectrally with n_points
    x = 3 * torch.randn(64, 2, generator=g, dtype=F64)
    x0s = torch.randn(64, 2, generator=g, dtype=F64)
    expect = LOGP2(x) - LOGP2(x0s)
    assert (log_density_ratio(SCORE2, x, x0s, n_points=64) - expect).abs().max() < 1e-5
    assert (log_density_ratio(SCORE2, x, x0s, n_points=128) - expect).abs().max() < 1e-10


def test_log_density_ratio_is_exact_for_a_linear_score():
    """s = -P x: the integrand is linear in t, so one Gauss-Legendre node is exact."""
    p = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]], dtype=F64)
    x = torch.randn(10, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    x0 = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    expect = -0.5 * ((x @ p) * x).sum(1) + 0.5 * x0 @ p @ x0
    got = log_density_ratio(lambda y: -y @ p, x, x0, n_points=1)
    torch.testing.assert_close(got, expect)


def test_density_grid_2d_matches_the_mixture():
    grid = density_grid(SCORE2, ((-7.0, 7.0), (-7.0, 7.0)), n=100, dtype=F64)
    xs, ys = grid.coords
    assert grid.density.shape == (100, 100)
    area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert float(grid.density.sum() * area) == pytest.approx(1.0, abs=1e-12)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    true = LOGP2(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).exp().reshape(100, 100)
    assert float((grid.density - true).abs().max()) < 1e-6 * float(true.max())


def test_density_grid_1d_matches_the_mixture():
    grid = density_grid(SCORE1, (-5.0, 5.0), n=1001, dtype=F64)
    (xs,) = grid.coords
    assert grid.density.shape == (1001,)
    assert float(grid.density.sum() * (xs[1] - xs[0])) == pytest.approx(1.0, abs=1e-12)
    true = LOGP1(xs[:, None]).exp()
    assert float((grid.density - true).abs().max()) < 1e-6 * float(true.max())
    # the reference point does not matter
    other = density_grid(SCORE1, (-5.0, 5.0), n=1001, x0=[2.0], dtype=F64)
    torch.testing.assert_close(other.density, grid.density)


def test_jacobian_asymmetry_of_gradient_and_linear_fields():
    x = torch.randn(20, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert float(jacobian_asymmetry(SCORE2, x)) < 1e-12
    a = torch.tensor([[-1.0, 2.0, 0.5], [0.0, -3.0, 1.0], [1.5, -1.0, -0.5]], dtype=F64)
    x3 = torch.randn(7, 3, dtype=F64)
    expect = float(torch.linalg.norm(a - a.T) / torch.linalg.norm(a))
    assert float(jacobian_asymmetry(lambda y: y @ a.T, x3)) == pytest.approx(expect, rel=1e-12)
    # damped rotation A = [[-1, -w], [w, -1]]: ||A - A^T|| / ||A|| = 2 w / sqrt(1 + w^2)
    w = 1.0
    rot = torch.tensor([[-1.0, -w], [w, -1.0]], dtype=F64)
    value = float(jacobian_asymmetry(lambda y: y @ rot.T, x))
    assert value == pytest.approx(2 * w / math.sqrt(1 + w * w), rel=1e-12)


def test_density_errors():
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(DataError):
        log_density_ratio(SCORE2, x, torch.zeros(3, dtype=F64))
    with pytest.raises(ModelError):
        log_density_ratio(lambda y: y[:, :1], x, torch.zeros(2, dtype=F64))
    with pytest.raises(ConfigError):
        density_grid(SCORE2, (1.0, -1.0))
    with pytest.raises(ConfigError):
        density_grid(SCORE2, ((0, 1), (0, 1), (0, 1)))
    with pytest.raises(DataError):
        density_grid(SCORE2, ((0, 1), (0, 1)), x0=[0.0])
