"""Image grids: tiling, a plain PNG writer cheap enough for training, and the annealing figure.

``save_image_grid`` writes a plain PNG with Pillow and no matplotlib at all.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scorematch.errors import ConfigError, DataError
from scorematch.files import atomic_write
from scorematch.plotting._base import PathLike, _ArrayLike, _new_figure, _np, _save


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


#: ``upscale="auto"`` enlarges an image grid until each image's shorter side has at least this many
#: pixels (a 28 x 28 digit 3x, an 8 x 8 one 11x) ...
MIN_CELL_PIXELS = 84
#: ... and no further than this many pixels along the grid's longer side
MAX_GRID_PIXELS = 2048


def grid_upscale(height: int, width: int, image_side: int) -> int:
    """The nearest-neighbour factor of ``upscale="auto"`` for a grid of ``height`` x ``width`` pixels
    whose images' shorter side is ``image_side``: ceil(MIN_CELL_PIXELS / image_side), at most
    MAX_GRID_PIXELS // max(height, width), at least 1."""
    k = math.ceil(MIN_CELL_PIXELS / max(1, image_side))
    return max(1, min(k, MAX_GRID_PIXELS // max(1, height, width)))


def save_image_grid(
    images: _ArrayLike, path: PathLike, nrow: int | None = None, padding: int = 2, upscale: int | str = "auto",
    root: PathLike | None = None,
) -> Path:
    """Write ``make_grid(images, nrow, padding)`` as a plain PNG with Pillow (no axes, no
    matplotlib): 8-bit value round(255 v), mode L for grey, RGB for colour; ``upscale`` repeats
    every pixel k times along each axis (nearest neighbour, so pixels stay sharp): an integer k,
    or "auto" (``grid_upscale``: each image at least MIN_CELL_PIXELS on its shorter side, the
    grid at most MAX_GRID_PIXELS). Returns the path. No symbolic link is followed below ``root``
    (default: the PNG's folder; see ``scorematch.files``)."""
    from PIL import Image

    grid = make_grid(images, nrow, padding)
    if upscale == "auto":
        side = min(_images(images).shape[1:3])
        k = grid_upscale(grid.shape[0], grid.shape[1], side)
    elif isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ConfigError(f"upscale must be a positive integer or 'auto', got {upscale!r}")
    else:
        k = upscale
    if k > 1:
        grid = grid.repeat(k, axis=0).repeat(k, axis=1)
    pixels = np.round(grid * 255).astype(np.uint8)
    grey = pixels.shape[2] == 1
    img = Image.fromarray(pixels[..., 0], "L") if grey else Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write(path, buf.getvalue(), root=root)


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
    title: str = "one row per noise level",
) -> Figure:
    """A sampler's trajectory over noise levels as a figure: one row per snapshot, e.g. of
    ``annealed_langevin(..., return_trajectory=True)`` (shape (L+1[+1], n, C, H, W): x_0, x
    after each noise level, then the denoised x) or of a denoising sampler, the first
    ``n_per_row`` chains per row, under ``title`` (name the sampler there).

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
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
