"""Plain versus annealed Langevin on the imbalanced mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I).

Langevin dynamics with the exact score still gets the mode weights wrong here (the English
tutorial notes from EBMs to NCSN and SDEs; Song & Ermon 2019): the score in each mode hardly
depends on the weights (only through a thin boundary region between the modes, where p is tiny),
so chains started uniformly over the box [-8, 8]^2 each settle into the basin they start in and
the two modes end up with about half of the samples each instead of 0.2 / 0.8. Annealed Langevin
dynamics (Algorithm 1 of Song & Ermon, ``annealed_langevin``) runs the chains on the noisy
densities p_sigma = p * N(0, sigma^2 I) for sigma_1 > ... > sigma_L: at large sigma the two
modes merge into one blob whose mass is split 0.2 / 0.8, and the chains keep that split as sigma
shrinks. Both samplers use analytic scores (``GaussianMixture.score`` and ``noisy_score``), the
same start and the same number of score evaluations:

- plain: ``langevin`` with eta = 0.1, 1000 steps;
- annealed: L = 10 geometric sigmas from 20 down to 0.1, T = 100 steps per level,
  eps = 0.004 (alpha-form: alpha_i = eps sigma_i^2 / sigma_L^2, i.e. alpha_i / (2 sigma_i^2)
  = 0.2 of the noisy variance per step at every level), then the Tweedie denoising step.

Figure: both sample sets over exact samples. Summary: the mode weights (fraction of samples
nearest each mean) of both samplers and the truth, and the squared MMD of each sample set to
exact samples (with a second exact draw as the noise floor).

    python examples/imbalanced.py             # gallery/imbalanced/
    python examples/imbalanced.py --tiny --out /tmp/imbalanced
"""

from __future__ import annotations

import torch
from _gallery import setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.distributions import toy
from scorematch.metrics import mmd, mode_weights
from scorematch.noise import geometric_sigmas
from scorematch.samplers import annealed_langevin, langevin

NAME = "imbalanced"
BOX = 8.0
ETA = 0.1
SIGMA_MAX, SIGMA_MIN, LEVELS, EPS = 20.0, 0.1, 10, 0.004


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="fewer chains and steps")
    n, steps_per_level = (300, 10) if args.tiny else (4000, 100)
    gen = torch.Generator().manual_seed(args.seed)
    dist = toy("imbalanced")
    x0 = BOX * (2 * torch.rand(n, 2, generator=gen) - 1)
    exact, floor_draw = dist.sample(n, generator=gen), dist.sample(n, generator=gen)

    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, LEVELS)
    n_evals = LEVELS * steps_per_level
    x_plain, traj = langevin(dist.score, x0, ETA, n_steps=n_evals, generator=gen, return_trajectory=True,
                             trajectory_every=max(1, n_evals // 100))
    x_annealed = annealed_langevin(dist.noisy_score, x0, sigmas, eps=EPS, steps_per_sigma=steps_per_level,
                                   generator=gen)

    fig = Figure(figsize=(10.5, 5.0), layout="constrained")
    ax_plain, ax_annealed = fig.subplots(1, 2)
    w_plain, w_annealed = mode_weights(x_plain, dist.means), mode_weights(x_annealed, dist.means)
    plotting.samples_over_data(x_plain, exact, ax=ax_plain,
                          title=f"plain Langevin ({n_evals} steps): weights {w_plain[0]:.2f} / {w_plain[1]:.2f}")
    plotting.samples_over_data(x_annealed, exact, ax=ax_annealed,
                          title=f"annealed Langevin (L={LEVELS}, T={steps_per_level}): "
                                f"weights {w_annealed[0]:.2f} / {w_annealed[1]:.2f}")
    for ax in (ax_plain, ax_annealed):
        ax.set_xlim(-9, 9)
        ax.set_ylim(-9, 9)
    fig.savefig(out / "samples.png", dpi=plotting.DPI)
    plotting.trajectories(traj, data=exact, n_chains=30, path=out / "plain_chains.png",
                     title="plain Langevin chains stay in the basin they start in")

    def weights(w: torch.Tensor) -> dict[str, float]:
        return {"mode (-5,-5)": float(w[0]), "mode (5,5)": float(w[1])}

    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "n_samples": n,
        "score_evaluations": n_evals,
        "plain": {"step_size": ETA, "mode_weights": weights(w_plain), "mmd2_to_exact": mmd(x_plain, exact)},
        "annealed": {"sigmas": [float(s) for s in sigmas], "eps": EPS, "steps_per_sigma": steps_per_level,
                     "mode_weights": weights(w_annealed), "mmd2_to_exact": mmd(x_annealed, exact)},
        "true_mode_weights": weights(dist.weights),
        "mmd2_exact_vs_exact": mmd(floor_draw, exact),
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
