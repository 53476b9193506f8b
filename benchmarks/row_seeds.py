"""The cost of per-sample seeds and of Brownian-tree noise per sampler step.

    python -m benchmarks.row_seeds [--device cpu] [--threads 1] [--steps 4]

One euler_ancestral step (a score evaluation and a noise draw) with fresh noise from one
torch.Generator for the batch (the sampler before per-sample seeds), from per-row streams
(``RowGenerators``: sample i from (seed, i) alone) and from per-row Brownian trees, on the 28x28
image U-Net at batch 500 (target: per-row seeds at most 1.05x the one-generator step) and on
the 2-D MLP at batch 2000. Also the noise draw alone, per step, in each mode.

``--torchsde`` (with torchsde installed) times instead a 50-step walk down per-sample Brownian
trees for 200 samples in 2-D: torchsde's ``BrownianInterval`` (one tree per sample, tol 1e-6,
as k-diffusion's batched Brownian tree builds them) against scorematch's ``BrownianTree``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import environment, markdown_table, timeit, write
from scorematch._brownian import BrownianTree
from scorematch._random import RowGenerators, randn_like
from scorematch.noise import karras_sigmas
from scorematch.samplers import euler_ancestral


def _cases(device: torch.device) -> list[tuple[str, torch.nn.Module, tuple[int, ...]]]:
    from scorematch.models import NoiseConditionalMLP
    from scorematch.models.images import NCSNUNet

    torch.manual_seed(0)
    return [("NCSNUNet 28x28, batch 500", NCSNUNet(channels=1).to(device).eval(), (500, 1, 28, 28)),
            ("NoiseConditionalMLP 2-D, batch 2000", NoiseConditionalMLP(2).to(device).eval(), (2000, 2))]


def _generator(mode: str, n: int, device: torch.device) -> Any:
    return torch.Generator(device=device).manual_seed(0) if mode == "one generator" else \
        RowGenerators.from_seed(0, n, device=device)


def _noise_fn(mode: str, x0: torch.Tensor, device: torch.device) -> Any:
    """One step's noise draw in ``mode`` (the tree: one step of a 100-step walk down it, wrapping)."""
    if not mode.endswith("tree"):
        g = _generator(mode, x0.shape[0], device)
        return lambda: randn_like(x0, g)
    tree = BrownianTree(x0, 0.0, 1.0, RowGenerators.from_seed(0, x0.shape[0], device=device))
    grid = [1 - k / 100 for k in range(101)]
    state = {"k": 0}

    def noise() -> None:
        k = state["k"] % 100
        tree(grid[k], grid[k + 1])
        state["k"] += 1

    return noise


def _time_mode(mode: str, model: torch.nn.Module, x0: torch.Tensor, steps: int, device: torch.device,
               repeats: int) -> dict[str, float]:
    sigmas = karras_sigmas(steps, 0.01, 10.0)

    def sampler() -> None:
        euler_ancestral(model, x0, sigmas, generator=_generator(mode, x0.shape[0], device),
                        brownian=mode.endswith("tree"))

    step_ms = timeit(sampler, device, repeats=repeats, warmup=1, max_seconds=120) / steps
    noise_ms = timeit(_noise_fn(mode, x0, device), device, repeats=50, warmup=5, max_seconds=30)
    return {"step_ms": step_ms, "noise_ms": noise_ms}


def time_case(model: torch.nn.Module, shape: tuple[int, ...], steps: int, device: torch.device,
              repeats: int) -> dict[str, dict[str, float]]:
    """ms per step of euler_ancestral over ``steps`` steps, and ms of the step's noise alone, per mode."""
    x0 = torch.randn(shape, device=device)
    return {mode: _time_mode(mode, model, x0, steps, device, repeats)
            for mode in ("one generator", "per-row seeds", "per-row Brownian tree")}


def render(payload: dict[str, Any]) -> str:
    """The markdown table of a result (ratios to 3 decimals: the target is 1.05)."""
    rows = [[name, mode, r["step_ms"], r["noise_ms"], f"{r['ratio']:.3f}"]
            for name, res in payload["cases"].items() for mode, r in res.items()]
    env = payload["environment"]
    return (f"Measured {env['date']} on {env['device']} ({env['cpu'] if env['device'] == 'cpu' else env.get('gpu')}, "
            f"{env['threads']} thread(s), {env['clock']}), torch {env['torch']}; euler_ancestral, "
            f"{payload['steps']} steps.\n\n"
            + markdown_table(["model", "noise", "ms per step", "ms of the step's noise", "step / one generator"],
                             rows))


def run(device: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"environment": environment(device), "steps": steps, "cases": {}}
    for name, model, shape in _cases(device):
        res = time_case(model, shape, steps, device, repeats)
        base = res["one generator"]["step_ms"]
        for r in res.values():
            r["ratio"] = r["step_ms"] / base
        payload["cases"][name] = res
    return payload | {"markdown": render(payload)}


def torchsde_walk(n: int = 200, steps: int = 50) -> dict[str, float]:
    """ms per step of a walk down per-sample Brownian trees: torchsde's and scorematch's."""
    import time

    import torchsde

    from scorematch._random import row_seed

    grid = [1 - k / steps for k in range(steps + 1)]

    def walk(f: Any) -> float:
        t0 = time.process_time()
        for k in range(steps):
            f(grid[k + 1], grid[k])
        return (time.process_time() - t0) / steps * 1e3

    trees = [torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(1, 2), entropy=row_seed(0, i), tol=1e-6,
                                       halfway_tree=True) for i in range(n)]
    own = BrownianTree(torch.zeros(n, 2), 0.0, 1.0, RowGenerators.from_seed(0, n))
    return {"torchsde_ms": walk(lambda a, b: torch.cat([t(a, b) for t in trees])), "scorematch_ms": walk(own)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--steps", type=int, default=4, help="sampler steps per timed run (default: 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per mode (default: 5)")
    p.add_argument("--torchsde", action="store_true", help="time per-sample Brownian trees against torchsde's")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.torchsde:
        print(torchsde_walk())
        return
    device = torch.device(args.device)
    res = run(device, args.steps, args.repeats)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    write(f"row_seeds{suffix}", res, res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
