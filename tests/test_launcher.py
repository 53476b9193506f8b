"""``--nproc`` and torchrun: signals reach every process, a hung peer ends the run, errors print
once, and two torchrun nodes on this machine train exactly like one process.

All of these start processes (2 CPU processes on gloo each); they share the "ddp" xdist worker
with test_distributed.py, so two process groups never start at once on the 2 CI cores.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import scorematch
from scorematch.run.folder import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ddp")]

TINY = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--hidden", "16", "--depth", "1",
        "--n-data", "400", "--device", "cpu", "--no-progress"]


def env() -> dict[str, str]:
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SCOREMATCH_ARGV", "SCOREMATCH_ERRORS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorematch", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scorematch", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d))
    return found


def rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in environ if e.startswith(b"RANK=")).split(b"=")[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, after: int = 0, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not [s for s in ckpt.list_checkpoints(run / "checkpoints") if ckpt.step_of(s) > after]:
        assert proc.poll() is None, f"ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def logged_steps(run: Path) -> list[int]:
    return [int(r.split(",")[0]) for r in (run / "loss.csv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_process_after_a_checkpoint(sig, tmp_path):
    run = tmp_path / "x"
    proc = start("train", *TINY, "--steps", "3000", "--checkpoint-every", "10", "--log-every", "1", "--nproc", "2",
                 "--out", run)
    try:
        wait_for_checkpoint(proc, run)
        workers = children(proc.pid)
        assert len(workers) == 2 and sorted(map(rank_of, workers)) == [0, 1]
        at_signal = logged_steps(run)[-1]
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and f"{signal.Signals(sig).name}: stopping 2 processes" in err
    assert not any(alive(p) for p in workers), "a process outlived the launcher"
    stop = ckpt.step_of(ckpt.list_checkpoints(run / "checkpoints")[-1])
    assert f"stopped by signal {int(sig)} at step {stop}; checkpoint written" in err
    assert at_signal < stop < 3000 and stopped_in < 60
    with safe_open(run / "weights.safetensors", "pt") as f:
        assert f.metadata()["step"] == str(stop)
    assert logged_steps(run) == list(range(1, stop + 1))
    if sig == signal.SIGINT:
        return
    resumed = cli("train", "--resume", run, "--steps", stop + 5, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"steps: {stop + 5}" in resumed.stdout


def test_a_hung_peer_ends_the_run_with_one_clear_message(tmp_path):
    run = tmp_path / "hung"
    proc = start("train", *TINY, "--steps", "3000", "--checkpoint-every", "10", "--collective-timeout", "5",
                 "--nproc", "2", "--out", run)
    try:
        wait_for_checkpoint(proc, run)
        workers = children(proc.pid)
        peer = next(p for p in workers if rank_of(p) == 1)
        os.kill(peer, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=120)
        ended_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in children(proc.pid):
            os.kill(p, signal.SIGKILL)
    assert proc.returncode == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("scorematch: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "process 0 of 2 lost contact with the others: no answer within the collective timeout of 5 s" in errors[0]
    assert "--resume" in errors[0]
    assert 5 <= ended_in < 40
    assert not any(alive(p) for p in workers)
    resumed = cli("train", "--resume", run, "--no-progress", "--steps",
                  ckpt.step_of(ckpt.list_checkpoints(run / "checkpoints")[-1]) + 3)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "gmm3d", "--steps", "5", "--nproc=2", "--out", "{tmp}/o"], "unknown data spec 'gmm3d'"),
    (["train", *TINY, "--steps", "5", "--batch-size", "33", "--nproc", "2", "--out", "{tmp}/o"],
     "batch size 33 does not split evenly over 2 processes"),
])
def test_under_nproc_an_error_prints_once_and_exits_2(args, needle, tmp_path):
    res = cli(*[a.format(tmp=tmp_path) for a in args])
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
    assert res.returncode == 2, res.stderr
    assert len(errors) == 1 and needle in errors[0] and errors[0].startswith("scorematch: error: "), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], timeout: float = 400) -> None:
    """``torchrun --nnodes=2 --nproc_per_node=1`` twice on this machine, c10d rendezvous on 127.0.0.1."""
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=scorematch-test", f"--rdzv_conf=is_host={host}",
         "-m", "scorematch", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        for host in (1, 0)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]


def test_two_torchrun_nodes_equal_one_process_and_resume(tmp_path):
    common = ["--data", "gmm2d", "--objective", "ism", "--batch-size", "64", "--n-data", "500", "--hidden", "32",
              "--depth", "2", "--seed", "3", "--checkpoint-every", "3", "--no-progress"]
    run = tmp_path / "nodes"
    two_nodes(["train", *common, "--steps", "6", "--out", run])
    tensors, state = ckpt.latest_checkpoint(run / "checkpoints")
    assert state["step"] == 6 and state["world_size"] == 2
    two_nodes(["train", "--resume", run, "--steps", "12", "--no-progress"])
    single = scorematch.train(data="gmm2d", objective="ism", batch_size=64, n_data=500, hidden=32, depth=2, seed=3,
                              steps=12, progress=False, out=tmp_path / "single")
    a, b = load_file(run / "weights.safetensors"), load_file(single.run_dir / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    init = load_file(run / "checkpoints" / "step_00000009.safetensors")  # the run moved between steps 9 and 12
    assert max(float((init[k] - a[k]).abs().max()) for k in a if k.startswith("model.")) > 1e-4
