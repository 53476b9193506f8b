"""Power-function EMA: the sigma_rel <-> gamma map, the tracker, and post-hoc reconstruction."""

import math

import numpy as np
import pytest
import torch

from scorematch.ema import (
    MAX_SIGMA_REL,
    PowerEMA,
    gamma_to_sigma_rel,
    posthoc_weights,
    profile_inner_products,
    reconstruct,
    sigma_rel_to_gamma,
)
from scorematch.errors import CheckpointError, ConfigError


def test_sigma_rel_and_gamma_are_inverse():
    # values printed by Karras et al. (2024): sigma_rel 0.05 and 0.10 are gamma ~ 16.97 and ~ 6.94
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.05, 0.1, 0.2, MAX_SIGMA_REL):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-9)
    assert sigma_rel_to_gamma(MAX_SIGMA_REL) == pytest.approx(0.0, abs=1e-6)
    for bad in (0.0, -0.1, 0.3, float("nan")):
        with pytest.raises(ConfigError):
            sigma_rel_to_gamma(bad)


def test_the_tracker_weights_step_tau_as_the_discrete_power_profile():
    """Feeding theta(tau) = e_tau (one-hot) shows each step's weight:
    (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)."""
    t, gamma = 30, sigma_rel_to_gamma(0.1)
    ema = PowerEMA((0.1,))
    for tau in range(1, t + 1):
        ema.update(tau, {"w": torch.eye(t, dtype=torch.float64)[tau - 1]})
    tau = np.arange(1, t + 1, dtype=np.float64)
    expected = (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / t ** (gamma + 1)
    np.testing.assert_allclose(ema.averages[0]["w"].numpy(), expected, rtol=1e-10, atol=1e-15)
    with pytest.raises(ConfigError, match="increase"):
        ema.update(t, {"w": torch.zeros(t, dtype=torch.float64)})


def test_profile_inner_product_is_the_integral():
    """<p_a, p_b> against a midpoint-rule integral of (g_a+1) tau^g_a / t_a^(g_a+1) * (same for b)."""
    ta, ga, tb, gb = 70.0, 3.0, 100.0, 6.5
    tau = (np.arange(200_000) + 0.5) * ta / 200_000
    integral = np.sum((ga + 1) * tau**ga / ta ** (ga + 1) * (gb + 1) * tau**gb / tb ** (gb + 1)) * ta / 200_000
    got = profile_inner_products(np.array([ta]), np.array([ga]), np.array([tb]), np.array([gb]))[0, 0]
    assert got == pytest.approx(integral, rel=1e-8)


def test_a_tracked_length_is_reconstructed_from_its_own_snapshot():
    gammas = [sigma_rel_to_gamma(0.05)] * 2 + [sigma_rel_to_gamma(0.1)] * 2
    x = posthoc_weights([100, 200, 100, 200], gammas, 0.1)
    np.testing.assert_allclose(x, [0, 0, 0, 1], atol=1e-8)


def test_posthoc_reconstruction_equals_a_directly_tracked_ema():
    """A linear model under random updates with a slow drift; snapshots of sigma_rel 0.05 and 0.10
    every 100 of 2,000 steps. The reconstructions of sigma_rel 0.07 and 0.15 at the last step, and
    of 0.08 at step 1,000, agree with EMAs tracked directly with those lengths to within 1e-3 of
    the distance between the tracked EMA and the final weights."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(6, 3)
    drift = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    tracked, direct = PowerEMA((0.05, 0.10)), PowerEMA((0.07, 0.15, 0.08))
    snapshots, at_1000 = [], None
    for t in range(1, 2001):
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g) + 0.002 * math.sin(t / 300) * drift[k])
        tracked.update(t, model.state_dict())
        direct.update(t, model.state_dict())
        if t % 100 == 0:
            snapshots += tracked.snapshots()
        if t == 1000:
            at_1000 = direct.snapshots()[2].state

    def flat(state):
        return torch.cat([v.flatten() for v in state.values()]).double()

    final = flat(model.state_dict())
    for i, s in enumerate((0.07, 0.15)):
        ref = flat(direct.averages[i])
        assert (flat(reconstruct(snapshots, s)) - ref).norm() < 1e-3 * (ref - final).norm()
    early = [s for s in snapshots if s.step <= 1000]
    ref = flat(at_1000)
    assert (flat(reconstruct(early, 0.08, at_step=1000)) - ref).norm() < 1e-3 * (ref - final).norm()


def test_reconstruct_refuses_snapshots_of_different_models():
    a = PowerEMA((0.1,))
    a.update(1, {"w": torch.zeros(2)})
    b = PowerEMA((0.1,))
    b.update(2, {"w": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="one model"):
        reconstruct(a.snapshots() + b.snapshots(), 0.1)
    with pytest.raises(ConfigError):
        reconstruct([], 0.1)


def test_state_dict_round_trip():
    a = PowerEMA((0.05, 0.1))
    for t in range(1, 4):
        a.update(t, {"w": torch.full((2,), float(t))})
    b = PowerEMA((0.05, 0.1))
    b.load_state_dict(a.state_dict())
    b.update(4, {"w": torch.full((2,), 4.0)})
    assert b.averages[1]["w"] is not a.averages[1]["w"]
    a.update(4, {"w": torch.full((2,), 4.0)})
    assert torch.equal(a.averages[1]["w"], b.averages[1]["w"]) and b.step == 4
    with pytest.raises(CheckpointError):
        PowerEMA((0.2,)).load_state_dict(a.state_dict())
