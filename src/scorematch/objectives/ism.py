"""Implicit score matching (Hyvarinen 2005) with the exact Jacobian trace."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scorematch.autodiff import score_and_trace
from scorematch.objectives._common import (
    as_score_fn,
    check_batch,
    sq_norm,
    uncompiled_for_double_backward,
    warn_if_piecewise_linear,
)


def ism(
    score_fn: Callable,
    x: torch.Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    low_memory: bool = False,
) -> torch.Tensor:
    """Implicit score matching, E_x[ tr(grad_x s_theta(x)) + 1/2 ||s_theta(x)||^2 ].

    Equal to ESM minus the constant 1/2 E||s*||^2 (integration by parts), so it needs no target
    score. The trace is exact (``scorematch.autodiff.score_and_trace``, ``method`` one of
    auto|structured|jvp|vjp|loop); for an energy model it is -Laplacian(E). With ``"auto"`` a
    network with linear ends (ScoreMLP, EnergyMLP, or a module declaring ``linear_ends``) gets
    the structured trace, c tr(J_g(u) W_in W_out), in the network's widths instead of D backward
    passes (one hidden-to-hidden layer: 1.7x a forward+backward at D = 784, batch 256, one CPU thread);
    ``scorematch.autodiff.trace_method(score_fn, x, method)`` returns the method a call runs.
    ``low_memory`` recomputes each chunk of the generic trace (or each block of rows of the
    structured one's h x h tangents) in the backward instead of keeping its graph (see
    ``score_and_trace``).
    """
    x = check_batch(x)
    score_fn = uncompiled_for_double_backward(score_fn, "ISM")
    warn_if_piecewise_linear(score_fn, "ISM")
    s, tr = score_and_trace(as_score_fn(score_fn), x, method, chunk_size, low_memory)
    return (tr + 0.5 * sq_norm(s)).mean()
