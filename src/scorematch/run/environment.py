"""Where a run executes: the device it asked for, resolved."""

from __future__ import annotations

import torch

from scorematch.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present and asked for (``auto``), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)
