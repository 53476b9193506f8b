"""Conditional generation: the mixture's exact conditional, inpainting / imputation (replacement,
RePaint resampling, sequential Monte Carlo) and classifier-free guidance, all with analytic scores.

The imputation target is exact: for gmm2d, p(x2 | x1 = a) is a two-component 1-D Gaussian mixture
(``GaussianMixture.conditional``). Replacement (Song et al. 2021, Appendix I) only approximates it:
measured on gmm2d at x1 = 1, where the exact weight of the upper component is 0.982, plain
replacement with Heun (100 Karras steps) puts 0.77 of x2 there, RePaint with 10 resamplings per step
0.90; the SMC sampler reaches the conditional (weights within 0.01, MMD^2 within the
sample-vs-sample spread) with 400 ancestral steps and 2000 particles.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import GaussianMixture, toy
from scorematch.errors import ConfigError, DataError
from scorematch.metrics import mmd, mode_weights
from scorematch.noise import karras_sigmas
from scorematch.samplers import (
    annealed_langevin,
    guided,
    heun,
    inpaint,
    inpaint_sde,
    inpaint_smc,
    ode,
    pc,
    replace_known,
)
from scorematch.sde import VESDE, sigma_conditioned

F64 = torch.float64


# --------------------------------------------------------------------------- the exact conditional


def test_conditional_is_joint_over_marginal() -> None:
    """log p(x_B | a) = log p(a, x_B) - log p_A(a), p_A the mixture of the N(mu_kA, S_kAA)."""
    g = torch.Generator().manual_seed(0)
    covs = torch.stack([torch.tensor([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.7]]),
                        torch.tensor([[1.0, -0.4, 0.0], [-0.4, 0.8, 0.1], [0.0, 0.1, 1.5]])])
    mix3 = GaussianMixture([0.3, 0.7], [[1.0, 0.0, -1.0], [-1.0, 2.0, 0.5]], covs)
    for mix, known, values in ((toy("gmm2d"), [0], [0.5]), (toy("imbalanced"), [1], [-1.0]),
                               (mix3, [0, 2], [0.3, -0.2]), (mix3, [1], [1.1])):
        cond = mix.conditional(known, values)
        rest = [i for i in range(mix.dim) if i not in known]
        xb = cond.sample(50, g).double()
        joint = torch.zeros(50, mix.dim, dtype=F64)
        joint[:, known] = torch.tensor(values, dtype=F64)
        joint[:, rest] = xb
        idx = torch.tensor(known)
        marginal = GaussianMixture(mix.weights, mix.means[:, idx], mix.covs[:, idx][:, :, idx])
        expected = mix.log_prob(joint) - marginal.log_prob(torch.tensor([values], dtype=F64))
        torch.testing.assert_close(cond.log_prob(xb), expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigError):
        toy("gmm2d").conditional([0, 1], [0.0, 0.0])
    with pytest.raises(DataError):
        toy("gmm2d").conditional([0], [0.0, 1.0])


# --------------------------------------------------------------------------- replacement


def test_replace_known_noises_the_known_part_at_each_call() -> None:
    seen = []

    def score(x, sigma):
        seen.append(x.clone())
        return -x

    known = torch.zeros(20000, 2, dtype=F64)
    known[:, 0] = 3.0
    wrapped = replace_known(score, known, torch.tensor([True, False]), generator=torch.Generator().manual_seed(0))
    x = torch.randn(20000, 2, dtype=F64)
    wrapped(x, 0.5)
    wrapped(x, torch.full((20000,), 2.0, dtype=F64))
    for y, sigma in zip(seen, (0.5, 2.0), strict=True):
        assert torch.equal(y[:, 1], x[:, 1])
        z = (y[:, 0] - 3.0) / sigma
        assert abs(float(z.mean())) < 0.03 and float(z.std()) == pytest.approx(1.0, abs=0.02)
    assert not torch.allclose(seen[0][:, 0], seen[1][:, 0] * 0.25 + 2.25)  # fresh noise per call
    seen.clear()
    fixed = replace_known(score, known, torch.tensor([True, False]), generator=torch.Generator().manual_seed(0),
                          fixed_noise=True)
    fixed(x, 0.5)
    fixed(x, 2.0)
    torch.testing.assert_close(seen[0][:, 0], seen[1][:, 0] * 0.25 + 2.25)  # one z: known + sigma z


def independent_score(c: float):
    """Data N(0, c^2 I) in any shape: coordinates independent, so replacement is exact."""
    def score(x, sigma):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return -x / (c * c + sig * sig)

    return score


@pytest.mark.parametrize("mask_shape", ["full", "chw", "hw"])
def test_inpaint_images_keeps_known_pixels_and_fills_the_rest(mask_shape: str) -> None:
    g = torch.Generator().manual_seed(0)
    known = torch.rand(400, 1, 4, 4, generator=g, dtype=F64)
    hw = torch.zeros(4, 4, dtype=torch.bool)
    hw[:2] = True  # upper half known, lower half to fill
    mask = {"full": hw.expand(400, 1, 4, 4), "chw": hw[None], "hw": hw}[mask_shape]
    x0 = 20.0 * torch.randn(400, 1, 4, 4, generator=g, dtype=F64)
    out = inpaint(heun, independent_score(0.7), x0, karras_sigmas(50, 0.002, 20.0).double(), known, mask,
                  generator=g)
    assert out.shape == known.shape
    assert torch.equal(out[:, :, :2], known[:, :, :2])
    lower = out[:, :, 2:]
    assert abs(float(lower.mean())) < 0.05 and float(lower.std()) == pytest.approx(0.7, rel=0.05)
    with pytest.raises(DataError):
        inpaint(heun, independent_score(0.7), x0, [20.0, 0.0], known, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(DataError):
        inpaint(heun, independent_score(0.7), x0, [20.0, 0.0], known[:10], mask)


def test_inpaint_with_annealed_langevin_and_the_sde_samplers() -> None:
    """Independent coordinates: the filled-in coordinate has the law the same sampler gives without
    inpainting (its standard deviation within 5%), and the known one its value."""
    g = torch.Generator().manual_seed(1)
    n = 2000
    known = torch.full((n, 2), 1.5, dtype=F64)
    mask = torch.tensor([True, False])
    score = independent_score(0.8)
    sig = torch.exp(torch.linspace(math.log(10.0), math.log(0.01), 10, dtype=F64))
    x0 = 10.0 * torch.randn(n, 2, generator=g, dtype=F64)
    opts = dict(eps=2e-4, steps_per_sigma=20)
    pairs = [(inpaint(annealed_langevin, score, x0, sig, known, mask, generator=g, **opts),
              annealed_langevin(score, x0, sig, generator=g, **opts))]
    sde = VESDE(0.01, 10.0)
    score_t = sigma_conditioned(score, sde)
    pairs.append((inpaint_sde(pc, score_t, sde, known, mask, generator=g, n_steps=100),
                  pc(score_t, (n, 2), sde, generator=g, n_steps=100, dtype=F64)))
    seen: list[dict] = []
    res_ode = inpaint_sde(ode, score_t, sde, known, mask, generator=g, rtol=1e-4, atol=1e-4, callback=seen.append)
    pairs.append((res_ode, ode(score_t, (n, 2), sde, generator=g, rtol=1e-4, atol=1e-4, dtype=F64)))
    for filled, free in pairs:
        assert torch.equal(filled[:, 0], known[:, 0])
        assert float(filled[:, 1].std()) == pytest.approx(float(free.std()), rel=0.05)
    assert seen[-1]["nfe"] > 0


def test_replacement_is_biased_and_resampling_reduces_the_bias() -> None:
    """At x1 = 1 the exact weight of x2's upper component is 0.982: plain replacement gives ~0.77,
    RePaint resampling (U = 10) ~0.90 on the same budget of steps."""
    mix = toy("gmm2d")
    cond = mix.conditional([0], [1.0])
    mid = float(cond.means[:, 0].mean())
    n = 1000
    known = torch.zeros(n, 2, dtype=F64)
    known[:, 0] = 1.0
    mask = torch.tensor([True, False])
    sig = karras_sigmas(18, 0.002, 80.0).double()

    def upper(resample: int) -> float:
        g = torch.Generator().manual_seed(3)
        x0 = 80.0 * torch.randn(n, 2, generator=g, dtype=F64)
        out = inpaint(heun, mix.noisy_score, x0, sig, known, mask, generator=g, resample=resample)
        return float((out[:, 1] > mid).double().mean())

    plain, repaint = upper(1), upper(10)
    assert float(cond.weights[0]) == pytest.approx(0.982, abs=1e-3)
    assert plain < 0.85 and repaint > plain + 0.08
    with pytest.raises(ConfigError, match="denoising samplers"):
        inpaint(annealed_langevin, mix.noisy_score, known, sig, known, mask, resample=2, eps=1e-5, steps_per_sigma=1)


# --------------------------------------------------------------------------- sequential Monte Carlo


@pytest.mark.parametrize("a", [0.5, -1.5])
def test_smc_imputation_matches_the_exact_conditional(a: float) -> None:
    """gmm2d, impute x2 given x1 = a, against exact draws of p(x2 | x1 = a): the two-sample
    Kolmogorov-Smirnov statistic below its 1% critical value 1.63 sqrt(2 / n), the share above the
    components' midpoint within 0.03, and MMD^2 below 2e-3 (the sample-vs-sample spread here: sd
    ~2e-4; the duplicates the final resampling leaves add a small positive bias, up to 6e-4 measured)."""
    mix = toy("gmm2d")
    cond = mix.conditional([0], [a])
    n = 2000
    ref = cond.sample(n, torch.Generator().manual_seed(5)).double()
    known = torch.zeros(n, 2, dtype=F64)
    known[:, 0] = a
    g = torch.Generator().manual_seed(0)
    x0 = 80.0 * torch.randn(n, 2, generator=g, dtype=F64)
    out = inpaint_smc(mix.noisy_score, x0, karras_sigmas(400, 0.002, 80.0).double(), known,
                      torch.tensor([True, False]), generator=g)
    assert torch.equal(out[:, 0], known[:, 0])
    x2 = out[:, 1:]
    grid = torch.cat([x2, ref]).flatten().sort().values
    cdf = [torch.searchsorted(v.flatten().sort().values, grid, right=True) / n for v in (x2, ref)]
    assert float((cdf[0] - cdf[1]).abs().max()) < 1.63 * math.sqrt(2 / n)
    assert mmd(x2, ref, bandwidth=1.0) < 2e-3
    mid = float(cond.means[:, 0].mean())
    assert float((x2 > mid).double().mean()) == pytest.approx(float((ref > mid).double().mean()), abs=0.03)


def test_smc_groups_and_validation() -> None:
    mix = toy("gmm2d")
    known = torch.zeros(600, 2, dtype=F64)
    known[:300, 0], known[300:, 0] = 2.0, -2.0
    mask = torch.tensor([True, False])
    g = torch.Generator().manual_seed(0)
    x0 = 80.0 * torch.randn(600, 2, generator=g, dtype=F64)
    ess = []
    out = inpaint_smc(mix.noisy_score, x0, karras_sigmas(60, 0.002, 80.0).double(), known, mask, particles=300,
                      generator=g, callback=lambda d: ess.append(d["ess"]))
    assert len(ess) == 60 and ess[0].shape == (2,)
    # x1 = 2: x2 ~ N(2, 0.75) (upper component); x1 = -2: x2 ~ N(-2, 0.75)
    assert float(out[:300, 1].mean()) == pytest.approx(2.0, abs=0.2)
    assert float(out[300:, 1].mean()) == pytest.approx(-2.0, abs=0.2)
    with pytest.raises(DataError, match="share their known values"):
        inpaint_smc(mix.noisy_score, x0, [80.0, 0.0], known, mask)
    with pytest.raises(ConfigError, match="whole groups"):
        inpaint_smc(mix.noisy_score, x0, [80.0, 0.0], known, mask, particles=7)


# --------------------------------------------------------------------------- guidance


class LabelledMixture:
    """A class-conditional analytic score: label k is component k of the mixture, ``null_label`` =
    K the whole mixture (the unconditional score), s(x, sigma, labels)."""

    def __init__(self, mix: GaussianMixture) -> None:
        self.mix, self.null_label, self.calls = mix, mix.n_components, 0

    def score(self, x, sigma, labels):
        self.calls += 1
        out = torch.empty_like(x)
        for k in labels.unique().tolist():
            rows = labels == k
            dist = self.mix if k == self.null_label else self.mix.component(k)
            out[rows] = dist.noisy_score(x[rows], sigma[rows])
        return out


def test_guided_is_the_classifier_free_combination() -> None:
    model = LabelledMixture(toy("gmm2d"))
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(30, 2, generator=g, dtype=F64)
    sigma = torch.full((30,), 0.9, dtype=F64)
    cond = model.mix.component(1).noisy_score(x, 0.9)
    uncond = model.mix.noisy_score(x, 0.9)
    for w in (0.0, 0.5, 3.0):
        model.calls = 0
        torch.testing.assert_close(guided(model, 1, w)(x, sigma), (1 + w) * cond - w * uncond)
        assert model.calls == 1  # w > 0: one evaluation of the doubled batch
    labels = torch.tensor([0, 1] * 15)
    mixed = torch.where((labels == 0)[:, None], model.mix.component(0).noisy_score(x, 0.9), cond)
    torch.testing.assert_close(guided(model, labels, 2.0)(x, 0.9), 3 * mixed - 2 * uncond)
    with pytest.raises(ConfigError, match="null_label"):
        guided(model.score, 1, 1.0)
    torch.testing.assert_close(guided(model.score, 1, 1.0, null_label=2)(x, sigma), 2 * cond - uncond)
    for bad in (dict(label=1.5, guidance=1.0), dict(label=1, guidance=-1.0), dict(label=torch.tensor([0.5]),
                                                                                   guidance=0.0)):
        with pytest.raises(ConfigError):
            guided(model, **bad)


def test_guided_sampling_draws_the_class_and_guidance_sharpens_it() -> None:
    """w = 0: samples of component 0 of gmm2d (MMD^2 to exact draws within 1e-3); w = 2 moves them
    away from the other class (their mean distance to mu_1 grows), still all in class 0."""
    mix = toy("gmm2d")
    model = LabelledMixture(mix)
    comp = mix.component(0)
    fresh = comp.sample(2000, torch.Generator().manual_seed(7)).double()
    sig = karras_sigmas(18, 0.002, 80.0).double()
    out = {}
    for w in (0.0, 2.0):
        g = torch.Generator().manual_seed(1)
        x0 = 80.0 * torch.randn(2000, 2, generator=g, dtype=F64)
        out[w] = heun(guided(model, 0, w), x0, sig)
        assert mode_weights(out[w], mix.means.double())[0] >= mode_weights(fresh, mix.means.double())[0] - 0.01
    assert mmd(out[0.0], fresh, bandwidth=1.0) < 1e-3
    far = [float((out[w] - mix.means[1].double()).norm(dim=1).mean()) for w in (0.0, 2.0)]
    assert far[1] > far[0] + 0.2
