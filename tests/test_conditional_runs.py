"""Class-conditional runs, guidance and inpainting through the run layer and the command line.

Image folders with one sub-folder per class give labels and class names; ``train
--class-conditional`` builds the model with n_classes, carries the labels with the batch rows
(also on one process's share of a DDP batch), drops them at the ``--label-dropout`` rate and
records the class names in run.json; ``sample --label K --guidance W`` samples one class, and a
digits model sampled so is classified as K by a classifier trained on the real digits (slow);
``sample --inpaint FILE.npz`` fills in images given their upper half. Every misuse, from wrong
flags to a hostile inpainting file, is one line on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image

from scorematch.cli import main
from scorematch.data import load_digits, load_image_folder, resolve_data
from scorematch.run.build.parts import make_loss
from scorematch.run.folder.config import TrainConfig
from scorematch.run.system.distributed import DistContext, shard
from scorematch.run.training.loop import _batch, setup


def write_classes(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    """PNG images in one sub-folder per class; class k's images have mean brightness about (k + 1) / 4."""
    rng = np.random.default_rng(0)
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(rng.normal((k + 1) / 4, 0.1, (size, size)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(root / name / f"{i:03d}.png")
    return root


# ------------------------------------------------------------------------------ labelled data


def test_an_image_folder_with_one_sub_folder_per_class_has_labels(tmp_path):
    root = write_classes(tmp_path / "pets", {"dogs": 2, "cats": 3})
    x, labels, classes = load_image_folder(root, labels=True)
    assert classes == ["cats", "dogs"] and labels.tolist() == [0, 0, 0, 1, 1]
    assert x.shape == (5, 1, 8, 8) and float(x[:3].mean()) > float(x[3:].mean())  # dogs were written darker
    assert torch.equal(load_image_folder(root), x)
    ds = resolve_data(f"images:{root}")
    assert ds.classes == ("cats", "dogs") and ds.labels.tolist() == [0, 0, 0, 1, 1]
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "loose.png")
    assert load_image_folder(root, labels=True)[1:] == (None, None)
    assert resolve_data(f"images:{root}").labels is None
    digits = resolve_data("digits")
    assert digits.classes == tuple("0123456789") and digits.labels.shape == (1797,)


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    return write_classes(tmp_path_factory.mktemp("data") / "pets", {"cats": 12, "dogs": 12})


@pytest.mark.parametrize("objective,model", [("ncsn", "unet"), ("sde", "time_unet"), ("edm", "time_unet"),
                                             ("edm", "time_mlp")])
def test_a_class_conditional_run_builds_the_model_with_the_classes(pets, objective, model, tmp_path, capsys):
    out = tmp_path / "r"
    arch = ["--base-channels", "8"] if model.endswith("unet") else ["--hidden", "16", "--depth", "1"]
    rc, _, err = run_cli(["train", "--data", f"images:{pets}", "--objective", objective, "--model", model, *arch,
                          "--class-conditional", "--steps", "3", "--batch-size", "8", "--out", out,
                          "--no-progress"], capsys)
    assert rc == 0, err
    info = json.loads((out / "run.json").read_text())
    cfg = info["model"]["config"]
    assert info["data"]["classes"] == ["cats", "dogs"]
    assert cfg.get("net_config", cfg)["n_classes"] == 2
    assert json.loads((out / "config.json").read_text())["class_conditional"] is True
    for label in ("dogs", "1", "0"):
        rc, _, err = run_cli(["sample", out, "--label", label, "--guidance", "0.5", "--n", 4, "--sampler", "heun",
                              "--n-steps", 3, "--out", tmp_path / f"{label}.npz", "--no-progress"], capsys)
        assert rc == 0, err
        x = np.load(tmp_path / f"{label}.npz")["samples"]
        assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all() and (tmp_path / f"{label}.png").exists()


def test_unlabelled_data_and_unconditional_objectives_are_refused(pets, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8), mode="L").save(flat / f"{i}.png")
    one = write_classes(tmp_path / "one", {"only": 4})
    base = ["train", "--steps", "2", "--no-progress", "--batch-size", "4"]
    for args, needle in [(["--data", "gmm2d", "--objective", "edm"], "'gmm2d' has no labels"),
                         (["--data", f"images:{flat}", "--objective", "ncsn"], "sub-folder per class"),
                         (["--data", f"images:{one}", "--objective", "ncsn"], "at least two classes"),
                         (["--data", "digits", "--objective", "dsm"], "objective 'dsm' trains an unconditional"),
                         (["--data", "digits", "--objective", "ncsn", "--conditioning", "divide"], "embedding"),
                         (["--data", "digits", "--objective", "ncsn", "--label-dropout", "1"], "label_dropout")]:
        out = tmp_path / "r"
        rc, _, err = run_cli([*base, *args, "--class-conditional", "--out", out], capsys)
        assert_one_line_error(rc, err, needle)
        assert not (out / "run.json").exists()
    rc, _, err = run_cli([*base, "--data", "digits", "--objective", "ncsn", "--label-dropout", "0.2", "--out",
                          tmp_path / "r"], capsys)
    assert_one_line_error(rc, err, "--label-dropout only applies to a class-conditional run")


def test_labels_follow_their_rows_on_every_process_and_are_dropped_at_the_set_rate(tmp_path):
    cfg = TrainConfig(data="digits", objective="edm", model="time_mlp", hidden=16, depth=1, class_conditional=True,
                      label_dropout=0.25, batch_size=64, progress=False)
    run = setup(cfg, tmp_path / "r", False, DistContext(), torch.device("cpu"))
    assert run.y_all is not None and run.model.n_classes == 10 and run.model.null_label == 10
    run.rows = shard(64, DistContext(rank=1, world_size=2))  # the second process's half of the batch
    xb, yb = _batch(run)
    assert xb.shape == (32, 64) and yb.shape == (32,)
    flat = run.x_all.flatten(1)
    for x, y in zip(xb, yb, strict=True):
        rows = (flat == x).all(1).nonzero()[:, 0]
        assert len(rows) and bool((run.y_all[rows] == y).any())
    seen = []

    def model(x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append(labels)
        return torch.zeros_like(x)

    loss = make_loss(cfg, run.ds, run.schedule, torch.device("cpu"))
    y = torch.arange(20000) % 10
    loss(model, torch.zeros(20000, 64), torch.Generator().manual_seed(0), y)
    null = seen[0] == 10
    assert abs(float(null.double().mean()) - 0.25) < 0.01  # 3 standard deviations: 0.009
    assert torch.equal(seen[0][~null], y[~null])


def test_a_users_model_must_take_the_classes(tmp_path):
    from scorematch.errors import ConfigError
    from scorematch.models.images import NCSNUNet
    from scorematch.run.training.loop import train

    kw = dict(data="digits", objective="ncsn", class_conditional=True, steps=1, batch_size=8, progress=False)
    with pytest.raises(ConfigError, match="n_classes = 10.*it has n_classes = 0"):
        train(model=NCSNUNet(channels=1, base=8), out=tmp_path / "a", **kw)
    result = train(model=NCSNUNet(channels=1, base=8, n_classes=10), out=tmp_path / "b", **kw)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["data"]["classes"] == list("0123456789")
    assert result.model.n_classes == 10


def test_a_resumed_class_conditional_run_reproduces_the_uninterrupted_one(tmp_path):
    from safetensors.torch import load_file

    from scorematch.run.training.loop import train

    kw = dict(data="digits", objective="edm", model="time_mlp", hidden=16, depth=1, class_conditional=True,
              batch_size=32, progress=False, checkpoint_every=10)
    train(out=tmp_path / "a", steps=20, **kw)
    train(out=tmp_path / "b", steps=10, **kw)
    train(resume=tmp_path / "b", steps=20)
    a, b = load_file(tmp_path / "a" / "weights.safetensors"), load_file(tmp_path / "b" / "weights.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ sampling a class


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A class-conditional EDM MLP on the flattened 8x8 digits: TimeMLP 64 x 3, 400 steps at batch 128,
    lr 3e-3 (1.5 to 2.7 s of CPU)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", "--data", "digits", "--objective", "edm", "--model", "time_mlp", "--hidden", "64",
                 "--class-conditional", "--steps", "400", "--batch-size", "128", "--lr", "3e-3", "--seed", "0",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("args,needle", [
    (["--label", "abc"], "class index 0..9, a class name (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) or null"),
    (["--label", "1.5"], "class index"),
    (["--label", "10"], "out of range"),
    (["--label", "-1"], "out of range"),
    (["--label", ""], "class index"),
    (["--label", "3", "--guidance", "-1"], "--guidance must be a finite number >= 0"),
    (["--label", "3", "--guidance", "nan"], "--guidance"),
    (["--label", "3", "--guidance", "inf"], "--guidance"),
    (["--label", "null", "--guidance", "2"], "drop --guidance"),
    (["--label", "3", "--sampler", "heun", "--eta", "1"], "--eta"),
])
def test_wrong_labels_and_guidance_are_refused_in_one_line(digits_run, args, needle, tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", digits_run, *args, "--n", 4, "--out", out], capsys)
    assert_one_line_error(rc, err, needle)
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_a_label_is_refused_on_an_unconditional_run(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--objective", "edm", "--steps", "2", "--n-data", "100", "--hidden", "8", "--depth", "1",
                 "--out", str(run), "--no-progress"]) == 0
    rc, _, err = run_cli(["sample", run, "--label", "0", "--out", tmp_path / "s.npz"], capsys)
    assert_one_line_error(rc, err, "not class-conditional")
    rc, _, err = run_cli(["sample", run, "--guidance", "1", "--out", tmp_path / "s.npz"], capsys)
    assert_one_line_error(rc, err, "--guidance applies to class-conditional runs")
    assert not (tmp_path / "s.npz").exists()


def test_a_conditional_run_without_a_label_samples_the_data_class_shares(digits_run, tmp_path, capsys):
    """run.json records p(y) (the class shares of the 1438 training digits); without --label each
    sample's class is drawn from it by its own stream: over 4000 draws the counts pass a chi-square
    test against p(y) (9 degrees of freedom, 99.9% quantile 27.9), and the first rows do not depend
    on --n; --label null and --guidance without a label sample too."""
    from scorematch._random import RowGenerators
    from scorematch.run.sampling.generate import mixture_labels

    prior = json.loads((digits_run / "run.json").read_text())["data"]["class_prior"]
    _, y = load_digits()
    assert prior == pytest.approx((torch.bincount(y, minlength=10).double() / len(y)).tolist(), abs=0.02)
    counts = torch.tensor(prior, dtype=torch.float64) * 1438
    assert float((counts - counts.round()).abs().max()) < 1e-9 and float(counts.sum()) == pytest.approx(1438)
    drawn = mixture_labels(prior, RowGenerators.from_seed(3, 4000))
    expected = torch.tensor(prior, dtype=torch.float64) * 4000
    chi2 = float(((torch.bincount(drawn, minlength=10) - expected) ** 2 / expected).sum())
    assert chi2 < 27.9
    assert torch.equal(mixture_labels(prior, RowGenerators.from_seed(3, 7)), drawn[:7])
    skewed = mixture_labels([0.0, 0.0, 1.0, *[0.0] * 7], RowGenerators.from_seed(0, 50))
    assert skewed.tolist() == [2] * 50
    for i, args in enumerate(([], ["--label", "null"], ["--guidance", "0.5"])):
        out = tmp_path / f"s{i}.npz"
        rc, _, err = run_cli(["sample", digits_run, *args, "--n", 6, "--seed", 1, "--out", out, "--no-progress"],
                             capsys)
        assert rc == 0, err
        assert np.isfinite(np.load(out)["samples"]).all()


def test_a_bad_class_prior_in_run_json_is_refused_in_one_line(digits_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    info = json.loads((run / "run.json").read_text())
    info["data"]["class_prior"] = [0.5] * 10
    (run / "run.json").write_text(json.dumps(info))
    rc, _, err = run_cli(["sample", run, "--n", 2, "--out", tmp_path / "s.npz"], capsys)
    assert_one_line_error(rc, err, "class_prior")


def test_the_image_unet_is_class_conditional_by_default_on_labelled_images(pets, tmp_path, capsys):
    for flags, conditional in (([], True), (["--no-class-conditional"], False)):
        out = tmp_path / f"r{len(flags)}"
        rc, _, err = run_cli(["train", "--data", f"images:{pets}", "--objective", "edm", *flags, "--steps", "2",
                              "--batch-size", "8", "--precision", "fp32", "--out", out, "--no-progress"], capsys)
        assert rc == 0, err
        assert json.loads((out / "config.json").read_text())["class_conditional"] is conditional
        assert ("class_prior" in json.loads((out / "run.json").read_text())["data"]) is conditional


@pytest.mark.slow
def test_guided_samples_of_a_class_are_classified_as_that_class(digits_run, tmp_path, capsys):
    """At the default guidance (w = 1) and the default sampler (DPM-Solver++(2M), 20 levels) at
    least 80% of the samples of label K are classified as K by a logistic regression on the real
    digits (measured: 0.978 to 0.988 over 3 seeds of this run, 40 samples per class; Heun with 18
    levels the same; the classifier: 0.92 on held-out real digits)."""
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits()
    clf = LogisticRegression(max_iter=2000).fit(x.flatten(1).numpy(), y.numpy())
    right = []
    for k in range(10):
        out = tmp_path / f"{k}.npz"
        rc, _, err = run_cli(["sample", digits_run, "--label", k, "--n", 40, "--seed", k, "--out", out,
                              "--no-progress"], capsys)
        assert rc == 0, err
        assert "sampler dpm_solver" in err
        right.append(clf.predict(np.load(out)["samples"].reshape(40, -1)) == k)
    assert float(np.mean(right)) >= 0.8


# ------------------------------------------------------------------------------ inpainting


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_inpainting_fills_the_lower_half_of_digits_and_keeps_the_upper(digits_run, tmp_path, capsys):
    x, y = load_digits()
    mask = np.zeros((1, 8, 8), bool)
    mask[:, :4] = True
    src = npz(tmp_path / "in.npz", x=x[:6].numpy(), mask=mask)
    for method in ("smc", "replace", "repaint"):
        out = tmp_path / f"{method}.npz"
        extra = ["--particles", 4] if method == "smc" else ["--resample", 2] if method == "repaint" else []
        rc, text, err = run_cli(["sample", digits_run, "--inpaint", src, "--inpaint-method", method, "--n-steps", 8,
                                 *extra, "--label", 3, "--out", out, "--no-progress"], capsys)
        assert rc == 0, err
        filled = np.load(out)["samples"]
        assert filled.shape == (6, 1, 8, 8) and (filled >= 0).all() and (filled <= 1).all()
        assert np.array_equal(filled[:, :, :4], x[:6, :, :4].numpy())
        assert not np.array_equal(filled[:, :, 4:], x[:6, :, 4:].numpy())
        assert (tmp_path / f"{method}.png").exists() and "(6, 1, 8, 8)" in text


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing.npz", "does not exist"),
    (lambda d: write(d / "empty.npz", b""), "not a NumPy .npz file"),
    (lambda d: write(d / "junk.npz", os.urandom(300)), "not a NumPy .npz file"),
    (lambda d: write(d / "cut.npz", npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.ones(2)).read_bytes()[:200]),
     "not a NumPy .npz file"),
    (lambda d: (np.save(d / "one.npy", np.zeros((2, 2))), d / "one.npy")[1], "single array"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2))), "exactly the arrays x and mask"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.ones(2), y=np.ones(1)), "it holds mask, x, y"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 3)), mask=np.ones(3)), "x must have shape (n, 2)"),
    (lambda d: npz(d / "a.npz", x=np.zeros(2), mask=np.ones(2)), "x must have shape (n, 2)"),
    (lambda d: npz(d / "a.npz", x=np.zeros((0, 2)), mask=np.ones(2)), "no rows"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.ones(3)), "does not fit x"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.ones((2, 2))), "does not fit x"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.full(2, 0.5)), "mask must be boolean"),
    (lambda d: npz(d / "a.npz", x=np.zeros((3, 2)), mask=np.array([2, 0])), "mask must be boolean"),
    (lambda d: npz(d / "a.npz", x=np.array([[np.nan, 0.0]]), mask=np.array([True, False])), "NaN or inf"),
    (lambda d: npz(d / "a.npz", x=np.array([[np.inf, 0.0]]), mask=np.array([1, 0])), "NaN or inf"),
    (lambda d: npz(d / "a.npz", x=np.array([["a", "b"]]), mask=np.ones(2)), "must hold numbers"),
    (lambda d: npz(d / "a.npz", x=np.zeros((1, 2), complex), mask=np.ones(2)), "must hold numbers"),
    (lambda d: npz(d / "a.npz", x=np.array([[0, 1]], dtype=object), mask=np.ones(2)), "cannot be read"),
    (lambda d: (d / "loop.npz").symlink_to(d / "nowhere.npz") or d / "loop.npz", "is a link to nothing"),
    (lambda d: d, "is a folder"),
])
def test_a_bad_inpainting_file_is_refused_in_one_line(make, needle, tmp_path, capsys, vector_run):
    src = make(tmp_path)
    out = tmp_path / "out" / "s.npz"
    out.parent.mkdir()
    rc, _, err = run_cli(["sample", vector_run, "--inpaint", src, "--out", out, "--no-progress"], capsys)
    assert_one_line_error(rc, err, needle)
    assert list(out.parent.iterdir()) == []


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vec") / "run"
    assert main(["train", "--objective", "edm", "--steps", "20", "--n-data", "200", "--hidden", "8", "--depth", "1",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_a_symlink_to_a_good_file_and_integer_masks_are_accepted(vector_run, tmp_path, capsys):
    good = npz(tmp_path / "good.npz", x=np.array([[1.0, np.nan], [np.nan, -2.0]]), mask=np.array([[1, 0], [0, 1]]))
    (tmp_path / "link.npz").symlink_to(good)
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", vector_run, "--inpaint", tmp_path / "link.npz", "--inpaint-method", "replace",
                          "--n-steps", 4, "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    filled = np.load(out)["samples"]
    assert filled[0, 0] == 1.0 and filled[1, 1] == -2.0 and np.isfinite(filled).all()


def test_images_out_of_range_are_refused(digits_run, tmp_path, capsys):
    x = load_digits()[0][:2].numpy() * 16
    rc, _, err = run_cli(["sample", digits_run, "--inpaint", npz(tmp_path / "a.npz", x=x, mask=np.ones((8, 8))),
                          "--out", tmp_path / "s.npz"], capsys)
    assert_one_line_error(rc, err, "divide 8-bit images by 255")


@pytest.mark.parametrize("args,needle", [
    (["--inpaint-method", "smc", "--sampler", "heun"], "--sampler heun does not apply to --inpaint-method smc"),
    (["--inpaint-method", "replace", "--sampler", "pc"], "denoising sampler"),
    (["--inpaint-method", "replace", "--particles", "8"], "--particles only applies"),
    (["--inpaint-method", "smc", "--resample", "3"], "--resample only applies"),
    (["--inpaint-method", "repaint", "--resample", "1"], "resample"),
    (["--inpaint-method", "smc", "--eta", "1"], "--eta does not apply to --inpaint-method smc"),
    (["--inpaint-method", "smc", "--particles", "1"], "particles"),
    (["--n", "5"], "--n does not apply with --inpaint"),
])
def test_inpainting_flags_that_do_not_fit_are_refused_in_one_line(vector_run, args, needle, tmp_path, capsys):
    src = npz(tmp_path / "in.npz", x=np.zeros((2, 2)), mask=np.array([True, False]))
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", vector_run, "--inpaint", src, *args, "--out", out, "--no-progress"], capsys)
    assert_one_line_error(rc, err, needle)
    assert not out.exists()


def test_inpainting_flags_need_inpaint_and_a_conditional_model(tmp_path, capsys):
    rc, _, err = run_cli(["sample", tmp_path, "--particles", 4], capsys)
    assert_one_line_error(rc, err, "only applies with --inpaint")
    run = tmp_path / "dsm"
    assert main(["train", "--steps", "2", "--n-data", "100", "--hidden", "8", "--depth", "1", "--out", str(run),
                 "--no-progress"]) == 0
    src = npz(tmp_path / "in.npz", x=np.zeros((2, 2)), mask=np.array([True, False]))
    rc, _, err = run_cli(["sample", run, "--inpaint", src, "--out", tmp_path / "s.npz"], capsys)
    assert_one_line_error(rc, err, "unconditional")
    assert not (tmp_path / "s.npz").exists()
