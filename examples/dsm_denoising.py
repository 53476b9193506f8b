"""Denoising score matching on gmm2d: what the network learns at each sigma, and how it denoises.

Denoising score matching (Vincent 2011; derived in all the tutorial notes and the lecture slides
the library follows) perturbs the data,
x~ = x + sigma z, and regresses the score network on the conditional score:

    L(theta) = 1/2 E_{x, z} || s_theta(x + sigma z) + z / sigma ||^2         (``dsm``)

Its minimiser is the score of the noisy density p_sigma = p * N(0, sigma^2 I) (analytic here:
``GaussianMixture.noisy_score``), and Tweedie's formula turns that score into the denoiser
E[x | x~] = x~ + sigma^2 grad log p_sigma(x~). One score MLP is trained per sigma in
{0.1, 0.3, 1.0}; each is then used to denoise fresh noisy samples with one Tweedie step.

Figures: ``denoising.png``, one row per sigma: the noisy samples over the clean data, the same
samples after one Tweedie step x~ + sigma^2 s_theta(x~), and the learned field; and
``fields_sigma_*.png``, the learned field against the analytic noisy score with their error.
Small sigma: the field matches p's score, but the denoising step barely moves the samples, and
the regression target -z/sigma is noisiest (variance D/sigma^2), so the fit to its own target
is the worst of the three.
Large sigma: the field is that of a smoother density (the minimiser is p_sigma's score, not
p's), and the step pulls the samples towards the modes, shrinking them (the posterior mean).
Summary per sigma: the Fisher divergence of s_theta to the noisy score (what DSM targets) and
to the clean score, and the root-mean-square distance to the clean points before denoising
(about sigma sqrt(2)), after the learned Tweedie step, and after the analytic (optimal) one.

    python examples/dsm_denoising.py          # gallery/dsm_denoising/
    python examples/dsm_denoising.py --tiny --out /tmp/dsm
"""

from __future__ import annotations

import torch
from _gallery import fit, seeded, setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence
from scorematch.models import ScoreMLP
from scorematch.objectives import dsm

NAME = "dsm_denoising"
SIGMAS = (0.1, 0.3, 1.0)
LIMS = ((-7.0, 7.0), (-7.0, 7.0))


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum(1).mean().sqrt())


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="tiny steps and samples")
    steps, batch, n_eval, n_fisher, grid_n = (20, 64, 300, 500, 8) if args.tiny else (2000, 256, 2000, 10_000, 21)
    gen = seeded(args.seed)
    dist = toy("gmm2d")

    fig = Figure(figsize=(13.0, 4.2 * len(SIGMAS)), layout="constrained")
    axes = fig.subplots(len(SIGMAS), 3, squeeze=False)
    per_sigma = {}
    for row, sigma in enumerate(SIGMAS):
        model = ScoreMLP(2, hidden=128, depth=2)
        fit(model, dsm, lambda: dist.sample(batch, generator=gen), steps, sigma=sigma, generator=gen)

        clean = dist.sample(n_eval, generator=gen)
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        with torch.no_grad():
            denoised = noisy + sigma**2 * model.score(noisy)
        optimal = noisy + sigma**2 * dist.noisy_score(noisy, sigma)

        plotting.samples_over_data(noisy, clean, ax=axes[row, 0], title=f"sigma = {sigma}: noisy x~ = x + sigma z")
        plotting.samples_over_data(denoised, clean, ax=axes[row, 1],
                              title=f"sigma = {sigma}: one Tweedie step x~ + sigma^2 s(x~)")
        plotting.vector_field(model, LIMS, n=grid_n, ax=axes[row, 2], data=noisy,
                         title=f"sigma = {sigma}: learned field s(x~)")
        for ax in axes[row, :2]:
            ax.set_xlim(*LIMS[0])
            ax.set_ylim(*LIMS[1])
        plotting.compare_fields({"true": lambda x, s=sigma: dist.noisy_score(x, s), "learned": model}, LIMS,
                           n=grid_n, data=noisy, path=out / f"fields_sigma_{sigma}.png")
        per_sigma[str(sigma)] = {
            "fisher_divergence_to_noisy_score": fisher_divergence(model, dist.noisy(sigma), n=n_fisher,
                                                                  generator=gen),
            "fisher_divergence_to_clean_score": fisher_divergence(model, dist, n=n_fisher, generator=gen),
            "rms_to_clean_noisy": rms(noisy, clean),
            "rms_to_clean_denoised_learned": rms(denoised, clean),
            "rms_to_clean_denoised_analytic": rms(optimal, clean),
        }
    fig.savefig(out / "denoising.png", dpi=plotting.DPI)

    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "train_steps_per_sigma": steps,
        "sigmas": list(SIGMAS),
        "per_sigma": per_sigma,
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
