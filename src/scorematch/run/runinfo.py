"""The files of a run folder other than weights: run.json and loss.csv, read and validated.

A run folder holds ``config.json`` (``scorematch.run.config``), ``run.json`` (model class and
constructor config; data source, fingerprint, shape, range and standardisation; noise
schedule; and the environment it ran in: versions, device, threads, wall time per phase),
``weights.safetensors`` and
``checkpoints/`` (``scorematch.run.checkpoint``), ``loss.csv``, and on request ``samples/``,
``plots/``, ``eval.json`` and ``report.html``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError

RUN_JSON = "run.json"
LOSS_CSV = "loss.csv"
RUN_KEYS = {"model", "data", "schedule"}
#: keys run.json may have besides RUN_KEYS (runs written before them lack them)
OPTIONAL_RUN_KEYS = {"environment"}


def read_run_info(run: Path) -> dict[str, Any]:
    """run.json of ``run``: the keys model, data, schedule, and environment where recorded."""
    p = Path(run) / RUN_JSON
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} is missing; {run} is not a complete scorematch run folder") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{p} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or not RUN_KEYS <= set(info) <= RUN_KEYS | OPTIONAL_RUN_KEYS:
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(f"{p} must have the keys model, data, schedule (and environment); got {got}")
    return info


def read_loss_csv(path: Path) -> tuple[list[float], dict[str, list[float]]]:
    """(steps, series) of a loss.csv: the overall loss, or one series per noise level for NCSN."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    steps = [float(r["step"]) for r in rows]
    levels = sorted((k for k in (rows[0] if rows else {}) if k.startswith("loss_level_")),
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    keys = levels or ["loss"]
    return steps, {k.replace("loss_level_", "level "): [float(r[k]) for r in rows] for k in keys}
