"""Standardisation of vector data: z = (x - mu) / sd per dimension, and its inverse.

A model trained on z sees data of unit scale whatever the units of x, so the defaults that are
set in data units (DSM's sigma = 0.1 x std, the NCSN and VE noise levels, the Langevin step from
the data range) hold for data in the hundreds or the thousandths alike. Back in data space,
with the diagonal map x = mu + sd z (Jacobian diag(sd)):

    samples   x = mu + sd * z
    score     grad_x log p_x(x) = (grad_z log p_z)((x - mu) / sd) / sd
    log p     log p_x(x) = log p_z((x - mu) / sd) - sum_d log sd_d
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from scorematch.errors import DataError

STANDARDIZE = ("auto", "none")


@dataclass(frozen=True)
class Standardization:
    """Per-dimension mean ``mean`` and standard deviation ``std`` (float32 tensors of shape (D,))."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardization:
        """Mean and standard deviation of each column of ``x`` (n, D), in float64; a column with
        zero (or not even float32-resolvable) spread keeps sd = 1, so it is only centred."""
        if x.dim() != 2 or len(x) == 0:
            raise DataError(f"standardisation needs vector data of shape (n, D), got {tuple(x.shape)}")
        x64 = x.detach().to("cpu", torch.float64)
        mean = x64.mean(0)
        std = x64.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
        tiny = std <= 1e-6 * mean.abs().clamp_min(1e-30)
        std = torch.where(tiny | ~torch.isfinite(std) | (std == 0), torch.ones_like(std), std)
        return cls(mean.to(torch.float32), std.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = (x - mu) / sd."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x = mu + sd * z."""
        return self.mean.to(z) + self.std.to(z) * z

    def score_to_data(self, score_z: torch.Tensor) -> torch.Tensor:
        """grad_x log p_x = grad_z log p_z / sd (the score at the matching point)."""
        return score_z / self.std.to(score_z)

    @property
    def log_det(self) -> float:
        """log |det dz/dx| = -sum_d log sd_d: add it to log p_z to get log p_x."""
        return -float(self.std.double().log().sum())

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardization:
        return cls(torch.tensor(d["mean"], dtype=torch.float32), torch.tensor(d["std"], dtype=torch.float32))


def standardization_for(x: torch.Tensor, kind: str, mode: str = "auto") -> Standardization | None:
    """The standardisation a data set gets: fitted on ``x`` for vector data when ``mode`` is
    ``"auto"``, None for ``"none"`` and for images (already in [0, 1])."""
    if mode not in STANDARDIZE:
        raise DataError(f"standardize must be one of {', '.join(STANDARDIZE)}, got {mode!r}")
    if mode == "none" or kind != "vector":
        return None
    return Standardization.fit(x)
