"""NCSN end to end (Song & Ermon 2019, with NCSNv2 practice): trained noise-conditional models,
annealed Langevin sampling, and the run-folder mechanics of ``scorematch.train(objective="ncsn")``.

The convergence tests (marked slow) train small models; their budgets were picked by measurement
(see the comments) with a margin. The sampler-only analytic checks of the imbalanced mixture are in
test_samplers_langevin.py.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

import scorematch
from scorematch.cli import main as cli_main
from scorematch.data import load_digits
from scorematch.distributions import toy
from scorematch.metrics import mmd, mode_weights
from scorematch.run.folder.config import TrainConfig
from scorematch.run.sampling.generate import generate
from scorematch.samplers import langevin

CPU = {"device": "cpu", "progress": False}



# ----------------------------------------------------------------------------- (a) imbalanced


@pytest.mark.slow
def test_trained_ncsn_recovers_imbalanced_mode_weights(tmp_path):
    """0.2 N((-5,-5), I) + 0.8 N((5,5), I): a NoiseConditionalMLP trained by ncsn, sampled with
    annealed Langevin from the uniform box over the data, gives the weights within 0.03; plain
    Langevin with the same model at sigma_L and the same number of score evaluations does not.

    Schedule as the paper's toy experiment (geometric sigmas from 20 down to 1, eps = 0.1) but
    with L = 20 levels, T = 100. Measured weight of the small mode, 2000 steps x batch 512 on 40k
    points, 4000 chains: 0.198, 0.220, 0.215, 0.216 for training seeds 0, 1, 2, 5 (with L = 10
    levels it is biased up: 0.211-0.225 over seeds 0-5 after 3000 steps, even at T = 200; the
    sampler with the analytic scores gives 0.205 at L = 20, T = 100). Plain Langevin: 0.48.
    """
    p = toy("imbalanced")
    steps = 2000
    scorematch.train(out=tmp_path / "run", data="imbalanced", objective="ncsn", steps=steps,
                     batch_size=512, n_data=50_000, sigma_max=20.0, sigma_min=1.0, n_levels=20,
                     seed=0, checkpoint_every=steps, standardize="none", **CPU)  # the paper's sigmas, data units
    model = scorematch.load(tmp_path / "run")
    assert type(model).__name__ == "NoiseConditionalMLP"
    sigmas = model.run_info["schedule"]["sigmas"]
    eps, T = 0.1, 100
    x = generate(model, model.run_info, 4000, sampler="annealed", seed=0, eps=eps, steps_per_sigma=T)
    w = mode_weights(x, p.means)
    assert torch.allclose(w, p.weights.to(w.dtype), atol=0.03), w

    data = model.run_info["data"]
    g = torch.Generator().manual_seed(0)
    x0 = data["lo"] + (data["hi"] - data["lo"]) * torch.rand(1000, 2, generator=g)
    sigma_l = sigmas[-1]
    x_plain = langevin(lambda y: model.score(y, sigma_l), x0, step_size=eps / 2,
                       n_steps=len(sigmas) * T, generator=g)
    w_plain = mode_weights(x_plain, p.means)
    assert abs(float(w_plain[0]) - 0.2) > 0.1, w_plain


# ----------------------------------------------------------------------------- (b) NCSN vs DSM


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imbalanced", "moons", "swissroll", "checkerboard", "rings"])
def test_ncsn_beats_single_sigma_dsm_at_the_same_budget(tmp_path, name):
    """Same data, steps, batch, lr, width, depth and seed, library defaults otherwise (NCSN: the
    proposed schedule, sigma_1 = largest pairwise distance -> sigma_L = DSM's sigma, L = 10; DSM:
    one sigma = 0.1 x the data's std): NCSN + annealed Langevin (T = 100, 1000 score evaluations)
    has less than half the MMD^2 to held-out data of DSM + plain Langevin (1000 steps).
    Measured with examples/ncsn_toys.py at 2000 steps, seed 0 (x 1e3, NCSN vs DSM): imbalanced
    1.7 vs 196, moons 0.28 vs 4.8, swissroll 0.09 vs 1.6, checkerboard -0.26 vs 0.19, rings 0.13
    vs 1.9; 8gaussians (0.08 vs 0.18) is left out: NCSN's samples there still join the modes.
    """
    budget = {"data": name, "steps": 2000, "batch_size": 256, "lr": 1e-3, "hidden": 128,
              "depth": 3, "seed": 0, "checkpoint_every": 2000, **CPU}
    scorematch.train(out=tmp_path / "dsm", objective="dsm", **budget)
    scorematch.train(out=tmp_path / "ncsn", objective="ncsn", steps_per_sigma=100, **budget)
    dsm_model, ncsn_model = scorematch.load(tmp_path / "dsm"), scorematch.load(tmp_path / "ncsn")
    held_out = toy(name).sample(2000, generator=torch.Generator().manual_seed(123)).float()
    x_dsm = generate(dsm_model, dsm_model.run_info, 2000, sampler="langevin", seed=0)
    x_ncsn = generate(ncsn_model, ncsn_model.run_info, 2000, sampler="annealed", seed=0)
    m_dsm, m_ncsn = mmd(x_dsm, held_out), mmd(x_ncsn, held_out)
    assert m_ncsn < 0.5 * m_dsm, (m_ncsn, m_dsm)


# ----------------------------------------------------------------------------- (c) digits


@pytest.fixture(scope="module")
def digit_classifier() -> LogisticRegression:
    x, y = load_digits()
    return LogisticRegression(max_iter=2000).fit(x.flatten(1).numpy(), y.numpy())


def _confidence(clf: LogisticRegression, images: np.ndarray | torch.Tensor) -> tuple[float, float, np.ndarray]:
    """(fraction with max class probability > 0.9, mean max probability, label histogram) under
    logistic regression fitted on the real digits."""
    prob = clf.predict_proba(np.asarray(images, dtype=np.float64).reshape(len(images), -1))
    top = prob.max(1)
    return float((top > 0.9).mean()), float(top.mean()), np.bincount(prob.argmax(1), minlength=10)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """400 steps of ncsn on digits with the two-resolution NCSN U-Net (--model unet), narrow for speed."""
    run = tmp_path_factory.mktemp("ncsn_digits") / "run"
    scorematch.train(out=run, data="digits", objective="ncsn", model="unet", steps=400, batch_size=64,
                     base_channels=16, lr=2e-3, seed=0, checkpoint_every=400, **CPU)
    return run


@pytest.mark.slow
def test_digits_cli_samples_beat_noise_under_a_digit_classifier(digits_run, digit_classifier, tmp_path):
    """`scorematch sample RUN --sampler annealed` writes (N, 1, 8, 8) samples in [0, 1] and a PNG
    grid; a classifier fitted on the real digits is more confident on them than on uniform-noise
    images, and labels them with every class. Measured (seeds 0, 1 of the sampler): confident
    fraction 0.165 / 0.195, mean max probability 0.67 / 0.68; uniform noise 0.09 / 0.57, with
    45% of the noise images labelled 4."""
    assert json.loads((digits_run / "run.json").read_text())["model"]["name"] == "NCSNUNet"
    out = tmp_path / "digits.npz"
    assert cli_main(["sample", str(digits_run), "--sampler", "annealed", "--n", "200", "--seed", "0",
                     "--out", str(out)]) == 0
    samples = np.load(out)["samples"]
    assert samples.shape == (200, 1, 8, 8)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    with Image.open(out.with_suffix(".png")) as png:
        assert min(png.size) > 8 * 10

    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    conf_s, mean_s, hist_s = _confidence(digit_classifier, samples)
    conf_n, mean_n, hist_n = _confidence(digit_classifier, noise)
    assert mean_s > mean_n + 0.04, (mean_s, mean_n)
    assert conf_s > conf_n, (conf_s, conf_n)
    assert (hist_s > 0).all(), hist_s
    assert hist_s.max() < hist_n.max(), (hist_s, hist_n)
    assert not (digits_run / "samples").exists()  # sample_every defaults to 0: no grids


# ----------------------------------------------------------------------------- run mechanics


@pytest.fixture(scope="module")
def tiny_digits_run(tmp_path_factory):
    """20 steps of ncsn on digits with periodic sample grids; for the run-folder checks."""
    run = tmp_path_factory.mktemp("ncsn_tiny") / "run"
    result = scorematch.train(out=run, data="digits", objective="ncsn", model="unet", steps=20, batch_size=16,
                              base_channels=8, log_every=5, sample_every=10, seed=0,
                              checkpoint_every=20, **CPU)
    return run, result


def test_loss_csv_has_one_column_per_noise_level(tiny_digits_run):
    run, _ = tiny_digits_run
    n_levels = len(json.loads((run / "run.json").read_text())["schedule"]["sigmas"])
    assert n_levels > 10  # NCSNv2's rule for D = 64
    with (run / "loss.csv").open() as f:
        rows = list(csv.DictReader(f))
    level_cols = [f"loss_level_{i + 1}" for i in range(n_levels)]
    assert list(rows[0])[-n_levels:] == level_cols
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    values = np.array([[float(r[c]) for c in level_cols] for r in rows])
    seen = np.isfinite(values)  # a level no row of the window drew reads nan
    assert seen.any(1).all() and seen.any(0).all()
    assert (values[seen] > 0).all()
    assert np.isnan(values[~seen]).all()


def test_ema_is_on_by_default_and_differs_from_raw_weights(tiny_digits_run):
    run, result = tiny_digits_run
    assert 0 < TrainConfig().ema_decay < 1
    assert json.loads((run / "config.json").read_text())["ema_decay"] == TrainConfig().ema_decay
    ema, raw = scorematch.load(run), scorematch.load(run, ema=False)
    ema_p, raw_p = dict(ema.named_parameters()), dict(raw.named_parameters())
    assert ema_p.keys() == raw_p.keys()
    diff = max(float((ema_p[k] - raw_p[k]).detach().abs().max()) for k in ema_p)
    assert diff > 1e-4
    returned = dict(result.model.named_parameters())  # train returns the EMA model
    assert all(torch.equal(returned[k].cpu(), ema_p[k]) for k in ema_p)


def test_sample_grids_are_written_every_sample_every_steps(tiny_digits_run):
    run, _ = tiny_digits_run
    grids = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert grids == ["step_00000010.png", "step_00000020.png"]
    with Image.open(run / "samples" / grids[-1]) as im:
        # 6 x 6 grid of 8 x 8 images with padding 2 (62 px), each pixel an 11 x 11 block (images >= 84 px)
        assert im.size == (11 * (6 * 10 + 2), 11 * (6 * 10 + 2))
        pixels = np.asarray(im)
    assert pixels.std() > 0
