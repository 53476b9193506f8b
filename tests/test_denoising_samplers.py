"""The denoising samplers (heun, euler, euler_ancestral, ddim, dpm_solver, continuous_langevin) and
Karras noise levels, driven by ANALYTIC scores so every error measured is the sampler's.

Quality: unbiased MMD^2 (RBF bandwidth 1) of n = 2000 samples to fresh mixture samples, against the
sample-vs-sample spread measured here (8 pairs of fresh draws of the same size): a sampler passes
when its MMD^2 is below the spread's mean + 4 standard deviations (gmm2d ~1.0e-3, imbalanced
~1.4e-3) and its mode weights are within 0.03 of the truth. sigma_max = 80 (EDM's; the data's
largest pairwise distance is ~19 on imbalanced, ~10 on gmm2d), sigma_min = 0.002.
Exactness: each update rule against its formula on one step, DDIM against the variance-preserving
DDIM formula, the convergence order on a Gaussian (whose probability-flow ODE is solved in closed
form), and k-diffusion's samplers step for step (skipped when k-diffusion is absent).
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.distributions import toy
from scorematch.errors import ConfigError
from scorematch.metrics import mmd, mode_weights
from scorematch.noise import geometric_sigmas, karras_sigmas, linear_sigmas
from scorematch.samplers import (
    catalogue,
    continuous_langevin,
    ddim,
    dpm_solver,
    euler,
    euler_ancestral,
    heun,
    sample,
)

F64 = torch.float64
#: the denoising samplers of the catalogue, name -> function
DENOISING = {e.name: e.resolved() for e in catalogue.entries(catalogue.DENOISING)}
#: those that step along the grid they are given (one picks its own steps between its ends and counts
#: its evaluations itself: tests/test_dpmpp_sde.py)
ON_THE_GRID = {e.name: e.resolved() for e in catalogue.entries(catalogue.DENOISING)
               if e.schedule_option in e.option_names()}
N = 2000
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002


# --------------------------------------------------------------------------- noise levels


def test_karras_sigmas_is_eq_5() -> None:
    s = karras_sigmas(18, 0.002, 80.0, rho=7.0).double()
    assert s.shape == (19,) and s[-1] == 0
    i = torch.arange(18, dtype=F64)
    expected = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1], expected, rtol=1e-6, atol=0)
    assert s[0].item() == pytest.approx(80.0, rel=1e-6) and s[-2].item() == pytest.approx(0.002, rel=1e-6)
    assert (s[1:] < s[:-1]).all()
    no_zero = karras_sigmas(18, 0.002, 80.0, append_zero=False)
    assert no_zero.shape == (18,) and torch.equal(no_zero, karras_sigmas(18, 0.002, 80.0)[:-1])
    # rho = 1 is linear in sigma
    torch.testing.assert_close(karras_sigmas(5, 1.0, 5.0, rho=1.0, append_zero=False).double(),
                               torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=F64))
    assert karras_sigmas(1, 0.1, 3.0).tolist() == pytest.approx([3.0, 0.0])


def test_linear_sigmas() -> None:
    s = linear_sigmas(5, 0.01, 10.0).double()
    torch.testing.assert_close(s, 0.01 + torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64) * 9.99)
    assert linear_sigmas(5, 0.01, 10.0, append_zero=True)[-1] == 0


@pytest.mark.parametrize("args", [(0, 0.1, 1.0), (5, 1.0, 0.1), (5, 0.0, 1.0), (5, 0.1, math.inf), (2.5, 0.1, 1.0)])
def test_karras_sigmas_rejects_bad_input(args) -> None:
    with pytest.raises(ConfigError):
        karras_sigmas(*args)
    with pytest.raises(ConfigError):
        karras_sigmas(5, 0.1, 1.0, rho=0.0)


@pytest.mark.parametrize("sigmas", [[1.0], [1.0, 2.0], [2.0, 0.0, 0.0], [2.0, -1.0], [math.nan, 1.0],
                                    [math.inf, 1.0], [2.0, 0.0, 1.0], [[2.0, 1.0]]])
def test_samplers_validate_sigmas(sigmas) -> None:
    x = torch.zeros(3, 2)
    for fn in DENOISING.values():
        with pytest.raises(ConfigError):
            fn(lambda y, s: -y, x, sigmas)


# --------------------------------------------------------------------------- helpers


def gaussian_score(c: float):
    """Data N(0, c^2 I): s(x, sigma) = -x / (c^2 + sigma^2), D = c^2 x / (c^2 + sigma^2)."""
    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return -x / (c * c + sig * sig)

    return score


class Counted:
    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def start(n: int = N, d: int = 2, seed: int = 1, scale: float = SIGMA_MAX) -> tuple[torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g, dtype=F64), g


# --------------------------------------------------------------------------- quality on the mixtures


_SPREAD: dict[str, float] = {}


def spread_bound(name: str) -> float:
    """Mean + 4 standard deviations of MMD^2 between two fresh draws of N points (8 pairs)."""
    if name not in _SPREAD:
        mix = toy(name)
        vals = torch.tensor([mmd(mix.sample(N, torch.Generator().manual_seed(100 + k)).double(),
                                 mix.sample(N, torch.Generator().manual_seed(200 + k)).double(), bandwidth=1.0)
                             for k in range(8)])
        _SPREAD[name] = float(vals.mean() + 4 * vals.std())
    return _SPREAD[name]


# (sampler, options, Karras steps): the fewest steps of the 5, 10, 18, 30, 50, 100 ladder that pass
CASES = [
    ("heun", {}, 18),
    ("heun", {"s_churn": 10.0}, 30),
    ("euler", {}, 50),
    ("euler_ancestral", {}, 100),
    ("ddim", {}, 50),
    ("ddim", {"eta": 0.5}, 100),
    ("dpm_solver", {}, 18),
    ("dpm_solver", {"order": 3}, 18),
]


@pytest.mark.parametrize("name", ["gmm2d", "imbalanced"])
@pytest.mark.parametrize("sampler, options, steps", CASES, ids=[f"{c[0]}{c[1] or ''}-{c[2]}" for c in CASES])
def test_sampler_reaches_the_mixture(name: str, sampler: str, options: dict, steps: int) -> None:
    mix = toy(name)
    fresh = mix.sample(N, torch.Generator().manual_seed(7)).double()
    x0, g = start()
    score = Counted(mix.noisy_score)
    x = sample(sampler, score, x0, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX).double(), generator=g, **options)
    assert score.calls == (2 * steps - 1 if sampler == "heun" else steps)
    assert mmd(x, fresh, bandwidth=1.0) < spread_bound(name)
    w = mode_weights(x, mix.means.double())
    assert (w - mix.weights).abs().max() < 0.03


def test_heun_18_steps_is_35_evaluations_and_fewer_steps_fail() -> None:
    """The bound has power: Heun with 10 steps (19 evaluations) is clearly outside it."""
    mix = toy("gmm2d")
    fresh = mix.sample(N, torch.Generator().manual_seed(7)).double()
    x0, g = start()
    x = heun(mix.noisy_score, x0, karras_sigmas(10, SIGMA_MIN, SIGMA_MAX).double(), generator=g)
    assert mmd(x, fresh, bandwidth=1.0) > 3 * spread_bound("gmm2d")


# --------------------------------------------------------------------------- update rules, one step


def test_one_step_of_each_rule() -> None:
    score = gaussian_score(1.5)
    x0, g = start(50, 3, scale=4.0)
    sig = [4.0, 2.5]
    s = score(x0, torch.full((50,), 4.0, dtype=F64))
    torch.testing.assert_close(euler(score, x0, sig), x0 + 4.0 * (4.0 - 2.5) * s)
    # heun: average of d at both ends, d = -sigma s
    x2 = x0 + 4.0 * 1.5 * s
    s2 = score(x2, torch.full((50,), 2.5, dtype=F64))
    torch.testing.assert_close(heun(score, x0, sig), x0 + 0.5 * 1.5 * (4.0 * s + 2.5 * s2))
    # a last step to 0: Euler, i.e. x -> D(x, sigma)
    torch.testing.assert_close(heun(score, x0, [4.0, 0.0]), x0 + 16.0 * s)
    torch.testing.assert_close(dpm_solver(score, x0, [4.0, 0.0]), x0 + 16.0 * s)
    # euler ancestral with eta = 1 on the same noise
    up = 2.5 * math.sqrt(1 - (2.5 / 4.0) ** 2)
    down = math.sqrt(2.5**2 - up**2)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    got = euler_ancestral(score, x0, sig, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(got, x0 + 4.0 * (4.0 - down) * s + up * z)
    # continuous Langevin: x + s dt + sqrt(2 sigma dt) z with dt = (4 - 2.5) / (4 - 1)
    dt = 1.5 / 3.0
    got = continuous_langevin(score, x0, [4.0, 2.5, 1.0], generator=torch.Generator().manual_seed(9),
                              return_trajectory=True)[1][1]
    torch.testing.assert_close(got, x0 + dt * s + math.sqrt(2 * 4.0 * dt) * z)


def test_ddim_is_the_variance_preserving_ddim_update() -> None:
    """DDIM on x_vp = a x (a^2 = 1 / (1 + sigma^2)): x_vp' = a' x0 + sqrt(1 - a'^2 - c^2) eps + c z,
    c = eta sqrt((1 - a'^2) / (1 - a^2)) sqrt(1 - a^2 / a'^2); the VE step is x_vp' / a'."""
    score = gaussian_score(0.8)
    x0, _ = start(40, 2, scale=3.0)
    sig, sig_next = 3.0, 1.2
    s = score(x0, torch.full((40,), sig, dtype=F64))
    x0_hat, eps_hat = x0 + sig**2 * s, -sig * s
    a, a_next = (1 + sig**2) ** -0.5, (1 + sig_next**2) ** -0.5
    for eta in (0.0, 0.3, 1.0):
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
        c = eta * math.sqrt((1 - a_next**2) / (1 - a**2)) * math.sqrt(1 - a**2 / a_next**2)
        vp = a_next * x0_hat + math.sqrt(1 - a_next**2 - c**2) * eps_hat + c * z
        got = ddim(score, x0, [sig, sig_next], eta=eta, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(got, vp / a_next)


def test_ddim_equals_euler_and_euler_ancestral() -> None:
    mix = toy("gmm2d")
    x0, _ = start(300)
    sig = karras_sigmas(12, SIGMA_MIN, SIGMA_MAX).double()
    torch.testing.assert_close(ddim(mix.noisy_score, x0, sig), euler(mix.noisy_score, x0, sig))
    for eta in (0.4, 1.0):
        a = ddim(mix.noisy_score, x0, sig, eta=eta, generator=torch.Generator().manual_seed(2))
        b = euler_ancestral(mix.noisy_score, x0, sig, eta=eta, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(a, b)


def test_dpm_solver_is_exact_for_a_constant_denoiser() -> None:
    """Point-mass data at m: D = m at every sigma, the ODE solution is m + (sigma / sigma_0)(x_0 - m)."""
    m = torch.tensor([1.5, -0.5], dtype=F64)

    def score(x, sigma):
        return (m - x) / sigma.reshape(-1, 1) ** 2

    x0, _ = start(10, 2, scale=5.0)
    sig = geometric_sigmas(5.0, 0.05, 7).double()
    for order in (2, 3):
        torch.testing.assert_close(dpm_solver(score, x0, sig, order=order), m + (0.05 / 5.0) * (x0 - m))


def ode_errors(sampler: str, options: dict, steps=(20, 40, 80)) -> list[float]:
    """|x_N - x(sigma_N)| on data N(0, 1), whose probability-flow ODE has the solution
    x(sigma) = x_0 sqrt(1 + sigma^2) / sqrt(1 + sigma_0^2); geometric sigmas from 10 to 0.1."""
    hi, lo = 10.0, 0.1
    x0 = torch.tensor([[1.0]], dtype=F64) * hi
    exact = x0 * math.sqrt(1 + lo * lo) / math.sqrt(1 + hi * hi)
    return [float((sample(sampler, gaussian_score(1.0), x0, geometric_sigmas(hi, lo, k + 1).double(), **options)
                   - exact).abs()) for k in steps]


@pytest.mark.parametrize("sampler, options, order", [
    ("euler", {}, 1), ("heun", {}, 2), ("dpm_solver", {}, 2), ("dpm_solver", {"order": 3}, 2)])
def test_convergence_order_on_a_gaussian(sampler: str, options: dict, order: int) -> None:
    """Doubling the steps divides the error by about 2^order. The 3M multistep method is of order 2
    overall here: its first (order-1) and second (order-2) steps limit it, as for every multistep
    method started without a higher-order starter."""
    errors = ode_errors(sampler, options)
    rates = [math.log2(errors[0] / errors[1]), math.log2(errors[1] / errors[2])]
    assert rates[1] == pytest.approx(order, abs=0.15), rates


def test_dpm_solver_3m_beats_2m_on_a_gaussian() -> None:
    """Measured: 3M's error is 3.5x smaller than 2M's at 40-80 steps (5.3e-5 vs 1.9e-4 at 80)."""
    e2, e3 = ode_errors("dpm_solver", {}), ode_errors("dpm_solver", {"order": 3})
    assert all(b < a / 3 for a, b in zip(e2[1:], e3[1:], strict=True)), (e2, e3)


def test_heun_churn_follows_algorithm_2() -> None:
    """sigma_hat = (1 + gamma) sigma with gamma = min(s_churn / N, sqrt(2) - 1) inside [s_tmin, s_tmax]."""
    sig = karras_sigmas(10, 0.01, 20.0).double()
    seen = []
    x0, g = start(20, 2, scale=20.0)
    heun(gaussian_score(1.0), x0, sig, generator=g, s_churn=4.0, s_tmin=0.5, s_tmax=5.0,
         callback=lambda d: seen.append((d["sigma"], d["sigma_hat"])))
    assert len(seen) == 10
    for s, s_hat in seen:
        expected = s * (1 + min(4.0 / 10, math.sqrt(2) - 1)) if 0.5 <= s <= 5.0 else s
        assert s_hat == pytest.approx(expected, rel=1e-12)
    assert any(s_hat > s for s, s_hat in seen) and any(s_hat == s for s, s_hat in seen)


# --------------------------------------------------------------------------- contract details


def test_callback_trajectory_progress_and_images(capsys) -> None:
    score = gaussian_score(0.5)
    x = 3.0 * torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(5, 0.01, 3.0)
    for name, fn in ON_THE_GRID.items():
        got = []
        # restart's passes add steps off the grid (tests/test_restart.py); without restarts it is on it
        extra = {"restarts": 0} if "restarts" in catalogue.entry(name).option_names() else {}
        out, traj = fn(score, x, sig, generator=torch.Generator().manual_seed(0), callback=got.append,
                       progress=True, return_trajectory=True, **extra)
        assert out.shape == x.shape and traj.shape == (6, *x.shape) and torch.equal(traj[-1], out)
        assert torch.equal(traj[0], x)
        assert [d["i"] for d in got] == list(range(5))
        assert got[-1]["nfe"] == catalogue.entry(name).nfe(5, extra)  # the last step is the last evaluation
        d = got[2]
        assert set(d) >= {"i", "sigma", "sigma_next", "x", "denoised"}
        assert d["sigma"] == pytest.approx(float(sig[2])) and d["sigma_next"] == pytest.approx(float(sig[3]))
        # denoised = x + sigma^2 s(x, sigma), at the sigma the step evaluated
        torch.testing.assert_close(d["denoised"], d["x"] + d["sigma_hat"] ** 2 * score(d["x"], torch.tensor(
            [d["sigma_hat"]])), msg=name)
    assert "heun" in capsys.readouterr().err


def test_nfe_and_reproducibility() -> None:
    mix = toy("gmm2d")
    x0, _ = start(100)
    for sig in (karras_sigmas(8, 0.01, 20.0), karras_sigmas(8, 0.01, 20.0, append_zero=False)):
        score = Counted(mix.noisy_score)
        heun(score, x0, sig)
        assert score.calls == (15 if sig[-1] == 0 else 14)
    for e in catalogue.entries(catalogue.DENOISING):  # the catalogue's NFE formula, on a grid ending in 0
        if e.name not in ON_THE_GRID:
            continue
        score = Counted(mix.noisy_score)
        e.resolved()(score, x0, karras_sigmas(8, 0.01, 20.0))
        assert score.calls == e.nfe(8, {}), e.name
    for name in ("euler_ancestral", "continuous_langevin"):
        a = sample(name, mix.noisy_score, x0, karras_sigmas(8, 0.01, 20.0), generator=torch.Generator().manual_seed(4))
        b = sample(name, mix.noisy_score, x0, karras_sigmas(8, 0.01, 20.0), generator=torch.Generator().manual_seed(4))
        c = sample(name, mix.noisy_score, x0, karras_sigmas(8, 0.01, 20.0), generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b) and not torch.allclose(a, c)


def test_options_that_do_not_apply_are_refused() -> None:
    x = torch.zeros(3, 2)
    sig = [2.0, 1.0, 0.0]
    score = gaussian_score(1.0)
    with pytest.raises(ConfigError, match="do not apply to the heun sampler"):
        sample("heun", score, x, sig, eta=0.5)
    with pytest.raises(ConfigError, match="order"):
        sample("euler", score, x, sig, order=3)
    with pytest.raises(ConfigError, match="unknown sampler"):
        sample("lms", score, x, sig)
    with pytest.raises(ConfigError, match="only apply with stochastic churn"):
        heun(score, x, sig, s_noise=1.003)
    with pytest.raises(ConfigError, match="only applies with eta > 0"):
        euler_ancestral(score, x, sig, eta=0.0, s_noise=1.0)
    for bad in (dict(eta=1.5), dict(eta=-0.1)):
        with pytest.raises(ConfigError):
            ddim(score, x, sig, **bad)
    with pytest.raises(ConfigError):
        dpm_solver(score, x, sig, order=4)
    with pytest.raises(ConfigError):
        heun(score, x, sig, s_churn=1.0, s_tmin=2.0, s_tmax=1.0)


# --------------------------------------------------------------------------- k-diffusion, step for step


def _k_diffusion():
    try:
        from benchmarks.peers.k_diffusion_peer import _load_k_diffusion

        return _load_k_diffusion()[0]
    except (ImportError, ModuleNotFoundError) as err:  # not installed (CI), or a dependency missing
        pytest.skip(f"k-diffusion is not available: {err}")


@pytest.mark.parametrize("ours, theirs, options", [
    ("heun", "sample_heun", {}),
    ("heun", "sample_heun", {"s_churn": 5.0, "s_tmin": 0.05, "s_tmax": 10.0, "s_noise": 1.003}),
    ("euler", "sample_euler", {}),
    ("euler_ancestral", "sample_euler_ancestral", {}),
    ("euler_ancestral", "sample_euler_ancestral", {"eta": 0.6, "s_noise": 0.9}),
    ("dpm_solver", "sample_dpmpp_2m", {}),
])
def test_agrees_with_k_diffusion_step_for_step(ours: str, theirs: str, options: dict) -> None:
    sampling = _k_diffusion()
    mix = toy("gmm2d")
    sig = karras_sigmas(15, SIGMA_MIN, SIGMA_MAX).double()
    x0, _ = start(256)

    def denoiser(x, sigma):
        return x + sigma.reshape(-1, 1) ** 2 * mix.noisy_score(x, sigma)

    seed = 11
    kd_steps, our_steps = [], []
    kd_options = dict(options)
    if ours == "euler_ancestral":
        g = torch.Generator().manual_seed(seed)
        kd_options["noise_sampler"] = lambda s, s_next: torch.randn(x0.shape, generator=g, dtype=F64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # k-diffusion's heun/euler churn noise comes from the global generator
        kd = getattr(sampling, theirs)(denoiser, x0, sig, disable=True, callback=kd_steps.append, **kd_options)
    out = sample(ours, mix.noisy_score, x0, sig, generator=torch.Generator().manual_seed(seed),
                 callback=our_steps.append, **options)
    assert len(kd_steps) == len(our_steps) == 15
    for a, b in zip(kd_steps, our_steps, strict=True):
        torch.testing.assert_close(b["x"], a["x"], rtol=0, atol=1e-5)
        torch.testing.assert_close(b["denoised"], a["denoised"], rtol=0, atol=1e-5)
        assert b["sigma_hat"] == pytest.approx(float(a["sigma_hat"]), rel=1e-12)
    torch.testing.assert_close(out, kd, rtol=0, atol=1e-5)


def test_continuous_langevin_mean_follows_its_ode() -> None:
    """Data N(0, c^2): the recipe's mean obeys dm = -m / (c^2 + sigma(t)^2) dt over t in [0, 1] with
    sigma linear, so m_end = m_0 exp(-(atan(sigma_max / c) - atan(sigma_min / c)) / (c (sigma_max - sigma_min))):
    with sigma_max = 12 the samples keep 88% of their start mean (why the recipe does not sample p)."""
    c, lo, hi = 1.0, 0.01, 12.0
    x0 = torch.full((4000, 1), 10.0, dtype=F64)
    out = continuous_langevin(gaussian_score(c), x0, linear_sigmas(2001, lo, hi).double(),
                              generator=torch.Generator().manual_seed(0))
    factor = math.exp(-(math.atan(hi / c) - math.atan(lo / c)) / (c * (hi - lo)))
    assert factor == pytest.approx(0.8841, abs=1e-4)
    assert float(out.mean()) == pytest.approx(10.0 * factor, rel=0.01)
