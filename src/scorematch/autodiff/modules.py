"""Which nn.Module stands behind a score function, and whether it is a plain score network."""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def owning_module(score_fn: Callable) -> torch.nn.Module | None:
    """The nn.Module behind a score function (the module itself or the owner of a bound method)."""
    if isinstance(score_fn, torch.nn.Module):
        return score_fn
    owner = getattr(score_fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def inside_ddp(score_fn: ScoreFn) -> bool:
    return isinstance(owning_module(score_fn), torch.nn.parallel.DistributedDataParallel)


def score_network(score_fn: ScoreFn) -> bool:
    """A module (or a module's bound method) whose output is the score itself, outside DDP."""
    module = owning_module(score_fn)
    return (module is not None and not isinstance(module, torch.nn.parallel.DistributedDataParallel)
            and getattr(module, "kind", "score") != "energy")
