"""A run folder as one self-contained HTML page: ``scorematch report RUN``.

The page opens with a table of contents and the results: the evaluation table, the figures of
``scorematch.run.reporting.figures.run_figures`` (samples and the periodic sample grids of
RUN/samples/, score field, density, the trajectory of the sampler the run is sampled with, named),
then the training-loss curves (per noise level for NCSN runs), and the configuration last.
Every image is embedded as a base64 PNG data URI and the style sheet is inline: the file has no
JavaScript and no reference to anything outside itself, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError, ScoreMatchError
from scorematch.files import OutputError, folder_lock, probe_writable, write_json, write_text
from scorematch.run.folder.outdir import claim_file
from scorematch.run.folder.runfiles import parse_loss_row, read_loss_lines
from scorematch.run.folder.validate import check_seed, read_file, read_json

__all__ = ["write_report"]

#: at most this many of the periodic grids of RUN/samples/ (evenly spaced, last one included)
MAX_GRIDS = 12

_FIGURES = [  # (file written by run_figures, section, caption; {sampler}: the sampler the figures ran)
    ("loss.png", "loss", "Training loss: thin lines are the logged values, thick lines their running "
                         "mean; one curve per noise level for noise-conditional (NCSN) runs."),
    ("score_field.png", "field", "Score field s(x): the true field where the data set has a closed form, "
                                 "the learned one, and the size of their difference over density contours."),
    ("density.png", "field", "Density implied by the learned score (integrated on a grid), beside the "
                             "true density where known."),
    ("samples.png", "samples", "Samples drawn with {sampler}, the default sampler of this run."),
    ("trajectory.png", "trajectory", "Chains of {sampler}: the paths of the first chains from their start "
                                     "(circles) to their end (stars), or histograms along the chain in 1-D."),
    ("annealing.png", "trajectory", "{sampler}: one row per noise level, from the initial noise to the "
                                    "final samples."),
]

_EVAL_HELP = {
    "n_samples": "samples drawn",
    "seed": "seed of the evaluation",
    "sampler_options": "options given to the sampler (the rest from the run)",
    "likelihood": "whether the test log-likelihood was computed",
    "device": "device of the evaluation",
    "fisher_divergence": "1/2 E_p ||s_theta - s*||^2 against the closed-form score (lower is better)",
    "sampling_seconds": "wall-clock time to draw the samples",
    "sampler": "sampler used",
    "nonfinite_samples": "samples with NaN or inf entries",
    "mmd": "MMD^2 between samples and held-out data (lower is better)",
    "mmd_se": "standard error of the MMD^2, from 5 disjoint subsets",
    "mmd_bandwidth": "RBF bandwidth of the MMD: the median distance within the held-out data",
    "sliced_wasserstein": "sliced Wasserstein distance between samples and held-out data",
    "sliced_wasserstein_se": "standard error of the sliced Wasserstein distance, from 5 disjoint subsets",
    "precision": "fraction of samples inside the k=3 nearest-neighbour manifold of held-out data",
    "recall": "fraction of held-out points inside the k=3 nearest-neighbour manifold of the samples",
    "baseline_mmd": "MMD^2 between shuffled training data and held-out data: the floor of a perfect sampler",
    "baseline_mmd_se": "standard error of the baseline MMD^2",
    "baseline_sliced_wasserstein": "sliced Wasserstein between shuffled training and held-out data",
    "baseline_sliced_wasserstein_se": "standard error of the baseline sliced Wasserstein",
    "baseline_precision": "precision of shuffled training data (what a perfect sampler reaches)",
    "baseline_recall": "recall of shuffled training data (what a perfect sampler reaches)",
    "file": "file the evaluation was written to",
    "mode_weights": "fraction of samples nearest each mixture component",
    "true_mode_weights": "the mixture's weights",
    "jacobian_asymmetry": "||J - J^T||_F / ||J||_F of the learned field (0: conservative)",
    "test_log_likelihood": "mean test log-likelihood via the probability-flow ODE",
    "likelihood_nfe": "score evaluations of the likelihood ODE",
    "sampling_nfe": "score evaluations the sampler took (a sampler that picks its own steps)",
    "bits_per_dim": "test negative log-likelihood in bits per dimension",
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f4f5f8; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
header { background: #23395d; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 4px; font-size: 1.6em; }
header p { margin: 0; opacity: .85; }
h2 { border-bottom: 2px solid #23395d; padding-bottom: 4px; margin-top: 36px; }
section { background: #fff; border-radius: 8px; padding: 4px 24px 20px; margin: 20px 0;
          box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
table { border-collapse: collapse; margin: 12px 0; font-size: .92em; }
th, td { border: 1px solid #d5d9e2; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #e9edf5; }
td.num { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: right; }
td.val { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-word; max-width: 320px; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 14px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4ea; background: #fff; }
figcaption { font-size: .88em; color: #4a5366; margin-top: 4px; max-width: 900px; }
.grids { display: flex; flex-wrap: wrap; gap: 14px; }
.grids figure { margin: 0; text-align: center; }
.grids img { image-rendering: pixelated; }
.note { color: #7a4b00; background: #fff4dc; border-left: 4px solid #e0a100; padding: 6px 10px; }
.muted { color: #6b7385; }
nav.toc { background: #fff; border-radius: 8px; padding: 8px 24px; margin: 20px 0;
          box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
nav.toc ol { margin: 6px 0; padding-left: 20px; columns: 2; }
"""


def _e(value: Any) -> str:
    """Any value as escaped HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A value for a table cell (not yet escaped): floats to 6 significant digits, lists and
    dicts as compact JSON, None as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _cell(value: Any) -> str:
    cls = "num" if isinstance(value, int | float) and not isinstance(value, bool) else "val"
    return f'<td class="{cls}">{_e(_fmt(value))}</td>'


def _table(rows: Iterable[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        first, *rest = row
        out.append(f"<tr><th>{_e(first)}</th>" + "".join(_cell(v) for v in rest) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when they are not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _img(data: bytes, alt: str, width: int | None = None) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{uri}" alt="{_e(alt)}"{size}>'


def _figure(data: bytes, alt: str, caption: str, width: int | None = None) -> str:
    return f"<figure>{_img(data, alt, width)}<figcaption>{_e(caption)}</figcaption></figure>"


def _read_loss(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    """(columns, rows) of loss.csv; malformed rows are left out, an unreadable file is no rows."""
    if not path.exists():
        return [], []
    try:
        header, lines = read_loss_lines(path)
    except ScoreMatchError:
        return [], []
    rows = [dict(zip(header, vals, strict=True)) for line in lines
            if (vals := parse_loss_row(line, len(header))) is not None]
    return header, rows


def _loss_summary(run: Path, sigmas: list[float] | None) -> str:
    """A table of the final loss, overall and per noise level (with its sigma): the mean of the
    last 10% of the logged rows (at least one)."""
    fields, rows = _read_loss(run / "loss.csv")
    if not rows:
        return '<p class="muted">No loss.csv in this run folder (or it is empty).</p>'
    tail = rows[-max(1, len(rows) // 10):]
    cols = [c for c in fields if c == "loss" or c.startswith("loss_level_")]

    def mean(col: str) -> float:
        vals = [r[col] for r in tail if col in r and math.isfinite(r[col])]
        return sum(vals) / len(vals) if vals else float("nan")

    def label(col: str) -> str:
        return "all levels" if col == "loss" else "level " + col.rsplit("_", 1)[1]

    levels = [c for c in cols if c != "loss"]
    first = rows[0]
    def sigma(col: str) -> float | None:
        i = int(col.rsplit("_", 1)[1]) - 1 if col != "loss" else -1
        return float(sigmas[i]) if sigmas and 0 <= i < len(sigmas) else None

    body = [(label(c), sigma(c), mean(c), first.get(c, float("nan"))) for c in cols]
    steps = f"{int(rows[0].get('step', 0))}\u2013{int(rows[-1].get('step', 0))}"
    intro = (f"<p>{len(rows)} logged rows, steps {_e(steps)}; final = mean of the last {len(tail)} "
             f"row(s){'; one row per noise level (level 1: largest sigma)' if levels else ''}.</p>")
    return intro + _table(body, ("series", "sigma", "final loss", "first logged loss"))


def _weights_mtime(run: Path) -> float | None:
    w = run / "weights.safetensors"
    if w.exists():
        return w.stat().st_mtime
    ckpts = list((run / "checkpoints").glob("*.safetensors")) if (run / "checkpoints").is_dir() else []
    return max((p.stat().st_mtime for p in ckpts), default=None)


def _evaluation(run: Path, n: int, seed: int, evaluate: bool, device: str = "cpu",
                progress: bool = False) -> tuple[dict[str, Any] | None, str]:
    """(results, note): eval.json when it is newer than the weights, else a fresh evaluation
    (unless ``evaluate`` is False: then a stale eval.json is shown with a warning)."""
    path = run / "eval.json"
    cached: dict[str, Any] | None = None
    if path.exists():
        try:
            cached = read_json(path, "evaluation")
        except ScoreMatchError:
            cached = None
        if not isinstance(cached, dict):
            cached = None
    weights = _weights_mtime(run)
    fresh = cached is not None and (weights is None or path.stat().st_mtime > weights)
    if fresh:
        return cached, "From eval.json (written after the current weights)."
    if evaluate:
        from scorematch.run.reporting.evaluate import EVAL_LOCK
        from scorematch.run.reporting.evaluate import evaluate as run_eval

        results = run_eval(run, n=n, seed=seed, device=device, progress=progress, save=False)
        note = f"Computed now by scorematch.run.reporting.evaluate (n={n}, seed={seed})."
        try:  # eval.json is missing or older than the weights: the report refreshes it
            results["file"] = str(path)
            with folder_lock(run, EVAL_LOCK, wait=True):  # as every evaluation writes into the run folder
                write_json(path, results, root=run)
        except OutputError:
            results.pop("file", None)
            note += " Not saved to eval.json: the run folder is not writable."
        return results, note
    if cached is not None:
        return cached, ("Warning: eval.json is older than the weights, so these numbers may not describe "
                        "the current model; run `scorematch eval` or drop --no-eval.")
    return None, "No evaluation: --no-eval was given and the run folder has no eval.json."


def _eval_section(results: dict[str, Any] | None, note: str) -> str:
    cls = "note" if note.startswith("Warning") else "muted"
    out = [f'<p class="{cls}">{_e(note)}</p>']
    if results:
        order = {k: i for i, k in enumerate(_EVAL_HELP)}
        keys = sorted((k for k in results if k != "run"), key=lambda k: (order.get(k, len(order)), k))
        rows = [(k, results[k], _EVAL_HELP.get(k, "")) for k in keys if k != "image_metrics"]
        if "image_metrics" in results:
            from scorematch.run.reporting.features import image_metric_lines

            rows += image_metric_lines(results["image_metrics"])
        out.append(_table(rows, ("metric", "value", "meaning")))
    return "\n".join(out)


def _grids(run: Path) -> str:
    folder = run / "samples"
    files = sorted(folder.glob("step_*.png")) if folder.is_dir() else []
    if not files:
        return ""
    picked = files
    if len(files) > MAX_GRIDS:
        idx = sorted({round(i * (len(files) - 1) / (MAX_GRIDS - 1)) for i in range(MAX_GRIDS)})
        picked = [files[i] for i in idx]
    out = ['<h3>Sample grids during training</h3>',
           f'<p class="muted">{len(files)} grid(s) in samples/'
           f'{f", {len(picked)} shown evenly spaced" if len(picked) < len(files) else ""}; '
           "36 samples of the model at that step each.</p>", '<div class="grids">']
    for p in picked:
        try:
            data = read_file(p, "image", max_bytes=64 * 2**20)
        except ScoreMatchError:
            continue
        size = _png_size(data)
        if size is None:
            continue
        step = p.stem.removeprefix("step_").lstrip("0") or "0"
        width = size[0] * max(1, 260 // max(1, size[0])) if size[0] < 260 else 260  # about 260 pixels wide
        out.append(_figure(data, f"samples at step {step}", f"step {step}", width=width))
    out.append("</div>")
    return "\n".join(out)


def _config_rows(cfg: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, cfg[k]) for k in cfg]


def _run_rows(info: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    model, data, schedule = info.get("model", {}), info.get("data", {}), info.get("schedule", {})
    rows.append(("model", model.get("name")))
    for k, v in (model.get("config") or {}).items():
        rows.append((f"model.{k}", v))
    for k, v in data.items():
        rows.append((f"data.{k}", v))
    for k, v in schedule.items():
        if isinstance(v, list) and len(v) > 12:
            v = f"{len(v)} values: {_fmt(v[:3])[:-1]}, ..., {_fmt(v[-2:])[1:]}"
        rows.append((f"schedule.{k}", v))
    for k, v in (info.get("environment") or {}).items():
        rows.append((f"environment.{k}", v))
    return rows


def _sampler_label(run: Path) -> str:
    """The sampler the figures of the run are drawn with (its default), with the options it runs with,
    e.g. "dpm_solver (n_steps 20)"."""
    from scorematch.run.build.loading import load
    from scorematch.run.sampling.generate import resolve_sampler

    model = load(run)
    name, options = resolve_sampler(model, None, None, model.run_info)
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in options.items())
    return f"{name} ({shown})" if shown else name


def _toc(sections: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{sid}">{_e(heading)}</a></li>' for sid, heading in sections)
    return f'<nav class="toc" aria-label="contents"><strong>Contents</strong><ol>{items}</ol></nav>'


def write_report(run_dir: str | Path, out: str | Path | None = None, n: int = 500, seed: int = 0,
                 evaluate: bool = True, device: str = "cpu", progress: bool = False, force: bool = False) -> Path:
    """Write the HTML report of a run folder to ``out`` (default RUN/report.html); returns its path.
    An ``out`` that exists is refused (``force``: renamed NAME.orig first); it is created exclusively.

    ``n`` samples (seed ``seed``) are drawn for the figures and, when the run has no eval.json
    newer than its weights and ``evaluate`` is True, for ``scorematch.run.reporting.evaluate.evaluate`` (which
    also writes RUN/eval.json).
    """
    from scorematch._version import __version__
    from scorematch.run.folder.manifest import run_config
    from scorematch.run.folder.runfiles import read_run_info
    from scorematch.run.reporting.figures import run_figures

    check_seed("seed", seed)
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    config = run_config(run)
    cfg = config.to_dict()
    info = read_run_info(run, config)
    target = Path(out) if out is not None else run / "report.html"
    if out is not None:
        claim_file(target, force)
    probe_writable(target)

    results, note = _evaluation(run, n, seed, evaluate, device, progress)
    with tempfile.TemporaryDirectory(prefix="scorematch-report-") as tmp:
        written = {p.name: p.read_bytes()
                   for p in run_figures(run, out=tmp, n=n, seed=seed, device=device, progress=progress)}

    sampler = _sampler_label(run)

    def figures(section: str) -> str:
        parts = [_figure(written[name], name.removesuffix(".png").replace("_", " "), caption.format(sampler=sampler))
                 for name, sec, caption in _FIGURES if sec == section and name in written]
        return "\n".join(parts)

    title = f"scorematch report: {run.resolve().name}"
    summary = (f"{cfg['objective']} on {cfg['data']}, model {info.get('model', {}).get('name')}, "
               f"{cfg['steps']} steps, seed {cfg['seed']}")
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sigmas = info.get("schedule", {}).get("sigmas")
    sections: list[tuple[str, str, str]] = [  # (id, heading, content): results first, configuration last
        ("evaluation", "Evaluation", _eval_section(results, note)),
        ("samples", "Samples", figures("samples") + _grids(run)),
    ]
    if figures("field"):
        sections.append(("field", "Score field and density", figures("field")))
    if figures("trajectory"):
        sections.append(("trajectory", f"Sampler trajectory: {sampler}", figures("trajectory")))
    sections += [
        ("loss", "Training loss", _loss_summary(run, sigmas) + figures("loss")),
        ("config", "Configuration", '<div class="cols">'
         "<div><h3>config.json</h3>" + _table(_config_rows(cfg), ("key", "value")) + "</div>"
         "<div><h3>run.json</h3>" + _table(_run_rows(info), ("field", "value")) + "</div></div>"),
    ]
    body = [
        f"<header><h1>{_e(title)}</h1><p>{_e(summary)}</p>"
        f"<p>{_e(str(run.resolve()))} \u00b7 scorematch {_e(__version__)} \u00b7 {_e(stamp)}</p></header>",
        "<main>",
        _toc([(sid, heading) for sid, heading, _ in sections]),
        *(f'<section><h2 id="{sid}">{_e(heading)}</h2>\n{content}</section>' for sid, heading, content in sections),
    ]
    body.append("</main>")
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>", *body, "</body>", "</html>", "",
    ])
    write_text(target, page, exclusive=out is not None)  # atomic, never through a link; mode from the umask
    return target
