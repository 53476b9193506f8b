"""Forward SDEs of score-based generative modelling (Song et al. 2021, "Score-Based Generative
Modeling through SDEs"): VE, VP and sub-VP, on t in [0, T], T = 1.

Each SDE dx = f(x, t) dt + g(t) dw has a Gaussian perturbation kernel
p_0t(x_t | x_0) = N(m(t) x_0, std(t)^2 I), which ``marginal`` returns as (mean, std).
Times are tensors of shape (n,), one per row of x (a float is broadcast to all rows);
x is (n, D) or (n, C, H, W) and is never reshaped.

VE kernel convention.  The VE SDE is the L -> infinity limit of the NCSN chain
x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z with sigma_0 = 0, so
x_i | x_0 ~ N(x_0, sigma_i^2 I).
As in the reference implementation of Song et al. 2021, the kernel is therefore
p_0t = N(x_0, sigma(t)^2 I): the state at t = 0 already carries the N(0, sigma_min^2 I)
perturbation (the first NCSN level), and dx = sqrt(d[sigma^2]/dt) dw adds sigma(t)^2 - sigma_min^2
on top.  This keeps marginal_std(t) = sigma(t) in [sigma_L, sigma_1] for NCSN models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from scorematch import _checks, _compile
from scorematch._random import Generators, randn
from scorematch.errors import ConfigError

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "get_sde",
    "ve_from_sigmas",
    "sigma_to_time",
    "time_to_sigma",
    "sigma_conditioned",
]


#: torchdiffeq solvers accepted by the probability-flow ODE sampler and by ``log_prob``.
ODE_METHODS = (
    "dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun",
    "euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams",
)



def _as_tensor(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.get_default_dtype())


def _bc(v: Tensor, x: Tensor) -> Tensor:
    """View a per-row tensor (n,) as (n, 1, ..., 1) to multiply a batch x row by row."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def _n_dims(x: Tensor) -> int:
    return math.prod(x.shape[1:])


def _standard_normal_log_prob(x: Tensor, std: float) -> Tensor:
    """Per-row log N(x; 0, std^2 I) = -D/2 log(2 pi std^2) - ||x||^2 / (2 std^2)."""
    _checks.batch("x", x)
    d = _n_dims(x)
    sq = x.flatten(1).pow(2).sum(1)
    return -0.5 * d * math.log(2 * math.pi * std**2) - sq / (2 * std**2)


class SDE:
    """Interface shared by the SDEs: dx = f(x, t) dt + g(t) dw on [0, T], T = 1.

    Subclasses implement ``drift``, ``diffusion``, ``mean_coeff``, ``marginal_std`` and
    ``prior_std``; the rest follows from them.
    """

    T: ClassVar[float] = 1.0

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The drift f(x, t), shaped like x."""
        raise NotImplementedError

    def diffusion(self, t: Tensor | float) -> Tensor:
        """The diffusion coefficient g(t), shaped like t ((n,) for t of shape (n,))."""
        raise NotImplementedError

    def mean_coeff(self, t: Tensor | float) -> Tensor:
        """m(t) with E[x_t | x_0] = m(t) x_0, shaped like t."""
        raise NotImplementedError

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """std(t) with p_0t(x_t | x_0) = N(m(t) x_0, std(t)^2 I), shaped like t."""
        raise NotImplementedError

    prior_std: ClassVar[float] = 1.0

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean and std of p_0t(x_t | x_0) = N(m(t) x_0, std(t)^2 I).

        Returns (mean, std): mean = m(t) x_0 shaped like x0, std of shape (n,).
        """
        _checks.batch("x0", x0)
        t = _checks.per_row("t", t, x0)
        return _bc(self.mean_coeff(t), x0) * x0, self.marginal_std(t)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: Generators = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw x_T ~ p_T = N(0, prior_std^2 I) of the given shape (n, ...)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ConfigError(f"shape must be (n, D) or (n, C, H, W), got {shape}")
        return self.prior_std * randn(shape, generator, dtype, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Per-row log p_T(x) = -D/2 log(2 pi prior_std^2) - ||x||^2 / (2 prior_std^2), (n,)."""
        return _standard_normal_log_prob(x, self.prior_std)

    def discretize(self, x: Tensor, t: Tensor | float, dt: float) -> tuple[Tensor, Tensor]:
        """One forward step from t - dt to t: x_t = x_{t-dt} + f_dt + g_dt z.

        Default (Euler-Maruyama): f_dt = f(x, t) dt, g_dt = g(t) sqrt(dt).
        Returns (f_dt shaped like x, g_dt of shape (n,)).
        """
        dt = _checks.positive("dt", dt)
        t = _checks.per_row("t", t, x)
        return self.drift(x, t) * dt, self.diffusion(t) * math.sqrt(dt)

    def langevin_alpha(self, t: Tensor | float, dt: float) -> Tensor:
        """alpha_t of the Langevin corrector's step rule: 1 (VE); 1 - beta(t) dt for VP chains."""
        return torch.ones_like(_as_tensor(t))


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE: dx = sqrt(d[sigma^2(t)]/dt) dw,
    sigma(t) = sigma_min (sigma_max/sigma_min)^t.

    g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)), f = 0,
    p_0t(x_t | x_0) = N(x_0, sigma(t)^2 I) (see the module docstring), p_T = N(0, sigma_max^2 I).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        lo = _checks.positive("sigma_min", self.sigma_min)
        hi = _checks.positive("sigma_max", self.sigma_max)
        if not lo < hi:
            raise ConfigError(f"VESDE needs sigma_min < sigma_max, got {lo} and {hi}")
        object.__setattr__(self, "sigma_min", lo)
        object.__setattr__(self, "sigma_max", hi)

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(_as_tensor(t) * self._log_ratio)

    def time_to_sigma(self, t: Tensor | float) -> Tensor | float:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t (a float for a float)."""
        if isinstance(t, Tensor):
            return self.sigma(t)
        return self.sigma_min * math.exp(float(t) * self._log_ratio)

    def sigma_to_time(self, sigma: Tensor | float) -> Tensor | float:
        """t(sigma) = log(sigma / sigma_min) / log(sigma_max / sigma_min), inverse of sigma(t)."""
        if isinstance(sigma, Tensor):
            return torch.log(sigma / self.sigma_min) / self._log_ratio
        s = _checks.positive("sigma", sigma)
        return math.log(s / self.sigma_min) / self._log_ratio

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = 0."""
        _checks.per_row("t", t, x)
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sqrt(d[sigma^2]/dt) = sigma(t) sqrt(2 log(sigma_max / sigma_min))."""
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def mean_coeff(self, t: Tensor | float) -> Tensor:
        """m(t) = 1."""
        return torch.ones_like(_as_tensor(t))

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """std(t) = sigma(t) (the NCSN kernel N(x_0, sigma(t)^2 I))."""
        return self.sigma(t)

    def discretize(self, x: Tensor, t: Tensor | float, dt: float) -> tuple[Tensor, Tensor]:
        """The NCSN chain: x_t = x_{t-dt} + sqrt(sigma(t)^2 - sigma(t - dt)^2) z.

        Returns (f_dt = 0, g_dt = sqrt(sigma(t)^2 - sigma(max(t - dt, 0))^2)), g_dt of shape (n,).
        """
        dt = _checks.positive("dt", dt)
        t = _checks.per_row("t", t, x)
        prev = self.sigma((t - dt).clamp_min(0.0))
        return torch.zeros_like(x), (self.sigma(t).pow(2) - prev.pow(2)).clamp_min(0.0).sqrt()


@dataclass(frozen=True)
class _LinearBeta(SDE):
    """Shared pieces of the VP-type SDEs with beta(t) = beta_min + t (beta_max - beta_min)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        lo = _checks.positive("beta_min", self.beta_min)
        hi = _checks.positive("beta_max", self.beta_max)
        if not lo < hi:
            raise ConfigError(f"{type(self).__name__} needs beta_min < beta_max, got {lo} and {hi}")
        object.__setattr__(self, "beta_min", lo)
        object.__setattr__(self, "beta_max", hi)

    def beta(self, t: Tensor | float) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor | float) -> Tensor:
        """B(t) = int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2."""
        t = _as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = -1/2 beta(t) x."""
        t = _checks.per_row("t", t, x)
        return -0.5 * _bc(self.beta(t), x) * x

    def mean_coeff(self, t: Tensor | float) -> Tensor:
        """m(t) = exp(-1/2 int_0^t beta(s) ds)."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def langevin_alpha(self, t: Tensor | float, dt: float) -> Tensor:
        """alpha_t = 1 - beta(t) dt, the DDPM chain's alpha at time t (dt = 1/N)."""
        return 1.0 - self.beta(t) * _checks.positive("dt", dt)


@dataclass(frozen=True)
class VPSDE(_LinearBeta):
    """Variance-preserving SDE: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta linear in t.

    p_0t(x_t | x_0) = N(exp(-B(t)/2) x_0, (1 - exp(-B(t))) I), B(t) = int_0^t beta, p_T = N(0, I).
    """

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sqrt(beta(t))."""
        return self.beta(t).sqrt()

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """std(t) = sqrt(1 - exp(-int_0^t beta))."""
        return (-torch.expm1(-self.integrated_beta(t))).sqrt()

    def discretize(self, x: Tensor, t: Tensor | float, dt: float) -> tuple[Tensor, Tensor]:
        """The DDPM chain x_t = sqrt(1 - beta_i) x_{t-dt} + sqrt(beta_i) z with beta_i = beta(t) dt.

        Returns (f_dt = (sqrt(1 - beta_i) - 1) x, g_dt = sqrt(beta_i)), g_dt of shape (n,).
        """
        dt = _checks.positive("dt", dt)
        t = _checks.per_row("t", t, x)
        beta_i = self.beta(t) * dt
        if bool((beta_i >= 1).any()):
            raise ConfigError(
                "VP discretisation needs beta(t) dt < 1, got beta_max * dt = "
                f"{self.beta_max * dt:.3g}; use more steps (smaller dt)"
            )
        return (_bc((1 - beta_i).sqrt(), x) - 1) * x, beta_i.sqrt()


@dataclass(frozen=True)
class SubVPSDE(_LinearBeta):
    """Sub-VP SDE: dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    p_0t(x_t | x_0) = N(exp(-B(t)/2) x_0, (1 - exp(-B(t)))^2 I), B(t) = int_0^t beta, p_T = N(0, I).
    ``discretize`` is the Euler-Maruyama default.
    """

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sqrt(beta(t) (1 - exp(-2 int_0^t beta)))."""
        return (self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))).sqrt()

    def marginal_std(self, t: Tensor | float) -> Tensor:
        """std(t) = 1 - exp(-int_0^t beta)."""
        return -torch.expm1(-self.integrated_beta(t))


_SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def get_sde(name: str, **kwargs: float) -> SDE:
    """Build an SDE by name: "ve" (VESDE), "vp" (VPSDE) or "subvp" (SubVPSDE)."""
    key = _checks.choice("sde", str(name).lower(), list(_SDES))
    cls = _SDES[key]
    allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown argument(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid: {', '.join(allowed)}"
        )
    return cls(**kwargs)


def ve_from_sigmas(sigmas: Tensor | Sequence[float]) -> VESDE:
    """The VESDE whose sigma(t) passes through an NCSN schedule sigma_1 > ... > sigma_L.

    sigma_min = sigma_L, sigma_max = sigma_1, so sigma(1) = sigma_1 and sigma(0) = sigma_L; a
    geometric schedule sigma_i = sigma_1 (sigma_L/sigma_1)^((i-1)/(L-1)) is hit exactly at
    t_i = (L - i) / (L - 1).
    """
    s = _checks.descending_sigmas(sigmas)
    if s.numel() < 2:
        raise ConfigError("ve_from_sigmas needs at least two noise levels (sigma_1 > sigma_L)")
    return VESDE(sigma_min=float(s[-1]), sigma_max=float(s[0]))


def sigma_to_time(sde: VESDE, sigma: Tensor | float) -> Tensor | float:
    """t = log(sigma / sigma_min) / log(sigma_max / sigma_min), the time where sigma(t) = sigma."""
    if not isinstance(sde, VESDE):
        raise ConfigError(f"sigma_to_time needs a VESDE, got {type(sde).__name__}")
    return sde.sigma_to_time(sigma)


def time_to_sigma(sde: VESDE, t: Tensor | float) -> Tensor | float:
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    if not isinstance(sde, VESDE):
        raise ConfigError(f"time_to_sigma needs a VESDE, got {type(sde).__name__}")
    return sde.time_to_sigma(t)


def sigma_conditioned(
    score_fn_sigma: Callable[[Tensor, Tensor], Tensor], sde: VESDE
) -> Callable[[Tensor, Tensor | float], Tensor]:
    """Adapt a noise-conditional score_fn(x, sigma) to a time-conditional score_fn(x, t).

    s(x, t) = score_fn_sigma(x, sigma(t)) with sigma(t) = sde.marginal_std(t), so an NCSN
    model trained on sigma_1..sigma_L can drive the samplers of a ``ve_from_sigmas`` SDE.
    ``score_fn_sigma`` may also be a module with ``.score(x, sigma)``. The returned function
    declares ``wraps_score``, so the structured exact trace (``scorematch.autodiff``) of a model
    with linear ends also applies through it.
    """
    if not isinstance(sde, VESDE):
        raise ConfigError(
            "sigma_conditioned needs a VESDE: a noise-conditional model learns the score of "
            f"x + sigma z, which is the VE kernel; got {type(sde).__name__}"
        )
    fn = _compile.method(score_fn_sigma, "score")
    if not callable(fn):
        raise ConfigError("score_fn_sigma must be callable or have a .score(x, sigma) method")

    def sigma_of(x: Tensor, t: Tensor | float) -> tuple[Tensor]:
        return (sde.marginal_std(_checks.per_row("t", t, x)),)

    def score_fn(x: Tensor, t: Tensor | float) -> Tensor:
        return fn(x, *sigma_of(x, t))

    score_fn.wraps_score = (fn, sigma_of)  # type: ignore[attr-defined]  # for the structured exact trace
    return score_fn
