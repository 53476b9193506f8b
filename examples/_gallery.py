"""What the gallery scripts (examples/*.py) share: their command line, summary, training loop and grids.

Not an example: the docs gallery (docs/hooks.py) and tests/test_examples.py skip files whose name
starts with an underscore. The scripts are run as ``python examples/NAME.py``, which puts this
folder on sys.path, so they import it as ``from _gallery import ...``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from scorematch import plotting

Coords = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------- command line, summary


def setup(
    name: str, doc: str, argv: list[str] | None, *, tiny: str, options: Mapping[str, dict] | None = None
) -> tuple[argparse.Namespace, Path, Callable[[], float]]:
    """Parse the gallery's command line, apply ``--threads`` and create ``--out``.

    Every script takes ``--out`` (default ``gallery/NAME``), ``--tiny`` (help: "a few seconds: "
    + ``tiny``), ``--seed`` and ``--threads``; ``options`` maps further flags to their
    ``add_argument`` keywords (they come before ``--threads``). The parser's description is the
    first paragraph of ``doc``. Returns the arguments, the output folder and a clock: the seconds
    since the start.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gallery") / name, help="output folder")
    p.add_argument("--tiny", action="store_true", help=f"a few seconds: {tiny}")
    p.add_argument("--seed", type=int, default=0)
    for flag, kwargs in (options or {}).items():
        p.add_argument(flag, **kwargs)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    return args, args.out, lambda: time.perf_counter() - t_start


def seeded(seed: int) -> torch.Generator:
    """Seed torch's global generator and return a fresh generator seeded the same."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def write_summary(out: Path, summary: dict) -> dict:
    """Print ``summary`` as JSON and write it to ``out/summary.json``; returns it."""
    text = json.dumps(summary, indent=2)
    print(text)
    (out / "summary.json").write_text(text + "\n")
    return summary


# ------------------------------------------------------------------------------------- training


def fit(model: torch.nn.Module, objective: Callable[..., torch.Tensor], batch: Callable[[], torch.Tensor],
        steps: int, **kwargs) -> list[float]:
    """``steps`` Adam steps (lr 1e-3) on ``objective(model, batch(), **kwargs)``; then ``model.eval()``.

    Returns the loss of every step.
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = objective(model, batch(), **kwargs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def final_loss(losses: list[float]) -> float:
    """The mean of the last 5% of the losses (at least the last one)."""
    return float(np.mean(losses[-max(1, len(losses) // 20):]))


def jacobians(score_fn: Callable, x: torch.Tensor) -> torch.Tensor:
    """grad_x s(x) at each point of ``x`` (N x D x D), exactly, by autodiff."""
    return torch.func.vmap(torch.func.jacrev(lambda xi: score_fn(xi[None])[0]))(x).detach()


# ------------------------------------------------------------------------------------ 2-D grids


def mesh(coords: Coords) -> torch.Tensor:
    """The points of the grid ``coords`` = (xs, ys), "ij" indexing, as an (len(xs) * len(ys)) x 2 tensor."""
    gx, gy = torch.meshgrid(*coords, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


def grid_points(lims: tuple, m: int) -> torch.Tensor:
    """The m x m grid over ``lims`` = ((xlo, xhi), (ylo, yhi)) (see ``mesh``)."""
    (xlo, xhi), (ylo, yhi) = lims
    return mesh((torch.linspace(xlo, xhi, m), torch.linspace(ylo, yhi, m)))


def cell_area(coords: Coords) -> float:
    return float((coords[0][1] - coords[0][0]) * (coords[1][1] - coords[1][0]))


def normalise(log_values: torch.Tensor, coords: Coords) -> torch.Tensor:
    """exp(log_values) normalised so its Riemann sum on the grid is 1 (as ``density_grid`` does)."""
    p = torch.exp(log_values - log_values.max())
    return p / (p.sum() * cell_area(coords))


def true_grid(dist, coords: Coords) -> torch.Tensor:
    """The true density on density_grid's grid ("ij" indexing), normalised the same way."""
    return normalise(dist.log_prob(mesh(coords)).reshape(len(coords[0]), len(coords[1])), coords)


def total_variation(p: torch.Tensor, q: torch.Tensor, coords: Coords) -> float:
    """1/2 sum |p - q| dA of two densities on the grid."""
    return float(0.5 * (p - q).abs().sum() * cell_area(coords))


def density_panels(panels: dict[str, torch.Tensor], coords: Coords, lims: tuple, path: Path,
                   width: float = 4.6) -> None:
    """One figure, one panel per density on the grid (title: values), saved to ``path``."""
    fig = Figure(figsize=(width * len(panels), 4.2), layout="constrained")
    for i, (title, values) in enumerate(panels.items()):
        plotting.density((coords, values), lims, ax=fig.add_subplot(1, len(panels), i + 1), title=title)
    fig.savefig(path, dpi=plotting.DPI)
