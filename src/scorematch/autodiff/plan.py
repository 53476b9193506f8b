"""From a score function to the linear ends of the network behind it (the structured trace's plan).

A score function is resolved to a module with ``linear_ends`` (scorematch.autodiff.structured)
through: the module itself (its call is the score unless ``kind == "energy"``), its bound
``score`` method (or ``forward``), functools.partial with keyword arguments (they become
conditioning), ``energy_to_score`` wrappers, a ``DistributedDataParallel`` wrapper (the
structured evaluation runs as the wrapped module's forward, so DDP's gradient hooks see it), and
wrappers that declare ``fn.wraps_score = (inner_fn, conditioning_map)`` with
``conditioning_map(x, *cond)`` returning the inner function's conditioning
(``scorematch.sde.sigma_conditioned`` does). The first structured evaluation of each module
(and each pattern of conditioning arguments given or None) checks the declared pieces against
the module's own score on the batch.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from scorematch.autodiff.modules import owning_module
from scorematch.autodiff.structured import Chain, LinearEnds, evaluate
from scorematch.errors import ModelError

__all__ = ["StructuredPlan", "plan", "structured_score_and_trace"]


@dataclass
class StructuredPlan:
    """A score function resolved to a module with linear ends, for one batch and conditioning."""

    module: nn.Module
    ends: LinearEnds
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    reference: Callable[..., Tensor] | None = None  # the score as the module computes it, outside DDP
    ddp: nn.Module | None = None

    @property
    def width(self) -> int:
        """The widest layer the trace works in."""
        inner = self.ends.inner.layers if isinstance(self.ends.inner, Chain) else ()
        return max([self.ends.input.out_features, self.ends.output.in_features]
                   + [layer.out_features for layer in inner])

    @property
    def depth(self) -> int:
        """Activations of the chain (L), or 0 for an inner map torch.func handles."""
        return len(self.ends.inner.layers) + 1 if isinstance(self.ends.inner, Chain) else 0


def _ddp_type() -> type:
    return torch.nn.parallel.DistributedDataParallel


def _score_owner(fn: Callable) -> tuple[nn.Module, Callable] | None:
    """(module, its score callable) when ``fn`` is a module's score: the module called (not an
    energy model's), or its bound ``score``/``forward``."""
    module = owning_module(fn)
    if module is None:
        return None
    name = getattr(fn, "__name__", None) if fn is not module else "__call__"
    inner = module.module if isinstance(module, _ddp_type()) else module
    if name == "score":
        return module, fn
    if name in ("__call__", "forward") and getattr(inner, "kind", "score") != "energy":
        return module, fn
    return None


def _energy_owner(fn: Callable) -> nn.Module | None:
    """The module of an ``energy_to_score`` wrapper whose energy is the module's call/``energy``."""
    energy = getattr(fn, "energy_fn", None)
    if energy is None:
        return None
    module = owning_module(energy)
    name = "__call__" if energy is module else getattr(energy, "__name__", None)
    return module if name in ("__call__", "forward", "energy") else None


def plan(score_fn: Callable, x: Tensor, conditioning: tuple = ()) -> StructuredPlan | None:
    """Resolve score_fn(x, *conditioning) to its module's ``linear_ends``, or None."""
    fn, args, kwargs = score_fn, tuple(conditioning), {}
    while True:
        if isinstance(fn, functools.partial) and not fn.args:
            kwargs = {**fn.keywords, **kwargs}
            fn = fn.func
        elif getattr(fn, "wraps_score", None) is not None:
            fn, to_inner = fn.wraps_score
            fn = getattr(fn, "score", fn) if isinstance(fn, nn.Module) else fn
            args = tuple(to_inner(x, *args))
        else:
            break
    ddp = None
    owner = _score_owner(fn)
    if owner is not None:
        module, reference = owner
        if isinstance(module, _ddp_type()):
            ddp, module = module, module.module
            reference = module  # the wrapped module's call, without DDP's hooks
    else:
        module = _energy_owner(fn)
        reference = fn
        if module is None or isinstance(module, _ddp_type()):
            return None
    declare = getattr(module, "linear_ends", None)
    if not callable(declare) or x.dim() != 2:
        return None
    ends = declare(x, *args, **kwargs)
    if ends is None:
        return None
    _check_ends(ends, x, module)
    if owner is None and not ends.energy:
        return None  # an energy_to_score wrapper around a module whose ends describe a score
    return StructuredPlan(module, ends, args, kwargs, reference, ddp)


def _check_ends(ends: LinearEnds, x: Tensor, module: nn.Module) -> None:
    name = type(module).__name__
    if not isinstance(ends, LinearEnds):
        raise ModelError(f"{name}.linear_ends must return a scorematch.autodiff.LinearEnds or None, "
                         f"got {type(ends).__name__}")
    if not (isinstance(ends.input, nn.Linear) and isinstance(ends.output, nn.Linear)):
        raise ModelError(f"{name}.linear_ends: input and output must be nn.Linear layers")
    d_out = 1 if ends.energy else x.shape[1]
    if ends.input.in_features != x.shape[1] or ends.output.out_features != d_out:
        raise ModelError(
            f"{name}.linear_ends: input layer takes {ends.input.in_features} features and output layer gives "
            f"{ends.output.out_features}; for x of shape {tuple(x.shape)} they must be {x.shape[1]} and {d_out}"
        )


_verified: weakref.WeakKeyDictionary[nn.Module, set] = weakref.WeakKeyDictionary()


def _signature(p: StructuredPlan) -> tuple:
    """Which conditioning arguments a call passes (and which are None): one check for each."""
    return (tuple(a is None for a in p.args), tuple(sorted((k, v is None) for k, v in p.kwargs.items())))


def _verify(p: StructuredPlan, x: Tensor, s: Tensor) -> None:
    """Once per module and kind of call: the declared pieces must give the module's own score on this batch."""
    seen = _verified.setdefault(p.module, set())
    if _signature(p) in seen or p.reference is None:
        return
    with torch.no_grad():
        ref = p.reference(x.detach(), *p.args, **p.kwargs)
    err = float((s.detach() - ref).abs().max()) if ref.shape == s.shape else math.inf
    tol = 1e-3 * (1.0 + float(ref.abs().max()))
    if not err <= tol:
        raise ModelError(
            f"{type(p.module).__name__}.linear_ends does not reproduce the model's score (max difference "
            f"{err:.3g}): every x-independent bias the conditioning adds must be in input_bias/Chain.biases, "
            "and the output scale in scale; fix linear_ends or return None from it"
        )
    seen.add(_signature(p))


class _AsForward(nn.Module):
    """Stands in for DDP's wrapped module during one structured evaluation."""

    def __init__(self, fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.fn(x)


def structured_score_and_trace(
    p: StructuredPlan, x: Tensor, low_memory: bool = False
) -> tuple[Tensor, Tensor]:
    """(s(x), tr(grad_x s(x))) through the plan's linear ends; differentiable in the parameters."""

    def run(y: Tensor) -> tuple[Tensor, Tensor]:
        return evaluate(p.ends, y, low_memory)

    if p.ddp is None:
        s, tr = run(x)
    else:  # run as DDP's forward, so that its reducer expects this step's gradients
        original = p.ddp.module
        p.ddp.module = _AsForward(run)
        try:
            s, tr = p.ddp(x)
        finally:
            p.ddp.module = original
    _verify(p, x, s)
    return s, tr
