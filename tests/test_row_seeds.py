"""Per-row generators, Brownian-tree noise and exact evaluation counts, for every sampler, on a
Gaussian whose noisy scores are closed forms: data N(0, I) in 2-D, so the noisy marginal at
noise level sigma is N(0, (1 + sigma^2) I) and s(x, sigma) = -x / (1 + sigma^2)."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch._random import RowGenerators, rademacher_like, rand, randn, randn_like, row_seed
from scorematch.errors import ConfigError
from scorematch.noise import geometric_sigmas, karras_sigmas
from scorematch.samplers import (
    BrownianTree,
    CountedScore,
    catalogue,
    euler_ancestral,
    euler_maruyama,
    inpaint_smc,
    pc,
    sample,
)
from scorematch.sde import VESDE

F64 = torch.float64
SDE = VESDE(sigma_min=0.01, sigma_max=10.0)


def sigma_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -x / (1 + sigma.to(x).pow(2)[:, None])


def time_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return sigma_score(x, SDE.marginal_std(t))


def energy(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.pow(2).sum(1)


#: steps of each sampler in these tests (small, so that every sampler runs in milliseconds)
STEPS = 6


#: the samplers called here (those whose solver picks its steps from a tolerance are tested through the
#: command line, tests/test_sample_rows.py)
NAMES = tuple(n for n in catalogue.names() if not catalogue.entry(n).info)
SDE_FAMILY = {n for n in NAMES if catalogue.entry(n).family == catalogue.SCORE_SDE}
DENOISING = {n for n in NAMES if catalogue.entry(n).family == catalogue.DENOISING}


def run(name: str, score, n: int, generator, steps: int = STEPS, **opts):
    """Sampler ``name`` on n rows, the start drawn from ``generator`` as the run layer does."""
    e = catalogue.entry(name)
    if e.family == catalogue.UNCONDITIONAL:
        x0 = -3 + 6 * rand((n, 2), generator, dtype=F64)
        return sample(name, score, x0, 0.05, n_steps=steps, generator=generator)
    if e.family == catalogue.NCSN_LEVELS:
        x0 = -3 + 6 * rand((n, 2), generator, dtype=F64)
        return sample(name, score, x0, geometric_sigmas(5.0, 0.1, 3), eps=0.05, steps_per_sigma=steps,
                      generator=generator)
    if e.family == catalogue.SCORE_SDE:
        x0 = SDE.prior_sample((n, 2), generator, dtype=F64)
        if "n_steps" not in e.option_names():  # the adaptive ODE
            return sample(name, score, x0, SDE, generator=generator, rtol=1e-7, atol=1e-7)
        extra = {"per_sample_step": True} if "per_sample_step" in e.option_names() else {}
        return sample(name, score, x0, SDE, n_steps=steps, generator=generator, **extra, **opts)
    grid = e.grid(steps, 0.01, 10.0)
    x0 = 10.0 * randn((n, 2), generator, dtype=F64)
    options = {"euler_ancestral": {}, "ddim": {"eta": 1.0}, "heun": {"s_churn": 5.0},
               "euler": {"s_churn": 5.0}}.get(name, {})
    return sample(name, score, x0, grid, generator=generator, **options, **opts)


def score_for(name: str):
    e = catalogue.entry(name)
    if e.conditioning == "none":  # langevin takes s(x) = -x, mala the energy |x|^2 / 2 of N(0, I)
        return energy if name == "mala" else (lambda x: -x)
    return time_score if e.conditioning == "time" else sigma_score


def test_row_seeds_are_distinct_and_fixed():
    seeds = {row_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000  # seed + index would collide (row 1 of seed 0 = row 0 of seed 1)
    assert row_seed(7, 3) == row_seed(7, 3) < 2**63


def test_a_draw_with_a_slice_is_that_slice_of_the_draw():
    x = torch.zeros(10, 3, 4)
    full = randn_like(x, RowGenerators.from_seed(5, 10))
    part = RowGenerators.from_seed(5, 10)[3:7]
    assert part.indices == (3, 4, 5, 6)
    assert torch.equal(randn_like(x[:4], part), full[3:7])
    shifted = RowGenerators.from_seed(5, 4, start=6)
    assert torch.equal(randn_like(x[:4], shifted), full[6:])
    # a list of generators, as diffusers takes them: row i from generator i alone; rows of 256
    # entries or more draw from a torch.Generator seeded with the row's seed, smaller ones hash
    big = torch.zeros(10, 16, 16)
    gens = [torch.Generator().manual_seed(row_seed(5, i)) for i in range(10)]
    assert torch.equal(randn_like(big, gens), randn_like(big, RowGenerators.from_seed(5, 10)))
    gens = [torch.Generator().manual_seed(row_seed(5, i)) for i in range(10)]
    assert torch.equal(randn_like(big[:2], gens[3:5]), randn_like(big, RowGenerators.from_seed(5, 10))[3:5])


@pytest.mark.parametrize("shape", [(4000, 3), (4000, 1)])
def test_hashed_draws_of_small_rows_follow_their_laws(shape):
    """The counter-based draws of small rows: N(0, 1) moments, U[0, 1) and fair +-1, with every
    draw of a row new (a row's two draws uncorrelated)."""
    rows = RowGenerators.from_seed(0, shape[0])
    z, z2 = randn_like(torch.zeros(shape), rows), randn_like(torch.zeros(shape), rows)
    n = z.numel()
    assert abs(z.mean()) < 4 / n**0.5 and abs(z.var() - 1) < 6 * (2 / n) ** 0.5
    assert abs((z**4).mean() - 3) < 0.3 and abs((z * z2).mean()) < 4 / n**0.5
    u = rand(shape, rows)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 4 * (1 / 12 / n) ** 0.5
    v = rademacher_like(torch.zeros(shape), rows)
    assert set(v.unique().tolist()) == {-1.0, 1.0} and abs(v.mean()) < 4 / n**0.5


def test_per_row_generators_must_match_the_rows():
    with pytest.raises(ConfigError, match="3 per-row generators for a draw of shape"):
        randn_like(torch.zeros(4, 2), RowGenerators.from_seed(0, 3))
    x0 = torch.zeros(8, 2)
    with pytest.raises(ConfigError, match="one torch.Generator"):
        inpaint_smc(sigma_score, x0, [1.0, 0.0], x0, torch.tensor([True, False]), particles=4,
                    generator=RowGenerators.from_seed(0, 8))


@pytest.mark.parametrize("name", NAMES)
def test_the_first_rows_do_not_depend_on_n_or_the_batch(name):
    """Rows 0..3 of a call on 12 rows equal a call on 4 rows and the same rows sampled in two
    batches (4..11 from start 4); ode's adaptive steps are shared by its batch, so there the rows
    agree to the solver's tolerance."""
    score = score_for(name)
    full = run(name, score, 12, RowGenerators.from_seed(3, 12))
    first = run(name, score, 4, RowGenerators.from_seed(3, 4))
    rest = run(name, score, 8, RowGenerators.from_seed(3, 8, start=4))
    assert full.shape == (12, 2) and torch.isfinite(full).all()
    if name == "ode":
        torch.testing.assert_close(first, full[:4], rtol=0, atol=1e-5)
        torch.testing.assert_close(rest, full[4:], rtol=0, atol=1e-5)
    else:
        assert torch.equal(first, full[:4])
        assert torch.equal(rest, full[4:])
    other = run(name, score, 4, RowGenerators.from_seed(4, 4))
    assert (other - first).abs().max() > 1e-3  # another seed gives other samples


def test_pc_with_the_batch_wide_step_couples_the_rows():
    """pc's default step size is a batch mean (the reference rule), so a row depends on its batch."""
    a = pc(time_score, (12, 2), SDE, n_steps=STEPS, generator=RowGenerators.from_seed(3, 12), dtype=F64)
    b = pc(time_score, (4, 2), SDE, n_steps=STEPS, generator=RowGenerators.from_seed(3, 4), dtype=F64)
    assert (a[:4] - b).abs().max() > 1e-6


def test_brownian_tree_is_a_brownian_path():
    """W(t) has variance t - t0, increments over disjoint intervals are uncorrelated, and the
    values do not depend on the order of the queries or on the other rows."""
    like = torch.zeros(20000, 1, dtype=F64)
    tree = BrownianTree(like, 0.0, 2.0, torch.Generator().manual_seed(0))
    w07, w15 = tree.value(0.7), tree.value(1.5)
    assert abs(w07.var().item() - 0.7) < 0.03 and abs(w15.var().item() - 1.5) < 0.06
    assert abs((w07 * (w15 - w07)).mean().item()) < 0.03
    again = BrownianTree(like, 0.0, 2.0, torch.Generator().manual_seed(0))
    assert torch.equal(again.value(1.5), w15) and torch.equal(again.value(0.7), w07)
    rows = BrownianTree(torch.zeros(6, 3), 0, 1, RowGenerators.from_seed(2, 6)).value(0.3)
    tail = BrownianTree(torch.zeros(2, 3), 0, 1, RowGenerators.from_seed(2, 2, start=4)).value(0.3)
    assert torch.equal(rows[4:], tail)


def _gap(brownian: bool, coarse: int, fine: int, name: str = "euler_ancestral") -> float:
    """Mean |x_coarse - x_fine| at one seed (200 rows, per-row generators)."""
    out = []
    for steps in (coarse, fine):
        g = RowGenerators.from_seed(11, 200)
        if name == "euler_ancestral":
            x0 = 10.0 * randn((200, 2), g, dtype=F64)
            out.append(euler_ancestral(sigma_score, x0, karras_sigmas(steps, 0.01, 10.0), generator=g,
                                       brownian=brownian))
        else:
            out.append(euler_maruyama(time_score, (200, 2), SDE, n_steps=steps, generator=g, dtype=F64,
                                      brownian=brownian))
    return (out[0] - out[1]).abs().mean().item()


@pytest.mark.parametrize("name", ["euler_ancestral", "euler_maruyama"])
def test_brownian_noise_converges_as_the_steps_grow(name):
    """At one seed, 100 and 1000 steps land close together with Brownian-tree noise and far apart
    with fresh noise (independent draws: the two samples are about as far as two samples of the
    data, mean |diff| 2/sqrt(pi) = 1.13 per coordinate of N(0, I)). Measured: fresh 1.04 and
    1.05, Brownian 0.027 (euler_ancestral) and 0.038 (euler_maruyama), 28-39 times closer."""
    fresh, tree = _gap(False, 100, 1000, name), _gap(True, 100, 1000, name)
    assert 0.9 < fresh < 1.3
    assert tree < fresh / 15


@pytest.mark.parametrize("name", ["heun", "euler", "ddim", "continuous_langevin", "reverse_diffusion", "pc"])
def test_brownian_noise_runs_on_every_stochastic_sampler(name):
    g = RowGenerators.from_seed(1, 6)
    a = run(name, score_for(name), 6, g, brownian=True)
    b = run(name, score_for(name), 6, RowGenerators.from_seed(1, 6), brownian=True)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_brownian_needs_noise():
    x0 = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="churn"):
        sample("heun", sigma_score, x0, [1.0, 0.0], brownian=True)
    with pytest.raises(ConfigError, match="eta > 0"):
        sample("ddim", sigma_score, x0, [1.0, 0.0], brownian=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 5, 13])
def test_evaluation_counts_match_the_formula(name, steps):
    """Every sampler's calls of its score, counted, equal its catalogue entry's ``nfe`` (heun:
    2N - 1 with the final 0; pc: 2N + 1), at several step counts; the adaptive ode has no formula,
    and the count its callback reports is the counted one."""
    e = catalogue.entry(name)
    if e.min_steps is not None and steps < e.min_steps:
        steps = e.min_steps
    method = "energy" if name == "mala" else "score"
    counted = CountedScore(score_for(name), method)
    g = torch.Generator().manual_seed(0)
    seen: list[int] = []
    if e.family == catalogue.SCORE_SDE and "n_steps" not in e.option_names():  # the adaptive ODE
        sample(name, counted, SDE.prior_sample((3, 2), g, dtype=F64), SDE, generator=g,
               callback=lambda info: seen.append(info["nfe"]))
        assert counted.calls > 10 and seen and counted.calls - seen[-1] <= 2  # the last callback, then Tweedie
        return
    run(name, counted, 3, g, steps=steps)
    n = 3 if e.family == catalogue.NCSN_LEVELS else steps  # annealed: the formula counts its 3 levels
    options = {"steps_per_sigma": steps} if e.family == catalogue.NCSN_LEVELS else {}
    assert counted.calls == e.nfe(n, options)
    if name == "heun":
        assert counted.calls == 2 * steps - 1
    if name == "pc":
        assert counted.calls == 2 * steps + 1


def test_heun_without_a_final_zero_takes_2n():
    counted = CountedScore(sigma_score)
    sample("heun", counted, torch.zeros(2, 2), [4.0, 2.0, 1.0])
    assert counted.calls == 4  # two Heun steps, neither to 0


def test_a_counted_score_forwards_the_model():
    class Model(torch.nn.Module):
        sigma_min = 0.5

        def score(self, x, sigma):
            return -x

    counted = CountedScore(Model())
    assert counted.sigma_min == 0.5 and math.isclose(float(counted(torch.ones(1, 1), None)), -1.0)
    assert counted.calls == 1
    counted.score(torch.ones(1, 1), None)  # samplers that look for .score are counted too
    sample("euler", counted, torch.zeros(2, 1), [2.0, 1.0, 0.0])
    assert counted.calls == 4


def test_a_noise_function_gives_the_dpmpp_sde_samplers_brownian_noise():
    """dpmpp_2m_sde takes ``noise(sigma, sigma_next)``: with ``sigma_noise`` (the Brownian path in
    log sigma) 100 and 1000 steps land far closer than with fresh noise, at one seed (measured:
    mean |diff| 0.0083 against 1.06, 127 times closer)."""
    from scorematch.samplers import dpmpp_2m_sde, sigma_noise

    out = {}
    for brownian in (False, True):
        for steps in (100, 1000):
            g = RowGenerators.from_seed(11, 200)
            grid = karras_sigmas(steps, 0.01, 10.0)
            x0 = 10.0 * randn((200, 2), g, dtype=F64)
            noise = sigma_noise(x0, grid, g) if brownian else None
            out[brownian, steps] = dpmpp_2m_sde(sigma_score, x0, grid, generator=g, noise=noise)
    fresh = (out[False, 100] - out[False, 1000]).abs().mean().item()
    tree = (out[True, 100] - out[True, 1000]).abs().mean().item()
    assert fresh > 0.5 and tree < fresh / 10, (fresh, tree)
