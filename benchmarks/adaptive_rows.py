"""The cost of per-sample step control in the adaptive samplers: each row its own steps against
one set of steps for the batch.

    python -m benchmarks.adaptive_rows [--threads 1] [--train-steps 2000] [--digits-steps 1000] [--quick]

``dpm_adaptive`` (order 3) with ``per_sample=True`` (the default: every row its own error, step
size, PID history and accept/reject) against ``per_sample=False`` (k-diffusion's controller: one
error over the batch), at the default tolerances (rtol 0.05, atol 0.0078) and at rtol = atol =
1e-3, and ``ode`` (dopri5, rtol = atol = 1e-5) per sample against torchdiffeq's batch-wide steps,
on two trained VE SDE models: the 2-D toy gmm2d (``scorematch.train`` defaults, batch of 2000
samples) and a U-Net on scikit-learn's 8x8 digits (batch of 256). The same start for both modes.
Reported per mode: the time of the whole call (process CPU time, one thread, median of the
repeats), the batched score calls, the score evaluations per sample (per sample: the row's own,
on average; batch-wide: the batched calls, every row in each), and the largest
difference between the two modes' samples. Writes benchmarks/results/adaptive_rows.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks.common import clock, environment, fmt_ms, markdown_table, where, write
from benchmarks.nfe_subjects import digits_split, trained_digits, trained_toy
from scorematch.samplers import dpm_adaptive, ode


def _time(fn: Any, repeats: int) -> tuple[float, Any]:
    now = clock(torch.device("cpu"))
    times, out = [], None
    for _ in range(repeats):
        t0 = now()
        out = fn()
        times.append(1e3 * (now() - t0))
    return sorted(times)[len(times) // 2], out


def measure(subject: Any, n: int, repeats: int) -> list[dict[str, Any]]:
    view, sde = subject.view, subject.sde
    g = torch.Generator().manual_seed(0)
    x0 = view.prior_std * torch.randn(n, *subject.shape, generator=g)
    ends = [float(view.sigma_max), float(view.sigma_min), 0.0]
    rows: list[dict[str, Any]] = []
    for tol in ((0.05, 0.0078), (1e-3, 1e-3)):
        label = f"dpm_adaptive, rtol {tol[0]:g}, atol {tol[1]:g}"
        out = {}
        for per in (False, True):
            ms, (x, info) = _time(lambda per=per, tol=tol: dpm_adaptive(view, x0, ends, rtol=tol[0], atol=tol[1],
                                                               per_sample=per, return_info=True), repeats)
            per_row = info["row_nfe"] / n if per else info["nfe"]
            out[per] = x
            rows.append({"model": subject.data, "n": n, "sampler": label, "mode": "per sample" if per else "batch",
                         "ms": ms, "calls": info["nfe"], "evaluations_per_sample": per_row,
                         "steps": info["steps"], "n_accept": info["n_accept"], "n_reject": info["n_reject"]})
        rows[-1]["max_difference"] = rows[-2]["max_difference"] = float((out[True] - out[False]).abs().max())
    start = sde.prior_std * torch.randn(n, *subject.shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for per in (False, True):
        ms, res = _time(lambda per=per: ode(subject.time_score, start, sde, rtol=1e-5, atol=1e-5, per_sample=per,
                                            return_info=True), repeats)
        x, info = res
        out[per] = x
        rows.append({"model": subject.data, "n": n, "sampler": "ode, dopri5, rtol 1e-5, atol 1e-5",
                     "mode": "per sample" if per else "batch", "ms": ms, "calls": info["nfe"],
                     "evaluations_per_sample": info["row_nfe"] / n if per else info["nfe"]})
    rows[-1]["max_difference"] = rows[-2]["max_difference"] = float((out[True] - out[False]).abs().max())
    for r in rows:
        print(f"  {r['model']} {r['sampler']:40s} {r['mode']:10s} {fmt_ms(r['ms']):>9s} {r['calls']:5d} calls "
              f"{r['evaluations_per_sample']:.1f} evaluations per sample", flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    head = (f"Measured {env['date']} on {where(env)} ({env['threads']} thread(s), {env['clock']}), torch "
            f"{env['torch']}. VE SDE models: {payload['notes']}. Time: the whole call, median of "
            f"{payload['repeats']}; calls: batched calls of the score; evaluations per sample: a row's own "
            "(per sample, the mean over rows) or every batched call (batch); difference: the largest |x| "
            "difference between the two modes' samples from the same start.")
    rows = []
    for a, b in zip(payload["rows"][::2], payload["rows"][1::2], strict=True):
        rows.append([f"{a['model']} (batch {a['n']})", a["sampler"], fmt_ms(a["ms"]), fmt_ms(b["ms"]),
                     f"{b['ms'] / a['ms']:.2f}", f"{a['calls']} / {b['calls']}",
                     f"{a['evaluations_per_sample']:.0f} / {b['evaluations_per_sample']:.1f}",
                     f"{a['max_difference']:.2g}"])
    return head + "\n\n" + markdown_table(
        ["model", "sampler", "batch-wide steps", "per-sample steps", "per sample / batch",
         "calls (batch / per sample)", "evaluations per sample (batch / per sample)", "difference"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=2000)
    p.add_argument("--digits-steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="200 training steps, small batches, one repeat")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    steps, dsteps, repeats = (200, 100, 1) if args.quick else (args.train_steps, args.digits_steps, args.repeats)
    toy_model = trained_toy("gmm2d", "ve", steps, 0)
    digits_model = trained_digits(digits_split(0), "ve", dsteps, 0)
    rows = measure(toy_model, 200 if args.quick else 2000, repeats)
    rows += measure(digits_model, 32 if args.quick else 256, repeats)
    payload = {"environment": environment(torch.device("cpu")), "repeats": repeats, "rows": rows,
               "notes": f"gmm2d, {toy_model.note}; 8x8 digits, {digits_model.note}"}
    payload["markdown"] = markdown(payload)
    write("adaptive_rows" + ("_quick" if args.quick else ""), payload, payload["markdown"])
    print(payload["markdown"])
    print(f"({time.perf_counter() - t_start:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
