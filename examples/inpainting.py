"""Imputation on the 2-D toy gmm2d: x2 given x1, against the mixture's exact conditional.

With the analytic noise-conditional score of gmm2d (``GaussianMixture.noisy_score``), x2 is filled
in for a fixed x1 = a three ways, from the same start x ~ N(0, 80^2 I):

- replacement (Song et al. 2021, Appendix I): ``inpaint(heun, ...)``, 100 Karras steps, the known
  x1 replaced by a + sigma z before every score evaluation;
- replacement with RePaint resampling (Lugmayr et al. 2022): ``inpaint(heun, ..., resample=10)``,
  30 Karras steps, each repeated 10 times;
- sequential Monte Carlo over the replacement steps (Trippe et al. 2023):
  ``inpaint_smc(...)``, 400 ancestral steps, all samples one group of particles.

The exact conditional p(x2 | x1 = a) is a two-component 1-D Gaussian mixture
(``GaussianMixture.conditional``). Figure ``imputation.png``: for each a, the histograms of the
imputed x2 over the exact density. Summary: per a and method, the share of x2 in the upper
component (above the midpoint of the two conditional means) next to the exact one, MMD^2 (RBF,
bandwidth 1) to exact draws next to that of a second exact draw, and the score evaluations.

Then digits: an EDM model (``scorematch.train(data="digits", objective="edm", model="time_mlp")``,
an MLP on the flattened 8x8 images) fills in the lower half of held-out digits given the upper
half (``scorematch.run.sampling.inpaint.inpaint_run``) by sequential Monte Carlo and by replacement with
Heun. Figure ``digits.png``: held-out digits, their upper halves, and both completions. Summary:
per method, the mean squared error of the filled half against the truth, and how often a
logistic regression trained on the other digits reads the completed digit as its true class
(next to the same for the true digits and for the lower half filled with the mean digit's).

    python examples/inpainting.py                # gallery/inpainting/
    python examples/inpainting.py --tiny --out /tmp/inpainting
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from _gallery import seeded, setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting, train
from scorematch.data import Dataset, load_digits, train_test_split
from scorematch.distributions import toy
from scorematch.metrics import mmd
from scorematch.noise import karras_sigmas
from scorematch.run.sampling.inpaint import inpaint_run
from scorematch.samplers import heun, inpaint, inpaint_smc

NAME = "inpainting"
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002


class Counted:
    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def impute(method: str, a: float, n: int, steps: dict[str, int], seed: int) -> tuple[torch.Tensor, int]:
    """x2 samples given x1 = a by ``method``, and the number of score evaluations."""
    mix = toy("gmm2d")
    g = torch.Generator().manual_seed(seed)
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = a
    mask = torch.tensor([True, False])
    x0 = SIGMA_MAX * torch.randn(n, 2, generator=g, dtype=torch.float64)
    score = Counted(mix.noisy_score)
    sig = karras_sigmas(steps[method], SIGMA_MIN, SIGMA_MAX).double()
    if method == "replacement":
        out = inpaint(heun, score, x0, sig, known, mask, generator=g)
    elif method == "RePaint":
        out = inpaint(heun, score, x0, sig, known, mask, generator=g, resample=10)
    else:
        out = inpaint_smc(score, x0, sig, known, mask, generator=g)
    return out[:, 1], score.calls


def fill_digits(out: Path, tiny: bool, seed: int) -> dict:
    """The lower half of held-out digits filled in by a trained EDM model; figure digits.png."""
    from sklearn.linear_model import LogisticRegression

    result = train(data="digits", objective="edm", model="time_mlp", hidden=64 if tiny else 256,
                   steps=150 if tiny else 4000, batch_size=128, lr=2e-3, seed=seed, progress=False,
                   out=out / "digits-run", force=True)
    model = result.model
    x, y = load_digits()
    # the run's own split (test fraction 0.2, its seed): the held-out digits were not trained on
    seen, test = train_test_split(Dataset(x=x, name="digits", kind="image", labels=y), 0.2, seed=seed)
    n = 20 if tiny else 200
    truth, labels = test.x[:n], test.labels[:n]
    mask = torch.zeros(n, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    clf = LogisticRegression(max_iter=2000).fit(seen.x.flatten(1).numpy(), seen.labels.numpy())

    def read_right(images: torch.Tensor) -> float:
        return float((clf.predict(images.flatten(1).numpy()) == labels.numpy()).mean())

    mean_fill = torch.where(mask, truth, seen.x.mean(0, keepdim=True))
    rows = {"true digits": truth, "upper half, lower half the mean digit": mean_fill}
    summary = {"n_digits": n, "train_steps": result.steps,
               "class_read_right": {"true digits": read_right(truth), "mean fill": read_right(mean_fill)}}
    options = {"smc": {"particles": 8, "n_steps": 30} if tiny else {},
               "replace": {"sampler": "heun", "n_steps": 10 if tiny else 50}}
    for method, opts in options.items():
        filled = inpaint_run(model, model.run_info, truth, mask.expand_as(truth), method=method, seed=seed, **opts)
        rows[f"{method} fill"] = filled
        summary[method] = {"options": opts, "mse_lower_half": float((filled - truth)[:, :, 4:].pow(2).mean()),
                           "class_read_right": read_right(filled)}
    summary["mean fill"] = {"mse_lower_half": float((mean_fill - truth)[:, :, 4:].pow(2).mean())}
    show = min(n, 10)
    grid = torch.cat([images[:show] for images in rows.values()])
    plotting.save_image_grid(grid, out / "digits.png", nrow=show, upscale=4)
    return summary


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="200 samples, fewer steps")
    seeded(args.seed)
    n = 200 if args.tiny else 2000
    steps = ({"replacement": 18, "RePaint": 6, "SMC": 60} if args.tiny
             else {"replacement": 100, "RePaint": 30, "SMC": 400})
    values = (-1.5, 0.5, 1.0)
    mix = toy("gmm2d")
    fig = Figure(figsize=(5.0 * len(values), 4.0), layout="constrained")
    results = {}
    for j, a in enumerate(values):
        cond = mix.conditional([0], [a])
        exact = cond.sample(n, torch.Generator().manual_seed(args.seed + 10)).double()
        second = cond.sample(n, torch.Generator().manual_seed(args.seed + 20)).double()
        mid = float(cond.means[:, 0].mean())
        row = {"exact_upper_share": float((exact > mid).double().mean()),
               "mmd2_exact_vs_exact": mmd(second, exact, bandwidth=1.0)}
        ax = fig.add_subplot(1, len(values), j + 1)
        grid = torch.linspace(-6.0, 5.0, 400, dtype=torch.float64)[:, None]
        ax.plot(grid[:, 0].numpy(), cond.log_prob(grid).exp().numpy(), "k-", lw=2, label="exact p(x2 | x1)")
        for method in ("replacement", "RePaint", "SMC"):
            x2, nfe = impute(method, a, n, steps, args.seed)
            row[method] = {"upper_share": float((x2 > mid).double().mean()),
                           "mmd2_to_exact": mmd(x2[:, None], exact, bandwidth=1.0), "nfe": nfe}
            ax.hist(x2.numpy(), bins=50, range=(-6.0, 5.0), density=True, histtype="step", lw=1.5,
                    label=f"{method} ({nfe} evaluations)")
        ax.set_title(f"x2 given x1 = {a}\nexact upper share {row['exact_upper_share']:.3f}")
        ax.set_xlabel("x2")
        if j == 0:
            ax.legend(fontsize=8)
        results[f"x1={a}"] = row
    fig.savefig(out / "imputation.png", dpi=plotting.DPI)
    summary = {"example": NAME, "tiny": args.tiny, "n_samples": n, "steps": steps, "results": results,
               "digits": fill_digits(out, args.tiny, args.seed), "runtime_seconds": clock()}
    assert all(math.isfinite(v["SMC"]["mmd2_to_exact"]) for v in results.values())
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
