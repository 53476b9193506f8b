"""score-models (Alexandre Adam), 0.5.x: ScoreModel / EnergyModel over its VESDE, through its own code.

score_models calls its network as net(t, x) and, in ScoreModel.score, divides the output by the
SDE's sigma(t).  The noise-conditional net is wrapped, parameters shared, as
net(t, x) = s.nc_raw(x, sigma(t)) with sigma(t) = sigma_min (sigma_max / sigma_min)^t, the schedule
of both score_models' VESDE and s.sde, so that ScoreModel.score(t, x) = s.nc_net(x, sigma(t)).

Provided: ``ncsn`` (ScoreModel.loss_fn, continuous-time DSM), ``dsm`` / ``dsm_energy`` (the same
loss over a constant-sigma VESDE), ``ssm_vr`` / ``ssm_vr_energy``
(score_models.sliced_score_matching.sliced_score_matching_loss), ``reverse_sde_step``
(ScoreModel.sample, Euler-Maruyama) and ``ode_likelihood`` (ScoreModel.log_likelihood, fixed-step
Heun, 400 steps, matched to scorematch's accuracy).  score_models has no plain (non variance-reduced)
SSM, no implicit score matching, no annealed Langevin dynamics and no predictor-corrector sampler,
so those cells stay empty.
Its random draws come from torch's global RNG (no generator argument).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.peers import Op, Setup, standard_normal_score, standard_normal_score_t, training_step

NAME = "score_models"
DISTRIBUTION = "score-models"


class _TimeNet(nn.Module):
    """net(t, x) = s.nc_raw(x, sigma(t)): the noise-conditional net before its division by sigma.

    ScoreModel.score divides by its VESDE's sigma(t) again, giving back s.nc_net(x, sigma(t)).
    Counts its calls (the NFE).
    """

    def __init__(self, s: Setup):
        super().__init__()
        self.net = s.nc_net  # registered, not copied: the same parameters
        self._raw = s.nc_raw
        self._log_min = math.log(s.sigma_min)
        self._log_ratio = math.log(s.sigma_max / s.sigma_min)
        self.calls = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self._raw(x, torch.exp(self._log_min + t.to(x.dtype) * self._log_ratio))


class _ScaledNet(nn.Module):
    """net(t, x) = sigma * score_net(x), for a constant-sigma VESDE (ScoreModel divides by sigma)."""

    def __init__(self, net: nn.Module, sigma: float):
        super().__init__()
        self.net = net
        self.sigma = float(sigma)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.sigma


class _EnergyNet(nn.Module):
    """net(t, x) = E(x) of shape (B, 1): EnergyModel's nn_is_energy=True form."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.hyperparameters = {"nn_is_energy": True}  # EnergyModel reads model.hyperparameters

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, None]


class _GaussianNet(nn.Module):
    """Analytic net(t, x) = sigma(t) s(x, t) for data N(0, I): s = -x / (1 + sigma(t)^2)."""

    def __init__(self, s: Setup):
        super().__init__()
        self._log_min = math.log(s.sigma_min)
        self._log_ratio = math.log(s.sigma_max / s.sigma_min)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sig = torch.exp(self._log_min + t.to(x.dtype) * self._log_ratio)
        return sig.reshape(-1, *([1] * (x.dim() - 1))) * standard_normal_score(x, sig)


def _models(s: Setup) -> dict[str, nn.Module]:
    import score_models as sm

    sig = s.dsm_sigma
    return {
        # the SDE goes by name: ScoreModelBase calls sde.lower() even on an SDE instance (0.5.11)
        "nc": sm.ScoreModel(_TimeNet(s), sde="ve", sigma_min=s.sigma_min, sigma_max=s.sigma_max, device=s.device),
        "dsm": sm.ScoreModel(_ScaledNet(s.score_net, sig), sde="ve", sigma_min=sig, sigma_max=sig, device=s.device),
        "dsm_energy": sm.EnergyModel(_EnergyNet(s.energy_net), sde="ve", sigma_min=sig, sigma_max=sig,
                                     device=s.device),
        # sigma(t) = 1: EnergyModel.score = -grad_x E, to feed the sliced loss
        "energy": sm.EnergyModel(_EnergyNet(s.energy_net), sde="ve", sigma_min=1.0, sigma_max=1.0, device=s.device),
    }


def _energy_score(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def score(y: torch.Tensor) -> torch.Tensor:
        return model.score(torch.ones(y.shape[0], dtype=y.dtype, device=y.device), y)

    return score


def _quiet(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run fn with its tqdm bar written to a discarded buffer (the bar's work is still done)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn()


def _bias_grad(s: Setup, model: nn.Module) -> float:
    """Gradient of EnergyModel's DSM loss w.r.t. the energy's output bias (0 for any loss of the score)."""
    bias = list(s.energy_net.parameters())[-1]
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        torch.manual_seed(s.seed)
        (g,) = torch.autograd.grad(model.loss_fn(s.x), [bias])
    return float(g.abs().sum())


#: ScoreModel.log_likelihood's fixed-step solver and its steps: Heun with 400 steps comes within 0.02
#: nats of the exact log p at D = 784 on a Gaussian's score, as scorematch's dopri5 at rtol = 1e-5 does
ODE_METHOD = "Heun"
ODE_STEPS = 400


def _f(v: torch.Tensor) -> float:
    return float(v.detach())


def _gaussian_error(s: Setup) -> tuple[float, float]:
    """Mean log p error of ScoreModel.log_likelihood as timed, and of scorematch's log_prob, on the exact
    score of N(0, I) data (s.x is drawn from it): exact log p_0 = log N(x; 0, (1 + sigma_min^2) I)."""
    import score_models as sm

    from scorematch import likelihood

    x = s.x
    d = math.prod(x.shape[1:])
    gm = sm.ScoreModel(_GaussianNet(s), sde="ve", sigma_min=s.sigma_min, sigma_max=s.sigma_max, device=s.device)
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        torch.manual_seed(s.seed)
        ll = gm.log_likelihood(x, ode_steps=ODE_STEPS, n_cotangent_vectors=1, noise_type="gaussian",
                               method=ODE_METHOD)
    var0 = 1 + s.sigma_min**2
    truth = -0.5 * d * math.log(2 * math.pi * var0) - x.flatten(1).pow(2).sum(1) / (2 * var0)

    ref = likelihood.log_prob(standard_normal_score_t(s), s.sde, x, exact_trace=False, n_probes=1, rtol=1e-5, atol=1e-5,
                              generator=s.generator())
    return float((ll - truth).mean()), float((ref - truth).mean())


def operations(s: Setup) -> dict[str, Op]:
    from score_models.sliced_score_matching import sliced_score_matching_loss

    x = s.x
    m = _models(s)
    nc, net = m["nc"], m["nc"].model
    energy_score = _energy_score(m["energy"])

    def reverse_sde() -> torch.Tensor:
        return _quiet(lambda: nc.sample([x.shape[0], *x.shape[1:]], steps=s.n_steps))

    nfe: dict[str, int] = {}

    def ode_likelihood() -> torch.Tensor:
        before = net.calls
        out = nc.log_likelihood(x, ode_steps=ODE_STEPS, n_cotangent_vectors=1, noise_type="gaussian",
                                method=ODE_METHOD)
        nfe["ode"] = net.calls - before
        return out

    before = net.calls
    reverse_sde()
    nfe["sde"] = net.calls - before
    ode_likelihood()
    bias_grad = _bias_grad(s, m["dsm_energy"])
    err, err_ref = _gaussian_error(s)

    return {
        "dsm": Op(
            training_step(s.score_net, lambda: m["dsm"].loss_fn(x)),
            note=f"ScoreModel.loss_fn over a constant-sigma VESDE (sigma_min = sigma_max = {s.dsm_sigma:g}), net "
            "output sigma x score: loss sum ||z + sigma s(x~)||^2 / B = 2 sigma^2 x scorematch's dsm "
            "(weight sigma^2, no 1/2); also draws an unused t per row",
        ),
        "dsm_energy": Op(
            training_step(s.energy_net, lambda: m["dsm_energy"].loss_fn(x)),
            note="wrong objective: EnergyModel.loss_fn (denoising_score_matching) regresses the energy net's raw "
            "output E(x~) (shape (B, 1), broadcast over D) on -z instead of using its score -grad E; the loss "
            f"changes when a constant is added to E and the output bias gets gradient {bias_grad:.3g} "
            "(0 for any loss of the score)",
            valid=False,
        ),
        "ncsn": Op(
            training_step(s.nc_net, lambda: nc.loss_fn(x)),
            note="ScoreModel.loss_fn: continuous-time DSM, t ~ U(0, 1) per row so sigma(t) log-uniform on "
            "[sigma_L, sigma_1] (not the L discrete sigmas), weight sigma(t)^2, loss sum ||z + sigma s||^2 / B "
            "= 2 x scorematch's sde_dsm (no 1/2)",
        ),
        "ssm_vr": Op(
            training_step(s.score_net, lambda: sliced_score_matching_loss(s.score_net, x, n_cotangent_vectors=1,
                                                                          noise_type="gaussian")),
            note="score_models.sliced_score_matching.sliced_score_matching_loss (a module function its models "
            "do not use), noise_type='gaussian': E[v^T (grad s) v + 1/2 ||s||^2] by torch.func.vjp, "
            "the same loss as scorematch's SSM-VR",
        ),
        "ssm_vr_energy": Op(
            training_step(s.energy_net, lambda: sliced_score_matching_loss(energy_score, x, n_cotangent_vectors=1,
                                                                           noise_type="gaussian")),
            note="sliced_score_matching_loss as for ssm_vr, on EnergyModel.score (vmap(grad) of the energy, "
            "nn_is_energy=True, over a VESDE with sigma(t) = 1)",
        ),
        "reverse_sde_step": Op(
            reverse_sde,
            per=s.n_steps,
            note=f"ScoreModel.sample: Euler-Maruyama on the reverse VE SDE (not the reverse-diffusion predictor), "
            f"{s.n_steps} steps, the score taken at the end of each step (t = 1 - 1/N, ..., 0); draws its own "
            "start from N(0, sigma_max^2 I) (cannot take one); returns the last x_mean; its tqdm bar "
            "(set_description with 3 .item() and x.std() each step) is written to a discarded buffer; "
            f"{nfe['sde']} evaluations",
        ),
        "ode_likelihood": Op(
            ode_likelihood,
            note=f"ScoreModel.log_likelihood: fixed-step {ODE_METHOD} (it has no adaptive solver, no rtol/atol), "
            f"ode_steps = {ODE_STEPS} from t = 0 to 1, chosen to match scorematch's dopri5 accuracy (Euler with "
            "100 steps is off by 0.11 nats at D = 2 and 68 nats at D = 784), Hutchinson trace with a fresh Gaussian "
            f"probe each step (not one fixed probe); {nfe['ode']} evaluations; mean log p error on the exact "
            f"score of N(0, I) data {err:+.2g} nats (scorematch's dopri5 {err_ref:+.2g})",
        ),
    }


def checks(s: Setup) -> dict[str, str]:
    """score_models vs scorematch on the same input: the losses on the same noise where both draw it
    in the same order (dsm, ssm_vr), otherwise as expectations over many draws; the likelihood on the
    same net and on an analytic Gaussian score; the reverse sampler on the analytic Gaussian score."""
    import score_models as sm
    from score_models.sliced_score_matching import sliced_score_matching_loss

    from scorematch import likelihood, objectives, samplers
    from scorematch.models import energy_to_score
    from scorematch.sde import sigma_conditioned

    out: dict[str, str] = {}
    x = s.x
    d = math.prod(x.shape[1:])
    m = _models(s)
    devices = [s.device] if s.device.type == "cuda" else []
    score_t = sigma_conditioned(s.nc_net, s.sde)
    es = energy_to_score(s.energy_net)

    def seeded(fn: Callable[[], torch.Tensor], seed: int) -> torch.Tensor:
        """fn() with torch's global RNG (the one score_models draws from) seeded, then restored."""
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if s.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            return fn()

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(device=s.device).manual_seed(seed)

    def grads(loss: torch.Tensor, net: nn.Module) -> list[torch.Tensor]:
        ps = [p for p in net.parameters() if p.requires_grad]
        return [torch.zeros_like(p) if g is None else g
                for p, g in zip(ps, torch.autograd.grad(loss, ps, allow_unused=True), strict=True)]

    def rel_grad(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(a, b, strict=True))

    def mc(fn: Callable[[], torch.Tensor], n: int) -> tuple[float, float]:
        with torch.no_grad():
            v = torch.stack([fn().detach().double() for _ in range(n)])
        return float(v.mean()), float(v.std() / math.sqrt(n))

    # dsm, ssm_vr: both draw their Gaussian noise first, score_models from the global RNG, scorematch from a
    # generator, with the same seed: the same noise where the two streams agree (checked here)
    seed = 1234
    same_noise = bool(torch.equal(seeded(lambda: torch.randn_like(x), seed),
                                  torch.randn(x.shape, generator=gen(seed), device=s.device, dtype=x.dtype)))
    on_same = "on the same noise" if same_noise else "on DIFFERENT noise (the RNG streams differ here)"
    a = seeded(lambda: m["dsm"].loss_fn(x), seed)
    ga = grads(a, s.score_net)
    b = objectives.dsm(s.score_net, x, s.dsm_sigma, generator=gen(seed))
    gb = grads(b, s.score_net)
    k = 2 * s.dsm_sigma**2
    out["dsm"] = (
        f"loss {_f(a):.6g} vs scorematch {_f(b):.6g} {on_same}: ratio {_f(a / b):.6g} = "
        f"2 sigma^2 = {k:.6g}; largest relative difference of the gradients (scorematch's x 2 sigma^2) "
        f"{rel_grad(ga, [k * g for g in gb]):.1e}"
    )

    # dsm_energy: the loss is a function of E itself, not of -grad E
    n_mc = 100
    bias = list(s.energy_net.parameters())[-1]
    g_e = gen(seed)
    a0 = mc(lambda: m["dsm_energy"].loss_fn(x), n_mc)
    b0 = mc(lambda: objectives.dsm(es, x, s.dsm_sigma, generator=g_e), n_mc)
    with torch.no_grad():
        bias += 1.0
    try:
        a1 = mc(lambda: m["dsm_energy"].loss_fn(x), n_mc)
        b1 = mc(lambda: objectives.dsm(es, x, s.dsm_sigma, generator=g_e), n_mc)
    finally:
        with torch.no_grad():
            bias -= 1.0
    out["dsm_energy"] = (
        f"WRONG: adding 1 to the energy (score unchanged) moves EnergyModel's DSM loss from {a0[0]:.4f} to "
        f"{a1[0]:.4f} (+- {a1[1]:.1g}, {n_mc} draws) while scorematch's dsm stays at {b0[0]:.4g} / "
        f"{b1[0]:.4g} (+- {b1[1]:.1g}); its output-bias gradient is {_bias_grad(s, m['dsm_energy']):.3g} "
        "(0 for any loss of the score): it regresses E(x~) on -z"
    )

    # ncsn: score_models draws z then t, scorematch's sde_dsm t then z. On the same draws (redrawn from the
    # seed): scorematch's row term 1/2 ||std(t) s(x_t, t) + z||^2 with its VESDE.marginal and the same net
    def draws() -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn_like(x)
        return z, torch.rand(x.shape[0]).to(s.device)

    a = seeded(lambda: m["nc"].loss_fn(x), seed)
    z, t = seeded(draws, seed)
    mean, std = s.sde.marginal(x, t)
    std = std.reshape(-1, *([1] * (x.dim() - 1)))
    b = 0.5 * (std * score_t(mean + std * z, t) + z).flatten(1).pow(2).sum(1).mean()
    same = (f"on the same t and z: loss {_f(a):.6g} vs 2 x {_f(b):.6g} (scorematch's sde_dsm row terms), "
            f"ratio {_f(a / b):.7g}")
    # and the expectations over many draws, against scorematch's own functions
    n_mc = 400
    a = mc(lambda: m["nc"].loss_fn(x), n_mc)
    g = gen(seed)
    b = mc(lambda: objectives.sde_dsm(score_t, x, s.sde, generator=g), n_mc)
    c = mc(lambda: objectives.ncsn(s.nc_net, x, s.sigmas, generator=g), n_mc)
    out["ncsn"] = (
        f"{same}; expectation over {n_mc} draws: {a[0]:.5g} +- {a[1]:.1g}, half of it {a[0] / 2:.5g} vs scorematch's "
        f"sde_dsm (t ~ U(1e-5, 1), weight sigma(t)^2) {b[0]:.5g} +- {b[1]:.1g}, difference "
        f"{(a[0] / 2 - b[0]) / math.hypot(a[1] / 2, b[1]):+.1f} standard errors; scorematch's ncsn over the "
        f"{len(s.sigmas)} discrete sigmas {c[0]:.5g} +- {c[1]:.1g}"
    )

    # ssm_vr: both draw v ~ N(0, I) first, from the same seed
    a = seeded(lambda: sliced_score_matching_loss(s.score_net, x, noise_type="gaussian"), seed)
    ga = grads(a, s.score_net)
    b = objectives.ssm(s.score_net, x, variance_reduced=True, generator=gen(seed))
    gb = grads(b, s.score_net)
    out["ssm_vr"] = (
        f"loss {_f(a):.6g} vs scorematch {_f(b):.6g} {on_same} (Gaussian projections), relative "
        f"difference {abs(_f(a / b) - 1):.1e}; largest relative gradient difference {rel_grad(ga, gb):.1e}"
    )
    score_e = _energy_score(m["energy"])
    a = seeded(lambda: sliced_score_matching_loss(score_e, x, noise_type="gaussian"), seed)
    ga = grads(a, s.energy_net)
    b = objectives.ssm(es, x, variance_reduced=True, generator=gen(seed))
    gb = grads(b, s.energy_net)
    out["ssm_vr_energy"] = (
        f"loss {_f(a):.6g} vs scorematch {_f(b):.6g} {on_same} (Gaussian projections), relative "
        f"difference {abs(_f(a / b) - 1):.1e}; largest relative gradient difference {rel_grad(ga, gb):.1e}"
    )

    # ode_likelihood, on the same net: score_models' timed setting vs scorematch's dopri5
    nc = m["nc"]
    ll = seeded(lambda: nc.log_likelihood(x, ode_steps=ODE_STEPS, n_cotangent_vectors=1, noise_type="gaussian",
                                          method=ODE_METHOD), seed)
    ref = likelihood.log_prob(score_t, s.sde, x, exact_trace=False, n_probes=1, rtol=1e-5, atol=1e-5,
                              generator=gen(seed), return_nfe=True)
    diff = ll - ref.log_prob
    text = (
        f"same net: mean log p {float(ll.mean()):.4f} ({ODE_METHOD}, {ODE_STEPS} steps) vs scorematch "
        f"{float(ref.log_prob.mean()):.4f} (dopri5, 1 Rademacher probe, {ref.nfe} evaluations), mean difference "
        f"{float(diff.mean()):+.4f}, mean per-row |difference| {float(diff.abs().mean()):.3g} nats (different probes)"
    )
    if d <= 16:
        exact = likelihood.log_prob(score_t, s.sde, x, exact_trace=True, rtol=1e-5, atol=1e-5)
        text += (
            f"; scorematch with the exact trace {float(exact.mean()):.4f}, score_models minus it "
            f"{float((ll - exact).mean()):+.4f}"
        )
    err, err_ref = _gaussian_error(s)
    text += (
        f". Exact score of N(0, I) data (exact log p_0 known): mean error {err:+.4f} nats vs scorematch's "
        f"{err_ref:+.4f} (both with the prior N(0, sigma_max^2 I); the true p_1 has variance 1 + sigma_max^2)"
    )
    out["ode_likelihood"] = text

    # reverse_sde_step: analytic score of N(0, I), exact target N(0, (1 + sigma_min^2) I)
    gm = sm.ScoreModel(_GaussianNet(s), sde="ve", sigma_min=s.sigma_min, sigma_max=s.sigma_max, device=s.device)
    var0 = 1 + s.sigma_min**2

    gauss_score = standard_normal_score_t(s)

    n = max(s.batch, math.ceil(2**16 / d))
    g = gen(seed)
    start = torch.randn((n, *x.shape[1:]), generator=g, device=s.device).to(x) * s.sigma_max
    sm_x = seeded(lambda: _quiet(lambda: gm.sample([n, *x.shape[1:]], steps=s.n_steps)), seed)
    em_x = samplers.euler_maruyama(gauss_score, start, s.sde, n_steps=s.n_steps, denoise=False, generator=g)
    rd_x = samplers.reverse_diffusion(gauss_score, start, s.sde, n_steps=s.n_steps, denoise=False, generator=g)

    def stats(y: torch.Tensor) -> str:
        return f"mean {float(y.mean()):+.4f}, variance {float(y.var(0).mean()):.4f}"

    se = math.sqrt(2 / (n * d))
    out["reverse_sde_step"] = (
        f"analytic score of N(0, I), {n} x {d} samples, {s.n_steps} steps from N(0, sigma_max^2 I): "
        f"score_models {stats(sm_x)}; scorematch euler_maruyama {stats(em_x)}, reverse_diffusion "
        f"{stats(rd_x)}; target variance {var0:.4f} (sampling standard error about {se:.4f})"
    )
    return out
