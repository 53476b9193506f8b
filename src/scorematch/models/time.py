"""Time-conditional score networks s_theta(x, t) for the score SDEs, t in [0, 1].

A model's ``forward(x, t)`` and ``score(x, t)`` are the same: t is a float or a tensor of
shape (n,), x is (n, dim) for ``TimeMLP`` and (n, C, H, W) for ``TimeUNet``.  Each model keeps
its constructor keyword arguments in ``config`` and is rebuildable with ``build_model``;
the Fourier features are a buffer, so they are saved with the weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scorematch import _checks
from scorematch.autodiff import Chain, LinearEnds
from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import add_label_embedding, label_table, register_model

__all__ = [
    "GaussianFourierProjection",
    "sinusoidal_embedding",
    "SinusoidalEmbedding",
    "TimeMLP",
    "TimeUNet",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


def _even(name: str, value: int) -> int:
    v = _checks.positive_int(name, value, minimum=2)
    if v % 2:
        raise ConfigError(f"{name} must be even (sine and cosine halves), got {v}")
    return v



class GaussianFourierProjection(nn.Module):
    """Random Fourier features of t: [sin(2 pi t W), cos(2 pi t W)], W ~ N(0, scale^2), fixed.

    W (embed_dim / 2 frequencies) is drawn from a local generator seeded with ``seed`` and kept
    as a buffer, so a model rebuilt from its config has the same features and they are saved
    with the weights.  Input (n,), output (n, embed_dim).
    """

    def __init__(self, embed_dim: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        embed_dim = _even("embed_dim", embed_dim)
        scale = _checks.positive("scale", scale)
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("W", torch.randn(embed_dim // 2, generator=gen) * scale)

    def forward(self, t: Tensor) -> Tensor:
        proj = 2 * math.pi * t[:, None].to(self.W.dtype) * self.W[None, :]
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def sinusoidal_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, t_scale: float = 1000.0
) -> Tensor:
    """Transformer/DDPM embedding of t: [sin(t' w_k), cos(t' w_k)], w_k = max_period^(-k/(dim/2)).

    t' = t_scale * t (t in [0, 1] mapped to DDPM's step index range).  Input (n,), output (n, dim).
    """
    dim = _even("dim", dim)
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = (t_scale * t)[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Module wrapper of ``sinusoidal_embedding`` (no parameters)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = _even("embed_dim", embed_dim)

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.embed_dim)


def _embedding(kind: str, embed_dim: int, scale: float) -> nn.Module:
    _checks.choice("embed", kind, ["fourier", "sinusoidal"])
    if kind == "fourier":
        return GaussianFourierProjection(embed_dim, scale=scale)
    return SinusoidalEmbedding(embed_dim)


@register_model
class TimeMLP(nn.Module):
    """Time-conditional score MLP for vectors: s_theta(x, t), x of shape (n, dim).

    h_0 = act(W_in x); h_k = act(W_k h_{k-1} + U_k e(t)) for k = 1..depth; s = W_out h_depth,
    with e(t) = act(Linear(embedding(t))) and embedding Gaussian Fourier or sinusoidal.
    With ``n_classes = K > 0``, e(t, y) = e(t) + B[y] (B: K + 1 rows, row K = ``null_label``).
    """

    conditioning = "time"

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        embed: str = "fourier",
        embed_dim: int = 64,
        activation: str = "silu",
        fourier_scale: float = 1.0,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.config = {
            "dim": _checks.positive_int("dim", dim),
            "hidden": _checks.positive_int("hidden", hidden),
            "depth": _checks.positive_int("depth", depth),
            "embed": _checks.choice("embed", embed, ["fourier", "sinusoidal"]),
            "embed_dim": _even("embed_dim", embed_dim),
            "activation": _checks.choice("activation", activation, list(_ACTIVATIONS)),
            "fourier_scale": _checks.positive("fourier_scale", fourier_scale),
            "n_classes": n_classes,
        }
        c = self.config
        # like ScoreMLP / NoiseConditionalMLP: evaluate (Jacobian asymmetry, likelihood input)
        # and generate (flattening) recognise vector models by ``dim``
        self.dim = c["dim"]
        act = _ACTIVATIONS[c["activation"]]
        self.embed = _embedding(c["embed"], c["embed_dim"], c["fourier_scale"])
        self.embed_proj = nn.Sequential(nn.Linear(c["embed_dim"], c["hidden"]), act())
        self.inp = nn.Linear(c["dim"], c["hidden"])
        self.layers = nn.ModuleList(nn.Linear(c["hidden"], c["hidden"]) for _ in range(c["depth"]))
        self.t_layers = nn.ModuleList(
            nn.Linear(c["hidden"], c["hidden"]) for _ in range(c["depth"])
        )
        self.act = act()
        self.out = nn.Linear(c["hidden"], c["dim"])
        self.label_embed = label_table(n_classes, c["hidden"])
        self.n_classes, self.null_label = n_classes, n_classes if n_classes else None

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.config["dim"]:
            raise ModelError(
                f"TimeMLP(dim={self.config['dim']}) needs x of shape (n, {self.config['dim']}), "
                f"got {tuple(x.shape)}; flatten images or use TimeUNet"
            )
        t = _checks.per_row("t", t, x)
        e = add_label_embedding(self.embed_proj(self.embed(t).to(x.dtype)), self.label_embed, labels)
        h = self.act(self.inp(x))
        for layer, t_layer in zip(self.layers, self.t_layers, strict=True):
            h = self.act(layer(h) + t_layer(e))
        return self.out(h)

    def score(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """s_theta(x, t) (s_theta(x, t, y) when class-conditional), the same as ``forward``."""
        return self(x, t, labels)

    def linear_ends(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> LinearEnds:
        """s = W_out g(W_in x + b_in) with the U_k e(t) as x-independent biases (e holds the label
        embedding of a class-conditional model), for the structured exact trace (scorematch.autodiff)."""
        e = self.embed_proj(self.embed(_checks.per_row("t", t, x)).to(x.dtype))
        e = add_label_embedding(e, self.label_embed, labels)
        chain = Chain(self.act, list(self.layers), [t_layer(e) for t_layer in self.t_layers])
        return LinearEnds(self.inp, self.out, chain)


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding per channel, GroupNorm-SiLU-conv, residual."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.norm2 = _group_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.temb(e)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


@register_model
class TimeUNet(nn.Module):
    """Small time-conditional U-Net for images (n, C, H, W), H and W even (8x8 .. 32x32 on CPU).

    Two resolutions: [res block at base channels] -> stride-2 conv -> [2 res blocks at
    2*base] -> nearest upsample + conv -> concat skip -> [res block at base] -> GroupNorm, SiLU,
    conv to C channels.  Each res block adds a linear map of the time embedding per channel.
    With ``n_classes = K > 0`` a label embedding (K + 1 rows, row K = ``null_label``) is added to
    the time embedding.
    """

    conditioning = "time"

    def __init__(
        self,
        channels: int = 1,
        base: int = 32,
        embed: str = "fourier",
        embed_dim: int = 64,
        groups: int = 8,
        fourier_scale: float = 16.0,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.config = {
            "channels": _checks.positive_int("channels", channels),
            "base": _checks.positive_int("base", base),
            "embed": _checks.choice("embed", embed, ["fourier", "sinusoidal"]),
            "embed_dim": _even("embed_dim", embed_dim),
            "groups": _checks.positive_int("groups", groups),
            "fourier_scale": _checks.positive("fourier_scale", fourier_scale),
            "n_classes": n_classes,
        }
        c = self.config
        b, g, td = c["base"], c["groups"], 4 * c["base"]
        self.embed = _embedding(c["embed"], c["embed_dim"], c["fourier_scale"])
        self.embed_proj = nn.Sequential(
            nn.Linear(c["embed_dim"], td), nn.SiLU(), nn.Linear(td, td), nn.SiLU()
        )
        self.inp = nn.Conv2d(c["channels"], b, 3, padding=1)
        self.down0 = _ResBlock(b, b, td, g)
        self.downsample = nn.Conv2d(b, 2 * b, 3, stride=2, padding=1)
        self.mid1 = _ResBlock(2 * b, 2 * b, td, g)
        self.mid2 = _ResBlock(2 * b, 2 * b, td, g)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * b, b, 3, padding=1)
        )
        self.up0 = _ResBlock(2 * b, b, td, g)
        self.out = nn.Sequential(
            _group_norm(b, g), nn.SiLU(), nn.Conv2d(b, c["channels"], 3, padding=1)
        )
        self.label_embed = label_table(n_classes, td)
        self.n_classes, self.null_label = n_classes, n_classes if n_classes else None

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        c = self.config["channels"]
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % 2 or x.shape[3] % 2:
            raise ModelError(
                f"TimeUNet(channels={c}) needs x of shape (n, {c}, H, W) with H, W even, "
                f"got {tuple(x.shape)}"
            )
        t = _checks.per_row("t", t, x)
        e = add_label_embedding(self.embed_proj(self.embed(t).to(x.dtype)), self.label_embed, labels)
        h0 = self.down0(self.inp(x), e)
        h = self.mid2(self.mid1(self.downsample(h0), e), e)
        h = self.up0(torch.cat([self.upsample(h), h0], dim=1), e)
        return self.out(h)

    def score(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """s_theta(x, t) (s_theta(x, t, y) when class-conditional), the same as ``forward``."""
        return self(x, t, labels)
