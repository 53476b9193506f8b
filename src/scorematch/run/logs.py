"""Where a training run reports: loss.csv, TensorBoard (when installed) and a progress bar."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from scorematch.files import atomic_write, open_append
from scorematch.run.config import TrainConfig


def progress_bar(cfg: TrainConfig, start: int) -> Any:
    """Progress over the run's steps on stderr (a tqdm bar on a terminal, periodic lines
    otherwise), or None when ``cfg.progress`` is off."""
    from scorematch._progress import progress

    return progress(cfg.steps, f"train {cfg.objective}", cfg.progress, initial=start)


def tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter into RUN/tensorboard, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


class CsvLog:
    """loss.csv: step, loss, grad_norm, steps_per_s, then loss_level_1..L for NCSN runs."""

    def __init__(self, path: Path, n_levels: int, append: bool, start: int = 0) -> None:
        self.fields = ["step", "loss", "grad_norm", "steps_per_s"] + [f"loss_level_{i + 1}" for i in range(n_levels)]
        new = not (append and path.exists())
        if not new:
            # resuming from an older checkpoint (the newest was corrupted, or rows were logged after
            # it): drop the rows past the resume step, or they would appear twice
            lines = path.read_text().splitlines(keepends=True)
            keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(ln.split(",", 1)[0]) <= start]
            if len(keep) != len(lines):
                atomic_write(path, "".join(keep).encode())
        if new:
            atomic_write(path, (",".join(self.fields) + "\r\n").encode())
        self.f = open_append(path)
        self.w = csv.writer(self.f)

    def write(self, row: dict[str, float], levels: list[float]) -> None:
        self.w.writerow([row["step"], f"{row['loss']:.6g}", f"{row['grad_norm']:.6g}",
                         f"{row['steps_per_s']:.4g}", *(f"{v:.6g}" for v in levels)])
        self.f.flush()

    def close(self) -> None:
        self.f.close()
