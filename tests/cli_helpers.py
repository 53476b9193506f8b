"""What the command-line tests share: run ``scorematch`` in-process, check its one-line errors,
and edit a run folder as someone who knows its format would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scorematch.cli import main
from scorematch.run.folder import manifest

#: the smallest training run of the hostile-input tests
TINY = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--hidden", "16", "--depth", "1",
        "--n-data", "300", "--device", "cpu", "--seed", "2", "--no-progress"]


def run_cli(args: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``scorematch ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    """Exit status 2 and exactly one stderr line, ``scorematch: error: ...``, holding every needle."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scorematch: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def last_line_error(rc: int, err: str, *needles: str) -> str:
    """Exit status 2, no traceback anywhere, and the last stderr line is the error, holding every
    needle (earlier lines may be notes such as 'trying the previous checkpoint'). Returns that line."""
    assert rc == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("scorematch: error: "), err
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def reseal(run: Path, name: str) -> None:
    """Record RUN/name's current bytes in the manifest, as a writer that knows the format would."""
    m = json.loads((run / manifest.MANIFEST).read_text())
    m["sha256"][name] = [manifest.sha256((run / name).read_bytes())]
    (run / manifest.MANIFEST).write_text(json.dumps(m))
