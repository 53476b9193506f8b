"""Score fields: quiver plots of s(x) and side-by-side comparisons with their error map."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from scorematch.errors import ConfigError
from scorematch.plotting._base import (
    PathLike,
    _ArrayLike,
    _axes,
    _evaluate,
    _field_scale,
    _finish_2d,
    _grid_2d,
    _Lims,
    _lims_2d,
    _new_figure,
    _points,
    _save,
    _scatter_data,
    _subsample,
)


def vector_field(
    score_fn: Callable,
    lims: _Lims = ((-5, 5), (-5, 5)),
    n: int = 25,
    ax: Axes | None = None,
    title: str | None = None,
    data: _ArrayLike | None = None,
    path: PathLike | None = None,
    scale: float | None = None,
) -> Figure:
    """Quiver plot of a 2-D score field s(x) on an n x n grid, optionally over a data scatter.

    Grid: xs = linspace(xlo, xhi, n), ys = linspace(ylo, yhi, n), points (xs[j], ys[i]) in
    row-major order over (i, j). Arrows are U, V = s(x) / scale with one global ``scale``
    (default: max ||s(x)|| over the grid), drawn so that a unit arrow spans one grid cell and
    coloured by ||s|| / scale, so magnitudes compare across the field (and across panels that
    share ``scale``).
    """
    xs, ys, pts = _grid_2d(lims, n)
    s = _evaluate(score_fn, pts)
    norms = np.linalg.norm(s, axis=1)
    scale = _field_scale(norms) if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive finite number, got {scale!r}")
    cell = min(xs[1] - xs[0], ys[1] - ys[0])
    fig, ax = _axes(ax, (5.5, 5.0))
    _scatter_data(ax, data)
    ax.quiver(
        pts[:, 0], pts[:, 1], s[:, 0] / scale, s[:, 1] / scale, norms / scale,
        cmap="viridis", norm=Normalize(0.0, 1.0), angles="xy", scale_units="xy",
        scale=1.0 / cell, width=0.004, zorder=2,
    )
    ax.text(0.99, 0.01, f"arrow of one cell: |s| = {scale:.3g}", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=7, color="0.3")
    _finish_2d(ax, title if title is not None else "score field $s(x)$", lims)
    return _save(fig, path)


def _kde_grid(data: np.ndarray, pts: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """Gaussian KDE of ``data`` (Scott's bandwidth per axis) at ``pts``, shape (len(pts),)."""
    d = torch.as_tensor(_subsample(data, max_points))
    h = d.std(0).clamp_min(1e-6) * len(d) ** (-1 / 6)
    out = []
    for i in range(0, len(pts), 1024):
        q = torch.as_tensor(pts[i:i + 1024])
        z = ((q[:, None] - d[None]) / h).pow(2).sum(-1)
        out.append(torch.exp(-0.5 * z).mean(1) / (2 * math.pi * h.prod()))
    return torch.cat(out).numpy()


def compare_fields(
    fields: Mapping[str, Callable],
    lims: _Lims = ((-5, 5), (-5, 5)),
    n: int = 25,
    data: _ArrayLike | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Side-by-side quiver panels of several 2-D score fields, all with one global scale
    (max ||s|| over every field's grid), so arrow lengths compare across panels.

    When a field named "true" is present with at least one other, a last panel shows the
    error ||s - s_true|| of the last other field as a heat map on a max(2n, 50)-point grid per
    axis (cell centres at the grid points), with density contours: a Gaussian KDE of ``data``
    when given, else the density integrated from the true score (``scorematch.density``).
    The error is typically largest where the data density is low.
    """
    if not fields:
        raise ConfigError("fields must name at least one score function")
    xs, ys, pts = _grid_2d(lims, n)
    values = {name: _evaluate(fn, pts) for name, fn in fields.items()}
    scale = _field_scale(np.concatenate([np.linalg.norm(v, axis=1) for v in values.values()]))
    others = [name for name in fields if name != "true"]
    show_error = "true" in fields and bool(others)
    n_panels = len(fields) + int(show_error)
    fig = _new_figure((4.3 * n_panels, 4.4))
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax, (name, fn) in zip(axes, fields.items(), strict=False):
        vector_field(fn, lims, n, ax=ax, title=name, data=data, scale=scale)
    if show_error:
        name = others[-1]
        m = max(2 * n, 50)
        exs, eys, epts = _grid_2d(lims, m)
        diff = _evaluate(fields[name], epts) - _evaluate(fields["true"], epts)
        err = np.linalg.norm(diff, axis=1)
        ax = axes[-1]
        mesh = ax.pcolormesh(exs, eys, err.reshape(m, m), shading="nearest", cmap="magma")
        fig.colorbar(mesh, ax=ax, shrink=0.8, label=r"$\|s - s_{true}\|$")
        if data is not None:
            dens = _kde_grid(_points(data, "data", dims=(2,)), epts).reshape(m, m)
        else:
            from scorematch.density import density_grid

            grid = density_grid(lambda x: torch.as_tensor(_evaluate(fields["true"], x.numpy()),
                                                          dtype=x.dtype), lims=_lims_2d(lims), n=m)
            dens = grid.density.numpy().T
        if np.isfinite(dens).all() and dens.max() > 0:
            levels = dens.max() * np.array([0.02, 0.1, 0.3, 0.6, 0.9])
            ax.contour(exs, eys, dens, levels=levels, colors="white", linewidths=0.7, alpha=0.8)
        _finish_2d(ax, rf"error $\|s_{{\mathrm{{{name}}}}} - s_{{\mathrm{{true}}}}\|$", lims)
    return _save(fig, path)
