"""A model trained on standardised data, seen in data space.

The run layer trains on z = (x - mu) / sd (``scorematch.data.transforms``); ``Standardized``
wraps the trained module so that everything a user asks of it is in the units of x:

    score   s_x(x[, c]) = s_z((x - mu) / sd[, c]) / sd
    energy  E_x(x) = E_z((x - mu) / sd)            (the same density up to its constant)

The condition c (sigma or t) stays in the units of z: the noise levels of a run's schedule are
those of the standardised data. ``model`` is the wrapped module (its own weights, trained on z).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scorematch import _compile


class Standardized(nn.Module):
    """``model`` (trained on z = (x - mean) / std) with ``score``/``energy`` in data space."""

    def __init__(self, model: nn.Module, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())
        self.conditioning = getattr(model, "conditioning", "none")
        self.kind = getattr(model, "kind", "score")
        if hasattr(model, "dim"):
            self.dim = model.dim

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """z = (x - mean) / std."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def to_data_space(self, z: torch.Tensor) -> torch.Tensor:
        """x = mean + std * z."""
        return self.mean.to(z) + self.std.to(z) * z

    def score(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = s_z((x - mean) / std, *condition) / std."""
        return _compile.method(self.model, "score")(self.to_model_space(x), *condition) / self.std.to(x)

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return self.score(x, *condition)

    @property
    def energy(self):  # noqa: ANN201 - a method only when the wrapped model has one
        """E(x) = E_z((x - mean) / std) for an energy model (AttributeError otherwise)."""
        inner = getattr(self.model, "energy", None)
        if inner is None:
            raise AttributeError(f"{type(self.model).__name__} is not an energy model (no energy method)")
        return lambda x: _compile.method(self.model, "energy")(self.to_model_space(x))
