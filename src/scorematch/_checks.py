"""Small validators used at the public boundary; each raises a scorematch error."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from scorematch.errors import ConfigError, DataError, DataNotFoundError


def user_path(path: str | Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; DataNotFoundError when that user
    (or the home folder) does not exist, instead of pathlib's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise DataNotFoundError(f"{path}: {str(path).split('/')[0]} names no home folder on this machine (no such "
                                "user); give the path without ~ or with an existing user") from None


def positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ConfigError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return v


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= minimum, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | torch.SymInt) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def choice(name: str, value: str, options: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise ConfigError listing them."""
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(options)}")
    return value


def batch(name: str, x: torch.Tensor, min_dims: int = 2) -> torch.Tensor:
    """Check ``x`` is a floating tensor with a batch axis and finite values."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dims:
        raise DataError(
            f"{name} must have shape (n, D) or (n, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch axis with x[None] or reshape to (n, D)"
        )
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def descending_sigmas(sigmas: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Return sigmas as a 1-D tensor, checking sigma_1 > ... > sigma_L > 0 (the contract's order)."""
    s = torch.as_tensor(sigmas, dtype=torch.get_default_dtype() if not isinstance(
        sigmas, torch.Tensor) else sigmas.dtype)
    if s.dim() != 1 or s.numel() == 0:
        raise ConfigError(f"sigmas must be a non-empty 1-D sequence, got shape {tuple(s.shape)}")
    positive = torch.isfinite(s) & (s > 0)
    ordered = s[1:] < s[:-1]
    if bool(torch.cat([positive, ordered]).all()):  # one check (one host sync) on the good path
        return s
    if not positive.all():
        raise ConfigError(f"sigmas must be positive and finite, got {s.tolist()}")
    if not ordered.all():
        raise ConfigError(
            "sigmas must be strictly descending (sigma_1 > ... > sigma_L, the NCSN order); "
            f"got {s.tolist()}; use scorematch.noise.geometric_sigmas(sigma_max, sigma_min, L)"
        )
    return s


def sampler_sigmas(sigmas: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Return the noise levels of a denoising sampler as a 1-D float64 tensor, checking
    sigma_0 > sigma_1 > ... >= 0: finite, strictly descending, at least two, only the last may be 0."""
    s = torch.as_tensor(sigmas).detach()
    if s.dim() != 1 or s.numel() < 2:
        raise ConfigError(
            f"sigmas must be a 1-D sequence of at least two noise levels (sigma_0 > ... > sigma_N), "
            f"got shape {tuple(s.shape)}; use scorematch.noise.karras_sigmas(n, sigma_min, sigma_max)"
        )
    if not s.is_floating_point():
        s = s.double()
    s = s.to("cpu", torch.float64)
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()) or bool((s[:-1] == 0).any()):
        raise ConfigError(f"sigmas must be finite and positive (only the last may be 0), got {s.tolist()}")
    if not bool((s[1:] < s[:-1]).all()):
        raise ConfigError(
            f"sigmas must be strictly descending (sigma_0 > sigma_1 > ...), got {s.tolist()}; "
            "use scorematch.noise.karras_sigmas(n, sigma_min, sigma_max)"
        )
    return s


def score_callable(score_fn: object, call: str = "score_fn(x, t)") -> Callable[..., torch.Tensor]:
    """``score_fn`` (a callable, or anything with a ``.score`` method: a model, a mixture) as a
    function that checks its output is a tensor shaped like x; ``call`` names the expected call."""
    from scorematch._compile import method
    from scorematch.errors import ModelError

    fn = method(score_fn, "score")
    if not callable(fn):
        raise ConfigError(f"score_fn must be callable as {call} or have a .score method")

    def checked(x: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        s = fn(x, *cond)
        if not isinstance(s, torch.Tensor) or s.shape != x.shape:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ModelError(f"{call} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        return s

    return checked


def per_row(name: str, value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row condition (sigma or t) as a tensor of shape (n,) in x's dtype and device: a float
    or 0-d tensor is broadcast to every row; any other shape than (n,) is a ModelError."""
    from scorematch.errors import ModelError

    n = x.shape[0]
    if not isinstance(value, torch.Tensor):
        return torch.full((n,), float(value), dtype=x.dtype, device=x.device)
    if value.dim() == 0:
        return value.to(dtype=x.dtype, device=x.device).expand(n)
    if value.shape != (n,):
        raise ModelError(
            f"{name} must be a float or a tensor of shape (n,) = ({n},) for x of shape {tuple(x.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.to(dtype=x.dtype, device=x.device)
