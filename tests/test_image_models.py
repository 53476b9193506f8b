"""NCSNUNet: shapes, the sigma parameterisation, per-row independence, validation, rebuild."""

from __future__ import annotations

import pytest
import torch

from scorematch.errors import ConfigError, ModelError
from scorematch.models.base import MODEL_REGISTRY, build_model, model_spec
from scorematch.models.images import NCSNUNet


def _model(channels: int = 1, conditioning: str = "embedding", seed: int = 0, **kw) -> NCSNUNet:
    torch.manual_seed(seed)
    m = NCSNUNet(channels=channels, base=8, conditioning=conditioning, sigma_embed_dim=16, **kw)
    # the output conv is zero-initialised; give it weights so outputs are non-trivial
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("conditioning", ["embedding", "divide"])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_equals_input_shape(conditioning: str, channels: int) -> None:
    m = _model(channels, conditioning, channel_mults=(1, 2, 2))
    for size in (8, 16, 28, 32):
        x = torch.randn(2, channels, size, size)
        out = m(x, torch.tensor([0.3, 2.0]))
        assert out.shape == x.shape
        assert torch.isfinite(out).all()
        assert out.abs().max() > 0


def test_non_square_odd_size() -> None:
    m = _model(3, channel_mults=(1, 2, 2))
    x = torch.randn(2, 3, 28, 13)
    assert m(x, 0.5).shape == x.shape


def test_zero_initialised_output_gives_zero_score() -> None:
    m = NCSNUNet(channels=1, base=8)
    assert torch.equal(m(torch.randn(3, 1, 8, 8), 0.7), torch.zeros(3, 1, 8, 8))


def test_divide_mode_is_f_over_sigma_exactly() -> None:
    m = _model(1, "divide")
    x = torch.randn(4, 1, 16, 16)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.5])
    s1 = m(x, sigma)
    assert torch.equal(m(x, 2 * sigma), s1 / 2)
    # sigma * s(x, sigma) does not depend on sigma: f(x) is unconditional
    torch.testing.assert_close(0.5 * m(x, 0.5), 4.0 * m(x, 4.0), rtol=1e-6, atol=0)


def test_embedding_mode_depends_on_sigma_beyond_the_division() -> None:
    m = _model(1, "embedding")
    x = torch.randn(4, 1, 16, 16)
    f1 = 0.5 * m(x, 0.5)
    f2 = 4.0 * m(x, 4.0)
    assert (f1 - f2).abs().max() > 1e-3 * f1.abs().max()
    assert not torch.allclose(m(x, 2.0), m(x, 1.0) / 2)


@pytest.mark.parametrize("conditioning", ["embedding", "divide"])
def test_batched_call_is_the_per_row_function(conditioning: str) -> None:
    m = _model(3, conditioning).double()
    x = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    batched = m(x, sigma)
    for i in range(5):
        single = m(x[i : i + 1], sigma[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-10, atol=1e-10)
    # changing one row's input or sigma leaves every other row unchanged
    x2, sigma2 = x.clone(), sigma.clone()
    x2[2] += 1.0
    sigma2[2] = 0.5
    changed = m(x2, sigma2)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(changed[keep], batched[keep], rtol=1e-10, atol=1e-10)
    assert (changed[2] - batched[2]).abs().max() > 1e-3


@pytest.mark.parametrize("conditioning", ["embedding", "divide"])
def test_float_sigma_equals_tensor_sigma(conditioning: str) -> None:
    m = _model(1, conditioning)
    x = torch.randn(3, 1, 8, 8)
    a = m(x, 0.37)
    assert torch.equal(a, m(x, torch.full((3,), 0.37)))
    assert torch.equal(a, m(x, torch.tensor(0.37)))
    assert torch.equal(a, m.score(x, 0.37))


def test_invalid_inputs_raise_model_error() -> None:
    m = _model(3)
    with pytest.raises(ModelError, match=r"\(n, 3, H, W\)"):
        m(torch.randn(2, 1, 8, 8), 1.0)
    with pytest.raises(ModelError, match=r"\(n, 3, H, W\)"):
        m(torch.randn(2, 192), 1.0)
    with pytest.raises(ModelError, match="positive"):
        m(torch.randn(2, 3, 8, 8), 0.0)
    with pytest.raises(ModelError, match="positive"):
        m(torch.randn(2, 3, 8, 8), torch.tensor([1.0, -0.5]))
    with pytest.raises(ModelError, match=r"shape \(2,\)"):
        m(torch.randn(2, 3, 8, 8), torch.ones(3))
    with pytest.raises(ConfigError, match="conditioning"):
        NCSNUNet(conditioning="concat")
    sized = NCSNUNet(channels=1, base=8, image_size=8)
    with pytest.raises(ModelError, match=r"\(n, 1, 8, 8\)"):
        sized(torch.randn(2, 1, 16, 16), 1.0)


@pytest.mark.parametrize("conditioning", ["embedding", "divide"])
def test_rebuild_from_config_and_state_dict(conditioning: str) -> None:
    m = _model(3, conditioning, channel_mults=(1, 2, 2), image_size=(28, 28))
    assert m.conditioning == "sigma"
    assert m.config["conditioning"] == conditioning
    assert MODEL_REGISTRY["NCSNUNet"] is NCSNUNet
    x = torch.randn(2, 3, 28, 28)
    sigma = torch.tensor([0.05, 3.0])
    for rebuilt in (type(m)(**m.config), build_model(**model_spec(m))):
        rebuilt.load_state_dict(m.state_dict())
        rebuilt.eval()
        assert torch.equal(rebuilt(x, sigma), m(x, sigma))
