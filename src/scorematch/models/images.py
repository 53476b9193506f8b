"""Noise-conditional convolutional score networks for small images (NCSN-style U-Net).

``NCSNUNet`` maps a batch of images x of shape (n, C, H, W) and one noise level
per row to the score of the noise-perturbed data, s(x, sigma) ~ grad_x log p_sigma(x).
It is sized for CPU training on 8x8 to 32x32 images (C = 1 or 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import add_label_embedding, label_table, register_model

_MODES = ("embedding", "divide")


def _groups(ch: int, max_groups: int = 8) -> int:
    """The largest group count <= max_groups that divides ``ch`` (GroupNorm is per-row)."""
    for g in range(min(max_groups, ch), 0, -1):
        if ch % g == 0:
            return g
    return 1


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(ch), ch)


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, plus a per-channel noise-level shift, then again; residual."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim is not None else None
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None and emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _SigmaEmbedding(nn.Module):
    """Sinusoidal features of log(sigma) followed by a two-layer SiLU MLP."""

    def __init__(self, dim: int, out_dim: int, min_freq: float = 0.5, max_freq: float = 64.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), half))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * half, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        arg = torch.log(sigma)[:, None] * self.freqs.to(sigma.dtype)[None, :]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))


@register_model
class NCSNUNet(nn.Module):
    """Noise-conditional score U-Net for images (NCSN, Song & Ermon 2019; NCSNv2 2020).

    Score parameterisation, for x of shape (n, C, H, W) and one sigma_i per row:

        conditioning="embedding":  s(x, sigma) = f_theta(x, e(log sigma)) / sigma
        conditioning="divide":     s(x, sigma) = f_theta(x) / sigma   (NCSNv2 technique 3)

    where e is a sinusoidal embedding of log(sigma) plus an MLP, added to every
    residual block (the division by sigma is NCSN++'s ``scale_by_sigma``), so
    f_theta predicts a -z-like quantity of unit scale. Layout: 3x3 conv in, per
    level ``n_res`` residual blocks (GroupNorm + SiLU) at ``base * mult``
    channels, stride-2 conv downsampling (ceil, so 28 -> 14 -> 7 -> 4 works),
    a middle block, a 3x3 conv at the coarse size then nearest upsampling to the
    skip's exact size, concatenated skip connections, and a zero-initialised 3x3
    conv out to C channels. No batch statistics: row i of the output depends on
    row i of the input only. Defaults: ~415k parameters.

    Default ``conditioning="embedding"``: its held-out loss on digits is lower than
    ``divide``'s at every noise level (``benchmarks/ncsn_image_step.py --compare``;
    docs/benchmarks.md). At large sigma the optimum sigma s ~ (mean - x~)/sigma
    depends on sigma, which an unconditional f can only guess from ||x||.

    Args:
        channels: image channels C (1 or 3 typical).
        base: channel width of the first level.
        channel_mults: width multiplier per level; len - 1 downsamplings.
        n_res: residual blocks per level on each side of the U.
        conditioning: "embedding" or "divide" (see above).
        sigma_embed_dim: size of the sinusoidal log(sigma) features ("embedding" only).
        image_size: if given (int or (H, W)), inputs must have that spatial size.
        n_classes: K > 0 makes the model class-conditional, s(x, sigma, y): a label embedding
            (K + 1 rows, row K = ``null_label`` = no class) is added to the noise-level
            embedding ("embedding" only). 0: unconditional.
    """

    conditioning = "sigma"

    def __init__(
        self,
        channels: int = 1,
        base: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        n_res: int = 1,
        conditioning: str = "embedding",
        sigma_embed_dim: int = 64,
        image_size: int | Sequence[int] | None = None,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if conditioning not in _MODES:
            raise ConfigError(
                f"unknown conditioning {conditioning!r}; valid choices: {', '.join(_MODES)}"
            )
        mults = [int(m) for m in channel_mults]
        if int(channels) < 1 or int(base) < 1 or int(n_res) < 1 or not mults or min(mults) < 1:
            raise ConfigError(
                "channels, base, n_res and every channel_mults entry must be integers >= 1, got "
                f"channels={channels}, base={base}, n_res={n_res}, channel_mults={mults}"
            )
        if conditioning == "divide" and n_classes:
            raise ConfigError("a class-conditional NCSNUNet (n_classes > 0) needs conditioning='embedding': "
                              "the labels are added to the noise-level embedding")
        if conditioning == "embedding" and int(sigma_embed_dim) < 2:
            raise ConfigError(f"sigma_embed_dim must be >= 2, got {sigma_embed_dim}")
        size: list[int] | None = None
        if image_size is not None:
            size = [int(image_size)] * 2 if isinstance(image_size, int) else [
                int(s) for s in image_size
            ]
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"image_size must be an int or (H, W), got {image_size!r}")
        self.config = {
            "channels": int(channels),
            "base": int(base),
            "channel_mults": mults,
            "n_res": int(n_res),
            "conditioning": conditioning,
            "sigma_embed_dim": int(sigma_embed_dim),
            "image_size": size,
            "n_classes": n_classes,
        }
        self.channels = int(channels)
        self.noise_conditioning = conditioning
        self.image_size = size

        base = int(base)
        emb_dim = 4 * base if conditioning == "embedding" else None
        self.embed = (
            _SigmaEmbedding(int(sigma_embed_dim), emb_dim) if emb_dim is not None else None
        )
        self.label_embed = label_table(n_classes, emb_dim) if emb_dim is not None else None
        self.n_classes, self.null_label = n_classes, n_classes if n_classes else None
        self.conv_in = nn.Conv2d(self.channels, base, 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base
        skip_ch: list[int] = []
        for level, m in enumerate(mults):
            blocks = nn.ModuleList()
            for _ in range(int(n_res)):
                blocks.append(_ResBlock(ch, base * m, emb_dim))
                ch = base * m
            self.down.append(blocks)
            skip_ch.append(ch)
            if level < len(mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = _ResBlock(ch, ch, emb_dim)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(mults))):
            if level < len(mults) - 1:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
            blocks = nn.ModuleList()
            for i in range(int(n_res)):
                in_ch = ch + skip_ch[level] if i == 0 else ch
                blocks.append(_ResBlock(in_ch, base * mults[level], emb_dim))
                ch = base * mults[level]
            self.up.append(blocks)

        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, self.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _check(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Validate x and return sigma as a positive tensor of shape (n,)."""
        c = self.channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(
                f"NCSNUNet expects images of shape (n, {c}, H, W), got {shape}; "
                f"reshape flat data with x.view(n, {c}, H, W) or add a batch axis with x[None]"
            )
        if x.shape[1] != c:
            raise ModelError(
                f"NCSNUNet was built with channels={c}, so x must have shape (n, {c}, H, W); "
                f"got {tuple(x.shape)}; build the model with channels={x.shape[1]} "
                "or fix the channel axis (channels first)"
            )
        if not x.is_floating_point():
            raise ModelError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if self.image_size is not None and list(x.shape[2:]) != self.image_size:
            h, w = self.image_size
            raise ModelError(
                f"NCSNUNet was built with image_size=({h}, {w}), so x must have shape "
                f"(n, {c}, {h}, {w}); got {tuple(x.shape)}; resize the images or rebuild "
                "the model with image_size=None"
            )
        n = x.shape[0]
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.numel() == 1:
            s = s.reshape(()).expand(n)
        elif s.shape == (n,) or s.shape == (n, 1, 1, 1):
            s = s.reshape(n)
        else:
            raise ModelError(
                f"sigma must be a float or a tensor of shape ({n},) (one noise level per row), "
                f"got shape {tuple(s.shape)}"
            )
        if not bool(torch.all(torch.isfinite(s) & (s > 0))):
            raise ModelError(
                "sigma must be positive and finite (a noise standard deviation); "
                f"got min {s.min().item():g}, max {s.max().item():g}"
            )
        return s

    def forward(
        self, x: torch.Tensor, sigma: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return s(x, sigma) of shape (n, C, H, W); sigma is a float or shape (n,); labels (n,) or None."""
        s = self._check(x, sigma)
        if self.embed is not None:
            emb = add_label_embedding(self.embed(s), self.label_embed, labels)
        elif labels is not None:
            raise ModelError("this NCSNUNet (conditioning='divide') is unconditional and takes no labels")
        else:
            emb = None
        h = self.conv_in(x)
        skips: list[torch.Tensor] = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.mid(h, emb)
        for i, blocks in enumerate(self.up):
            skip = skips.pop()
            if i > 0:
                h = F.interpolate(self.upsample[i - 1](h), size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out / s[:, None, None, None]

    def score(
        self, x: torch.Tensor, sigma: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Same as ``forward``: the noise-conditional score s(x, sigma), or s(x, sigma, y)."""
        return self(x, sigma, labels)
