"""DSM as sigma -> 0: the per-row loss variance grows like sigma^-4, the gradient variance like sigma^-2.

The lecture slides on generative models point out the price of a small noise level in DSM
(Vincent 2011): with x~ = x + sigma z the per-row loss is

    l = 1/2 || s_theta(x + sigma z) + z / sigma ||^2                        (``dsm``, one row)
      = ||z||^2 / (2 sigma^2) + z^T s_theta(x) / sigma + O(1),

so "the variances of z^T s_theta(x) / sigma and ||z||^2 / sigma^2 both grow unbounded as
sigma -> 0". This script measures how fast, for the loss and for its gradient in theta, and
compares the slopes with a closed form.

Closed form. Take data x ~ N(0, s^2 I_D) and the one-parameter score family s_a(y) = -a y
(a = 1/s^2 is the data's own score, the limit of DSM's minimiser 1/(s^2 + sigma^2)). Then

    y = s_a(x + sigma z) + z / sigma = -a x + c z,        c = 1/sigma - a sigma,

has independent N(0, v) coordinates with v = a^2 s^2 + c^2, and l = 1/2 ||y||^2 = (v/2) chi^2_D:

    Var(l) = D v^2 / 2 = (D / 2) (a^2 s^2 + (1/sigma - a sigma)^2)^2  ~  D / (2 sigma^4).

Its gradient g = dl/da = y^T dy/da with dy/da = -(x + sigma z) expands to

    g = a ||x||^2 + (2 a sigma - 1/sigma) x^T z - (1 - a sigma^2) ||z||^2,

three uncorrelated terms (the odd moments of x and z vanish) with Var ||x||^2 = 2 D s^4,
Var x^T z = D s^2, Var ||z||^2 = 2 D:

    Var(g) = 2 D a^2 s^4 + D s^2 (2 a sigma - 1/sigma)^2 + 2 D (1 - a sigma^2)^2  ~  D s^2 / sigma^2.

Log-log slopes: -4 for the loss, -2 for the gradient. The leading gradient term is
J_theta(x)^T z / sigma for any network (J_theta the Jacobian of s_theta in theta), so the same
slopes hold beyond the closed form; the script measures them for a score MLP on gmm2d too.

Measurement: for each sigma (geometric from 1 down to 1e-3), R batches of n rows through
``dsm``; the variance of one row is n times the variance of the batch means (the rows are
independent), for the loss and, summed over the parameters, for its gradient. Figure
``variance_vs_sigma.png``: both variances against sigma (log-log), measured (points) and the
closed form (line) for the linear family, measured for the MLP, with sigma^-4 and sigma^-2
guides. Summary: the per-sigma variances and the slopes fitted over sigma <= 0.1, measured and
closed form.

    python examples/dsm_variance.py           # gallery/dsm_variance/
    python examples/dsm_variance.py --tiny --out /tmp/dsm_variance
"""

from __future__ import annotations

import numpy as np
import torch
from _gallery import seeded, setup, write_summary
from matplotlib.figure import Figure

from scorematch import plotting
from scorematch.distributions import GaussianMixture, toy
from scorematch.models import ScoreMLP
from scorematch.objectives import dsm

NAME = "dsm_variance"
DIM = 2
DATA_STD = 1.0
FIT_BELOW = 0.1  # slopes are fitted over sigma <= this, where the leading term dominates


class LinearScore(torch.nn.Module):
    """s_a(y) = -a y: the score of N(0, I / a), one parameter."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return -self.a * y


def closed_form(sigma: np.ndarray, a: float, s2: float, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Var(l) and Var(dl/da) of one DSM row for s_a(y) = -a y on N(0, s2 I_d) (see the docstring)."""
    v = a * a * s2 + (1 / sigma - a * sigma) ** 2
    var_loss = d * v**2 / 2
    var_grad = 2 * d * a * a * s2**2 + d * s2 * (2 * a * sigma - 1 / sigma) ** 2 + 2 * d * (1 - a * sigma**2) ** 2
    return var_loss, var_grad


def per_row_variances(model: torch.nn.Module, sample, sigma: float, n: int, repeats: int,
                      gen: torch.Generator) -> tuple[float, float]:
    """n x the variance over ``repeats`` batches of the batch-mean DSM loss and of its gradient
    (summed over the parameters): the variance of one row's loss and gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for _ in range(repeats):
        loss = dsm(model, sample(n, gen), sigma, generator=gen)
        grad = torch.autograd.grad(loss, params)
        losses.append(loss.detach())
        grads.append(torch.cat([g.flatten() for g in grad]))
    losses_t, grads_t = torch.stack(losses).double(), torch.stack(grads).double()
    return n * float(losses_t.var()), n * float(grads_t.var(0).sum())


def slope(sigmas: np.ndarray, values: np.ndarray, below: float = FIT_BELOW) -> float:
    """Least-squares slope of log(values) against log(sigma) over sigma <= below."""
    keep = sigmas <= below * (1 + 1e-9)
    return float(np.polyfit(np.log(sigmas[keep]), np.log(values[keep]), 1)[0])


def plot(sigmas: np.ndarray, measured: dict[str, dict[str, np.ndarray]], closed: dict[str, np.ndarray],
         path) -> None:
    fig = Figure(figsize=(10.5, 4.3), layout="constrained")
    for k, (key, title, power) in enumerate((("loss", "per-row loss variance", 4),
                                             ("grad", "per-row gradient variance (sum over parameters)", 2))):
        ax = fig.add_subplot(1, 2, k + 1)
        fine = np.geomspace(sigmas.min(), sigmas.max(), 200)
        ax.loglog(fine, closed_form(fine, 1 / DATA_STD**2, DATA_STD**2, DIM)[k], color="C0", lw=1.5,
                  label="linear score, closed form")
        ax.loglog(sigmas, measured["linear"][key], "o", color="C0", ms=5, label="linear score, measured")
        ax.loglog(sigmas, measured["mlp"][key], "s", color="C3", ms=5, label="score MLP on gmm2d, measured")
        ref = measured["mlp"][key][-1] * (fine / sigmas[-1]) ** (-power)
        ax.loglog(fine, ref, ":", color="0.4", lw=1, label=rf"$\propto \sigma^{{-{power}}}$")
        ax.set_xlabel(r"$\sigma$")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=plotting.DPI)


def main(argv: list[str] | None = None) -> dict:
    args, out, clock = setup(NAME, __doc__, argv, tiny="5 noise levels, fewer batches")
    gen = seeded(args.seed)
    n_sigmas, repeats, n = (5, 60, 32) if args.tiny else (13, 400, 64)
    sigmas = np.geomspace(1.0, 1e-3, n_sigmas) if not args.tiny else np.geomspace(0.1, 1e-3, n_sigmas)

    gauss = GaussianMixture([1.0], torch.zeros(1, DIM), [DATA_STD**2])
    mixture = toy("gmm2d")
    models = {
        "linear": (LinearScore(1 / DATA_STD**2), gauss.sample),
        # a fixed, freshly initialised network: the slopes do not depend on training
        "mlp": (ScoreMLP(DIM, hidden=32 if args.tiny else 64), mixture.sample),
    }
    measured: dict[str, dict[str, np.ndarray]] = {}
    for name, (model, sample) in models.items():
        rows = [per_row_variances(model, sample, float(sig), n, repeats, gen) for sig in sigmas]
        measured[name] = {"loss": np.array([r[0] for r in rows]), "grad": np.array([r[1] for r in rows])}
    closed_loss, closed_grad = closed_form(sigmas, 1 / DATA_STD**2, DATA_STD**2, DIM)
    plot(sigmas, measured, {"loss": closed_loss, "grad": closed_grad}, out / "variance_vs_sigma.png")

    summary = {
        "example": NAME,
        "tiny": args.tiny,
        "dim": DIM,
        "batches_per_sigma": repeats,
        "rows_per_batch": n,
        "sigmas": sigmas.tolist(),
        "slopes_fitted_below_sigma": FIT_BELOW,
        "slopes": {
            "closed_form": {"loss": slope(sigmas, closed_loss), "grad": slope(sigmas, closed_grad)},
            **{name: {"loss": slope(sigmas, m["loss"]), "grad": slope(sigmas, m["grad"])}
               for name, m in measured.items()},
        },
        "per_row_variance": {
            "closed_form": {"loss": closed_loss.tolist(), "grad": closed_grad.tolist()},
            **{name: {k: v.tolist() for k, v in m.items()} for name, m in measured.items()},
        },
        "measured_over_closed_form": {
            "loss": (measured["linear"]["loss"] / closed_loss).tolist(),
            "grad": (measured["linear"]["grad"] / closed_grad).tolist(),
        },
        "runtime_seconds": clock(),
    }
    return write_summary(out, summary)


if __name__ == "__main__":
    main()
