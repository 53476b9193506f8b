"""A 1-D Gaussian mixture's density beside its score, and what Gaussian noise does to both.

The lecture slides on generative models draw the score of a mixture of two Gaussians next to its
density before running Langevin dynamics on it (their Example 3.3); the mixture is

    p(x) = 0.6 N(x; 2, 0.5^2) + 0.4 N(x; -2, 0.2^2)                        (``toy("gmm1d")``)

and its score is analytic: with the responsibilities r_k(x) = pi_k N(x; mu_k, s_k^2) / p(x),

    s(x) = d/dx log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2

(``GaussianMixture.score``). Each component pulls x towards its mean with strength 1/s_k^2,
so the score crosses zero downwards at each mode (slope about -1/s_k^2: -25 at the narrow mode,
-4 at the wide one) and upwards at the antimode between them, where the two pulls balance. Far
out on either side the widest component dominates the tails, so s(x) tends to the line
(2 - x) / 0.5^2.

The figure ``density_and_score.png`` shows p beside s, and, dashed, the same for the noisy
densities p_sigma = p * N(0, sigma^2) at sigma = 0.5, 1 and 2 (``GaussianMixture.noisy`` and
``noisy_score``: the mixture with variances s_k^2 + sigma^2), the scores that multi-scale DSM
(NCSN) learns: noise widens the modes, flattens the score and, at sigma = 2, merges the two
modes into one. Summary: the zeros of each score (modes and antimodes, by bisection on the
analytic score), the score's slope at each mode against -1 / (s_k^2 + sigma^2), and the largest
difference between the analytic score and a finite difference of log p (a check of the pair).

    python examples/mixture_score_1d.py       # gallery/mixture_score_1d/
    python examples/mixture_score_1d.py --tiny --out /tmp/mixture_score_1d
"""

from __future__ import annotations

import torch
from _gallery import setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.distributions import GaussianMixture, toy

NAME = "mixture_score_1d"
LIM = (-4.0, 4.5)
SIGMAS = (0.5, 1.0, 2.0)


def zeros(score, grid: torch.Tensor) -> list[dict[str, float]]:
    """The zeros of a 1-D score on ``grid``: bisection in every cell where it changes sign;
    each is a mode (the score falls through 0) or an antimode (it rises)."""
    s = score(grid[:, None])[:, 0]
    found = []
    for i in torch.nonzero(torch.sign(s[:-1]) * torch.sign(s[1:]) < 0).flatten().tolist():
        lo, hi = float(grid[i]), float(grid[i + 1])
        s_lo = float(s[i])
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            s_mid = float(score(torch.tensor([[mid]], dtype=torch.float64))[0, 0])
            if (s_mid > 0) == (s_lo > 0):
                lo, s_lo = mid, s_mid
            else:
                hi = mid
        x0 = 0.5 * (lo + hi)
        found.append({"x": x0, "kind": "mode" if float(s[i]) > 0 else "antimode",
                      "slope": derivative(score, x0)})
    return found


def derivative(score, x0: float, h: float = 1e-5) -> float:
    """ds/dx at x0 by a central difference."""
    pts = torch.tensor([[x0 - h], [x0 + h]], dtype=torch.float64)
    s = score(pts)[:, 0]
    return float((s[1] - s[0]) / (2 * h))


def plot(dist: GaussianMixture, grid: torch.Tensor, path) -> None:
    fig = Figure(figsize=(10.5, 3.9), layout="constrained")
    ax_p, ax_s = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = grid[:, None]
    ax_p.plot(grid, dist.log_prob(x).exp(), color="C0", lw=2, label=r"$p$")
    ax_s.plot(grid, dist.score(x)[:, 0], color="C0", lw=2, label=r"$s = \nabla_x \log p$")
    for k, sigma in enumerate(SIGMAS):
        noisy = dist.noisy(sigma)
        style = {"ls": "--", "color": f"C{k + 1}", "lw": 1.2}
        ax_p.plot(grid, noisy.log_prob(x).exp(), label=rf"$p_\sigma$, $\sigma$={sigma:g}", **style)
        ax_s.plot(grid, noisy.score(x)[:, 0], label=rf"$\sigma$={sigma:g}", **style)
    ax_s.axhline(0, color="0.5", lw=0.8)
    ax_s.set_ylim(-12, 12)
    for ax, title in ((ax_p, "density"), (ax_s, "score")):
        ax.set_xlim(*LIM)
        ax.set_xlabel("$x$")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=plotting.DPI)


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="a coarser grid")
    dist = toy("gmm1d")
    grid = torch.linspace(*LIM, 401 if args.tiny else 4001, dtype=torch.float64)
    plot(dist, grid, out / "density_and_score.png")

    x = grid[:, None]
    h = float(grid[1] - grid[0])
    log_p = dist.log_prob(x)
    finite_diff = (log_p[2:] - log_p[:-2]) / (2 * h)
    sd = dist.covs[:, 0, 0].sqrt()
    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "weights": dist.weights.tolist(),
        "means": dist.means[:, 0].tolist(),
        "stds": sd.tolist(),
        "zeros": {"0": zeros(dist.score, grid),
                  **{f"{sigma:g}": zeros(dist.noisy(sigma).score, grid) for sigma in SIGMAS}},
        "mode_slope_closed_form": {
            f"{sigma:g}": [-1 / (float(v) ** 2 + sigma**2) for v in sd] for sigma in (0.0, *SIGMAS)
        },
        "max_abs_score_minus_finite_difference": float((dist.score(x)[1:-1, 0] - finite_diff).abs().max()),
        "grid_step": h,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
