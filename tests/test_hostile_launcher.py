"""The launcher ends on one signal whatever state its processes are in, forwards SIGHUP and
SIGQUIT like SIGTERM, says what actually happens, and prints a lost peer once, whole.

The end-to-end cases start 2 CPU processes on gloo (the "ddp" xdist group, as test_launcher.py);
the grace-period cases drive the launcher's watch loop on plain child processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.system import launcher
from scorematch.run.system.distributed import CollectiveError, _detail, collective_error, is_collective_failure

TINY = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--hidden", "16", "--depth", "1",
        "--n-data", "400", "--device", "cpu", "--no-progress"]


class Received:
    """Stands for the launcher's signal handlers: the signals already received."""

    def __init__(self, *signals: int) -> None:
        self.received = list(signals)


def stubborn(n: int) -> list[subprocess.Popen]:
    """Processes that ignore every forwarded signal (hung, as far as the launcher can tell)."""
    code = ("import signal, time\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):\n"
            "    signal.signal(s, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    return procs


def test_hung_and_stopped_processes_are_killed_after_the_grace_period(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "STOP_GRACE", 1.0)
    procs = stubborn(2)
    os.kill(procs[1].pid, signal.SIGSTOP)
    t0 = time.monotonic()
    status = launcher._watch(procs, Received(signal.SIGTERM), tmp_path)
    assert status == 143 and time.monotonic() - t0 < 30
    assert all(p.poll() is not None for p in procs)
    err = capsys.readouterr().err
    assert "still running 1 s from now is killed" in err and "stopped process(es) 0, 1" in err


def test_only_train_says_it_writes_a_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "STOP_GRACE", 0.5)
    for writes, said in ((False, "(nothing is written)"), (True, "each writes a checkpoint first")):
        procs = stubborn(1)
        assert launcher._watch(procs, Received(signal.SIGINT), tmp_path, writes_checkpoint=writes) == 130
        err = capsys.readouterr().err
        assert said in err and ("checkpoint" in err) == writes, err


def test_a_lost_peer_is_reported_once_and_whole():
    class Ctx:
        rank, world_size, timeout = 0, 2, 5.0

    gloo = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out "
                        "waiting 5000ms for recv operation to complete")
    err = collective_error(gloo, Ctx())
    assert "(Timed out waiting 5000ms for recv operation to complete)" in str(err) and "/__w/" not in str(err)
    assert not is_collective_failure(err)  # never wrapped a second time
    assert str(err).count("lost contact") == 1
    text = "Connection reset by peer " + "at /a/very/long/path/of/gloo " * 10
    long = _detail(RuntimeError(text))
    assert long.endswith(" ...") and len(long) <= 164
    assert set(long.removesuffix(" ...").split()) <= set(text.split())  # cut between words, never in a path
    assert isinstance(err, CollectiveError)


# ----------------------------------------------------------------------------- end to end, 2 processes


def env() -> dict[str, str]:
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SCOREMATCH_ARGV", "SCOREMATCH_ERRORS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1"}


def workers(pid: int) -> dict[int, int]:
    """{rank: pid} of the launcher's processes (from /proc)."""
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                environ = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                rank = [e for e in environ if e.startswith(b"RANK=")]
                if rank:
                    found[int(rank[0].split(b"=")[1])] = int(d)
    return found


def start_training(run: Path) -> tuple[subprocess.Popen, dict[int, int]]:
    p = subprocess.Popen([sys.executable, "-m", "scorematch", "train", *TINY, "--steps", "100000",
                          "--checkpoint-every", "50", "--collective-timeout", "5", "--nproc", "2", "--out", str(run)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.monotonic() + 240
    while [ckpt.step_of(s) for s in ckpt.list_checkpoints(run / "checkpoints")][-1:] in ([], [0]):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    return p, workers(p.pid)


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
@pytest.mark.parametrize("sig, stop_one", [(signal.SIGTERM, True), (signal.SIGQUIT, False)])
def test_one_signal_ends_the_launcher_with_a_checkpoint_at_the_stop_step(tmp_path, sig, stop_one):
    run = tmp_path / "run"
    p, ranks = start_training(run)
    if stop_one:
        os.kill(ranks[1], signal.SIGSTOP)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    line = [x for x in err.splitlines() if "stopped by signal" in x]
    assert line and "checkpoint written" in line[0], err
    step = int(line[0].split(" at step ")[1].split(";")[0])
    assert ckpt.step_of(ckpt.list_checkpoints(run / "checkpoints")[-1]) == step
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in ranks.values())
