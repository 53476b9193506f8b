"""Where a run executes: its device (asked for, checked, resolved), its CPU threads, and a
record of the software it ran with (scorematch, torch and Python versions, the git commit of
a source checkout), for run.json and the line every command prints when it starts."""

from __future__ import annotations

import contextlib
import math
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from scorematch.errors import ConfigError

#: CPU threads when none are asked for. Measured on a 2-core machine (docs/your-data.md): while
#: other processes loaded it, 300 DSM steps of an MLP took 4-14 s on one thread and 20-120 s on
#: two (the digits U-Net: 11-17 s against 98-143 s); idle, two threads saved at most a third.
DEFAULT_THREADS = 1


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a device
    that is not there is a ConfigError that says which ones are."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu "
                              "(or auto)")
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' was asked for but Apple's Metal (MPS) backend is not available here "
                          "(it needs macOS on Apple silicon and a torch built with MPS); use --device cpu or auto")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads to ``threads`` (None: DEFAULT_THREADS); returns the number."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    n = DEFAULT_THREADS if threads is None else threads
    torch.set_num_threads(n)
    return n


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def git_commit() -> str | None:
    """The commit of the scorematch source checkout this code runs from (``+dirty`` when it has
    uncommitted changes), or None for an installed package."""
    here = Path(__file__).resolve().parent
    root = next((p for p in here.parents if (p / ".git").exists()), None)
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def describe(device: torch.device, threads: int) -> dict[str, Any]:
    """The software and hardware of this process: the ``environment`` of run.json."""
    from scorematch._version import __version__

    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "scorematch": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": name, "threads": threads, "git_commit": git_commit(),
    }


def start_line(command: str, device: torch.device, threads: int, model: torch.nn.Module | None = None,
               data_shape: tuple[int, ...] | None = None, extra: str = "") -> str:
    """``scorematch train: device cpu, 1 thread, model ScoreMLP (34,946 parameters), data (8000, 2)``."""
    parts = [f"device {device}", f"{threads} thread{'s' if threads != 1 else ''}"]
    if model is not None:
        inner = getattr(model, "model", model)
        parts.append(f"model {type(inner).__name__} ({n_parameters(model):,} parameters)")
    if data_shape is not None:
        parts.append(f"data {tuple(data_shape)}")
    if extra:
        parts.append(extra)
    return f"scorematch {command}: " + ", ".join(parts)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)




class PhaseTimer:
    """Wall-clock seconds per named phase (``with timer.phase("setup"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    def get(self, name: str) -> float:
        return self.seconds.get(name, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)


class StopRequest:
    """Turns SIGINT, SIGTERM, SIGHUP and SIGQUIT into a flag the loop checks, so it can
    checkpoint and exit cleanly (with 128 + the signal number)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        old = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                old[s] = signal.signal(s, self._handle)
        except ValueError:
            old = {}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum


def record(old: Any, timer: PhaseTimer, device: torch.device, world_size: int) -> dict[str, Any]:
    """run.json's ``environment`` after one more start of a run: the software, device and threads
    of this start (``describe``), and the wall time per phase (setup, train, checkpoints) and the
    number of starts summed with ``old`` (the previous record; ignored where it is malformed)."""
    old = old if isinstance(old, dict) else {}
    before = old.get("wall_seconds") if isinstance(old.get("wall_seconds"), dict) else {}
    wall = {k: v for k, v in before.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}
    for k, v in timer.seconds.items():
        wall[k] = round(wall.get(k, 0.0) + v, 3)
    starts = old.get("starts")
    starts = starts if isinstance(starts, int) and not isinstance(starts, bool) and starts >= 0 else 0
    return {**describe(device, torch.get_num_threads()), "wall_seconds": wall, "starts": starts + 1,
            "world_size": world_size}
