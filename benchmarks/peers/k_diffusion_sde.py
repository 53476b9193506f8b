"""DPM-Solver++(2M) SDE, (3M) SDE and the adaptive DPM-Solver against k-diffusion's
``sample_dpmpp_2m_sde``, ``sample_dpmpp_3m_sde`` and ``sample_dpm_adaptive``, step for step.

    PYTHONPATH=src python -m benchmarks.peers.k_diffusion_sde

The same start, sigmas and injected noise (one sequence of z, handed to k-diffusion's
``noise_sampler`` and to scorematch's ``noise``), float64, on the exact score of N(0, I) and on the
setup's noise-conditional network; the callback's x and denoised compared at every step. The
adaptive solver: the same accepted and rejected steps and the result; k-diffusion computes its
scalars in the default dtype (set to float64 for the call) and evaluates the start of a rejected
step again, scorematch reuses it (its NFE is k-diffusion's minus the rejections). Writes
benchmarks/results/k_diffusion_sde.{json,md} (``checks`` of the peer benchmark includes them).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from benchmarks.common import RESULTS
from benchmarks.peers import Setup, make_setup, standard_normal_score

PAIRS = {
    "dpmpp_2m_sde (midpoint, eta 1)": ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}),
    "dpmpp_2m_sde (heun, eta 1)": ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    "dpmpp_2m_sde (midpoint, eta 0.5, s_noise 1.1)": ("dpmpp_2m_sde", "sample_dpmpp_2m_sde",
                                                      {"eta": 0.5, "s_noise": 1.1}),
    "dpmpp_3m_sde (eta 1)": ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
}


def _scores(s: Setup) -> dict[str, tuple[Any, Any]]:
    """(score for scorematch, denoiser for k-diffusion) of the analytic N(0, I) and of the network, float64."""
    net = s.nc_net.double()

    def gauss_den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2 * standard_normal_score(x, sigma)

    def net_den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return x + sigma.square()[:, None] * net(x, sigma)

    return {"analytic N(0, I)": (standard_normal_score, gauss_den), "network": (net, net_den)}


def sde_checks(s: Setup) -> dict[str, str]:
    from benchmarks.peers.k_diffusion_peer import _load_k_diffusion
    from scorematch import samplers

    sampling, _ = _load_k_diffusion()
    out: dict[str, str] = {}
    x0 = (s.x * s.sigma_max).double()
    sig = s.karras_sigmas.double()
    steps = len(sig) - 1
    try:
        for label, (ours, theirs, options) in PAIRS.items():
            parts = []
            for which, (score, den) in _scores(s).items():
                z = torch.randn(steps, *x0.shape, generator=s.generator(), dtype=x0.dtype)
                it_kd, it_sm = iter(z), iter(z)
                kd_log: list[dict] = []
                sm_log: list[dict] = []
                with torch.no_grad():
                    kd = getattr(sampling, theirs)(den, x0, sig, disable=True, callback=kd_log.append,
                                                   noise_sampler=lambda a, b, it=it_kd: next(it), **options)
                    sm = getattr(samplers, ours)(score, x0, sig, callback=sm_log.append,
                                                 noise=lambda a, b, it=it_sm: next(it), **options)
                worst = max(float((a[k] - b[k]).abs().max()) for a, b in zip(kd_log, sm_log, strict=True)
                            for k in ("x", "denoised"))
                parts.append(f"{which}: largest difference over all steps' x and denoised {worst:.1e}, final "
                             f"{float((kd - sm).abs().max()):.1e}")
            out[label] = (f"{steps} Karras steps from |x| up to {float(x0.abs().max()):.3g}, the same injected "
                          "noise, float64; " + "; ".join(parts))
        for order, eta in ((2, 0.0), (3, 0.0), (3, 1.0)):
            parts = []
            for which, (score, den) in _scores(s).items():
                z = torch.randn(400, *x0.shape, generator=s.generator(), dtype=x0.dtype)
                it_kd, it_sm = iter(z), iter(z)
                default = torch.get_default_dtype()
                torch.set_default_dtype(torch.float64)
                try:
                    with torch.no_grad():
                        kd, info = sampling.sample_dpm_adaptive(den, x0, s.sigma_min, s.sigma_max, order=order,
                                                                eta=eta, disable=True, return_info=True,
                                                                noise_sampler=lambda a, b, it=it_kd: next(it))
                finally:
                    torch.set_default_dtype(default)
                sm, mine = samplers.dpm_adaptive(score, x0, [s.sigma_max, s.sigma_min], order=order, eta=eta,
                                                 noise=lambda a, b, it=it_sm: next(it), return_info=True,
                                                 per_sample=False)
                same = all(info[k] == mine[k] for k in ("steps", "n_accept", "n_reject"))
                parts.append(f"{which}: {'the same' if same else 'DIFFERENT'} steps ({mine['n_accept']} accepted, "
                             f"{mine['n_reject']} rejected), NFE {info['nfe']} vs {mine['nfe']}, final difference "
                             f"{float((kd - sm).abs().max()):.1e}")
            out[f"dpm_adaptive (order {order}, eta {eta:g})"] = (
                f"default tolerances (rtol 0.05, atol 0.0078), sigma {s.sigma_max:.3g} -> {s.sigma_min:.3g}, "
                "float64; " + "; ".join(parts))
    finally:
        s.nc_net.float()
    return out


def main() -> dict[str, Any]:
    torch.set_num_threads(1)
    payload: dict[str, Any] = {}
    for d, batch in ((2, 256), (784, 32)):
        payload[f"D = {d}, batch {batch}"] = sde_checks(make_setup(d, batch, 128, torch.device("cpu")))
    lines = ["k-diffusion 0.1.1.post1 against scorematch on the same start, sigmas and injected noise (float64).", ""]
    for shape, checks in payload.items():
        lines += [f"**{shape}**", ""] + [f"- {k}: {v}" for k, v in checks.items()] + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "k_diffusion_sde.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / "k_diffusion_sde.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return payload


if __name__ == "__main__":
    main()
