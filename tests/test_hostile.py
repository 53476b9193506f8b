"""A careless or hostile user against the README's promises: a received run folder runs no code,
``--out`` never overwrites, absurd sizes end in one line before any work, every error is
scorematch's own with what to do.

The memory-bound cases run in a child process under an address-space limit (``RLIMIT_AS``), so
a regression fails its test instead of taking the machine; the launcher's signal cases are in
test_hostile_launcher.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, last_line_error, reseal
from cli_helpers import run_cli as cli

import scorematch
from scorematch.cli import main
from scorematch.errors import CheckpointError, ScoreMatchError

ROOT = Path(__file__).resolve().parents[1]
#: address-space limit of the child processes: room for torch, far below what the refused requests need
LIMIT_BYTES = 3 * 2**30


def child(args: list[str], cwd: Path | None = None, limit: int | None = LIMIT_BYTES, timeout: float = 120,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m scorematch ARGS`` in a fresh interpreter, its address space limited to ``limit``."""
    code = ("import resource, sys, runpy\n"
            f"lim = {limit!r}\n"
            "if lim: resource.setrlimit(resource.RLIMIT_AS, (lim, lim))\n"
            "sys.argv = ['scorematch', *sys.argv[1:]]\n"
            "runpy.run_module('scorematch', run_name='__main__')\n")
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main([str(a) for a in ["train", *TINY, "--steps", 10, "--checkpoint-every", 5, "--out", out]]) == 0
    return out


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished 10-step run (checkpoints at steps 5 and 10)."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def name_model(run: Path, name: str) -> None:
    """run.json's model.name set to ``name``, with the manifest recomputed."""
    info = json.loads((run / "run.json").read_text())
    info["model"] = {"name": name, "config": {}}
    (run / "run.json").write_text(json.dumps(info))
    reseal(run, "run.json")


# ----------------------------------------------------------------------------- 1. a folder runs no code


def test_a_folder_naming_this_imports_nothing_and_prints_no_zen(run):
    name_model(run, "this:Foo")
    code = ("import sys\nfrom scorematch.cli import main\n"
            f"rc = main(['sample', {str(run)!r}, '--n', '5'])\n"
            "print('status', rc, 'imported', 'this' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.stdout.strip() == "status 2 imported False", p.stdout + p.stderr
    assert "Beautiful is better" not in p.stdout + p.stderr and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert "would import module 'this'" in line and "--trust-model-module" in line, line


def test_a_module_planted_in_the_folder_is_never_executed(run, capsys, monkeypatch):
    (run / "evil.py").write_text("import pathlib\npathlib.Path('PWNED').write_text('x')\n")
    name_model(run, "evil:Model")
    p = child(["sample", ".", "--n", "5"], cwd=run)  # python -m puts the working directory on sys.path
    assert p.returncode == 2 and not (run / "PWNED").exists(), p.stderr
    assert "would import module 'evil'" in p.stderr.strip().splitlines()[-1]
    monkeypatch.chdir(run)
    monkeypatch.syspath_prepend(str(run))  # the same, in this process
    for cmd in (["eval", ".", "--n", "20"], ["plot", ".", "--n", "20"], ["report", ".", "--n", "20"],
                ["train", "--resume", ".", "--steps", "20"]):
        rc, _, err = cli(cmd, capsys)
        last_line_error(rc, err, "would import module 'evil'")
        assert not (run / "PWNED").exists() and "evil" not in sys.modules
    # the user's explicit opt-in does import it (this folder is then trusted, code and all)
    p = child(["sample", ".", "--n", "5", "--trust-model-module"], cwd=run)
    assert (run / "PWNED").exists() and p.returncode == 2, p.stderr


def test_a_class_already_imported_is_rebuilt_without_opt_in(tmp_path):
    from user_models import TinyScore

    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    res = scorematch.train(model=TinyScore(), data=x, out=tmp_path / "r", steps=2, batch_size=16,
                           progress=False, device="cpu")
    assert type(scorematch.load(res.run_dir).model).__name__ == "TinyScore"


def test_a_class_defined_in_main_is_refused_when_saved(tmp_path):
    code = ("import torch, scorematch\n"
            "class Net(torch.nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__(); self.lin = torch.nn.Linear(2, 2)\n"
            "    def forward(self, x):\n"
            "        return self.lin(x)\n"
            "for call in (lambda: scorematch.save(Net(), 'm'),\n"
            "             lambda: scorematch.train(model=Net(), data=torch.randn(40, 2), out='r', steps=1,\n"
            "                                      progress=False, device='cpu')):\n"
            "    try:\n"
            "        call()\n"
            "    except scorematch.ModelError as e:\n"
            "        print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and all("(__main__)" in x and "define the class in a module" in x for x in lines), p
    assert not (tmp_path / "m").exists() and not (tmp_path / "r" / "weights.safetensors").exists()


def test_the_allow_list_names_trusted_packages(run, monkeypatch):
    from scorematch.run.build import user_model

    name_model(run, "this:Foo")
    monkeypatch.setenv(user_model.TRUSTED_ENV, "json.decoder")
    assert not user_model._allowed("json") and user_model._allowed("json.decoder.x")
    with pytest.raises(CheckpointError, match="would import module 'this'"):
        scorematch.load(run)


# ----------------------------------------------------------------------------- 2, 5. --out never overwrites


def test_sample_out_refuses_an_existing_file_and_force_keeps_it(run, tmp_path, capsys):
    data = tmp_path / "data.npz"
    data.write_bytes(b"the user's data")
    rc, _, err = cli(["sample", run, "--n", "5", "--n-steps", "3", "--out", data], capsys)
    last_line_error(rc, err, f"--out {data} exists", "--force")
    assert data.read_bytes() == b"the user's data"
    rc, out, err = cli(["sample", run, "--n", "5", "--n-steps", "3", "--out", data, "--force"], capsys)
    assert rc == 0 and f"kept {data} as {data}.orig" in err, err
    assert (tmp_path / "data.npz.orig").read_bytes() == b"the user's data"
    import numpy as np

    assert np.load(data)["samples"].shape == (5, 2)


def test_eval_and_report_out_refuse_the_runs_own_files(run, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc, _, err = cli(["eval", run, "--n", "20", "--out", run / "config.json"], capsys)
    last_line_error(rc, err, "config.json exists")
    rc, _, err = cli(["report", run, "--n", "20", "--no-eval", "--out", run / "run.json"], capsys)
    last_line_error(rc, err, "run.json exists")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    scorematch.load(run)


def test_plot_out_refuses_a_folder_of_the_users_pngs(run, tmp_path, capsys):
    mine = tmp_path / "pngs"
    mine.mkdir()
    (mine / "samples.png").write_bytes(b"my figure")
    rc, _, err = cli(["plot", run, "--n", "30", "--out", mine], capsys)
    last_line_error(rc, err, "is not empty (samples.png)", "--force")
    assert (mine / "samples.png").read_bytes() == b"my figure"
    rc, _, err = cli(["plot", run, "--n", "30", "--out", mine, "--force"], capsys)
    assert rc == 0 and (mine / "samples.png.orig").read_bytes() == b"my figure", err
    rc, _, err = cli(["plot", run, "--n", "30", "--out", mine], capsys)  # a folder plot wrote: used again
    assert rc == 0, err
    new = tmp_path / "new"
    rc, _, err = cli(["plot", run, "--n", "30", "--out", new], capsys)
    assert rc == 0 and (new / "samples.png").is_file(), err


def test_save_refuses_a_non_empty_folder_and_writes_the_files_the_docs_describe(tmp_path):
    from scorematch.models import ScoreMLP

    m = ScoreMLP(2, 8, 1)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("mine")
    with pytest.raises(scorematch.ModelError, match="is not empty"):
        scorematch.save(m, tmp_path / "d")
    assert (tmp_path / "d" / "config.json").read_text() == "mine"
    scorematch.save(m, tmp_path / "m")
    assert (tmp_path / "m" / "weights.safetensors").is_file()
    x = torch.randn(4, 2)
    assert torch.equal(scorematch.load(tmp_path / "m").score(x), m.score(x))


def test_concurrent_evaluations_each_keep_their_result(run):
    import threading

    from scorematch.run.reporting.evaluate import evaluate

    results: dict[int, dict] = {}
    gate = threading.Barrier(2)

    def one(n: int) -> None:
        gate.wait()
        results[n] = evaluate(run, n=n, n_steps=3)

    threads = [threading.Thread(target=one, args=(n,)) for n in (20, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = {results[n]["file"] for n in (20, 30)}
    assert len(files) == 2
    for n in (20, 30):
        assert json.loads(Path(results[n]["file"]).read_text())["n_samples"] == n


def test_an_exclusive_write_keeps_a_file_created_meanwhile(tmp_path):
    from scorematch.files import OutputError, write_json

    target = tmp_path / "e.json"
    write_json(target, {"a": 1}, exclusive=True)
    with pytest.raises(OutputError, match="created by another process"):
        write_json(target, {"a": 2}, exclusive=True)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no temporary left


def test_a_hard_linked_loss_csv_is_refused_on_resume(run, tmp_path, capsys):
    outside = tmp_path / "outside.csv"
    os.link(run / "loss.csv", outside)
    before = outside.read_bytes()
    rc, _, err = cli(["train", "--resume", run, "--steps", "15", "--no-progress"], capsys)
    last_line_error(rc, err, "loss.csv has 2 names (a hard link")
    assert outside.read_bytes() == before


# ----------------------------------------------------------------------------- 3. absurd sizes, one line, at once


@pytest.mark.parametrize("args, needles", [
    (["eval", "{run}", "--n", "1000000000"], ["--n 1000000000 samples", "more than the"]),
    (["sample", "{run}", "--n", "200000000"], ["--n 200000000 samples", "more than the"]),
    (["train", "--objective", "ncsn", "--n-levels", "1000000000", "--out", "{tmp}/t"],
     ["--n-levels 1000000000 is more than 1000000 noise levels"]),
    (["sample", "{run}", "--n", "10", "--sampler", "langevin", "--n-steps", str(10**12)],
     ["--n-steps 1000000000000 is more than 1000000 steps"]),
])
def test_absurd_sizes_end_in_one_line_under_a_memory_limit(base_run, tmp_path, args, needles):
    p = child([a.format(run=base_run, tmp=tmp_path) for a in args])
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("scorematch: error: ") and all(n in line for n in needles), line


def test_steps_per_sigma_is_bounded_like_the_denoising_samplers(tmp_path, capsys):
    rc, _, err = cli(["train", *TINY, "--objective", "ncsn", "--steps-per-sigma", 10**12, "--out", tmp_path / "r"],
                     capsys)
    last_line_error(rc, err, "--steps-per-sigma 1000000000000 is more than 1000000")
    from scorematch.run.sampling.generate import generate

    model = scorematch.load(train_ncsn(tmp_path / "n"))
    with pytest.raises(scorematch.ConfigError, match="--steps-per-sigma 1000000000000 is more than 1000000"):
        generate(model, model.run_info, 5, steps_per_sigma=10**12)
    with pytest.raises(scorematch.ConfigError, match="--n-steps 1000000000000 is more than 1000000"):
        generate(model, model.run_info, 5, sampler="heun", n_steps=10**12)


def train_ncsn(out: Path) -> Path:
    res = scorematch.train(data="gmm2d", objective="ncsn", n_levels=3, steps=2, batch_size=16, hidden=8, depth=1,
                           n_data=100, progress=False, device="cpu", out=out)
    return res.run_dir


class Huge(torch.utils.data.Dataset):
    """A data set that says it holds 10^12 rows of 2 numbers."""

    def __len__(self) -> int:
        return 10**12

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.zeros(2)


def test_a_dataset_too_long_for_memory_is_refused_before_reading_it(tmp_path):
    with pytest.raises(scorematch.ConfigError, match="a data set of 1000000000000 items of shape \\(2,\\) needs at "
                                                       "least 14.6 TiB"):
        scorematch.train(data=Huge(), out=tmp_path / "r", steps=1, progress=False, device="cpu")


def test_a_huge_sparse_weights_file_is_refused_by_its_size(run, capsys):
    w = run / "weights.safetensors"
    with open(w, "r+b") as f:
        f.truncate(50 * 2**30)  # sparse: no disk used
    reseal_size = w.stat().st_size
    assert reseal_size == 50 * 2**30
    for cmd in (["sample", run, "--n", "5"], ["eval", run, "--n", "20"], ["plot", run, "--n", "20"],
                ["report", run, "--n", "20"]):
        rc, _, err = cli(cmd, capsys)
        # the weights are refused by their size, then the newest checkpoint that verifies is used
        assert f"{w} is 50 GiB: reading it needs at least 100 GiB of memory" in err, err
        assert rc == 0 and "using the newest checkpoint" in err, err
    shutil.rmtree(run / "checkpoints")
    rc, _, err = cli(["sample", run, "--n", "5"], capsys)
    last_line_error(rc, err, "is 50 GiB")


# ----------------------------------------------------------------------------- 6. every error is scorematch's own


@pytest.mark.parametrize("data", ["~nouser/x.npy", "mnist:~nouser/m", "images:~nouser/i", "cifar10:~nouser/c"])
def test_a_home_of_no_user_is_a_data_error(data, tmp_path, capsys):
    rc, _, err = cli(["train", "--data", data, "--steps", "1", "--out", tmp_path / "r"], capsys)
    last_line_error(rc, err, "~nouser names no home folder")


def test_an_argparse_error_is_one_line_with_a_pointer_to_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--steps", "1.5"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith("scorematch: error: scorematch train: argument --steps: expected an integer, got '1.5'")
    assert err.strip().endswith("see `scorematch train --help`")


@pytest.mark.parametrize("call, needle", [
    (lambda: scorematch.load(None), "load needs the path of a run folder"),
    (lambda: scorematch.load(123), "got int"),
    (lambda: scorematch.load(".", device="bogus"), "device must be auto, cpu, cuda, cuda:N or mps"),
    (lambda: scorematch.load(".", device=torch.device("meta")), "device must be"),
    (lambda: scorematch.train(out=123), "out must be the path of a folder"),
    (lambda: scorematch.train(resume=1.5), "resume must be the path of a folder"),
    (lambda: scorematch.train({"steps": 3}, out="x"), "cfg must be a TrainConfig"),
    (lambda: scorematch.save(object(), "x"), "save needs a torch.nn.Module"),
    (lambda: scorematch.save(torch.nn.Linear(2, 2), 5), "save needs the path of a new or empty folder"),
])
def test_api_misuse_is_a_scorematch_error(call, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScoreMatchError, match=needle):
        call()
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_config_error(run):
    with pytest.raises(scorematch.ConfigError, match="CUDA is not available here"):
        scorematch.load(run, device="cuda")


def blobs(n: int = 60) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


class NoParameters(torch.nn.Module):
    def forward(self, x):
        return -x


class FailsOnBigBatches(torch.nn.Module):
    """Passes the shape checks (batches of 2 and 5), fails on a training batch of 16."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        if len(x) > 8:
            raise ValueError("my bug")
        return self.lin(x)


def test_user_modules_that_fail_are_model_errors(tmp_path):
    with pytest.raises(scorematch.ModelError, match="NoParameters has no parameters to train"):
        scorematch.train(model=NoParameters(), data=blobs(), out=tmp_path / "a", steps=1, progress=False,
                         device="cpu")
    with pytest.raises(scorematch.ModelError, match=r"FailsOnBigBatches failed at step 1 on a batch of shape "
                                                    r"\(16, 2\) \(ValueError: my bug\)"):
        scorematch.train(model=FailsOnBigBatches(), data=blobs(), out=tmp_path / "b", steps=2, batch_size=16,
                         progress=False, device="cpu")


# ----------------------------------------------------------------------------- 7. shape checks, fallbacks said


class BroadcastsOverTwo(torch.nn.Module):
    """Right for batches of 1 and 2 only: a (2, D) bias that broadcasts against a batch of 2."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.bias = torch.nn.Parameter(torch.zeros(2, 2))

    def forward(self, x):
        return self.lin(x) + self.bias[: len(x)] if len(x) <= 2 else (self.lin(x)[:, None] + self.bias).sum(1)[:2]


class EnergyOfRows(torch.nn.Module):
    """kind 'energy', but forward returns (n, D) instead of (n,)."""

    kind = "energy"

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x) ** 2


def test_the_shape_check_catches_what_a_batch_of_two_hides(tmp_path):
    with pytest.raises(scorematch.ModelError, match=r"score returned \(2, 2\) for x of shape \(5, 2\)"):
        scorematch.train(model=BroadcastsOverTwo(), data=blobs(), out=tmp_path / "a", steps=1, progress=False,
                         device="cpu")
    with pytest.raises(scorematch.ModelError, match=r"EnergyOfRows \(kind 'energy'\) returned \(2, 2\) from forward"):
        scorematch.train(model=EnergyOfRows(), data=blobs(), out=tmp_path / "b", steps=1, progress=False,
                         device="cpu")


def test_a_deleted_weights_file_falls_back_to_a_checkpoint_and_says_so(run, capsys):
    (run / "weights.safetensors").unlink()
    rc, _, err = cli(["sample", run, "--n", "5", "--n-steps", "3"], capsys)
    assert rc == 0 and f"{run / 'weights.safetensors'} is missing; using the newest checkpoint" in err, err


# ----------------------------------------------------------------------------- 8. messages


def test_read_only_errors_name_the_folder_that_is_not_writable(tmp_path, monkeypatch):
    import errno

    from scorematch.files import OutputError, atomic_write, ensure_folder

    (tmp_path / "rodir").mkdir()
    (tmp_path / "run").mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(OutputError, match=f"^{tmp_path / 'rodir'} is not writable"):
        ensure_folder(tmp_path / "rodir" / "new" / "deeper")
    with pytest.raises(OutputError, match=f"^{tmp_path / 'run'} is not writable"):
        atomic_write(tmp_path / "run" / "plots" / "loss.png", b"png", root=tmp_path / "run")


def test_inpainting_reads_its_mask_without_torchs_non_writable_array_warning(tmp_path):
    import warnings

    import numpy as np

    from scorematch.run.sampling.inpaint import read_inpaint_file

    x = np.zeros((3, 2), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x, mask=np.array([[True, False]] * 3))  # x's shape: no copy was made
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, known = read_inpaint_file(tmp_path / "x.npz", (2,), "vector")
    assert known.shape == (3, 2) and known[:, 0].all() and not known[:, 1].any()


def test_training_steps_are_bounded_by_the_checkpoint_names_and_the_loss_history(capsys, tmp_path):
    from scorematch.run.system import limits

    with pytest.raises(scorematch.ConfigError, match=r"--steps 100000000000 with --log-every 10 \(10000000001 rows "
                                                     r"of loss history\) needs at least 2.73 TiB"):
        limits.check_train_steps(10**11, 10)
    limits.check_train_steps(10**6, 10)  # 3 MB of history: fine
    rc, _, err = cli(["train", *TINY, "--steps", "1e12", "--out", tmp_path / "r"], capsys)
    last_line_error(rc, err, "--steps 1000000000000 is more than 999999999999")
    assert not (tmp_path / "r").exists()
