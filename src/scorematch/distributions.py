"""Toy distributions: Gaussian mixtures with closed-form log-density and score, and sample-only toys.

A mixture p(x) = sum_k pi_k N(x; mu_k, Sigma_k) has

    log p(x)  = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)]
    grad log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x),   r_k = posterior responsibility,

and p convolved with N(0, sigma^2 I) is the mixture with Sigma_k + sigma^2 I, so
every noisy score used by DSM/NCSN is analytic too (conventions.md, "Toy distributions").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from scorematch._checks import choice, positive, positive_int
from scorematch.errors import ConfigError, DataError

__all__ = ["GaussianMixture", "SampleOnlyToy", "toy", "toy_names"]


def _as_matrix(covs: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """Accept covariances as (K, D, D), (K, D) diagonals, (K,) isotropic variances or a scalar."""
    c = torch.as_tensor(covs, dtype=torch.float64)
    if c.dim() == 0:
        c = c.expand(k)
    if c.dim() == 1 and c.shape[0] == k:
        return c[:, None, None] * torch.eye(d, dtype=torch.float64)
    if c.dim() == 2 and c.shape == (k, d):
        return torch.diag_embed(c)
    if c.dim() == 3 and c.shape == (k, d, d):
        return c
    raise ConfigError(
        f"covs must have shape ({k}, {d}, {d}), ({k}, {d}) diagonals or ({k},) variances; "
        f"got {tuple(c.shape)}"
    )


#: ``noisy_score`` at more distinct noise levels than this takes every row at once
_FEW_LEVELS = 8


class GaussianMixture:
    """p(x) = sum_k pi_k N(x; mu_k, Sigma_k) in any dimension D, with analytic log_prob and score.

    Parameters are stored in float64; every method returns tensors in the dtype and on the
    device of its input.
    """

    def __init__(
        self,
        weights: Sequence[float] | torch.Tensor,
        means: Sequence[Sequence[float]] | torch.Tensor,
        covs: Sequence | torch.Tensor,
    ) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.dim() == 1:
            mu = mu[:, None]
        if mu.dim() != 2 or mu.shape[0] != w.shape[0]:
            raise ConfigError(
                f"means must have shape (K, D) with K = len(weights) = {w.shape[0]}, "
                f"got {tuple(mu.shape)}"
            )
        if not torch.isfinite(mu).all():
            raise ConfigError(f"mixture means must be finite, got {mu.tolist()}")
        if (w <= 0).any() or not torch.isfinite(w).all():
            raise ConfigError(f"mixture weights must be positive and finite, got {w.tolist()}")
        if abs(float(w.sum()) - 1.0) > 1e-6:
            raise ConfigError(f"mixture weights must sum to 1, got sum {float(w.sum()):.6g}")
        k, d = mu.shape
        cov = _as_matrix(covs, k, d)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        chol, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            raise ConfigError("every covariance must be symmetric positive definite")
        self.weights, self.means, self.covs = w, mu, cov
        self._chol = chol
        self._log_norm = (
            torch.log(w) - 0.5 * d * math.log(2 * math.pi)
            - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        )

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"expected a batch of shape (n, {self.dim}), got {shape}")
        return x

    def _component_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log(pi_k N(x; mu_k, Sigma_k)) of shape (n, K) and Sigma_k^{-1}(mu_k - x) of shape (n, K, D)."""
        diff = self.means.to(x.device)[None] - x.to(torch.float64)[:, None]  # (n, K, D)
        chol = self._chol.to(x.device)
        # Solve L y = diff for every component: y = L^{-1}(mu - x), quad = ||y||^2.
        y = torch.linalg.solve_triangular(chol[None], diff[..., None], upper=False)[..., 0]
        quad = (y**2).sum(-1)
        prec_diff = torch.linalg.solve_triangular(
            chol.transpose(-1, -2)[None], y[..., None], upper=True
        )[..., 0]
        return self._log_norm.to(x.device) - 0.5 * quad, prec_diff

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)], shape (n,)."""
        logits, _ = self._component_terms(self._check(x))
        return torch.logsumexp(logits, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), shape (n, D)."""
        logits, prec_diff = self._component_terms(self._check(x))
        r = torch.softmax(logits, dim=1)
        return (r[..., None] * prec_diff).sum(1).to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities r_k(x), shape (n, K)."""
        logits, _ = self._component_terms(self._check(x))
        return torch.softmax(logits, dim=1).to(x.dtype)

    def noisy(self, sigma: float) -> GaussianMixture:
        """p convolved with N(0, sigma^2 I): the mixture with covariances Sigma_k + sigma^2 I."""
        s = positive("sigma", sigma)
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, self.means, self.covs + s**2 * eye)

    def noisy_score(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Analytic noise-conditional score grad_x log (p * N(0, sigma^2 I))(x).

        ``sigma`` is a float or a tensor of shape (n,), one noise level per row, so this is a
        noise-conditional score_fn(x, sigma) in the sense of the contract.
        """
        x = self._check(x)
        sig = torch.as_tensor(sigma, dtype=torch.float64).flatten().cpu()
        if sig.numel() == 1:
            return self.noisy(float(sig)).score(x)
        if sig.numel() != x.shape[0]:
            raise DataError(f"sigma must be a float or have shape ({x.shape[0]},), got {tuple(sig.shape)}")
        out = torch.empty_like(x)
        levels = torch.unique(sig)
        if levels.numel() > _FEW_LEVELS:  # rows at many levels (adaptive samplers): every row at once
            return self._score_per_row(x, sig.to(x.device))
        for value in levels:
            rows = (sig == value).to(x.device)
            out[rows] = self.noisy(float(value)).score(x[rows])
        return out

    def _score_per_row(self, x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """``noisy_score`` with each row at its own sigma: sum_k r_k Sigma_ik^{-1} (mu_k - x_i),
        Sigma_ik = Sigma_k + sigma_i^2 I, through one Cholesky factor per row and component (rows
        in chunks of at most 2^22 matrix entries)."""
        k, d = self.means.shape
        eye = torch.eye(d, dtype=torch.float64, device=x.device)
        covs, means = self.covs.to(x.device), self.means.to(x.device)
        log_w = torch.log(self.weights.to(x.device)) - 0.5 * d * math.log(2 * math.pi)
        out = torch.empty_like(x)
        chunk = max(1, 2**22 // (k * d * d))
        for a in range(0, x.shape[0], chunk):
            xs, s2 = x[a:a + chunk].to(torch.float64), sig[a:a + chunk].to(torch.float64) ** 2
            chol = torch.linalg.cholesky(covs[None] + s2[:, None, None, None] * eye)  # (m, K, D, D)
            diff = means[None] - xs[:, None]
            y = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)
            prec_diff = torch.linalg.solve_triangular(chol.transpose(-1, -2), y, upper=True)[..., 0]
            logits = log_w - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1) - 0.5 * (y[..., 0] ** 2).sum(-1)
            out[a:a + chunk] = (torch.softmax(logits, dim=1)[..., None] * prec_diff).sum(1).to(x.dtype)
        return out

    def component(self, k: int) -> GaussianMixture:
        """The k-th component N(mu_k, Sigma_k) alone, as a one-component mixture."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.n_components:
            raise ConfigError(f"component index must be an int in [0, {self.n_components}), got {k!r}")
        return GaussianMixture([1.0], self.means[k:k + 1], self.covs[k:k + 1])

    def conditional(self, known: Sequence[int], values: Sequence[float] | torch.Tensor) -> GaussianMixture:
        """p(x_B | x_A = a): the mixture over the other coordinates B given x_A = ``values`` at the
        coordinates A = ``known``, again a Gaussian mixture (in closed form):

            p(x_B | a) = sum_k w_k N(x_B; mu_kB + S_kBA S_kAA^{-1} (a - mu_kA), S_kBB - S_kBA S_kAA^{-1} S_kAB),
            w_k proportional to pi_k N(a; mu_kA, S_kAA).
        """
        idx = [int(i) for i in known]
        if not idx or len(set(idx)) != len(idx) or not all(0 <= i < self.dim for i in idx) or len(idx) == self.dim:
            raise ConfigError(f"known must list distinct coordinates in [0, {self.dim}) and leave at least one "
                              f"free, got {list(known)}")
        a = torch.as_tensor(values, dtype=torch.float64).flatten()
        if a.shape != (len(idx),):
            raise DataError(f"values must hold one number per known coordinate ({len(idx)}), got {tuple(a.shape)}")
        rest = [i for i in range(self.dim) if i not in idx]
        ia, ib = torch.tensor(idx), torch.tensor(rest)
        s_aa = self.covs[:, ia][:, :, ia]
        s_ba = self.covs[:, ib][:, :, ia]
        s_bb = self.covs[:, ib][:, :, ib]
        gain = torch.linalg.solve(s_aa, s_ba.transpose(-1, -2)).transpose(-1, -2)  # S_BA S_AA^{-1}
        means = self.means[:, ib] + (gain @ (a - self.means[:, ia])[..., None])[..., 0]
        covs = s_bb - gain @ s_ba.transpose(-1, -2)
        marginal = GaussianMixture(self.weights, self.means[:, ia], s_aa)
        logits, _ = marginal._component_terms(a[None])
        return GaussianMixture(torch.softmax(logits[0], 0), means, covs)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float32, shape (n, D)): a component k ~ Categorical(pi), then mu_k + L_k z."""
        n = positive_int("n", n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        x = self.means[k] + (self._chol[k] @ z[..., None])[..., 0]
        return x.to(torch.get_default_dtype())


class SampleOnlyToy:
    """A named 2-D toy with a sampler but no closed-form density (moons, swissroll, ...)."""

    def __init__(self, name: str, sampler: Callable[[int, torch.Generator | None], torch.Tensor]):
        self.name, self._sampler, self.dim = name, sampler, 2

    def __repr__(self) -> str:
        return f"SampleOnlyToy({self.name!r})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of shape (n, 2), float32."""
        return self._sampler(positive_int("n", n), generator).to(torch.get_default_dtype())


def _uniform(n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator | None) -> torch.Tensor:
    n_up = n // 2
    t = math.pi * _uniform(n, g)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where((torch.arange(n) < n_up)[:, None], upper, lower)
    x = x + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return 2.0 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64))


def _swissroll(n: int, g: torch.Generator | None) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0
    return x + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator | None) -> torch.Tensor:
    x1 = 4 * _uniform(n, g) - 2
    x2 = _uniform(n, g) - 2 * torch.randint(0, 2, (n,), generator=g).double()
    x2 = x2 + torch.floor(x1) % 2
    return 2.0 * torch.stack([x1, x2], 1)


def _rings(n: int, g: torch.Generator | None) -> torch.Tensor:
    radius = 1.0 + torch.randint(0, 4, (n,), generator=g).double()
    t = 2 * math.pi * _uniform(n, g)
    x = radius[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1)
    return 0.8 * x + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _pinwheel(n: int, g: torch.Generator | None) -> torch.Tensor:
    n_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(0, n_arms, (n,), generator=g).double()
    feats = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [radial_std, tangential_std], dtype=torch.float64
    ) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    angle = 2 * math.pi * arm / n_arms + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return 2.0 * (rot @ feats[..., None])[..., 0]


def _eight_gaussians() -> GaussianMixture:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    means = 2 * math.sqrt(2) * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture(torch.full((8,), 1 / 8), means, torch.full((8,), 0.125))


_TOYS: dict[str, Callable[[], GaussianMixture | SampleOnlyToy]] = {
    "gmm2d": lambda: GaussianMixture(
        [0.5, 0.5], [[2.0, 2.0], [-2.0, -2.0]], [[[1.0, 0.5], [0.5, 1.0]], [[1.0, -0.5], [-0.5, 1.0]]]
    ),
    "gmm1d": lambda: GaussianMixture([0.6, 0.4], [[2.0], [-2.0]], [0.5**2, 0.2**2]),
    "imbalanced": lambda: GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0]),
    "8gaussians": _eight_gaussians,
    "moons": lambda: SampleOnlyToy("moons", _moons),
    "swissroll": lambda: SampleOnlyToy("swissroll", _swissroll),
    "checkerboard": lambda: SampleOnlyToy("checkerboard", _checkerboard),
    "rings": lambda: SampleOnlyToy("rings", _rings),
    "pinwheel": lambda: SampleOnlyToy("pinwheel", _pinwheel),
}


def toy_names() -> list[str]:
    """Names accepted by ``toy``: the mixtures with closed forms first, then sample-only toys."""
    return list(_TOYS)


def toy(name: str) -> GaussianMixture | SampleOnlyToy:
    """A named toy distribution.

    gmm2d: 1/2 N((2,2), [[1,.5],[.5,1]]) + 1/2 N((-2,-2), [[1,-.5],[-.5,1]]);
    gmm1d: 0.6 N(2, 0.5^2) + 0.4 N(-2, 0.2^2); imbalanced: 0.2 N((-5,-5), I) + 0.8 N((5,5), I);
    8gaussians: eight equal N(mu_k, 0.125 I) on the circle of radius 2 sqrt(2);
    moons, swissroll, checkerboard, rings, pinwheel: sample-only 2-D toys.
    """
    return _TOYS[choice("toy", name, toy_names())]()
