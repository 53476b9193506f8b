"""v^T (grad_x s) v per row with a single Jacobian-vector product (the costly part of SSM)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp

from scorematch._checks import choice
from scorematch.autodiff.modules import score_network

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


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
    grad costs more than the extra product: docs/benchmarks.md), modules inside
    DistributedDataParallel, plain functions, and any module torch.func fails on. All are differentiable in theta.
    """
    choice("vjv method", method, ("auto", "vjp", "autograd", "jvp"))
    if method == "auto":
        if score_network(score_fn):
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
