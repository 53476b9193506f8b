"""Probability-flow ODE log p of a batch: the exact divergence against the Hutchinson estimate.

    python -m benchmarks.likelihood [--threads 1] [--device cpu] [--smoke]

D = 784, batch 256, dopri5 at rtol = atol = 1e-5 (the peer comparison's setting): the
noise-conditional MLP 784-256-256-784 of benchmarks/compare.py through ``sigma_conditioned`` on
its VE SDE, and a TimeMLP (width 128, depth 3) on the VP SDE. ``exact_trace=True`` takes the
structured trace (scorematch.autodiff.structured) for both; the Hutchinson estimate uses one
Rademacher probe per row. Each figure is the median of a few whole solves (process CPU time at
one thread); the NFE differ because the adaptive solver also controls the error of the
log-density state. Writes benchmarks/results/likelihood[_DEVICE].json and .md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks.common import clock, environment, fmt_ms, markdown_table, sync, where, write
from benchmarks.peers import make_setup
from scorematch.likelihood import log_prob
from scorematch.models.time import TimeMLP
from scorematch.sde import VPSDE, sigma_conditioned


def cases(d: int, batch: int, device: torch.device) -> dict[str, tuple[Any, Any, torch.Tensor]]:
    s = make_setup(d, batch, 256, device)
    torch.manual_seed(1)
    time_mlp = TimeMLP(d, hidden=128, depth=3).to(device)
    nc = sigma_conditioned(s.nc_net, s.sde)
    return {
        f"NoiseConditionalMLP {d}-256-256-{d} via sigma_conditioned, VE": (nc, s.sde, s.x),
        f"TimeMLP {d}-128x4-{d} (depth 3), VP": (time_mlp, VPSDE(), s.x),
    }


def solve(score: Any, sde: Any, x: torch.Tensor, exact: bool, device: torch.device, repeats: int) -> dict[str, Any]:
    now = clock(device)
    times, nfe, out = [], 0, None
    for _ in range(repeats):
        g = torch.Generator(device=device).manual_seed(0)
        t0 = now()
        res = log_prob(score, sde, x, exact_trace=exact, n_probes=1, rtol=1e-5, atol=1e-5, generator=g,
                       return_nfe=True)
        sync(device)
        times.append(now() - t0)
        nfe, out = res.nfe, res.log_prob
    ms = 1e3 * sorted(times)[len(times) // 2]
    return {"ms": ms, "nfe": nfe, "ms_per_nfe": ms / nfe, "log_prob": out}


def run(device: torch.device, smoke: bool) -> dict[str, Any]:
    d, batch, repeats = (16, 8, 1) if smoke else (784, 256, 3)
    payload: dict[str, Any] = {"environment": environment(device), "d": d, "batch": batch, "cases": {}}
    for name, (score, sde, x) in cases(d, batch, device).items():
        hutch = solve(score, sde, x, False, device, repeats)
        exact = solve(score, sde, x, True, device, repeats)
        diff = (exact.pop("log_prob") - hutch.pop("log_prob")).abs()
        payload["cases"][name] = {
            "hutchinson": hutch, "exact": exact, "exact_over_hutchinson": exact["ms"] / hutch["ms"],
            "mean_abs_log_prob_difference": float(diff.mean()),
        }
        print(f"  {name}: Hutchinson {hutch['ms']:.4g} ms ({hutch['nfe']} NFE), exact {exact['ms']:.4g} ms "
              f"({exact['nfe']} NFE)", flush=True)
    payload["markdown"] = markdown(payload)
    return payload


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    rows = []
    for name, c in payload["cases"].items():
        h, e = c["hutchinson"], c["exact"]
        rows.append([name, f"{fmt_ms(h['ms'])} ({h['nfe']} NFE, {h['ms_per_nfe']:.3g} ms each)",
                     f"{fmt_ms(e['ms'])} ({e['nfe']} NFE, {e['ms_per_nfe']:.3g} ms each)",
                     f"{c['exact_over_hutchinson']:.2f}", f"{c['mean_abs_log_prob_difference']:.3g}"])
    head = (f"Measured {env['date']} on {where(env)} ({env['threads']} thread(s), {env['clock']}), torch "
            f"{env['torch']}. Probability-flow ODE log p of a batch of {payload['batch']} points N(0, I) at "
            f"D = {payload['d']}, dopri5, rtol = atol = 1e-5; median of whole solves.")
    table = markdown_table(["score network, SDE", "Hutchinson (1 probe)", "exact (structured trace)",
                            "exact / Hutchinson", "mean abs. difference of log p"], rows)
    return head + "\n\n" + table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="D = 16, batch 8, one solve each")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    payload = run(device, args.smoke)
    suffix = ("" if device.type == "cpu" else f"_{device.type}") + ("_smoke" if args.smoke else "")
    write(f"likelihood{suffix}", payload, payload["markdown"])
    print(payload["markdown"] + f"\n({time.perf_counter() - t0:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
