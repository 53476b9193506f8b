"""k-diffusion (Katherine Crowson): Karras-style denoisers D(x, sigma), through its own functions.

The score net s.nc_net(x, sigma) is wrapped, parameters shared, as the denoiser
D(x, sigma) = x + sigma^2 s(x, sigma) (Tweedie), so that k-diffusion's s(x, sigma) = (D - x) / sigma^2
is our net.  Provided: ``ncsn`` (layers.Denoiser.loss), ``reverse_sde_step``
(sampling.sample_euler_ancestral), ``ode_likelihood`` (sampling.log_likelihood) and the denoising
samplers ``heun_step``, ``euler_step``, ``euler_ancestral_step``, ``dpm_solver_step``
(sample_heun, sample_euler, sample_euler_ancestral, sample_dpmpp_2m).  k-diffusion has no
predictor-corrector sampler, no annealed Langevin dynamics and no sliced / implicit score matching,
so those cells stay empty.
"""

from __future__ import annotations

import math
import sys
import types

import torch
from torch import nn

from benchmarks.peers import Op, Setup, standard_normal_score, standard_normal_score_t, training_step

NAME = "k-diffusion"
DISTRIBUTION = "k-diffusion"

#: imports at the top of k-diffusion's utils.py / layers.py that the modules used here never call
_UNUSED_IMPORTS = {
    # utils.py: `from torchvision.transforms import functional as TF`, used only by its two PIL helpers
    "torchvision": ("transforms",),
    "torchvision.transforms": ("functional",),
    "torchvision.transforms.functional": (),
    # layers.py: `from dctorch import functional as df`, used only by Denoiser.loss when scales != 1
    "dctorch": ("functional",),
    "dctorch.functional": (),
}


def _load_k_diffusion() -> tuple[types.ModuleType, types.ModuleType]:
    """(k_diffusion.sampling, k_diffusion.layers) without running k_diffusion/__init__.py.

    Why: the package __init__ imports evaluation.py and augmentation.py, which need torchvision;
    the benchmark venv has no torchvision (installing it would replace the CPU torch, so
    k-diffusion is installed with --no-deps).  We register a bare package object with the
    installed package's __path__ and import only utils, sampling and layers.  utils.py imports
    torchvision.transforms.functional and layers.py imports dctorch (not in the bench extras) at
    module level for code these benchmarks never reach (PIL conversion; Denoiser.loss with
    scales != 1), so while those three files execute, the missing ones are empty placeholder
    modules, removed again afterwards.  Every function timed is k-diffusion's own code.
    """
    import importlib
    import importlib.util

    if "k_diffusion.sampling" in sys.modules and "k_diffusion.layers" in sys.modules:
        return sys.modules["k_diffusion.sampling"], sys.modules["k_diffusion.layers"]
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")  # finds the package without executing it
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("k_diffusion is not installed")
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__package__ = "k_diffusion"
        sys.modules["k_diffusion"] = pkg
    placeholders = []
    try:
        for name in _UNUSED_IMPORTS:
            if name in sys.modules:
                continue
            top = name.split(".")[0]
            if top not in placeholders and importlib.util.find_spec(top) is not None:
                continue  # really installed: let the real module be imported
            sys.modules[name] = types.ModuleType(name)
            placeholders.append(name)
        for name in placeholders:
            for child in _UNUSED_IMPORTS[name]:
                setattr(sys.modules[name], child, sys.modules[f"{name}.{child}"])
        sampling = importlib.import_module("k_diffusion.sampling")
        layers = importlib.import_module("k_diffusion.layers")
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return sampling, layers


class _ScoreDenoiser(nn.Module):
    """D(x, sigma) = x + sigma^2 s(x, sigma) for k-diffusion's samplers; counts its calls (the NFE)."""

    def __init__(self, score_net: nn.Module):
        super().__init__()
        self.score_net = score_net
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return x + sigma.square().reshape(-1, *([1] * (x.dim() - 1))) * self.score_net(x, sigma)


def _score_parameterised_denoiser(layers: types.ModuleType, score_net: nn.Module) -> nn.Module:
    """k-diffusion's layers.Denoiser with its inner model = our score net, unchanged.

    Denoiser computes D = c_skip x + c_out F(c_in x, sigma) and its loss
    w(sigma) ||F(c_in x~, sigma) - (x - c_skip x~) / c_out||^2 / D.  The Karras scalings
    (sigma_data = 1) would make F a different function of the net; c_skip = 1, c_out = sigma^2,
    c_in = 1 make F the score (D = x + sigma^2 s), the target -z / sigma, and w(sigma) = sigma^2
    is NCSN's lambda.  (The weighting is set after construction: Denoiser(weighting=callable)
    raises ValueError in 0.1.1.post1, since the callable branch falls through to the string tests.)
    """

    class ScoreDenoiser(layers.Denoiser):
        def __init__(self, inner: nn.Module):
            super().__init__(inner, sigma_data=1.0, weighting="karras", scales=1)
            self.weighting = torch.square

        def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            one = torch.ones_like(sigma)
            return one, sigma.square(), one

    return ScoreDenoiser(score_net)


def _ve_sigmas(sampling: types.ModuleType, s: Setup, n_steps: int) -> torch.Tensor:
    """n_steps + 1 geometric sigmas from sigma_max to sigma_min, without the appended zero."""
    return sampling.get_sigmas_exponential(n_steps + 1, s.sigma_min, s.sigma_max, device=s.device)[:-1]


def operations(s: Setup) -> dict[str, Op]:
    sampling, layers = _load_k_diffusion()

    g = s.generator()
    x = s.x
    half_d = math.prod(x.shape[1:]) / 2
    sigmas_ncsn = s.sigmas.to(x)
    den = _score_parameterised_denoiser(layers, s.nc_net)
    model = _ScoreDenoiser(s.nc_net)
    prior = s.x * s.sigma_max
    sigmas_rev = _ve_sigmas(sampling, s, s.n_steps)

    def ncsn_loss() -> torch.Tensor:
        # the caller draws sigma and the noise (k-diffusion's train.py does too): as scorematch does
        idx = torch.randint(0, len(sigmas_ncsn), (x.shape[0],), generator=g, device=g.device).to(x.device)
        z = torch.randn(x.shape, generator=g, dtype=x.dtype, device=g.device).to(x.device)
        return den.loss(x, z, sigmas_ncsn[idx]).mean() * half_d

    def noise_sampler(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=g, dtype=x.dtype, device=g.device).to(x.device)

    def reverse_sde() -> torch.Tensor:
        return sampling.sample_euler_ancestral(model, prior, sigmas_rev, disable=True, noise_sampler=noise_sampler)

    nfe: list[int] = []

    def ode_likelihood() -> torch.Tensor:
        before = model.calls
        ll, info = sampling.log_likelihood(model, x, s.sigma_min, s.sigma_max, atol=1e-5, rtol=1e-5)
        nfe.append(model.calls - before)
        return ll

    ode_likelihood()
    sig = s.karras_sigmas

    def denoising(fn_name: str) -> Op:
        fn = getattr(sampling, fn_name)
        return Op(lambda: fn(model, prior, sig, disable=True), per=s.n_steps,
                  note=f"sampling.{fn_name}, its default noise (torch.randn_like, global RNG)"
                  if fn_name in ("sample_heun", "sample_euler", "sample_euler_ancestral") else f"sampling.{fn_name}")

    denoisers = {"heun_step": denoising("sample_heun"), "euler_step": denoising("sample_euler"),
                 "euler_ancestral_step": denoising("sample_euler_ancestral"),
                 "dpm_solver_step": denoising("sample_dpmpp_2m")}
    denoisers["heun_step"].note += " (draws a z every step, unused without churn)"
    denoisers["euler_step"].note += " (draws a z every step, unused without churn)"
    return denoisers | {
        "ncsn": Op(
            training_step(s.nc_net, ncsn_loss),
            note="layers.Denoiser.loss with c_skip=1, c_out=sigma^2, c_in=1 (inner model = our score net), "
            "weighting sigma^2, sigma uniform over s.sigmas, loss x D/2: the same loss as scorematch's ncsn "
            "(stock: Karras scalings, weighting 1, log-normal sigma)",
        ),
        "reverse_sde_step": Op(
            reverse_sde,
            per=s.n_steps,
            note="sample_euler_ancestral (eta=1, ancestral step, not reverse-diffusion) over "
            f"{s.n_steps + 1} geometric sigmas, no appended zero (no final denoising step)",
        ),
        "ode_likelihood": Op(
            ode_likelihood,
            note=f"{nfe[0]} evaluations; sigma-time dopri5, one Rademacher probe from the global RNG",
        ),
    }


def checks(s: Setup) -> dict[str, str]:
    """k-diffusion vs scorematch on the same input: the ncsn loss and gradient on the same noise,
    the log-likelihood with the same probe, and both reverse samplers on an analytic Gaussian score."""
    from scorematch import likelihood, objectives, samplers
    from scorematch.sde import sigma_conditioned

    sampling, layers = _load_k_diffusion()
    out: dict[str, str] = {}
    x = s.x
    d = math.prod(x.shape[1:])

    # ncsn: same sigma indices and noise (the same generator, drawn in the same order)
    den = _score_parameterised_denoiser(layers, s.nc_net)
    params = [p for p in s.nc_net.parameters() if p.requires_grad]
    g = s.generator()
    idx = torch.randint(0, len(s.sigmas), (x.shape[0],), generator=g, device=g.device).to(x.device)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype, device=g.device).to(x.device)
    kd = den.loss(x, z, s.sigmas.to(x)[idx]).mean() * (d / 2)
    kd_grad = torch.autograd.grad(kd, params)
    ours = objectives.ncsn(s.nc_net, x, s.sigmas, generator=s.generator())
    ours_grad = torch.autograd.grad(ours, params)
    gerr = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(kd_grad, ours_grad, strict=True)
    )
    out["ncsn"] = (
        f"loss {float(kd.detach()):.6g} vs scorematch {float(ours.detach()):.6g} on the same sigmas and noise "
        f"(Denoiser.loss x D/2); largest relative gradient difference {gerr:.1e}"
    )

    # ode_likelihood: scorematch with the probe k-diffusion draws (its RNG is the global one)
    model = _ScoreDenoiser(s.nc_net)
    seed = 1234
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        torch.manual_seed(seed)
        v_kd = torch.randint_like(x, 2) * 2 - 1
        torch.manual_seed(seed)
        ll_kd, info = sampling.log_likelihood(model, x, s.sigma_min, s.sigma_max, atol=1e-5, rtol=1e-5)
    g = torch.Generator(device=s.device).manual_seed(seed)
    v_sm = (2 * torch.randint(0, 2, (1, *x.shape), generator=g, device=s.device) - 1).to(x)[0]
    same_probe = bool(torch.equal(v_kd, v_sm))
    score_t = sigma_conditioned(s.nc_net, s.sde)
    res = likelihood.log_prob(score_t, s.sde, x, exact_trace=False, n_probes=1, rtol=1e-5, atol=1e-5,
                              generator=torch.Generator(device=s.device).manual_seed(seed), return_nfe=True)
    diff = (ll_kd - res.log_prob).abs()
    text = (
        f"mean log p {float(ll_kd.mean()):.4f} vs scorematch {float(res.log_prob.mean()):.4f} "
        f"({'same' if same_probe else 'DIFFERENT'} Rademacher probe); per-row |difference| max "
        f"{float(diff.max()):.2e}, mean {float(diff.mean()):.2e} nats (two adaptive solves, different "
        f"variables); NFE {info['fevals']} vs {res.nfe}; "
        f"both use the prior N(0, sigma_max^2 I) at sigma_max = {s.sigma_max:.4g}, k-diffusion starts at "
        f"sigma_min, scorematch at sigma(eps_t = 1e-5) = {float(s.sde.sigma(torch.tensor(1e-5))):.6g}"
    )
    if d <= 16:
        exact = likelihood.log_prob(score_t, s.sde, x, exact_trace=True, rtol=1e-5, atol=1e-5)
        text += f"; scorematch with the exact trace: {float(exact.mean()):.4f}"
    out["ode_likelihood"] = text

    # reverse_sde_step: data N(0, I), score -x / (1 + sigma^2), D = x / (1 + sigma^2); both from
    # N(0, sigma_max^2 I), s.n_steps steps, no denoising; exact target N(0, (1 + sigma_min^2) I)
    n = max(s.batch, math.ceil(2**16 / d))
    g = s.generator()
    start = torch.randn((n, *x.shape[1:]), generator=g, device=g.device).to(x) * s.sigma_max

    def gauss_denoiser(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # D = x + sigma^2 s
        return y + sigma.square().reshape(-1, *([1] * (y.dim() - 1))) * standard_normal_score(y, sigma)

    gauss_score = standard_normal_score_t(s)

    def noise_sampler(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(start.shape, generator=g, dtype=start.dtype, device=g.device).to(start.device)

    sig = _ve_sigmas(sampling, s, s.n_steps)
    kd_x = sampling.sample_euler_ancestral(gauss_denoiser, start, sig, disable=True, noise_sampler=noise_sampler)
    sm_x = samplers.reverse_diffusion(gauss_score, start, s.sde, n_steps=s.n_steps, denoise=False, generator=g)

    # each chain is linear in x here, x' = a x + b z: its exact variance after the run (the
    # discretisation bias, apart from sampling noise)
    kd_v = sm_v = s.sigma_max**2
    sig_d = sig.double()
    for hi, lo in zip(sig_d[:-1], sig_d[1:], strict=True):
        down, up = sampling.get_ancestral_step(hi, lo)
        kd_v = (1 + hi * (down - hi) / (1 + hi**2)) ** 2 * kd_v + up**2
    ts = 1 - torch.arange(s.n_steps + 1, dtype=torch.float64) * (1 - 1e-5) / s.n_steps
    sig_t = s.sde.sigma(ts)
    for hi, lo in zip(sig_t[:-1], sig_t[1:], strict=True):
        g2 = hi**2 - lo**2
        sm_v = (1 - g2 / (1 + hi**2)) ** 2 * sm_v + g2
    def stats(y: torch.Tensor, exact: torch.Tensor) -> str:
        var, exact = float(y.var(0).mean()), float(exact)
        se = exact * math.sqrt(2 / (n * d))  # standard error of the mean per-dimension variance
        return (f"mean {float(y.mean()):+.4f}, variance {var:.4f} vs its chain's exact {exact:.4f} "
                f"({abs(var - exact) / se:.1f} standard errors)")

    out |= _denoising_checks(sampling, s)
    from benchmarks.peers.k_diffusion_sde import sde_checks

    out |= sde_checks(s)
    out["reverse_sde_step"] = (
        f"analytic score of N(0, I), {n} x {d} samples, {s.n_steps} steps from N(0, sigma_max^2 I): "
        f"k-diffusion {stats(kd_x, kd_v)}; scorematch reverse_diffusion {stats(sm_x, sm_v)}; target "
        f"(data + sigma_min noise) variance {1 + s.sigma_min**2:.4f}: both chains are O(1/n_steps) "
        f"discretisation bias away from it, on opposite sides"
    )
    return out


def _denoising_checks(sampling: types.ModuleType, s: Setup) -> dict[str, str]:
    """heun, euler, euler_ancestral and dpm_solver against sample_heun, sample_euler,
    sample_euler_ancestral and sample_dpmpp_2m: the same start, sigmas and injected noise, the
    callback's x and denoised compared at every step, on the analytic N(0, I) score in float64 and
    on the setup's network in float32."""
    from scorematch import samplers

    pairs = {"heun_step": ("heun", "sample_heun"), "euler_step": ("euler", "sample_euler"),
             "euler_ancestral_step": ("euler_ancestral", "sample_euler_ancestral"),
             "dpm_solver_step": ("dpm_solver", "sample_dpmpp_2m")}
    out = {}
    for op, (ours, theirs) in pairs.items():
        diffs = []
        for which, dtype in (("analytic", torch.float64), ("net", torch.float64), ("net", torch.float32)):
            score = standard_normal_score if which == "analytic" else s.nc_net.to(dtype)
            x0 = (s.x * s.sigma_max).to(dtype)
            sig = s.karras_sigmas.to(dtype)
            seed = 7
            g = torch.Generator(device=s.device).manual_seed(seed)
            kw = {}
            if ours == "euler_ancestral":
                kw["noise_sampler"] = lambda a, b, g=g, x0=x0: torch.randn(
                    x0.shape, generator=g, dtype=x0.dtype, device=g.device).to(x0.device)
            mine, theirs_log = [], []
            if isinstance(score, nn.Module):
                denoiser = _ScoreDenoiser(score)
            else:
                def denoiser(y: torch.Tensor, sigma: torch.Tensor, f=score) -> torch.Tensor:
                    return y + sigma.square().reshape(-1, 1) * f(y, sigma)
            ours_g = torch.Generator(device=s.device).manual_seed(seed)
            with torch.no_grad():
                kd = getattr(sampling, theirs)(denoiser, x0, sig, disable=True, callback=theirs_log.append, **kw)
                sm = getattr(samplers, ours)(score, x0, sig, generator=ours_g, callback=mine.append)
            step = max(max(float((a["x"] - b["x"]).abs().max()), float((a["denoised"] - b["denoised"]).abs().max()))
                       for a, b in zip(theirs_log, mine, strict=True))
            diffs.append((step, float((kd - sm).abs().max()), float(x0.abs().max())))
        s.nc_net.float()
        (a1, a2, _), (n1, n2, _), (f1, f2, scale) = diffs
        out[op] = (f"{ours} vs {theirs} from the same start (|x| up to {scale:.3g}), {s.n_steps} Karras steps, "
                   f"same injected noise: largest difference over all steps' x and denoised {a1:.1e} (final "
                   f"{a2:.1e}) on the analytic N(0, I) score in float64, {n1:.1e} (final {n2:.1e}) on the "
                   f"network in float64, {f1:.1e} (final {f2:.1e}) on the network in float32")
    return out
