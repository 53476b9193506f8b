"""Sample-quality and score-quality metrics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scorematch._checks import batch, positive, positive_int
from scorematch._random import randn_like
from scorematch.errors import DataError
from scorematch.objectives._common import as_score_fn, owning_module


def fisher_divergence(
    score_fn: Callable, dist, n: int = 10_000, generator: torch.Generator | None = None
) -> float:
    """Fisher divergence to an analytic distribution, 1/2 E_{x~p} ||s_theta(x) - grad log p(x)||^2,

    estimated with ``n`` samples of ``dist`` (anything with ``sample`` and ``score``).
    """
    if not callable(getattr(dist, "score", None)):
        raise DataError(f"{dist!r} has no analytic score; the Fisher divergence needs one")
    x = dist.sample(positive_int("n", n), generator=generator)
    module = owning_module(score_fn)
    p = next(module.parameters(), None) if module is not None else None
    if p is not None:
        x = x.to(device=p.device, dtype=p.dtype)
    s = as_score_fn(score_fn)(x).detach()
    return float(0.5 * (s - dist.score(x)).flatten(1).pow(2).sum(1).mean())


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b).pow(2)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_points: int = 2000) -> float:
    """The median heuristic: median of pairwise distances ||z_i - z_j|| over the pooled samples."""
    # up to max_points from both sides (half each when both are large), not the first max_points of x
    half = max_points // 2
    z = torch.cat([x[: max(half, max_points - len(y))], y[: max(half, max_points - len(x))]])
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    return float(d[iu[0], iu[1]].median().clamp_min(1e-12))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with an RBF kernel,

    MMD^2 = E k(x,x') + E k(y,y') - 2 E k(x,y),  k(a,b) = exp(-||a-b||^2 / (2 h^2)),

    h by the median heuristic when ``bandwidth`` is None. Inputs (n, ...) are flattened.
    """
    x, y = batch("x", x).flatten(1).double(), batch("y", y).flatten(1).double()
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise DataError("mmd needs at least two samples on each side")
    h = positive("bandwidth", bandwidth) if bandwidth is not None else median_bandwidth(x, y)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-_pairwise_sq(a, b) / (2 * h**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance, sqrt(E_theta W_2^2(theta^T x, theta^T y)), theta uniform on
    the sphere; each 1-D W_2 from sorted projections (quantiles interpolated when n != m)."""
    x, y = batch("x", x).flatten(1).double(), batch("y", y).flatten(1).double()
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    theta = randn_like(x.new_empty(positive_int("n_projections", n_projections), x.shape[1]), generator)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px, py = (x @ theta.T).sort(0).values, (y @ theta.T).sort(0).values
    if len(px) != len(py):
        q = torch.linspace(0, 1, max(len(px), len(py)), dtype=x.dtype)
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float((px - py).pow(2).mean().sqrt())


def mode_weights(samples: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose nearest mean (Euclidean) is mu_k, shape (K,)."""
    x = batch("samples", samples).flatten(1)
    mu = torch.as_tensor(means, dtype=x.dtype, device=x.device).reshape(-1, x.shape[1])
    nearest = torch.cdist(x, mu).argmin(1)
    return torch.bincount(nearest, minlength=len(mu)).to(x.dtype) / len(x)
