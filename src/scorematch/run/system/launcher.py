"""``scorematch COMMAND ... --nproc N``: N processes on this machine, started and watched.

``launch(N, argv)`` starts ``python -m scorematch ARGV`` N times with the environment torchrun
gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR = 127.0.0.1,
MASTER_PORT = a free port, OMP_NUM_THREADS = 1 unless set), each process in its own session, and:

- forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT (Ctrl-C, ``kill``, a closed terminal, Ctrl-\\) to
  every process, with a SIGCONT so that a stopped process receives it too; under ``train`` they
  finish their step, write a checkpoint and exit (other commands write nothing and exit), and
  the launcher, having waited for them, exits with 128 + the signal number. A process that has
  not ended ``STOP_GRACE`` seconds after the signal (hung, or stopped again), or ``GRACE``
  seconds after another one ended, is killed. A second signal kills them at once;
- makes every process receive SIGTERM if the launcher itself dies (Linux parent-death signal);
- when a process fails, gives rank 0 ``GRACE`` seconds to end by itself (it meets the failure at
  its next collective operation, at most the collective timeout later), then kills what is left;
- prints an error once: the processes other than rank 0 leave the errors they meet in a file
  of the launcher's, which it prints only when rank 0 ended without an error of its own.

The exit status is 0 when every process succeeded, else rank 0's status (2 for an error you
can fix), else that of the first process to fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scorematch.errors import ConfigError

#: environment variable through which ``launch`` hands the command line to every process
ARGV_ENV = "SCOREMATCH_ARGV"
#: environment variable naming the folder where processes other than rank 0 leave their errors
ERRORS_ENV = "SCOREMATCH_ERRORS"
#: seconds rank 0 gets to end by itself after another process failed
GRACE = 10.0
#: seconds the processes get to end by themselves after a forwarded signal (a step and a checkpoint)
STOP_GRACE = 60.0
#: the signals forwarded to the processes (each stops a run after a checkpoint)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
POLL = 0.05


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_nproc(nproc: int) -> int:
    """``nproc`` if it is an integer from 1 to 4 x the CPU count."""
    limit = 4 * (os.cpu_count() or 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or not 1 <= nproc <= limit:
        raise ConfigError(f"--nproc must be an integer from 1 to {limit} (4 x the CPU count of this machine), "
                          f"got {nproc!r}")
    return nproc


def _parent_death_signal() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Signals:
    """The FORWARDED signals to the launcher, as a list the watch loop reads."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.old = {s: signal.signal(s, self._handle) for s in FORWARDED}

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m scorematch ARGV`` as ``nproc`` DDP processes of this machine (see the
    module docstring); returns the exit status."""
    check_nproc(nproc)
    with tempfile.TemporaryDirectory(prefix="scorematch-launch-") as errors:
        env = {**os.environ, ARGV_ENV: json.dumps(argv), ERRORS_ENV: errors, "WORLD_SIZE": str(nproc),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        env.setdefault("OMP_NUM_THREADS", "1")
        print(f"scorematch: starting {nproc} processes (DDP on this machine)", file=sys.stderr)
        sig = _Signals()
        procs: list[subprocess.Popen] = []
        try:
            for r in range(nproc):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "scorematch"], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                    start_new_session=True, preexec_fn=_parent_death_signal if sys.platform == "linux" else None,
                ))
            return _watch(procs, sig, Path(errors), writes_checkpoint=bool(argv) and argv[0] == "train")
        finally:
            for p in procs:
                if p.poll() is None:
                    _kill(p)
            sig.restore()


def _kill(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGKILL)
        p.send_signal(signal.SIGCONT)
    p.wait()


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _watch(procs: list[subprocess.Popen], sig: _Signals, errors: Path, writes_checkpoint: bool = True) -> int:
    forwarded: int | None = None
    first_failure: int | None = None
    killed: set[int] = set()
    deadline = None
    handled = 0
    while any(p.poll() is None for p in procs):
        while handled < len(sig.received):
            s = sig.received[handled]
            handled += 1
            if forwarded is None:
                forwarded = s
                what = ("after their current step (each writes a checkpoint first)" if writes_checkpoint
                        else "(nothing is written)")
                print(f"scorematch: {signal.Signals(s).name}: stopping {len(procs)} processes {what}; a process "
                      f"still running {STOP_GRACE:g} s from now is killed; send the signal again to kill them now",
                      file=sys.stderr)
                for p in procs:
                    if p.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            p.send_signal(s)
                            p.send_signal(signal.SIGCONT)  # a stopped process receives the signal too
                deadline = time.monotonic() + STOP_GRACE
            else:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        killed.add(r)
                        _kill(p)
        if forwarded is not None:
            if any(p.poll() is not None for p in procs):
                deadline = min(deadline, time.monotonic() + GRACE)
            if time.monotonic() > deadline:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        killed.add(r)
                        _kill(p)
        if forwarded is None:
            failed = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed and first_failure is None:
                first_failure = failed[0]
                deadline = time.monotonic() + (1.0 if procs[0].poll() is not None else GRACE)
            if deadline is not None and procs[0].poll() is not None:
                deadline = min(deadline, time.monotonic() + 1.0)
            if deadline is not None and time.monotonic() > deadline:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        killed.add(r)
                        _kill(p)
        time.sleep(POLL)
    return _result(procs, forwarded, first_failure, killed, errors)


def _result(procs: list[subprocess.Popen], forwarded: int | None, first_failure: int | None, killed: set[int],
            errors: Path) -> int:
    codes = [p.returncode for p in procs]
    rank0_reported = codes[0] > 0 and 0 not in killed
    if not rank0_reported:
        seen: set[str] = set()
        for r in range(1, len(procs)):
            f = errors / f"rank{r}.txt"
            msg = f.read_text(errors="replace").strip() if f.exists() else ""
            if msg and msg not in seen:
                seen.add(msg)
                print(msg, file=sys.stderr)
        for r, c in enumerate(codes):
            if c < 0 and r not in killed and -c != forwarded:
                print(f"scorematch: error: process {r} was killed by signal {-c} ({signal.Signals(-c).name})",
                      file=sys.stderr)
    if killed:
        print(f"scorematch: stopped process(es) {', '.join(map(str, sorted(killed)))} that did not end by themselves",
              file=sys.stderr)
    if forwarded is not None:
        return 128 + forwarded
    if all(c == 0 for c in codes):
        return 0
    if codes[0] != 0 and 0 not in killed:
        return _status(codes[0])
    return _status(codes[first_failure if first_failure is not None else next(r for r, c in enumerate(codes) if c)])
