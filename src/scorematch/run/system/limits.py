"""Absurd sizes refused before anything is allocated.

Each estimate is a lower bound on the memory a request needs (float32 numbers it must hold at
once, whatever the model); when it exceeds the memory of the device (physical memory plus swap
on the CPU, the GPU's memory on CUDA) the request cannot succeed, and a ConfigError says so
with the estimate, instead of an allocator traceback or a machine swapping to a halt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import nn

from scorematch.errors import ConfigError

FLOAT = 4


def device_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory the device has (None when it cannot be told)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return int(total) + _swap_bytes()


def _swap_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def check_fits(what: str, nbytes: float, device: torch.device | str, advice: str) -> None:
    """ConfigError when ``nbytes`` (a lower bound of what ``what`` needs) exceeds the device."""
    total = device_memory(device)
    if total is not None and nbytes > total:
        raise ConfigError(f"{what} needs at least {fmt_bytes(nbytes)} of memory, more than the "
                          f"{fmt_bytes(total)} of this machine ({torch.device(device).type}); {advice}")


def parameter_count(build: Callable[[], nn.Module]) -> int:
    """Number of numbers in the state of the module ``build()`` returns, built on the meta
    device (no memory allocated); 0 when the model cannot be built there."""
    try:
        with torch.device("meta"):
            module: nn.Module = build()
    except Exception:  # noqa: BLE001 - a model that needs real tensors to build is simply not estimated
        return 0
    return sum(t.numel() for t in module.state_dict().values())


def check_training(batch_size: int, sample_shape: tuple[int, ...], n_params: int, world_size: int,
                   device: torch.device | str) -> None:
    """A step holds at least six batch-sized tensors per process (input, noise, noisy input, the
    model's output, their gradients) and five copies of the parameters (weights, gradient, Adam's
    two moments, EMA)."""
    per_rank = -(-batch_size // max(1, world_size))
    need = FLOAT * (6 * per_rank * math.prod(sample_shape) + 5 * n_params)
    check_fits(f"--batch-size {batch_size} with {n_params} model parameters", need, device,
               "use a smaller --batch-size or a smaller model")


def check_data(n: int, dim: int, device: torch.device | str = "cpu") -> None:
    """A toy of ``n`` points in ``dim`` dimensions is drawn in float64 and kept in float32."""
    check_fits(f"--n-data {n} ({dim}-D points)", (8 + FLOAT) * n * dim, device, "use a smaller --n-data")


def check_sampling(n: int, sample_shape: tuple[int, ...], device: torch.device | str) -> None:
    """A sampler holds at least four tensors of the samples' size (state, noise, score, update)."""
    check_fits(f"--n {n} samples of shape {tuple(sample_shape)}", 4 * FLOAT * n * math.prod(sample_shape), device,
               "draw fewer samples (--n), or several batches with different --seed")
