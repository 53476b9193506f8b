"""`scorematch eval` of an image run: the feature-space metrics, their baselines and the cached
feature network."""

from __future__ import annotations

import json

import pytest
import torch

from scorematch.cli import main
from scorematch.data import Dataset
from scorematch.run.reporting import features
from scorematch.run.reporting.evaluate import _image_metrics


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("image-eval") / "digits"
    assert main(["train", "--data", "digits", "--objective", "ncsn", "--steps", "20", "--model", "unet",
                 "--base-channels", "8", "--batch-size", "32", "--no-progress", "--device", "cpu",
                 "--out", str(run)]) == 0
    return run


def test_eval_reports_feature_metrics_with_baselines(digits_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCOREMATCH_CACHE", str(tmp_path / "cache"))
    assert main(["eval", str(digits_run), "--n", "60", "--out", str(tmp_path / "a.json")]) == 0
    text = capsys.readouterr().out
    m = json.loads((tmp_path / "a.json").read_text())["image_metrics"]
    assert m["n_generated"] == 60 and m["n_reference"] == 359  # 20% of the 1,797 digits held out
    for key in ("fd", "kid", "precision", "recall", "confident"):
        assert set(m[key]) == {"value", "se", "baseline", "baseline_se"}
        assert m[key]["se"] >= 0 and m[key]["baseline_se"] >= 0
    # real digits against real digits: what a perfect sampler reaches
    assert m["precision"]["baseline"] > 0.7 and m["recall"]["baseline"] > 0.7
    assert m["confident"]["baseline"] > 0.8 and m["feature_net"]["heldout_accuracy"] > 0.9
    # 20 training steps draw noise, not digits: far from the baseline in every metric
    assert m["fd"]["value"] > m["fd"]["baseline"] + 5 * (m["fd"]["se"] + m["fd"]["baseline_se"])
    assert m["confident"]["value"] < m["confident"]["baseline"] - 0.3
    assert "feature_fd" in text and "real vs real" in text and "confident_rate" in text
    net = m["feature_net"]
    assert net["cached"] is False and net["file"].startswith(str(tmp_path / "cache"))
    # a second evaluation reads the network back from the cache and gets the same numbers
    assert main(["eval", str(digits_run), "--n", "60", "--json", "--out", str(tmp_path / "b.json")]) == 0
    again = json.loads((tmp_path / "b.json").read_text())["image_metrics"]
    assert again["feature_net"]["cached"] is True
    assert again["fd"] == m["fd"] and again["confident"] == m["confident"]


def test_a_damaged_cache_file_is_trained_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCOREMATCH_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 2
    net, info = features.feature_net(x, y)
    assert info["cached"] is False
    path = tmp_path / "features" / f"{info['key'][:32]}.safetensors"
    assert path.is_file()
    assert features.feature_net(x, y)[1]["cached"] is True
    path.write_bytes(path.read_bytes()[:-10])
    capsys.readouterr()
    again, info = features.feature_net(x, y)
    assert info["cached"] is False and "training it again" in capsys.readouterr().err
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)  # the same seed: the same network
    # other labels: another key, another file
    assert features.feature_net(x, 1 - y)[1]["key"] != info["key"]


def test_image_data_without_labels_is_skipped():
    ds = Dataset(torch.rand(40, 1, 8, 8), "folder", "image")
    out = _image_metrics(torch.rand(30, 1, 8, 8), ds, {"test_fraction": 0.2, "seed": 0}, 0)
    assert "labels" in out["skipped"]
