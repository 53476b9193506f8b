"""The per-row Dormand-Prince solver and the probability-flow ODE sampler that uses it: every row
is solved with its own steps (its result, steps and evaluations those of the row alone), to the
accuracy its tolerance asks, checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

from scorematch._rowode import solve_rows
from scorematch.errors import ConfigError, ModelError
from scorematch.samplers import ode
from scorematch.sde import VESDE, VPSDE

F64 = torch.float64
RATES = torch.tensor([0.5, 3.0, 10.0, 1.0], dtype=F64)


def decay(t, y, rows):
    """dy/dt = -k_i y + sin(t) per row (k_i of the row), dz/dt = sum_j y_j: closed form below."""
    return (-RATES[rows][:, None] * y[0] + torch.sin(t)[:, None], y[0].sum(1))


def exact(t: float, k: torch.Tensor) -> torch.Tensor:
    """y(t) for y(0) = 1 of dy/dt = -k y + sin t: (1 + 1/(1+k^2)) e^{-kt} + (k sin t - cos t)/(1+k^2)."""
    return (1 + 1 / (1 + k**2)) * torch.exp(-k * t) + (k * math.sin(t) - math.cos(t)) / (1 + k**2)


def start(rows: slice = slice(None)):
    return torch.ones(4, 2, dtype=F64)[rows], torch.zeros(4, dtype=F64)[rows]


def test_a_row_is_solved_as_if_it_were_alone():
    res = solve_rows(decay, start(), 0.0, 2.0, 1e-7, 1e-7)
    for i in range(4):
        alone = solve_rows(lambda t, y, rows, i=i: decay(t, y, rows + i), start(slice(i, i + 1)), 0.0, 2.0,
                           1e-7, 1e-7)
        assert torch.equal(alone.y[0], res.y[0][i:i + 1]) and torch.equal(alone.y[1], res.y[1][i:i + 1])
    # the rows took different numbers of steps (the stiffer, the more), the batch as many as the slowest
    counts = [solve_rows(lambda t, y, rows, i=i: decay(t, y, rows + i), start(slice(i, i + 1)), 0.0, 2.0, 1e-7,
                         1e-7).n_accept for i in range(4)]
    assert len(set(counts)) == 4 and counts[2] == max(counts) and sum(counts) == res.n_accept


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_the_error_follows_the_tolerance_and_the_evaluations_their_formula(tol):
    res = solve_rows(decay, start(), 0.0, 2.0, tol, tol, snapshots=[0.0, 0.7, 2.0])
    err = float((res.y[0][:, 0] - exact(2.0, RATES)).abs().max())
    assert err < 30 * tol and (tol < 1e-7 or err > tol / 1000)
    assert res.evaluations == 2 * 4 + 6 * (res.n_accept + res.n_reject)
    assert res.calls == 2 + 6 * res.steps and res.steps == max(
        solve_rows(lambda t, y, rows, i=i: decay(t, y, rows + i), start(slice(i, i + 1)), 0.0, 2.0, tol,
                   tol).steps for i in range(4))
    # the dense output between the steps: as accurate as the steps themselves
    assert torch.equal(res.snapshots[0][0], start()[0]) and torch.equal(res.snapshots[2][0], res.y[0])
    assert float((res.snapshots[1][0][:, 0] - exact(0.7, RATES)).abs().max()) < 30 * tol


def test_backwards_and_as_torchdiffeq_on_one_row():
    """t from 2 to 0 works like 0 to 2; on one row the steps are torchdiffeq's dopri5 (same first step
    and controller: the same evaluations, the results within the tolerance's reach of each other)."""
    k = 1.0
    mine = solve_rows(lambda t, y, rows: (-k * y[0],), (torch.ones(1, 3, dtype=F64),), 2.0, 0.0, 1e-8, 1e-8)
    assert float((mine.y[0] - math.exp(2.0)).abs().max()) < 1e-6
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -3.0 * y

    theirs = odeint(f, torch.ones(1, 2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-6, atol=1e-6)
    ours = solve_rows(lambda t, y, rows: (-3.0 * y[0],), (torch.ones(1, 2, dtype=F64),), 0.0, 2.0, 1e-6, 1e-6)
    assert ours.evaluations == calls[0] == 98
    assert float((ours.y[0] - theirs[-1]).abs().max()) < 1e-6


def test_non_finite_values_are_refused():
    with pytest.raises(ModelError, match="non-finite"):
        solve_rows(lambda t, y, rows: (y[0] * math.nan,), (torch.ones(2, 2, dtype=F64),), 0.0, 1.0, 1e-5, 1e-5)


# --------------------------------------------------------------------------- the ode sampler

MU, S2 = torch.tensor([1.0, -0.5], dtype=F64), 0.3


def gauss_score(sde):
    """Exact score of N(MU, S2 I) pushed through the SDE: N(m MU, (m^2 S2 + std^2) I)."""
    def score(x, t):
        m, std = sde.mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
        return -(x - m * MU) / (m**2 * S2 + std**2)
    return score


@pytest.mark.parametrize("sde", [VESDE(sigma_min=0.01, sigma_max=50.0), VPSDE()])
def test_ode_per_sample_is_the_exact_flow_row_by_row(sde):
    """The Gaussian's flow maps x_T to m_e MU + sqrt(v_e / v_T) (x_T - m_T MU) (v = m^2 S2 + std^2),
    and its log-density is the Gaussian's at eps_t: both within the tolerance's reach; each row is
    what the sampler gives for it alone."""
    score = gauss_score(sde)
    x_t = sde.prior_sample((6, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    out, lp, info = ode(score, x_t, sde, rtol=1e-7, atol=1e-7, return_log_prob=True, return_info=True)
    one = torch.ones(1, dtype=F64)
    m_e, m_t = sde.mean_coeff(1e-3 * one), sde.mean_coeff(one)
    v_e, v_t = m_e**2 * S2 + sde.marginal_std(1e-3 * one) ** 2, m_t**2 * S2 + sde.marginal_std(one) ** 2
    expected = m_e * MU + torch.sqrt(v_e / v_t) * (x_t - m_t * MU)
    assert float((out - expected).abs().max()) < 1e-5 * float(expected.abs().max())
    gauss = -0.5 * ((out - m_e * MU) ** 2 / v_e + torch.log(2 * math.pi * v_e)).sum(1)
    # the prior replaces p_T: off by log N(x_T; m_T MU, v_T) - log prior(x_T)
    mismatch = -0.5 * ((x_t - m_t * MU) ** 2 / v_t + torch.log(2 * math.pi * v_t)).sum(1) - sde.prior_log_prob(x_t)
    assert float((lp - (gauss - mismatch)).abs().max()) < 1e-4
    assert info["row_nfe"] == 6 * 2 + 6 * (info["n_accept"] + info["n_reject"])
    for i in (0, 5):
        alone = ode(score, x_t[i:i + 1], sde, rtol=1e-7, atol=1e-7, return_log_prob=True)
        torch.testing.assert_close(alone[0], out[i:i + 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone[1], lp[i:i + 1], rtol=0, atol=1e-10)
    batch = ode(score, x_t, sde, rtol=1e-7, atol=1e-7, per_sample=False, denoise=False)
    assert float((batch - expected).abs().max()) < 1e-5 * float(expected.abs().max())


def test_ode_trajectory_and_refusals():
    sde = VESDE(sigma_min=0.01, sigma_max=20.0)
    score = gauss_score(sde)
    x_t = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    out, traj = ode(score, x_t, sde, rtol=1e-6, atol=1e-6, return_trajectory=True, n_snapshots=5, denoise=False)
    assert traj.shape == (5, 3, 2)
    torch.testing.assert_close(traj[0], x_t, rtol=1e-14, atol=0)
    torch.testing.assert_close(traj[-1], out, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="per_sample=False"):
        ode(score, x_t, sde, method="bosh3")
    with pytest.raises(ConfigError, match="per_sample=False"):
        ode(score, x_t, sde, options={"first_step": 0.1})
    ode(score, x_t, sde, method="bosh3", per_sample=False)
