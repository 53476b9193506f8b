"""Class labels in training: label dropout for classifier-free guidance."""

from __future__ import annotations

import torch
from torch import Tensor

from scorematch._random import rand_like
from scorematch.errors import ConfigError

__all__ = ["drop_labels"]


def drop_labels(
    labels: Tensor, p: float, null_label: int, generator: torch.Generator | None = None
) -> Tensor:
    """Label dropout for classifier-free guidance (Ho & Salimans 2022): each label is replaced by
    ``null_label`` independently with probability p, so one network learns the conditional and the
    unconditional score. Returns a new tensor; p = 0 returns the labels unchanged."""
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"the label dropout probability p must be in [0, 1], got {p!r}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ConfigError("labels must be an integer tensor of shape (n,)")
    drop = rand_like(labels.new_empty(labels.shape, dtype=torch.float32), generator) < float(p)
    return torch.where(drop, torch.full_like(labels, int(null_label)), labels)
