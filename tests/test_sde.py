"""Closed-form checks of the score SDEs, their samplers, the continuous-time DSM loss and the
time-conditional models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import build_model, model_spec
from scorematch.models.time import (
    GaussianFourierProjection,
    TimeMLP,
    TimeUNet,
    sinusoidal_embedding,
)
from scorematch.objectives.sde import sde_dsm
from scorematch.samplers.sde import (
    euler_maruyama,
    langevin_corrector,
    ode,
    pc,
    reverse_diffusion,
)
from scorematch.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    get_sde,
    sigma_conditioned,
    sigma_to_time,
    time_to_sigma,
    ve_from_sigmas,
)

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}



def gaussian_score(sde, mu: torch.Tensor, s2: float):
    """Score of p_t = N(m(t) mu, (m(t)^2 s2 + std(t)^2) I), the marginal of N(mu, s2 I)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = sde.mean_coeff(t)[:, None]
        v = m**2 * s2 + sde.marginal_std(t)[:, None] ** 2
        return -(x - m * mu.to(x.dtype)) / v

    return score


# --------------------------------------------------------------------------- SDE definitions


def test_parameters_are_validated():
    with pytest.raises(ConfigError):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError):
        VESDE(sigma_min=-1.0)
    with pytest.raises(ConfigError):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ConfigError):
        SubVPSDE(beta_min=0.0)
    with pytest.raises(ConfigError, match="ve, vp, subvp"):
        get_sde("edm")
    with pytest.raises(ConfigError, match="sigma_min"):
        get_sde("ve", beta_min=0.1)
    assert get_sde("VP", beta_max=10.0) == VPSDE(beta_max=10.0)


def test_closed_forms_of_each_sde():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    ve = VESDE(0.01, 50.0)
    sig = 0.01 * 5000.0**t
    torch.testing.assert_close(ve.marginal_std(t), sig)
    torch.testing.assert_close(ve.diffusion(t), sig * math.sqrt(2 * math.log(5000.0)))
    vp, sub = VPSDE(0.1, 20.0), SubVPSDE(0.1, 20.0)
    b_int = 0.1 * t + 0.5 * 19.9 * t**2
    torch.testing.assert_close(vp.mean_coeff(t), torch.exp(-0.5 * b_int))
    torch.testing.assert_close(vp.marginal_std(t), torch.sqrt(1 - torch.exp(-b_int)))
    torch.testing.assert_close(vp.diffusion(t), torch.sqrt(0.1 + 19.9 * t))
    torch.testing.assert_close(sub.marginal_std(t), 1 - torch.exp(-b_int))
    torch.testing.assert_close(
        sub.diffusion(t), torch.sqrt((0.1 + 19.9 * t) * (1 - torch.exp(-2 * b_int)))
    )
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(vp.drift(x, 0.5), -0.5 * (0.1 + 19.9 * 0.5) * x)
    assert ve.T == vp.T == sub.T == 1.0


@pytest.mark.parametrize("name", list(SDES))
def test_variance_ode_links_g_and_std(name):
    """For a linear SDE dx = a(t) x dt + g dw: d std^2/dt = 2 a std^2 + g^2 and dm/dt = a m."""
    sde = SDES[name]
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    a = sde.drift(torch.ones(7, 1, dtype=torch.float64), t)[:, 0]
    dvar = (sde.marginal_std(t + h) ** 2 - sde.marginal_std(t - h) ** 2) / (2 * h)
    dm = (sde.mean_coeff(t + h) - sde.mean_coeff(t - h)) / (2 * h)
    torch.testing.assert_close(dvar, 2 * a * sde.marginal_std(t) ** 2 + sde.diffusion(t) ** 2)
    torch.testing.assert_close(dm, a * sde.mean_coeff(t))


@pytest.mark.parametrize("name", ["ve", "vp", "subvp", "ve_wide"])
def test_marginal_matches_forward_euler_maruyama(name):
    """20k forward Euler-Maruyama paths from a fixed x0: mean and variance of x_t within 5 SE."""
    sde = VESDE(0.5, 5.0) if name == "ve_wide" else SDES[name]
    g = torch.Generator().manual_seed(1)
    x0 = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    n, steps = 20000, 400
    x = x0.expand(n, 3).clone()
    if isinstance(sde, VESDE):
        # The VE kernel N(x0, sigma(t)^2 I): x(0) carries the N(0, sigma_min^2) first level.
        x = x + sde.sigma_min * torch.randn(n, 3, generator=g, dtype=torch.float64)
    dt = 1.0 / steps
    checks = {100: 0.25, 400: 1.0}
    for k in range(steps):
        tm = torch.full((n,), (k + 0.5) * dt, dtype=torch.float64)
        z = torch.randn(n, 3, generator=g, dtype=torch.float64)
        x = x + sde.drift(x, tm) * dt + sde.diffusion(tm)[:, None] * math.sqrt(dt) * z
        if k + 1 in checks:
            t = checks[k + 1]
            mean, std = sde.marginal(x0[None], t)
            var = float(std[0]) ** 2
            se_mean = math.sqrt(var / n)
            se_var = var * math.sqrt(2 / (n - 1))
            assert (x.mean(0) - mean[0]).abs().max() < 5 * se_mean, (t, x.mean(0), mean)
            assert (x.var(0) - var).abs().max() < 5 * se_var, (t, x.var(0), var)


def test_discretize_is_the_ncsn_and_ddpm_chains():
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([0.5, 0.9], dtype=torch.float64)
    dt = 0.01
    ve = VESDE(0.01, 50.0)
    f, gd = ve.discretize(x, t, dt)
    assert torch.all(f == 0)
    torch.testing.assert_close(gd**2, ve.sigma(t) ** 2 - ve.sigma(t - dt) ** 2)
    vp = VPSDE()
    f, gd = vp.discretize(x, t, dt)
    beta_i = vp.beta(t) * dt
    torch.testing.assert_close(gd, beta_i.sqrt())
    torch.testing.assert_close(f, (torch.sqrt(1 - beta_i)[:, None] - 1) * x)
    sub = SubVPSDE()
    f, gd = sub.discretize(x, t, dt)
    torch.testing.assert_close(f, sub.drift(x, t) * dt)
    torch.testing.assert_close(gd, sub.diffusion(t) * math.sqrt(dt))
    with pytest.raises(ConfigError, match="beta"):
        vp.discretize(x, t, 0.1)
    # The NCSN chain telescopes: sum of g_dt^2 over a grid of [0, 1] is sigma(1)^2 - sigma(0)^2.
    n = 50
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    _, gd = ve.discretize(torch.zeros(n, 1, dtype=torch.float64), grid, 1.0 / n)
    assert abs(float(gd.pow(2).sum()) - (50.0**2 - 0.01**2)) < 1e-9


def test_prior_sample_and_log_prob():
    ve = VESDE(0.01, 7.0)
    g = torch.Generator().manual_seed(0)
    x = ve.prior_sample((50000, 2), generator=g, dtype=torch.float64)
    assert abs(float(x.std()) - 7.0) < 5 * 7.0 / math.sqrt(2 * 100000)
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 7.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(ve.prior_log_prob(x), ref)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(VPSDE().prior_log_prob(x), ref)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(VPSDE().prior_sample((3, 2), g1), VPSDE().prior_sample((3, 2), g2))


def test_time_must_match_the_batch():
    with pytest.raises(ModelError):
        VPSDE().drift(torch.zeros(3, 2), torch.zeros(2))


# --------------------------------------------------------------------------- VE from NCSN sigmas


def test_ve_from_sigmas_round_trip_and_endpoints():
    sigmas = torch.tensor([50.0, 10.0, 2.0, 0.4, 0.08, 0.016], dtype=torch.float64)
    sde = ve_from_sigmas(sigmas)
    assert sde.sigma_max == 50.0 and sde.sigma_min == pytest.approx(0.016)
    assert time_to_sigma(sde, 1.0) == pytest.approx(50.0, rel=1e-12)
    assert time_to_sigma(sde, 0.0) == pytest.approx(0.016, rel=1e-12)
    ts = sigma_to_time(sde, sigmas)
    torch.testing.assert_close(time_to_sigma(sde, ts), sigmas)
    # a geometric schedule is hit at t_i = (L - i) / (L - 1)
    torch.testing.assert_close(ts, torch.linspace(1.0, 0.0, 6, dtype=torch.float64))
    assert sigma_to_time(sde, 2.0) == pytest.approx(0.6)
    with pytest.raises(ConfigError):
        ve_from_sigmas([0.1, 1.0])
    with pytest.raises(ConfigError):
        sigma_to_time(VPSDE(), 1.0)


def test_sigma_conditioned_gives_the_ve_time_score():
    mu, s2 = torch.tensor([1.0, -1.0], dtype=torch.float64), 0.3
    sde = ve_from_sigmas([20.0, 0.05])

    def ncsn(x, sigma):
        return -(x - mu) / (s2 + sigma[:, None] ** 2)

    fn = sigma_conditioned(ncsn, sde)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(fn(x, t), gaussian_score(sde, mu, s2)(x, t))
    with pytest.raises(ConfigError):
        sigma_conditioned(ncsn, VPSDE())


# --------------------------------------------------------------------------- samplers

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
S2 = 0.25
N = 10000


def _assert_moments(x: torch.Tensor, tol_se: float = 5.0) -> None:
    n = x.shape[0]
    se_mean, se_var = math.sqrt(S2 / n), S2 * math.sqrt(2 / (n - 1))
    assert (x.mean(0) - MU).abs().max() < tol_se * se_mean, x.mean(0)
    assert (x.var(0) - S2).abs().max() < tol_se * se_var, x.var(0)


@pytest.mark.parametrize("name", list(SDES))
def test_euler_maruyama_samples_the_gaussian(name):
    sde = SDES[name]
    g = torch.Generator().manual_seed(11)
    x = euler_maruyama(gaussian_score(sde, MU, S2), (N, 2), sde, n_steps=400, generator=g,
                       dtype=torch.float64)
    _assert_moments(x)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_reverse_diffusion_samples_the_gaussian(name):
    sde = SDES[name]
    g = torch.Generator().manual_seed(12)
    x = reverse_diffusion(gaussian_score(sde, MU, S2), (N, 2), sde, n_steps=400, generator=g,
                          dtype=torch.float64)
    _assert_moments(x)


@pytest.mark.parametrize(("name", "predictor"), [("ve", "reverse_diffusion"),
                                                  ("vp", "reverse_diffusion"),
                                                  ("subvp", "euler_maruyama")])
def test_pc_samples_the_gaussian(name, predictor):
    # The unadjusted corrector inflates the variance by about snr^2 relative (2.6% at the paper's
    # 0.16); snr = 0.05 keeps that bias (0.25%) well below the Monte-Carlo error.
    sde = SDES[name]
    g = torch.Generator().manual_seed(13)
    x = pc(gaussian_score(sde, MU, S2), (N, 2), sde, n_steps=200, snr=0.05, predictor=predictor,
           generator=g, dtype=torch.float64)
    _assert_moments(x)


@pytest.mark.parametrize("name", list(SDES))
def test_ode_samples_the_gaussian_and_counts_nfe(name):
    sde = SDES[name]
    calls = [0]
    score = gaussian_score(sde, MU, S2)

    def counted(x, t):
        calls[0] += 1
        return score(x, t)

    g = torch.Generator().manual_seed(14)
    seen: list[dict] = []
    x = ode(counted, (N, 2), sde, generator=g, dtype=torch.float64, callback=seen.append)
    _assert_moments(x)
    assert isinstance(x, torch.Tensor)
    assert seen[-1]["nfe"] == calls[0] == len(seen)


def test_ode_is_the_exact_gaussian_flow_map():
    """For N(mu, s2 I) the flow maps x_1 to m(t) mu + sqrt(v_t / v_1) (x_1 - m(1) mu)."""
    sde = VPSDE()
    x1 = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x, traj = ode(gaussian_score(sde, MU, S2), x1, sde, rtol=1e-8, atol=1e-8, eps_t=1e-3,
                  denoise=False, return_trajectory=True, n_snapshots=5)
    ts = torch.linspace(1.0, 1e-3, 5, dtype=torch.float64)
    m = sde.mean_coeff(ts)
    v = m**2 * S2 + sde.marginal_std(ts) ** 2
    expect = m[:, None, None] * MU + (v / v[0]).sqrt()[:, None, None] * (x1 - m[0] * MU)
    torch.testing.assert_close(traj, expect, atol=1e-6, rtol=0)
    torch.testing.assert_close(x, expect[-1], atol=1e-6, rtol=0)


def test_sampler_trajectory_and_reproducibility():
    sde = VESDE()
    score = gaussian_score(sde, MU, S2)
    x0 = sde.prior_sample((7, 2), torch.Generator().manual_seed(2), dtype=torch.float64)
    a, traj = euler_maruyama(score, x0, sde, n_steps=10, trajectory_every=3, return_trajectory=True,
                             generator=torch.Generator().manual_seed(5))
    assert traj.shape == (2 + 9 // 3, 7, 2)
    assert torch.equal(traj[0], x0) and torch.equal(traj[-1], a)
    b = euler_maruyama(score, x0, sde, n_steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="GiB"):
        pc(score, (100000, 3, 64, 64), sde, n_steps=1000, return_trajectory=True,
           trajectory_every=1)
    with pytest.raises(ConfigError):
        pc(score, (4, 2), sde, predictor="ancestral")


def test_langevin_corrector_step_rule():
    """One step is x + eps s + sqrt(2 eps) z, eps = 2 alpha (snr mean||z|| / mean||s||)^2."""
    sde = VPSDE()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    score = gaussian_score(sde, torch.zeros(3, dtype=torch.float64), 1.0)
    t, dt, snr = 0.4, 0.01, 0.2
    z = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    s = score(x, torch.full((5,), t, dtype=torch.float64))
    alpha = 1 - (0.1 + 19.9 * t) * dt
    eps = 2 * alpha * (snr * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
    out = langevin_corrector(score, sde, x, t, dt, snr=snr,
                             generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, x + eps * s + (2 * eps).sqrt() * z)
    eps_i = (2 * alpha * (snr * z.norm(dim=1) / s.norm(dim=1)) ** 2)[:, None]
    out = langevin_corrector(score, sde, x, t, dt, snr=snr, per_sample_step=True,
                             generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, x + eps_i * s + (2 * eps_i).sqrt() * z)


def test_ode_with_ncsn_adapter_samples_the_gaussian():
    sde = ve_from_sigmas([30.0, 0.01])

    def ncsn(x, sigma):
        return -(x - MU) / (S2 + sigma[:, None] ** 2)

    x = ode(sigma_conditioned(ncsn, sde), (N, 2), sde, dtype=torch.float64,
            generator=torch.Generator().manual_seed(4))
    _assert_moments(x)


# --------------------------------------------------------------------------- continuous DSM


def _dsm_closed_form(sde, weighting: str, d: int, eps_t: float, scale: float = 1.0) -> float:
    """E over t ~ U(eps_t, 1) of lambda(t) [D/std^2 - (2c - c^2) D/v_t] / 2 for s = c s*.

    For data N(mu, s2 I): E||c s* + z/std||^2 = c^2 D/v + D/std^2 - 2c D/v since
    E[-z/std | x_t] = s*(x_t) and E||s*||^2 = D/v_t.
    """
    u = torch.linspace(math.log(eps_t), 0.0, 400001, dtype=torch.float64)
    t = u.exp()
    m, std = sde.mean_coeff(t), sde.marginal_std(t)
    v = m**2 * S2 + std**2
    lam = std**2 if weighting == "variance" else sde.diffusion(t) ** 2
    f = lam * (d / std**2 - (2 * scale - scale**2) * d / v) / 2 * t  # dt = t du
    integral = torch.trapezoid(f, u)
    return float(integral) / (1 - eps_t)


@pytest.mark.parametrize(("name", "weighting", "eps_t"), [("ve", "variance", 1e-5),
                                                           ("vp", "variance", 1e-5),
                                                           ("subvp", "variance", 1e-5),
                                                           ("ve", "likelihood", 1e-5),
                                                           ("vp", "likelihood", 1e-2)])
def test_sde_dsm_at_the_true_score_equals_the_closed_form(name, weighting, eps_t):
    sde = SDES[name]
    g = torch.Generator().manual_seed(21)
    d, n, reps = 2, 40000, 10
    score = gaussian_score(sde, MU, S2)
    lw = weighting == "likelihood"
    vals = []
    for _ in range(reps):
        x = MU + math.sqrt(S2) * torch.randn(n, d, generator=g, dtype=torch.float64)
        vals.append(float(sde_dsm(score, x, sde, eps_t=eps_t, likelihood_weighting=lw,
                                  generator=g)))
    vals_t = torch.tensor(vals)
    est, se = float(vals_t.mean()), float(vals_t.std() / math.sqrt(reps))
    expect = _dsm_closed_form(sde, weighting, d, eps_t)
    assert abs(est - expect) < 5 * se + 1e-4 * abs(expect), (est, expect, se)


@pytest.mark.parametrize("weighting", ["variance", "likelihood"])
def test_sde_dsm_is_minimised_by_the_true_score(weighting):
    """L(c) for s = c s*: the excess over c = 1 is (c - 1)^2 E[lambda D / v_t] / 2."""
    sde, d, n = VESDE(), 2, 200000
    score = gaussian_score(sde, MU, S2)
    x = MU + math.sqrt(S2) * torch.randn(n, d, generator=torch.Generator().manual_seed(0),
                                         dtype=torch.float64)
    lw = weighting == "likelihood"

    def loss(c):
        return sde_dsm(lambda y, t: c * score(y, t), x, sde, likelihood_weighting=lw,
                       generator=torch.Generator().manual_seed(7))

    c = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    base = loss(c)
    (grad,) = torch.autograd.grad(base, c)
    curvature = (_dsm_closed_form(sde, weighting, d, 1e-5, scale=0.0)
                 - _dsm_closed_form(sde, weighting, d, 1e-5, scale=1.0))
    # dL/dc at 1 is a zero-mean estimate; its scale is sqrt(curvature * 2 * E||z/std||^2 / n)
    assert abs(float(grad)) < 0.02 * curvature
    for cc in (0.8, 1.2):
        excess = float(loss(torch.tensor(cc, dtype=torch.float64)) - base.detach())
        assert excess > 0
        assert excess == pytest.approx((cc - 1) ** 2 * curvature, rel=0.1)


def test_sde_dsm_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ModelError):
        sde_dsm(lambda y, t: y[:, :1], x, VPSDE())
    with pytest.raises(ConfigError):
        sde_dsm(lambda y, t: y, x, VPSDE(), eps_t=1.5)


# --------------------------------------------------------------------------- models


def test_time_embeddings_closed_forms():
    t = torch.tensor([0.0, 0.3, 1.0])
    e = sinusoidal_embedding(t, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(e[1, :4], torch.sin(300.0 * freqs))
    f = GaussianFourierProjection(16, scale=3.0)
    torch.testing.assert_close(f(t).pow(2).sum(1), torch.full((3,), 8.0))
    torch.testing.assert_close(f(t)[0], torch.tensor([0.0] * 8 + [1.0] * 8))
    assert torch.equal(GaussianFourierProjection(16, 3.0).W, f.W)
    with pytest.raises(ConfigError):
        GaussianFourierProjection(15)


@pytest.mark.parametrize("embed", ["fourier", "sinusoidal"])
def test_time_mlp_shapes_and_rebuild(embed):
    torch.manual_seed(0)
    model = TimeMLP(3, hidden=32, depth=2, embed=embed, embed_dim=16)
    x = torch.randn(5, 3)
    out = model(x, 0.3)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, model.score(x, torch.full((5,), 0.3)))
    assert not torch.allclose(model(x, 0.3), model(x, 0.7))
    spec = json.loads(json.dumps(model_spec(model)))
    torch.manual_seed(1)
    rebuilt = build_model(spec["name"], spec["config"])
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x, 0.3), out)
    assert model.conditioning == "time"
    with pytest.raises(ModelError):
        model(x, torch.zeros(4))
    with pytest.raises(ModelError):
        model(torch.randn(5, 4), 0.1)


def test_time_unet_shapes_and_rebuild():
    torch.manual_seed(0)
    model = TimeUNet(channels=2, base=8, embed_dim=16, groups=4)
    for hw in (8, 16):
        x = torch.randn(3, 2, hw, hw)
        t = torch.tensor([0.1, 0.5, 0.9])
        out = model(x, t)
        assert out.shape == x.shape
        torch.testing.assert_close(model(x, 0.5)[1], out[1])
    spec = json.loads(json.dumps(model_spec(model)))
    rebuilt = build_model(spec["name"], spec["config"])
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(rebuilt.score(x, 0.2), model(x, 0.2))
    assert "embed.W" in model.state_dict()
    with pytest.raises(ModelError):
        model(torch.randn(2, 2, 7, 8), 0.1)
    with pytest.raises(ModelError):
        model(torch.randn(2, 8), 0.1)
