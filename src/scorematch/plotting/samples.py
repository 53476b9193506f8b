"""Samples and chains: samples over data, histograms along 1-D chains, 2-D chain paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scorematch.errors import ConfigError, DataError
from scorematch.plotting._base import (
    PathLike,
    _ArrayLike,
    _axes,
    _finish_2d,
    _new_figure,
    _np,
    _points,
    _save,
    _scatter_data,
    _subsample,
)


def samples_over_data(
    samples: _ArrayLike,
    data: _ArrayLike | None,
    ax: Axes | None = None,
    title: str | None = None,
    max_points: int = 2000,
    path: PathLike | None = None,
) -> Figure:
    """Model samples over data: a 2-D scatter (samples in red over grey data) or, in 1-D,
    overlaid density histograms on shared bins. At most ``max_points`` of each, evenly strided;
    non-finite samples (a diverged chain) are dropped and counted in the legend."""
    s = _points(samples, "samples")
    d = None if data is None else _points(data, "data", dims=(s.shape[1],))
    finite = np.isfinite(s).all(1)
    dropped = int((~finite).sum())
    s = _subsample(s[finite], max_points)
    label = "samples" + (f" ({dropped} non-finite dropped)" if dropped else "")
    if d is not None:
        d = _subsample(d, max_points)
    if s.shape[1] == 1:
        fig, ax = _axes(ax, (5.5, 3.5))
        both = s[:, 0] if d is None else np.concatenate([s[:, 0], d[:, 0]])
        bins = np.histogram_bin_edges(both, bins=60) if both.size else 10
        if d is not None:
            ax.hist(d[:, 0], bins=bins, density=True, color="0.6", alpha=0.6, label="data")
        ax.hist(s[:, 0], bins=bins, density=True, histtype="step", color="C3", lw=1.5, label=label)
        ax.set_xlabel("$x$")
        ax.set_ylabel("density")
        ax.set_title(title if title is not None else "samples over data")
    else:
        fig, ax = _axes(ax, (5.5, 5.0))
        if d is not None:
            ax.scatter(d[:, 0], d[:, 1], s=4, c="0.6", alpha=0.5, linewidths=0, label="data")
        ax.scatter(s[:, 0], s[:, 1], s=4, c="C3", alpha=0.6, linewidths=0, label=label)
        _finish_2d(ax, title if title is not None else "samples over data")
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
    return _save(fig, path)


def _chains(trajectory: _ArrayLike, dim: int, name: str) -> np.ndarray:
    """A trajectory as (K+1, n, dim) float64; (K+1, n) is accepted for dim 1."""
    t = _np(trajectory, name)
    if dim == 1 and t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3 or t.shape[2] != dim or t.shape[0] == 0:
        raise DataError(f"{name} must have shape (K+1, n, {dim}), got {t.shape}")
    return t


def histogram_steps(
    trajectory: _ArrayLike,
    steps: Sequence[int],
    true_pdf: Callable[[torch.Tensor], torch.Tensor] | None = None,
    path: PathLike | None = None,
    bins: int = 50,
    trajectory_every: int = 1,
) -> Figure:
    """Histograms of 1-D Langevin chains at the given snapshot indices, one panel each.

    ``trajectory`` is (K+1, n, 1) or (K+1, n) (``langevin(..., return_trajectory=True)``);
    ``steps`` index its snapshots (negative counts from the end; snapshot k is Langevin step
    k * trajectory_every). All panels share ``bins`` bins over the 0.5-99.5% range of the shown
    samples; bar heights are count / (n * width), so they estimate p (mass outside the range
    is not shown). ``true_pdf`` (a 1-D tensor -> 1-D tensor of densities) is drawn on each.
    """
    t = _chains(trajectory, 1, "trajectory")[..., 0]
    if not steps:
        raise ConfigError("steps must name at least one snapshot index")
    idx = []
    for k in steps:
        if not isinstance(k, int | np.integer) or not -len(t) <= k < len(t):
            raise ConfigError(f"step {k!r} is outside the trajectory's {len(t)} snapshots")
        idx.append(int(k) % len(t))
    shown = t[idx]
    finite = shown[np.isfinite(shown)]
    lo, hi = np.quantile(finite, [0.005, 0.995]) if finite.size else (-1.0, 1.0)
    pad = 0.1 * max(hi - lo, 1e-3)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    width = edges[1] - edges[0]
    grid = np.linspace(edges[0], edges[-1], 400)
    pdf = None
    if true_pdf is not None:
        with torch.no_grad():
            pdf = _np(true_pdf(torch.as_tensor(grid, dtype=torch.get_default_dtype())), "true_pdf")
    fig = _new_figure((3.2 * len(idx), 3.2))
    axes = fig.subplots(1, len(idx), squeeze=False, sharey=True)[0]
    for j, (ax, k) in enumerate(zip(axes, idx, strict=True)):
        counts, _ = np.histogram(t[k][np.isfinite(t[k])], bins=edges)
        ax.stairs(counts / (t.shape[1] * width), edges, fill=True, color="C0", alpha=0.6,
                  label="samples")
        if pdf is not None:
            ax.plot(grid, pdf, color="C3", lw=1.5, label="true $p(x)$")
        ax.set_title(f"step {k * trajectory_every}")
        ax.set_xlabel("$x$")
        if j == 0:
            ax.set_ylabel("density")
            ax.legend(fontsize=8)
    return _save(fig, path)


def trajectories(
    trajectory: _ArrayLike,
    data: _ArrayLike | None = None,
    n_chains: int = 20,
    ax: Axes | None = None,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Paths of the first ``n_chains`` 2-D Langevin chains (trajectory (K+1, n, 2)) over a
    grey data scatter; starts marked with green circles, ends with red stars."""
    t = _chains(trajectory, 2, "trajectory")[:, :n_chains]
    fig, ax = _axes(ax, (5.5, 5.0))
    _scatter_data(ax, data)
    for i in range(t.shape[1]):
        ax.plot(t[:, i, 0], t[:, i, 1], lw=0.8, alpha=0.8, color=f"C{i % 10}", zorder=2)
    ax.scatter(t[0, :, 0], t[0, :, 1], marker="o", s=22, c="tab:green", edgecolors="k",
               linewidths=0.5, label="start", zorder=3)
    ax.scatter(t[-1, :, 0], t[-1, :, 1], marker="*", s=70, c="tab:red", edgecolors="k",
               linewidths=0.5, label="end", zorder=3)
    ax.legend(loc="upper right", fontsize=8)
    _finish_2d(ax, title if title is not None else f"Langevin chains ({t.shape[0] - 1} steps)")
    return _save(fig, path)
