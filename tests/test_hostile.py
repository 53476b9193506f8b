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

import scorematch
from scorematch.cli import main
from scorematch.errors import CheckpointError
from scorematch.run.folder import manifest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--hidden", "16", "--depth", "1",
        "--n-data", "300", "--device", "cpu", "--seed", "2", "--no-progress"]
#: address-space limit of the child processes: room for torch, far below what the refused requests need
LIMIT_BYTES = 3 * 2**30


def cli(args: list, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """Exit status 2, no traceback, and the last stderr line is the error, holding ``needles``."""
    assert rc == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("scorematch: error: "), err
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


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


def reseal(run: Path, name: str) -> None:
    """Record RUN/name's current bytes in the manifest, as anyone who edits a folder can."""
    m = json.loads((run / manifest.MANIFEST).read_text())
    m["sha256"][name] = [manifest.sha256((run / name).read_bytes())]
    (run / manifest.MANIFEST).write_text(json.dumps(m))


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
        one_line_error(rc, err, "would import module 'evil'")
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
