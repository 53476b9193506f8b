"""score_and_trace: (s(x), tr(grad_x s(x))) exactly, by the structured or a generic method."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scorematch._checks import choice
from scorematch.autodiff.generic import basis_chunk, trace_jvp, trace_loop, trace_vjp
from scorematch.autodiff.plan import StructuredPlan, plan, structured_score_and_trace
from scorematch.errors import ConfigError

ScoreFn = Callable[..., torch.Tensor]

TRACE_METHODS = ("auto", "structured", "jvp", "vjp", "loop")


def auto_trace_method(d: int, device: torch.device) -> str:
    """The generic exact-trace method for this dimension and device: the batched reverse mode
    (``vjp``), the fastest of reverse mode, forward mode and the per-dimension loop on CPU
    (docs/benchmarks.md, "Measurements behind the code's choices"). Networks with linear ends take
    the structured trace instead (``prefer_structured``).
    """
    return "vjp"


def prefer_structured(p: StructuredPlan, d: int) -> bool:
    """Whether ``auto`` takes the structured trace over the generic one for data dimension d.

    Always for a score chain with at most one hidden-to-hidden layer and an energy chain with
    none: their traces cost O(n h^2) and O(n h), against O(n D) network passes. Deeper chains
    cost O(n h^3) per step: taken when D >= h/2, h the widest layer. An inner map that
    torch.func differentiates (not a Chain) takes h Jacobian-vector products through it: taken
    when D >= h. The thresholds are measured (docs/benchmarks.md, "Measurements behind the
    code's choices").
    """
    if p.depth == 0:
        return d >= p.width
    shallow = p.depth <= (1 if p.ends.energy else 2)
    return shallow or 2 * d >= p.width


def _select(score_fn: ScoreFn, x: torch.Tensor, method: str, conditioning: tuple) -> tuple[str, StructuredPlan | None]:
    choice("trace method", method, TRACE_METHODS)
    if method not in ("auto", "structured"):
        return method, None
    p = plan(score_fn, x, conditioning)
    if method == "structured":
        if p is None:
            raise ConfigError(
                "method='structured' needs a score network with linear ends (ScoreMLP, EnergyMLP, "
                "NoiseConditionalMLP, TimeMLP, or a module with a linear_ends method, called directly or through "
                "its score method) and x of shape (n, D); use method='auto' to fall back to the generic trace"
            )
        return "structured", p
    if p is not None and prefer_structured(p, x.shape[1]):
        return "structured", p
    return auto_trace_method(x[0].numel(), x.device), None


def trace_method(score_fn: ScoreFn, x: torch.Tensor, method: str = "auto", conditioning: tuple = ()) -> str:
    """The method ``score_and_trace(score_fn, x, method, conditioning=...)`` (and so ``ism``) runs:
    "structured", "vjp", "jvp" or "loop"."""
    return _select(score_fn, x, method, tuple(conditioning))[0]


def score_and_trace(
    score_fn: ScoreFn,
    x: torch.Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    low_memory: bool = False,
    conditioning: tuple = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (s(x), tr(grad_x s(x))) with the trace exact, shapes (x.shape, (n,)).

    s is ``score_fn(x, *conditioning)``. Methods: ``"structured"``, for a network with linear
    ends (scorematch.autodiff.structured): tr(grad_x s) = c tr(J_g(u) W_in W_out) in the
    network's widths, never a D-dimensional pass; ``"vjp"``, ``"jvp"``, ``"loop"``: the generic
    traces of D basis vectors (scorematch.autodiff.generic). ``"auto"`` takes the structured
    trace whenever the score function resolves to linear ends, else ``auto_trace_method``.
    ``trace_method(score_fn, x, method)`` says which one runs.

    The generic trace's training graph holds every chunk's backward: about (n D) x (D + a few
    hidden widths) numbers, 3.5 GiB for a batch of 64 at D = 3072 through an MLP of width 256
    (benchmarks/scaling.py). ``low_memory=True`` keeps only each chunk's inputs and recomputes
    its forward and backward during the training step's backward (activation checkpointing):
    memory of one chunk, for about one more forward and backward per chunk. The structured
    trace holds O(n h) numbers with one hidden-to-hidden layer and (L - 2) n h^2 beyond
    (its h x h tangents); ``low_memory`` there recomputes the tangents in blocks of rows.
    All results are differentiable in the network's parameters (create_graph semantics).
    """
    conditioning = tuple(conditioning)
    picked, p = _select(score_fn, x, method, conditioning)
    if low_memory and picked not in ("vjp", "structured"):
        raise ConfigError(
            f"low_memory recomputes the chunks of the batched reverse mode or of the structured trace; method "
            f"{method!r} has none: use method='auto', 'structured' or 'vjp'"
        )
    if picked == "structured":
        return structured_score_and_trace(p, x, low_memory)
    fn = score_fn if not conditioning else (lambda y: score_fn(y, *conditioning))
    if picked == "loop":
        return trace_loop(fn, x)
    chunk = basis_chunk(x, chunk_size)
    if picked == "jvp":
        return trace_jvp(fn, x, chunk)
    return trace_vjp(fn, x, chunk, low_memory)
