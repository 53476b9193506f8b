"""The multistep SDE samplers and the adaptive DPM-Solver on the exact scores of the 2-D mixtures:
sample quality against score evaluations, beside DPM-Solver++(2M) and the ancestral Euler sampler.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m benchmarks.sde_multistep [--n 2000] [--seed 0]

Exact noisy scores of gmm2d and imbalanced (``benchmarks.nfe_subjects.analytic``), float64,
Karras levels from 80 to 0.002 with the final 0, start N(0, 80^2 I), n samples; quality as in
``benchmarks.nfe_quality``: unbiased MMD^2 (RBF, bandwidth 1) to fresh samples and the mode
weights, the bar MMD^2 < 2e-3 and every weight within 0.03. The fixed-grid samplers at budgets of
10 to 200 evaluations (NFE = steps); ``dpm_adaptive`` (order 3) at a ladder of tolerances
rtol = atol, and at k-diffusion's defaults (rtol 0.05, atol 0.0078), with eta = 0 and eta = 1,
its NFE counted (its steps shared by the batch, ``per_sample=False``: one solve of n samples, whose
NFE is the evaluations of every sample; per-sample steps: ``benchmarks.adaptive_rows``).
Writes benchmarks/results/sde_multistep.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import markdown_table
from benchmarks.nfe_quality import MMD_GOOD, MODE_GOOD, Counted, toy_quality
from benchmarks.nfe_subjects import analytic
from scorematch.distributions import toy
from scorematch.noise import karras_sigmas
from scorematch.samplers import dpm_adaptive, sample

FIXED = {"dpm_solver (2M, ODE)": ("dpm_solver", {}), "euler_ancestral": ("euler_ancestral", {}),
         "dpmpp_2m_sde": ("dpmpp_2m_sde", {}), "dpmpp_2m_sde heun": ("dpmpp_2m_sde", {"solver_type": "heun"}),
         "dpmpp_3m_sde": ("dpmpp_3m_sde", {}), "dpmpp_2m_sde eta 0.5": ("dpmpp_2m_sde", {"eta": 0.5})}
BUDGETS = (10, 20, 35, 50, 100, 200)
TOLERANCES = ((0.05, 0.0078), (1e-2, 1e-2), (1e-3, 1e-3), (1e-4, 1e-4))


def _one(rows: list[dict[str, Any]], data: str, quality: Any, view: Any, n: int, seed: int, label: str, setting: str,
         fn: Any) -> None:
    """Run ``fn(score, x0, generator)`` from N(0, sigma_max^2 I) and record its NFE and quality."""
    g = torch.Generator().manual_seed(seed)
    x0 = float(view.sigma_max) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    counted = Counted(view)
    t0 = time.process_time()
    x = fn(counted, x0, g)
    row = {"data": data, "sampler": label, "setting": setting, "nfe": counted.calls,
           "seconds": time.process_time() - t0, **quality(x)}
    rows.append(row)
    print(f"  {data:10s} {label:22s} {setting:22s} NFE {row['nfe']:4d}  MMD2 {row['mmd2']:9.2e}  "
          f"modes {[round(v, 3) for v in row['mode_weights']]}", flush=True)


def run(n: int, seed: int, budgets: Sequence[int], tolerances: Sequence[tuple[float, float]]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for name in ("gmm2d", "imbalanced"):
        mix = toy(name)
        quality = toy_quality(mix, mix.sample(n, torch.Generator().manual_seed(seed + 1000)).double())
        view = analytic(name, seed).view
        lo, hi = float(view.sigma_min), float(view.sigma_max)
        for label, (sampler, opts) in FIXED.items():
            for b in budgets:
                grid = karras_sigmas(b, lo, hi).double()
                _one(rows, name, quality, view, n, seed, label, f"{b} steps",
                     lambda f, x0, g, s=sampler, o=opts, grid=grid: sample(s, f, x0, grid, generator=g, **o))
        for eta in (0.0, 1.0):
            for rtol, atol in tolerances:
                _one(rows, name, quality, view, n, seed, f"dpm_adaptive eta {eta:g}", f"rtol {rtol:g}, atol {atol:g}",
                     lambda f, x0, g, r=rtol, a=atol, e=eta, ends=[hi, lo, 0.0]:
                     dpm_adaptive(f, x0, ends, rtol=r, atol=a, eta=e, generator=g, per_sample=False))
    return {"n": n, "seed": seed, "mmd_good": MMD_GOOD, "mode_good": MODE_GOOD, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "rows": rows}


def markdown(payload: dict[str, Any]) -> str:
    out = [f"Measured {payload['date']}, torch {payload['torch']}, CPU, {payload['threads']} thread(s); "
           f"exact scores, n = {payload['n']}, Karras levels 80 -> 0.002 (+0); bar: MMD^2 < {MMD_GOOD:g} and "
           f"mode weights within {MODE_GOOD:g}. First setting that reaches the bar (NFE), and MMD^2 at each setting."]
    for data in ("gmm2d", "imbalanced"):
        rows = [r for r in payload["rows"] if r["data"] == data]
        table = []
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            mine = [r for r in rows if r["sampler"] == sampler]
            first = next((r["nfe"] for r in mine if r["good"]), None)
            cells = ", ".join(f"{r['setting']}: {r['nfe']} NFE {r['mmd2']:.1e}" for r in mine)
            table.append([sampler, "never" if first is None else str(first), cells])
        out.append(f"**{data}**\n\n" + markdown_table(["sampler", "NFE to the bar", "setting: NFE, MMD^2"], table))
    return "\n\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import json

    from benchmarks.common import RESULTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="n = 200, budgets 10 and 20, two tolerances")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    budgets, tols = ((10, 20), TOLERANCES[:2]) if args.quick else (BUDGETS, TOLERANCES)
    payload = run(200 if args.quick else args.n, args.seed, budgets, tols)
    text = markdown(payload)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "sde_multistep.json").write_text(json.dumps(payload, indent=1) + "\n")
        (RESULTS / "sde_multistep.md").write_text(text)
    print(text)
    return payload


if __name__ == "__main__":
    main()
