"""Densities from an unconditional score s(x) = grad_x log p(x), and a check that s is a gradient.

log p(x) - log p(x0) = int_0^1 s(x0 + t (x - x0))^T (x - x0) dt (the line integral of the
score), exact only when s is a gradient field; ``jacobian_asymmetry`` measures how far a learned
field is from one through ||J - J^T||_F / ||J||_F (0 for a gradient field: J is a Hessian).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from scorematch import _checks
from scorematch.errors import ConfigError, DataError

__all__ = ["DensityGrid", "log_density_ratio", "density_grid", "jacobian_asymmetry"]

ScoreFn = Callable[[Tensor], Tensor]
_MAX_POINTS_PER_CALL = 2**18
_JAC_CHUNK_ELEMENTS = 2**22


class DensityGrid(NamedTuple):
    """``density_grid`` result: coords, a tuple of 1-D coordinate tensors (one per axis), and
    density, of shape (n,) or (n, n) with ``density[i, j]`` at ``(coords[0][i], coords[1][j])``."""

    coords: tuple[Tensor, ...]
    density: Tensor


def _score_callable(score_fn: Any) -> ScoreFn:
    return _checks.score_callable(score_fn, "score_fn(x)")


def log_density_ratio(
    score_fn: ScoreFn, x: Tensor, x0: Tensor, n_points: int = 32
) -> Tensor:
    """log p(x) - log p(x0) = int_0^1 s(x0 + t (x - x0))^T (x - x0) dt, per row, shape (n,).

    Gauss-Legendre quadrature with ``n_points`` nodes on [0, 1] (exact for polynomial
    integrands of degree < 2 n_points; for a smooth score the error falls spectrally, but long
    paths across a sharp change of the score, e.g. between far-apart modes, need more nodes).
    x is (n, D) (or (n, C, H, W)); x0 is one reference point shaped like a row of x, or one
    per row shaped like x.  ``score_fn`` is an unconditional score s(x) (or a module with
    ``.score(x)``).
    """
    score = _score_callable(score_fn)
    x = _checks.batch("x", x)
    if not isinstance(x0, Tensor):
        x0 = torch.as_tensor(x0, dtype=x.dtype, device=x.device)
    if x0.shape == x.shape[1:]:
        x0 = x0.unsqueeze(0).expand_as(x)
    elif x0.shape != x.shape:
        raise DataError(
            f"x0 must have shape {tuple(x.shape[1:])} (one reference point) or {tuple(x.shape)}"
            f" (one per row), got {tuple(x0.shape)}"
        )
    k = _checks.positive_int("n_points", n_points)
    nodes, weights = np.polynomial.legendre.leggauss(k)
    tk = torch.as_tensor((nodes + 1) / 2, dtype=x.dtype, device=x.device)
    wk = torch.as_tensor(weights / 2, dtype=x.dtype, device=x.device)
    x0 = x0.to(dtype=x.dtype, device=x.device)
    diff = x - x0
    n, d = x.shape[0], math.prod(x.shape[1:])
    rows = max(1, _MAX_POINTS_PER_CALL // (k * max(d, 1)))
    out = []
    tb = tk.reshape(k, 1, *([1] * (x.dim() - 1)))
    for i in range(0, n, rows):
        dc, x0c = diff[i:i + rows], x0[i:i + rows]
        pts = (x0c.unsqueeze(0) + tb * dc.unsqueeze(0)).reshape(-1, *x.shape[1:])
        s = score(pts).reshape(k, *dc.shape)
        out.append(torch.einsum("k,kn->n", wk, (s * dc.unsqueeze(0)).flatten(2).sum(2)))
    return torch.cat(out)


def _parse_lims(lims: Sequence[float] | Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    try:
        if len(lims) == 2 and all(isinstance(v, numbers.Real) for v in lims):
            pairs = [(float(lims[0]), float(lims[1]))]
        else:
            pairs = [(float(lo), float(hi)) for lo, hi in lims]  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(
            f"lims must be (lo, hi) for 1-D or ((xlo, xhi), (ylo, yhi)) for 2-D, got {lims!r}"
        ) from None
    if len(pairs) not in (1, 2):
        raise ConfigError(f"density_grid supports 1-D or 2-D grids, got {len(pairs)} axes")
    for lo, hi in pairs:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"each limit must be finite with lo < hi, got ({lo}, {hi})")
    return pairs


def _cumulative(score_fn: ScoreFn, a: Tensor, b: Tensor, n_points: int) -> Tensor:
    """Running sums of log p(b_j) - log p(a_j) along the last segment axis, with a leading 0.

    a and b are (..., m, D) segment endpoints with b[..., j, :] = a[..., j + 1, :]; the result
    (..., m + 1) is log p at the m + 1 points relative to the first.
    """
    lead = a.shape[:-1]
    seg = log_density_ratio(score_fn, b.reshape(-1, a.shape[-1]), a.reshape(-1, a.shape[-1]),
                            n_points=n_points).reshape(lead)
    return torch.cat([torch.zeros_like(seg[..., :1]), seg.cumsum(-1)], dim=-1)


def density_grid(
    score_fn: ScoreFn,
    lims: Sequence[float] | Sequence[Sequence[float]],
    n: int = 100,
    x0: Tensor | Sequence[float] | None = None,
    n_points: int = 32,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DensityGrid:
    """Normalised density on a 1-D or 2-D grid from a score: p_ij = exp(r_ij) / (sum exp(r) dA).

    r_ij = log p(x_ij) - log p(x_ref) is the line integral of the score (``log_density_ratio``
    on each grid cell edge, summed) from the reference grid point x_ref nearest to x0 (default:
    the centre of the box): along the first axis through x_ref, then along the second axis.
    Short edges keep the quadrature accurate where the score changes sharply.  For a gradient
    field the path (and x0) does not matter; for a learned field it does.  The grid is
    linspace(lo, hi, n) per axis and dA the product of the spacings, so the Riemann sum of the
    density is 1.  lims is (lo, hi) or ((xlo, xhi), (ylo, yhi)); the grid is built with
    ``dtype`` on ``device`` (where the score function runs).  Returns
    ``DensityGrid(coords, density)``, density of shape (n,) or (n, n) ("ij" indexing).
    """
    pairs = _parse_lims(lims)
    n = _checks.positive_int("n", n, minimum=2)
    dtype = dtype or torch.get_default_dtype()
    coords = tuple(torch.linspace(lo, hi, n, dtype=dtype, device=device) for lo, hi in pairs)
    dim = len(pairs)
    if x0 is None:
        ref = torch.tensor([(lo + hi) / 2 for lo, hi in pairs], dtype=dtype, device=device)
    else:
        ref = torch.as_tensor(x0, dtype=dtype, device=device).reshape(-1)
        if ref.numel() != dim:
            raise DataError(f"x0 must have {dim} coordinates, got {ref.numel()}")
    idx = [int((c - r).abs().argmin()) for c, r in zip(coords, ref, strict=True)]
    if dim == 1:
        xs = coords[0][:, None]
        along_x = _cumulative(score_fn, xs[:-1], xs[1:], n_points)
        logr = along_x - along_x[idx[0]]
    else:
        ys = coords[1]
        line = torch.stack([coords[0], ys[idx[1]].expand(n)], dim=1)
        along_x = _cumulative(score_fn, line[:-1], line[1:], n_points)
        gx, gy = torch.meshgrid(coords[0], ys, indexing="ij")
        pts = torch.stack([gx, gy], dim=-1)  # (n, n, 2)
        along_y = _cumulative(score_fn, pts[:, :-1], pts[:, 1:], n_points)  # (n, n)
        logr = along_y - along_y[:, idx[1] : idx[1] + 1] + (along_x - along_x[idx[0]])[:, None]
    logr = logr.detach()
    dens = torch.exp(logr - logr.max())
    area = math.prod((hi - lo) / (n - 1) for lo, hi in pairs)
    return DensityGrid(coords, dens / (dens.sum() * area))


def jacobian_asymmetry(score_fn: ScoreFn, x: Tensor) -> Tensor:
    """Mean over rows of ||J - J^T||_F / ||J||_F, J = ds/dx at each row (a scalar tensor).

    0 for a gradient field (J is a symmetric Hessian); for a linear field s(x) = A x it is
    ||A - A^T||_F / ||A||_F.  Jacobians by torch.func.jacrev under vmap, chunked over rows.
    """
    score = _score_callable(score_fn)
    x = _checks.batch("x", x)
    n, d = x.shape[0], math.prod(x.shape[1:])

    def one(xi: Tensor) -> Tensor:
        return score(xi[None])[0]

    chunk = max(1, _JAC_CHUNK_ELEMENTS // (d * d))
    with torch.enable_grad():
        jac = torch.func.vmap(torch.func.jacrev(one), chunk_size=chunk)(x.detach())
    jac = jac.reshape(n, d, d).detach()
    num = (jac - jac.transpose(1, 2)).flatten(1).norm(dim=1)
    den = jac.flatten(1).norm(dim=1).clamp_min(torch.finfo(jac.dtype).tiny)
    return (num / den).mean()
