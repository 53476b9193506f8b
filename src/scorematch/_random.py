"""Random draws that honour a torch.Generator on any device (the contract: every random call takes one).

Every draw function takes as ``generator`` either

- a ``torch.Generator`` (or None, torch's default one): the whole batch comes from its stream, so a
  row of a draw depends on the rows drawn before it; or
- per-row generators, a ``RowGenerators`` or any list of torch.Generators with one entry per row
  (the first dimension of the draw), as diffusers takes them: row i of every draw comes from
  generator i alone. A sampler that draws only through these functions then gives row i the same
  value whatever the other rows of its batch are: ``RowGenerators.from_seed(seed, n, start)``
  seeds row i from (seed, start + i), so sample i of a call depends on (seed, i) only, whatever
  the number of samples, the batch size or the number of processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch

from scorematch.errors import ConfigError

#: seeds of torch generators are taken modulo 2^63 here (torch accepts 64-bit unsigned ones)
_SEED_MASK = (1 << 63) - 1


def row_seed(seed: int, index: int) -> int:
    """The seed of row ``index`` of a call with ``seed``: the first 63 bits of BLAKE2b of
    "seed:index", so distinct (seed, index) pairs give unrelated streams (seed + index would
    make row 1 of seed 0 equal row 0 of seed 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"seed and row index must be integers, got {seed!r} and {index!r}")
    if index < 0:
        raise ConfigError(f"row index must be >= 0, got {index}")
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


class RowGenerators(Sequence):
    """One torch.Generator per row of a batch, with the seed each row was given.

    ``RowGenerators.from_seed(seed, n, start=0)`` seeds row i with ``row_seed(seed, start + i)``.
    Indexing with a slice (``rows[a:b]``, ``rows.rows(index)``) gives the generators of those rows,
    the same objects: drawing with a slice advances the rows' own streams, so a batch or a process's
    shard keeps the mapping row -> seed. ``seeds`` holds each row's seed and ``indices`` its index
    within the call (start + i) when known.
    """

    def __init__(self, generators: Sequence[torch.Generator], seeds: Sequence[int] | None = None,
                 indices: Sequence[int] | None = None) -> None:
        gens = list(generators)
        if not gens or not all(isinstance(g, torch.Generator) for g in gens):
            raise ConfigError("per-row generators must be a non-empty list of torch.Generator objects")
        devices = {g.device for g in gens}
        if len(devices) > 1:
            raise ConfigError(f"per-row generators must all be on one device, got {sorted(map(str, devices))}")
        self._gens = gens
        self.seeds = None if seeds is None else tuple(int(s) for s in seeds)
        self.indices = None if indices is None else tuple(int(i) for i in indices)
        for name, v in (("seeds", self.seeds), ("indices", self.indices)):
            if v is not None and len(v) != len(gens):
                raise ConfigError(f"{len(v)} {name} for {len(gens)} generators")

    @classmethod
    def from_seed(cls, seed: int, n: int, start: int = 0, device: torch.device | str = "cpu") -> RowGenerators:
        """Generators of rows start .. start + n - 1 of a call with ``seed``, on ``device``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        indices = range(start, start + n)
        seeds = [row_seed(seed, i) for i in indices]
        return cls([make_generator(s, device) for s in seeds], seeds, indices)

    @property
    def device(self) -> torch.device:
        return self._gens[0].device

    def __len__(self) -> int:
        return len(self._gens)

    def __iter__(self) -> Iterator[torch.Generator]:
        return iter(self._gens)

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        if isinstance(item, slice):
            return self.rows(range(len(self))[item])
        return self._gens[item]

    def rows(self, index: Sequence[int] | torch.Tensor) -> RowGenerators:
        """The generators of rows ``index`` (a list, range or integer tensor), same objects."""
        idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        if not idx:
            raise ConfigError("cannot take no rows of per-row generators")
        pick = [self._gens[i] for i in idx]
        seeds = None if self.seeds is None else [self.seeds[i] for i in idx]
        indices = None if self.indices is None else [self.indices[i] for i in idx]
        return RowGenerators(pick, seeds, indices)

    def __repr__(self) -> str:
        span = f", rows {self.indices[0]}..{self.indices[-1]}" if self.indices else ""
        return f"RowGenerators({len(self)} generators on {self.device}{span})"


#: what every draw function accepts as ``generator``
Generators = torch.Generator | RowGenerators | Sequence[torch.Generator] | None


def per_row(generator: Generators) -> RowGenerators | None:
    """``generator`` as RowGenerators when it is per-row (a RowGenerators or a list of
    generators), else None (a single torch.Generator or None)."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if isinstance(generator, RowGenerators):
        return generator
    if isinstance(generator, list | tuple):
        return RowGenerators(generator)
    raise ConfigError(f"generator must be a torch.Generator, a list of them (one per row) or RowGenerators, "
                      f"got {type(generator).__name__}")


def _rows_for(rows: RowGenerators, shape: Sequence[int]) -> None:
    if not shape or shape[0] != len(rows):
        raise ConfigError(f"{len(rows)} per-row generators for a draw of shape {tuple(shape)}: give one generator "
                          "per row (the first dimension)")


def _gen_device(generator: Generators, device: torch.device | str | None) -> torch.device | str | None:
    rows = per_row(generator)
    if rows is not None:
        return rows.device
    return device if generator is None else generator.device


def _draw(kind: str, shape: Sequence[int], generator: Generators, dtype: torch.dtype | None,
          device: torch.device | str | None, high: int = 2) -> torch.Tensor:
    """A draw of ``shape`` made on the generator's device and moved to ``device``."""
    shape = tuple(int(s) for s in shape)
    rows = per_row(generator)
    dev = _gen_device(generator, device)
    if rows is None:
        if kind == "randint":
            out = torch.randint(0, high, shape, generator=generator, device=dev)
        else:
            fn = torch.randn if kind == "randn" else torch.rand
            out = fn(shape, generator=generator, dtype=dtype, device=dev)
    else:
        _rows_for(rows, shape)
        if kind == "randint":
            out = torch.empty(shape, dtype=torch.int64, device=dev)
            for i, g in enumerate(rows):
                out[i] = torch.randint(0, high, shape[1:], generator=g, device=dev)
        else:
            out = torch.empty(shape, dtype=dtype, device=dev)
            fn = torch.randn if kind == "randn" else torch.rand
            for i, g in enumerate(rows):
                fn(shape[1:], generator=g, out=out[i])
    return out if device is None else out.to(device, non_blocking=True)


def randn(shape: Sequence[int], generator: Generators = None, dtype: torch.dtype | None = None,
          device: torch.device | str | None = None) -> torch.Tensor:
    """z ~ N(0, I) of ``shape`` (first dimension the rows), on ``device`` (default: the generator's)."""
    return _draw("randn", shape, generator, dtype, device)


def randn_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """z ~ N(0, I) shaped like ``x``, drawn from ``generator`` (on its device) and moved to x's."""
    return _draw("randn", x.shape, generator, x.dtype, x.device)


def rademacher_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """v with independent entries +-1 (probability 1/2 each), shaped like ``x``."""
    v = _draw("randint", x.shape, generator, None, x.device)
    return (2 * v - 1).to(dtype=x.dtype)


def randint(high: int, n: int, device: torch.device, generator: Generators = None) -> torch.Tensor:
    """n integers uniform on {0, ..., high-1}."""
    return _draw("randint", (n,), generator, None, device, high=high)


def rand_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """u ~ U[0, 1) shaped like ``x``."""
    return _draw("rand", x.shape, generator, x.dtype, x.device)


def rand(shape: Sequence[int], generator: Generators = None, dtype: torch.dtype | None = None,
         device: torch.device | str | None = None) -> torch.Tensor:
    """u ~ U[0, 1) of ``shape`` (first dimension the rows), on ``device`` (default: the generator's)."""
    return _draw("rand", shape, generator, dtype, device)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (a fresh random seed when None)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g
