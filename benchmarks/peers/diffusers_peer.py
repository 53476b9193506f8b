"""diffusers' score-SDE scheduler, and the NCSN scheduler of diffusers-ncsn (a diffusers add-on).

* ``diffusers.ScoreSdeVeScheduler``: ``step_pred`` is the reverse-diffusion predictor of the VE SDE,
  ``step_correct`` the Langevin corrector with the SNR step rule. Its pipeline
  (``ScoreSdeVePipeline``) needs a ``UNet2DModel``, so the loop of ``ScoreSdeVePipeline.__call__``
  is written out here around our network: ``set_timesteps(N)``, ``set_sigmas(N)``, then for each
  timestep the model is called at the scheduler's continuous ``sigmas[i]`` and its output is taken
  as the score (the NCSN++ ``UNet2DModel`` of that pipeline divides its output by sigma, so it
  returns the score, as ``s.nc_net`` does), corrector(s) first, then the predictor.
* ``ncsn.scheduler.AnnealedLangevinDynamicsScheduler`` (diffusers-ncsn): Algorithm 1 of Song & Ermon
  (2019), one ``step`` per Langevin update; the loop of ``NCSNPipeline.__call__`` is written out
  here around our network (the pipeline needs a ``UNet2DModelForNCSN``). Imported lazily;
  ``ncsn.scheduler`` imports without torchvision (which diffusers-ncsn declares but never imports).

Neither library ships a score-matching training loss (diffusers-ncsn's is in its train_mnist.py
script, not in the package), so no training keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.peers import Op, Setup, standard_normal_score

NAME = "diffusers"
DISTRIBUTION = "diffusers"

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- diffusers: VE SDE
def _sde_ve_scheduler(s: Setup, n_steps: int):
    from diffusers import ScoreSdeVeScheduler

    # sampling_eps stays at the library default 1e-5 (the pipeline's configs keep it too)
    return ScoreSdeVeScheduler(num_train_timesteps=n_steps, snr=s.snr, sigma_min=s.sigma_min, sigma_max=s.sigma_max)


def _sde_ve_run(sch, score: ScoreFn, sample: torch.Tensor, n_steps: int, correct_steps: int,
                gen_pred: torch.Generator | None, gen_corr: torch.Generator | None) -> torch.Tensor:
    """The loop of diffusers' ScoreSdeVePipeline.__call__, with ``score`` for its UNet."""
    sch.set_timesteps(n_steps)
    sch.set_sigmas(n_steps)
    n = sample.shape[0]
    sample_mean = sample
    for i, t in enumerate(sch.timesteps):
        sigma_t = sch.sigmas[i] * torch.ones(n, device=sample.device)
        for _ in range(correct_steps):  # correction step(s)
            sample = sch.step_correct(score(sample, sigma_t), sample, generator=gen_corr).prev_sample
        out = sch.step_pred(score(sample, sigma_t), t, sample, generator=gen_pred)  # prediction step
        sample, sample_mean = out.prev_sample, out.prev_sample_mean
    return sample_mean  # the pipeline returns the last step's mean


def _corrector_generator(s: Setup, g: torch.Generator) -> torch.Generator:
    """``g`` on the CPU, else a CPU generator seeded with s.seed.

    step_correct draws its noise with randn_tensor(shape, generator=g) and no device: on the CPU, then
    copied to the sample's device; a CUDA generator is refused (ValueError). ScoreSdeVePipeline's
    users pass a CPU generator anyway (its first draw has no device either).
    """
    if s.device.type == "cpu":
        return g
    return torch.Generator(device="cpu").manual_seed(s.seed)


# ----------------------------------------------------------------------------- diffusers-ncsn
def _ncsn_scheduler(s: Setup):
    try:
        from ncsn.scheduler import AnnealedLangevinDynamicsScheduler
    except ImportError:
        return None
    # num_train_timesteps = L: NCSNPipeline.set_timesteps(n) does not recompute the sigmas, so the
    # pipeline only anneals over all sigma_1..sigma_L when n equals num_train_timesteps
    return AnnealedLangevinDynamicsScheduler(
        num_train_timesteps=len(s.sigmas), num_annealed_steps=s.steps_per_sigma,
        sigma_min=s.sigma_min, sigma_max=s.sigma_max, sampling_eps=s.eps,
    )


def _ncsn_run(sch, score: ScoreFn, sample: torch.Tensor, timesteps: torch.Tensor | None = None,
              steps: int | None = None) -> torch.Tensor:
    """The loop of NCSNPipeline.__call__ (without its uniform start and image decoding)."""
    if timesteps is None:
        sch.set_timesteps(len(sch.sigmas))
        timesteps = sch.timesteps
    steps = sch.num_annealed_steps if steps is None else steps
    sigmas = sch.sigmas.to(sample.device)
    n = sample.shape[0]
    for t in timesteps:
        sigma_t = sigmas[t].expand(n)  # our net takes sigma; NCSNPipeline's UNet takes the index t
        for _ in range(steps):
            sample = sch.step(model_output=score(sample, sigma_t), timestep=t, sample=sample).prev_sample
    return sample


def operations(s: Setup) -> dict[str, Op]:
    net = s.nc_net
    prior = s.x * s.sigma_max
    sch = _sde_ve_scheduler(s, s.n_steps)
    g_pred = s.generator()
    g_corr = _corrector_generator(s, g_pred)
    grid = (f"grid t = linspace(1, 1e-5, {s.n_steps}): {s.n_steps - 1} steps sigma_max -> sigma_min, the last "
            "sigma_min -> 0, returning its mean (scorematch: n_steps intervals t = 1 -> 1e-3)")

    @torch.no_grad()
    def reverse_sde() -> torch.Tensor:
        return _sde_ve_run(sch, net, prior, s.n_steps, 0, g_pred, g_corr)

    @torch.no_grad()
    def pc() -> torch.Tensor:
        return _sde_ve_run(sch, net, prior, s.n_steps, 1, g_pred, g_corr)

    pc_note = f"ScoreSdeVeScheduler.step_correct + step_pred; SNR corrector rule as scorematch; {grid}"
    if s.device.type != "cpu":
        pc_note += "; corrector noise drawn on the CPU and copied (step_correct refuses a device generator)"
    ops = {
        "reverse_sde_step": Op(reverse_sde, note=f"ScoreSdeVeScheduler.step_pred; {grid}", per=s.n_steps),
        "pc_step": Op(pc, note=pc_note, per=s.n_steps),
    }

    ald = _ncsn_scheduler(s)
    if ald is not None:
        last = torch.tensor(len(s.sigmas) - 1)
        ald_note = ("diffusers-ncsn AnnealedLangevinDynamicsScheduler: Algorithm 1, alpha_i = eps sigma_i^2/sigma_L^2 "
                    "as scorematch; step() ignores the generator (global RNG)")

        @torch.no_grad()
        def annealed_step() -> torch.Tensor:
            return _ncsn_run(ald, net, s.x, timesteps=last[None], steps=1)

        @torch.no_grad()
        def annealed_run() -> torch.Tensor:
            return _ncsn_run(ald, net, s.x)

        ops |= {
            "annealed_step": Op(annealed_step, note=ald_note),
            "annealed_run": Op(annealed_run, note=f"{ald_note}; {len(s.sigmas) * s.steps_per_sigma} updates"),
        }
    return ops


# ----------------------------------------------------------------------------------- checks
def _moments(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.var())


def checks(s: Setup) -> dict[str, str]:
    """Each sampler against scorematch's with the same settings, on the analytic score of
    N(0, (1 + sigma^2) I) (data N(0, I): the samples should end ~N(0, I)), and on s.nc_net."""
    from scorematch import samplers
    from scorematch.sde import sigma_conditioned

    dev = s.device

    gen = torch.Generator(device=dev).manual_seed(s.seed + 1)
    n_big = max(2000, 200_000 // s.d)
    x_big = torch.randn(n_big, s.d, device=dev, generator=gen)
    out: dict[str, str] = {}
    sde = s.sde

    def fmt(m: tuple[float, float]) -> str:
        return f"mean {m[0]:+.4f} var {m[1]:.4f}"

    n_vals = n_big * s.d
    with torch.no_grad():
        for key, n_corr in (("reverse_sde_step", 0), ("pc_step", 1)):
            sch = _sde_ve_scheduler(s, s.n_steps)
            res = []
            for score, x0 in ((standard_normal_score, x_big), (s.nc_net, s.x)):
                prior = x0 * s.sigma_max
                g = torch.Generator(device=dev).manual_seed(s.seed)
                peer = _moments(_sde_ve_run(sch, score, prior, s.n_steps, n_corr, g, _corrector_generator(s, g)))
                g = torch.Generator(device=dev).manual_seed(s.seed)
                fn = sigma_conditioned(score, sde)
                if n_corr:
                    ours = samplers.pc(fn, prior, sde, n_steps=s.n_steps, snr=s.snr, denoise=False, generator=g)
                else:
                    ours = samplers.reverse_diffusion(fn, prior, sde, n_steps=s.n_steps, denoise=False, generator=g)
                res.append((peer, _moments(ours)))
            (pa, oa), (pn, on) = res
            se = pa[1] * (2 / n_vals) ** 0.5  # standard error of the pooled variance
            head = f"analytic score of N(0, (1 + sigma^2) I) from sigma_max, {s.n_steps} steps, {n_big}x{s.d} samples"
            tail = f"; s.nc_net: diffusers {fmt(pn)} vs scorematch {fmt(on)}"
            if n_corr:
                ok = abs(pa[1] - oa[1]) < 5 * se and abs(pa[0] - oa[0]) < 5 * (pa[1] / n_vals) ** 0.5
                out[key] = f"{'OK' if ok else 'DIFFERENT'}: {head}: diffusers {fmt(pa)} vs scorematch {fmt(oa)}{tail}"
                continue
            # the exact variance of each chain on the linear score, from the same start
            v0 = float(x_big.var()) * s.sigma_max**2
            v_peer, n = v0, s.n_steps
            for k in range(n):
                idx = n - 1 - k
                g2 = float(sch.discrete_sigmas[idx]) ** 2 - (float(sch.discrete_sigmas[idx - 1]) ** 2 if idx else 0.0)
                v_peer = (1 - g2 / (1 + float(sch.sigmas[k]) ** 2)) ** 2 * v_peer + (g2 if k < n - 1 else 0.0)
            v_ours, dt = v0, (1 - 1e-3) / n
            for k in range(n):
                sig2 = float(sde.sigma(torch.tensor(1 - k * dt, dtype=torch.float64))) ** 2
                g2 = sig2 - float(sde.sigma(torch.tensor(max(1 - (k + 1) * dt, 0.0), dtype=torch.float64))) ** 2
                v_ours = (1 - g2 / (1 + sig2)) ** 2 * v_ours + g2
            ok = abs(pa[1] - v_peer) < 5 * se and abs(pa[0]) < 5 * (pa[1] / n_vals) ** 0.5
            out[key] = (
                f"{'OK' if ok else 'WRONG'}: {head}: diffusers {fmt(pa)} (its chain's exact var {v_peer:.4f}) vs "
                f"scorematch {fmt(oa)} (exact {v_ours:.4f}); target var 1, the excess is the {n}-step "
                f"discretisation{tail}"
            )

        ald = _ncsn_scheduler(s)
        if ald is not None:
            rel = float(((ald.sigmas.to(s.sigmas) - s.sigmas) / s.sigmas).abs().max())
            cuda = [dev] if dev.type == "cuda" else []
            for key, sig, steps in (("annealed_step", s.sigmas[-1:], 1), ("annealed_run", s.sigmas, s.steps_per_sigma)):
                timesteps = torch.arange(len(s.sigmas) - len(sig), len(s.sigmas))
                parts = []
                for score, x0 in ((standard_normal_score, x_big), (s.nc_net, s.x)):
                    # both draw their noise from the global RNG here: same seed, same noise
                    with torch.random.fork_rng(devices=cuda):
                        torch.manual_seed(s.seed)
                        peer = _ncsn_run(ald, score, x0, timesteps=timesteps, steps=steps)
                        torch.manual_seed(s.seed)
                        ours = samplers.annealed_langevin(score, x0, sig, eps=s.eps, steps_per_sigma=steps,
                                                      denoise=False)
                    parts.append((peer, ours))
                (pa, oa), (pn, on) = parts
                diff_a, diff_n = float((pa - oa).abs().max()), float((pn - on).abs().max())
                scale_n = float(on.abs().max())
                # the exact variance of Algorithm 1 on the linear score, from the same start
                var = float(x_big.var())
                for sigma in sig.tolist():
                    alpha = s.eps * sigma**2 / s.sigma_min**2
                    for _ in range(steps):
                        var = (1 - alpha / (2 * (1 + sigma**2))) ** 2 * var + alpha
                ok = diff_a <= 1e-4 and diff_n <= 1e-5 * max(1.0, scale_n) and rel < 1e-5
                out[key] = (
                    f"{'OK' if ok else 'DIFFERENT'}: the same global-RNG noise, sigmas rel. diff {rel:.1e}; analytic "
                    f"score: max |diffusers-ncsn - scorematch| = {diff_a:.1e}, {fmt(_moments(pa))} vs "
                    f"scorematch {fmt(_moments(oa))} (exact var {var:.4f}); s.nc_net: max |diff| = {diff_n:.1e} "
                    f"(max |x| {scale_n:.3g}, float32 rounding)"
                )
    return out
