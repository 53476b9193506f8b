"""Data-parallel training on PyTorch's DistributedDataParallel, launched by torchrun.

``torchrun --nproc_per_node=N -m scorematch train ...`` (or ``scorematch train --nproc N``,
which runs exactly that) starts N processes; each one calls ``init_from_env``, which joins the
process group (gloo on CPU, NCCL on CUDA) from torchrun's environment variables. Every rank
draws the same global batch of indices from the shared data generator and trains on its own
contiguous shard of it; DDP averages the gradients, so a step equals a single-process step on
the global batch (up to the noise draws, which each rank takes from its own generator).
Rank 0 alone writes checkpoints, logs and sample grids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from scorematch.errors import ConfigError

#: environment variable through which ``launch`` hands the command line to every process
ARGV_ENV = "SCOREMATCH_ARGV"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a 1-process context.

    Returns the context and the device this rank uses (cuda:LOCAL_RANK on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local), device


def shard(global_batch: int, ctx: DistContext) -> slice:
    """This rank's contiguous rows of a global batch; the batch must split evenly."""
    if global_batch % ctx.world_size:
        raise ConfigError(
            f"batch size {global_batch} does not split evenly over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    per = global_batch // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def all_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; a no-op on one process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's rows (rank order); all ranks must pass the same shape."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class ScoreModule(nn.Module):
    """Makes ``forward`` the score, so DDP (which hooks ``forward``) wraps ``score`` for every
    parameterisation, energy models included (their forward is the energy)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model.score(*args)

    def linear_ends(self, x: torch.Tensor, *conditioning: torch.Tensor) -> Any:
        """The wrapped model's linear ends (None without): its structured exact trace also under DDP."""
        declare = getattr(self.model, "linear_ends", None)
        return declare(x, *conditioning) if callable(declare) else None


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The module the objectives train: DDP(ScoreModule(model)) on several processes, else model."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(ScoreModule(model), device_ids=ids)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m scorematch ARGV`` under torchrun with ``nproc`` processes on this machine."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "scorematch"]
    print(f"scorematch: launching {' '.join(cmd[1:])} {' '.join(argv)}", file=sys.stderr)
    # The arguments travel in the environment: torchrun's own parser would claim abbreviations
    # such as --n (ambiguous with its --nnodes/--nproc-per-node).
    return subprocess.call(cmd, env={**os.environ, ARGV_ENV: json.dumps(argv)})
