"""EDM preconditioning (Karras et al. 2022): a raw network F wrapped into a denoiser D(x; sigma).

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

with the coefficients of Table 1 of Karras et al. 2022 ("EDM" column):

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)     c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)            c_noise = ln(sigma) / 4

so the input of F and its training target both have unit variance when the data have standard
deviation sigma_data. The score follows from Tweedie's formula, s(x, sigma) = (D(x; sigma) - x) / sigma^2,
so a preconditioned model is sampled like every other noise-conditional scorematch model.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from scorematch import _checks
from scorematch.errors import ConfigError, DataError
from scorematch.models import time as _time  # noqa: F401  (registers TimeMLP and TimeUNet)
from scorematch.models.base import MODEL_REGISTRY, register_model

__all__ = ["EDMPrecond", "edm_coefficients", "estimate_sigma_data"]


def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) at each sigma (Karras et al. 2022, Table 1, EDM), each shaped like sigma.

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.
    """
    var = sigma**2 + sigma_data**2
    return sigma_data**2 / var, sigma * sigma_data / var.sqrt(), var.rsqrt(), sigma.log() / 4


def estimate_sigma_data(x: Tensor) -> float:
    """sigma_data from data: the standard deviation of all coordinates of x pooled, as a float.

    EDM's 0.5 for images scaled to [-1, 1] is this number rounded; for images in [0, 1] (the scale
    of scorematch's image loaders) it is about half of that, and for vectors it pools all
    dimensions (gmm2d: sqrt(1 + 4) = 2.24).
    """
    _checks.batch("x", x)
    if x.shape[0] * x[0].numel() < 2:
        raise DataError(f"sigma_data needs at least two numbers, got x of shape {tuple(x.shape)}")
    sd = float(x.detach().double().std())
    if not math.isfinite(sd) or sd <= 0:
        raise DataError(f"the data's standard deviation is {sd:g}; sigma_data must be positive and finite")
    return sd


@register_model
class EDMPrecond(nn.Module):
    """A preconditioned noise-conditional model: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise).

    ``net`` is the raw network F: the name of a registered time-conditional network (``"TimeMLP"``
    for vectors, ``"TimeUNet"`` for images) built from ``net_config``, or a user's own
    ``nn.Module`` (``net_config`` left out). F is called as F(c_in x, c_noise) with c_noise =
    ln(sigma)/4, a tensor of shape (n,), in the place of t (and F(c_in x, c_noise, labels) for a
    class-conditional one); its output, shaped like x, is not rescaled. ``net_config`` holds the
    registered network's constructor arguments, e.g. ``{"dim": 2, "hidden": 128}``, or
    ``{"channels": 1, "n_classes": 10}`` for a class-conditional U-Net; ``n_classes`` and
    ``null_label`` are the network's. A user's module is recorded by its import path
    ``module:QualName`` and its ``config`` attribute (its constructor's keyword arguments), so that
    a run folder names it the way it names any user's model.

    ``score(x, sigma, labels=None) = (D(x; sigma) - x) / sigma^2`` (Tweedie), the same as ``forward``;
    ``denoise`` is D. sigma is a float or a tensor of shape (n,), every entry > 0.
    """

    conditioning = "sigma"
    kind = "score"

    def __init__(self, net: str | nn.Module, net_config: dict[str, Any] | None = None,
                 sigma_data: float = 0.5) -> None:
        super().__init__()
        if isinstance(net, nn.Module):
            if net_config is not None:
                raise ConfigError("net_config builds a registered network by name; a network given as a module "
                                  "is used as it is: leave net_config out")
            self.net = net
            config = getattr(net, "config", None)
            config = {} if config is None else config
            if not isinstance(config, dict):
                raise ConfigError(f"{type(net).__name__}.config must be a dict of its constructor's keyword "
                                  f"arguments, got {type(config).__name__}")
            name = f"{type(net).__module__}:{type(net).__qualname__}"
        else:
            cls = MODEL_REGISTRY.get(net) if isinstance(net, str) else None
            if cls is None or getattr(cls, "conditioning", None) != "time":
                known = sorted(k for k, v in MODEL_REGISTRY.items() if getattr(v, "conditioning", None) == "time")
                raise ConfigError(f"net must name a registered time-conditional network or be an nn.Module "
                                  f"F(x, c_noise); got {net!r}, valid names: {', '.join(known)}")
            if not isinstance(net_config, dict):
                raise ConfigError(f"net_config must be a dict of {net}'s constructor arguments, got {net_config!r}")
            self.net = cls(**net_config)
            config, name = self.net.config, net
        self.sigma_data = _checks.positive("sigma_data", sigma_data)
        self.config = {"net": name, "net_config": dict(config), "sigma_data": self.sigma_data}
        self.n_classes = getattr(self.net, "n_classes", 0)
        self.null_label = getattr(self.net, "null_label", None)
        if hasattr(self.net, "dim"):
            self.dim = self.net.dim

    def _coefficients(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, ...]:
        s = _checks.per_row("sigma", sigma, x)
        shape = (-1,) + (1,) * (x.dim() - 1)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        return s.view(shape), c_skip.view(shape), c_out.view(shape), c_in.view(shape), c_noise

    def _raw(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        return self.net(x_in, c_noise) if labels is None else self.net(x_in, c_noise, labels)

    def denoise(self, x: Tensor, sigma: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)), shaped like x."""
        _, c_skip, c_out, c_in, c_noise = self._coefficients(x, sigma)
        return c_skip * x + c_out * self._raw(c_in * x, c_noise, labels)

    def score(self, x: Tensor, sigma: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """s(x, sigma) = (D(x; sigma) - x) / sigma^2, evaluated without the cancellation in D - x:

        (c_skip - 1) / sigma^2 = -1 / (sigma^2 + sigma_data^2) = -c_in^2, and
        c_out / sigma^2 = sigma_data / (sigma sqrt(sigma^2 + sigma_data^2)).
        """
        s, _, c_out, c_in, c_noise = self._coefficients(x, sigma)
        return -x * c_in**2 + (c_out / s**2) * self._raw(c_in * x, c_noise, labels)

    forward = score
