"""Implicit score matching with a ReLU network (fails) and a SiLU one (works) on gmm2d.

Implicit score matching (Hyvarinen 2005) needs no target score:

    J(theta) = E_x[ tr(grad_x s_theta(x)) + 1/2 ||s_theta(x)||^2 ]          (``ism``)

The Chinese / English tutorial notes on score matching tried it on the 2-D mixture and failed:
"the derivative magnitude is near 0, but the trace is almost -0.0004". The cause, found there
at last, is the ReLU network. With
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

import warnings

import torch
from _gallery import (
    density_panels,
    final_loss,
    fit,
    jacobians,
    mesh,
    normalise,
    seeded,
    setup,
    total_variation,
    true_grid,
    write_summary,
)

from scorematch import ScoreMatchWarning, plotting
from scorematch.density import density_grid
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence
from scorematch.models import EnergyMLP, ScoreMLP
from scorematch.objectives import ism

NAME = "ism_relu_vs_silu"
LIMS = ((-6.0, 6.0), (-6.0, 6.0))


def mean_trace(score_fn, x: torch.Tensor) -> float:
    """E_x tr(grad_x s(x)) with the exact 2 x 2 Jacobian per point."""
    return float(jacobians(score_fn, x).diagonal(dim1=1, dim2=2).sum(-1).mean())


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="tiny steps and grids")
    steps, batch, n_fisher, grid_n, dens_n = (20, 64, 500, 8, 24) if args.tiny else (2000, 256, 10_000, 25, 100)
    gen = seeded(args.seed)
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ScoreMatchWarning)
            losses[name] = fit(model, ism, lambda: dist.sample(batch, generator=gen), steps)
        for w in caught:
            print(f"warning while training {name}: {w.message}")
            if name == "ReLU" and issubclass(w.category, ScoreMatchWarning):
                relu_warning = str(w.message)
    t_train = clock()

    data = dist.sample(2000, generator=gen)
    plotting.compare_fields({"true": dist.score, "ReLU": models["ReLU"], "SiLU": models["SiLU"]}, LIMS, n=grid_n,
                       data=data, path=out / "fields.png")
    plotting.loss_curves(None, losses, path=out / "loss.png", log_y=False,
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
    density_panels(densities, coords, LIMS, out / "densities.png")

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
        "final_ism_loss": {name: final_loss(v) for name, v in losses.items()},
        "total_variation_to_true_density": {
            "ReLU": total_variation(grids["ReLU"].density, truth, coords),
            "SiLU": total_variation(grids["SiLU"].density, truth, coords),
            "energy (SiLU)": total_variation(densities["exp(-E), energy model"], truth, coords),
        },
        "relu_warned": bool(relu_warning),
        "relu_warning": relu_warning,
        "train_seconds": t_train,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
