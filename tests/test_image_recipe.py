"""The image U-Net as the default image network, the image recipe in config.json, warm-up and EMA half-life."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

import scorematch
from scorematch.data import resolve_data
from scorematch.run.build.parts import (
    IMAGE_RECIPE,
    build_for,
    default_model_name,
    ema_half_life,
    image_recipe,
    make_schedule,
    warmup_factor,
)
from scorematch.run.folder.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return resolve_data("digits")


@pytest.mark.parametrize("objective,cls,conditioning", [("ncsn", "UNet", "sigma"), ("sde", "UNet", "time"),
                                                        ("edm", "EDMPrecond", "sigma")])
def test_the_unet_is_the_default_image_network_of_every_noise_conditional_objective(
        digits, objective, cls, conditioning):
    cfg = image_recipe(TrainConfig(data="digits", objective=objective), digits, set())
    if objective == "edm":
        cfg = cfg.replace(schedule=make_schedule(cfg, digits))
    assert default_model_name(cfg, digits) == "image_unet"
    model = build_for(cfg, digits)
    assert type(model).__name__ == cls and model.conditioning == conditioning
    net = model.net if cls == "EDMPrecond" else model
    assert type(net).__name__ == "UNet" and net.config["base"] == 16  # the recipe's size: tiny
    x = torch.rand(2, 1, 8, 8)
    assert model.score(x, torch.tensor([0.5, 0.5])).shape == x.shape


def test_the_recipe_fills_only_what_the_user_left_out(digits):
    cfg = TrainConfig(data="digits", objective="edm", steps=7, precision="fp32")
    out = image_recipe(cfg, digits, {"steps", "precision"})
    assert out.steps == 7 and out.precision == "fp32"
    assert out.batch_size == IMAGE_RECIPE["batch_size"] and out.lr_warmup == IMAGE_RECIPE["lr_warmup"]
    assert out.ema_half_life == IMAGE_RECIPE["ema_half_life"] and out.model_size == IMAGE_RECIPE["model_size"]
    # vector data and the earlier image networks keep the plain defaults
    assert image_recipe(TrainConfig(data="digits", objective="dsm"), digits, set()) == TrainConfig(
        data="digits", objective="dsm")
    old = TrainConfig(data="digits", objective="ncsn", model="unet")
    assert image_recipe(old, digits, set()) == old


def test_warmup_is_linear_then_flat():
    assert [warmup_factor(k, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_ema_half_life_halves_the_weight_of_the_past_every_half_life_of_images():
    """After the ramp-up, with beta = 0.5^(batch / h), a step change of the weights from 0 to 1 is
    half-way in the average after exactly h images (h / batch updates)."""
    update = ema_half_life(half_life=640.0, batch=64, ramp=0.05)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    for k in range(10_000, 10_010):  # 10 updates of 64 images = 640 images, past the ramp-up
        update(avg, cur, k)
    torch.testing.assert_close(avg[0], torch.full((3,), 0.5))
    # during the ramp-up the half-life is 5% of the images seen: the first update keeps 0.5^(1/0.05)
    avg = [torch.zeros(1)]
    update(avg, [torch.ones(1)], 0)
    torch.testing.assert_close(avg[0], torch.tensor([1 - 0.5**20]))


def test_a_digits_run_records_the_recipe_and_trains_in_bf16(tmp_path):
    run = tmp_path / "run"
    scorematch.train(out=run, data="digits", objective="edm", steps=3, seed=0, progress=False, device="cpu",
                     checkpoint_every=3)
    cfg = json.loads((run / "config.json").read_text())
    for key, value in IMAGE_RECIPE.items():
        if key != "steps":
            assert cfg[key] == value, key
    assert cfg["steps"] == 3 and cfg["grad_clip"] == 1.0
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["config"]["net"] == "UNet"
    assert info["model"]["config"]["net_config"]["base"] == 16


def test_model_size_is_refused_for_other_models_in_one_line(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--data", "gmm2d", "--objective", "dsm", "--model-size", "small", "--steps", "1",
                          "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "--model-size would be ignored by model 'mlp'" in err and "Traceback" not in err
    rc, _, err = run_cli(["train", "--data", "digits", "--objective", "edm", "--precision", "fp16", "--steps", "1",
                          "--out", str(tmp_path / "b")], capsys)
    assert rc == 2 and "precision" in err and "bf16" in err


def test_the_image_recipe_is_the_benchmarks_decision():
    """IMAGE_RECIPE = the decision recorded by ``python -m benchmarks.images --decide``."""
    from scorematch.run.sampling.generate import MIXTURE_GUIDANCE
    from scorematch.samplers.catalogue import default_for

    decided = json.loads((ROOT / "benchmarks/results/images.json").read_text())["decision"]
    assert {k: decided[k] for k in IMAGE_RECIPE} == IMAGE_RECIPE
    assert default_for("edm") == (decided["sampler"], {"n_steps": decided["n_steps"]})
    assert MIXTURE_GUIDANCE == decided["guidance"]


def test_a_run_resumes_with_the_network_it_started_with(tmp_path, monkeypatch):
    """A run started when the image default was another network resumes with that network (run.json
    names it), not with today's default."""
    import scorematch.run.build.parts as parts
    import scorematch.run.training.loop as loop

    def before(cfg, ds):
        return "time_unet"

    monkeypatch.setattr(parts, "default_model_name", before)
    monkeypatch.setattr(loop, "default_model_name", before)
    run = tmp_path / "run"
    scorematch.train(out=run, data="digits", objective="edm", steps=2, batch_size=8, checkpoint_every=1,
                     progress=False, device="cpu", seed=0)
    monkeypatch.undo()
    result = scorematch.train(resume=run, steps=4)
    assert result.steps == 4
    assert json.loads((run / "run.json").read_text())["model"]["config"]["net"] == "TimeUNet"
