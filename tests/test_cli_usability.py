"""The command line as a new user meets it: --version, a fast --help (nothing imports torch before
the arguments are parsed), options of another sampler refused in one line, --out rules, the
device and thread flags on every command, progress and the start line, and files written with
the user's umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from scorematch import __version__
from scorematch.cli import main

SMALL = ["--data", "gmm2d", "--hidden", "16", "--depth", "1", "--n-data", "400", "--batch-size", "32",
         "--no-progress", "--device", "cpu"]


def one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("scorematch: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny dsm (langevin), ncsn (annealed) and sde (pc/ode) runs."""
    root = tmp_path_factory.mktemp("cli_usability")
    out = {}
    for objective, steps in (("dsm", 20), ("ncsn", 3), ("sde", 3)):
        out[objective] = root / objective
        extra = ["--n-levels", "3", "--steps-per-sigma", "2"] if objective == "ncsn" else []
        assert main(["train", *SMALL, "--objective", objective, "--steps", str(steps), *extra,
                     "--out", str(out[objective])]) == 0
    return out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"scorematch {__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"], ["--version"]])
def test_help_and_version_import_no_torch(argv):
    """--help answers without importing torch (measured for `python -m scorematch --help` on a
    2-core machine: 0.05-0.07 s idle, 0.31-0.35 s loaded, against 1.6 s idle when torch was
    imported before parsing)."""
    code = ("import sys\nfrom scorematch.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert p.stderr.strip().splitlines()[-1] == "no torch", p.stderr


@pytest.mark.parametrize("objective, args, needles", [
    ("dsm", ["--eps", "0.1"], ["--eps does not apply to sampler 'langevin'", "step_size", "n_steps"]),
    ("sde", ["--sampler", "ode", "--n-steps", "10"], ["--n-steps does not apply to sampler 'ode'", "rtol"]),
    ("ncsn", ["--step-size", "0.1", "--snr", "0.2"], ["--step-size, --snr do not apply to sampler 'annealed'",
                                                      "eps", "steps_per_sigma"]),
])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_options_of_another_sampler_are_refused_in_one_line(command, objective, args, needles, runs, tmp_path,
                                                            capsys):
    out = ["--out", tmp_path / "s.npz"] if command == "sample" else []
    rc, _, err = run_cli([command, runs[objective], "--n", 10, *args, *out, "--no-progress"], capsys)
    one_line_error(rc, err, *needles)
    assert not (tmp_path / "s.npz").exists()


def test_sample_out_must_end_in_npz(runs, tmp_path, capsys):
    rc, _, err = run_cli(["sample", runs["dsm"], "--n", 10, "--out", tmp_path / "out.txt"], capsys)
    one_line_error(rc, err, "out.txt", "ending in .npz", str(tmp_path / "out.npz"))
    assert list(tmp_path.iterdir()) == []


def test_train_without_out_says_where_the_run_goes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(["train", *SMALL, "--steps", 2], capsys)
    assert rc == 0 and "no --out given: writing the run to runs/gmm2d-dsm-s0" in err
    assert (tmp_path / "runs" / "gmm2d-dsm-s0" / "weights.safetensors").exists()


@pytest.mark.parametrize("device, needles", [
    ("cuda", ["CUDA is not available", "--device cpu"]),
    ("cuda:3", ["CUDA is not available"]),
    ("mps", ["'mps' was asked for", "MPS", "--device cpu"]),
    ("tpu", ["device must be auto, cpu, cuda, cuda:N or mps", "'tpu'"]),
])
@pytest.mark.parametrize("command", ["train", "sample", "eval", "plot", "report"])
def test_unavailable_devices_are_refused_in_one_line(command, device, needles, runs, tmp_path, capsys):
    if torch.cuda.is_available() and device.startswith("cuda"):
        pytest.skip("this machine has CUDA")
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    target = ["--out", tmp_path / "new"] if command == "train" else [runs["dsm"]]
    args = [command, *target, "--device", device, "--no-progress"]
    if command == "train":
        args += ["--steps", "1"]
    rc, _, err = run_cli(args, capsys)
    one_line_error(rc, err, *needles)
    assert not (tmp_path / "new").exists()


def test_device_threads_and_versions_are_recorded(tmp_path, capsys):
    run = tmp_path / "r"
    rc, _, err = run_cli(["train", *SMALL, "--steps", 3, "--threads", 2, "--out", run], capsys)
    assert rc == 0
    env = json.loads((run / "run.json").read_text())["environment"]
    assert env["threads"] == 2 and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["scorematch"] == __version__ and env["python"].count(".") == 2
    assert set(env["wall_seconds"]) == {"setup", "train", "checkpoints"} and env["starts"] == 1
    assert env["git_commit"] is None or len(env["git_commit"].removesuffix("+dirty")) == 40
    assert "scorematch train: device cpu, 2 threads, model ScoreMLP (" in err and "data (320, 2)" in err
    assert run_cli(["train", "--resume", run, "--steps", 5, "--no-progress"], capsys)[0] == 0
    env2 = json.loads((run / "run.json").read_text())["environment"]
    assert env2["threads"] == 1 and env2["starts"] == 2  # vector data: one thread unless asked
    assert env2["wall_seconds"]["train"] >= env["wall_seconds"]["train"]
    rc, out, err = run_cli(["eval", run, "--n", 20, "--n-steps", 5, "--json", "--threads", 1], capsys)
    assert json.loads(out)["device"] == "cpu" and "scorematch eval: device cpu, 1 thread" in err


def test_progress_lines_and_start_line_when_not_a_terminal(runs, tmp_path, capsys, monkeypatch):
    from scorematch import _progress

    monkeypatch.setattr(_progress, "LOG_EVERY_S", 0.0)
    rc, out, err = run_cli(["sample", runs["dsm"], "--n", 10, "--n-steps", 3, "--out", tmp_path / "a.npz"], capsys)
    lines = err.strip().splitlines()
    assert rc == 0 and lines[0].startswith("scorematch sample: device cpu, 1 thread, model ScoreMLP (")
    assert "sampler langevin, n 10" in lines[0]
    assert lines[1:] == [l for l in lines[1:] if l.startswith("langevin: ")] and "3/3 steps (100%)" in lines[-1]
    rc, out, err = run_cli(["sample", runs["dsm"], "--n", 10, "--n-steps", 3, "--out", tmp_path / "b.npz",
                            "--no-progress"], capsys)
    assert [l for l in err.splitlines() if l.startswith("langevin")] == []


def test_files_follow_the_umask(tmp_path, capsys):
    """Run files (config, run.json, weights, checkpoints, loss.csv), samples, eval.json, plots and
    the report get 0666 minus the umask: 0644 under 022, 0640 under 027."""
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            root = tmp_path / f"u{umask:o}"
            run = root / "run"
            assert main(["train", *SMALL, "--steps", "3", "--checkpoint-every", "2", "--out", str(run)]) == 0
            assert main(["sample", str(run), "--n", "10", "--n-steps", "3", "--out", str(root / "s.npz"),
                         "--no-progress"]) == 0
            assert main(["eval", str(run), "--n", "20", "--n-steps", "3", "--no-progress"]) == 0
            assert main(["plot", str(run), "--n", "20", "--no-progress"]) == 0
            assert main(["report", str(run), "--n", "20", "--no-eval", "--no-progress"]) == 0
        finally:
            os.umask(old)
        files = [p for p in root.rglob("*") if p.is_file() and "tensorboard" not in p.parts]
        names = {p.name for p in files}
        assert {"config.json", "run.json", "weights.safetensors", "loss.csv", "eval.json", "s.npz",
                "report.html", "samples.png", "step_00000002.safetensors"} <= names
        wrong = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
                 if stat.S_IMODE(p.stat().st_mode) != mode}
        assert not wrong, wrong
