"""scorematch itself, through its public API only."""

from __future__ import annotations

import torch

from benchmarks.peers import Op, Setup, training_step

NAME = "scorematch"
DISTRIBUTION = "scorematch"


def operations(s: Setup) -> dict[str, Op]:
    from scorematch import likelihood, objectives, samplers
    from scorematch.models import energy_to_score
    from scorematch.sde import sigma_conditioned

    g = s.generator()
    x = s.x
    energy_score = energy_to_score(s.energy_net)
    score_t = sigma_conditioned(s.nc_net, s.sde)
    prior = s.x * s.sigma_max

    ops = {
        "dsm": training_step(s.score_net, lambda: objectives.dsm(s.score_net, x, s.dsm_sigma, generator=g)),
        "dsm_energy": training_step(s.energy_net, lambda: objectives.dsm(energy_score, x, s.dsm_sigma, generator=g)),
        "ncsn": training_step(s.nc_net, lambda: objectives.ncsn(s.nc_net, x, s.sigmas, generator=g)),
        "ssm": training_step(s.score_net, lambda: objectives.ssm(s.score_net, x, generator=g)),
        "ssm_energy": training_step(s.energy_net, lambda: objectives.ssm(energy_score, x, generator=g)),
        "ssm_vr": training_step(
            s.score_net, lambda: objectives.ssm(s.score_net, x, variance_reduced=True, generator=g)
        ),
        "ssm_vr_energy": training_step(
            s.energy_net, lambda: objectives.ssm(energy_score, x, variance_reduced=True, generator=g)
        ),
        "ism": training_step(s.score_net, lambda: objectives.ism(s.score_net, x)),
        "ism_energy": training_step(s.energy_net, lambda: objectives.ism(energy_score, x)),
    }

    @torch.no_grad()
    def annealed_step() -> torch.Tensor:
        return samplers.annealed_langevin(s.nc_net, x, s.sigmas[-1:], eps=s.eps, steps_per_sigma=1, denoise=False,
                                          generator=g)

    @torch.no_grad()
    def annealed_run() -> torch.Tensor:
        return samplers.annealed_langevin(s.nc_net, x, s.sigmas, eps=s.eps, steps_per_sigma=s.steps_per_sigma,
                                          denoise=False, generator=g)

    @torch.no_grad()
    def reverse_sde() -> torch.Tensor:
        return samplers.reverse_diffusion(score_t, prior, s.sde, n_steps=s.n_steps, denoise=False, generator=g)

    @torch.no_grad()
    def pc() -> torch.Tensor:
        return samplers.pc(score_t, prior, s.sde, n_steps=s.n_steps, snr=s.snr, denoise=False, generator=g)

    nfe: list[int] = []

    def ode_likelihood() -> torch.Tensor:
        res = likelihood.log_prob(score_t, s.sde, x, exact_trace=False, n_probes=1, rtol=1e-5, atol=1e-5,
                                  generator=g, return_nfe=True)
        nfe.append(int(res.nfe))
        return res.log_prob

    ode_likelihood()
    sig = s.karras_sigmas

    def denoising(name: str):
        fn = getattr(samplers, name)

        @torch.no_grad()
        def run() -> torch.Tensor:
            return fn(s.nc_net, prior, sig, generator=g)

        return Op(run, per=s.n_steps)

    ops |= {name: denoising(name.removesuffix("_step")) for name in ("heun_step", "euler_step",
                                                                      "euler_ancestral_step", "dpm_solver_step")}
    ops |= {
        "annealed_step": Op(annealed_step),
        "annealed_run": Op(annealed_run, note=f"{len(s.sigmas) * s.steps_per_sigma} updates"),
        "reverse_sde_step": Op(reverse_sde, per=s.n_steps),
        "pc_step": Op(pc, per=s.n_steps),
        "ode_likelihood": Op(ode_likelihood, note=f"{nfe[0]} evaluations"),
    }
    return {k: v if isinstance(v, Op) else Op(v) for k, v in ops.items()}
