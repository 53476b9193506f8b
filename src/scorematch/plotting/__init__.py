"""Plotting primitives: arrays, score functions and models in, matplotlib figures out.

Nothing here knows about run folders (the figures of a run are ``scorematch.run.reporting.figures``).
Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no global state),
draws into ``ax`` when one is given, returns the figure, and writes a PNG when ``path`` is
given. Score functions are any score_fn(x) -> tensor shaped like x, or a module with
``.score``; they are evaluated in chunks without gradients (energy models with autograd on).

    fields     vector_field, compare_fields
    densities  density
    samples    samples_over_data, histogram_steps, trajectories
    images     make_grid, save_image_grid, image_grid, annealing_rows
    curves     running_mean, loss_curves
"""

from scorematch.plotting._base import DPI
from scorematch.plotting.curves import loss_curves, running_mean
from scorematch.plotting.densities import density
from scorematch.plotting.fields import compare_fields, vector_field
from scorematch.plotting.images import annealing_rows, image_grid, make_grid, save_image_grid
from scorematch.plotting.samples import histogram_steps, samples_over_data, trajectories

__all__ = [
    "DPI", "annealing_rows", "compare_fields", "density", "histogram_steps", "image_grid", "loss_curves",
    "make_grid", "running_mean", "samples_over_data", "save_image_grid", "trajectories", "vector_field",
]
