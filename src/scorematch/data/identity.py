"""What a data spec points at, so a run can find its data again and notice when it changed.

``absolute_spec`` resolves the path in a spec against the working directory (``x.csv`` ->
``/home/me/x.csv``, ``mnist:data`` -> ``mnist:/home/me/data``); toys and ``digits`` are names.
``fingerprint`` identifies the data: the SHA-256 of a file's bytes, the SHA-256 of a folder's
listing (relative names and sizes of its files) for MNIST, CIFAR-10 and image folders, the
name, size and seed of a toy. ``check_fingerprint`` raises DataChangedError when they differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from scorematch._checks import user_path
from scorematch.errors import DataChangedError, DataNotFoundError

_PREFIXES = ("mnist", "fashion-mnist", "cifar10", "images")


def _split(spec: str) -> tuple[str, str]:
    prefix, sep, rest = spec.strip().partition(":")
    return (prefix.lower(), rest) if sep and prefix.lower() in _PREFIXES else ("", spec.strip())


def _is_name(spec: str) -> bool:
    from scorematch.distributions import toy_names

    return spec in toy_names() or spec == "digits"


def absolute_spec(spec: str) -> str:
    """``spec`` with its file or folder made absolute (toy names and digits unchanged)."""
    prefix, rest = _split(spec)
    if not prefix and _is_name(rest):
        return rest
    path = str(user_path(rest).resolve())
    return f"{prefix}:{path}" if prefix else path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _listing_sha(folder: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}\n".encode())
    return h.hexdigest(), len(files)


def fingerprint(spec: str, n: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """What identifies the data of ``spec`` (see the module docstring); ``n`` and ``seed`` are
    recorded for toys, whose points are drawn from them."""
    prefix, rest = _split(spec)
    if not prefix and _is_name(rest):
        if rest == "digits":
            return {"kind": "bundled", "name": rest}
        return {"kind": "toy", "name": rest, "n": n, "seed": seed}
    path = Path(absolute_spec(spec).partition(":")[2] if prefix else absolute_spec(spec))
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file or folder; check the data path")
    if path.is_dir():
        digest, count = _listing_sha(path)
        return {"kind": "folder", "path": str(path), "listing_sha256": digest, "files": count}
    return {"kind": "file", "path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def check_fingerprint(recorded: dict[str, Any], spec: str, what: str) -> None:
    """Raise DataChangedError when the data at ``spec`` no longer matches ``recorded`` (a
    ``fingerprint``); ``what`` names the run for the message."""
    if recorded.get("kind") not in ("file", "folder"):
        return
    try:
        now = fingerprint(spec)
    except DataNotFoundError:
        raise DataNotFoundError(
            f"the data of {what}, {recorded.get('path')}, is gone (moved or deleted); put it back there, "
            "or train a new run on the data where it is now"
        ) from None
    key = "sha256" if recorded["kind"] == "file" else "listing_sha256"
    if now.get(key) != recorded.get(key):
        raise DataChangedError(
            f"the data of {what}, {recorded.get('path')}, changed since it was trained ({key} was "
            f"{str(recorded.get(key))[:12]}..., now {str(now.get(key))[:12]}...): its held-out split would "
            "not be the one it was trained against; restore the original data or train a new run"
        )
