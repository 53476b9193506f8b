"""Inception FID from a user's weights file: the architecture's names and shapes, the loader's
checks, and `scorematch eval --inception-weights`."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from scorematch.errors import CheckpointError, DataError
from scorematch.metrics import inception
from scorematch.metrics.inception import InceptionFeatures, inception_features, load_inception
from tests.cli_helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return InceptionFeatures().eval()


def test_the_architecture_is_torchvisions_inception3_without_its_classifiers(net):
    """torchvision's Inception3 has 27,161,264 parameters; less its auxiliary classifier
    (3,326,696) and last linear layer (2,049,000): 21,785,568."""
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 21_785_568
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch5x5_1.conv.weight"].shape == (48, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)


def test_features_of_grey_and_colour_images(net, monkeypatch):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    f = inception_features(net, x)
    assert f.shape == (3, 2048) and f.dtype == torch.float64 and bool((f >= 0).all())
    # a grey image is the colour image with three equal channels; rows do not depend on each other
    assert torch.allclose(inception_features(net, x.expand(-1, 3, -1, -1)), f)
    monkeypatch.setattr(inception, "INPUT_SIZE", 75)
    assert torch.allclose(inception_features(net, x[:1]), inception_features(net, x)[:1], atol=1e-6)
    with pytest.raises(DataError, match="1 or 3 channels"):
        inception_features(net, torch.rand(1, 2, 8, 8))


def test_load_checks_names_and_shapes(net, tmp_path):
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    good = tmp_path / "inception.safetensors"
    save_file({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, str(good))
    loaded = load_inception(good)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, str(missing))
    with pytest.raises(CheckpointError, match="missing"):
        load_inception(missing)
    wrong = tmp_path / "wrong.safetensors"
    save_file({**state, "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 1, 3, 3)}, str(wrong))
    with pytest.raises(CheckpointError, match="shape"):
        load_inception(wrong)
    with pytest.raises(CheckpointError, match="not found"):
        load_inception(tmp_path / "absent.safetensors")


def test_eval_inception_metric_and_its_row(net, tmp_path, monkeypatch, capsys):
    """Random weights (the real ones are never downloaded) at 75x75 input, to stay fast: the
    run-layer metric has its baseline and standard errors, and its row in eval's table."""
    from scorematch.run.reporting.features import image_metric_lines, inception_metric

    monkeypatch.setattr(inception, "INPUT_SIZE", 75)
    weights = tmp_path / "inception.safetensors"
    save_file(dict(net.state_dict()), str(weights))
    g = torch.Generator().manual_seed(2)
    real = torch.rand(30, 1, 8, 8, generator=g)
    fid = inception_metric(weights, real[:20], real[20:], torch.zeros(10, 1, 8, 8), g)
    assert set(fid) == {"value", "se", "baseline", "baseline_se", "weights"}
    assert fid["value"] > fid["baseline"] > 0  # blank images are further from the real ones than real ones
    stat = {"value": 1.0, "se": 0.1, "baseline": 0.5, "baseline_se": 0.1}
    metrics = {k: stat for k in ("fd", "kid", "precision", "recall", "confident")}
    metrics |= {"inception_fd": fid, "feature_net": {"cached": True, "file": "f"}}
    rows = {name: text for name, text, _ in image_metric_lines(metrics)}
    assert rows["inception_fid"].startswith(f"{fid['value']:.4g} +/- ")
    del metrics["inception_fd"]
    assert "inception_fid" not in {name for name, _, _ in image_metric_lines(metrics)}
    # the CLI refuses a missing weights file in one line, before any work
    rc, _, err = run_cli(["eval", tmp_path, "--inception-weights", tmp_path / "absent.safetensors"], capsys)
    assert_one_line_error(rc, err, "absent.safetensors", "never downloads")
