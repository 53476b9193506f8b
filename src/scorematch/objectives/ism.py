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
    auto|jvp|vjp|loop); for an energy model it is -Laplacian(E). ``low_memory`` recomputes
    each chunk of the trace in the backward instead of keeping its graph (memory of one chunk
    instead of growing like n D^2, for more time; see ``score_and_trace``).
    """
    x = check_batch(x)
    score_fn = uncompiled_for_double_backward(score_fn, "ISM")
    warn_if_piecewise_linear(score_fn, "ISM")
    s, tr = score_and_trace(as_score_fn(score_fn), x, method, chunk_size, low_memory)
    return (tr + 0.5 * sq_norm(s)).mean()
