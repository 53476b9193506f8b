"""Modules a user might write, for the tests of the open training loop (importable by name, so
``scorematch.load`` can rebuild them)."""

from __future__ import annotations

import torch
from torch import nn


class TinyScore(nn.Module):
    """A score network with the protocol's attributes and a ``score`` method."""

    conditioning = "none"
    kind = "score"

    def __init__(self, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


class ForwardEnergy(nn.Module):
    """An energy model with no ``score`` method: forward is E(x), shape (n,)."""

    kind = "energy"

    def __init__(self, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Softplus(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class SigmaScore(nn.Module):
    """A noise-conditional score s(x, sigma) for NCSN training; forward is the score."""

    conditioning = "sigma"

    def __init__(self, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, sigma.log()[:, None]], 1)) / sigma[:, None]


class TimeScore(nn.Module):
    """A time-conditional score s(x, t) for the score-SDE objective."""

    conditioning = "time"

    def __init__(self, dim: int = 2, hidden: int = 32):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], 1))


class WrongShape(nn.Module):
    """Returns one number per row although it says it is a score model."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)
