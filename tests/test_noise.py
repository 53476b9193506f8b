"""Noise schedules: the geometric sequence, NCSNv2's dimension rule and the proposed schedule."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.errors import ConfigError
from scorematch.noise import (
    eps_for_schedule,
    geometric_sigmas,
    propose_schedule,
    ratio_for_dimension,
    variance_ratio,
)


def phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


@pytest.mark.parametrize("hi, lo, n", [(50.0, 0.01, 10), (1.0, 0.01, 232), (20.0, 0.1, 2), (3.0, 2.9, 7)])
def test_geometric_sigmas(hi: float, lo: float, n: int) -> None:
    s = geometric_sigmas(hi, lo, n).double()
    assert s.shape == (n,)
    assert s[0].item() == pytest.approx(hi, rel=1e-6) and s[-1].item() == pytest.approx(lo, rel=1e-6)
    assert (s[1:] < s[:-1]).all()
    ratios = s[1:] / s[:-1]
    expected = (lo / hi) ** (1 / (n - 1))
    torch.testing.assert_close(ratios, torch.full_like(ratios, expected), rtol=1e-5, atol=0)
    # sigma_i = sigma_1 (sigma_L / sigma_1)^((i-1)/(L-1))
    i = torch.arange(n, dtype=torch.float64)
    torch.testing.assert_close(s, hi * (lo / hi) ** (i / (n - 1)), rtol=1e-6, atol=0)


def test_geometric_sigmas_edge_cases() -> None:
    assert geometric_sigmas(5.0, 0.1, 1).tolist() == [5.0]
    for args in ((0.1, 5.0, 10), (1.0, 1.0, 3), (1.0, 0.0, 3), (-1.0, 0.1, 3), (1.0, 0.1, 0), (1.0, 0.1, 2.5)):
        with pytest.raises(ConfigError):
            geometric_sigmas(*args)


@pytest.mark.parametrize("d", [5, 10, 100, 784, 3072])
def test_ratio_for_dimension_solves_its_equation(d: int) -> None:
    gamma = ratio_for_dimension(d)
    r = math.sqrt(2 * d)
    overlap = phi(r * (gamma - 1) + 3 * gamma) - phi(r * (gamma - 1) - 3 * gamma)
    assert gamma > 1
    assert overlap == pytest.approx(0.5, abs=1e-9)
    # the root is unique: slightly smaller gamma overlaps more, slightly larger less
    lower = phi(r * (gamma * 0.999 - 1) + 3 * gamma * 0.999) - phi(r * (gamma * 0.999 - 1) - 3 * gamma * 0.999)
    assert lower > 0.5


def test_ratio_for_dimension_small_and_monotone() -> None:
    assert all(ratio_for_dimension(d) is None for d in (1, 2, 3, 4))
    gammas = [ratio_for_dimension(d) for d in (5, 10, 100, 1000, 10_000)]
    assert all(a > b for a, b in zip(gammas, gammas[1:], strict=False))
    # large D: gamma ~ 1 + 3 gamma / sqrt(2D) (the shells' overlap point)
    d = 10_000
    g = ratio_for_dimension(d)
    assert abs((g - 1) * math.sqrt(2 * d) / (3 * g) - 1) < 0.05


def test_variance_ratio_is_the_recursion() -> None:
    """A point mass at 0, score -x/sigma_i^2, start variance (gamma sigma_i)^2, T alpha-form steps:
    v <- (1 - alpha/(2 sigma_i^2))^2 v + alpha, alpha = eps sigma_i^2 / sigma_L^2."""
    eps, gamma, sigma_l, t = 3e-6, 1.3, 0.01, 7
    for sigma_i in (0.01, 0.5, 20.0):
        alpha = eps * sigma_i**2 / sigma_l**2
        v = (gamma * sigma_i) ** 2
        for _ in range(t):
            v = (1 - alpha / (2 * sigma_i**2)) ** 2 * v + alpha
        assert variance_ratio(eps, gamma, sigma_l, t) == pytest.approx(v / sigma_i**2, rel=1e-10)
    # technique 4: eps minimises |ratio - 1| (with T = 7 the ratio cannot reach 1 here: both terms
    # of (1 - k)^(2T) (gamma^2 - c) + c are >= 0 and c > 1) ...
    others = (torch.logspace(-10, math.log10(1.9), 300, dtype=torch.float64) * sigma_l**2).tolist()
    for steps in (7, 200):
        best = eps_for_schedule(gamma, sigma_l, steps)
        err = abs(variance_ratio(best, gamma, sigma_l, steps) - 1)
        assert all(err <= abs(variance_ratio(e, gamma, sigma_l, steps) - 1) + 1e-12 for e in others)
    # ... with T = 200 it comes close (c = 2/(2 - k) > 1 keeps it just above 1: 1.009)
    assert err < 0.02


def test_propose_schedule_sigma_1_is_max_pairwise_distance(gen: torch.Generator) -> None:
    data = torch.randn(30, 2, generator=gen) * torch.tensor([3.0, 1.0])
    brute = max(float((a - b).norm()) for a in data for b in data)
    sched = propose_schedule(data, sigma_min=0.01, steps_per_sigma=5)
    assert float(sched.sigmas[0]) == pytest.approx(brute, rel=1e-6)
    assert float(sched.sigmas[-1]) == pytest.approx(0.01, rel=1e-6)
    assert len(sched.sigmas) == 10  # D = 2 has no dimension-rule solution
    assert (sched.sigmas[1:] < sched.sigmas[:-1]).all()
    gamma = (brute / 0.01) ** (1 / 9)
    assert sched.eps == eps_for_schedule(gamma, 0.01, 5)
    assert "sigma_1" in sched.report()


def test_propose_schedule_dimension_rule(gen: torch.Generator) -> None:
    data = torch.rand(50, 1, 4, 4, generator=gen)  # D = 16
    sched = propose_schedule(data, sigma_min=0.01)
    flat = data.flatten(1).double()
    brute = max(float((a - b).norm()) for a in flat for b in flat)
    assert float(sched.sigmas[0]) == pytest.approx(brute, rel=1e-6)
    gamma = ratio_for_dimension(16)
    assert len(sched.sigmas) == 1 + math.ceil(math.log(brute / 0.01) / math.log(gamma))
    with pytest.raises(ConfigError):
        propose_schedule(torch.zeros(5, 3))
    assert len(propose_schedule(data, n_levels=4).sigmas) == 4
