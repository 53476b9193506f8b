"""Sliced score matching, plain and variance reduced, on gmm2d: the estimator's variance.

Sliced score matching (Song et al. 2019; the Chinese / English tutorial notes on score matching)
replaces ISM's Jacobian trace by
random projections v (Gaussian N(0, I) or Rademacher +-1):

    SSM     E_x E_v[ v^T (grad_x s) v + 1/2 (v^T s)^2 ]
    SSM-VR  E_x E_v[ v^T (grad_x s) v + 1/2 ||s||^2 ]      (second term analytic in v)

Both are unbiased for ISM's exact value E_x[tr(grad_x s) + 1/2 ||s||^2], so at a fixed network
their batch estimate with M projections per point only differs from ISM's by noise whose
variance falls as 1/M. Per point, the projected term is a quadratic form v^T A v with
A = J (SSM-VR) or A = J + 1/2 s s^T (SSM), J = grad_x s, of variance 2 ||sym A||_F^2 for
Gaussian v and 2 (||sym A||_F^2 - sum_i A_ii^2) for Rademacher v; the batch mean of n points
has variance (1 / (n^2 M)) sum_i Var_i. Rademacher projections remove the diagonal's share.
SSM-VR removes the (v^T s)^2 term, but that term is negatively correlated with v^T J v (J is
negative definite near a mode, s s^T positive), so the gain depends on the dimension: for
p = N(0, I_D) with the exact score the per-point variance is (D^2 + 2D)/2 for SSM and 2D for
SSM-VR (Gaussian v), a ratio (D + 2)/4 that is exactly 1 in D = 2. On this 2-D toy the two
Gaussian estimators are indeed about as noisy; VR pays off in higher dimension.

Two score MLPs are trained (SSM and SSM-VR, Gaussian, one projection), then, at the SSM-VR
network and a fixed batch, each estimator is drawn R times per M in 1..64. Figures: the
variance against M (log-log) with the closed-form prediction (dashed) and a 1/M slope; the
estimate's mean +- one std against ISM's exact value; the training losses; the learned fields.
Summary: the variances at M = 1 and 64, their fitted log-log slope (-1 expected), ISM's exact
value and each estimator's mean, and the Fisher divergence of each trained model.

    python examples/ssm_variance.py           # gallery/ssm_variance/
    python examples/ssm_variance.py --tiny --out /tmp/ssm
"""

from __future__ import annotations

import numpy as np
import torch
from _gallery import fit, jacobians, seeded, setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence
from scorematch.models import ScoreMLP
from scorematch.objectives import ism, ssm

NAME = "ssm_variance"
LIMS = ((-6.0, 6.0), (-6.0, 6.0))
VARIANTS = {  # name: (projection, variance_reduced)
    "SSM, Gaussian": ("gaussian", False),
    "SSM, Rademacher": ("rademacher", False),
    "SSM-VR, Gaussian": ("gaussian", True),
    "SSM-VR, Rademacher": ("rademacher", True),
}


def predicted_variance(model: torch.nn.Module, x: torch.Tensor, m: int, projection: str, reduced: bool) -> float:
    """Closed-form variance over projections of the batch-mean estimator with m projections/point."""
    with torch.no_grad():
        s = model.score(x)
    jac = jacobians(model.score, x)
    a = jac if reduced else jac + 0.5 * s[:, :, None] * s[:, None, :]
    sym = 0.5 * (a + a.transpose(1, 2))
    var = 2 * sym.pow(2).sum((1, 2))
    if projection == "rademacher":
        var = var - 2 * sym.diagonal(dim1=1, dim2=2).pow(2).sum(1)
    return float(var.sum() / (len(x) ** 2 * m))


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="tiny steps and draws")
    if args.tiny:
        steps, batch, n_fisher, n_fixed, draws, ms, grid_n = 20, 64, 500, 16, 6, [1, 4, 16], 8
    else:
        steps, batch, n_fisher, n_fixed, draws, ms, grid_n = 2000, 256, 10_000, 128, 100, [1, 2, 4, 8, 16, 32, 64], 25
    gen = seeded(args.seed)
    dist = toy("gmm2d")

    models = {"SSM": ScoreMLP(2, hidden=128, depth=2), "SSM-VR": ScoreMLP(2, hidden=128, depth=2)}
    losses: dict[str, list[float]] = {}
    for name, model in models.items():
        losses[name] = fit(model, ssm, lambda: dist.sample(batch, generator=gen), steps,
                           variance_reduced=name == "SSM-VR", generator=gen)
    t_train = clock()

    # The estimators' spread over projection draws at one fixed network and one fixed batch.
    net = models["SSM-VR"]
    x = dist.sample(n_fixed, generator=gen)
    exact = ism(net, x).item()
    stats: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for name, (projection, reduced) in VARIANTS.items():
            values = np.array([[ssm(net, x, m, projection, reduced, generator=gen).item() for _ in range(draws)]
                               for m in ms])
            stats[name] = {
                "mean": values.mean(1).tolist(),
                "variance": values.var(1, ddof=1).tolist(),
                "mse_vs_ism": ((values - exact) ** 2).mean(1).tolist(),
                "predicted_variance": [predicted_variance(net, x, m, projection, reduced) for m in ms],
            }

    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax_var, ax_mean = fig.subplots(1, 2)
    for i, (name, st) in enumerate(stats.items()):
        ax_var.loglog(ms, st["variance"], "o-", color=f"C{i}", label=name)
        ax_var.loglog(ms, st["predicted_variance"], "--", color=f"C{i}", lw=1)
        ax_mean.errorbar(np.array(ms) * (1 + 0.04 * (i - 1.5)), st["mean"], yerr=np.sqrt(st["variance"]),
                         fmt="o-", color=f"C{i}", capsize=3, ms=4, label=name)
    top = max(st["variance"][0] for st in stats.values())
    ax_var.loglog(ms, [top / m for m in ms], ":", color="0.4", label="slope 1/M")
    ax_var.set_xlabel("projections per point M")
    ax_var.set_ylabel("variance over projection draws")
    ax_var.set_title(f"estimator variance at a fixed network ({n_fixed} points, {draws} draws)\n"
                     "dashed: closed form", fontsize=10)
    ax_var.legend(fontsize=8)
    ax_var.grid(alpha=0.3, which="both")
    ax_mean.axhline(exact, color="k", lw=1.2, label=f"ISM exact value {exact:.3f}")
    ax_mean.set_xscale("log")
    ax_mean.set_xlabel("projections per point M")
    ax_mean.set_ylabel("estimate (mean +- 1 std)")
    ax_mean.set_title("SSM / SSM-VR estimates against ISM's exact value", fontsize=10)
    ax_mean.legend(fontsize=8)
    ax_mean.grid(alpha=0.3, which="both")
    for ax in (ax_var, ax_mean):
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.minorticks_off()
    fig.savefig(out / "variance_vs_projections.png", dpi=plotting.DPI)

    plotting.loss_curves(None, losses, path=out / "loss.png", log_y=False)
    plotting.compare_fields({"true": dist.score, "SSM": models["SSM"], "SSM-VR": models["SSM-VR"]}, LIMS, n=grid_n,
                       data=dist.sample(2000, generator=gen), path=out / "fields.png")

    log_m = np.log(ms)
    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "train_steps": steps,
        "fisher_divergence": {name: fisher_divergence(m, dist, n=n_fisher, generator=gen)
                              for name, m in models.items()},
        "ism_exact_value": exact,
        "projections": ms,
        "draws_per_M": draws,
        "variance_at_M1": {name: st["variance"][0] for name, st in stats.items()},
        "variance_at_Mmax": {name: st["variance"][-1] for name, st in stats.items()},
        "mse_vs_ism_at_M1": {name: st["mse_vs_ism"][0] for name, st in stats.items()},
        "predicted_variance_at_M1": {name: st["predicted_variance"][0] for name, st in stats.items()},
        "loglog_slope": {name: float(np.polyfit(log_m, np.log(st["variance"]), 1)[0]) for name, st in stats.items()},
        "mean_estimate_at_Mmax": {name: st["mean"][-1] for name, st in stats.items()},
        "train_seconds": t_train,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
