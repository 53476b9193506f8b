"""The figures of a run folder: ``scorematch plot RUN`` and the report's images.

Built from the plotting primitives of ``scorematch.plotting`` with the run's model
(``scorematch.run.build.loading.load``), held-out data and samples (``scorematch.run.sampling.generate``).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure

from scorematch.files import atomic_write, probe_writable
from scorematch.plotting import (
    annealing_rows,
    compare_fields,
    density,
    histogram_steps,
    image_grid,
    loss_curves,
    samples_over_data,
    trajectories,
)
from scorematch.plotting._base import DPI, PathLike, _new_figure
from scorematch.run.folder.outdir import claim_folder
from scorematch.run.folder.validate import check_seed
from scorematch.run.system.limits import check_request

#: the files ``run_figures`` may write
FIGURE_NAMES = ("loss.png", "samples.png", "annealing.png", "score_field.png", "trajectory.png", "density.png")


def run_figures(run_dir: PathLike, out: PathLike | None = None, n: int = 1000, seed: int = 0,
                device: str = "cpu", progress: bool = False, force: bool = False) -> list[Path]:
    """All figures of a run folder, written as PNGs into ``out`` (default RUN/plots); the model
    runs on ``device``, ``progress`` shows the sampler's progress.

    loss.png (per noise level for NCSN); for 1-D/2-D data: score_field.png (learned beside the
    true field where known, and their disagreement), density.png (the density the model implies
    on a grid, beside the true one), samples.png (samples over held-out data) and
    trajectory.png (Langevin / annealed-Langevin chains); for images: samples.png (a grid) and
    annealing.png (one row per noise level). No symbolic link is followed inside ``out`` (or
    inside the run folder for RUN/plots), and the folder is checked writable before any work.
    An ``out`` folder must be new, empty or one this function wrote before; else it is refused,
    or with ``force`` the files of the names it writes are renamed NAME.orig first.
    """
    from scorematch.density import density_grid
    from scorematch.run.build.loading import data_score, held_out, load
    from scorematch.run.folder.runfiles import read_loss_csv
    from scorematch.run.sampling.generate import generate, resolve_sampler
    from scorematch.run.system.environment import say, start_line

    check_seed("seed", seed)
    run = Path(run_dir)
    folder = Path(out) if out is not None else run / "plots"
    root = Path(out) if out is not None else run
    model = load(run, device=device)
    dev = next(model.parameters()).device
    check_request(model, n, model.run_info["data"]["sample_shape"], dev)
    if out is not None:
        claim_folder(folder, force, FIGURE_NAMES)
    if progress:
        say(start_line("plot", dev, torch.get_num_threads(), model))
    probe_writable(folder / "loss.png", root=root)
    full, test = held_out(run)
    written: list[Path] = []

    def emit(fig: Figure, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        atomic_write(folder / name, buf.getvalue(), root=root)
        written.append(folder / name)

    if (run / "loss.csv").exists():
        steps, series = read_loss_csv(run / "loss.csv")
        if steps:
            emit(loss_curves(steps, series, title=f"training loss ({model.run_info['config']['objective']})"),
                 "loss.png")
    sampler, _ = resolve_sampler(model, None, None, model.run_info)  # the one generate runs
    x, traj = generate(model, model.run_info, n, seed=seed, return_trajectory=True, progress=progress)
    x, traj = x.cpu(), traj.cpu() if traj is not None else None
    if full.kind == "image":
        emit(image_grid(x[:64].cpu(), title="samples"), "samples.png")
        if traj is not None and traj.dim() == 3 and traj.shape[-1] == x[0].numel():  # a flat model's states
            traj = traj.reshape(*traj.shape[:2], *x.shape[1:])
        if traj is not None and traj.dim() == 5:
            sig = model.run_info["schedule"].get("sigmas")
            emit(annealing_rows(traj.cpu(), sigmas=sig, max_rows=12, title=f"{sampler}: one row per noise level"),
                 "annealing.png")
        return written
    d = x.shape[1]
    if d > 2:
        emit(samples_over_data(x[:, :2].cpu(), test[:, :2], title="samples (first two coordinates)"), "samples.png")
        return written
    data = test.cpu()
    lo = data.min(0).values - 0.5 * data.std(0)
    hi = data.max(0).values + 0.5 * data.std(0)
    lims = [(float(lo[i]), float(hi[i])) for i in range(d)]
    on_device = data_score(model)

    def score(y: torch.Tensor) -> torch.Tensor:
        return on_device(y.to(dev)).to(y.device)

    emit(samples_over_data(x.cpu(), data, title="model samples over held-out data"), "samples.png")
    if d == 2:
        fields = {"learned": score} if full.dist is None else {"true": full.dist.score, "learned": score}
        emit(compare_fields(fields, lims, data=data), "score_field.png")
        emit(trajectories(traj.cpu(), data=data, title=f"{sampler} chains"), "trajectory.png")
    else:
        emit(histogram_steps(traj.cpu(), [0, len(traj) // 10, len(traj) // 2, len(traj) - 1],
                             true_pdf=(lambda t: full.dist.log_prob(t.reshape(-1, 1)).exp())
                             if full.dist is not None else None), "trajectory.png")
    grid_lims = lims[0] if d == 1 else lims
    panels = [("implied by the learned score", density_grid(score, grid_lims, n=100 if d == 2 else 400))]
    if full.dist is not None:
        panels.insert(0, ("true density", full.dist.log_prob))
    fig = _new_figure((5.0 * len(panels), 4.2))
    for i, (title, obj) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        density(obj, grid_lims, ax=ax, title=title)
    emit(fig, "density.png")
    return written
