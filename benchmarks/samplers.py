"""Annealed Langevin against the bare network evaluations it needs (L x T forwards).

    python -m benchmarks.samplers [--device cuda]

The sampler's own work (step sizes, noise draws, the update) should cost little next to the
score network: the target is a ratio <= 1.1.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import environment, markdown_table, timeit, write
from scorematch.models import NoiseConditionalMLP
from scorematch.noise import geometric_sigmas
from scorematch.samplers import annealed_langevin


def _image_model(device: torch.device) -> torch.nn.Module | None:
    try:
        from scorematch.models.images import NCSNUNet
    except ImportError:
        return None
    return NCSNUNet(channels=1).to(device).eval()


def time_case(model: torch.nn.Module, shape: tuple[int, ...], n_levels: int, steps: int,
              device: torch.device) -> tuple[float, float]:
    """(ms of the L x T bare forwards, ms of annealed Langevin with the same L and T)."""
    sigmas = geometric_sigmas(10.0, 0.01, n_levels).to(device)
    x0 = torch.rand(shape, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    sig_rows = [s.expand(shape[0]).contiguous() for s in sigmas]

    @torch.no_grad()
    def bare() -> None:
        for s in sig_rows:
            for _ in range(steps):
                model(x0, s)

    def sampler() -> None:
        annealed_langevin(model, x0, sigmas, eps=2e-5, steps_per_sigma=steps, denoise=False, generator=g)

    return (timeit(bare, device, repeats=7, warmup=1, max_seconds=60),
            timeit(sampler, device, repeats=7, warmup=1, max_seconds=60))


def run(device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    cases = [("NoiseConditionalMLP, 2-D, 2000 chains, L=10, T=100",
              NoiseConditionalMLP(2).to(device).eval(), (2000, 2), 10, 100)]
    unet = _image_model(device)
    if unet is not None:
        cases.append(("NCSNUNet, 8x8 digits, 64 chains, L=10, T=5", unet, (64, 1, 8, 8), 10, 5))
    rows, payload = [], {"environment": environment(device), "cases": {}}
    for name, model, shape, n_levels, steps in cases:
        t_bare, t_samp = time_case(model, shape, n_levels, steps, device)
        payload["cases"][name] = {"bare_forwards_ms": t_bare, "annealed_langevin_ms": t_samp,
                                  "ratio": t_samp / t_bare}
        rows.append([name, t_bare, t_samp, t_samp / t_bare])
    env = payload["environment"]
    md = (f"Measured {env['date']} on {env['device']} ({env['threads']} threads), torch {env['torch']}.\n\n"
          + markdown_table(["case", "L x T bare forwards (ms)", "annealed Langevin (ms)", "ratio"], rows))
    return payload | {"markdown": md}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    res = run(device)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write(f"samplers{suffix}", res, res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
