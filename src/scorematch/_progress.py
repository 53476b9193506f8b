"""Progress of long loops on stderr: a tqdm bar (rate and ETA) on a terminal, plain periodic
log lines otherwise (a log file or a pipe gets one line every ``every_s`` seconds, not a stream
of carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: seconds between two lines of ``LogLines``
LOG_EVERY_S = 10.0


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LogLines:
    """The tqdm calls scorematch uses (update, set_postfix, close), as periodic plain lines:
    ``desc: 300/2000 steps (15%), 45.1 steps/s, ETA 0:38, loss=1.23``."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, every_s: float | None = None,
                 file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.start_n, self.every_s = initial, LOG_EVERY_S if every_s is None else every_s
        self.file = file or sys.stderr
        self.t0 = self.last = time.perf_counter()
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def _line(self, now: float, final: bool = False) -> None:
        rate = (self.n - self.start_n) / max(1e-9, now - self.t0)
        parts = [f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}s/s")
        if final:
            parts.append(f"took {_fmt_seconds(now - self.t0)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_fmt_seconds((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self.file, flush=True)

    def close(self) -> None:
        if self.n > self.start_n:
            self._line(time.perf_counter(), final=True)
            self.start_n = self.n  # a second close prints nothing


def progress(total: int | None, desc: str, enabled: bool = True, unit: str = "step", initial: int = 0) -> Any:
    """A progress reporter on stderr, or None when ``enabled`` is False: tqdm when stderr is a
    terminal, else ``LogLines``."""
    if not enabled:
        return None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
    return LogLines(total, desc, unit, initial=initial)
