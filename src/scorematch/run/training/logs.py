"""Where a training run reports: loss.csv, TensorBoard (when installed) and a progress bar."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError
from scorematch.files import atomic_write, ensure_folder, open_append, output_error
from scorematch.run.folder.config import TrainConfig
from scorematch.run.folder.runfiles import loss_header, parse_loss_row, read_loss_lines


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
    ensure_folder(run_dir / "tensorboard", root=run_dir)  # refuses a planted link; the writer is TensorBoard's
    return SummaryWriter(str(run_dir / "tensorboard"))


class CsvLog:
    """loss.csv: step, loss, grad_norm, steps_per_s, then loss_level_1..L for NCSN runs.

    Appending on resume keeps the well-formed rows up to the resume step and drops the others
    (rows logged after the checkpoint, an unterminated last row of a killed run, damaged lines),
    saying how many it dropped."""

    def __init__(self, path: Path, n_levels: int, append: bool, start: int = 0) -> None:
        self.fields = loss_header(n_levels)
        new = not (append and (path.exists() or path.is_symlink()))
        if not new:
            header, lines = read_loss_lines(path)
            if header != self.fields:
                raise CheckpointError(f"{path} has the columns {','.join(header)}, this run logs "
                                      f"{','.join(self.fields)}; move it away to resume")
            keep, damaged = [], 0
            for line in lines:
                vals = parse_loss_row(line, len(self.fields))
                if vals is None or not line.endswith("\n"):
                    damaged += 1
                    continue
                if vals[0] <= start:
                    keep.append(line)
            if damaged:
                print(f"scorematch: {path}: dropped {damaged} malformed or unterminated line(s)", file=sys.stderr)
            if len(keep) != len(lines):
                atomic_write(path, (",".join(self.fields) + "\r\n" + "".join(keep)).encode())
        if new:
            atomic_write(path, (",".join(self.fields) + "\r\n").encode())
        self.path = path
        self.f = open_append(path)
        self.w = csv.writer(self.f)

    def write(self, row: dict[str, float], levels: list[float]) -> None:
        try:
            self.w.writerow([row["step"], f"{row['loss']:.6g}", f"{row['grad_norm']:.6g}",
                             f"{row['steps_per_s']:.4g}", *(f"{v:.6g}" for v in levels)])
            self.f.flush()
        except OSError as err:
            raise output_error(err, self.path) from None

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass


def sample_grid(model: Any, schedule: dict[str, Any], ds: Any, run_dir: Path, seed: int, step: int) -> None:
    """RUN/samples/step_N.png: 36 samples of ``model`` (an image run's EMA model during training)
    drawn with the default sampler of its kind."""
    from scorematch.plotting import save_image_grid
    from scorematch.run.sampling.generate import generate

    was_training = model.training
    model.eval()
    info = {"schedule": schedule,
            "data": {"kind": ds.kind, "sample_shape": list(ds.sample_shape), "lo": 0.0, "hi": 1.0}}
    x = generate(model, info, n=36, seed=seed)
    save_image_grid(x.clamp(0, 1).cpu(), run_dir / "samples" / f"step_{step:08d}.png", nrow=6, root=run_dir)
    model.train(was_training)
