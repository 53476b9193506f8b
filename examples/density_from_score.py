"""The density from a score by the line integral, for gmm2d's analytic score and a learned one.

A score determines its density up to the normalising constant (the Korean tutorial notes from
energy-based models to NCSN, and the lecture slides on generative models):

    log p(x) - log p(x0) = int_0^1 s(x0 + t (x - x0))^T (x - x0) dt      (``log_density_ratio``)

``density_grid`` integrates the score along the edges of a grid from a reference point and
normalises exp(log p) so its Riemann sum is 1. For a gradient field (the analytic score, or any
energy model's) the path does not matter; a score network s_theta is not constrained to be a
gradient, and its Jacobian's asymmetry ||J - J^T||_F / ||J||_F (``jacobian_asymmetry``, 0 for a
gradient field) measures by how much it is not; then the recovered density depends on the path
(here, on the reference point x0 the grid is integrated from: the grid's log-densities are
summed first along the horizontal line through x0, then vertically, so from x0 = (4, -4) every
column's level comes from a line through the low-density region, where the learned field is
least accurate).

The learned score is a SiLU score MLP trained by sliced score matching (SSM-VR). Figures:
``densities.png``, the true density next to the densities recovered from the analytic and the
learned score (the latter integrated from the centre and from (4, -4)); ``line_integral.png``,
log p(x) - log p(x0) along the diagonal from (-5, -5) to (5, 5), the truth against both line
integrals. Summary: the total variation distance 1/2 sum |p - q| dA of each recovered density
to the true one on the grid, the largest error of the analytic line integral at random points,
the Jacobian asymmetry of both fields, and the total variation between the learned densities
integrated from the two reference points.

    python examples/density_from_score.py     # gallery/density_from_score/
    python examples/density_from_score.py --tiny --out /tmp/density
"""

from __future__ import annotations

import torch
from _gallery import density_panels, fit, seeded, setup, total_variation, true_grid, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.density import density_grid, jacobian_asymmetry, log_density_ratio
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence
from scorematch.models import ScoreMLP
from scorematch.objectives import ssm

NAME = "density_from_score"
LIMS = ((-6.0, 6.0), (-6.0, 6.0))


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="tiny steps and grids")
    steps, batch, grid_n, n_check, n_fisher = (20, 64, 24, 100, 500) if args.tiny else (2000, 256, 100, 1000, 10_000)
    gen = seeded(args.seed)
    dist = toy("gmm2d")

    model = ScoreMLP(2, hidden=128, depth=2)
    fit(model, ssm, lambda: dist.sample(batch, generator=gen), steps, variance_reduced=True, generator=gen)
    t_train = clock()

    # The analytic line integral against the closed form at random points (x0 = the origin).
    x = dist.sample(n_check, generator=gen)
    x0 = torch.zeros(2)
    ratio = log_density_ratio(dist.score, x, x0)
    truth_ratio = dist.log_prob(x) - dist.log_prob(x0[None])
    line_error = float((ratio - truth_ratio).abs().max())

    with torch.no_grad():
        from_true = density_grid(dist.score, LIMS, n=grid_n)
        from_model = density_grid(model, LIMS, n=grid_n)
        from_model_other_x0 = density_grid(model, LIMS, n=grid_n, x0=(4.0, -4.0))
    coords = from_true.coords
    truth = true_grid(dist, coords)

    panels = {
        "true density": truth,
        "line integral of the analytic score": from_true.density,
        "line integral of the learned score": from_model.density,
        "learned score, from x0 = (4, -4)": from_model_other_x0.density,
    }
    density_panels(panels, coords, LIMS, out / "densities.png", width=4.7)

    # log p along the diagonal, relative to its start.
    t = torch.linspace(0, 1, 201)[:, None]
    start, end = torch.tensor([-5.0, -5.0]), torch.tensor([5.0, 5.0])
    line = start + t * (end - start)
    with torch.no_grad():
        curves = {
            "true log p(x) - log p(x0)": dist.log_prob(line) - dist.log_prob(start[None]),
            "line integral, analytic score": log_density_ratio(dist.score, line, start),
            "line integral, learned score": log_density_ratio(model, line, start),
        }
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for (label, values), style in zip(curves.items(), ("-", "--", ":"), strict=True):
        ax.plot(line[:, 0].numpy(), values.numpy(), style, lw=2, label=label)
    ax.set_xlabel("x_1 = x_2 on the diagonal, from x0 = (-5, -5)")
    ax.set_ylabel("log-density ratio")
    ax.set_title("log p along the diagonal from the score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "line_integral.png", dpi=plotting.DPI)

    x_asym = dist.sample(n_check, generator=gen)
    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "train_steps": steps,
        "grid": [grid_n, grid_n],
        "total_variation_to_true_density": {
            "analytic_score": total_variation(from_true.density, truth, coords),
            "learned_score": total_variation(from_model.density, truth, coords),
            "learned_score_from_x0_(4,-4)": total_variation(from_model_other_x0.density, truth, coords),
        },
        "total_variation_learned_x0_centre_vs_x0_(4,-4)": total_variation(from_model.density,
                                                                           from_model_other_x0.density, coords),
        "max_abs_error_analytic_line_integral": line_error,
        "jacobian_asymmetry": {
            "analytic_score": float(jacobian_asymmetry(dist.score, x_asym)),
            "learned_score": float(jacobian_asymmetry(model, x_asym)),
        },
        "fisher_divergence_learned": fisher_divergence(model, dist, n=n_fisher, generator=gen),
        "train_seconds": t_train,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
