"""Training curves: raw values with a trailing running mean, one series per noise level."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from scorematch.errors import ConfigError, DataError
from scorematch.plotting._base import PathLike, _ArrayLike, _new_figure, _np, _save


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
