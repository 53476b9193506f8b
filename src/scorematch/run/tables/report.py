"""The HTML report of a table run: its columns, the evaluation against held-out rows (each metric
beside its real-vs-real baseline), per-column marginals and correlation matrices, real against
sampled; images embedded, nothing fetched."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from scorematch.errors import CheckpointError
from scorematch.files import probe_writable, write_text
from scorematch.run.folder.outdir import claim_file, precheck_file
from scorematch.run.reporting.html import _CSS, _e, _figure, _table
from scorematch.run.tables.folder import check_rows, draw_table, evaluate_drawn, load_table_run

__all__ = ["write_table_report"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _metric_rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for key, label in (("wasserstein_mean", "per-column W1 / sd (mean)"), ("correlation_error", "correlation error"),
                       ("range_violations", "range violations"), ("tstr_accuracy", "train-on-synthetic accuracy")):
        if key in res:
            v = res[key]
            rows.append((label, v["synthetic"], v.get("baseline", v.get("real"))))
    if "closest_record" in res:
        c = res["closest_record"]
        rows.append(("closest training record (median)", c["synthetic_median"], c["held_out_median"]))
        rows.append(("exact copies of training rows", c["synthetic_copies"], c["held_out_copies"]))
    return rows


def _values(c: Any) -> str:
    """What the report's column table says of the values of column ``c``: levels, range, atoms."""
    if c.levels:
        return ", ".join(map(str, c.levels[:8]))
    text = f"[{c.low:g}, {c.high:g}]" if c.low is not None and c.high is not None else ""
    return "; ".join(t for t in (text, "atoms " + ", ".join(f"{a:g}" for a in c.atoms) if c.atoms else "") if t)


def write_table_report(run_dir: str | Path, out: str | Path | None = None, n: int | None = None,
                       seed: int = 0, force: bool = False) -> Path:
    """Write the HTML report of the table run ``run_dir`` to ``out`` (default RUN/report.html, replaced
    when there). An ``out`` the user named that exists is refused, or with ``force`` renamed
    NAME.orig first; it is created exclusively."""
    from scorematch.plotting.tables import column_marginals, correlation_matrices

    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    loaded = load_table_run(run)
    est, info, table = loaded
    target = Path(out) if out is not None else run / "report.html"
    if out is not None:
        precheck_file(target, force)
    probe_writable(target)
    train = table.rows(np.array(info["data"]["train_rows"], dtype=np.int64))
    lab = info["label_column"]
    m = train.n_rows if n is None else check_rows(est, n)
    sampled = draw_table(est, info, m, seed)
    held = np.array(info["data"]["test_rows"], dtype=np.int64)
    res = evaluate_drawn(run, loaded, sampled, seed) if len(held) else {}
    if info.get("class_conditional"):
        train, sampled_feats = train.drop(lab), sampled.drop(lab)
    else:
        sampled_feats = sampled
    schema = est.schema_
    marg = _png(column_marginals(schema, train, sampled_feats))
    corr = _png(correlation_matrices(schema, train, sampled_feats))
    kinds = [(c.name, c.kind, _values(c)) for c in schema.columns]
    if lab is not None and info.get("class_conditional"):
        kinds.append((lab, "label (conditioning)", ", ".join(map(str, info["classes"][:8]))))
    title = f"scorematch report: {run.resolve().name}"
    body = [
        f"<header><h1>{_e(title)}</h1><p>table run: {table.n_rows} rows, {len(table.names)} columns, "
        f"{len(info['data']['train_rows'])} training rows, {len(held)} held out; "
        f"{info['settings'].get('steps')} steps</p></header>", "<main>",
        '<section><h2 id="columns">Columns</h2>' + _table(kinds, ("column", "type", "values")) + "</section>",
        '<section><h2 id="evaluation">Evaluation</h2>'
        + (_table(_metric_rows(res), ("metric", "sampled vs held-out", "training vs held-out")) if res else
           '<p class="note">No held-out rows (trained with --test-fraction 0): no held-out metrics.</p>')
        + "</section>",
        '<section><h2 id="marginals">Per-column marginals</h2>'
        + _figure(marg, "per-column marginals", f"training rows against {m} sampled rows") + "</section>",
        '<section><h2 id="correlations">Correlation matrices</h2>'
        + _figure(corr, "correlation matrices", "numeric view: categories one-hot, binary 0/1") + "</section>",
        "</main>",
    ]
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">',
                      f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head>", "<body>", *body,
                      "</body>", "</html>", ""])
    if out is not None:
        claim_file(target, force)
    write_text(target, page, exclusive=out is not None)
    return target
