"""UNet: shapes at 8x8 / 28x28 / 32x32, per-row independence, bf16 autocast, the score convention."""

from __future__ import annotations

import math

import pytest
import torch

from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import build_model, model_spec
from scorematch.models.edm import EDMPrecond
from scorematch.models.unet import UNET_SIZES, UNet, group_count, parameter_count, unet_config
from scorematch.objectives import edm

SMALL = {"base": 8, "channel_mults": [1, 2, 2], "n_res": 1, "attn_levels": [2], "head_dim": 8}


def _perturb(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (the output and residual convs start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m.eval()


def _model(kind: str, channels: int, n_classes: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "edm":
        m = EDMPrecond("UNet", {**SMALL, "channels": channels, "n_classes": n_classes}, sigma_data=0.5)
    else:
        m = UNet(**SMALL, channels=channels, conditioning=kind, n_classes=n_classes)
    return _perturb(m)


@pytest.mark.parametrize("kind", ["sigma", "time", "edm"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("labelled", [False, True])
def test_output_shape_equals_input_shape(kind: str, channels: int, labelled: bool) -> None:
    m = _model(kind, channels, n_classes=10 if labelled else 0)
    for size in (8, 28, 32):
        x = torch.randn(3, channels, size, size)
        labels = torch.tensor([0, 9, 10]) if labelled else None
        out = m.score(x, torch.tensor([0.05, 0.7, 3.0]), labels)
        assert out.shape == x.shape
        assert torch.isfinite(out).all() and out.abs().max() > 0


def test_labels_change_the_output_and_null_label_is_the_default() -> None:
    m = _model("sigma", 1, n_classes=10)
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 0.5])
    a, b = m(x, s, torch.tensor([1, 1])), m(x, s, torch.tensor([2, 2]))
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(m(x, s), m(x, s, torch.tensor([10, 10])))


@pytest.mark.parametrize("kind", ["sigma", "edm"])
def test_row_i_depends_only_on_row_i(kind: str) -> None:
    m = _model(kind, 1, n_classes=10)
    x = torch.randn(4, 1, 28, 28)
    sigma, labels = torch.tensor([0.1, 0.5, 1.0, 4.0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        base = m.score(x, sigma, labels)
        x2, s2, y2 = x.clone(), sigma.clone(), labels.clone()
        x2[2] = 5 * torch.randn(1, 28, 28)
        s2[2], y2[2] = 9.0, 7
        moved = m.score(x2, s2, y2)
    assert (moved[2] - base[2]).abs().max() > 1e-3
    keep = [0, 1, 3]
    torch.testing.assert_close(moved[keep], base[keep], rtol=1e-5, atol=1e-6)
    # one row alone gives the same output as inside the batch
    torch.testing.assert_close(m.score(x[1:2], sigma[1:2], labels[1:2]), base[1:2], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_loss_matches_float32() -> None:
    """EDM loss of one batch under bfloat16 autocast vs float32: relative difference < 2%
    (bf16 keeps 8 bits of mantissa, ~0.4% per operation; the loss averages many of them)."""
    m = _model("edm", 1)
    x = torch.rand(16, 1, 28, 28)
    ref = edm(m, x, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = edm(m, x, generator=torch.Generator().manual_seed(1))
    assert low.dtype == torch.float32
    assert abs(low.item() - ref.item()) / ref.item() < 0.02


def test_sigma_mode_is_the_time_mode_at_log_sigma_over_4_divided_by_sigma() -> None:
    """s(x, sigma) = F(x, ln(sigma) / 4) / sigma, with F the same weights time-conditioned."""
    s_net = _model("sigma", 1)
    t_net = UNet(**SMALL, channels=1, conditioning="time")
    t_net.load_state_dict(s_net.state_dict())
    t_net.eval()
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.01, 1.0, 20.0])
    torch.testing.assert_close(s_net(x, sigma) * sigma.view(-1, 1, 1, 1), t_net(x, sigma.log() / 4))


def test_a_fresh_edm_unet_is_the_score_of_the_gaussian_with_sigma_data() -> None:
    """The output conv starts at zero, so F = 0 and s(x, sigma) = -x / (sigma^2 + sigma_data^2):
    the exact score of N(0, sigma_data^2 I) convolved with N(0, sigma^2 I)."""
    m = EDMPrecond("UNet", unet_config("tiny", 1), sigma_data=0.3)
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.2, 5.0])
    expect = -x / (sigma.view(-1, 1, 1, 1) ** 2 + 0.09)
    torch.testing.assert_close(m.score(x, sigma), expect)
    fresh = UNet(**unet_config("tiny", 1, conditioning="sigma"))
    assert fresh(x, sigma).abs().max() == 0


def test_denoiser_and_score_agree_by_tweedie() -> None:
    m = _model("edm", 1)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 2.0])
    s = sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(m.score(x, sigma), (m.denoise(x, sigma) - x) / s**2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels,groups", [(3, 1), (8, 2), (16, 4), (24, 6), (64, 16), (96, 24), (256, 32),
                                             (48, 12), (40, 10)])
def test_group_count_keeps_four_channels_a_group(channels: int, groups: int) -> None:
    assert group_count(channels) == groups
    assert channels % group_count(channels) == 0


def test_every_groupnorm_divides_its_channels_for_every_size_and_narrow_widths() -> None:
    for cfg in [*(unet_config(s) for s in UNET_SIZES), {**SMALL, "base": 4}, {**SMALL, "base": 6}]:
        m = UNet(**cfg)
        for mod in m.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                assert mod.num_channels % mod.num_groups == 0
                assert mod.num_channels // mod.num_groups >= min(4, mod.num_channels)


def test_named_sizes_grow_and_rebuild_from_their_spec() -> None:
    counts = [parameter_count(UNet(**unet_config(s))) for s in ("tiny", "small", "base")]
    assert counts[0] < counts[1] < counts[2]
    m = _model("sigma", 3, n_classes=4)
    spec = model_spec(m)
    again = build_model(spec["name"], spec["config"])
    again.load_state_dict(m.state_dict())
    again.eval()
    assert again.conditioning == "sigma"
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(again(x, 0.5), m(x, 0.5))


def test_residual_and_attention_sums_are_scaled_by_one_over_sqrt2() -> None:
    """block(x) = (skip(x) + h) / sqrt(2): with the last conv of the residual branch at zero (as built)
    a same-width block returns x / sqrt(2), and so does an attention block with its output projection at zero."""
    from scorematch.models.unet import _Attention, _ResBlock

    x, e = torch.randn(2, 8, 7, 7), torch.randn(2, 32)
    torch.testing.assert_close(_ResBlock(8, 8, 32, 0.0)(x, e), x / math.sqrt(2))
    torch.testing.assert_close(_Attention(8, 4)(x), x / math.sqrt(2))


def test_refusals() -> None:
    m = UNet(**SMALL)
    with pytest.raises(ModelError, match=r"\(n, 1, H, W\)"):
        m(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ModelError, match="shape"):
        m(torch.randn(2, 1, 8, 8), torch.ones(3))
    with pytest.raises(ModelError, match="positive"):
        UNet(**SMALL, conditioning="sigma")(torch.randn(2, 1, 8, 8), torch.tensor([0.5, 0.0]))
    with pytest.raises(ConfigError, match="attn_levels"):
        UNet(**{**SMALL, "attn_levels": [3]})
    with pytest.raises(ConfigError, match="dropout"):
        UNet(**SMALL, dropout=1.0)
    with pytest.raises(ConfigError, match="time-conditioned"):
        EDMPrecond("UNet", {**SMALL, "conditioning": "sigma"})
    with pytest.raises(ConfigError, match="model size"):
        unet_config("huge")
