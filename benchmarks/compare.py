"""scorematch next to the libraries a researcher would otherwise pick, and next to the floor.

    python -m benchmarks.compare [--threads 1] [--device cpu] [--shapes toy mnist] [--ops ism ...] [--smoke]

Every contender (benchmarks/peers/) gets the same networks, batch, sigmas, device and thread
count. Contenders are timed in rounds, one call of each in turn, so that a change in the
machine's load hits all of them alike; each figure is the median after a warm-up. The floor is a
bare forward + backward of the same network with an MSE loss. A peer that is not installed, or
lacks an operation, gets an empty cell. Raw numbers go to benchmarks/results/compare*.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import peers
from benchmarks.common import clock, environment, fmt_ms, sync, where, write
from benchmarks.peers import OPERATIONS, Setup, make_setup

SHAPES = {  # name: (D, hidden, batch, label)
    "toy": (2, 128, 1024, "MLP 2-128-128-2, batch 1024"),
    "mnist": (784, 256, 256, "MLP 784-256-256-784, batch 256"),
    "smoke": (4, 16, 32, "MLP 4-16-16-4, batch 32"),
}

LABELS = {
    "dsm": "DSM step",
    "dsm_energy": "DSM step, energy net",
    "ncsn": "multi-scale DSM step (NCSN)",
    "ssm": "SSM step",
    "ssm_energy": "SSM step, energy net",
    "ssm_vr": "SSM-VR step",
    "ssm_vr_energy": "SSM-VR step, energy net",
    "ism": "exact ISM step",
    "ism_energy": "exact ISM step, energy net",
    "annealed_step": "annealed Langevin, one step",
    "annealed_run": "annealed Langevin, full run",
    "reverse_sde_step": "reverse-SDE step",
    "pc_step": "PC step (predictor + corrector)",
    "ode_likelihood": "probability-flow ODE log p of the batch",
    "heun_step": "Heun step (EDM)",
    "euler_step": "Euler step (ODE in sigma)",
    "euler_ancestral_step": "ancestral Euler step",
    "dpm_solver_step": "DPM-Solver++(2M) step",
}


def floors(s: Setup) -> dict[str, Callable[[], None]]:
    """Bare forward + backward, MSE loss, of each network in the setup."""
    sigma = s.sigmas[torch.randint(len(s.sigmas), (s.batch,), device=s.device)]

    def fb(net: torch.nn.Module, out: Callable[[], torch.Tensor], target: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            ((out() - target) ** 2).mean().backward()

        return step

    return {
        "score": fb(s.score_net, lambda: s.score_net(s.x), s.x),
        "energy": fb(s.energy_net, lambda: s.energy_net(s.x), s.x[:, 0]),
        "nc": fb(s.nc_net, lambda: s.nc_net(s.x, sigma), s.x),
    }


def network_of(op: str) -> str:
    if op.endswith("_energy"):
        return "energy"
    return "score" if op in ("dsm", "ssm", "ssm_vr", "ism") else "nc"


def time_rounds(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int,
                max_seconds: float) -> dict[str, float]:
    """Median ms of each function, timed in interleaved rounds (one call of each per round).

    Each round runs the functions in a fresh (seeded) random order: a function that runs
    right after a different, larger one refills the caches, and a fixed order would charge that
    to the same contender every time (measured: the same annealed-Langevin step read 9-15%
    slower when it always followed a training step than when it followed itself)."""
    now = clock(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    order = random.Random(0)
    start = time.perf_counter()
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            fn = fns[name]
            t0 = now()
            fn()
            sync(device)
            times[name].append(now() - t0)
        if time.perf_counter() - start > max_seconds and len(next(iter(times.values()))) >= 3:
            break
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def budget(first_ms: float, smoke: bool) -> tuple[int, int, float]:
    """(repeats, warm-up calls, seconds) for an operation whose first call took ``first_ms``."""
    if smoke:
        return 3, 1, 5.0
    if first_ms > 2000:
        return 3, 0, 120.0
    if first_ms > 200:
        return 7, 1, 60.0
    return 150, 5, 20.0


def run_shape(shape: str, device: torch.device, contenders: list[str], smoke: bool,
              operations: list[str] | None = None) -> dict[str, Any]:
    d, hidden, batch, label = SHAPES[shape]
    ops: dict[str, dict[str, peers.Op]] = {}
    result: dict[str, Any] = {"label": label, "d": d, "hidden": hidden, "batch": batch,
                              "contenders": {}, "floor_ms": {}, "ms": {}, "notes": {}, "valid": {}, "checks": {}}
    for module in contenders:
        c = peers.load(module)
        result["contenders"][c.name] = {"version": c.version, "missing": c.missing}
        if c.operations is None:
            continue
        ops[c.name] = c.operations(make_setup(d, batch, hidden, device))
        if c.checks is not None and not smoke:
            result["checks"][c.name] = c.checks(make_setup(d, batch, hidden, device))
    result["floor_ms"] = time_rounds(floors(make_setup(d, batch, hidden, device)), device, *budget(0.0, smoke))
    for op in operations or OPERATIONS:
        fns = {who: table[op] for who, table in ops.items() if op in table}
        if not fns:
            continue
        t0 = time.perf_counter()
        next(iter(fns.values())).fn()  # one call sets the budget: slow operations get fewer repeats
        first_ms = 1e3 * (time.perf_counter() - t0)
        ms = time_rounds({who: o.fn for who, o in fns.items()}, device, *budget(first_ms, smoke))
        result["ms"][op] = {who: ms[who] / fns[who].per for who in fns}
        result["notes"][op] = {who: o.note for who, o in fns.items() if o.note}
        result["valid"][op] = {who: o.valid for who, o in fns.items()}
        print(f"  {shape} {op}: " + ", ".join(f"{who} {v:.3g} ms" for who, v in result["ms"][op].items()), flush=True)
    return result


def summarise(result: dict[str, Any], ours: str = "scorematch") -> list[dict[str, Any]]:
    """One row per operation: ours in ms, x floor, the fastest correct peer and our ratio to it."""
    rows = []
    for op, by in result["ms"].items():
        floor = result["floor_ms"][network_of(op)]
        valid = result["valid"][op]
        peer_ms = {who: ms for who, ms in by.items() if who != ours and valid.get(who, True)}
        fastest = min(peer_ms, key=peer_ms.get) if peer_ms else None
        mine = by.get(ours)
        rows.append({
            "operation": op,
            "floor_ms": floor,
            "ms": by,
            "x_floor": None if mine is None else mine / floor,
            "fastest_peer": fastest,
            "vs_fastest_peer": None if (mine is None or fastest is None) else mine / peer_ms[fastest],
        })
    return rows


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    names = list(next(iter(payload["shapes"].values()))["contenders"])
    versions = next(iter(payload["shapes"].values()))["contenders"]
    out = [
        f"Measured {env['date']} on {where(env)} ({env['device']}, {env['threads']} thread(s), {env['clock']}), "
        f"torch {env['torch']}, "
        "python " + env["python"] + "; " + ", ".join(
            f"{n} {v['version']}" if v["version"] else f"{n} (not installed)" for n, v in versions.items()) + ".",
        "",
    ]
    footnotes: list[str] = []
    for shape in payload["shapes"].values():
        out += [f"**{shape['label']}**", ""]
        out.append("| operation | floor | " + " | ".join(names) + " | scorematch x floor | scorematch / fastest peer |")
        out.append("|---|" + "---:|" * (len(names) + 3))
        for row in shape["rows"]:
            op = row["operation"]
            cells = []
            for n in names:
                cell = fmt_ms(row["ms"].get(n))
                note = shape["notes"].get(op, {}).get(n)
                if cell and note:
                    footnotes.append(f"{shape['label']}, {LABELS[op]}, {n}: {note}")
                    cell += f" [{len(footnotes)}]"
                if cell and not shape["valid"][op].get(n, True):
                    cell += " (wrong result)"
                cells.append(cell)
            ratio = row["vs_fastest_peer"]
            vs = "" if ratio is None else f"{ratio:.2f} ({row['fastest_peer']})"
            xf = "" if row["x_floor"] is None else f"{row['x_floor']:.2f}"
            out.append(f"| {LABELS[op]} | {fmt_ms(row['floor_ms'])} | " + " | ".join(cells) + f" | {xf} | {vs} |")
        out.append("")
    if footnotes:
        out += ["Notes:", ""] + [f"{i}. {t}" for i, t in enumerate(footnotes, 1)] + [""]
    return "\n".join(out)


def run(device: torch.device, shapes: list[str], contenders: list[str], smoke: bool,
        operations: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"environment": environment(device), "shapes": {}}
    for shape in shapes:
        res = run_shape(shape, device, contenders, smoke, operations)
        res["rows"] = summarise(res)
        payload["shapes"][shape] = res
    payload["markdown"] = markdown(payload)
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every contender (default 1)")
    p.add_argument("--shapes", nargs="+", default=["toy", "mnist"], choices=sorted(SHAPES))
    p.add_argument("--contenders", nargs="+", default=peers.CONTENDERS, choices=peers.CONTENDERS)
    p.add_argument("--ops", nargs="+", default=None, choices=OPERATIONS,
                   help="time only these operations (default: all); write them with --out, not over the full table")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 3 repeats, no checks: does it all run?")
    p.add_argument("--out", default=None, help="results name under benchmarks/results/ (default compare[_DEVICE])")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = ["smoke"] if args.smoke else args.shapes
    payload = run(device, shapes, args.contenders, args.smoke, args.ops)
    suffix = ("" if device.type == "cpu" else f"_{device.type}") + ("_smoke" if args.smoke else "")
    name = args.out or f"compare{suffix}"
    write(name, payload, payload["markdown"])
    print(payload["markdown"])
    return payload


if __name__ == "__main__":
    main()
