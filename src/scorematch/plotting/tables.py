"""Figures of tables: per-column marginals (real against sampled) and correlation matrices.

``column_marginals(schema, real, sampled)``: one panel per column, overlaid density histograms on
shared bins for numeric columns, side-by-side level frequencies for binary and categorical ones.
``correlation_matrices(schema, real, sampled)``: the Pearson correlation matrices of both tables'
numeric views (``scorematch.metrics.tables.numeric_view``) and their difference.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from scorematch.data.columns import Schema
from scorematch.data.tables import Table
from scorematch.metrics.tables import numeric_view, pairwise_correlation
from scorematch.plotting._base import PathLike, _new_figure, _save

__all__ = ["column_marginals", "correlation_matrices"]


def _present(v: np.ndarray) -> np.ndarray:
    if v.dtype == object:
        return np.array([x for x in v if x is not None], dtype=object)
    return v[~np.isnan(v)]


def column_marginals(schema: Schema, real: Table, sampled: Table, path: PathLike | None = None,
                     columns: int = 4) -> Figure:
    """One panel per (non-constant) column of ``schema``: real against sampled (see the module docstring)."""
    cols = [c for c in schema.columns if c.kind != "constant"]
    n_cols = max(1, min(columns, len(cols)))
    n_rows = max(1, math.ceil(len(cols) / n_cols))
    fig = _new_figure((3.0 * n_cols, 2.3 * n_rows))
    for k, c in enumerate(cols):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        a, b = _present(real.column(c.name)), _present(sampled.column(c.name))
        if c.kind in ("binary", "categorical"):
            levels = [str(v) for v in c.levels]
            fa = np.array([np.mean([str(x) == lv for x in a]) if a.size else 0.0 for lv in levels])
            fb = np.array([np.mean([str(x) == lv for x in b]) if b.size else 0.0 for lv in levels])
            pos = np.arange(len(levels))
            ax.bar(pos - 0.2, fa, width=0.4, label="real", color="#4c72b0")
            ax.bar(pos + 0.2, fb, width=0.4, label="sampled", color="#dd8452")
            ax.set_xticks(pos, [lv[:10] for lv in levels], fontsize=7, rotation=30 if len(levels) > 3 else 0)
        else:
            a, b = a.astype(float), b.astype(float)
            lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
            if c.kind == "integer" and hi - lo <= 40:
                bins = np.arange(lo - 0.5, hi + 1.5)
            else:
                bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
            ax.hist(a, bins=bins, density=True, alpha=0.55, label="real", color="#4c72b0")
            ax.hist(b, bins=bins, density=True, alpha=0.55, label="sampled", color="#dd8452")
        ax.set_title(f"{c.name} ({c.kind})", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    return _save(fig, path)


def correlation_matrices(schema: Schema, real: Table, sampled: Table, path: PathLike | None = None) -> Figure:
    """Correlations of the numeric views of ``real`` and ``sampled`` (each pair over the rows where both
    are present: ``pairwise_correlation``; NaN blank) and sampled - real."""
    va, names = numeric_view(schema, real)
    vb, _ = numeric_view(schema, sampled)
    keep = (np.nan_to_num(np.nanstd(va, axis=0)) > 0) & (np.nan_to_num(np.nanstd(vb, axis=0)) > 0)
    names = [nm for nm, k in zip(names, keep, strict=True) if k]
    size = max(4.0, 0.25 * len(names) + 2.5)
    fig = _new_figure((3 * size, size))
    mats = []
    if len(names) >= 2:
        ca, cb = pairwise_correlation(va[:, keep]), pairwise_correlation(vb[:, keep])
        mats = [(ca, "real"), (cb, "sampled"), (cb - ca, "sampled - real")]
    for k, (m, title) in enumerate(mats):
        ax = fig.add_subplot(1, 3, k + 1)
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(title, fontsize=9)
        ticks = np.arange(len(names))
        small = [nm[:12] for nm in names]
        ax.set_xticks(ticks, small, rotation=90, fontsize=6)
        ax.set_yticks(ticks, small, fontsize=6)
        if k == 2:
            fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)
