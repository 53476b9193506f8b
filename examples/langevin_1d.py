"""Langevin dynamics on a 1-D Gaussian mixture (the lecture slides on generative models, Example 3.3).

p(x) = 0.6 N(2, 0.5^2) + 0.4 N(-2, 0.2^2) (``toy("gmm1d")``); M = 10000 samples start from
Uniform[-3, 3] and take 100 steps of unadjusted Langevin dynamics with the analytic score,

    x_{t+1} = x_t + tau grad log p(x_t) + sqrt(2 tau) z_t,      z_t ~ N(0, 1)    (``langevin``)

The slides give the mixture, M, the start and the 100 steps but no step size; tau = 0.01 is
used here (the slower mode relaxes in ~0.25 / tau = 25 steps, and the narrow mode's
discretisation bias, a variance factor 1 / (1 - tau / (2 * 0.2^2)) = 1.14, stays small).
``histograms.png`` reproduces the slides' Figure 3.4: the histogram at steps 0, 10, 50 and 100 over the true
density, from uniform to the mixture. ``histograms_no_noise.png`` drops the sqrt(2 tau) z term
(``langevin(..., noise=False)``): the chains follow the score uphill, i.e. gradient ascent on
log p, and every sample collapses onto a mode, a spike instead of a density.

With this short run no chain crosses between the modes, so each mode's share is fixed by its
basin of attraction in Uniform[-3, 3] (the score vanishes at x = -0.82: 64% go right) rather
than by the weights 0.6 / 0.4; the Kolmogorov-Smirnov distance keeps that residue.
Summary: the KS distance sup_x |F_n(x) - F(x)| at each shown step, with and without noise;
the spread (std) of the samples around each mode and the mode weights, with and without noise.

    python examples/langevin_1d.py            # gallery/langevin_1d/
    python examples/langevin_1d.py --tiny --out /tmp/langevin
"""

from __future__ import annotations

import torch
from _gallery import setup, write_summary

from scorematch import plotting
from scorematch.distributions import toy
from scorematch.metrics import mode_weights
from scorematch.samplers import langevin

NAME = "langevin_1d"
STEP_SIZE = 0.01
N_STEPS = 100
SHOWN = (0, 10, 50, 100)


def ks_distance(samples: torch.Tensor, dist) -> float:
    """sup_x |F_n(x) - F(x)| for the 1-D mixture F(x) = sum_k pi_k Phi((x - mu_k) / sd_k)."""
    x = samples.flatten().double().sort().values
    sd = dist.covs[:, 0, 0].sqrt()
    cdf = (dist.weights * torch.special.ndtr((x[:, None] - dist.means[:, 0]) / sd)).sum(1)
    n = len(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def spread(samples: torch.Tensor, dist) -> dict[str, float]:
    """Std of the samples around their nearest mode, per mode."""
    nearest = torch.cdist(samples.double(), dist.means).argmin(1)
    return {f"mode {float(mu):+g}": float(samples[nearest == k].std()) if (nearest == k).sum() > 1 else 0.0
            for k, mu in enumerate(dist.means[:, 0])}


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="fewer samples", options={
        "--step-size": dict(type=float, default=STEP_SIZE, help="tau (eta-form step size)"),
    })
    n = 1000 if args.tiny else 10_000
    gen = torch.Generator().manual_seed(args.seed)
    dist = toy("gmm1d")
    x0 = 6 * torch.rand(n, 1, generator=gen) - 3

    def true_pdf(t: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(t.reshape(-1, 1)).exp()

    results = {}
    for label, noise in (("with_noise", True), ("without_noise", False)):
        x, traj = langevin(dist.score, x0, args.step_size, n_steps=N_STEPS, generator=gen, return_trajectory=True,
                           noise=noise)
        name = "histograms.png" if noise else "histograms_no_noise.png"
        plotting.histogram_steps(traj, list(SHOWN), true_pdf=true_pdf, path=out / name)
        results[label] = {
            "ks_distance": {str(k): ks_distance(traj[k], dist) for k in SHOWN},
            "spread_per_mode": spread(x, dist),
            "overall_std": float(x.std()),
            "mode_weights": {f"mode {float(mu):+g}": float(w)
                             for mu, w in zip(dist.means[:, 0], mode_weights(x, dist.means), strict=True)},
        }

    fresh = dist.sample(n, generator=gen)
    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "n_samples": n,
        "step_size": args.step_size,
        "n_steps": N_STEPS,
        **results,
        "ks_distance_of_exact_samples": ks_distance(fresh, dist),
        "true_std_per_mode": {f"mode {float(mu):+g}": float(dist.covs[k, 0, 0].sqrt())
                              for k, mu in enumerate(dist.means[:, 0])},
        "true_mode_weights": {f"mode {float(mu):+g}": float(w) for mu, w in zip(dist.means[:, 0], dist.weights,
                                                                                strict=True)},
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
