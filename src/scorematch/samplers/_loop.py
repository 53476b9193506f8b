"""What every sampler's loop shares: the callback, the progress reporter, the trajectory and its
memory guard, and the count of score evaluations.

A sampler makes one ``Loop`` and, per step, calls ``loop.step(info)`` (the callback gets
``info`` with ``i`` and ``nfe`` added; the progress reporter advances) and ``loop.snapshot(x)``
where its trajectory keeps a state; ``loop.finish(x)`` closes the reporter and returns x, or
(x, trajectory) with the snapshots stacked on a new first axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch._progress import progress as progress_reporter
from scorematch.errors import ConfigError

#: ``callback(info)``: once per step, ``info`` a dict (see ``scorematch.samplers``)
Callback = Callable[[dict[str, Any]], None]
#: trajectories larger than this many bytes are refused before anything is allocated
MAX_TRAJECTORY_BYTES = 2 * 1024**3


def check_trajectory_size(n_snapshots: int, shape: Sequence[int], dtype: torch.dtype, what: str) -> None:
    """ConfigError before allocating a trajectory of ``n_snapshots`` states of ``shape`` that would
    need more than ``MAX_TRAJECTORY_BYTES``."""
    size = n_snapshots * math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if size > MAX_TRAJECTORY_BYTES:
        raise ConfigError(
            f"{what}: a trajectory of {n_snapshots} snapshots of shape {tuple(shape)} needs "
            f"{size / 1024**3:.1f} GiB (limit {MAX_TRAJECTORY_BYTES / 1024**3:.0f} GiB); keep fewer "
            "snapshots (trajectory_every, n_snapshots), fewer chains, or return_trajectory=False"
        )


def check_callback(callback: Any) -> Callback | None:
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be callable with one dict argument, got {type(callback).__name__}")
    return callback


class Loop:
    """The callback, progress reporter (``total`` steps of ``unit``, None if unknown) and
    trajectory (at most ``snapshots`` states, checked against ``MAX_TRAJECTORY_BYTES``) of one
    sampler run labelled ``label``. ``nfe`` counts score evaluations: the sampler adds to it."""

    def __init__(self, label: str, x: Tensor, total: int | None, callback: Callback | None, progress: bool,
                 return_trajectory: bool, snapshots: int, unit: str = "step") -> None:
        self.callback = check_callback(callback)
        self.traj: list[Tensor] | None = None
        if return_trajectory:
            check_trajectory_size(snapshots, x.shape, x.dtype, label)
            self.traj = []
        self.bar = progress_reporter(total, label, progress, unit=unit)
        self.nfe = 0
        self.i = 0

    def snapshot(self, x: Tensor) -> None:
        """Keep a copy of ``x`` in the trajectory (when one is returned)."""
        if self.traj is not None:
            self.traj.append(x.clone())

    def step(self, info: dict[str, Any], advance: int = 1) -> None:
        """One step done: ``callback({"i", "nfe", **info})`` and the reporter advanced by ``advance``."""
        if self.callback is not None:
            self.callback({"i": self.i, "nfe": self.nfe, **info})
        self.i += 1
        if self.bar is not None and advance:
            self.bar.update(advance)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Close the reporter; x, or (x, the stacked trajectory)."""
        self.close()
        return (x, torch.stack(self.traj)) if self.traj is not None else x

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
