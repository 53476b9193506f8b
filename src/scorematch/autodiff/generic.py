"""The generic exact traces: D basis vectors through any score function, row by row.

``"vjp"`` pulls the D basis vectors back through one forward pass in a single batched backward
(``torch.autograd.grad(..., is_grads_batched=True)``, chunked over i: rows of J); ``"jvp"``
pushes them forward (``torch.func.vmap`` over ``torch.func.jvp``: columns of J); ``"loop"`` is
the per-dimension autograd loop of the reference implementations (D backward passes). The vjp
and loop methods accept any score function, also one that calls torch.autograd.grad itself or
runs inside DistributedDataParallel; jvp needs one that torch.func can transform.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vmap
from torch.utils.checkpoint import checkpoint

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

#: rows (basis vectors x batch) pushed through the network at once by the batched methods: on
#: CPU a few thousand keep the activations in cache (docs/benchmarks.md); on CUDA a large block
#: fills the device.
_CPU_ROWS = 4096
_CUDA_ELEMENTS = 2**24


def basis_chunk(x: torch.Tensor, chunk_size: int | None) -> int:
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


def trace_jvp(score_fn: ScoreFn, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def trace_vjp(
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


def trace_loop(score_fn: ScoreFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = score_fn(x)
        flat = s.flatten(1)
        tr = x.new_zeros(x.shape[0])
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, create_graph=True, retain_graph=True)
            tr = tr + g.flatten(1)[:, i]
    return s, tr


