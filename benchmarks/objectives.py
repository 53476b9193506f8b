"""One training step of every objective next to the floor (a bare forward+backward, MSE loss).

    python -m benchmarks.objectives [--device cuda] [--quick]

Networks: MLP 2->128->128->2 at batch 1024, D=784 with hidden 256 at batch 256, and the CLI's
default network (depth 3, width 128) at D=784, batch 256. A step is loss + backward (the
optimizer update is the same for every objective and left out). The exact ISM trace is timed
with each method (the structured trace in the network's widths, batched reverse mode, batched
forward mode, the per-dimension autograd loop of the reference implementations).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import environment, fmt_ms, markdown_table, timeit, where, write
from scorematch import objectives as O
from scorematch.models import ScoreMLP
from scorematch.noise import geometric_sigmas

SHAPES = [  # (name, D, hidden, depth, batch)
    ("D=2 (2-128-128-2, batch 1024)", 2, 128, 2, 1024),
    ("D=784 (784-256-256-784, batch 256)", 784, 256, 2, 256),
    ("D=784, CLI default (784-128-128-128-784, batch 256)", 784, 128, 3, 256),
]


def step_fns(model: ScoreMLP, x: torch.Tensor, quick: bool) -> dict[str, Any]:
    g = torch.Generator(device=x.device).manual_seed(0)
    ref = x[torch.randperm(len(x))]
    sigmas = geometric_sigmas(10.0, 0.01, 10).to(x.device)

    def nc(xx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return model(xx) / s[:, None]

    fns = {
        "floor (forward+backward, MSE)": lambda: ((model(x) - x) ** 2).mean(),
        "DSM": lambda: O.dsm(model, x, 0.1, generator=g),
        "multi-scale DSM (NCSN)": lambda: O.ncsn(nc, x, sigmas, generator=g),
        "SSM (1 projection)": lambda: O.ssm(model, x, generator=g),
        "SSM-VR (1 projection)": lambda: O.ssm(model, x, variance_reduced=True, generator=g),
        "ESM-KDE (N = batch)": lambda: O.esm_kde(model, x, ref, 0.5),
        "ISM exact, structured": lambda: O.ism(model, x, method="structured"),
        "ISM exact, batched vjp": lambda: O.ism(model, x, method="vjp"),
        "ISM exact, batched jvp": lambda: O.ism(model, x, method="jvp"),
    }
    if not (quick and x.shape[1] > 100):
        fns["ISM exact, per-dimension loop"] = lambda: O.ism(model, x, method="loop")
    return fns


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    payload = {"environment": environment(device), "shapes": {}}
    for name, d, hidden, depth, n in SHAPES:
        model = ScoreMLP(d, hidden=hidden, depth=depth).to(device)
        x = torch.randn(n, d, device=device)
        timings = {}
        for op, fn in step_fns(model, x, quick).items():
            def step(fn=fn, model=model) -> None:
                model.zero_grad(set_to_none=True)
                fn().backward()

            slow = "loop" in op or ("ISM" in op and "structured" not in op and d > 100)
            timings[op] = timeit(step, device, repeats=3 if slow else 100, warmup=1 if slow else 10,
                                 max_seconds=120 if slow else 10)
        payload["shapes"][name] = timings
    md = markdown(payload)
    return payload | {"markdown": md}


def markdown(payload: dict[str, Any]) -> str:
    """One row per operation; per network its time and its ratio to that network's floor."""
    env = payload["environment"]
    shapes = payload["shapes"]
    header = ["operation"]
    for name in shapes:
        header += [name, "x floor"]
    ops = list(dict.fromkeys(op for timings in shapes.values() for op in timings))
    rows = []
    for op in ops:
        row: list[Any] = [op]
        for timings in shapes.values():
            ms, floor = timings.get(op), timings["floor (forward+backward, MSE)"]
            row += [fmt_ms(ms), None if ms is None else f"{ms / floor:.2f}"]
        rows.append(row)
    head = (f"Measured {env['date']} on {where(env)} ({env['threads']} "
            f"thread(s), {env['clock']}), torch {env['torch']}; median of 100 repeats (3 for the generic exact "
            "ISM traces at D = 784 and the per-dimension loop). \"structured\": the exact trace in the network's "
            "widths (scorematch.autodiff.structured), what method=\"auto\" runs for these networks.")
    return head + "\n\n" + markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="skip the slow per-dimension loop at D=784")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    res = run(device, args.quick)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write(f"objectives{suffix}", res, res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
