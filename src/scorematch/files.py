"""The one way scorematch writes a file: atomically, never through a symbolic link.

``atomic_write(path, data, root=RUN)`` opens every folder from ``root`` down to the file's
folder without following a symbolic link (``O_NOFOLLOW``, one directory descriptor after the
other, so a link planted at ``RUN/plots`` or ``RUN/checkpoints`` is refused instead of being
written through), creates a temporary file there with ``O_CREAT | O_EXCL | O_NOFOLLOW``, writes,
fsyncs and renames it over the target. A rename replaces a symbolic link at the target itself,
never the file it points to, so a run folder received from someone else cannot make scorematch
overwrite a file elsewhere. ``root`` (default: the file's own folder) is the folder the user
named; links above it are the user's own and are followed.

The new file gets the mode 0666 minus the process umask, and a crash leaves either the old file
or the new one, never half of one. Temporary names are ``.NAME.<16 hex>.tmp`` and are locked
(``flock``) while written; ``remove_stale_temporaries`` deletes those a killed process left
behind and never one that a live process still holds. POSIX only (Linux, macOS): it relies on
directory descriptors (``dir_fd``) and ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scorematch.errors import ScoreMatchError

try:
    import fcntl
except ImportError:  # not a POSIX system: no locks (and no dir_fd, see the module docstring)
    fcntl = None

__all__ = [
    "OutputError", "atomic_write", "ensure_folder", "folder_lock", "is_temporary", "open_append", "output_error",
    "probe_writable", "remove_files", "remove_stale_temporaries", "rename_aside", "write_json", "write_npz",
    "write_text",
]

_TEMP = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC

PathLike = str | os.PathLike[str]


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
    if err.errno == errno.ELOOP or path.is_symlink():
        return f"{path} is a symbolic link; scorematch never writes through one: remove it"
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        return f"{path.parent} is not a folder (a file is in the way); choose another output path"
    if err.errno == errno.EISDIR or path.is_dir():
        return f"{path} is a folder; give a file name"
    return f"cannot write {path} ({err.strerror or err}); choose another output path"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of a temporary file of ``atomic_write``."""
    return bool(_TEMP.match(name))


def output_error(err: OSError, path: PathLike) -> OutputError:
    """The OutputError, with its one-line reason, for ``err`` raised while writing ``path``."""
    return OutputError(_describe(err, Path(path)))


def _below(folder: Path, root: Path) -> tuple[str, ...]:
    """The components of ``folder`` under ``root`` (both as given, compared lexically)."""
    try:
        parts = Path(os.path.normpath(folder)).relative_to(os.path.normpath(root)).parts
    except ValueError:
        raise OutputError(f"{folder} is not inside {root}") from None
    if any(p in ("..", ".") for p in parts):
        raise OutputError(f"{folder} leaves {root}")
    return parts


def _make_root(root: Path) -> None:
    if root.is_symlink() and not root.is_dir():
        raise OutputError(f"{root} is a symbolic link to something that is not a folder; remove it")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{root} exists and is not a folder; remove it or choose another output path") from None
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            blocker = next((a for a in reversed((root, *root.parents)) if a.exists() and not a.is_dir()), root)
            raise OutputError(f"{blocker} is not a folder (a file is in the way); choose another output path") from None
        existing = next((a for a in Path(os.path.abspath(root)).parents if a.is_dir()), root)
        shown = next((a for a in root.parents if Path(os.path.abspath(a)) == existing), existing)
        raise OutputError(_describe(err, shown / "x")) from None  # names the folder that refused the new one


def _open_folder(folder: Path, root: Path | None, create: bool = True) -> int:
    """A descriptor of ``folder``, reached from ``root`` one component at a time with
    O_NOFOLLOW (created when missing and ``create``); OutputError on a symbolic link or a file."""
    root = folder if root is None else Path(root)
    parts = _below(folder, root)
    if create:
        _make_root(root)
    try:
        fd = os.open(root, _DIR)
    except OSError as err:
        raise OutputError(_describe(err, root / "x")) from None
    where = root
    for part in parts:
        where = where / part
        try:
            nfd = _open_child(fd, part, where, create)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = nfd
    return fd


def _open_child(fd: int, name: str, where: Path, create: bool) -> int:
    try:
        return os.open(name, _DIR | _NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise OutputError(f"{where} does not exist") from None
    except OSError as err:
        _refuse(fd, name, where, err)
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        pass
    except OSError as err:
        raise OutputError(_describe(err, where)) from None  # names the folder it was to be created in
    try:
        return os.open(name, _DIR | _NOFOLLOW, dir_fd=fd)
    except OSError as err:
        _refuse(fd, name, where, err)
    raise AssertionError("unreachable")


def _refuse(fd: int, name: str, where: Path, err: OSError) -> None:
    """Raise the OutputError for a path component that could not be opened as a folder."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        raise OutputError(f"{where} is a symbolic link; scorematch never writes through one: remove it") from None
    if mode and not stat.S_ISDIR(mode):
        raise OutputError(f"{where} exists and is not a folder; remove it or choose another path") from None
    raise OutputError(_describe(err, where / "x")) from None


def ensure_folder(folder: PathLike, root: PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents) unless it exists; refuse a symbolic link at any folder
    below ``root`` (default: ``folder`` itself) and a file in the way, with an OutputError."""
    p = Path(folder)
    os.close(_open_folder(p, Path(root) if root is not None else None))
    return p


def atomic_write(path: PathLike, data: bytes, root: PathLike | None = None, exclusive: bool = False) -> Path:
    """Write ``data`` to ``path``: temporary file (O_EXCL, O_NOFOLLOW), fsync, rename, fsync of
    the folder, with no symbolic link followed below ``root`` (default: the file's folder).
    With ``exclusive`` the finished file is linked to ``path`` instead of renamed over it, so a
    file already there (written meanwhile by another process) is kept and an OutputError says
    so. Raises OutputError with a one-line reason when it cannot."""
    p = Path(path)
    fd = _open_folder(p.parent, Path(root) if root is not None else p.parent)
    try:
        _write_in(fd, p, data, exclusive)
    finally:
        os.close(fd)
    return p


def _put(tmp: str, p: Path, dir_fd: int, exclusive: bool) -> None:
    """The finished temporary file ``tmp`` becomes ``p``: renamed over it, or, ``exclusive``,
    linked (EEXIST when ``p`` exists) and the temporary name removed."""
    if not exclusive:
        os.replace(tmp, p.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(tmp, p.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise OutputError(f"{p} was created by another process while this one worked; nothing of it was "
                          "overwritten: choose another output name") from None
    _unlink(tmp, dir_fd)


def _write_in(dir_fd: int, p: Path, data: bytes, exclusive: bool = False) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(p.name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OutputError(f"{p} is a folder; give a file name")
    tmp = f".{p.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, _FLAGS, 0o666, dir_fd=dir_fd)
    except OSError as err:
        raise OutputError(_describe(err, p)) from None
    try:
        _lock(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            _put(tmp, p, dir_fd, exclusive)
    except OSError as err:
        _unlink(tmp, dir_fd)
        raise OutputError(_describe(err, p)) from None
    except BaseException:
        _unlink(tmp, dir_fd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def _lock(fd: int) -> None:
    """An exclusive flock on ``fd`` (BlockingIOError when another process holds one)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def probe_writable(path: PathLike, root: PathLike | None = None) -> None:
    """Fail now (OutputError) when ``path`` could not be written later: its folder not creatable
    or not writable, a folder or a symbolic-link folder in the way, no space for a small file."""
    p = Path(path)
    fd = _open_folder(p.parent, Path(root) if root is not None else p.parent)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(p.name, dir_fd=fd, follow_symlinks=False).st_mode):
                raise OutputError(f"{p} is a folder; give a file name")
        probe = f".{p.name}.{secrets.token_hex(8)}.tmp"
        try:
            os.close(os.open(probe, _FLAGS, 0o666, dir_fd=fd))
        except OSError as err:
            raise OutputError(_describe(err, p)) from None
        _unlink(probe, fd)
    finally:
        os.close(fd)


def write_text(path: PathLike, text: str, root: PathLike | None = None, exclusive: bool = False) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"), root=root, exclusive=exclusive)


def write_json(path: PathLike, obj: Any, root: PathLike | None = None, exclusive: bool = False) -> Path:
    """``atomic_write`` of ``obj`` as indented JSON with sorted keys and a final newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", root=root, exclusive=exclusive)


def write_npz(path: PathLike, *, root: PathLike | None = None, exclusive: bool = False, **arrays: Any) -> Path:
    """``atomic_write`` of an uncompressed .npz holding ``arrays`` (exactly at ``path``: no
    suffix is added, unlike ``numpy.savez`` given a name without .npz)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue(), root=root, exclusive=exclusive)


def open_append(path: PathLike, root: PathLike | None = None) -> io.TextIOWrapper:
    """Open an existing log file for appending text, refusing a symbolic link at it or at any
    folder below ``root`` (O_NOFOLLOW), and a file with more than one name (a hard link)."""
    p = Path(path)
    fd = _open_folder(p.parent, Path(root) if root is not None else p.parent, create=False)
    try:
        f = os.open(p.name, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
    except OSError as err:
        raise OutputError(_describe(err, p)) from None
    finally:
        os.close(fd)
    st = os.fstat(f)
    if not stat.S_ISREG(st.st_mode):
        os.close(f)
        raise OutputError(f"{p} is not a regular file; remove it")
    if st.st_nlink > 1:
        os.close(f)
        raise OutputError(f"{p} has {st.st_nlink} names (a hard link: the same file is also somewhere else, which "
                          f"appending would change too); scorematch never writes through one: replace it by a copy "
                          f"(cp {p} {p}.copy && mv {p}.copy {p})")
    return io.TextIOWrapper(os.fdopen(f, "wb"), encoding="utf-8", newline="")


def remove_files(folder: PathLike, names: list[str], root: PathLike | None = None) -> None:
    """Delete the files ``names`` of ``folder`` (a symbolic link is removed, never followed; no
    folder below ``root`` is entered through a link); missing ones are ignored."""
    fd = _open_folder(Path(folder), Path(root) if root is not None else None, create=False)
    try:
        for name in names:
            if "/" in name:
                raise OutputError(f"{name!r} is not a file name")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def rename_aside(folder: PathLike, name: str, suffix: str = ".orig") -> str | None:
    """Rename ``folder/name`` (a file, a folder or a link, never followed) to the first free
    ``name.orig``, ``name.orig.1``, ...; returns the new name, or None when ``name`` is absent."""
    fd = _open_folder(Path(folder), None, create=False)
    try:
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        for i in range(1000):
            new = f"{name}{suffix}" + (f".{i}" if i else "")
            try:
                os.stat(new, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    os.rename(name, new, src_dir_fd=fd, dst_dir_fd=fd)
                except OSError as err:
                    raise OutputError(_describe(err, Path(folder) / name)) from None
                return new
        raise OutputError(f"{Path(folder) / name}: no free name {name}{suffix}.N to keep it under")
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: PathLike, name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/name`` (created empty, never through a link) while
    the block runs; OutputError at once when another process holds it, or with ``wait`` wait
    for it to let go (for short sections such as choosing a free file name and writing it)."""
    p = Path(folder)
    dfd = _open_folder(p, None)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o666, dir_fd=dfd)
    except OSError as err:
        raise OutputError(_describe(err, p / name)) from None
    finally:
        os.close(dfd)
    try:
        try:
            if wait and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                _lock(fd)
        except BlockingIOError:
            raise OutputError(
                f"{p} is in use by another scorematch process (it holds {p / name}); wait for it to end"
            ) from None
        yield
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files (``.NAME.<16 hex>.tmp``, regular files only, never a link, never
    one a live process holds locked) that an interrupted write left in ``folder`` (and its
    sub-folders, not entered through links); returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if not recursive:
            dirnames.clear()
        for name in filenames:
            if _TEMP.match(name) and _remove_if_unlocked(Path(dirpath) / name):
                removed.append(Path(dirpath) / name)
    return removed


def _remove_if_unlocked(p: Path) -> bool:
    try:
        fd = os.open(p, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            _lock(fd)
        except OSError:
            return False  # a live writer holds it
        p.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
