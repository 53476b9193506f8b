"""One noise-level view of every model, and the parametrisations of a denoising network.

The denoising samplers (``scorematch.samplers.heun`` and the others) work in the
variance-exploding (VE) view of Karras et al. (2022): data x_0, noisy x = x_0 + sigma eps,
eps ~ N(0, I), a noise-conditional score s(x, sigma) = grad_x log p_sigma(x) and the denoiser

    D(x, sigma) = x + sigma^2 s(x, sigma) = E[x_0 | x]        (Tweedie's formula).

``sigma_view`` puts every model into that view:

* a noise-conditional model (NCSN, ``conditioning == "sigma"``) or any callable
  score_fn(x, sigma) (e.g. ``GaussianMixture.noisy_score``) passes through;
* a time-conditional model of a VE SDE is called at t(sigma), the inverse of sigma(t);
* a time-conditional model of a VP or sub-VP SDE, whose state is x_t = m(t) x_0 + std(t) eps,
  is the VE state scaled by alpha = m(t): x_vp = alpha x_ve at sigma = std(t) / m(t), so

      s_ve(x, sigma) = alpha s_vp(alpha x, t(sigma)),   alpha = m(t(sigma)).

  VP: sigma^2 = e^{B(t)} - 1; sub-VP: sigma = 2 sinh(B(t) / 2), B(t) = int_0^t beta; both
  increase with t, and t(sigma) solves the quadratic B(t) = beta_min t + (beta_max - beta_min)
  t^2 / 2 in closed form. The prior N(0, I) of x_vp(1) is N(0, I / m(1)^2) in the VE view.

Parametrisations (the VE view, x = x_0 + sigma eps; in the variance-preserving coordinates of
Salimans & Ho (2022) x_vp = a x_0 + b eps with a = 1 / sqrt(1 + sigma^2), b = sigma a):

    eps-prediction   s = -eps / sigma
    x0-prediction    s = (x0 - x) / sigma^2
    v-prediction     v = a eps - b x_0, so x0 = a^2 x - b v and s = (x0 - x) / sigma^2,
                     and back v = -sigma (a x + s / a).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scorematch import _checks
from scorematch._random import Generators, randn
from scorematch.errors import ConfigError
from scorematch.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "PREDICTIONS",
    "SigmaView",
    "from_score",
    "prediction_fn",
    "score_fn_from",
    "sigma_of_time",
    "sigma_view",
    "time_of_sigma",
    "to_score",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
#: what a network can predict: the score itself, the noise eps, the clean x0, or v
PREDICTIONS = ("score", "eps", "x0", "v")


def _bc(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


# ------------------------------------------------------------------------------ sigma <-> t


def sigma_of_time(sde: SDE, t: Tensor | float) -> Tensor:
    """The VE-view noise level of an SDE at time t: sigma(t) = std(t) / m(t).

    VE: sigma(t) itself; VP: sqrt(e^{B(t)} - 1); sub-VP: 2 sinh(B(t) / 2).
    """
    t = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)
    if isinstance(sde, VESDE):
        return sde.sigma(t)
    if isinstance(sde, VPSDE):
        return torch.expm1(sde.integrated_beta(t)).sqrt()
    if isinstance(sde, SubVPSDE):
        return 2 * torch.sinh(0.5 * sde.integrated_beta(t))
    raise ConfigError(f"no VE view of {type(sde).__name__}: use VESDE, VPSDE or SubVPSDE")


def time_of_sigma(sde: SDE, sigma: Tensor | float) -> Tensor:
    """t(sigma), the inverse of ``sigma_of_time`` (each is increasing in t).

    VE: log(sigma / sigma_min) / log(sigma_max / sigma_min). VP: B = log(1 + sigma^2);
    sub-VP: B = 2 asinh(sigma / 2); then B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 gives
    t = 2 B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) (the stable root).
    """
    sigma = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
    if isinstance(sde, VESDE):
        return sde.sigma_to_time(sigma)
    if isinstance(sde, VPSDE):
        b = torch.log1p(sigma.square())
    elif isinstance(sde, SubVPSDE):
        b = 2 * torch.asinh(0.5 * sigma)
    else:
        raise ConfigError(f"no VE view of {type(sde).__name__}: use VESDE, VPSDE or SubVPSDE")
    b0, slope = sde.beta_min, sde.beta_max - sde.beta_min
    return 2 * b / (b0 + torch.sqrt(b0 * b0 + 2 * slope * b))


# ------------------------------------------------------------------------------ the view


class SigmaView:
    """A model seen at noise level sigma: ``score(x, sigma)`` and ``denoise(x, sigma)``.

    D(x, sigma) = x + sigma^2 s(x, sigma). Calling the view is ``score``, so it is a
    noise-conditional score_fn for every sampler. ``sigma_min``/``sigma_max`` are the noise
    levels the model was trained on (None when unknown) and ``prior_std`` the standard deviation
    of the start x ~ N(0, prior_std^2 I) the model's own prior corresponds to.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        prior_std: float | None = None,
        source: str = "sigma",
    ) -> None:
        self._score = score_fn
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.prior_std = prior_std if prior_std is not None else sigma_max
        self.source = source

    def __repr__(self) -> str:
        return (f"SigmaView(source={self.source!r}, sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, "
                f"prior_std={self.prior_std})")

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """s(x, sigma) = grad_x log p_sigma(x), sigma a float or one per row (n,)."""
        return self._score(x, _checks.per_row("sigma", sigma, x))

    __call__ = score

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """D(x, sigma) = x + sigma^2 s(x, sigma) = E[x_0 | x] (Tweedie)."""
        sig = _checks.per_row("sigma", sigma, x)
        return x + _bc(sig.square(), x) * self._score(x, sig)

    def sigmas(self, n: int, rho: float = 7.0) -> Tensor:
        """``karras_sigmas(n, sigma_min, sigma_max, rho)`` over the model's noise range (with the 0)."""
        from scorematch.noise import karras_sigmas

        if self.sigma_min is None or self.sigma_max is None:
            raise ConfigError("this view does not know its noise range: build the sigmas with "
                              "scorematch.noise.karras_sigmas(n, sigma_min, sigma_max)")
        return karras_sigmas(n, self.sigma_min, self.sigma_max, rho)

    def prior_sample(
        self, shape: Sequence[int], generator: Generators = None,
        dtype: torch.dtype | None = None, device: torch.device | str | None = None,
    ) -> Tensor:
        """The start x ~ N(0, prior_std^2 I) of the given shape (n, ...)."""
        if self.prior_std is None:
            raise ConfigError("this view has no prior: draw the start as sigma_max * torch.randn(shape)")
        return self.prior_std * randn(shape, generator, dtype, device)


def _time_view(fn: ScoreFn, sde: SDE, eps_t: float) -> SigmaView:
    """s_ve(x, sigma) = alpha s(alpha x, t(sigma)) with alpha = m(t(sigma)) (alpha = 1 for VE)."""
    eps_t = _checks.positive("eps_t", eps_t)
    if isinstance(sde, VESDE):
        def score(x: Tensor, sigma: Tensor) -> Tensor:
            return fn(x, time_of_sigma(sde, sigma))

        return SigmaView(score, sde.sigma_min, sde.sigma_max, sde.sigma_max, "ve")

    def score_vp(x: Tensor, sigma: Tensor) -> Tensor:
        t = time_of_sigma(sde, sigma)
        alpha = _bc(sde.mean_coeff(t), x)
        return alpha * fn(alpha * x, t)

    one = torch.tensor(1.0, dtype=torch.float64)
    lo = float(sigma_of_time(sde, torch.tensor(eps_t, dtype=torch.float64)))
    prior = sde.prior_std / float(sde.mean_coeff(one))
    return SigmaView(score_vp, lo, float(sigma_of_time(sde, one)), prior, type(sde).__name__)


def sigma_view(
    model: Any, sde: SDE | None = None, sigma_min: float | None = None, sigma_max: float | None = None,
    eps_t: float = 1e-3,
) -> SigmaView:
    """Any model as a ``SigmaView`` (score(x, sigma) and the denoiser D(x, sigma)).

    - a ``SigmaView``: returned unchanged;
    - a ``GaussianMixture``: its analytic ``noisy_score``;
    - a module with ``conditioning == "time"`` (or a callable s(x, t) with ``sde`` given): called
      through ``sde`` (VE: at t(sigma); VP / sub-VP: alpha s(alpha x, t(sigma)), alpha = m(t));
      its noise range is sigma(eps_t) .. sigma(1) (VE: sigma_min .. sigma_max);
    - a module with ``conditioning == "sigma"`` (NCSN) or a callable s(x, sigma): unchanged.

    ``sigma_min``/``sigma_max`` give (or override) the noise range the model was trained on.
    An unconditional model has no noise level and is refused.
    """
    if isinstance(model, SigmaView):
        return model
    from scorematch.distributions import GaussianMixture

    cond = getattr(model, "conditioning", None)
    if isinstance(model, GaussianMixture):
        fn, cond = model.noisy_score, "sigma"
    else:
        fn = getattr(model, "score", model) if isinstance(model, torch.nn.Module) else model
    if not callable(fn):
        raise ConfigError(f"sigma_view needs a model or a score function, got {type(model).__name__}")
    if cond == "none":
        raise ConfigError(f"{type(model).__name__} is unconditional: it has no noise level to view at; "
                          "train a noise-conditional (NCSN) or time-conditional (SDE) model")
    if cond == "time" or (cond is None and sde is not None):
        if sde is None:
            raise ConfigError(f"{type(model).__name__} is time-conditional: pass the SDE it was trained "
                              "with (sigma_view(model, sde=...))")
        view = _time_view(fn, sde, eps_t)
    elif sde is not None:
        raise ConfigError(f"{type(model).__name__} is noise-conditional: it needs no SDE")
    else:
        view = SigmaView(fn, source="sigma")
    if sigma_min is not None:
        view.sigma_min = _checks.positive("sigma_min", sigma_min)
    if sigma_max is not None:
        view.sigma_max = _checks.positive("sigma_max", sigma_max)
        if view.prior_std is None:
            view.prior_std = view.sigma_max
    return view


# ------------------------------------------------------------------------------ parametrisations


def _kind(kind: str) -> str:
    return _checks.choice("prediction", kind, PREDICTIONS)


def to_score(kind: str, x: Tensor, sigma: Tensor | float, value: Tensor) -> Tensor:
    """The score s(x, sigma) from a network's prediction ``value`` at x = x_0 + sigma eps.

    eps: -eps / sigma; x0: (x0 - x) / sigma^2; v: x0 = a^2 x - b v with a = 1 / sqrt(1 + sigma^2),
    b = sigma a, then as x0; score: unchanged.
    """
    kind = _kind(kind)
    if kind == "score":
        return value
    sig = _bc(_checks.per_row("sigma", sigma, x), x)
    if kind == "eps":
        return -value / sig
    if kind == "x0":
        return (value - x) / sig.square()
    a = torch.rsqrt(1 + sig.square())
    return (a.square() * x - sig * a * value - x) / sig.square()


def from_score(kind: str, x: Tensor, sigma: Tensor | float, score: Tensor) -> Tensor:
    """The inverse of ``to_score``: eps = -sigma s; x0 = x + sigma^2 s; v = -sigma (a x + s / a)."""
    kind = _kind(kind)
    if kind == "score":
        return score
    sig = _bc(_checks.per_row("sigma", sigma, x), x)
    if kind == "eps":
        return -sig * score
    if kind == "x0":
        return x + sig.square() * score
    a = torch.rsqrt(1 + sig.square())
    return -sig * (a * x + score / a)


def score_fn_from(fn: Callable[[Tensor, Tensor], Tensor], kind: str, vp_input: bool = False) -> ScoreFn:
    """A noise-conditional score_fn(x, sigma) from a network ``fn`` predicting ``kind``.

    ``fn(x, sigma)`` takes the VE state x = x_0 + sigma eps, or with ``vp_input`` the
    variance-preserving one x / sqrt(1 + sigma^2) (how eps- and v-prediction networks are
    usually trained); a network conditioned on a time t is wrapped by the caller first.
    """
    kind = _kind(kind)

    def score(x: Tensor, sigma: Tensor | float) -> Tensor:
        sig = _checks.per_row("sigma", sigma, x)
        inp = x * _bc(torch.rsqrt(1 + sig.square()), x) if vp_input else x
        return to_score(kind, x, sig, fn(inp, sig))

    return score


def prediction_fn(score_fn: ScoreFn, kind: str, vp_input: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """The inverse adapter: a network ``f(x, sigma)`` predicting ``kind`` from a score_fn(x, sigma),
    taking x in the VE view or, with ``vp_input``, x / sqrt(1 + sigma^2)."""
    kind = _kind(kind)
    score_fn = getattr(score_fn, "score", score_fn)

    def predict(x: Tensor, sigma: Tensor | float) -> Tensor:
        sig = _checks.per_row("sigma", sigma, x)
        x_ve = x * _bc(torch.sqrt(1 + sig.square()), x) if vp_input else x
        return from_score(kind, x_ve, sig, score_fn(x_ve, sig))

    return predict
