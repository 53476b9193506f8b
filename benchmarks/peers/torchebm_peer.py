"""torchebm (energy-based models for PyTorch), through its public losses and samplers.

What torchebm offers for the contract, read from its source (torchebm 0.8.9):

* ``torchebm.losses.DenoisingScoreMatching``, ``SlicedScoreMatching`` and ``ScoreMatching``
  take an *energy* model E (p = exp(-E)/Z) and differentiate it themselves
  (``BaseScoreMatching.compute_score`` is ``autograd.grad(E(x).sum(), x)``), so only the
  ``*_energy`` keys exist: there is no way to hand them a score network. ``s.energy_net``
  (E: (n, D) -> (n,), the same convention) is passed as is; its parameters are trained in place.
* No variance-reduced SSM, no multi-scale (NCSN) DSM, no annealed Langevin, no VE SDE
  (``FlowSampler`` knows only the linear / cosine / VP interpolants), no PC corrector and no
  likelihood: ``ssm_vr*``, ``ncsn``, ``reverse_sde_step``, ``pc_step`` and ``ode_likelihood``
  are empty cells.
* ``torchebm.samplers.LangevinDynamics`` does x <- x - eta grad U(x) + sqrt(2 eta) z through its
  Euler-Maruyama integrator, calling ``model.gradient(x)``. With eta = alpha/2 and
  grad U = -s(x, sigma_i) this is Algorithm 1's inner step, so the noise-conditional net is
  wrapped in a ``BaseModel`` whose ``gradient`` is -s.nc_net(x, sigma_i) (thin adapter, same
  parameters). torchebm has no annealing over noise levels: ``annealed_run`` is a loop over
  s.sigmas, one ``LangevinDynamics.sample`` of s.steps_per_sigma steps per level.
"""

from __future__ import annotations

import torch

from benchmarks.peers import Op, Setup, training_step

NAME = "torchebm"
DISTRIBUTION = "torchebm"

_ISM_NOTE = (
    "exact trace by vmap(jacrev) per row (ScoreMatching._exact_score_matching): each row's full "
    "D x D Hessian, the score in a second pass. Not timed: hessian_method='approx' is wrong, its "
    "finite-difference trace is divided by data_dim (_approx_score_matching), i.e. tr(grad s)/{d}"
)


def _nc_energy_model(s: Setup, sigma: float):
    """s.nc_net at one noise level as a torchebm model: gradient(x) = grad U = -score(x, sigma)."""
    from torchebm.core import BaseModel

    class NoiseLevelModel(BaseModel):
        def __init__(self) -> None:
            super().__init__(dtype=s.x.dtype, device=s.device)
            self.net = s.nc_net  # the same module: no copy of its parameters
            self.sigma = torch.tensor(sigma, dtype=s.x.dtype, device=s.device)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise NotImplementedError("a score network has no energy; only gradient() is used")

        def gradient(self, x: torch.Tensor, model_kwargs: dict | None = None) -> torch.Tensor:
            return -self.net(x, self.sigma.expand(x.shape[0]))

    return NoiseLevelModel()


def _samplers(s: Setup) -> list:
    """One LangevinDynamics per noise level, eta_i = alpha_i / 2 = eps sigma_i^2 / (2 sigma_L^2)."""
    from torchebm.samplers import LangevinDynamics

    sigma_l = s.sigma_min
    return [
        LangevinDynamics(
            _nc_energy_model(s, sig),
            step_size=0.5 * s.eps * sig**2 / sigma_l**2,
            noise_scale=1.0,
            dtype=s.x.dtype,
            device=s.device,
        )
        for sig in (float(v) for v in s.sigmas)
    ]


def _losses(s: Setup) -> dict:
    from torchebm.losses import DenoisingScoreMatching, ScoreMatching, SlicedScoreMatching

    kw = {"dtype": s.x.dtype, "device": s.device}
    return {
        "dsm": DenoisingScoreMatching(s.energy_net, noise_scale=s.dsm_sigma, **kw),
        # torchebm's defaults are 5 Rademacher projections; the contract is one Gaussian one
        "ssm": SlicedScoreMatching(s.energy_net, n_projections=1, projection_type="gaussian", **kw),
        "ism": ScoreMatching(s.energy_net, hessian_method="exact", **kw),
        "approx": ScoreMatching(s.energy_net, hessian_method="approx", **kw),
    }


def operations(s: Setup) -> dict[str, Op]:
    g = s.generator()
    x = s.x
    loss = _losses(s)
    net = s.energy_net
    levels = _samplers(s)
    last = levels[-1]

    def annealed_step() -> torch.Tensor:
        return last.sample(x, n_steps=1, generator=g)

    def annealed_run() -> torch.Tensor:
        y = x
        for sampler in levels:
            y = sampler.sample(y, n_steps=s.steps_per_sigma, generator=g)
        return y

    return {
        "dsm_energy": Op(training_step(net, lambda: loss["dsm"](x, generator=g))),
        "ssm_energy": Op(
            training_step(net, lambda: loss["ssm"](x, generator=g)),
            note="SlicedScoreMatching with n_projections=1, projection_type='gaussian' "
            "(torchebm's defaults are 5 Rademacher projections)",
        ),
        "ism_energy": Op(training_step(net, lambda: loss["ism"](x)), note=_ISM_NOTE.format(d=s.d)),
        "annealed_step": Op(annealed_step, note="LangevinDynamics.sample(n_steps=1) at sigma_L"),
        "annealed_run": Op(
            annealed_run,
            note=f"no annealed sampler in torchebm: a loop over the {len(levels)} sigmas of "
            f"LangevinDynamics.sample({s.steps_per_sigma} steps), {len(levels) * s.steps_per_sigma} updates",
        ),
    }


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def checks(s: Setup) -> dict[str, str]:
    from scorematch import objectives, samplers

    loss = _losses(s)
    x = s.x
    out: dict[str, str] = {}

    def same_seed() -> tuple[torch.Generator, torch.Generator]:
        return s.generator(), s.generator()

    ga, gb = same_seed()
    a = _f(loss["dsm"](x, generator=ga))
    b = _f(objectives.dsm(s.energy_net, x, s.dsm_sigma, generator=gb))
    out["dsm_energy"] = (
        f"loss {a:.6g} vs scorematch {b:.6g} on the same noise (same seed), relative difference "
        f"{_rel(a, b):.1e}: the same 1/2 E||s(x~) + (x~ - x)/sigma^2||^2 with s = -grad E"
    )

    ga, gb = same_seed()
    a = _f(loss["ssm"](x, generator=ga))
    b = _f(objectives.ssm(s.energy_net, x, generator=gb))
    out["ssm_energy"] = (
        f"loss {a:.6g} vs scorematch {b:.6g} on the same Gaussian projections (same seed), relative "
        f"difference {_rel(a, b):.1e}: the same E[v^T (grad s) v + 1/2 (v^T s)^2]"
    )

    # exact ISM is deterministic: compare on (at most) 64 rows, the Hessian is D x D per row
    xs = x[:64]
    a1, a2 = _f(loss["ism"](xs)), _f(loss["ism"](xs))
    b = _f(objectives.ism(s.energy_net, xs))
    # the approximate estimator's trace term against the exact one, averaged over 100 draws
    with torch.enable_grad():
        half = _f(0.5 * s.energy_net.score(xs.detach()).pow(2).sum(1).mean())
    g = s.generator()
    draws = torch.tensor([_f(loss["approx"](xs, generator=g)) - half for _ in range(100)], dtype=torch.float64)
    tr = b - half
    approx, se = float(draws.mean()), float(draws.std() / draws.numel() ** 0.5)
    out["ism_energy"] = (
        f"exact: loss {a1:.6g} (again {a2:.6g}) vs scorematch {b:.6g} on {xs.shape[0]} rows, relative "
        f"difference {_rel(a1, b):.1e}: the same E[tr(grad s) + 1/2 ||s||^2]. hessian_method='approx' "
        f"(not timed): trace term {approx:.4g} +- {se:.1g} over 100 draws vs exact tr(grad s) {tr:.4g}, "
        f"ratio {approx / tr:.4g} vs 1/D = {1 / s.d:.4g} (the / data_dim in _approx_score_matching)"
    )

    levels = _samplers(s)
    ga, gb = same_seed()
    a_t = levels[-1].sample(x, n_steps=1, generator=ga)
    b_t = samplers.annealed_langevin(s.nc_net, x, s.sigmas[-1:], eps=s.eps, steps_per_sigma=1, denoise=False,
                                     generator=gb)
    step = float((b_t - x).abs().max())
    out["annealed_step"] = (
        f"same noise (same seed): max |x' - x'_scorematch| = {float((a_t - b_t).abs().max()):.2e} "
        f"for a max move of {step:.2e}"
    )
    ga, gb = same_seed()
    y = x
    for sampler in levels:
        y = sampler.sample(y, n_steps=s.steps_per_sigma, generator=ga)
    b_r = samplers.annealed_langevin(s.nc_net, x, s.sigmas, eps=s.eps, steps_per_sigma=s.steps_per_sigma,
                                     denoise=False, generator=gb)
    out["annealed_run"] = (
        f"same noise (same seed): max |x_T - x_T,scorematch| = {float((y - b_r).abs().max()):.2e}, "
        f"max |x_T| = {float(b_r.abs().max()):.3g}"
    )
    return out
