"""Table metrics in standardised units, each beside its real-against-real baseline.

Every metric compares a table with a reference through the columns' schema
(``scorematch.data.columns``), in the numeric view ``numeric_view``: a numeric column is its
value, a binary one its 0/1 index, a categorical one its one-hot indicators; constant columns
are left out. The view is standardised by the training table's mean and sd (``view_scale``).

    column_wasserstein  per column: W1 between the two empirical distributions of a numeric column
                        divided by the training sd, int |F_a(t) - F_b(t)| dt / sd; total variation
                        1/2 sum_k |p_k - q_k| for a binary or categorical column (W1 under the
                        0/1 metric)
    range_violations    per column: the share of cells outside the training table's [min, max]
                        (numeric) or not among its levels (discrete)
    correlation_error   mean over pairs i < j of |C_a[i, j] - C_b[i, j]|, C Pearson correlations of
                        the numeric view
    tstr_accuracy       train-on-synthetic-test-on-real: a classifier trained on (synthetic rows,
                        labels) scored on the held-out rows, beside the one trained on the real rows
    closest_record      distance of each synthetic row to its closest training row (standardised
                        view, Euclidean), beside that of each held-out row; exact copies share
    table_metrics       all of them for synthetic-vs-held-out and the baseline train-vs-held-out
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scorematch.data.columns import Schema
from scorematch.data.tables import Table
from scorematch.errors import DataError

__all__ = ["closest_record", "column_wasserstein", "correlation_error", "numeric_view", "pairwise_correlation",
           "range_violations", "table_metrics", "tstr_accuracy", "view_scale", "wasserstein_1d"]


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of the samples a and b (any sizes):
    int |F_a(t) - F_b(t)| dt, exact for step CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if a.size == 0 or b.size == 0:
        raise DataError("W1 needs at least one value on each side")
    pts = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, pts[:-1], side="right") / a.size
    fb = np.searchsorted(b, pts[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * np.diff(pts)))


def _cells(col_kind: str, levels: tuple, values: np.ndarray) -> np.ndarray:
    """Level indices (discrete) of present values, -1 for a value that is not a level."""
    text = bool(levels) and isinstance(levels[0], str)
    index = {lv: i for i, lv in enumerate(levels)}
    out = []
    for v in values:
        key = str(v) if text else float(v)
        out.append(index.get(key, -1))
    return np.array(out, dtype=int)


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return values[np.array([v is not None for v in values], dtype=bool)]
    return values[~np.isnan(values)]


def numeric_view(schema: Schema, table: Table) -> tuple[np.ndarray, list[str]]:
    """float64 (n, K) and the K names: numeric columns as values, binary as 0/1, categorical one-hot
    (``name=level``); constant columns left out; NaN where a cell is missing."""
    parts, names = [], []
    for c in schema.columns:
        v = table.column(c.name)
        miss = np.array([x is None for x in v]) if v.dtype == object else np.isnan(v)
        if c.kind == "constant":
            continue
        if c.kind in ("binary", "categorical"):
            idx = np.full(len(v), -1)
            idx[~miss] = _cells(c.kind, c.levels, v[~miss])
            if c.kind == "binary":
                parts.append(np.where(miss, np.nan, (idx == 1).astype(float))[:, None])
                names.append(c.name)
            else:
                oh = (idx[:, None] == np.arange(len(c.levels))[None]).astype(float)
                oh[miss] = np.nan
                parts.append(oh)
                names += [f"{c.name}={lv}" for lv in c.levels]
        else:
            parts.append(v.astype(float)[:, None])
            names.append(c.name)
    if not parts:
        return np.zeros((table.n_rows, 0)), []
    return np.concatenate(parts, axis=1), names


def view_scale(schema: Schema, reference: Table) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) of each numeric-view coordinate over ``reference``'s present cells (sd 1 if 0)."""
    v, _ = numeric_view(schema, reference)
    mean = np.nanmean(v, axis=0)
    sd = np.nanstd(v, axis=0)
    return mean, np.where(sd > 0, sd, 1.0)


def column_wasserstein(schema: Schema, a: Table, b: Table, reference: Table) -> dict[str, float]:
    """Per column of ``schema``: W1 / sd (sd of ``reference``'s column) for numeric columns, total
    variation for discrete ones, between the present cells of ``a`` and ``b``."""
    out = {}
    for c in schema.columns:
        if c.kind == "constant":
            continue
        va, vb = _present(a.column(c.name)), _present(b.column(c.name))
        if c.kind in ("binary", "categorical"):
            k = len(c.levels)
            ia, ib = _cells(c.kind, c.levels, va), _cells(c.kind, c.levels, vb)
            pa = np.bincount(ia[ia >= 0], minlength=k) / max(len(ia), 1)
            pb = np.bincount(ib[ib >= 0], minlength=k) / max(len(ib), 1)
            # cells that are not a level count as mass on a level of their own
            out[c.name] = 0.5 * (np.abs(pa - pb).sum() + abs(np.mean(ia < 0) - np.mean(ib < 0)))
        else:
            sd = float(np.std(_present(reference.column(c.name))))
            out[c.name] = wasserstein_1d(va, vb) / (sd if sd > 0 else 1.0)
    return out


def range_violations(schema: Schema, table: Table, reference: Table) -> dict[str, float]:
    """Per column: the share of ``table``'s present cells outside ``reference``'s observed [min, max]
    (numeric columns) or not among the column's levels (discrete and constant columns)."""
    out = {}
    for c in schema.columns:
        v = _present(table.column(c.name))
        if v.size == 0:
            out[c.name] = 0.0
        elif c.kind in ("binary", "categorical", "constant"):
            out[c.name] = float(np.mean(_cells(c.kind, c.levels, v) < 0))
        else:
            r = _present(reference.column(c.name)).astype(float)
            out[c.name] = float(np.mean((v < r.min()) | (v > r.max())))
    return out


def pairwise_correlation(v: np.ndarray) -> np.ndarray:
    """Pairwise-complete correlations: C[i, j] over the rows where coordinates i and j are both
    present; NaN where fewer than 3 such rows or either is constant on them."""
    m = ~np.isnan(v)
    x = np.where(m, v - np.nanmean(v, axis=0), 0.0)
    w = m.astype(np.float64)
    n = w.T @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        mi = (x.T @ w) / n  # mi[i, j]: mean of i over the rows where j is present too
        cov = (x.T @ x) / n - mi * mi.T
        var_i = ((x * x).T @ w) / n - mi**2
        c = cov / np.sqrt(var_i * var_i.T)
    ok = (n >= 3) & (var_i > 1e-12) & (var_i.T > 1e-12)
    return np.where(ok, np.clip(c, -1.0, 1.0), np.nan)


def correlation_error(schema: Schema, a: Table, b: Table) -> float:
    """Mean over pairs i < j of |C_a[i, j] - C_b[i, j]| on the numeric view, each correlation over
    the rows where both cells are present (pairs without 3 such rows in either table, or constant
    there, are left out; NaN when no pair is left); view coordinates constant in either table are
    left out."""
    va, _ = numeric_view(schema, a)
    vb, _ = numeric_view(schema, b)
    keep = (np.nanstd(va, axis=0) > 0) & (np.nanstd(vb, axis=0) > 0)
    if keep.sum() < 2:
        return 0.0
    ca, cb = pairwise_correlation(va[:, keep]), pairwise_correlation(vb[:, keep])
    iu = np.triu_indices(int(keep.sum()), 1)
    d = np.abs(ca[iu] - cb[iu])
    return float(np.mean(d[np.isfinite(d)])) if np.isfinite(d).any() else math.nan


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def _fit_score(clf: Any, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> float:
    from sklearn.base import clone

    if len(np.unique(y)) < 2:  # one class only: the classifier predicts it
        return float(np.mean(yt == y[0]))
    return float(clone(clf).fit(x, y).score(xt, yt))


def tstr_accuracy(schema: Schema, synthetic: Table, synthetic_y: np.ndarray, train: Table, train_y: np.ndarray,
                  test: Table, test_y: np.ndarray, classifier: Any = None) -> dict[str, float]:
    """{"synthetic": accuracy on the test rows of ``classifier`` (default: standardised logistic
    regression) trained on the synthetic rows, "real": the same trained on the training rows}.
    Only complete rows (every feature and the label present) take part."""
    clf = _classifier() if classifier is None else classifier
    parts = []
    for t, y in ((synthetic, synthetic_y), (train, train_y), (test, test_y)):
        v, y = numeric_view(schema, t)[0], np.asarray(y)
        ok = ~np.isnan(v).any(axis=1) & ~_missing(y)
        if not ok.any():
            raise DataError("train-on-synthetic accuracy needs complete rows; every row has a missing cell")
        parts.append((v[ok], y[ok]))
    (s, sy), (r, ry), (t, ty) = parts
    return {"synthetic": _fit_score(clf, s, sy, t, ty), "real": _fit_score(clf, r, ry, t, ty)}


def _missing(y: np.ndarray) -> np.ndarray:
    if y.dtype == object:
        return np.array([v is None for v in y], dtype=bool)
    return np.isnan(y.astype(float))


def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    out = np.empty(len(a))
    bb = (b**2).sum(1)
    for i in range(0, len(a), chunk):
        x = a[i: i + chunk]
        d2 = (x**2).sum(1)[:, None] - 2 * x @ b.T + bb[None]
        out[i: i + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def closest_record(schema: Schema, synthetic: Table, train: Table, held_out: Table) -> dict[str, float]:
    """Distance to the closest training record in the standardised numeric view (complete rows only):
    medians for the synthetic rows and for the held-out rows (the baseline a model that does not copy
    matches), their ratio, and the shares of rows within 1e-6 of a training row (exact copies)."""
    mean, sd = view_scale(schema, train)
    s, r, h = ((numeric_view(schema, t)[0] - mean) / sd for t in (synthetic, train, held_out))
    s, r, h = (v[~np.isnan(v).any(axis=1)] for v in (s, r, h))
    if min(len(s), len(r), len(h)) == 0:
        raise DataError("closest-record distances need complete rows on every side")
    ds, dh = _nearest(s, r), _nearest(h, r)
    med_s, med_h = float(np.median(ds)), float(np.median(dh))
    return {"synthetic_median": med_s, "held_out_median": med_h, "ratio": med_s / med_h if med_h > 0 else np.nan,
            "synthetic_copies": float(np.mean(ds < 1e-6)), "held_out_copies": float(np.mean(dh < 1e-6))}


def table_metrics(schema: Schema, train: Table, held_out: Table, synthetic: Table, label: str | None = None,
                  classifier: Any = None) -> dict[str, Any]:
    """Every metric of the module docstring for the synthetic table against the held-out one, and the
    baseline (the training table against the held-out one). ``label``: a column of the schema whose
    value the train-on-synthetic classifier predicts from the others. Returns a JSON-ready dict."""
    w_syn = column_wasserstein(schema, synthetic, held_out, train)
    w_base = column_wasserstein(schema, train, held_out, train)
    out: dict[str, Any] = {
        "wasserstein_mean": {"synthetic": float(np.mean(list(w_syn.values()))),
                             "baseline": float(np.mean(list(w_base.values())))},
        "wasserstein": {"synthetic": w_syn, "baseline": w_base},
        "range_violations": {"synthetic": float(np.mean(list(range_violations(schema, synthetic, train).values()))),
                             "baseline": float(np.mean(list(range_violations(schema, held_out, train).values())))},
        "range_violations_per_column": range_violations(schema, synthetic, train),
        "correlation_error": {"synthetic": correlation_error(schema, synthetic, held_out),
                              "baseline": correlation_error(schema, train, held_out)},
        "closest_record": closest_record(schema, synthetic, train, held_out),
    }
    if label is not None:
        from dataclasses import replace

        rest = replace(schema, columns=tuple(c for c in schema.columns if c.name != label), mean=(), std=())
        schema.column(label)
        out["tstr_accuracy"] = tstr_accuracy(rest, synthetic, synthetic.column(label), train, train.column(label),
                                             held_out, held_out.column(label), classifier)
    return out
