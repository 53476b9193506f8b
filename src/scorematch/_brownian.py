"""Brownian-tree noise: the increments of one fixed Brownian path per row, so that a stochastic
sampler run at one seed with more and more steps converges to one sample (the SDE's solution
on that path) instead of drawing unrelated noise at every step count.

The path W_r of row r on [t0, t1] is built by Levy's construction on a dyadic tree (the
virtual Brownian tree of Li et al. 2020, the construction behind torchsde's BrownianTree):
W_r(t0) = 0, W_r(t1) = sqrt(t1 - t0) z_root, and the midpoint m of a node's interval [a, b]

    W_r(m) = (W_r(a) + W_r(b)) / 2 + sqrt((b - a) / 4) z_node,

each z a standard normal that is a function of (the row's key, the node) alone, so a node's value
never depends on which other nodes were visited, nor on the other rows: drawn from a torch
generator seeded by (key, node) when a row has at least ``PER_ROW_GENERATOR_MIN`` entries (CPU), else
(small rows, where a generator call per row would dominate) by Box-Muller from a counter-based
hash of (key, node, entry), computed for all rows at once (``scorematch._random``). Below ``depth``
levels (leaves of width (t1 - t0) / 2^depth) the path is interpolated linearly. A step from
t_a to t_b takes z = (W(t_b) - W(t_a)) / sqrt(|t_b - t_a|), a standard normal per step,
independent across disjoint steps, and the same path for every grid.

Each row's key is one integer drawn from its own generator (per-row generators, see
``scorematch._random``), or, with one torch.Generator, one integer drawn from it mixed with the
row's position in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scorematch._random import (
    PER_ROW_GENERATOR_MIN,
    Generators,
    box_muller,
    hashed_uniforms,
    key_words,
    per_row,
    randints,
    randn_like,
)
from scorematch.errors import ConfigError

#: levels of the tree: leaves of width (t1 - t0) / 2^DEPTH, below which the path is linear
DEPTH = 20
_M64 = (1 << 64) - 1


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64's finaliser applied after each part)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _M64)) & _M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        h ^= h >> 31
    return h >> 1


class BrownianTree:
    """One Brownian path per row of ``like`` on [t0, t1], queried as ``tree(t_a, t_b)``: the
    standardised increment (W(t_b) - W(t_a)) / sqrt(|t_b - t_a|), shaped like ``like``.

    Times outside [t0, t1] are clamped into it. The path from the root to the last point asked
    for is kept (2 x ``depth`` tensors shaped like ``like``), so a sampler's steps (neighbouring
    times) create about ``depth - log2(steps)`` new nodes each.
    """

    def __init__(self, like: Tensor, t0: float, t1: float, generator: Generators = None,
                 depth: int = DEPTH) -> None:
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ConfigError(f"a Brownian tree needs finite times t0 < t1, got {t0}, {t1}")
        self.t0, self.t1, self.depth = t0, t1, int(depth)
        self.shape, self.dtype = tuple(like.shape), like.dtype
        rows = per_row(generator)
        if rows is not None:
            if len(rows) != like.shape[0]:
                raise ConfigError(f"{len(rows)} per-row generators for a batch of {like.shape[0]} rows")
            pair = randints((len(rows), 2), 2**31, rows)
            self.keys = [(int(a) << 31) | int(b) for a, b in pair.tolist()]
            device = rows.device
        else:
            device = generator.device if generator is not None else torch.device("cpu")
            base = int(torch.randint(0, 2**62, (), generator=generator, device=device))
            self.keys = [_mix(base, i) for i in range(like.shape[0])]
        self.device = device
        self._scratch = torch.Generator(device=device)
        self._size = math.prod(self.shape[1:])
        self._words = key_words(torch.tensor(self.keys, dtype=torch.int64, device=device))
        self._end = self._nodes([(0, 0)])[0] * math.sqrt(t1 - t0)  # W(t1)
        self._path: list[tuple[int, Tensor, Tensor]] = []  # (index, W(a), W(b)) per level below the root
        self._last: dict[float, Tensor] = {}

    def _nodes(self, nodes: list[tuple[int, int]]) -> list[Tensor]:
        """The standard normals of ``nodes`` (level, index), each a function of the rows' keys and
        the node alone: small rows hashed all at once, large ones row by row from torch generators."""
        if self._size < PER_ROW_GENERATOR_MIN or self.device.type != "cpu":
            salts = torch.tensor([_mix(level, index) for level, index in nodes], dtype=torch.int64,
                                 device=self.device)
            u = hashed_uniforms(self._words[:, None], salts[None, :], 2 * self._size,
                                torch.float64 if self.dtype == torch.float64 else torch.float32)
            z = box_muller(u)
            z = z.to(self.dtype)
            return [z[:, j].reshape(self.shape) for j in range(len(nodes))]
        out = []
        g = self._scratch
        for level, index in nodes:
            z = torch.empty(self.shape, dtype=self.dtype, device=self.device)
            for r, key in enumerate(self.keys):
                g.manual_seed(_mix(key, level, index))
                torch.randn(self.shape[1:], generator=g, out=z[r])
            out.append(z)
        return out

    def value(self, t: float) -> Tensor:
        """W(t), t clamped into [t0, t1]."""
        t = min(max(float(t), self.t0), self.t1)
        if t in self._last:
            return self._last[t]
        span = self.t1 - self.t0
        u = (t - self.t0) / span  # in [0, 1]
        children = []  # the dyadic interval holding u at every level below the root
        index = 0
        for level in range(self.depth):
            index = min(2 * index + (1 if u * 2 ** (level + 1) >= 2 * index + 1 else 0), 2 ** (level + 1) - 1)
            children.append(index)
        keep = 0
        while keep < min(len(self._path), self.depth) and self._path[keep][0] == children[keep]:
            keep += 1
        del self._path[keep:]
        if keep:
            w_a, w_b = self._path[keep - 1][1], self._path[keep - 1][2]
        else:
            w_a, w_b = torch.zeros_like(self._end), self._end
        # the midpoint of the parent (level, index) of each missing child is node (level + 1, index)
        parents = [(level, children[level - 1] if level else 0) for level in range(keep, self.depth)]
        noises = self._nodes([(level + 1, index) for level, index in parents]) if parents else []
        for (level, index), z in zip(parents, noises, strict=True):
            mid = 0.5 * (w_a + w_b) + math.sqrt(span / 2**level / 4) * z
            w_a, w_b = (w_a, mid) if children[level] == 2 * index else (mid, w_b)
            self._path.append((children[level], w_a, w_b))
        frac = u * 2**self.depth - children[-1]
        w = torch.lerp(w_a, w_b, min(max(frac, 0.0), 1.0))
        if len(self._last) >= 4:
            self._last.pop(next(iter(self._last)))
        self._last[t] = w
        return w

    def __call__(self, t_a: float, t_b: float) -> Tensor:
        """(W(t_b) - W(t_a)) / sqrt(|t_b - t_a|) after clamping both into [t0, t1]."""
        a = min(max(float(t_a), self.t0), self.t1)
        b = min(max(float(t_b), self.t0), self.t1)
        if a == b:
            raise ConfigError(f"a Brownian increment needs two distinct times in [{self.t0}, {self.t1}], "
                              f"got {t_a} and {t_b}")
        return (self.value(b) - self.value(a)) / math.sqrt(abs(b - a))


#: ``noise(x, t_a, t_b)``: a standard normal shaped like x for the step from t_a to t_b
StepNoise = Callable[[Tensor, float, float], Tensor]


def step_noise(generator: Generators, brownian: bool, t0: float, t1: float, depth: int = DEPTH) -> StepNoise:
    """The noise of a sampler's steps: fresh draws ``randn_like(x, generator)`` at every call, or
    with ``brownian`` the increments of a ``BrownianTree`` over [t0, t1] built at the first call
    (from ``generator``, on the batch of that call)."""
    if not brownian:
        return lambda x, t_a, t_b: randn_like(x, generator)
    tree: list[BrownianTree] = []

    def draw(x: Tensor, t_a: float, t_b: float) -> Tensor:
        if not tree:
            tree.append(BrownianTree(x, t0, t1, generator, depth))
        return tree[0](t_a, t_b).to(device=x.device, dtype=x.dtype)

    return draw


def sigma_noise(like: Tensor, sigmas: Tensor | list[float], generator: Generators = None,
                depth: int = DEPTH) -> Callable[[float, float], Tensor]:
    """``noise(sigma, sigma_next)``: the standardised increment of one Brownian path per row of
    ``like`` in log sigma over [log sigma_min, log(sqrt(2) sigma_max)] of the grid ``sigmas`` (its
    smallest positive and largest levels; a sigma of 0 taken as the smallest positive one), the
    noise the denoising samplers use with ``brownian=True``, for samplers that take a ``noise``
    function (``dpmpp_2m_sde``, ``dpmpp_3m_sde``)."""
    levels = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    positive = [v for v in levels if v > 0]
    if not positive:
        raise ConfigError("the grid needs a positive noise level")
    lo, hi = math.log(min(positive)), math.log(max(positive)) + 0.5 * math.log(2)
    tree = BrownianTree(like, lo, hi, generator, depth)

    def noise(sigma: float, sigma_next: float) -> Tensor:
        a = math.log(sigma) if sigma > 0 else lo
        b = math.log(sigma_next) if sigma_next > 0 else lo
        return tree(a, b).to(device=like.device, dtype=like.dtype)

    return noise
