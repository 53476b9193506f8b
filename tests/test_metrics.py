"""Metrics against brute-force double loops and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import GaussianMixture, toy
from scorematch.errors import DataError
from scorematch.metrics import fisher_divergence, median_bandwidth, mmd, mode_weights, sliced_wasserstein
from scorematch.models.mlp import ScoreMLP
from scorematch.objectives import esm


def mmd_brute(x: torch.Tensor, y: torch.Tensor, h: float) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-||a - b||^2 / 2h^2), by explicit double loops."""

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_double_loop(gen: torch.Generator) -> None:
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 3, generator=gen, dtype=torch.float64) + 0.7
    for h in (0.3, 1.0, 4.0):
        assert abs(mmd(x, y, bandwidth=h) - mmd_brute(x, y, h)) < 1e-12
    # median heuristic: 7 pooled points, 21 pairwise distances, the median is the 11th
    dists = sorted(float((a - b).norm()) for i, a in enumerate(torch.cat([x, y[:2]]))
                   for b in torch.cat([x, y[:2]])[i + 1:])
    h = dists[10]
    assert abs(median_bandwidth(x, y[:2]) - h) < 1e-12
    assert abs(mmd(x, y[:2]) - mmd_brute(x, y[:2], h)) < 1e-12
    # images are flattened
    assert abs(mmd(x.view(5, 3, 1, 1), y.view(4, 1, 3, 1), bandwidth=1.0) - mmd_brute(x, y, 1.0)) < 1e-12


def test_median_bandwidth_uses_both_samples(gen: torch.Generator) -> None:
    """The pooled median must not depend on the argument order nor ignore y when x is large."""
    x = torch.randn(2100, 2, generator=gen, dtype=torch.float64)
    y = 100 * torch.randn(2100, 2, generator=gen, dtype=torch.float64)
    for cap in (200, 2000):
        hxy, hyx = median_bandwidth(x, y, max_points=cap), median_bandwidth(y, x, max_points=cap)
        assert hxy == pytest.approx(hyx, rel=1e-12)
        assert 50 < hxy < 200  # about half the pairs are cross pairs at distance ~100 sqrt(2)
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-9)
    # small inputs: all points are pooled
    z = torch.cat([x[:5], y[:7]])
    iu = torch.triu_indices(12, 12, offset=1)
    assert median_bandwidth(x[:5], y[:7]) == float(torch.cdist(z, z)[iu[0], iu[1]].median())
    assert median_bandwidth(x[:1500], y[:10]) == median_bandwidth(x[:1500], y[:10], max_points=1510)


def test_mmd_same_vs_shifted(gen: torch.Generator) -> None:
    n = 2000
    a = torch.randn(n, 2, generator=gen)
    b = torch.randn(n, 2, generator=gen)
    c = torch.randn(n, 2, generator=gen) + torch.tensor([1.0, 0.0])
    same, shifted = mmd(a, b, bandwidth=1.0), mmd(a, c, bandwidth=1.0)
    # unbiased: the same distribution gives ~0 (either sign) at the 1/n noise level
    assert abs(same) < 3e-3
    # N(0, I) vs N(m, I), RBF h = 1: MMD^2 = 2 (h^2/(h^2+2))^(D/2) (1 - exp(-||m||^2 / (2 (h^2+2))))
    # (= 0.1023 here; the estimate's standard deviation at n = 2000 is ~0.007)
    closed = 2 * (1 / 3) * (1 - math.exp(-1.0 / 6))
    assert abs(shifted - closed) < 0.028 and shifted > 30 * abs(same)
    with pytest.raises(DataError):
        mmd(a, torch.randn(5, 3))
    with pytest.raises(DataError):
        mmd(a[:1], b)


@pytest.mark.parametrize("m", [0.5, 2.0, -1.0])
def test_sliced_wasserstein_1d_is_the_shift(m: float, gen: torch.Generator) -> None:
    n = 20_000
    x = torch.randn(n, 1, generator=gen)
    y = torch.randn(n, 1, generator=gen) + m
    assert abs(sliced_wasserstein(x, y, n_projections=8, generator=gen) - abs(m)) < 0.03
    # different sample sizes (quantile matching)
    y2 = torch.randn(15_000, 1, generator=gen) + m
    assert abs(sliced_wasserstein(x, y2, n_projections=8, generator=gen) - abs(m)) < 0.03


def test_sliced_wasserstein_translation_in_2d(gen: torch.Generator) -> None:
    """A translation by m: W_2 of every projection is |theta . m|, E_theta (theta . m)^2 = ||m||^2 / D."""
    x = torch.randn(200, 2, generator=gen)
    shift = torch.tensor([3.0, 4.0])
    # same points, shifted: the sorted projections differ exactly by theta . m, so only the
    # projections are random: (theta . m)^2 = 25 cos^2 has sd 8.8, SE 0.14 over 4000 directions
    sw = sliced_wasserstein(x, x + shift, n_projections=4000, generator=gen)
    assert abs(sw**2 - 12.5) < 0.6
    assert sliced_wasserstein(x, x.clone(), generator=gen) < 1e-6


def test_mode_weights_exact() -> None:
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = torch.tensor([[0.1, 0.2], [9.0, 1.0], [4.9, 0.0], [5.1, 0.0], [0.0, 9.0], [-3.0, -3.0],
                        [1.0, 8.0], [11.0, 0.0]])
    w = mode_weights(pts, means)
    torch.testing.assert_close(w, torch.tensor([3 / 8, 3 / 8, 2 / 8]))
    assert float(mode_weights(pts, means.double()).sum()) == 1.0
    # a mode with no samples gets weight 0
    torch.testing.assert_close(mode_weights(pts[:2], means), torch.tensor([0.5, 0.5, 0.0]))


def test_fisher_divergence_of_true_and_scaled_score(make_gen) -> None:
    dist = toy("gmm2d")
    n = 20_000
    assert fisher_divergence(dist.score, dist, n=n, generator=make_gen(0)) == pytest.approx(0.0, abs=1e-12)
    x = dist.sample(n, generator=make_gen(0))  # the same draws as the call below
    sq = float((dist.score(x) ** 2).sum(1).mean())
    for c in (0.0, 0.5, 2.0, -1.0):
        fd = fisher_divergence(lambda y, c=c: c * dist.score(y), dist, n=n, generator=make_gen(0))
        assert fd == pytest.approx(0.5 * (c - 1) ** 2 * sq, rel=1e-5)
    # and in expectation: E||s*||^2 of a single Gaussian N(0, s^2 I_D) is D / s^2
    gauss = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], [4.0])
    fd = fisher_divergence(lambda y: 2 * gauss.score(y), gauss, n=100_000, generator=make_gen(1))
    assert fd == pytest.approx(0.5 * 3 / 4, rel=0.02)


def test_fisher_divergence_of_a_model_is_esm(make_gen) -> None:
    dist = toy("gmm2d")
    model = ScoreMLP(2, hidden=16).double()
    fd = fisher_divergence(model, dist, n=500, generator=make_gen(0))
    x = dist.sample(500, generator=make_gen(0)).double()
    assert fd == pytest.approx(float(esm(model, x, dist.score).detach()), rel=1e-9)
    with pytest.raises(DataError):
        fisher_divergence(model, toy("moons"), n=10)
