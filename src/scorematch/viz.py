"""Figures for score fields, densities, samples, Langevin chains, image grids and loss curves.

Every plotting function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no global
state, nothing to close), draws into ``ax`` instead when one is given, returns the figure, and
writes it as a PNG at ``DPI`` dots per inch when ``path`` is given. Score functions are any
score_fn(x) -> tensor shaped like x (batch (n, D)), or a module with ``.score``; they are
evaluated in chunks under ``torch.no_grad()`` (energy models, whose score is a gradient, are
called with autograd on) and their outputs detached. ``save_image_grid`` writes a plain PNG
with Pillow and no matplotlib at all, cheap enough to call during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import nn

from scorematch.errors import ConfigError, DataError, ModelError

__all__ = [
    "DPI",
    "annealing_rows",
    "compare_fields",
    "density",
    "histogram_steps",
    "image_grid",
    "loss_curves",
    "make_grid",
    "run_figures",
    "running_mean",
    "samples_over_data",
    "save_image_grid",
    "trajectories",
    "vector_field",
]

#: resolution of every PNG written by this module
DPI = 120
_CHUNK = 8192
_ArrayLike = torch.Tensor | np.ndarray | Sequence[float]
_Lims = Sequence[float] | Sequence[Sequence[float]]
PathLike = str | Path


# ----------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float]) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and its root figure, or a fresh figure with one axes."""
    if ax is None:
        fig = _new_figure(figsize)
        return fig, fig.add_subplot()
    try:
        fig = ax.get_figure(root=True)
    except TypeError:
        fig = ax.figure
    return fig, ax


def _save(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=DPI)
    return fig


def _np(x: _ArrayLike, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a tensor or an array of numbers") from None


def _points(x: _ArrayLike, name: str, dims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """x as an (n, D) float64 array with D in ``dims``; a 1-D array is n points in 1-D."""
    a = _np(x, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] not in dims:
        allowed = " or ".join(f"(n, {d})" for d in dims)
        raise DataError(f"{name} must have shape {allowed}, got {a.shape}")
    return a


def _subsample(a: np.ndarray, max_points: int) -> np.ndarray:
    """At most ``max_points`` rows, evenly strided (deterministic, covers sorted data)."""
    if len(a) <= max_points:
        return a
    return a[np.linspace(0, len(a) - 1, max_points).round().astype(int)]


def _lims_2d(lims: _Lims) -> tuple[tuple[float, float], tuple[float, float]]:
    """((xlo, xhi), (ylo, yhi)) from that form or from (lo, hi) for both axes."""
    try:
        if len(lims) == 2 and all(isinstance(v, int | float) for v in lims):
            pairs = [(float(lims[0]), float(lims[1]))] * 2
        else:
            pairs = [(float(lo), float(hi)) for lo, hi in lims]  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(
            f"lims must be ((xlo, xhi), (ylo, yhi)) or (lo, hi), got {lims!r}"
        ) from None
    if len(pairs) != 2 or not all(
        math.isfinite(a) and math.isfinite(b) and a < b for a, b in pairs
    ):
        raise ConfigError(
            f"lims must be ((xlo, xhi), (ylo, yhi)) with finite lo < hi, got {lims!r}"
        )
    return pairs[0], pairs[1]


def _grid_2d(lims: _Lims, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xs, ys = linspace per axis and the (n*n, 2) points, row-major over (y, x)."""
    if not isinstance(n, int) or n < 2:
        raise ConfigError(f"n must be an integer >= 2, got {n!r}")
    (xlo, xhi), (ylo, yhi) = _lims_2d(lims)
    xs, ys = np.linspace(xlo, xhi, n), np.linspace(ylo, yhi, n)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _resolve(fn: Any, attr: str) -> tuple[Callable, nn.Module | None]:
    """The callable to evaluate (``fn.<attr>`` for a module or an object without __call__)
    and the module that owns it, if any."""
    method = getattr(fn, attr, None)
    if callable(method) and (isinstance(fn, nn.Module) or not callable(fn)):
        fn = method
    if not callable(fn):
        raise ConfigError(f"expected a callable or an object with .{attr}, got {type(fn).__name__}")
    owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
    return fn, owner if isinstance(owner, nn.Module) else None


def _evaluate(
    fn: Any, points: np.ndarray, attr: str = "score", out_dim: int | None = None
) -> np.ndarray:
    """fn applied to ``points`` (n, D) in chunks, on the owning module's device and dtype.

    Runs under ``torch.no_grad()`` unless the owner is an energy model (or the call needs
    autograd), and returns a detached float64 array of shape (n, D) (or (n,) when out_dim=0).
    """
    call, module = _resolve(fn, attr)
    device, dtype = torch.device("cpu"), torch.get_default_dtype()
    if module is not None:
        param = next((p for p in module.parameters() if p.is_floating_point()), None)
        if param is not None:
            device, dtype = param.device, param.dtype
    plain = module is not None and getattr(module, "kind", None) == "energy"
    x = torch.as_tensor(points, dtype=dtype)
    expected = x.shape[1:] if out_dim is None else ()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        if plain:
            return call(chunk)
        try:
            with torch.no_grad():
                return call(chunk)
        except RuntimeError:
            return call(chunk)

    outs = []
    for i in range(0, len(x), _CHUNK):
        chunk = x[i:i + _CHUNK].to(device)
        y = run(chunk)
        if not isinstance(y, torch.Tensor) or y.shape[1:] != expected or len(y) != len(chunk):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            want = (len(chunk), *expected)
            raise ModelError(
                f"{attr} function must map a batch {tuple(chunk.shape)} to {want}, got {got}"
            )
        outs.append(y.detach().to("cpu", torch.float64))
    return torch.cat(outs).numpy()


def _field_scale(norms: np.ndarray) -> float:
    finite = norms[np.isfinite(norms)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _scatter_data(ax: Axes, data: _ArrayLike | None, max_points: int = 2000) -> None:
    if data is not None:
        d = _subsample(_points(data, "data", dims=(2,)), max_points)
        ax.scatter(d[:, 0], d[:, 1], s=3, c="0.65", alpha=0.5, linewidths=0, label="data",
                   zorder=1)


def _finish_2d(ax: Axes, title: str | None, lims: _Lims | None = None) -> None:
    if lims is not None:
        (xlo, xhi), (ylo, yhi) = _lims_2d(lims)
        ax.set_xlim(xlo, xhi)
        ax.set_ylim(ylo, yhi)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)


# ----------------------------------------------------------------------------- score fields


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


# ----------------------------------------------------------------------------- densities


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


# ----------------------------------------------------------------------------- samples and chains


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


# ----------------------------------------------------------------------------- images


def _images(images: _ArrayLike, name: str = "images") -> np.ndarray:
    """Images as (n, H, W, C) float64 in [0, 1] from (n, C, H, W) with C in {1, 3} or (n, H, W)."""
    a = _np(images, name)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] == 0:
        raise DataError(f"{name} must have shape (n, C, H, W) with C = 1 or 3, got {a.shape}")
    return np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0).transpose(0, 2, 3, 1)


def make_grid(
    images: _ArrayLike, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images (n, C, H, W) in [0, 1] into one (H', W', C) float array.

    ``nrow`` images per row (default ceil(sqrt(n))); image k sits at grid row k // nrow,
    column k % nrow, i.e. pixels [p + r (H + p), p + r (H + p) + H) x [p + c (W + p), ...),
    p = ``padding``; the padding and empty cells hold ``pad_value``. Values are clipped to [0, 1].
    """
    a = _images(images)
    n, h, w, c = a.shape
    ncol = math.ceil(math.sqrt(n)) if nrow is None else int(nrow)
    if ncol < 1:
        raise ConfigError(f"nrow must be a positive integer, got {nrow!r}")
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    p = int(padding)
    grid = np.full((p + rows * (h + p), p + ncol * (w + p), c), float(pad_value))
    for k in range(n):
        r, col = divmod(k, ncol)
        grid[p + r * (h + p):p + r * (h + p) + h, p + col * (w + p):p + col * (w + p) + w] = a[k]
    return grid


def save_image_grid(
    images: _ArrayLike, path: PathLike, nrow: int | None = None, padding: int = 2, upscale: int = 1
) -> Path:
    """Write ``make_grid(images, nrow, padding)`` as a plain PNG with Pillow (no axes, no
    matplotlib): 8-bit value round(255 v), mode L for grey, RGB for colour; ``upscale``
    repeats every pixel (nearest neighbour) for tiny images. Returns the path."""
    from PIL import Image

    grid = make_grid(images, nrow, padding)
    k = int(upscale)
    if k < 1:
        raise ConfigError(f"upscale must be a positive integer, got {upscale!r}")
    if k > 1:
        grid = grid.repeat(k, axis=0).repeat(k, axis=1)
    pixels = np.round(grid * 255).astype(np.uint8)
    grey = pixels.shape[2] == 1
    img = Image.fromarray(pixels[..., 0], "L") if grey else Image.fromarray(pixels, "RGB")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format="PNG")
    return p


def _show_grid(ax: Axes, grid: np.ndarray) -> None:
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")


def image_grid(
    images: _ArrayLike,
    nrow: int | None = None,
    path: PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Images (n, C, H, W) in [0, 1] (C = 1 grey, 3 RGB) tiled by ``make_grid`` (``nrow``
    images per row) in a figure without axes; grey images use vmin 0, vmax 1."""
    grid = make_grid(images, nrow)
    height, width = grid.shape[:2]
    size = 6.0
    fig = _new_figure((size, max(1.5, size * height / width + (0.4 if title else 0.1))))
    ax = fig.add_subplot()
    _show_grid(ax, grid)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def annealing_rows(
    snapshots: _ArrayLike,
    path: PathLike | None = None,
    n_per_row: int = 8,
    sigmas: Sequence[float] | torch.Tensor | None = None,
    max_rows: int | None = None,
) -> Figure:
    """The annealed-Langevin trajectory figure: one row per snapshot of
    ``annealed_langevin(..., return_trajectory=True)`` (shape (L+1[+1], n, C, H, W): x_0, x
    after each noise level, then the denoised x), the first ``n_per_row`` chains per row.

    Rows are labelled init / sigma_i / denoised when ``sigmas`` (length L) is given, else by
    snapshot index; ``max_rows`` keeps that many evenly spaced rows (first and last included).
    """
    s = _np(snapshots, "snapshots")
    if s.ndim == 4:
        s = s[:, :, None]
    if s.ndim != 5 or s.shape[0] == 0:
        raise DataError(f"snapshots must have shape (L+1[+1], n, C, H, W), got {s.shape}")
    n_rows, n = s.shape[:2]
    labels = [f"snapshot {i}" for i in range(n_rows)]
    if sigmas is not None:
        sig = [float(v) for v in _np(sigmas, "sigmas").ravel()]
        if n_rows not in (len(sig) + 1, len(sig) + 2):
            raise DataError(
                f"{len(sig)} sigmas need {len(sig) + 1} or {len(sig) + 2} snapshots, got {n_rows}"
            )
        labels = ["init"] + [rf"$\sigma$={v:.3g}" for v in sig] + ["denoised"]
        labels = labels[:n_rows]
    rows = list(range(n_rows))
    if max_rows is not None and n_rows > max_rows:
        if max_rows < 2:
            raise ConfigError(f"max_rows must be >= 2, got {max_rows!r}")
        rows = sorted(set(np.linspace(0, n_rows - 1, max_rows).round().astype(int).tolist()))
    k = min(int(n_per_row), n)
    if k < 1:
        raise ConfigError(f"n_per_row must be a positive integer, got {n_per_row!r}")
    picked = s[rows, :k].reshape(len(rows) * k, *s.shape[2:])
    pad = 2
    grid = make_grid(picked, nrow=k, padding=pad)
    h = s.shape[3]
    cell = 0.55
    fig = _new_figure((k * cell + 1.4, len(rows) * cell + 0.6))
    ax = fig.add_subplot()
    _show_grid(ax, grid)
    ax.set_xticks([])
    ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(len(rows))])
    ax.set_yticklabels([labels[r] for r in rows], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("annealed Langevin: one row per noise level", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- training


def running_mean(values: _ArrayLike, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` finite values (fewer at the start), NaN-aware."""
    y = _np(values, "values").ravel()
    ok = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, len(y) + 1)
    j = np.maximum(0, i - int(window))
    cnt = ccnt[i] - ccnt[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (csum[i] - csum[j]) / np.maximum(cnt, 1), np.nan)


def loss_curves(
    steps: _ArrayLike | Mapping[str, _ArrayLike] | None,
    losses: Mapping[str, _ArrayLike],
    path: PathLike | None = None,
    log_y: bool = True,
    window: int | None = None,
    title: str | None = None,
) -> Figure:
    """Training loss curves: per series the raw values (thin, faint) and their trailing running
    mean over ``window`` points (default max(1, len // 20)), labelled by the series name.

    ``steps`` is one sequence shared by all series, a dict of per-series steps, or None
    (0, 1, 2, ...). The y axis is logarithmic when ``log_y`` and every finite value is > 0
    (objectives such as ISM/SSM can be negative; those stay linear). Non-finite values are gaps.
    """
    if not losses:
        raise ConfigError("losses must hold at least one series")
    fig = _new_figure((6.5, 4.0))
    ax = fig.add_subplot()
    many = len(losses) > 10
    positive = True
    for i, (name, series) in enumerate(losses.items()):
        y = _np(series, f"losses[{name!r}]").ravel()
        st = steps.get(name) if isinstance(steps, Mapping) else steps
        x = np.arange(len(y)) if st is None else _np(st, "steps").ravel()
        if len(x) != len(y):
            raise DataError(f"series {name!r} has {len(y)} values but {len(x)} steps")
        y = np.where(np.isfinite(y), y, np.nan)
        positive &= bool(np.all(y[np.isfinite(y)] > 0))
        color = _cmap_color(i, len(losses)) if many else f"C{i % 10}"
        w = window if window is not None else max(1, len(y) // 20)
        ax.plot(x, y, color=color, lw=0.6, alpha=0.3)
        ax.plot(x, running_mean(y, w), color=color, lw=1.6, label=str(name))
    if log_y and positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if many else 8, ncol=2 if many else 1)
    ax.set_title(title if title is not None else "training loss (thin: raw, thick: running mean)")
    return _save(fig, path)


def _cmap_color(i: int, n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["viridis"](i / max(1, n - 1))


def _read_loss_csv(path: Path) -> tuple[list[float], dict[str, list[float]]]:
    import csv

    with path.open() as f:
        rows = list(csv.DictReader(f))
    steps = [float(r["step"]) for r in rows]
    levels = sorted((k for k in (rows[0] if rows else {}) if k.startswith("loss_level_")),
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    keys = levels or ["loss"]
    return steps, {k.replace("loss_level_", "level "): [float(r[k]) for r in rows] for k in keys}


def run_figures(run_dir: PathLike, out: PathLike | None = None, n: int = 1000, seed: int = 0) -> list[Path]:
    """All figures of a run folder, written as PNGs into ``out`` (default RUN/plots).

    loss.png (per noise level for NCSN); for 1-D/2-D data: score_field.png (learned beside the
    true field where known, and their disagreement), density.png (the density the model implies
    on a grid, beside the true one), samples.png (samples over held-out data) and
    trajectory.png (Langevin / annealed-Langevin chains); for images: samples.png (a grid) and
    annealing.png (one row per noise level).
    """
    from scorematch.density import density_grid
    from scorematch.evaluate import _unconditional_score, held_out
    from scorematch.generate import generate
    from scorematch.training import load

    run = Path(run_dir)
    folder = Path(out) if out is not None else run / "plots"
    model = load(run)
    folder.mkdir(parents=True, exist_ok=True)
    full, test = held_out(run)
    written: list[Path] = []

    def emit(fig: Figure, name: str) -> None:
        _save(fig, folder / name)
        written.append(folder / name)

    if (run / "loss.csv").exists():
        steps, series = _read_loss_csv(run / "loss.csv")
        if steps:
            emit(loss_curves(steps, series, title=f"training loss ({model.run_info['config']['objective']})"),
                 "loss.png")
    x, traj = generate(model, model.run_info, n, seed=seed, return_trajectory=True)
    if full.kind == "image":
        emit(image_grid(x[:64].cpu(), title="samples"), "samples.png")
        if traj is not None and traj.dim() == 5:
            sig = model.run_info["schedule"].get("sigmas")
            emit(annealing_rows(traj.cpu(), sigmas=sig, max_rows=12), "annealing.png")
        return written
    d = x.shape[1]
    if d > 2:
        emit(samples_over_data(x[:, :2].cpu(), test[:, :2], title="samples (first two coordinates)"), "samples.png")
        return written
    data = test.cpu()
    lo = data.min(0).values - 0.5 * data.std(0)
    hi = data.max(0).values + 0.5 * data.std(0)
    lims = [(float(lo[i]), float(hi[i])) for i in range(d)]
    score = _unconditional_score(model)
    emit(samples_over_data(x.cpu(), data, title="model samples over held-out data"), "samples.png")
    if d == 2:
        fields = {"learned": score} if full.dist is None else {"true": full.dist.score, "learned": score}
        emit(compare_fields(fields, lims, data=data), "score_field.png")
        emit(trajectories(traj.cpu(), data=data, title="sampler chains"), "trajectory.png")
    else:
        emit(histogram_steps(traj.cpu(), [0, len(traj) // 10, len(traj) // 2, len(traj) - 1],
                             true_pdf=(lambda t: full.dist.log_prob(t.reshape(-1, 1)).exp())
                             if full.dist is not None else None), "trajectory.png")
    grid_lims = lims[0] if d == 1 else lims
    panels = [("implied by the learned score", density_grid(score, grid_lims, n=100 if d == 2 else 400))]
    if full.dist is not None:
        panels.insert(0, ("true density", full.dist.log_prob))
    fig = _new_figure((5.0 * len(panels), 4.2))
    for i, (title, obj) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        density(obj, grid_lims, ax=ax, title=title)
    emit(fig, "density.png")
    return written
