"""Score-SDE sampling and likelihood on gmm2d with a model trained by continuous-time DSM.

A time-conditional score MLP s_theta(x, t) is trained with ``scorematch.train(objective="sde",
sde="ve")`` (continuous-time DSM, Song et al. 2021; the limit of NCSN's noise chain that the
English tutorial notes from EBMs to NCSN and SDEs derive) and reloaded with ``scorematch.load``.
The VE SDE dx = sqrt(d[sigma^2(t)]/dt) dw has sigma(t) = sigma_min (sigma_max / sigma_min)^t,
with sigma_max the data's largest pairwise distance and sigma_min = 0.01. It is then sampled
three ways from the prior N(0, sigma_max^2 I):

- ``euler_maruyama``: the reverse SDE dx = [f - g^2 s] dt + g dw_bar, 500 steps;
- ``pc``: predictor-corrector, reverse-diffusion predictor + one Langevin corrector step
  (snr 0.16) per time step, 500 steps;
- ``ode``: the probability-flow ODE dx = [f - 1/2 g^2 s] dt with an adaptive solver (dopri5).

The probability-flow ODE also gives the model's log-density (``scorematch.likelihood.log_prob``,
the instantaneous change of variables with the exact 2-D divergence), evaluated on a grid next
to the true density and at held-out points against the true log p.

Figures: ``samples.png`` (each sampler's samples over exact ones), ``density.png`` (true density
and the ODE likelihood's), ``score_error_vs_t.png`` (Fisher divergence of s_theta(., t) to the
analytic noisy score along t: where in time the model is accurate), ``loss.png``. The samplers
differ in how much a score error at small t costs them: the reverse SDE and the ODE move a
sample by g(t)^2 s dt, which shrinks with sigma(t)^2, while the corrector's Langevin step is set
by the signal-to-noise rule eps = 2 (snr ||z|| / ||s||)^2 whatever sigma(t), so PC is the one
that shows a poorly learned band of t. Summary: the squared MMD of each sampler's samples to exact
samples (with the MMD of a second exact draw as the noise floor) and its number of score
evaluations (NFE), the mean log-likelihood of held-out points under the model and under the
truth, and the score error along t.

    python examples/sde_toy.py                # gallery/sde_toy/  (the run folder in gallery/sde_toy/run)
    python examples/sde_toy.py --tiny --out /tmp/sde
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from _gallery import mesh, setup, write_summary
from matplotlib.figure import Figure

import scorematch
from scorematch import plotting
from scorematch.distributions import toy
from scorematch.likelihood import log_prob
from scorematch.metrics import mmd
from scorematch.samplers import euler_maruyama, ode, pc
from scorematch.sde import get_sde

NAME = "sde_toy"
TOY = "gmm2d"
LIMS = ((-6.0, 6.0), (-6.0, 6.0))


def read_losses(run: Path) -> tuple[list[float], list[float]]:
    rows = (run / "loss.csv").read_text().splitlines()[1:]
    steps = [float(r.split(",")[0]) for r in rows]
    return steps, [float(r.split(",")[1]) for r in rows]


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="tiny training, samples and grids", options={
        "--steps": dict(type=int, default=None, help="training steps (default 2000, 20 with --tiny)"),
    })
    tiny = args.tiny
    steps = args.steps or (20 if tiny else 2000)
    n, n_steps, grid_n, n_test, tol, n_t = (200, 20, 8, 50, 1e-3, 5) if tiny else (2000, 500, 40, 1000, 1e-5, 40)

    run = out / "run"
    if (run / "config.json").exists():  # this script's own run folder from an earlier call
        shutil.rmtree(run)
    # standardize="none": the SDE, its samplers and the closed-form noisy scores below share the toy's units
    scorematch.train(data=TOY, objective="sde", sde="ve", steps=steps, batch_size=256, seed=args.seed,
                     out=run, device="cpu", progress=False, checkpoint_every=steps, log_every=10, standardize="none")
    model = scorematch.load(run)
    schedule = model.run_info["schedule"]
    sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
    t_train = clock()

    gen = torch.Generator().manual_seed(args.seed + 1)
    dist = toy(TOY)
    exact, floor_draw = dist.sample(n, generator=gen), dist.sample(n, generator=gen)
    samples, results = {}, {}
    t0 = time.perf_counter()
    samples["Euler-Maruyama"] = euler_maruyama(model, (n, 2), sde, n_steps=n_steps, generator=gen)
    results["Euler-Maruyama"] = {"nfe": n_steps + 1, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    samples["predictor-corrector"] = pc(model, (n, 2), sde, n_steps=n_steps, generator=gen)
    results["predictor-corrector"] = {"nfe": 2 * n_steps + 1, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    evaluations: list[dict] = []
    samples["probability-flow ODE"] = ode(model, (n, 2), sde, rtol=tol, atol=tol, generator=gen,
                                          callback=evaluations.append)
    results["probability-flow ODE"] = {"nfe": evaluations[-1]["nfe"], "seconds": time.perf_counter() - t0}
    for name, x in samples.items():
        results[name]["mmd2_to_exact"] = mmd(x, exact)
        results[name]["n_non_finite"] = int((~torch.isfinite(x).all(1)).sum())

    fig = Figure(figsize=(5.0 * len(samples), 5.0), layout="constrained")
    for i, (name, x) in enumerate(samples.items()):
        ax = fig.add_subplot(1, len(samples), i + 1)
        plotting.samples_over_data(x, exact, ax=ax, title=f"{name}\nNFE {results[name]['nfe']}, "
                                                     f"MMD^2 to exact samples {results[name]['mmd2_to_exact']:.1e}")
        ax.set_xlim(*LIMS[0])
        ax.set_ylim(*LIMS[1])
    fig.savefig(out / "samples.png", dpi=plotting.DPI)

    # Likelihood by the probability-flow ODE: on a grid, and at held-out points.
    xs = torch.linspace(*LIMS[0], grid_n)
    ys = torch.linspace(*LIMS[1], grid_n)
    grid = mesh((xs, ys))
    t0 = time.perf_counter()
    grid_lp = log_prob(model, sde, grid, rtol=tol, atol=tol, return_nfe=True)
    t_grid = time.perf_counter() - t0
    test = dist.sample(n_test, generator=gen)
    test_lp = log_prob(model, sde, test, rtol=tol, atol=tol, return_nfe=True)
    fig = Figure(figsize=(10.0, 4.3), layout="constrained")
    plotting.density(dist, LIMS, n=grid_n, ax=fig.add_subplot(1, 2, 1), title="true density")
    plotting.density(((xs, ys), grid_lp.log_prob.reshape(grid_n, grid_n).exp()), LIMS, ax=fig.add_subplot(1, 2, 2),
                title="model density exp(log_prob)\n(probability-flow ODE)")
    fig.savefig(out / "density.png", dpi=plotting.DPI)

    # Where along t the learned score is accurate: 1/2 E ||s_theta(x, t) - grad log p_sigma(t)(x)||^2.
    ts = torch.linspace(1e-3, 1.0, n_t)
    errors = []
    for t in ts.tolist():
        sigma = float(sde.marginal_std(torch.tensor(t)))
        noisy = dist.noisy(sigma)
        x = noisy.sample(n_test, generator=gen)
        with torch.no_grad():
            s = model.score(x, torch.full((len(x),), t))
        errors.append(float(0.5 * (s - noisy.score(x)).pow(2).sum(1).mean()))
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.semilogy(ts.numpy(), errors, "o-", ms=3)
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\frac{1}{2}E\|s_\theta(x,t) - \nabla\log p_t(x)\|^2$")
    ax.set_title("score error of the learned model along t (VE SDE)")
    ax.grid(alpha=0.3, which="both")
    fig.savefig(out / "score_error_vs_t.png", dpi=plotting.DPI)
    loss_steps, losses = read_losses(run)
    plotting.loss_curves(loss_steps, {"continuous-time DSM (VE)": losses}, path=out / "loss.png")

    worst = max(range(len(errors)), key=errors.__getitem__)
    summary = {
        "example": NAME,
        "tiny": tiny,
        "train_steps": steps,
        "sde": {k: v for k, v in schedule.items()},
        "n_samples": n,
        "samplers": results,
        "mmd2_exact_vs_exact": mmd(floor_draw, exact),
        "mean_log_likelihood": {"model": float(test_lp.log_prob.mean()), "true": float(dist.log_prob(test).mean())},
        "likelihood_nfe": test_lp.nfe,
        "likelihood_grid_nfe": grid_lp.nfe,
        "likelihood_grid_seconds": t_grid,
        "score_error_vs_t": {"median": float(torch.tensor(errors).median()), "max": errors[worst],
                             "t_of_max": float(ts[worst])},
        "train_seconds": t_train,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
