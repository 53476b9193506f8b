"""What the command-line tests share: run ``scorematch`` in-process and check its one-line errors."""

from __future__ import annotations

import pytest

from scorematch.cli import main


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
