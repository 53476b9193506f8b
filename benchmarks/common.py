"""Timing helpers shared by the benchmarks: warm-up, then the median of many repeats."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def clock(device: torch.device) -> Callable[[], float]:
    """The timer for ``device``: the process's CPU time on a CPU at one thread (time this process
    was not running, while the OS ran someone else's, is not counted, so a shared machine's noise
    shrinks), else wall time."""
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.process_time
    return time.perf_counter


def clock_name(device: torch.device) -> str:
    return "process CPU time" if clock(device) is time.process_time else "wall time"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], Any], device: torch.device, repeats: int = 20, warmup: int = 3,
           max_seconds: float = 20.0) -> float:
    """Median time of ``fn`` by ``clock(device)`` in milliseconds (after ``warmup`` calls), at most
    ``max_seconds``."""
    now = clock(device)
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (time.perf_counter() - start < max_seconds or len(times) < 3):
        t0 = now()
        fn()
        sync(device)
        times.append(now() - t0)
    return 1e3 * statistics.median(times)


def edm_train_step(model: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """One EDM training step on ``x``'s device: the loss of ``net`` (the model or its compiled form)
    under bf16 autocast when ``bf16``, backward, gradient clipping at norm 1, Adam (lr 1e-4) on
    ``model``'s parameters; the noise from one generator seeded 0."""
    from scorematch.objectives import edm

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator(device=x.device).manual_seed(0)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = edm(net, x, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info = {
        "date": datetime.date.today().isoformat(),
        "clock": clock_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type, with the cores this
    process may use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def write(name: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)


def where(env: dict[str, Any]) -> str:
    """The device a result was measured on, for its heading: the GPU's name or CPU (model, cores)."""
    return env.get("gpu") or f"CPU ({env['cpu']})"


def fmt_ms(ms: float | None) -> str:
    """A duration for a table: '' for none, seconds from 1000 ms up, 3 significant digits."""
    if ms is None:
        return ""
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
