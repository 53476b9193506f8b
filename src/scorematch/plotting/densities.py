"""Densities: a 1-D curve or a 2-D heat map of p, from log p or from a precomputed grid."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scorematch.errors import ConfigError, DataError
from scorematch.plotting._base import PathLike, _axes, _evaluate, _finish_2d, _grid_2d, _Lims, _np, _save


def _as_grid(obj: Any) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(coords, values) from a DensityGrid or a (coords, values) pair."""
    coords, values = obj
    if isinstance(coords, torch.Tensor | np.ndarray) and np.ndim(coords) == 1:
        coords = (coords,)
    coords = tuple(_np(c, "coords").ravel() for c in coords)
    vals = _np(values, "density")
    if len(coords) not in (1, 2) or vals.shape != tuple(len(c) for c in coords):
        raise DataError(
            "a density grid must be (coords, values) with coords one 1-D tensor (1-D) or a "
            "pair of them (2-D) and values of shape (len(x),) or (len(x), len(y)); got "
            f"coords of lengths {[len(c) for c in coords]} and values of shape {vals.shape}"
        )
    return coords, vals


def density(
    log_prob_or_density: Callable | Any,
    lims: _Lims | None = None,
    n: int = 200,
    ax: Axes | None = None,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """A 1-D curve or 2-D heat map of a density p.

    Either a function x -> log p(x) (batch (n, D) -> (n,); an object with ``.log_prob`` such
    as a GaussianMixture also works), evaluated as p = exp(log p) on n points per axis of
    ``lims`` ((lo, hi): 1-D; ((xlo, xhi), (ylo, yhi)): 2-D, or (lo, hi) for both axes of an
    object with ``dim == 2``), or a precomputed ``(coords, density)`` pair such as
    ``scorematch.density.density_grid``'s DensityGrid, ``density[i, j]`` at
    ``(coords[0][i], coords[1][j])``, plotted as given (``lims`` then only sets the view).
    """
    is_pair = isinstance(log_prob_or_density, tuple) and not callable(log_prob_or_density)
    if is_pair:
        coords, vals = _as_grid(log_prob_or_density)
    else:
        if lims is None:
            raise ConfigError("density needs lims when given a log-density function")
        flat = len(lims) == 2 and all(isinstance(v, int | float) for v in lims)
        if len(lims) == 1:
            lims, flat = tuple(lims[0]), True
        if flat and getattr(log_prob_or_density, "dim", 1) != 2:
            lo, hi = float(lims[0]), float(lims[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or n < 2:
                raise ConfigError(f"lims must be (lo, hi) with lo < hi and n >= 2, got {lims!r}")
            coords = (np.linspace(lo, hi, n),)
            vals = np.exp(_evaluate(log_prob_or_density, coords[0][:, None], "log_prob", 0))
        else:
            xs, ys, pts = _grid_2d(lims, n)
            coords = (xs, ys)
            vals = np.exp(_evaluate(log_prob_or_density, pts, "log_prob", 0)).reshape(n, n).T
    if len(coords) == 1:
        fig, ax = _axes(ax, (5.5, 3.5))
        ax.plot(coords[0], vals, color="C0", lw=1.5)
        ax.fill_between(coords[0], vals, color="C0", alpha=0.2, lw=0)
        ax.set_xlabel("$x$")
        ax.set_ylabel("$p(x)$")
        if lims is not None:
            lo, hi = lims[0] if len(lims) == 1 else lims
            ax.set_xlim(float(lo), float(hi))
        ax.set_ylim(bottom=0)
        ax.set_title(title if title is not None else "density")
    else:
        fig, ax = _axes(ax, (5.5, 4.6))
        mesh = ax.pcolormesh(coords[0], coords[1], vals.T, shading="nearest", cmap="viridis")
        fig.colorbar(mesh, ax=ax, shrink=0.85, label="$p(x)$")
        _finish_2d(ax, title if title is not None else "density", lims)
    return _save(fig, path)
