"""Random draws that honour a torch.Generator on any device (the contract: every random call takes one)."""

from __future__ import annotations

import torch


def _on(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return like.device if generator is None else generator.device


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, I) shaped like ``x``, drawn from ``generator`` (on its device) and moved to x's."""
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=_on(generator, x))
    return z.to(x.device, non_blocking=True)


def rademacher_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """v with independent entries +-1 (probability 1/2 each), shaped like ``x``."""
    v = torch.randint(0, 2, x.shape, generator=generator, device=_on(generator, x))
    return (2 * v - 1).to(device=x.device, dtype=x.dtype)


def randint(high: int, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """n integers uniform on {0, ..., high-1}."""
    dev = device if generator is None else generator.device
    return torch.randint(0, high, (n,), generator=generator, device=dev).to(device)


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """u ~ U[0, 1) shaped like ``x``."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=_on(generator, x))
    return u.to(x.device, non_blocking=True)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (a fresh random seed when None)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g
