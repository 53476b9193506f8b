"""Sliced score matching (Song et al. 2019): Hutchinson projections of the Jacobian trace."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scorematch._checks import choice, positive_int
from scorematch._random import rademacher_like, randn_like
from scorematch.autodiff import score_and_vjv
from scorematch.objectives._common import (
    as_score_fn,
    check_batch,
    sq_norm,
    uncompiled_for_double_backward,
    warn_if_piecewise_linear,
)

PROJECTIONS = ("gaussian", "rademacher")


def ssm(
    score_fn: Callable,
    x: torch.Tensor,
    n_projections: int = 1,
    projection: str = "gaussian",
    variance_reduced: bool = False,
    generator: torch.Generator | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """Sliced score matching, E_x E_v[ v^T (grad_x s_theta) v + 1/2 (v^T s_theta)^2 ];

    variance reduced (SSM-VR): E_x E_v[ v^T (grad_x s_theta) v + 1/2 ||s_theta||^2 ], the second
    term being the analytic expectation over v (E[v v^T] = I for both projection laws).
    v ~ N(0, I) ("gaussian") or uniform on {-1, +1}^D ("rademacher"), ``n_projections`` per
    point; v^T J v costs one Jacobian-vector product (no Jacobian is formed).
    """
    x = check_batch(x)
    m = positive_int("n_projections", n_projections)
    choice("projection", projection, PROJECTIONS)
    score_fn = uncompiled_for_double_backward(score_fn, "SSM")
    warn_if_piecewise_linear(score_fn, "SSM")
    xm = x.repeat(m, *([1] * (x.dim() - 1))) if m > 1 else x
    v = randn_like(xm, generator) if projection == "gaussian" else rademacher_like(xm, generator)
    s, vjv = score_and_vjv(as_score_fn(score_fn), xm, v, method)
    second = sq_norm(s) if variance_reduced else (v * s).flatten(1).sum(1).pow(2)
    return (vjv + 0.5 * second).mean()
