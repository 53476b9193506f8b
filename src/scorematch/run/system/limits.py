"""Absurd sizes refused before anything is allocated: the one size check of every command and
of the Python API.

Each estimate is a lower bound on the memory a request needs (float32 numbers it must hold at
once: the samples, and for a model its widest layer per sample); when it exceeds the memory of
the device (physical memory plus swap on the CPU, the GPU's memory on CUDA) the request cannot
succeed, and a ConfigError says so with the estimate and the bound, instead of an allocator
traceback or a machine swapping to a halt. Counts of steps (sampler steps, steps per noise
level, noise levels) are bounded by ``MAX_STEPS``; a file is read only when it fits in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from scorematch.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so that config validation (and --help) stays light
    import torch
    from torch import nn

FLOAT = 4
#: the most steps (sampler steps, steps per noise level, noise levels) scorematch takes
MAX_STEPS = 10**6
#: the sampler options that count steps, and what they count
STEP_OPTIONS = {"n_steps": "steps (or noise levels)", "steps_per_sigma": "steps per noise level"}


def device_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory the device has (None when it cannot be told): on the CPU the physical
    memory plus swap, or less where this process is limited to less (``_process_limits``)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _bound(device)[0]


def _bound(device: torch.device | str) -> tuple[int | None, str]:
    """(bytes, whose): the memory a request on ``device`` may use and what sets it."""
    import torch

    if torch.device(device).type == "cuda":
        return device_memory(device), "of this GPU"
    try:
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) + _swap_bytes()
    except (ValueError, OSError, AttributeError):
        return None, ""
    return min([(total, "of this machine"), *_process_limits()])


def _process_limits() -> list[tuple[int, str]]:
    """The memory limits of this process below the machine's: its address-space limit
    (``ulimit -v``, RLIMIT_AS) and its control group's memory.max (cgroup v2)."""
    found = []
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            found.append((int(soft), "this process may use (its ulimit -v)"))
    except (ImportError, OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            found.append((int(text), "this process may use (its cgroup's memory.max)"))
    except OSError:
        pass
    return found


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
    total, whose = _bound(device)
    if total is not None and nbytes > total:
        raise ConfigError(f"{what} needs at least {fmt_bytes(nbytes)} of memory, more than the "
                          f"{fmt_bytes(total)} {whose} ({str(device).partition(':')[0]}); {advice}")


def parameter_count(build: Callable[[], nn.Module]) -> int:
    """Number of numbers in the state of the module ``build()`` returns, built on the meta
    device (no memory allocated); 0 when the model cannot be built there."""
    import torch

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


def check_steps(flag: str, value: object, what: str = "steps") -> None:
    """ConfigError when an integer count of steps or noise levels exceeds ``MAX_STEPS``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_STEPS:
        raise ConfigError(f"{flag} {value} is more than {MAX_STEPS} {what}, the most scorematch takes; use fewer")


def check_sampler_options(options: dict[str, object]) -> None:
    """The step counts among a sampler's options (``STEP_OPTIONS``), bounded by ``MAX_STEPS``."""
    for key, what in STEP_OPTIONS.items():
        check_steps("--" + key.replace("_", "-"), options.get(key), what)


def activation_width(model: nn.Module | None) -> int:
    """The widest layer of ``model``: the most numbers per sample that one of its linear layers
    (in_features + out_features: its input and output exist at once) or convolutions
    (in_channels + out_channels, a lower bound: times the pixels they keep) holds."""
    from torch import nn

    widest = 0
    for m in model.modules() if model is not None else ():
        if isinstance(m, nn.Linear):
            widest = max(widest, int(m.in_features) + int(m.out_features))
        elif isinstance(m, nn.modules.conv._ConvNd):
            widest = max(widest, int(m.in_channels) + int(m.out_channels))
    return widest


def check_sampling(n: int, sample_shape: tuple[int, ...], device: torch.device | str,
                   model: nn.Module | None = None, options: dict[str, object] | None = None) -> None:
    """A sampler holds at least four tensors of the samples' size (state, noise, score, update)
    and, through ``model``, the output of its widest layer for every sample at once; its step
    counts among ``options`` are bounded by ``MAX_STEPS``."""
    check_sampler_options(options or {})
    per_sample = 4 * math.prod(sample_shape) + activation_width(model)
    check_fits(f"--n {n} samples of shape {tuple(sample_shape)}", FLOAT * n * per_sample, device,
               "draw fewer samples (--n), or several batches with different --seed")


def check_request(model: nn.Module, n: int, sample_shape: object, device: torch.device | str,
                  options: dict[str, object] | None = None) -> None:
    """What every command that samples a trained model checks before any work: ``n`` a positive
    integer, its samples and the model's activations within the device's memory, and the step
    counts of the sampler options within ``MAX_STEPS``."""
    from scorematch._checks import positive_int

    n = positive_int("n", n)
    shape = tuple(int(d) for d in sample_shape) if isinstance(sample_shape, list | tuple) else ()
    check_sampling(n, shape, device, model, options)


#: the most training steps: a checkpoint's file name holds the step in at most 12 digits
MAX_TRAIN_STEPS = 10**12 - 1
#: bytes a logged row of the loss history (step, loss, gradient norm, rate) takes in memory, at least
LOG_ROW_BYTES = 300


def check_train_steps(steps: int, log_every: int, device: torch.device | str = "cpu") -> None:
    """``steps`` at most ``MAX_TRAIN_STEPS``, and the loss history ``train`` returns (one row per
    ``log_every`` steps) within memory."""
    if isinstance(steps, int) and steps > MAX_TRAIN_STEPS:
        raise ConfigError(f"--steps {steps} is more than {MAX_TRAIN_STEPS}, the most a run folder records "
                          "(checkpoint names hold 12 digits); train fewer steps")
    rows = steps // max(1, log_every) + 1
    check_fits(f"--steps {steps} with --log-every {log_every} ({rows} rows of loss history)", LOG_ROW_BYTES * rows,
               device, "log less often (a larger --log-every) or train fewer steps")


def check_levels(n_levels: int | None) -> None:
    """A noise schedule of ``n_levels`` levels: bounded by ``MAX_STEPS`` (sampling walks every level)."""
    check_steps("--n-levels", n_levels, "noise levels")


def check_items(n: int, item_shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
    """A data set of ``n`` items of ``item_shape`` given in memory is stacked once (and
    standardised: two float32 copies)."""
    check_fits(f"a data set of {n} items of shape {tuple(item_shape)}", 2 * FLOAT * n * math.prod(item_shape),
               device, "give fewer items (a subset of the data set)")


def file_too_big(path: object, size: int, what: str) -> str | None:
    """Why a file of ``size`` bytes that is read whole (its bytes, then what is parsed from them:
    twice its size) cannot be read on this machine, or None when it fits."""
    total, whose = _bound("cpu")
    if total is not None and 2 * size > total:
        return (f"{path} is {fmt_bytes(size)}: reading it needs at least {fmt_bytes(2 * size)} of memory, more than "
                f"the {fmt_bytes(total)} {whose}; it is not a {what} scorematch wrote for it: restore it")
    return None
