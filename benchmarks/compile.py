"""torch.compile on a CPU: a DSM training step and a Langevin step of a score MLP, eager against
compiled (inductor), and the one-off cost of compiling.

    python -m benchmarks.compile [--hidden 128] [--depth 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks.common import environment, fmt_ms, markdown_table, timeit, where, write
from scorematch import objectives as O
from scorematch import samplers
from scorematch.models import ScoreMLP


def dsm_step(model: torch.nn.Module, params: list[torch.Tensor], x: torch.Tensor) -> Any:
    opt = torch.optim.Adam(params, lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = O.dsm(model, x, 0.1, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def langevin_step(model: torch.nn.Module, x: torch.Tensor) -> Any:
    g = torch.Generator().manual_seed(0)
    return lambda: samplers.langevin(model, x, 1e-3, n_steps=10, generator=g)


def run(hidden: int, depth: int, batches: list[int]) -> dict[str, Any]:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    rows = []
    for n in batches:
        torch.manual_seed(0)
        eager = ScoreMLP(2, hidden, depth)
        compiled = torch.compile(eager)
        x = torch.randn(n, 2)
        t0 = time.perf_counter()
        dsm_step(compiled, list(eager.parameters()), x)()
        langevin_step(compiled, x)()
        compile_s = time.perf_counter() - t0
        row = {"batch": n, "compile_wall_s": compile_s}
        for name, model in (("eager", eager), ("compiled", compiled)):
            row[f"dsm_step_{name}_ms"] = timeit(dsm_step(model, list(eager.parameters()), x), device)
            row[f"langevin_10_steps_{name}_ms"] = timeit(langevin_step(model, x), device)
        rows.append(row)
    env = environment(device)
    md = (f"torch.compile (inductor) against eager, {where(env)}, torch {env['torch']}, 1 thread, "
          f"{env['clock']}, median: ScoreMLP(2, {hidden}, {depth}).\n\n"
          + markdown_table(["batch", "DSM step eager", "DSM step compiled", "10 Langevin steps eager",
                            "10 Langevin steps compiled", "compiling (once, wall)"],
                           [[r["batch"], fmt_ms(r["dsm_step_eager_ms"]), fmt_ms(r["dsm_step_compiled_ms"]),
                             fmt_ms(r["langevin_10_steps_eager_ms"]), fmt_ms(r["langevin_10_steps_compiled_ms"]),
                             f"{r['compile_wall_s']:.3g} s"] for r in rows]))
    return {"environment": env, "hidden": hidden, "depth": depth, "rows": rows, "markdown": md}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    args = p.parse_args(argv)
    res = run(args.hidden, args.depth, args.batches)
    write("compile", res, res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
