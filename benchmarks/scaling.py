"""How each objective's cost grows with the data: time and peak memory against D and N.

    python -m benchmarks.scaling [--threads 1] [--device cpu] [--dims 2 8 ...] [--smoke]

One training step (loss + backward) of exact ISM by the structured trace (in the network's
widths; what method "auto" runs for these MLPs) and by the generic one (D basis vectors in a
batched reverse mode; also with ``low_memory``: each chunk of the trace recomputed in the
backward), SSM, SSM-VR and DSM on an MLP D-256-256-D at batch 64, for D in {2, 8, 32, 128, 512,
784, 3072}, next to the floor (forward + backward, MSE);
ESM-KDE on a 2-D batch of 256 against reference sets of N points. Peak memory is the most the
step holds above what was held before it: on the GPU torch's peak-allocation counter, on the CPU
the process's peak resident set (Linux: VmHWM, reset through /proc/self/clear_refs, with freed
heap handed back by malloc_trim first). Growth exponents are least-squares slopes of log(ms)
against log(D) (or log(N)) over the upper half of the range. Writes
benchmarks/results/scaling[_DEVICE].json, .md, .png and _ism.png (exact ISM: generic against
structured trace, log-log).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, clock, environment, fmt_ms, markdown_table, sync, where, write
from scorematch import objectives as O
from scorematch.models import ScoreMLP

DIMS = [2, 8, 32, 128, 512, 784, 3072]
NS = [256, 1024, 4096, 16384, 65536]
STEPS: dict[str, Callable[[ScoreMLP, torch.Tensor, torch.Generator], torch.Tensor]] = {
    "floor": lambda net, x, g: ((net(x) - x) ** 2).mean(),
    "DSM": lambda net, x, g: O.dsm(net, x, 0.1, generator=g),
    "SSM": lambda net, x, g: O.ssm(net, x, generator=g),
    "SSM-VR": lambda net, x, g: O.ssm(net, x, variance_reduced=True, generator=g),
    "ISM (exact)": lambda net, x, g: O.ism(net, x),  # method "auto": the structured trace for these MLPs
    "ISM (exact, generic)": lambda net, x, g: O.ism(net, x, method="vjp"),
    "ISM (exact, generic, low_memory)": lambda net, x, g: O.ism(net, x, method="vjp", low_memory=True),
}
ISM = ["ISM (exact)", "ISM (exact, generic)", "ISM (exact, generic, low_memory)"]
ISM_LABELS = {"floor": "floor", ISM[0]: "structured trace (auto)", ISM[1]: "generic trace (batched vjp)",
              ISM[2]: "generic trace, low_memory"}


class PeakMemory:
    """Peak bytes held above the level at ``start()``: CUDA allocator counter, or Linux VmHWM."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc = None
        if device.type == "cpu":
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.libc = None
        self.base = 0

    @property
    def available(self) -> bool:
        return self.device.type == "cuda" or self.libc is not None

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise OSError(f"no {field} in /proc/self/status")

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.libc is not None:
            self.libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = self._status("VmRSS")

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.libc is None:
            return None
        return max(0, self._status("VmHWM") - self.base)


def measure(step: Callable[[], None], device: torch.device, mem: PeakMemory, smoke: bool) -> tuple[float, int | None]:
    """(median ms, peak bytes): one warm-up call, then repeats within a time budget."""
    now = clock(device)
    t0 = now()
    step()
    sync(device)
    first = now() - t0
    repeats = 2 if smoke else (1 if first > 20 else 3 if first > 2 else 30)
    times, peaks = [], []
    for _ in range(repeats):
        mem.start()
        t0 = now()
        step()
        sync(device)
        times.append(now() - t0)
        peaks.append(mem.peak())
    peak = None if peaks[0] is None else max(peaks)
    return 1e3 * statistics.median(times), peak


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def upper_half(xs: list[int]) -> list[int]:
    return xs[len(xs) // 2:] if len(xs) > 2 else xs


def run(device: torch.device, dims: list[int], ns: list[int], hidden: int, batch: int, smoke: bool) -> dict[str, Any]:
    mem = PeakMemory(device)
    g = torch.Generator(device=device).manual_seed(0)
    by_d: dict[str, dict[int, dict[str, float | int | None]]] = {k: {} for k in STEPS}
    for d in dims:
        torch.manual_seed(0)
        net = ScoreMLP(d, hidden=hidden, depth=2).to(device)
        x = torch.randn(batch, d, device=device)
        for name, loss in STEPS.items():
            def step(loss=loss, net=net, x=x) -> None:
                net.zero_grad(set_to_none=True)
                loss(net, x, g).backward()

            ms, peak = measure(step, device, mem, smoke)
            by_d[name][d] = {"ms": ms, "peak_bytes": peak}
            print(f"  D={d} {name}: {ms:.3g} ms, peak {peak and peak / 2**20:.3g} MiB", flush=True)
    by_n: dict[int, dict[str, float | int | None]] = {}
    torch.manual_seed(0)
    net2 = ScoreMLP(2, hidden=hidden, depth=2).to(device)
    x2 = torch.randn(256, 2, device=device)
    for n in ns:
        ref = torch.randn(n, 2, device=device)

        def kde_step(ref=ref) -> None:
            net2.zero_grad(set_to_none=True)
            O.esm_kde(net2, x2, ref, 0.3).backward()

        ms, peak = measure(kde_step, device, mem, smoke)
        by_n[n] = {"ms": ms, "peak_bytes": peak}
        print(f"  ESM-KDE N={n}: {ms:.3g} ms, peak {peak and peak / 2**20:.3g} MiB", flush=True)

    ism_ratio = {d: by_d["ISM (exact, generic)"][d]["ms"] / by_d["floor"][d]["ms"] for d in dims}
    res = {
        "environment": environment(device),
        "network": f"MLP D-{hidden}-{hidden}-D, SiLU, batch {batch}; ESM-KDE: MLP 2-{hidden}-{hidden}-2, batch 256",
        "memory": "CUDA peak allocated" if device.type == "cuda" else "peak RSS above the step's start (VmHWM)",
        "by_dim": {k: {str(d): v for d, v in vals.items()} for k, vals in by_d.items()},
        "esm_kde_by_n": {str(n): v for n, v in by_n.items()},
        "ism_x_floor_per_dim": {str(d): r / d for d, r in ism_ratio.items()},
    }
    return res | growth(res)


def growth(res: dict[str, Any]) -> dict[str, Any]:
    """Growth exponents over the upper half of the range: time, time / floor and peak memory
    against D; ESM-KDE's time and memory against N."""
    dims = sorted(int(d) for d in res["by_dim"]["floor"])
    ns = sorted(int(n) for n in res["esm_kde_by_n"])
    upper, upper_n = upper_half(dims), upper_half(ns)
    floor = [res["by_dim"]["floor"][str(d)]["ms"] for d in upper]

    def peak_slope(vals: dict[str, Any], xs: list[int]) -> float | None:
        peaks = [vals[str(x)]["peak_bytes"] for x in xs]
        return slope(xs, peaks) if all(p for p in peaks) else None

    exponents: dict[str, dict[str, float | None]] = {}
    for name, vals in res["by_dim"].items():
        ms = [vals[str(d)]["ms"] for d in upper]
        exponents[name] = {
            "ms_vs_D": slope(upper, ms),
            "x_floor_vs_D": slope(upper, [a / b for a, b in zip(ms, floor, strict=True)]),
            "peak_vs_D": peak_slope(vals, upper),
        }
    kde = res["esm_kde_by_n"]
    exponents["ESM-KDE"] = {"ms_vs_N": slope(upper_n, [kde[str(n)]["ms"] for n in upper_n]),
                            "peak_vs_N": peak_slope(kde, upper_n)}
    return {"exponents": exponents, "fit_range": {"D": upper, "N": upper_n}}


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    dims = sorted(int(d) for d in res["by_dim"]["floor"])

    def cell(v: dict[str, Any]) -> str:
        peak = v["peak_bytes"]
        if peak is None:
            mib = ""
        else:
            mib = f", {peak / 2**30:.3g} GiB" if peak >= 2**30 else f", {peak / 2**20:.3g} MiB"
        return f"{fmt_ms(v['ms'])}{mib}"

    rows = [[name] + [cell(res["by_dim"][name][str(d)]) for d in dims] for name in res["by_dim"]]
    kde = res["exponents"]["ESM-KDE"]
    out = [
        f"Measured {env['date']} on {where(env)} ({env['threads']} thread(s), "
        f"{env['clock']}), "
        f"torch {env['torch']}. {res['network']}. Time (median) and peak memory ({res['memory']}) of one "
        "training step:",
        "",
        markdown_table(["step"] + [f"D={d}" for d in dims], rows),
        "ESM-KDE against the reference-set size N: "
        + ", ".join(f"N={n}: {cell(v)}" for n, v in res["esm_kde_by_n"].items()) + ".",
        "",
        f"Growth exponents over D in {res['fit_range']['D']} (slope of log ms; of log(ms / floor ms); of log "
        "peak memory): " + "; ".join(
            f"{k} {v['ms_vs_D']:.2f}, {v['x_floor_vs_D']:+.2f}, {_exp(v['peak_vs_D'])}"
            for k, v in res["exponents"].items() if "ms_vs_D" in v)
        + f"; ESM-KDE over N in {res['fit_range']['N']}: time {kde['ms_vs_N']:.2f}, memory {_exp(kde['peak_vs_N'])}.",
        "",
        "Generic exact ISM / floor, divided by D: " + ", ".join(
            f"D={d}: {r:.2f}" for d, r in res["ism_x_floor_per_dim"].items()) + ".",
        "",
        "Exact ISM by the structured trace (method \"auto\") / floor: " + ", ".join(
            f"D={d}: {res['by_dim'][ISM[0]][str(d)]['ms'] / res['by_dim']['floor'][str(d)]['ms']:.2f}"
            for d in dims) + ".",
        "",
    ]
    return "\n".join(out)


def _exp(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, vals in res["by_dim"].items():
        dims = sorted(int(d) for d in vals)
        style = "k--" if name == "floor" else "o-"
        axes[0].plot(dims, [vals[str(d)]["ms"] for d in dims], style, label=name)
        if vals[str(dims[0])]["peak_bytes"] is not None:
            axes[1].plot(dims, [max(vals[str(d)]["peak_bytes"], 1) / 2**20 for d in dims], style, label=name)
    ns = sorted(int(n) for n in res["esm_kde_by_n"])
    axes[2].plot(ns, [res["esm_kde_by_n"][str(n)]["ms"] for n in ns], "o-", color="C5", label="ESM-KDE")
    titles = ["one training step: time", "one training step: peak memory", "ESM-KDE against N (D = 2)"]
    ylabels = ["ms", "MiB", "ms"]
    for ax, title, yl, xl in zip(axes, titles, ylabels, ["D", "D", "reference points N"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    env = res["environment"]
    fig.suptitle(f"scorematch scaling, {where(env)}, {env['threads']} thread(s), "
                 f"torch {env['torch']}, {env['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ism(res: dict[str, Any], path: Path) -> None:
    """Exact ISM against D, log-log: time, and time over the floor's, generic against structured trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    floor = res["by_dim"]["floor"]
    dims = sorted(int(d) for d in floor)
    styles = {"floor": "k--", ISM[0]: "o-", ISM[1]: "s-", ISM[2]: "^:"}
    for name, style in styles.items():
        vals = res["by_dim"][name]
        axes[0].plot(dims, [vals[str(d)]["ms"] for d in dims], style, label=ISM_LABELS[name])
        if name != "floor":
            axes[1].plot(dims, [vals[str(d)]["ms"] / floor[str(d)]["ms"] for d in dims], style,
                         label=ISM_LABELS[name])
    for ax, title, yl in zip(axes, ["one training step", "one training step / floor"], ["ms", "x floor"],
                             strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("D")
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    env = res["environment"]
    fig.suptitle(f"exact ISM, {res['network'].split(';')[0]}: {where(env)}, {env['threads']} thread(s), {env['date']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dims", type=int, nargs="+", default=DIMS)
    p.add_argument("--ns", type=int, nargs="+", default=NS)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="D in {2, 8, 32}, N in {64, 256}, hidden 16, 2 repeats")
    p.add_argument("--out", default=None, help="results name under benchmarks/results/ (default scaling[_DEVICE])")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.smoke:
        args.dims, args.ns, args.hidden, args.batch = [2, 8, 32], [64, 256], 16, 16
    res = run(device, args.dims, args.ns, args.hidden, args.batch, args.smoke)
    res["markdown"] = markdown(res)
    suffix = ("" if device.type == "cpu" else f"_{device.type}") + ("_smoke" if args.smoke else "")
    name = args.out or f"scaling{suffix}"
    write(name, res, res["markdown"])
    plot(res, (RESULTS / name).with_suffix(".png"))
    plot_ism(res, RESULTS / f"{name}_ism.png")
    print(res["markdown"])
    return res


if __name__ == "__main__":
    main()
