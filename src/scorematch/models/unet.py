"""A multi-resolution image U-Net (DDPM++ / NCSN++ / EDM style) for every noise-conditional objective.

``UNet`` maps images x of shape (n, C, H, W) and one noise level per row to an output of the same
shape. The noise level enters through an embedding e (Fourier features of a scalar u, then a
two-layer SiLU MLP; plus a class-label embedding when ``n_classes > 0``) that every residual block
applies as a scale and a shift after its second GroupNorm (adaptive GroupNorm, Dhariwal & Nichol
2021; Karras et al. 2022):

    h = conv1(SiLU(GN(x)));  h = GN(h) * (1 + a(e)) + b(e);  h = conv2(dropout(SiLU(h)))
    block(x) = (skip(x) + h) / sqrt(2)

Self-attention blocks (multi-head, per image) follow the residual blocks at the chosen levels
(usually the coarsest), with the same 1/sqrt(2) skip scaling. Layout (DDPM++): a 3x3 conv in; per
level ``n_res`` residual blocks, a stride-2 conv between levels (ceil: 28 -> 14 -> 7 -> 4, 8 -> 4);
two residual blocks and an attention block in the middle; per level on the way up ``n_res + 1``
residual blocks, each concatenating one saved activation of the way down, nearest upsampling (to the
saved activation's exact size) and a 3x3 conv between levels; GroupNorm, SiLU and a zero-initialised
3x3 conv out. No batch statistics: row i of the output depends on row i of the input only (in
``eval`` mode; in ``train`` mode dropout draws its own mask per element).

Two conditionings, one network:

- ``conditioning="sigma"`` (NCSN, Song & Ermon 2019; NCSN++'s ``scale_by_sigma``): u = ln(sigma) / 4
  and s(x, sigma) = F(x, u) / sigma, so F predicts a -z-like quantity of unit scale.
- ``conditioning="time"`` (score SDEs, and F inside ``EDMPrecond``): u = t, output F(x, t) as it is;
  inside EDM's preconditioning t is c_noise = ln(sigma) / 4, the same u as above.

Sizes by name (``unet_config``): tiny, small and base; ``UNET_SIZES`` holds their layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorematch import _checks
from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import add_label_embedding, label_table, register_model
from scorematch.models.time import GaussianFourierProjection

__all__ = ["UNET_SIZES", "UNet", "group_count", "parameter_count", "unet_config"]

# Named layouts: width of the first level, width multiplier per level, residual blocks per level,
# levels (0 = full resolution) with self-attention.
UNET_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"base": 16, "channel_mults": [1, 2, 2], "n_res": 1, "attn_levels": [2]},
    "small": {"base": 32, "channel_mults": [1, 2, 2], "n_res": 1, "attn_levels": [2]},
    "base": {"base": 64, "channel_mults": [1, 2, 2], "n_res": 2, "attn_levels": [2]},
}

_SKIP_SCALE = 1 / math.sqrt(2)


def group_count(channels: int, min_per_group: int = 4, max_groups: int = 32) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is at most
    min(max_groups, channels // min_per_group) (at least 1), so narrow layers keep >= 4 channels a group."""
    cap = max(1, min(max_groups, channels // min_per_group))
    return next(g for g in range(cap, 0, -1) if channels % g == 0)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels, eps=1e-6)


class _ResBlock(nn.Module):
    """Residual block with adaptive GroupNorm (scale and shift from the noise embedding)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), scale + 1)
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) * _SKIP_SCALE


class _Attention(nn.Module):
    """Multi-head self-attention over the H*W positions of each image, residual with 1/sqrt(2)."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            self.heads = 1
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, hh * ww).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = self.proj(a.transpose(-1, -2).reshape(n, c, hh, ww))
        return (x + h) * _SKIP_SCALE


class _Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by attention."""

    def __init__(self, blocks: list[_ResBlock], attn: list[_Attention] | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn) if attn else None


def unet_config(size: str, channels: int = 1, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments of the named U-Net size for images of ``channels`` channels, with
    ``overrides`` (e.g. ``conditioning``, ``n_classes``, ``dropout``) applied on top."""
    _checks.choice("model size", size, list(UNET_SIZES))
    return {**UNET_SIZES[size], "channels": channels, **overrides}


@register_model
class UNet(nn.Module):
    """Multi-resolution U-Net with adaptive GroupNorm and self-attention (see the module docstring).

    Args:
        channels: image channels C.
        base: width of the first level; level l has ``base * channel_mults[l]`` channels.
        channel_mults: width multiplier per level; ``len - 1`` downsamplings.
        n_res: residual blocks per level on the way down (``n_res + 1`` on the way up).
        attn_levels: levels (0 = full resolution) whose residual blocks are followed by attention;
            the middle always has one.
        dropout: dropout probability inside each residual block (training only).
        conditioning: ``"sigma"`` (s = F(x, ln(sigma)/4) / sigma) or ``"time"`` (F(x, t)).
        n_classes: K > 0 makes the model class-conditional, called with labels in 0..K (K = null label).
        fourier_scale: standard deviation of the Fourier frequencies of the noise embedding.
        head_dim: channels per attention head.
    """

    conditioning = "time"  # the class default; an instance built with conditioning="sigma" says "sigma"

    def __init__(
        self,
        channels: int = 1,
        base: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        n_res: int = 1,
        attn_levels: Sequence[int] = (2,),
        dropout: float = 0.0,
        conditioning: str = "time",
        n_classes: int = 0,
        fourier_scale: float = 16.0,
        head_dim: int = 64,
    ) -> None:
        super().__init__()
        mults = [_checks.positive_int("channel_mults entry", m) for m in channel_mults]
        if not mults:
            raise ConfigError("channel_mults must name at least one level, e.g. [1, 2, 2]")
        attn = sorted({int(a) for a in attn_levels})
        if any(a < 0 or a >= len(mults) for a in attn):
            raise ConfigError(f"attn_levels must lie in 0..{len(mults) - 1} (one per level), got {list(attn_levels)}")
        dropout = float(dropout)
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.config = {
            "channels": _checks.positive_int("channels", channels),
            "base": _checks.positive_int("base", base),
            "channel_mults": mults,
            "n_res": _checks.positive_int("n_res", n_res),
            "attn_levels": attn,
            "dropout": dropout,
            "conditioning": _checks.choice("conditioning", conditioning, ["sigma", "time"]),
            "n_classes": n_classes,
            "fourier_scale": _checks.positive("fourier_scale", fourier_scale),
            "head_dim": _checks.positive_int("head_dim", head_dim),
        }
        self.conditioning = conditioning
        self.channels = self.config["channels"]
        b, nr, hd = self.config["base"], self.config["n_res"], self.config["head_dim"]
        emb = 4 * b
        fdim = 2 * max(1, b // 2)
        self.fourier = GaussianFourierProjection(fdim, scale=self.config["fourier_scale"])
        self.embed = nn.Sequential(nn.Linear(fdim, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.label_embed = label_table(n_classes, emb)
        self.n_classes, self.null_label = n_classes, n_classes if n_classes else None

        self.conv_in = nn.Conv2d(self.channels, b, 3, padding=1)
        ch, skips = b, [b]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for level, m in enumerate(mults):
            blocks = []
            for _ in range(nr):
                blocks.append(_ResBlock(ch, b * m, emb, dropout))
                ch = b * m
                skips.append(ch)
            self.down.append(_Level(blocks, [_Attention(ch, hd) for _ in blocks] if level in attn else None))
            if level < len(mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = _Level([_ResBlock(ch, ch, emb, dropout), _ResBlock(ch, ch, emb, dropout)], [_Attention(ch, hd)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(mults))):
            blocks = []
            for _ in range(nr + 1):
                blocks.append(_ResBlock(ch + skips.pop(), b * mults[level], emb, dropout))
                ch = b * mults[level]
            self.up.append(_Level(blocks, [_Attention(ch, hd) for _ in blocks] if level in attn else None))
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, self.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _noise(self, x: Tensor, noise: float | Tensor) -> Tensor:
        c = self.channels
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != c:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ModelError(f"UNet(channels={c}) needs images of shape (n, {c}, H, W), got {shape}; "
                             f"reshape flat data with x.view(n, {c}, H, W)")
        if not x.is_floating_point():
            raise ModelError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        name = "sigma" if self.conditioning == "sigma" else "t"
        s = _checks.per_row(name, noise, x)
        if self.conditioning == "sigma" and not bool(torch.all(torch.isfinite(s) & (s > 0))):
            raise ModelError("sigma must be positive and finite (a noise standard deviation); "
                             f"got min {s.min().item():g}, max {s.max().item():g}")
        return s

    def forward(self, x: Tensor, noise: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """The score s(x, sigma[, y]) (``conditioning="sigma"``) or F(x, t[, y]) (``"time"``), shaped like x;
        ``noise`` is a float or a tensor of shape (n,); ``labels`` an int tensor (n,) or None."""
        s = self._noise(x, noise)
        u = s.log() / 4 if self.conditioning == "sigma" else s
        emb = self.embed(self.fourier(u.float()))
        emb = add_label_embedding(emb, self.label_embed, labels)
        h = self.conv_in(x)
        saved = [h]
        for level, lv in enumerate(self.down):
            for i, block in enumerate(lv.blocks):
                h = block(h, emb)
                if lv.attn is not None:
                    h = lv.attn[i](h)
                saved.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                saved.append(h)
        h = self.mid.attn[0](self.mid.blocks[0](h, emb))
        h = self.mid.blocks[1](h, emb)
        for j, lv in enumerate(self.up):
            for i, block in enumerate(lv.blocks):
                h = block(torch.cat([h, saved.pop()], dim=1), emb)
                if lv.attn is not None:
                    h = lv.attn[i](h)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, size=saved[-1].shape[-2:], mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h))).to(x.dtype)
        if self.conditioning == "sigma":
            out = out / s.view(-1, 1, 1, 1)
        return out

    def score(self, x: Tensor, noise: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """Same as ``forward``."""
        return self(x, noise, labels)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
