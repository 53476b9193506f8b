"""What every figure shares: array conversion, 2-D grids, chunked evaluation of score and
log-density functions, and the figure/axes/save conventions.

Every plotting function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no global
state, nothing to close), draws into ``ax`` instead when one is given, returns the figure, and
writes it as a PNG at ``DPI`` dots per inch when ``path`` is given (through
``scorematch.files.atomic_write``: never through a symbolic link, never half a file).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from scorematch.errors import ConfigError, DataError, ModelError
from scorematch.files import atomic_write

#: resolution of every PNG written by scorematch.plotting
DPI = 120
_CHUNK = 8192
_ArrayLike = torch.Tensor | np.ndarray | Sequence[float]
_Lims = Sequence[float] | Sequence[Sequence[float]]
PathLike = str | Path


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
    """Write ``fig`` as a PNG at ``path`` (when given) through the atomic writer; return it."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        atomic_write(path, buf.getvalue())
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

