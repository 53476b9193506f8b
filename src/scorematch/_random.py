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
import math
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


#: on the CPU, rows of at least this many entries draw from a torch.Generator of their own;
#: smaller rows (and all rows on other devices) from a counter-based hash of (row seed, draw
#: number, entry), computed for all rows at once (a torch call per row would cost more than the
#: draw). It depends on the row's shape and the device only, never on the batch.
PER_ROW_GENERATOR_MIN = 256
_M32 = 0xFFFFFFFF


class _RowState:
    """What the rows of a call share with every slice of them: seeds, draw counters and the
    torch.Generators (made on first use)."""

    def __init__(self, seeds: list[int] | None, generators: list[torch.Generator] | None,
                 indices: list[int] | None, device: torch.device) -> None:
        self.seeds, self.indices, self.device = seeds, indices, device
        self.generators: list[torch.Generator | None] = (list(generators) if generators is not None
                                                          else [None] * len(seeds or []))
        n = len(self.generators)
        self.counters = torch.zeros(n, dtype=torch.int64, device=device)
        self.keys = None if seeds is None else key_words(torch.tensor(seeds, dtype=torch.int64, device=device))

    def generator(self, i: int) -> torch.Generator:
        g = self.generators[i]
        if g is None:
            g = self.generators[i] = make_generator(self.seeds[i], self.device)
        return g


class RowGenerators(Sequence):
    """Random streams of the rows of a batch, one per row, each known by its seed.

    ``RowGenerators.from_seed(seed, n, start=0)`` gives row i the seed ``row_seed(seed, start + i)``;
    ``RowGenerators(list_of_torch_generators)`` takes one torch.Generator per row (as diffusers
    does). A draw gives row i values that depend on row i's stream alone: for rows of at least
    ``PER_ROW_GENERATOR_MIN`` entries from row i's own torch.Generator, for smaller rows (built
    from seeds) from a counter-based hash of (row seed, draw number). Slicing (``rows[a:b]``,
    ``rows.rows(index)``) gives a view of those rows that shares their state: drawing with a
    slice advances those rows' streams, so a batch or a process's shard keeps the mapping
    row -> seed. ``seeds`` and ``indices`` (start + i) are known for rows built from a seed.
    """

    def __init__(self, generators: Sequence[torch.Generator], seeds: Sequence[int] | None = None,
                 indices: Sequence[int] | None = None, *, _state: _RowState | None = None,
                 _rows: list[int] | None = None) -> None:
        if _state is None:
            gens = list(generators)
            if not gens or not all(isinstance(g, torch.Generator) for g in gens):
                raise ConfigError("per-row generators must be a non-empty list of torch.Generator objects")
            devices = {g.device for g in gens}
            if len(devices) > 1:
                raise ConfigError(f"per-row generators must all be on one device, got {sorted(map(str, devices))}")
            for name, v in (("seeds", seeds), ("indices", indices)):
                if v is not None and len(v) != len(gens):
                    raise ConfigError(f"{len(v)} {name} for {len(gens)} generators")
            _state = _RowState(None if seeds is None else [int(x) for x in seeds], gens,
                               None if indices is None else [int(i) for i in indices], gens[0].device)
            _rows = list(range(len(gens)))
        self._state, self._rows = _state, list(_rows or [])
        self._index = torch.tensor(self._rows, dtype=torch.int64, device=_state.device)

    @classmethod
    def from_seed(cls, seed: int, n: int, start: int = 0, device: torch.device | str = "cpu") -> RowGenerators:
        """The streams of rows start .. start + n - 1 of a call with ``seed``, on ``device``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        indices = list(range(start, start + n))
        state = _RowState([row_seed(seed, i) for i in indices], None, indices, torch.device(device))
        return cls([], _state=state, _rows=list(range(n)))

    @property
    def device(self) -> torch.device:
        return self._state.device

    @property
    def seeds(self) -> tuple[int, ...] | None:
        s = self._state.seeds
        return None if s is None else tuple(s[i] for i in self._rows)

    @property
    def indices(self) -> tuple[int, ...] | None:
        s = self._state.indices
        return None if s is None else tuple(s[i] for i in self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[torch.Generator]:
        return (self._state.generator(i) for i in self._rows)

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        if isinstance(item, slice):
            return self.rows(range(len(self))[item])
        return self._state.generator(self._rows[item])

    def rows(self, index: Sequence[int] | torch.Tensor) -> RowGenerators:
        """The streams of rows ``index`` (a list, range or integer tensor), sharing their state."""
        idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        if not idx:
            raise ConfigError("cannot take no rows of per-row generators")
        return RowGenerators([], _state=self._state, _rows=[self._rows[i] for i in idx])

    def hashed(self, entries: int) -> bool:
        """Whether a draw of ``entries`` per row comes from the hash (rows built from seeds only):
        small rows, and every row off the CPU, where a generator call per row is a kernel launch."""
        return self._state.keys is not None and (entries < PER_ROW_GENERATOR_MIN or self.device.type != "cpu")

    def next_salts(self) -> torch.Tensor:
        """The rows' draw numbers, then advanced by one (every draw advances them)."""
        salts = self._state.counters[self._index].clone()
        self._state.counters[self._index] += 1
        return salts

    def keys(self) -> torch.Tensor:
        return self._state.keys[self._index]

    def __repr__(self) -> str:
        ind = self.indices
        span = f", rows {ind[0]}..{ind[-1]}" if ind else ""
        return f"RowGenerators({len(self)} rows on {self.device}{span})"


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
        return out if device is None else out.to(device, non_blocking=True)
    _rows_for(rows, shape)
    entries = math.prod(shape[1:])
    salts = rows.next_salts()
    if rows.hashed(entries):
        wide = dtype == torch.float64 or (dtype is None and torch.get_default_dtype() == torch.float64)
        u = hashed_uniforms(rows.keys(), salts, entries * (2 if kind == "randn" else 1),
                            torch.float64 if wide or kind == "randint" else torch.float32)
        if kind == "randn":
            flat = box_muller(u)
        elif kind == "rand":
            flat = u
        else:
            flat = (u * high).floor_().clamp_(max=high - 1).long()
        out = flat.to(torch.int64 if kind == "randint" else dtype or torch.get_default_dtype()).reshape(shape)
    elif kind == "randint":
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


def randints(shape: Sequence[int], high: int, generator: Generators = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Integers uniform on {0, ..., high-1} of ``shape`` (first dimension the rows)."""
    return _draw("randint", shape, generator, None, device, high=high)


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


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of x in [0, 2^32), elementwise: xorshift-multiply rounds with
    constants of Wellons' hash prospector (0x21f0aaad, 0x735a2d97), both below 2^31 so that every
    product fits in int64."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def key_words(keys: torch.Tensor) -> torch.Tensor:
    """Two hashed 32-bit words per 63-bit key, shape (*keys.shape, 2): what ``hashed_uniforms``
    needs of a key (computed once per row)."""
    lo, hi = keys & _M32, (keys >> 32) & _M32
    return torch.stack([hash32(lo ^ hash32(hi)), hash32(hi ^ 0x5BD1E995 ^ hash32(lo))], dim=-1)


def hashed_uniforms(words: torch.Tensor, salts: torch.Tensor | int, size: int,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Float64 uniforms on (0, 1) of shape (*broadcast(rows, salts), size), each row a function of
    its key (``words = key_words(keys)``, shape (..., 2)) and salt (an integer < 2^63, e.g. a draw
    number) alone: a = hash(w_0 ^ salt_lo), b = hash(w_1 ^ hash(salt_lo ^ hash(salt_hi))), entry
    j = (hash((a + j) ^ b) + 1/2) / 2^32 (a counter-based generator: the hash of a counter under a
    per-row, per-draw key); in another ``dtype`` than float64 its top 24 bits, (h_24 + 1/2) / 2^24.
    The draws of small rows and of Brownian-tree nodes."""
    salts = torch.as_tensor(salts, dtype=torch.int64, device=words.device)
    s_lo, s_hi = salts & _M32, (salts >> 32) & _M32
    a, b = hash32(words[..., 0] ^ s_lo), hash32(words[..., 1] ^ hash32(s_lo ^ hash32(s_hi)))
    counter = torch.arange(size, dtype=torch.int64, device=words.device)
    h = hash32(((a[..., None] + counter) & _M32) ^ b[..., None])
    if dtype == torch.float64:
        return h.double().add_(0.5).mul_(2.0**-32)
    return (h >> 8).to(dtype).add_(0.5).mul_(2.0**-24)  # 24 bits: exact in float32, still inside (0, 1)


def box_muller(u: torch.Tensor) -> torch.Tensor:
    """Standard normals from uniforms on (0, 1) in the last dimension (size 2m -> m)."""
    m = u.shape[-1] // 2
    return torch.sqrt(-2 * torch.log(u[..., :m])) * torch.cos((2 * math.pi) * u[..., m:])
