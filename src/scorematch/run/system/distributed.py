"""Data-parallel training on PyTorch's DistributedDataParallel, launched by torchrun.

``torchrun --nproc_per_node=N -m scorematch train ...`` (or ``scorematch train --nproc N``, whose
launcher, ``scorematch.run.system.launcher``, sets the same environment) starts N processes; each one
calls ``init_from_env``, which joins the process group (gloo on CPU, NCCL on CUDA) from the
environment variables, with a timeout on every collective operation. Every rank
draws the same global batch of indices from the shared data generator and trains on its own
contiguous shard of it; DDP averages the gradients, so a step equals a single-process step on
the global batch (up to the noise draws, which each rank takes from its own generator).
Rank 0 alone writes checkpoints, logs and sample grids; ``on_main`` runs such a step on rank 0
and hands its result, or its error, to every rank.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from scorematch.errors import ConfigError, ScoreMatchError, TrainingError
from scorematch.run.system.launcher import ARGV_ENV, launch

__all__ = ["ARGV_ENV", "CollectiveError", "DistContext", "init_from_env", "launch", "on_main", "shard", "wrap"]
#: seconds a collective operation waits for the other processes (far below gloo's 30 minutes)
DEFAULT_TIMEOUT = 300.0
T = TypeVar("T")


class CollectiveError(TrainingError):
    """Another process stopped answering (hung, stopped or killed) or its connection broke."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device, timeout: float = DEFAULT_TIMEOUT) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a 1-process context.

    Returns the context and the device this rank uses (cuda:LOCAL_RANK on CUDA). Every collective
    operation waits at most ``timeout`` seconds for the other processes, then fails with a
    CollectiveError (a hung, stopped or killed peer ends the run instead of blocking it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(timeout=timeout), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    ctx = DistContext(rank, world, local, timeout)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        collective(lambda: dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout)), ctx)
    return ctx, device


_MARKERS = ("gloo", "nccl", "timed out", "timeout", "connection", "broken pipe", "pair closure", "peer", "socket",
            "store")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` (from a collective operation, or from DDP's backward) is a lost peer."""
    return isinstance(err, RuntimeError) and not isinstance(err, CollectiveError) and any(
        m in str(err).lower() for m in _MARKERS)


def _detail(err: BaseException, limit: int = 160) -> str:
    """The last line of a gloo/NCCL error without its source locations ("[/path/to/pair.cc:534]"),
    shortened at a word boundary to at most ``limit`` characters."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
    line = " ".join(re.sub(r"\[[^\]\s]*\.(?:cc|cpp|cu|c|h|hpp):\d+\]", " ", line).split())
    if len(line) > limit:
        cut = line[:limit].rsplit(" ", 1)[0]
        line = cut + " ..."
    return line or type(err).__name__


def collective_error(err: BaseException, ctx: DistContext) -> CollectiveError:
    first = _detail(err)
    timed = "timed out" in first.lower() or "timeout" in first.lower()
    why = (f"no answer within the collective timeout of {ctx.timeout:g} s" if timed
           else "the connection to another process broke")
    return CollectiveError(
        f"process {ctx.rank} of {ctx.world_size} lost contact with the others: {why} ({first}); another "
        "process hung, was stopped or died. The last checkpoint is kept: continue with --resume "
        "(--collective-timeout sets the wait)"
    )


def collective(fn: Callable[[], T], ctx: DistContext) -> T:
    """``fn()``, a collective operation; a lost peer becomes a CollectiveError."""
    try:
        return fn()
    except RuntimeError as err:
        if is_collective_failure(err):
            raise collective_error(err, ctx) from None
        raise


def on_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """``fn()`` on rank 0 only, its result on every rank. A ScoreMatchError it raises is raised
    on every rank (rank 0's own; the same type and message elsewhere), so no rank waits for
    a rank that has failed."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except ScoreMatchError as err:
            error = err
    if ctx.enabled:
        box = [(result, None if error is None else (type(error), str(error)))]
        collective(lambda: dist.broadcast_object_list(box, src=0), ctx)
        result, failed = box[0]
        if failed is not None and error is None:
            raise failed[0](failed[1])
    if error is not None:
        raise error
    return result


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
        collective(lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM), ctx)
    return t


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    collective(lambda: dist.all_gather_object(out, obj), ctx)
    return out


def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's rows (rank order); all ranks must pass the same shape."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    collective(lambda: dist.all_gather(parts, x.contiguous()), ctx)
    return torch.cat(parts)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        collective(dist.barrier, ctx)


def shutdown(ctx: DistContext, clean: bool = True) -> None:
    """Leave the process group; after a success (``clean``) every rank first waits for the
    others, so none tears its connections down while another still uses them."""
    if ctx.enabled and dist.is_initialized():
        if clean:
            try:
                barrier(ctx)
            except CollectiveError:
                pass
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
    """The module the objectives train: DDP(ScoreModule(model)) on several processes, else model.

    An energy model's score -grad E does not depend on the bias of E's last layer, so that
    parameter gets no gradient; DDP is told to expect unused parameters for energy models only
    (it then walks the autograd graph every step, which score networks do not pay for)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    unused = getattr(model, "kind", "score") == "energy"
    return collective(lambda: DDP(ScoreModule(model), device_ids=ids, find_unused_parameters=unused), ctx)
