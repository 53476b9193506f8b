"""Jacobian traces and Jacobian-vector products of a score function, the costly parts of ISM/SSM.

For s: R^D -> R^D acting row by row on a batch (n, D) (images: D = ``C*H*W``):

- ``score_and_trace``: tr(grad_x s(x)) = sum_i e_i^T J e_i, exactly, per row. Methods:
  ``"vjp"`` pulls the D basis vectors back through one forward pass in a single batched
  backward (``torch.autograd.grad(..., is_grads_batched=True)``, chunked over i: rows of J);
  ``"jvp"`` pushes them forward (``torch.func.vmap`` over ``torch.func.jvp``: columns of J);
  ``"loop"`` is the per-dimension autograd loop of the reference implementations (D backward
  passes). ``"auto"`` picks the fastest measured method (benchmarks/objectives.py). The vjp
  and loop methods accept any score function, also one that calls torch.autograd.grad itself
  or runs inside DistributedDataParallel; jvp needs one that torch.func can transform.
- ``score_and_vjv``: v^T J v per row with a single Jacobian-vector product.

All results are differentiable in the network's parameters (create_graph semantics).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vmap
from torch.utils.checkpoint import checkpoint

from scorematch._checks import choice
from scorematch.errors import ConfigError

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

TRACE_METHODS = ("auto", "jvp", "vjp", "loop")

#: rows (basis vectors x batch) pushed through the network at once by the batched methods: on
#: CPU a few thousand keep the activations in cache (measured: 16 dims x 256 rows at D=784 beat
#: 64 and 4 dims); on CUDA a large block fills the device.
_CPU_ROWS = 4096
_CUDA_ELEMENTS = 2**24


def _chunk(x: torch.Tensor, chunk_size: int | None) -> int:
    n, d = x.shape[0], x[0].numel()
    if chunk_size is not None:
        return max(1, min(d, int(chunk_size)))
    if x.device.type == "cuda":
        return max(1, min(d, _CUDA_ELEMENTS // max(1, n * d)))
    return max(1, min(d, _CPU_ROWS // max(1, n)))


def _basis(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Tangents e_i (one per index, broadcast over the batch), shape (len(idx), *x.shape)."""
    d = x[0].numel()
    e = torch.zeros(len(idx), d, dtype=x.dtype, device=x.device)
    e[torch.arange(len(idx), device=x.device), idx] = 1
    return e.view(len(idx), 1, *x.shape[1:]).expand(len(idx), *x.shape)


def _trace_jvp(score_fn: ScoreFn, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, d = x.shape[0], x[0].numel()
    s = None
    tr = x.new_zeros(n)
    for start in range(0, d, chunk):
        idx = torch.arange(start, min(d, start + chunk), device=x.device)

        def push(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(score_fn, (x,), (t,))

        out, jcols = vmap(push, out_dims=(None, 0))(_basis(x, idx))
        s = out if s is None else s
        jcols = jcols.reshape(len(idx), n, d)
        tr = tr + jcols[torch.arange(len(idx)), :, idx].sum(0)
    return s, tr


def _diagonal(s: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """sum over i in idx of (grad_x s)_ii per row: the rows e_i^T J in one batched backward."""
    n, d = x.shape[0], x[0].numel()
    (jrows,) = torch.autograd.grad(s, x, _basis(x, idx), create_graph=True, is_grads_batched=True)
    jrows = jrows.reshape(len(idx), n, d)
    return jrows[torch.arange(len(idx), device=x.device), :, idx].sum(0)


def _recomputed_diagonal(score_fn: ScoreFn, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    xr = x.detach().requires_grad_(True)
    return _diagonal(score_fn(xr), xr, idx)


def _trace_vjp(
    score_fn: ScoreFn, x: torch.Tensor, chunk: int, low_memory: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    n, d = x.shape[0], x[0].numel()
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score_fn(x)
        tr = x.new_zeros(n)
        for start in range(0, d, chunk):
            idx = torch.arange(start, min(d, start + chunk), device=x.device)
            if low_memory:  # keep only this chunk's inputs; recompute its graph in the backward
                tr = tr + checkpoint(_recomputed_diagonal, score_fn, x, idx, use_reentrant=False)
            else:
                tr = tr + _diagonal(s, x, idx)
    return s, tr


def _trace_loop(score_fn: ScoreFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score_fn(x)
        flat = s.flatten(1)
        tr = x.new_zeros(x.shape[0])
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, create_graph=True, retain_graph=True)
            tr = tr + g.flatten(1)[:, i]
    return s, tr


def auto_trace_method(d: int, device: torch.device) -> str:
    """The exact-trace method that measured fastest for this dimension and device.

    Measured on CPU (benchmarks/, 2 cores, SiLU MLPs): the reverse-mode batched method beats
    forward mode (1.8x at D=784) and the per-dimension loop (6.6x at D=784) at every D tried.
    """
    return "vjp"


def score_and_trace(
    score_fn: ScoreFn,
    x: torch.Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    low_memory: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (s(x), tr(grad_x s(x))) with the trace exact, shapes (x.shape, (n,)).

    The training graph of the exact trace holds every chunk's backward: about (n D) x (D + a
    few hidden widths) numbers, 3.5 GiB for a batch of 64 at D = 3072 through an MLP of width
    256 (benchmarks/scaling.py). ``low_memory=True`` (reverse mode only) keeps only each chunk's
    inputs and recomputes its forward and backward during the training step's backward
    (activation checkpointing): memory of one chunk, for about one more forward and backward per
    chunk.
    """
    choice("trace method", method, TRACE_METHODS)
    chunk = _chunk(x, chunk_size)
    picked = auto_trace_method(x[0].numel(), x.device) if method == "auto" else method
    if low_memory and picked != "vjp":
        raise ConfigError(
            f"low_memory recomputes the chunks of the batched reverse mode; method {method!r} has none: "
            "use method='auto' or 'vjp'"
        )
    if picked == "loop":
        return _trace_loop(score_fn, x)
    if picked == "jvp":
        return _trace_jvp(score_fn, x, chunk)
    return _trace_vjp(score_fn, x, chunk, low_memory)


def score_and_vjv(
    score_fn: ScoreFn, x: torch.Tensor, v: torch.Tensor, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (s(x), v^T grad_x s(x) v) per row, with one Jacobian-vector product.

    ``"vjp"``: reverse mode by torch.func, (s, v^T J) = vjp(s, x)(v); ``"autograd"``: reverse
    mode by v^T J = torch.autograd.grad(s, x, v, create_graph=True), which makes x a leaf of
    the training graph (the step's backward then also computes a gradient for x: one more
    matrix product, 17 instead of 16 for an SSM-VR step of a 3-layer MLP) but accepts any
    score function; ``"jvp"``: forward mode, (s, J v) = jvp(s, x, v), slower on CPU.
    ``"auto"``: vjp for a score network (an nn.Module that is not an energy model, or its
    ``score`` method), autograd for everything else: energy scores -grad E (torch.func's nested
    grad costs more than the extra product: an energy MLP's SSM step took 12.4 ms by vjp, 11.6
    ms by autograd), modules inside DistributedDataParallel, plain functions, and any module
    torch.func fails on. All are differentiable in theta.
    """
    choice("vjv method", method, ("auto", "vjp", "autograd", "jvp"))
    if method == "auto":
        if _score_network(score_fn):
            try:
                return _vjv_functorch(score_fn, x, v)
            except RuntimeError:  # a module torch.func cannot transform
                pass
        method = "autograd"
    if method == "vjp":
        return _vjv_functorch(score_fn, x, v)
    if method == "autograd":
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            s = score_fn(x)
            (vj,) = torch.autograd.grad(s, x, v, create_graph=True)
        return s, (vj * v).flatten(1).sum(1)
    s, jv = jvp(score_fn, (x,), (v,))
    return s, (jv * v).flatten(1).sum(1)


def _vjv_functorch(score_fn: ScoreFn, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        s, pull = torch.func.vjp(score_fn, x.detach())
        (vj,) = pull(v)
    return s, (vj * v).flatten(1).sum(1)


def owning_module(score_fn: Callable) -> torch.nn.Module | None:
    """The nn.Module behind a score function (the module itself or the owner of a bound method)."""
    if isinstance(score_fn, torch.nn.Module):
        return score_fn
    owner = getattr(score_fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _inside_ddp(score_fn: ScoreFn) -> bool:
    return isinstance(owning_module(score_fn), torch.nn.parallel.DistributedDataParallel)


def _score_network(score_fn: ScoreFn) -> bool:
    """A module (or a module's bound method) whose output is the score itself, outside DDP."""
    module = owning_module(score_fn)
    return (module is not None and not isinstance(module, torch.nn.parallel.DistributedDataParallel)
            and getattr(module, "kind", "score") != "energy")
