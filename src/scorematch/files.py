"""The one way scorematch writes a file: atomically, never through a symbolic link.

``atomic_write(path, data)`` creates a temporary file beside ``path`` with
``O_CREAT | O_EXCL | O_NOFOLLOW`` (a name planted in advance, or a symbolic link, makes it
fail instead of being followed), writes, fsyncs and renames it over ``path``. A rename replaces
a symbolic link at ``path`` itself, never the file it points to, so a run folder received from
someone else cannot make scorematch overwrite a file elsewhere. The new file gets the mode
0666 minus the process umask (like any file a program creates), and a crash leaves either the
old file or the new one, never half of one. Temporary names are ``.NAME.XXXXXXXX.tmp``;
``remove_stale_temporaries`` deletes those a killed process left behind.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from scorematch.errors import ScoreMatchError

__all__ = [
    "OutputError", "atomic_write", "ensure_folder", "open_append", "remove_stale_temporaries", "write_json",
    "write_npz", "write_text",
]

_TEMP = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class OutputError(ScoreMatchError, OSError):
    """A result cannot be written where it was asked for (read-only folder, disk full, a path
    under a file, a symbolic link in the way)."""


def _describe(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding {path.parent}; free disk space or write elsewhere"
    if err.errno == errno.EDQUOT:
        return f"disk quota exceeded writing {path}; free space or write elsewhere"
    if err.errno == errno.EFBIG:
        return f"{path} would exceed the file-size limit of this process; raise it (ulimit -f) or write less"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path.parent} is not writable ({err.strerror}); fix its permissions or choose another output"
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        return f"{path.parent} is not a folder (a file is in the way); choose another output path"
    if err.errno == errno.EISDIR or path.is_dir():
        return f"{path} is a folder; give a file name"
    return f"cannot write {path} ({err.strerror or err}); choose another output path"


def ensure_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and its parents) unless it exists; refuse a symbolic link planted at
    a folder scorematch creates, and a file in the way, with an OutputError."""
    p = Path(folder)
    if p.is_symlink() and not p.is_dir():
        raise OutputError(f"{p} is a symbolic link to something that is not a folder; remove it")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{p} exists and is not a folder; remove it or choose another output path") from None
    except OSError as err:
        raise OutputError(_describe(err, p / "x")) from None
    return p


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path``: temporary file (O_EXCL, O_NOFOLLOW), fsync, rename, fsync of
    the folder. Raises OutputError with a one-line reason when it cannot."""
    p = Path(path)
    ensure_folder(p.parent)
    if p.is_dir() and not p.is_symlink():
        raise OutputError(f"{p} is a folder; give a file name")
    tmp = p.parent / f".{p.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, _FLAGS, 0o666)
    except OSError as err:
        raise OutputError(_describe(err, p)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(_describe(err, p)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(p.parent)
    return p


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """``atomic_write`` of ``obj`` as indented JSON with sorted keys and a final newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """``atomic_write`` of an uncompressed .npz holding ``arrays`` (exactly at ``path``: no
    suffix is added, unlike ``numpy.savez`` given a name without .npz)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def open_append(path: str | os.PathLike[str]) -> io.TextIOWrapper:
    """Open an existing log file for appending text, refusing a symbolic link (O_NOFOLLOW)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OutputError(f"{p} is a symbolic link; scorematch never writes through one: remove it") from None
        raise OutputError(_describe(err, p)) from None
    return io.TextIOWrapper(os.fdopen(fd, "wb"), encoding="utf-8", newline="")


def remove_stale_temporaries(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Delete the temporary files (``.NAME.<16 hex>.tmp``, regular files only, never a link)
    that an interrupted write left in ``folder`` (and its sub-folders); returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")
    removed = []
    for p in found:
        if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
