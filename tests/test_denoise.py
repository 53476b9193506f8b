"""The noise-level view of every model (scorematch.denoise.sigma_view) and the parametrisation
adapters, against closed forms.

VP / sub-VP: the time-t marginal of a mixture sum_k pi_k N(mu_k, Sigma_k) under a kernel
N(m(t) x_0, std(t)^2 I) is the mixture with means m mu_k and covariances m^2 Sigma_k + std^2 I;
its score, seen through the view at sigma = std / m, must equal the VE score of the mixture at
sigma, grad log (p * N(0, sigma^2 I)), which is ``GaussianMixture.noisy_score``.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.denoise import (
    SigmaView,
    from_score,
    prediction_fn,
    score_fn_from,
    sigma_of_time,
    sigma_view,
    time_of_sigma,
    to_score,
)
from scorematch.distributions import GaussianMixture, toy
from scorematch.errors import ConfigError
from scorematch.metrics import mmd, mode_weights
from scorematch.models import NoiseConditionalMLP, ScoreMLP
from scorematch.models.time import TimeMLP
from scorematch.samplers import heun
from scorematch.sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64
SDES = {"ve": VESDE(0.01, 50.0), "vp": VPSDE(), "subvp": SubVPSDE(), "vp2": VPSDE(0.5, 12.0)}


def time_score(mix: GaussianMixture, sde):
    """The exact time-conditional score of the mixture's marginal p_t, s(x, t)."""
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = sde.mean_coeff(t).to(x)[:, None, None]
        std = sde.marginal_std(t).to(x)[:, None, None, None]
        cov = m[..., None] ** 2 * mix.covs.to(x)[None] + std**2 * torch.eye(mix.dim, dtype=x.dtype)
        diff = x[:, None, :] - m * mix.means.to(x)[None]
        sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)
        logits = mix.weights.to(x).log() - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(cov)
        return -(torch.softmax(logits, 1)[..., None] * sol).sum(1)

    return score


@pytest.mark.parametrize("name", list(SDES))
def test_sigma_of_time_inverts_and_is_std_over_mean(name: str) -> None:
    sde = SDES[name]
    t = torch.linspace(1e-3, 1.0, 200, dtype=F64)
    sig = sigma_of_time(sde, t)
    torch.testing.assert_close(sig, sde.marginal_std(t) / sde.mean_coeff(t), rtol=1e-9, atol=0)
    assert (sig[1:] > sig[:-1]).all()  # increasing in t, so t(sigma) is a function
    torch.testing.assert_close(time_of_sigma(sde, sig), t, rtol=1e-9, atol=1e-12)
    assert float(time_of_sigma(sde, float(sig[50]))) == pytest.approx(float(t[50]), rel=1e-9)


@pytest.mark.parametrize("name", ["vp", "subvp", "vp2", "ve"])
@pytest.mark.parametrize("toy_name", ["gmm2d", "imbalanced"])
def test_time_model_view_is_the_ve_score(name: str, toy_name: str) -> None:
    sde, mix = SDES[name], toy(toy_name)
    view = sigma_view(time_score(mix, sde), sde=sde)
    g = torch.Generator().manual_seed(0)
    for sigma in (0.02, 0.3, 1.0, 4.0, 25.0):
        x = mix.noisy(sigma).sample(300, g).double()
        torch.testing.assert_close(view(x, sigma), mix.noisy_score(x, sigma), rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(view.denoise(x, sigma), x + sigma**2 * mix.noisy_score(x, sigma),
                                   rtol=1e-7, atol=1e-8)
    # one sigma per row
    x = mix.sample(5, g).double()
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 8.0], dtype=F64)
    expected = torch.cat([mix.noisy_score(x[i:i + 1], float(sig[i])) for i in range(5)])
    torch.testing.assert_close(view(x, sig), expected, rtol=1e-7, atol=1e-9)


def test_view_range_and_prior() -> None:
    vp = sigma_view(lambda x, t: -x, sde=VPSDE())
    b1 = VPSDE().integrated_beta(torch.tensor(1.0, dtype=F64))
    assert vp.sigma_max == pytest.approx(math.sqrt(math.expm1(float(b1))))
    assert vp.prior_std == pytest.approx(math.exp(float(b1) / 2))  # the VP prior N(0, I) / m(1)
    assert vp.prior_std**2 == pytest.approx(vp.sigma_max**2 + 1)
    assert vp.sigma_min == pytest.approx(float(sigma_of_time(VPSDE(), 1e-3)))
    ve = sigma_view(lambda x, t: -x, sde=VESDE(0.01, 50.0))
    assert (ve.sigma_min, ve.sigma_max, ve.prior_std) == (0.01, 50.0, 50.0)
    s = ve.sigmas(18)
    assert s.shape == (19,) and float(s[0]) == pytest.approx(50.0) and float(s[-2]) == pytest.approx(0.01)
    x = vp.prior_sample((4000, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(x.std()) == pytest.approx(vp.prior_std, rel=0.03)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_heun_samples_a_vp_model_through_its_view(name: str) -> None:
    """End to end: the analytic VP / sub-VP score of gmm2d, sampled by Heun in the VE view from the
    VP prior scaled by 1 / m(1), 18 steps over the model's own range sigma(1e-3)..sigma(1)."""
    sde, mix = SDES[name], toy("gmm2d")
    view = sigma_view(time_score(mix, sde), sde=sde)
    g = torch.Generator().manual_seed(1)
    x0 = view.prior_sample((2000, 2), generator=g, dtype=F64)
    x = heun(view, x0, view.sigmas(18).double())
    fresh = mix.sample(2000, torch.Generator().manual_seed(7)).double()
    assert mmd(x, fresh, bandwidth=1.0) < 1.0e-3
    assert (mode_weights(x, mix.means.double()) - 0.5).abs().max() < 0.03


def test_models_and_functions_pass_through_or_are_refused() -> None:
    torch.manual_seed(0)
    net = NoiseConditionalMLP(2, hidden=16).double()
    view = sigma_view(net)
    x = torch.randn(6, 2, dtype=F64)
    torch.testing.assert_close(view(x, 0.7), net.score(x, torch.full((6,), 0.7, dtype=F64)))
    assert view.sigma_min is None and view.prior_std is None
    view = sigma_view(net, sigma_min=0.01, sigma_max=9.0)
    assert (view.sigma_min, view.sigma_max, view.prior_std) == (0.01, 9.0, 9.0)
    mix = toy("gmm2d")
    torch.testing.assert_close(sigma_view(mix)(x, 0.4), mix.noisy_score(x, 0.4))
    assert sigma_view(view) is view and isinstance(view, SigmaView)
    time_net = TimeMLP(2, hidden=16).double()
    sde = VESDE(0.01, 50.0)
    t = sde.sigma_to_time(torch.full((6,), 0.7, dtype=F64))
    torch.testing.assert_close(sigma_view(time_net, sde=sde)(x, 0.7), time_net.score(x, t))
    with pytest.raises(ConfigError, match="time-conditional"):
        sigma_view(time_net)
    with pytest.raises(ConfigError, match="unconditional"):
        sigma_view(ScoreMLP(2))
    with pytest.raises(ConfigError, match="needs no SDE"):
        sigma_view(net, sde=sde)
    with pytest.raises(ConfigError, match="noise range"):
        sigma_view(net).sigmas(10)


# --------------------------------------------------------------------------- parametrisations


def gaussian_terms(x: torch.Tensor, sigma: float, m: torch.Tensor, c: float) -> dict[str, torch.Tensor]:
    """Data N(m, c^2 I), x = x_0 + sigma eps: the exact score and the posterior means of eps, x_0 and
    v = a eps - b x_0 (a = 1 / sqrt(1 + sigma^2), b = sigma a)."""
    score = -(x - m) / (c * c + sigma * sigma)
    x0 = m + c * c / (c * c + sigma * sigma) * (x - m)
    eps = sigma / (c * c + sigma * sigma) * (x - m)
    a = 1 / math.sqrt(1 + sigma * sigma)
    return {"score": score, "x0": x0, "eps": eps, "v": a * eps - sigma * a * x0}


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
def test_prediction_to_score_and_back_on_a_gaussian(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    for sigma, c in ((0.05, 0.7), (0.8, 1.3), (6.0, 0.4)):
        x = m + math.sqrt(c * c + sigma * sigma) * torch.randn(20, 3, generator=g, dtype=F64)
        exact = gaussian_terms(x, sigma, m, c)
        torch.testing.assert_close(to_score(kind, x, sigma, exact[kind]), exact["score"])
        torch.testing.assert_close(from_score(kind, x, sigma, exact["score"]), exact[kind])


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("vp_input", [False, True])
def test_adapters_round_trip(kind: str, vp_input: bool) -> None:
    mix = toy("gmm2d")
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(50, 2, generator=g, dtype=F64)
    sig = torch.exp(torch.randn(50, generator=g, dtype=F64))
    net = prediction_fn(mix.noisy_score, kind, vp_input=vp_input)
    torch.testing.assert_close(score_fn_from(net, kind, vp_input=vp_input)(x, sig), mix.noisy_score(x, sig))
    # vp_input: the network sees x / sqrt(1 + sigma^2)
    x_in = x / torch.sqrt(1 + sig**2)[:, None] if vp_input else x
    expected = from_score(kind, x, sig, mix.noisy_score(x, sig))
    torch.testing.assert_close(net(x_in, sig), expected)


def test_v_prediction_in_the_variance_preserving_coordinates() -> None:
    """v = a eps - b x_0 with x_vp = a x_0 + b eps: from a data point and its noise, exactly."""
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(10, 4, generator=g, dtype=F64), torch.randn(10, 4, generator=g, dtype=F64)
    sigma = 1.7
    a, b = 1 / math.sqrt(1 + sigma**2), sigma / math.sqrt(1 + sigma**2)
    x_ve = x0 + sigma * eps
    torch.testing.assert_close(a * x_ve, a * x0 + b * eps)
    v = a * eps - b * x0
    # the score built from v has D = x0 (a point mass: the prediction is exact)
    torch.testing.assert_close(x_ve + sigma**2 * to_score("v", x_ve, sigma, v), x0)
    torch.testing.assert_close(x_ve + sigma**2 * to_score("eps", x_ve, sigma, eps), x0)
    with pytest.raises(ConfigError):
        to_score("velocity", x_ve, sigma, v)
