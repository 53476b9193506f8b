"""The command line: help texts, train/sample/eval/plot on a small run, resume, one-line errors
with exit code 2 that leave nothing half-written, and SIGTERM during training.

Most tests call ``scorematch.cli.main`` in-process (no interpreter start-up); a few run
``python -m scorematch`` in a subprocess to check the real entry point and signal handling.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import scorematch
from scorematch.cli import TRAIN_HELP, main
from scorematch.distributions import toy
from scorematch.metrics import fisher_divergence

SMALL = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "64", "--hidden", "32", "--depth", "2",
         "--n-data", "1000", "--device", "cpu", "--seed", "3", "--no-progress"]
API_SMALL = dict(data="gmm2d", objective="dsm", batch_size=64, hidden=32, depth=2, n_data=1000,
                 device="cpu", seed=3, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A dsm run on gmm2d, 200 steps: Fisher divergence 0.33 measured (untrained: 1.33-1.39)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--steps", "200", "--lr", "3e-3", "--out", str(out)]) == 0
    return out


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


# --------------------------------------------------------------------------------------------
# help


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_python_m_scorematch_help():
    p = subprocess.run([sys.executable, "-m", "scorematch", "--help"], capture_output=True, text=True,
                       env=subprocess_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: scorematch")
    for command in ("train", "sample", "eval", "plot"):
        assert command in p.stdout


SUBCOMMAND_FLAGS = {
    "train": ["--out", "--resume", "--config", "--no-progress", *(flag(n) for n in TRAIN_HELP)],
    "sample": ["--sampler", "--n", "--seed", "--out", "--n-steps", "--step-size", "--eps",
               "--steps-per-sigma", "--snr"],
    "eval": ["--n", "--seed", "--sampler", "--likelihood", "--json", "--n-steps", "--step-size", "--eps"],
    "plot": ["--out", "--n", "--seed"],
}


@pytest.mark.parametrize("argv", [[], *([c] for c in SUBCOMMAND_FLAGS)], ids=lambda a: " ".join(a) or "top")
def test_help_exits_zero_and_lists_flags(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: scorematch")
    if not argv:
        for command in SUBCOMMAND_FLAGS:
            assert command in out
        return
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", out))
    missing = [f for f in SUBCOMMAND_FLAGS[argv[0]] if f not in flags]
    assert not missing, f"{argv[0]} --help lacks {missing}"


def test_train_help_covers_every_exposed_config_field(capsys, monkeypatch):
    """TRAIN_HELP names TrainConfig fields only, and every one of them has its flag and text."""
    import dataclasses

    from scorematch.run.folder.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_HELP) <= fields
    assert fields - set(TRAIN_HELP) == {"progress", "schedule", "version", "format", "history"}
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, text in TRAIN_HELP.items():
        assert flag(name) in out
        assert " ".join(text.split())[:30] in out


# --------------------------------------------------------------------------------------------
# train / sample / eval / plot on a run


def test_train_writes_run_and_reports(run):
    assert (run / "config.json").exists() and (run / "weights.safetensors").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["steps"], cfg["lr"], cfg["hidden"], cfg["progress"]) == (200, 3e-3, 32, False)
    fd = fisher_divergence(scorematch.load(run), toy("gmm2d"), 4000, torch.Generator().manual_seed(0))
    assert fd < 0.7  # measured 0.335 (untrained 1.33-1.39)


def test_sample_writes_npz_and_is_reproducible(run, tmp_path, capsys):
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    rc, out, _ = run_cli(["sample", run, "--n", "50", "--seed", "3", "--out", a], capsys)
    assert rc == 0 and f"wrote {a} (samples: (50, 2))" in out
    assert run_cli(["sample", run, "--n", "50", "--seed", "3", "--out", b], capsys)[0] == 0
    assert run_cli(["sample", run, "--n", "50", "--seed", "4", "--out", c], capsys)[0] == 0
    with np.load(a) as fa, np.load(b) as fb, np.load(c) as fc:
        assert fa.files == ["samples", "row_index", "seed", "score_evaluations"]
        assert int(fa["score_evaluations"]) == 1000  # langevin's default steps, one evaluation each
        xa, xb, xc = fa["samples"], fb["samples"], fc["samples"]
    assert xa.shape == (50, 2) and xa.dtype == np.float32
    assert np.isfinite(xa).all()
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xc)
    # Langevin from the data box lands on the mixture: median distance to the nearest mode
    # measured 1.28 (true samples: 1.13; the uniform starting box: 3.1)
    modes = np.array([[2.0, 2.0], [-2.0, -2.0]])
    dist = np.linalg.norm(xa[:, None, :] - modes[None], axis=2).min(1)
    assert np.median(dist) < 2.0


def test_eval_json(run, capsys):
    rc, out, _ = run_cli(["eval", run, "--json", "--n", "300", "--seed", "1"], capsys)
    assert rc == 0
    res = json.loads(out)
    for key in ("fisher_divergence", "mmd", "sliced_wasserstein"):
        assert isinstance(res[key], float) and np.isfinite(res[key]), key
    assert res["n_samples"] == 300 and res["sampler"] == "langevin" and res["nonfinite_samples"] == 0
    # the reported Fisher divergence is the metric on the loaded model with the same seed
    expected = fisher_divergence(scorematch.load(run), toy("gmm2d"), 300, torch.Generator().manual_seed(1))
    assert res["fisher_divergence"] == pytest.approx(expected, rel=1e-6)
    assert 0 < res["fisher_divergence"] < 0.7  # ~0.33, see the run fixture
    assert 0 < res["sliced_wasserstein"] < 1.5 and res["mmd"] < 0.05  # measured 0.43 and 0.0025
    assert json.loads((run / "eval.json").read_text()) == res


def test_plot_writes_nonblank_pngs(run, tmp_path, capsys):
    """The figures run_figures lists for a 2-D run with a closed form, written by the CLI."""
    folder = tmp_path / "plots"
    rc, out, _ = run_cli(["plot", run, "--n", "200", "--out", folder], capsys)
    assert rc == 0
    written = [Path(line.removeprefix("wrote ")) for line in out.splitlines() if line.startswith("wrote ")]
    names = sorted(p.name for p in written)
    assert names == ["density.png", "loss.png", "samples.png", "score_field.png", "trajectory.png"]
    assert sorted(p.name for p in folder.iterdir() if p.name != ".scorematch-output") == names
    for p in written:
        with Image.open(p) as im:
            im.load()
            assert im.format == "PNG"
            px = np.asarray(im.convert("RGB"), dtype=np.float64)
        assert px.shape[0] > 100 and px.shape[1] > 100
        assert px.std() > 10, f"{p.name} looks blank"
        assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20, f"{p.name} has almost no colours"


# --------------------------------------------------------------------------------------------
# resume through the CLI


def test_cli_resume_matches_uninterrupted_run(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    scorematch.train(steps=40, checkpoint_every=20, out=whole, **API_SMALL)
    assert run_cli(["train", *SMALL, "--steps", "20", "--checkpoint-every", "20", "--out", split], capsys)[0] == 0
    rc, out, _ = run_cli(["train", "--resume", split, "--steps", "40", "--no-progress"], capsys)
    assert rc == 0 and "steps: 40" in out
    wa, wb = load_file(whole / "weights.safetensors"), load_file(split / "weights.safetensors")
    assert sorted(wa) == sorted(wb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # only steps, lr, grad-clip, the non-finite rules and the cadences may change on resume
    rc, _, err = run_cli(["train", "--resume", split, "--steps", "60", "--hidden", "32"], capsys)
    assert_one_line_error(rc, err, "--hidden cannot change when resuming")


# --------------------------------------------------------------------------------------------
# bad input: exit code 2, one line naming the problem, no run folder left behind


def write_bad_inputs(d: Path) -> None:
    a = np.random.default_rng(0).standard_normal((50, 2))
    a[3, 1] = np.nan
    np.save(d / "nan.npy", a)
    b = np.random.default_rng(1).standard_normal((50, 2))
    b[4, 0] = np.inf
    np.savetxt(d / "inf.csv", b, delimiter=",")
    np.save(d / "cube.npy", np.zeros((10, 2, 2), dtype=np.float32))
    (d / "empty.csv").write_text("")
    np.save(d / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    (d / "header.csv").write_text("x,y\n1,2\n3,4\n")
    (d / "unknown_key.json").write_text(json.dumps({"data": "gmm2d", "learning_rate": 0.1}))
    (d / "newer.json").write_text(json.dumps({"data": "gmm2d", "format": 99, "version": "9.0"}))
    (d / "newer_with_new_key.json").write_text(
        json.dumps({"data": "gmm2d", "format": 99, "version": "9.0", "new_field": 1}))


BAD_TRAIN = {
    "nan": (["--data", "{d}/nan.npy"], ["nan.npy", "non-finite", "1 NaN", "row 3"]),
    "inf": (["--data", "{d}/inf.csv"], ["inf.csv", "non-finite", "1 inf", "line 5"]),
    "3-D array": (["--data", "{d}/cube.npy"], ["cube.npy", "shape (10, 2, 2)", "expected (n, D)"]),
    "empty file": (["--data", "{d}/empty.csv"], ["empty.csv", "empty"]),
    "zero rows": (["--data", "{d}/empty.npy"], ["empty.npy", "zero rows"]),
    "csv header": (["--data", "{d}/header.csv", "--csv-header", "no"], ["header.csv", "header", "'x'",
                                                                      "--csv-header yes"]),
    "missing file": (["--data", "{d}/nowhere.npy"], ["nowhere.npy", "no such file"]),
    "unknown toy": (["--data", "gmm3d"], ["unknown data spec 'gmm3d'", "did you mean 'gmm2d'",
                                           "gmm2d, gmm1d, imbalanced, 8gaussians, moons"]),
    "unknown objective": (["--objective", "hyvarinen"],
                          ["unknown objective 'hyvarinen'", "esm, esm_kde, ism, ssm, ssm_vr, dsm, ncsn, sde"]),
    "sigma 0": (["--sigma", "0"], ["sigma must be a positive"]),
    "sigma negative": (["--sigma", "-0.5"], ["sigma must be a positive", "-0.5"]),
    "bandwidth 0": (["--objective", "esm_kde", "--bandwidth", "0"], ["bandwidth must be a positive"]),
    "lr 0": (["--lr", "0"], ["lr must be a positive"]),
    "lr negative": (["--lr=-1e-3"], ["lr must be a positive"]),
    "steps negative": (["--steps", "-5"], ["steps must be an integer >="]),
    "esm without analytic score": (["--objective", "esm", "--data", "moons"],
                                   ["'esm' needs the analytic score", "'moons' has none", "esm_kde"]),
    "unet on vectors": (["--model", "unet"], ["'unet' is for images", "vector data of shape (2,)",
                                              "--model auto"]),
    "ncsn_mlp for dsm": (["--model", "ncsn_mlp"], ["sigma-conditioned", "none-conditioned model"]),
    "unknown model": (["--model", "transformer"], ["unknown model 'transformer'", "mlp, energy"]),
    "config unknown key": (["--config", "{d}/unknown_key.json"],
                           ["unknown config key(s) 'learning_rate'", "valid keys:", "lr"]),
    "config newer format": (["--config", "{d}/newer.json"], ["config format 99", "upgrade scorematch"]),
    "config newer format, new key": (["--config", "{d}/newer_with_new_key.json"],
                                     ["config format 99", "upgrade scorematch"]),
    "config missing": (["--config", "{d}/nope.json"], ["no config at"]),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input_is_one_line_error_and_writes_nothing(case, tmp_path, capsys):
    write_bad_inputs(tmp_path)
    args, needles = BAD_TRAIN[case]
    out = tmp_path / "out"
    argv = ["train", "--steps", "5", "--no-progress", "--device", "cpu", "--out", str(out),
            *(a.format(d=tmp_path) for a in args)]
    rc, _, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, *(n.format(d=tmp_path) for n in needles))
    assert not out.exists()


@pytest.mark.slow
def test_bad_input_through_python_m(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "scorematch", "train", "--data", "gmm3d", "--steps", "5",
                        "--out", str(out)], capture_output=True, text=True, env=subprocess_env(),
                       timeout=300)
    assert_one_line_error(p.returncode, p.stderr, "unknown data spec 'gmm3d'", "valid: gmm2d")
    assert p.stdout == ""
    assert not out.exists()


def test_out_already_holding_a_run_is_refused(run, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    rc, _, err = run_cli(["train", *SMALL, "--steps", "5", "--out", run], capsys)
    assert_one_line_error(rc, err, "already holds a run", "--resume")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.mark.parametrize("command", ["sample", "eval", "plot"])
def test_missing_run_folder(command, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    rc, _, err = run_cli([command, missing], capsys)
    assert_one_line_error(rc, err, f"run folder {missing} does not exist")
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sample", "eval", "plot"])
def test_folder_that_is_not_a_run(command, tmp_path, capsys):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    rc, _, err = run_cli([command, folder], capsys)
    assert_one_line_error(rc, err, "no config at", "scorematch run folder")
    assert list(folder.iterdir()) == []


def test_annealed_sampler_on_unconditional_model(run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", run, "--sampler", "annealed", "--n", "10", "--out", out], capsys)
    assert_one_line_error(rc, err, "sampler 'annealed' is for noise-conditional NCSN models",
                          "unconditional", "--sampler langevin")
    assert not out.exists()
    rc, _, err = run_cli(["sample", run, "--sampler", "mala", "--n", "10", "--out", out], capsys)
    assert_one_line_error(rc, err, "sampler 'mala' is for energy models", "--sampler langevin")
    rc, _, err = run_cli(["sample", run, "--sampler", "gibbs", "--n", "10", "--out", out], capsys)
    assert_one_line_error(rc, err, "unknown sampler 'gibbs'", "langevin")
    assert not out.exists()


@pytest.mark.parametrize("edit, needles", [
    ({"learning_rate": 0.1}, ["unknown config key(s) 'learning_rate'"]),
    ({"format": 99, "version": "9.0"}, ["config format 99", "upgrade scorematch"]),
    ({"format": 99, "version": "9.0", "ema_warmup": 10}, ["config format 99", "upgrade scorematch"]),
])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_run_with_bad_config_json(command, edit, needles, run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "eval.json").unlink(missing_ok=True)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, **edit}))
    rc, _, err = run_cli([command, copy, "--n", "10", "--out" if command == "sample" else "--json",
                          *([str(tmp_path / "s.npz")] if command == "sample" else [])], capsys)
    assert_one_line_error(rc, err, *needles)
    assert not (tmp_path / "s.npz").exists() and not (copy / "eval.json").exists()


def test_resume_of_missing_run(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--resume", tmp_path / "gone", "--steps", "10"], capsys)
    assert_one_line_error(rc, err, "no config at")
    assert not (tmp_path / "gone").exists()


# --------------------------------------------------------------------------------------------
# SIGTERM


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--hidden", "16", "--depth", "1",
            "--n-data", "500", "--device", "cpu", "--seed", "5", "--checkpoint-every", "50", "--log-every", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "scorematch", "train", *args, "--steps", "10000000",
                             "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        deadline = time.monotonic() + 240
        while not [p for p in (out / "checkpoints").glob("step_*.json") if p.name != "step_00000000.json"]:
            assert proc.poll() is None, f"training ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # `train && sample` tells it from a finished run
    m = re.search(rf"stopped by signal {int(signal.SIGTERM)} at step (\d+); checkpoint written, "
                  rf"continue with `scorematch train --resume {re.escape(str(out))} --steps 10000000`", stderr)
    assert m, stderr
    stopped = int(m.group(1))
    assert 50 <= stopped < 10_000_000
    assert f"steps: {stopped}" in stdout
    newest = max(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.json"))
    assert newest == stopped
    with safe_open(out / "weights.safetensors", "pt") as f:
        assert f.metadata()["step"] == str(stopped)
    steps_logged = [int(line.split(",")[0]) for line in (out / "loss.csv").read_text().splitlines()[1:]]
    assert steps_logged == list(range(1, stopped + 1))

    target = stopped + 20
    rc, stdout, _ = run_cli(["train", "--resume", out, "--steps", target, "--no-progress"], capsys)
    assert rc == 0 and f"steps: {target}" in stdout
    steps_logged = [int(line.split(",")[0]) for line in (out / "loss.csv").read_text().splitlines()[1:]]
    assert steps_logged == list(range(1, target + 1))
    # stopping by signal and resuming reproduces an uninterrupted run
    whole = tmp_path / "whole"
    assert run_cli(["train", *args, "--steps", target, "--no-progress", "--out", whole], capsys)[0] == 0
    wa, wb = load_file(whole / "weights.safetensors"), load_file(out / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
