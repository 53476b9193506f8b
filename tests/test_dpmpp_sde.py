"""DPM-Solver++(2M) SDE / (3M) SDE and the adaptive DPM-Solver, on Gaussian data N(mu, s2 I), whose
denoiser is D(x, sigma) = mu + s2 / (s2 + sigma^2) (x - mu) and whose probability-flow ODE has the
solution x(sigma) = mu + sqrt((s2 + sigma^2) / (s2 + sigma_0^2)) (x_0 - mu).

Checked: the samples' mean and variance against N(mu, s2) (within 4 standard errors), the
deterministic variants (eta = 0) equal to DPM-Solver++ 2M / 3M and converging at their order to
the exact ODE solution, the adaptive solver's error falling with its tolerance, every count of
score evaluations against its formula, the noise hook, the refusals, and k-diffusion step for step
on injected noise (skipped when k-diffusion is absent).
"""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.errors import ConfigError, ModelError
from scorematch.noise import geometric_sigmas, karras_sigmas
from scorematch.samplers import catalogue, dpm_adaptive, dpm_solver, dpmpp_2m_sde, dpmpp_3m_sde, sample

F64 = torch.float64
MU = torch.tensor([1.5, -0.5], dtype=F64)
S2 = 0.25


def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact noisy score of N(MU, S2 I): -(x - mu) / (s2 + sigma^2)."""
    sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return -(x - MU.to(x.dtype)) / (S2 + sig**2)


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def start(n: int, sigma_max: float, seed: int = 0) -> torch.Tensor:
    """x ~ N(mu, (s2 + sigma_max^2) I): the exact marginal at sigma_max."""
    g = torch.Generator().manual_seed(seed)
    return MU + math.sqrt(S2 + sigma_max**2) * torch.randn(n, 2, generator=g, dtype=F64)


def exact_ode(x0: torch.Tensor, hi: float, lo: float) -> torch.Tensor:
    return MU + math.sqrt((S2 + lo**2) / (S2 + hi**2)) * (x0 - MU)


# --------------------------------------------------------------------------- the distribution


def chain_variance(fn, sigmas: torch.Tensor, **options) -> float:
    """The exact variance of the sampler's output for data N(0, S2) in one dimension, started at
    N(0, S2 + sigma_0^2): the chain is linear in the start and the z_i, so running it on the start
    alone (row 0) and on each z_i alone (row i + 1, injected through the noise hook) gives the
    coefficients, whose squares sum to the variance."""
    rows = len(sigmas)
    x0 = torch.zeros(rows, 1, dtype=F64)
    x0[0] = math.sqrt(S2 + float(sigmas[0]) ** 2)
    step = [0]

    def basis(sigma: float, sigma_next: float) -> torch.Tensor:
        z = torch.zeros(rows, 1, dtype=F64)
        z[1 + step[0]] = 1.0
        step[0] += 1
        return z

    out = fn(lambda x, s: -x / (S2 + torch.as_tensor(s, dtype=F64).reshape(-1, 1) ** 2), x0, sigmas, noise=basis,
             **options)
    return float(out.pow(2).sum())


SDE_VARIANTS = [(dpmpp_2m_sde, {}), (dpmpp_2m_sde, {"solver_type": "heun"}), (dpmpp_2m_sde, {"eta": 0.5}),
                (dpmpp_3m_sde, {})]


@pytest.mark.parametrize("fn, options", SDE_VARIANTS)
def test_the_chain_variance_converges_to_the_data_variance_at_second_order(fn, options) -> None:
    """Measured exact variances, 2M SDE at 30 / 60 / 120 / 240 Karras steps from 80: 0.2762, 0.2559,
    0.2514, 0.2503 (S2 = 0.25)."""
    bias = [chain_variance(fn, karras_sigmas(n, 0.002, 80.0).double(), **options) - S2 for n in (60, 120, 240)]
    assert 0 < abs(bias[2]) < 1e-3 and abs(bias[1]) < 3e-3, bias
    assert math.log2(bias[0] / bias[1]) > 1.5 and math.log2(bias[1] / bias[2]) > 1.5, bias


@pytest.mark.parametrize("fn, options", [*SDE_VARIANTS, (dpm_adaptive, {"eta": 1.0, "per_sample": False}),
                                         (dpm_adaptive, {"rtol": 1e-3, "atol": 1e-3})])
def test_samples_are_the_gaussian(fn, options) -> None:
    """n = 20000 x 2 entries, 120 Karras steps from 80 (the adaptive solver: its own steps between
    80 and 0.002; with eta = 0 at the default tolerances, 26 evaluations, the variance is 0.311;
    with eta = 1 batch-wide: per sample each row's steps depend on its own state, and ancestral
    steps keep the marginal only on a grid that does not, see dpm_adaptive):
    the mean within 4 standard errors (sqrt(s2 / 20000) per
    coordinate) of mu, the variance within 4 standard errors (s2 sqrt(2 / 40000)) of s2 and, for
    the fixed grids, of the chain's exact variance."""
    n = 20000
    x0 = start(n, 80.0)
    sig = karras_sigmas(120, 0.002, 80.0).double()
    out = fn(score, x0, sig, generator=torch.Generator().manual_seed(1), **options)
    mean_se, var_se = math.sqrt(S2 / n), S2 * math.sqrt(2 / (2 * n))
    assert float((out.mean(0) - MU).abs().max()) < 4 * mean_se
    var = float(out.var(0).mean())
    assert abs(var - S2) < 4 * var_se, var
    if fn is not dpm_adaptive:
        assert abs(var - chain_variance(fn, sig, **options)) < 4 * var_se


def test_the_noise_is_what_makes_it_stochastic() -> None:
    """eta = 1: different generators give different samples, each with the right spread; a noise
    hook drawing from a generator gives exactly what that generator gives."""
    x0 = start(500, 80.0)
    sig = karras_sigmas(20, 0.002, 80.0).double()
    for fn in (dpmpp_2m_sde, dpmpp_3m_sde):
        a = fn(score, x0, sig, generator=torch.Generator().manual_seed(3))
        b = fn(score, x0, sig, generator=torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(3)
        c = fn(score, x0, sig, noise=lambda s, t, g=g: torch.randn(x0.shape, generator=g, dtype=F64))
        assert torch.equal(a, c) and float((a - b).abs().mean()) > 0.1
        # zero noise is the deterministic part of the step
        zero = fn(score, x0, sig, noise=lambda s, t: torch.zeros_like(x0))
        assert float(zero.var(0).mean()) < 0.2 * S2


# --------------------------------------------------------------------------- the deterministic variants


def test_eta_zero_is_dpm_solver_plus_plus() -> None:
    x0 = start(64, 20.0)
    sig = karras_sigmas(12, 0.01, 20.0).double()
    torch.testing.assert_close(dpmpp_2m_sde(score, x0, sig, eta=0), dpm_solver(score, x0, sig), rtol=0, atol=1e-12)
    torch.testing.assert_close(dpmpp_3m_sde(score, x0, sig, eta=0), dpm_solver(score, x0, sig, order=3),
                               rtol=0, atol=1e-12)


def ode_errors(fn, options: dict, steps=(20, 40, 80)) -> list[float]:
    hi, lo = 10.0, 0.1
    x0 = start(8, hi)
    return [float((fn(score, x0, geometric_sigmas(hi, lo, k + 1).double(), eta=0, **options)
                   - exact_ode(x0, hi, lo)).abs().max()) for k in steps]


@pytest.mark.parametrize("fn, options", [(dpmpp_2m_sde, {}), (dpmpp_2m_sde, {"solver_type": "heun"}),
                                         (dpmpp_3m_sde, {})])
def test_convergence_order_against_the_exact_ode(fn, options) -> None:
    """Doubling the steps divides the error by about 4: second order (3M too, its first two steps
    limiting it as for any multistep method without a higher-order starter)."""
    e = ode_errors(fn, options)
    rates = [math.log2(e[0] / e[1]), math.log2(e[1] / e[2])]
    assert rates[1] == pytest.approx(2, abs=0.2), (rates, e)


def test_adaptive_error_follows_its_tolerance() -> None:
    """eta = 0 from 10 to 0.1: the error against the exact ODE solution falls with the tolerance,
    with more evaluations; order 3 needs fewer evaluations than order 2 at a tight tolerance."""
    hi, lo = 10.0, 0.1
    x0 = start(64, hi)
    exact = exact_ode(x0, hi, lo)
    errs, nfes = [], []
    for tol in (1e-2, 1e-4, 1e-6):
        out, info = dpm_adaptive(score, x0, [hi, lo], rtol=tol, atol=tol, return_info=True)
        errs.append(float((out - exact).abs().max()))
        nfes.append(info["nfe"])
    assert errs[0] > 10 * errs[1] > 100 * errs[2] and errs[2] < 1e-5, errs
    assert nfes[0] < nfes[1] < nfes[2], nfes
    _, info2 = dpm_adaptive(score, x0, [hi, lo], order=2, rtol=1e-6, atol=1e-6, return_info=True)
    assert info2["nfe"] > nfes[2], (info2, nfes)


# --------------------------------------------------------------------------- evaluation counts


@pytest.mark.parametrize("steps", [1, 2, 5, 17])
def test_multistep_sde_samplers_take_one_evaluation_per_step(steps) -> None:
    x0 = start(4, 20.0)
    for fn in (dpmpp_2m_sde, dpmpp_3m_sde):
        for sig in (karras_sigmas(steps, 0.01, 20.0), karras_sigmas(steps + 1, 0.01, 20.0, append_zero=False)):
            counted = Counted(score)
            fn(counted, x0, sig.double(), generator=torch.Generator().manual_seed(0))
            assert counted.calls == steps


@pytest.mark.parametrize("order, eta, tol", [(2, 0.0, 1e-3), (3, 0.0, 1e-4), (3, 1.0, 1e-2), (2, 0.5, 1e-2)])
def test_adaptive_counts_its_evaluations(order, eta, tol) -> None:
    """nfe = order n_accept + (order - 1) n_reject (the start of a rejected step is reused), + 1
    for a final step to sigma = 0; the count reported equals the calls made, also in the callback."""
    x0 = start(32, 80.0)
    for sig, extra in (([80.0, 0.002], 0), ([80.0, 0.002, 0.0], 1)):
        counted, seen = Counted(score), []
        out, traj, info = dpm_adaptive(counted, x0, sig, order=order, eta=eta, rtol=tol, atol=tol,
                                       generator=torch.Generator().manual_seed(0), callback=seen.append,
                                       return_trajectory=True, return_info=True, per_sample=False)
        assert info["nfe"] == counted.calls == order * info["n_accept"] + (order - 1) * info["n_reject"] + extra
        assert info["steps"] == info["n_accept"] + info["n_reject"] == len(seen) - extra
        assert seen[-1]["nfe"] == info["nfe"] and traj.shape == (info["n_accept"] + 1 + extra, *x0.shape)
        assert torch.equal(traj[-1], out) and torch.equal(traj[0], x0)
        accepted = [d for d in seen if d.get("accepted")]
        assert len(accepted) == info["n_accept"] and accepted[0]["sigma"] == pytest.approx(80.0)
        assert seen[-1]["sigma_next"] == (0.0 if extra else pytest.approx(0.002))
    assert info["n_reject"] >= 0 and info["n_accept"] >= 3


def test_adaptive_returns_like_the_other_samplers() -> None:
    x0 = start(4, 5.0)
    out = dpm_adaptive(score, x0, [5.0, 0.1])
    assert isinstance(out, torch.Tensor) and out.shape == x0.shape
    out2, traj = dpm_adaptive(score, x0, [5.0, 0.1], return_trajectory=True)
    assert torch.equal(out, out2) and traj.shape[1:] == x0.shape
    # the intermediate levels are not used: only the ends
    torch.testing.assert_close(dpm_adaptive(score, x0, karras_sigmas(9, 0.1, 5.0, append_zero=False)), out)


# --------------------------------------------------------------------------- the contract


def test_registered_with_the_denoising_samplers() -> None:
    for name, fn, options, steps in (("dpmpp_2m_sde", dpmpp_2m_sde, ["n_steps", "eta", "s_noise", "solver_type"], 35),
                                     ("dpmpp_3m_sde", dpmpp_3m_sde, ["n_steps", "eta", "s_noise"], 20)):
        e = catalogue.entry(name)
        assert e.family == catalogue.DENOISING and e.resolved() is fn and e.option_names() == options
        assert e.default_steps == steps and e.nfe(steps, {}) == steps
    adaptive = catalogue.entry("dpm_adaptive")
    assert adaptive.resolved() is dpm_adaptive and adaptive.info and adaptive.nfe(10, {}) is None
    assert "n_steps" not in adaptive.option_names() and adaptive.default_steps is None
    torch.testing.assert_close(adaptive.grid(None, 0.01, 5.0), torch.tensor([5.0, 0.01, 0.0], dtype=F64))
    x0 = start(8, 5.0)
    sig = karras_sigmas(6, 0.01, 5.0)
    torch.testing.assert_close(sample("dpmpp_2m_sde", score, x0, sig, generator=torch.Generator().manual_seed(2),
                                      eta=0.3, solver_type="heun"),
                               dpmpp_2m_sde(score, x0, sig, generator=torch.Generator().manual_seed(2), eta=0.3,
                                            solver_type="heun"))
    with pytest.raises(ConfigError, match="do not apply"):
        sample("dpmpp_3m_sde", score, x0, sig, solver_type="heun")


def test_refusals() -> None:
    x0 = start(3, 2.0)
    sig = [2.0, 1.0, 0.0]
    for fn in (dpmpp_2m_sde, dpmpp_3m_sde, dpm_adaptive):
        with pytest.raises(ConfigError, match="eta"):
            fn(score, x0, sig, eta=-0.5)
        with pytest.raises(ConfigError, match="s_noise only applies"):
            fn(score, x0, sig, eta=0.0, s_noise=1.1)
        with pytest.raises(ConfigError, match="shape"):
            fn(score, x0, sig, eta=1.0, noise=lambda s, t: torch.zeros(3),
               **({"per_sample": False} if fn is dpm_adaptive else {}))
    with pytest.raises(ConfigError, match="solver_type"):
        dpmpp_2m_sde(score, x0, sig, solver_type="rk4")
    for bad, match in ((dict(order=4), "order"), (dict(rtol=0, atol=0), "both be 0"), (dict(rtol=-1), "rtol"),
                       (dict(h_init=0), "h_init"), (dict(accept_safety=2), "accept_safety")):
        with pytest.raises(ConfigError, match=match):
            dpm_adaptive(score, x0, sig, **bad)
    with pytest.raises(ConfigError, match="sigma_max > sigma_min > 0"):
        dpm_adaptive(score, x0, [2.0, 0.0])
    with pytest.raises(ModelError, match="non-finite"):
        dpm_adaptive(lambda x, s: x * math.nan, x0, sig)


# --------------------------------------------------------------------------- k-diffusion, step for step


def _k_diffusion():
    try:
        from benchmarks.peers.k_diffusion_peer import _load_k_diffusion

        return _load_k_diffusion()[0]
    except (ImportError, ModuleNotFoundError) as err:  # not installed (CI), or a dependency missing
        pytest.skip(f"k-diffusion is not available: {err}")


def _denoiser(x, sigma):
    return x + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2 * score(x, sigma)


@pytest.mark.parametrize("ours, theirs, options", [
    (dpmpp_2m_sde, "sample_dpmpp_2m_sde", {}), (dpmpp_2m_sde, "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    (dpmpp_2m_sde, "sample_dpmpp_2m_sde", {"eta": 0.4, "s_noise": 1.2}),
    (dpmpp_3m_sde, "sample_dpmpp_3m_sde", {}), (dpmpp_3m_sde, "sample_dpmpp_3m_sde", {"eta": 0.0})])
def test_agrees_with_k_diffusion_on_injected_noise(ours, theirs, options) -> None:
    sampling = _k_diffusion()
    x0 = start(128, 80.0)
    sig = karras_sigmas(15, 0.002, 80.0).double()
    z = torch.randn(15, *x0.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    kd_noise, our_noise = iter(z), iter(z)
    kd_steps, our_steps = [], []
    kd = getattr(sampling, theirs)(_denoiser, x0, sig, disable=True, callback=kd_steps.append,
                                   noise_sampler=lambda s, t: next(kd_noise), **options)
    out = ours(score, x0, sig, callback=our_steps.append, noise=lambda s, t: next(our_noise), **options)
    assert len(kd_steps) == len(our_steps) == 15
    for a, b in zip(kd_steps, our_steps, strict=True):
        torch.testing.assert_close(b["x"], a["x"], rtol=0, atol=1e-10)
        torch.testing.assert_close(b["denoised"], a["denoised"], rtol=0, atol=1e-10)
    torch.testing.assert_close(out, kd, rtol=0, atol=1e-10)


@pytest.mark.parametrize("order, eta", [(2, 0.0), (3, 0.0), (3, 0.7)])
def test_adaptive_agrees_with_k_diffusion(order, eta) -> None:
    """The same accepted and rejected steps and result (k-diffusion computes its scalars in the
    default dtype, float64 here); k-diffusion evaluates the start of a rejected step again."""
    sampling = _k_diffusion()
    x0 = start(128, 80.0)
    z = torch.randn(200, *x0.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    kd_noise, our_noise = iter(z), iter(z)
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        kd, kd_info = sampling.sample_dpm_adaptive(_denoiser, x0, 0.002, 80.0, order=order, eta=eta, disable=True,
                                                   noise_sampler=lambda s, t: next(kd_noise), return_info=True)
    finally:
        torch.set_default_dtype(default)
    out, info = dpm_adaptive(score, x0, [80.0, 0.002], order=order, eta=eta, noise=lambda s, t: next(our_noise),
                             return_info=True, per_sample=False)
    assert (info["steps"], info["n_accept"], info["n_reject"]) == (kd_info["steps"], kd_info["n_accept"],
                                                                   kd_info["n_reject"])
    assert info["nfe"] == kd_info["nfe"] - info["n_reject"]
    torch.testing.assert_close(out, kd, rtol=0, atol=1e-9)


@pytest.mark.parametrize("order, eta", [(3, 0.0), (2, 0.0), (3, 0.7)])
def test_adaptive_per_sample_is_k_diffusion_row_by_row(order, eta) -> None:
    """Per sample, row i is k-diffusion's sample_dpm_adaptive run on row i alone, its noise from
    row i's generator."""
    sampling = _k_diffusion()
    x0 = start(5, 80.0, seed=4)
    out = dpm_adaptive(score, x0, [80.0, 0.002], order=order, eta=eta,
                       generator=[torch.Generator().manual_seed(20 + i) for i in range(5)])
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        for i in range(5):
            g = torch.Generator().manual_seed(20 + i)
            kd = sampling.sample_dpm_adaptive(_denoiser, x0[i:i + 1], 0.002, 80.0, order=order, eta=eta, disable=True,
                                              noise_sampler=lambda s, t, g=g: torch.randn(1, 2, generator=g, dtype=F64))
            torch.testing.assert_close(out[i:i + 1], kd, rtol=0, atol=1e-9)
    finally:
        torch.set_default_dtype(default)


# --------------------------------------------------------------------------- adaptive, per sample


@pytest.mark.parametrize("order, sigmas, eta", [(3, [80.0, 0.002, 0.0], 0.0), (2, [20.0, 0.01], 0.0),
                                               (3, [80.0, 0.002, 0.0], 0.8)])
def test_adaptive_per_sample_is_each_row_alone(order, sigmas, eta) -> None:
    """Per sample (the default) row i's result, steps, evaluations and noise are those of the batch
    holding row i alone: it does not depend on the other rows (with the batch's one error it does).
    The evaluations of the rows follow the formula row by row, and the batched calls are what a
    counting wrapper sees."""
    from scorematch.distributions import toy

    mix = toy("gmm2d")
    x0 = start(6, sigmas[0], seed=3)

    def gens():
        return [torch.Generator().manual_seed(10 + i) for i in range(6)]

    counted = Counted(mix.noisy_score)
    seen: list[dict] = []
    out, traj, info = dpm_adaptive(counted, x0, sigmas, order=order, rtol=1e-3, atol=1e-3, eta=eta, generator=gens(),
                                   return_info=True, return_trajectory=True, callback=seen.append)
    alone = [dpm_adaptive(mix.noisy_score, x0[i:i + 1], sigmas, order=order, rtol=1e-3, atol=1e-3, eta=eta,
                          generator=[g], return_info=True, per_sample=False) for i, g in enumerate(gens())]
    torch.testing.assert_close(out, torch.cat([a for a, _ in alone]), rtol=0, atol=1e-10)
    assert info["n_accept"] == sum(a["n_accept"] for _, a in alone)
    assert info["n_reject"] == sum(a["n_reject"] for _, a in alone)
    assert info["row_nfe"] == sum(a["nfe"] for _, a in alone)
    extra = 1 if sigmas[-1] == 0 else 0
    assert info["row_nfe"] == order * info["n_accept"] + (order - 1) * info["n_reject"] + 6 * extra
    assert info["steps"] == max(a["steps"] for _, a in alone) == len(seen)
    assert info["nfe"] == counted.calls and max(a["nfe"] for _, a in alone) <= counted.calls < info["row_nfe"]
    assert seen[-1]["row_nfe"] == info["row_nfe"] - 6 * extra
    assert traj.shape == (info["steps"] + 1 + extra, *x0.shape) and torch.equal(traj[-1], out)
    batch = dpm_adaptive(mix.noisy_score, x0, sigmas, order=order, rtol=1e-3, atol=1e-3, eta=eta, generator=gens(),
                         per_sample=False)
    assert float((batch - out).abs().max()) > 1e-8  # the batch's one error gives other steps
    with pytest.raises(ConfigError, match="per_sample=False"):
        dpm_adaptive(score, x0, sigmas, eta=1.0, noise=lambda s, t: torch.zeros_like(x0))
