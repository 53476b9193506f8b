"""The files of a run folder other than weights: run.json and loss.csv, read and validated.

A run folder holds ``config.json`` (``scorematch.run.folder.config``), ``run.json`` (model class and
constructor config; data source, fingerprint, shape, range and standardisation; noise
schedule; and the environment it ran in: versions, device, threads, wall time per phase),
``weights.safetensors`` and ``checkpoints/`` (``scorematch.run.folder.checkpoint``), ``manifest.json``
(``scorematch.run.folder.manifest``), ``loss.csv``, and on request ``samples/``, ``plots/``,
``eval.json`` and ``report.html``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError
from scorematch.run.folder import manifest
from scorematch.run.folder.config import TrainConfig
from scorematch.run.folder.validate import check_run_info, parse_json, read_file

RUN_JSON = "run.json"
LOSS_CSV = "loss.csv"
LOSS_FIELDS = ("step", "loss", "grad_norm", "steps_per_s")
#: loss.csv is read whole; no run logs anywhere near this much
MAX_LOSS_BYTES = 2**31


def read_run_info(run: Path, cfg: TrainConfig) -> dict[str, Any]:
    """run.json of ``run``, validated field by field against ``cfg`` (the run's config), then
    checked against the run's manifest."""
    p = Path(run) / RUN_JSON
    data = read_file(p, "run description")
    info = check_run_info(parse_json(data, p), str(p), cfg.objective, cfg.sde, cfg.schedule)
    manifest.verify(run, RUN_JSON, data)
    return info


def loss_header(n_levels: int) -> list[str]:
    return [*LOSS_FIELDS, *(f"loss_level_{i + 1}" for i in range(n_levels))]


def parse_loss_row(line: str, n_fields: int) -> list[float] | None:
    """The numbers of one loss.csv row (step an integer >= 1), or None when it is malformed."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) != n_fields:
        return None
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return None
    if not (math.isfinite(vals[0]) and vals[0].is_integer() and 1 <= vals[0] <= 2**62):
        return None
    return vals


def read_loss_lines(path: Path) -> tuple[list[str], list[str]]:
    """(header fields, row lines with their line ends) of a loss.csv; CheckpointError when it is
    not a loss log (binary, no header, unknown header)."""
    data = read_file(path, "loss log", max_bytes=MAX_LOSS_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} holds binary content; it is not a scorematch loss log") from None
    lines = text.splitlines(keepends=True)
    header = lines[0].rstrip("\r\n").split(",") if lines else []
    n = len(header) - len(LOSS_FIELDS)
    if not lines or n < 0 or header != loss_header(n):
        raise CheckpointError(f"{path} does not start with the loss.csv header {','.join(LOSS_FIELDS)}[,loss_level_i]")
    return header, lines[1:]


def read_loss_csv(path: Path) -> tuple[list[float], dict[str, list[float]]]:
    """(steps, series) of a loss.csv: the overall loss, or one series per noise level for NCSN.

    Every row must be well formed; only an unterminated last row (a run killed while writing it)
    is left out. CheckpointError names the first malformed line."""
    header, lines = read_loss_lines(Path(path))
    rows = []
    for i, line in enumerate(lines):
        vals = parse_loss_row(line, len(header))
        if vals is None:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break
            raise CheckpointError(f"{path} line {i + 2} is malformed ({line.strip()[:40]!r}); delete that line")
        rows.append(vals)
    steps = [r[0] for r in rows]
    levels = [k for k in header if k.startswith("loss_level_")]
    keys = levels or ["loss"]
    return steps, {k.replace("loss_level_", "level "): [r[header.index(k)] for r in rows] for k in keys}
