"""Restart sampling (Xu et al. 2023) against what it must be: heun exactly with no restarts, the
closed-form law on Gaussian data with the exact score, the contraction of a coarse main pass's
error, its evaluation count and its per-row noise."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import toy
from scorematch.errors import ConfigError
from scorematch.noise import karras_sigmas
from scorematch.samplers.denoising import heun
from scorematch.samplers.restart import restart, restart_level, restart_nfe
from scorematch.samplers.streams import RowGenerators

MU, S = 1.5, 0.5


def gaussian_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact score of N(MU, S^2 I) convolved with N(0, sigma^2 I)."""
    return -(x - MU) / (S**2 + sigma[:, None] ** 2)


def start(n: int, d: int = 2, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return 80 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_restarts_is_heun_exactly(dtype):
    mix = toy("gmm2d")
    x0, sig = start(64, dtype=dtype), karras_sigmas(9, 0.002, 80)

    def score(x, sigma):
        return mix.noisy_score(x.double(), sigma.double()).to(dtype)

    assert torch.equal(restart(score, x0, sig, restarts=0), heun(score, x0, sig))
    # with a restart it is another sampler: the noise moves every row
    moved = restart(score, x0, sig, restarts=1, generator=torch.Generator().manual_seed(0)) - heun(score, x0, sig)
    assert float(moved.abs().min()) > 0


def test_gaussian_data_with_the_exact_score_gives_the_closed_form_law():
    """N(1.5, 0.25): with fine steps the samples' mean and variance are MU and S^2 with restarts
    too. Adding noise of variance t_max^2 (not t_max^2 - t_min^2) would give the variance
    (S^2 + t_min^2)(1 + t_min^2 / (S^2 + t_max^2)) = 1.54 here, not 0.25."""
    x0 = start(20000)
    for k in (1, 3):
        y = restart(gaussian_score, x0, karras_sigmas(40, 0.002, 80), restarts=k, restart_steps=10, restart_min=1.0,
                    restart_max=5.0, generator=torch.Generator().manual_seed(2))
        assert float(y.mean()) == pytest.approx(MU, abs=0.01)  # standard error 0.0025
        assert float(y.var()) == pytest.approx(S**2, rel=0.03)  # standard error 0.7 %


def test_restarts_contract_the_error_of_a_coarse_main_pass():
    """Heun with 4 steps leaves the variance 19x too large; restarts with fine backward steps pull it
    back towards S^2, more with more restarts (the contraction of Xu et al. 2023, Theorem 2)."""
    x0, sig = start(20000), karras_sigmas(4, 0.002, 80)
    errors = []
    for k in (0, 1, 2):
        y = restart(gaussian_score, x0, sig, restarts=k, restart_steps=20, restart_min=0.3, restart_max=3.0,
                    generator=torch.Generator().manual_seed(2))
        errors.append(abs(float(y.var()) - S**2))
    assert errors[0] > 4 and errors[1] < errors[0] / 15 and errors[2] < errors[1] / 4


@pytest.mark.parametrize("steps,restarts,restart_steps,final_zero", [(6, 0, 3, True), (6, 1, 3, True),
                                                                     (10, 3, 2, True), (5, 2, 4, False)])
def test_the_evaluations_are_2n_minus_1_plus_2_m_k(steps, restarts, restart_steps, final_zero):
    calls, seen = [], []

    def score(x, sigma):
        calls.append(float(sigma[0]))
        return gaussian_score(x, sigma)

    sig = karras_sigmas(steps, 0.002, 80, append_zero=final_zero)
    n = len(sig) - 1
    restart(score, start(3), sig, restarts=restarts, restart_steps=restart_steps, restart_min=0.5, restart_max=4.0,
            generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert len(calls) == restart_nfe(n, restarts, restart_steps, final_zero)
    assert len(calls) == 2 * n - (1 if final_zero else 0) + 2 * restart_steps * restarts
    # one callback per Heun step (after its first evaluation, as heun), the restarts marked 1..K
    assert len(seen) == n + restarts * restart_steps
    assert sorted({info["pass"] for info in seen}) == list(range(restarts + 1))
    assert [info["nfe"] for info in seen][:2] == [1, 3]
    # a restart step runs from t_max down to the grid's level t_min, never below it
    t_min = float(sig[restart_level(sig.tolist(), 0.5, 4.0)])
    back = [info for info in seen if info["pass"]]
    assert all(t_min <= info["sigma_next"] < info["sigma"] <= 4.0 for info in back)
    assert all(info["sigma"] == 4.0 for info in back[::restart_steps])
    assert all(info["sigma_next"] == t_min for info in back[restart_steps - 1::restart_steps])


def test_the_restart_level_is_the_grid_level_below_t_max_nearest_t_min_in_log_sigma():
    levels = [80.0, 10.0, 2.5, 0.9, 0.12, 0.01, 0.0]
    assert restart_level(levels, 0.1, 2.0) == 4  # 0.12
    assert restart_level(levels, 0.5, 2.0) == 3  # 0.9: |log 0.9 - log 0.5| < |log 0.12 - log 0.5|
    assert restart_level(levels, 6.0, 20.0) == 1  # 10 (the first level is never one)
    assert restart_level(levels, 5.0, 3.0) == 2  # 2.5: the nearest below t_max
    with pytest.raises(ConfigError, match="restart_max"):
        restart_level([80.0, 10.0, 0.0], 0.1, 2.0)


def test_sample_i_depends_only_on_the_seed_and_i():
    """Per-row generators: the first 3 rows of a batch of 3 and of a batch of 8 agree, though the
    restarts draw noise (and another seed gives other rows)."""
    sig, opts = karras_sigmas(8, 0.002, 80), {"restarts": 2, "restart_steps": 3}
    x8 = torch.cat([80 * torch.randn(1, 2, generator=g, dtype=torch.float64)
                    for g in RowGenerators.from_seed(5, 8)])
    small = restart(gaussian_score, x8[:3], sig, generator=RowGenerators.from_seed(5, 3, start=0), **opts)
    big = restart(gaussian_score, x8, sig, generator=RowGenerators.from_seed(5, 8), **opts)
    other = restart(gaussian_score, x8[:3], sig, generator=RowGenerators.from_seed(6, 3), **opts)
    torch.testing.assert_close(small, big[:3], rtol=1e-12, atol=1e-12)
    assert float((other - small).abs().min()) > 1e-6


def test_the_trajectory_holds_the_main_pass():
    sig = karras_sigmas(5, 0.002, 80)
    x, traj = restart(gaussian_score, start(4), sig, restarts=2, restart_steps=3,
                      generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert traj.shape == (6, 4, 2) and torch.equal(traj[-1], x) and torch.equal(traj[0], start(4))


@pytest.mark.parametrize("options,match", [
    ({"restarts": -1}, "restarts"), ({"restarts": 1.5}, "restarts"), ({"restart_steps": 0}, "restart_steps"),
    ({"restart_min": 2.0, "restart_max": 1.0}, "restart_min < restart_max"),
    ({"restart_min": math.nan}, "restart_min"), ({"restart_max": 100.0}, "sigma_0"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        restart(gaussian_score, start(2), karras_sigmas(5, 0.002, 80), **options)
