"""Sample-quality and score-quality metrics.

Every metric computes on the device of its inputs (float64, or float32 on Apple's MPS, which has
no float64), and returns Python floats.

    fisher_divergence   1/2 E_p ||s_theta - s*||^2 against a closed-form score
    mmd                 unbiased MMD^2 with an RBF kernel (median-heuristic bandwidth)
    sliced_wasserstein  sliced 2-Wasserstein distance
    precision_recall    k-nearest-neighbour precision and recall (Kynkaanniemi et al. 2019)
    subset_estimates    a metric over disjoint subsets: its standard error
    mode_weights        fraction of samples nearest each mixture mean
"""

from __future__ import annotations

import math
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
    x0 = dist.sample(positive_int("n", n), generator=generator)
    module = owning_module(score_fn)
    p = next(module.parameters(), None) if module is not None else None
    x = x0.to(device=p.device, dtype=p.dtype) if p is not None else x0
    s = as_score_fn(score_fn)(x).detach()
    target = dist.score(x0).to(s)  # the closed form where the distribution lives (the CPU)
    return float(0.5 * (s - target).flatten(1).pow(2).sum(1).mean())


def _work(x: torch.Tensor) -> torch.Tensor:
    """x flattened to (n, D) in float64 (float32 on MPS), on its own device."""
    return x.flatten(1).to(torch.float32 if x.device.type == "mps" else torch.float64)


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b).pow(2)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_points: int = 2000) -> float:
    """The median heuristic: median of pairwise distances ||z_i - z_j|| over the pooled samples
    (inputs (n, ...) are flattened)."""
    # up to max_points from both sides (half each when both are large), not the first max_points of x
    x, y = x.flatten(1), y.flatten(1).to(x.device)
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
    x, y = _work(batch("x", x)), _work(batch("y", y)).to(x.device)
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
    x, y = _work(batch("x", x)), _work(batch("y", y)).to(x.device)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    theta = randn_like(x.new_empty(positive_int("n_projections", n_projections), x.shape[1]), generator)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px, py = (x @ theta.T).sort(0).values, (y @ theta.T).sort(0).values
    if len(px) != len(py):
        q = torch.linspace(0, 1, max(len(px), len(py)), dtype=x.dtype, device=x.device)
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float((px - py).pow(2).mean().sqrt())


def mode_weights(samples: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose nearest mean (Euclidean) is mu_k, shape (K,)."""
    x = batch("samples", samples).flatten(1)
    mu = torch.as_tensor(means, dtype=x.dtype, device=x.device).reshape(-1, x.shape[1])
    nearest = torch.cdist(x, mu).argmin(1)
    return torch.bincount(nearest, minlength=len(mu)).to(x.dtype) / len(x)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row of x, shape (n,)."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0: the point itself
    return torch.cat(out)


def _covered(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query row: is it inside some ball ||q - c_j|| <= r_j? Shape (n_query,), bool."""
    out = []
    for i in range(0, len(query), chunk):
        out.append((torch.cdist(query[i:i + chunk], centres) <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, generated: torch.Tensor, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of Kynkaanniemi et al. (2019), with k-nearest-neighbour manifolds.

    The manifold of a set is the union of balls around its points, each of radius the distance
    to the point's k-th nearest neighbour in the set. Precision: the fraction of generated
    samples inside the manifold of the real ones (are samples realistic?); recall: the fraction
    of real points inside the manifold of the generated ones (is the data covered?). Both in
    [0, 1]; inputs (n, ...) are flattened; each set needs more than k points.
    """
    k = positive_int("k", k)
    r, g = _work(batch("real", real)), _work(batch("generated", generated)).to(real.device)
    if r.shape[1] != g.shape[1]:
        raise DataError(f"real and generated must have the same dimension, got {r.shape[1]} and {g.shape[1]}")
    if len(r) <= k or len(g) <= k:
        raise DataError(f"precision_recall with k={k} needs more than {k} points on each side, "
                        f"got {len(r)} real and {len(g)} generated")
    precision = _covered(g, r, _kth_neighbour_radius(r, k, chunk), chunk).double().mean()
    recall = _covered(r, g, _kth_neighbour_radius(g, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


def subset_estimates(metric: Callable[[torch.Tensor, torch.Tensor], float], x: torch.Tensor, y: torch.Tensor,
                     n_subsets: int = 5, generator: torch.Generator | None = None) -> tuple[list[float], float]:
    """``metric`` on ``n_subsets`` disjoint random subsets (x_k, y_k) of x and y, and the standard
    error it implies for the metric on the whole sets: sd_k(values) / sqrt(n_subsets).

    (The estimate on the whole sets has about the variance of the mean of the subset values when
    that variance falls like 1/n, as MMD^2's does when the distributions differ; it is an upper
    estimate when they agree.)
    """
    k = positive_int("n_subsets", n_subsets, minimum=2)
    if len(x) < 2 * k or len(y) < 2 * k:
        raise DataError(f"{k} subsets need at least {2 * k} points on each side, got {len(x)} and {len(y)}")
    px = torch.randperm(len(x), generator=generator).to(x.device)
    py = torch.randperm(len(y), generator=generator).to(y.device)
    values = [metric(x[px[i::k]], y[py[i::k]]) for i in range(k)]
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    return values, sd / math.sqrt(k)
