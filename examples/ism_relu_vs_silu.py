"""Implicit score matching with a ReLU network (fails) and a SiLU one (works) on gmm2d.

Implicit score matching (Hyvarinen 2005) needs no target score:

    J(theta) = E_x[ tr(grad_x s_theta(x)) + 1/2 ||s_theta(x)||^2 ]          (``ism``)

The seed document 001 tried it on the 2-D mixture and failed: "the derivative magnitude is near
0, but the trace is almost -0.0004". The cause, found there at last, is the ReLU network. With
a ReLU energy E, s = -grad E is piecewise constant and tr(grad_x s) = -Laplacian E = 0 almost
everywhere. With a ReLU score network s_theta, the Jacobian is piecewise constant: the trace
is constant on each linear region, and its autodiff gradient moves only the slopes, never the
kinks (the boundary terms that make ISM equal ESM are invisible to it). Either way the trace
term cannot shape the field, the 1/2 E||s_theta||^2 term wins, and s_theta shrinks to 0 -
and with it the trace (scorematch warns when ISM/SSM meet a piecewise-linear network). With
SiLU (swish) the same network and objective recover the score. Three models are trained with
the same budget: a ReLU ScoreMLP, a SiLU ScoreMLP, and a SiLU EnergyMLP (s = -grad E, so ISM's
trace is -Laplacian E and exp(-E) is the unnormalised density directly).

Figures: the score fields (true, ReLU, SiLU, and the SiLU error), the densities (true; from
the learned scores by the line integral, ``scorematch.density.density_grid``; exp(-E) of the
energy model, normalised on the grid), and the loss curves. Summary: Fisher divergences
1/2 E_p||s_theta - s*||^2, the mean Jacobian trace of each score network, the total variation
distance of each recovered density to the true one on the grid, and the ReLU warning. The
ReLU net's Fisher divergence stays at that of the zero field, 1/2 E||s*||^2, and its trace
falls from its value at initialisation to about 0.

    python examples/ism_relu_vs_silu.py       # gallery/ism_relu_vs_silu/
    python examples/ism_relu_vs_silu.py --tiny --out /tmp/ism
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from scorematch import ScoreMatchWarning, viz
from scorematch.density import density_grid
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence
from scorematch.models import EnergyMLP, ScoreMLP
from scorematch.objectives import ism

NAME = "ism_relu_vs_silu"
LIMS = ((-6.0, 6.0), (-6.0, 6.0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gallery") / NAME, help="output folder")
    p.add_argument("--tiny", action="store_true", help="a few seconds: tiny steps and grids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def write_summary(out: Path, summary: dict) -> None:
    text = json.dumps(summary, indent=2)
    print(text)
    (out / "summary.json").write_text(text + "\n")


def mean_trace(score_fn, x: torch.Tensor) -> float:
    """E_x tr(grad_x s(x)) with the exact 2 x 2 Jacobian per point."""
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: score_fn(xi[None])[0]))(x)
    return float(jac.detach().diagonal(dim1=1, dim2=2).sum(-1).mean())


def true_grid(dist, coords: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The true density on the grid, normalised like density_grid (Riemann sum 1), "ij" indexing."""
    return normalise(dist.log_prob(mesh(coords)).reshape(len(coords[0]), len(coords[1])), coords)


def mesh(coords: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    gx, gy = torch.meshgrid(*coords, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


def normalise(log_values: torch.Tensor, coords: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    area = float((coords[0][1] - coords[0][0]) * (coords[1][1] - coords[1][0]))
    p = torch.exp(log_values - log_values.max())
    return p / (p.sum() * area)


def total_variation(p: torch.Tensor, q: torch.Tensor, coords: tuple[torch.Tensor, torch.Tensor]) -> float:
    area = float((coords[0][1] - coords[0][0]) * (coords[1][1] - coords[1][0]))
    return float(0.5 * (p - q).abs().sum() * area)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps, batch, n_fisher, grid_n, dens_n = (20, 64, 500, 8, 24) if args.tiny else (2000, 256, 10_000, 25, 100)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    dist = toy("gmm2d")

    models = {
        "ReLU": ScoreMLP(2, hidden=128, depth=2, activation="relu"),
        "SiLU": ScoreMLP(2, hidden=128, depth=2, activation="silu"),
        "energy (SiLU)": EnergyMLP(2, hidden=128, depth=2, activation="silu"),
    }
    losses: dict[str, list[float]] = {}
    relu_warning = ""
    x_eval = dist.sample(1000, generator=gen)
    trace_at_init = {name: mean_trace(m.score, x_eval) for name, m in models.items()}
    for name, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses[name] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ScoreMatchWarning)
            for _ in range(steps):
                loss = ism(model, dist.sample(batch, generator=gen))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses[name].append(loss.item())
        for w in caught:
            print(f"warning while training {name}: {w.message}")
            if name == "ReLU" and issubclass(w.category, ScoreMatchWarning):
                relu_warning = str(w.message)
        model.eval()
    t_train = time.perf_counter() - t_start

    data = dist.sample(2000, generator=gen)
    viz.compare_fields({"true": dist.score, "ReLU": models["ReLU"], "SiLU": models["SiLU"]}, LIMS, n=grid_n,
                       data=data, path=out / "fields.png")
    viz.loss_curves(None, losses, path=out / "loss.png", log_y=False,
                    title="ISM loss E[tr(grad s) + |s|^2/2] (thin: raw, thick: running mean)")

    # Densities: the true one, the line integral of each learned score, exp(-E) of the energy model.
    with torch.no_grad():
        grids = {name: density_grid(models[name], LIMS, n=dens_n) for name in ("ReLU", "SiLU")}
        coords = grids["SiLU"].coords
        energy = models["energy (SiLU)"].energy(mesh(coords)).reshape(dens_n, dens_n)
    truth = true_grid(dist, coords)
    densities = {
        "true density": truth,
        "ReLU score, line integral": grids["ReLU"].density,
        "SiLU score, line integral": grids["SiLU"].density,
        "exp(-E), energy model": normalise(-energy, coords),
    }
    fig = Figure(figsize=(4.6 * len(densities), 4.2), layout="constrained")
    for i, (title, values) in enumerate(densities.items()):
        viz.density((coords, values), LIMS, ax=fig.add_subplot(1, len(densities), i + 1), title=title)
    fig.savefig(out / "densities.png", dpi=viz.DPI)

    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "train_steps": steps,
        "fisher_divergence": {name: fisher_divergence(m, dist, n=n_fisher, generator=gen)
                              for name, m in models.items()},
        "fisher_divergence_of_zero_score": float(0.5 * dist.score(x_eval).pow(2).sum(1).mean()),
        "mean_jacobian_trace_at_init": trace_at_init,
        "mean_jacobian_trace": {name: mean_trace(m.score, x_eval) for name, m in models.items()},
        "mean_true_trace": mean_trace(dist.score, x_eval),
        "final_ism_loss": {name: float(np.mean(v[-max(1, steps // 20):])) for name, v in losses.items()},
        "total_variation_to_true_density": {
            "ReLU": total_variation(grids["ReLU"].density, truth, coords),
            "SiLU": total_variation(grids["SiLU"].density, truth, coords),
            "energy (SiLU)": total_variation(densities["exp(-E), energy model"], truth, coords),
        },
        "relu_warned": bool(relu_warning),
        "relu_warning": relu_warning,
        "train_seconds": t_train,
        "runtime_seconds": time.perf_counter() - t_start,
    }
    write_summary(out, summary)
    return summary


if __name__ == "__main__":
    main()
