"""manifest.json: the SHA-256 of every file of a run folder that scorematch reads back.

``write_files(run, {"config.json": b"...", ...})`` writes files of a run folder and records
their SHA-256 in ``RUN/manifest.json``; ``read_verified(run, name)`` returns a file's bytes only
when they match. A file changed after scorematch wrote it (a flipped bit, an edit, a copy from
another run) is refused with a one-line message naming it.

An update is crash-safe in three atomic writes: the manifest first accepts the old and the new
hash of each file, then the files are replaced, then the manifest keeps only the new hashes;
a kill at any point leaves every file matching its manifest entry.

A checkpoint carries its own manifest (``scorematch.run.folder.checkpoint``): the SHA-256 of its
tensor file and of its JSON state.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError
from scorematch.files import atomic_write, write_json
from scorematch.run.folder.config import TrainConfig, parse_config
from scorematch.run.folder.validate import parse_json, read_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"^[\w.-]{1,100}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(run: Path) -> dict[str, list[str]]:
    """{file name: accepted SHA-256s} of ``run``; CheckpointError when missing or malformed."""
    p = Path(run) / MANIFEST
    if not p.exists() and not p.is_symlink():
        raise CheckpointError(
            f"{p} is missing: {run} was not written by this version of scorematch or was not copied whole; "
            "copy the whole run folder, or train the run again"
        )
    m = parse_json(read_file(p, "manifest"), p)
    if not isinstance(m, dict) or set(m) != {"format", "sha256"} or m["format"] != MANIFEST_FORMAT:
        raise CheckpointError(f"{p} is not a scorematch manifest (format {MANIFEST_FORMAT}); restore it")
    files = m["sha256"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and _NAME.match(k) and isinstance(v, list) and 1 <= len(v) <= 3
        and all(isinstance(h, str) and _HEX.match(h) for h in v) for k, v in files.items()
    ):
        raise CheckpointError(f"{p} has malformed entries; restore it")
    return files


def _manifest_or_empty(run: Path) -> dict[str, list[str]]:
    try:
        return read_manifest(run)
    except CheckpointError:
        return {}


def write_files(run: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes) into ``run`` and record their SHA-256 in the manifest."""
    run = Path(run)
    current = _manifest_or_empty(run)
    new = {name: sha256(data) for name, data in files.items()}
    pending = {**current, **{n: sorted({*current.get(n, []), h}) for n, h in new.items()}}
    _write_manifest(run, pending)
    for name, data in files.items():
        atomic_write(run / name, data, root=run)
    _write_manifest(run, {**current, **{n: [h] for n, h in new.items()}})


def write_json_files(run: Path, objects: dict[str, Any]) -> None:
    """``write_files`` of JSON objects (indented, sorted keys, final newline)."""
    import json

    write_files(run, {n: (json.dumps(o, indent=2, sort_keys=True) + "\n").encode() for n, o in objects.items()})


def _write_manifest(run: Path, files: dict[str, list[str]]) -> None:
    write_json(run / MANIFEST, {"format": MANIFEST_FORMAT, "sha256": files}, root=run)


def verify(run: Path, name: str, data: bytes) -> None:
    """CheckpointError unless ``data`` (the bytes of RUN/name) match the manifest."""
    entry = read_manifest(run).get(name)
    if entry is None:
        raise CheckpointError(f"{Path(run) / name} is not listed in {MANIFEST}; it was not written by scorematch "
                              "or its write was interrupted")
    if sha256(data) not in entry:
        raise CheckpointError(f"{Path(run) / name} does not match its SHA-256 in {MANIFEST} (changed or corrupted "
                              "after it was written); restore it")


def read_verified(run: Path, name: str, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of RUN/name, read once and verified against the manifest."""
    p = Path(run) / name
    data = read_file(p, what, max_bytes=max_bytes) if max_bytes else read_file(p, what, max_bytes=None)
    verify(run, name, data)
    return data


def run_config(run: Path) -> TrainConfig:
    """config.json of a run folder: validated field by field, then checked against the manifest
    (so a malformed file is named for what is wrong with it, not only for its checksum)."""
    run = Path(run)
    p = run / "config.json"
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    if not p.exists() and not p.is_symlink():
        raise CheckpointError(f"no config at {p}; is this a scorematch run folder (made by `scorematch train`)?")
    data = read_file(p, "config file")
    cfg = parse_config(data, p)
    verify(run, "config.json", data)
    return cfg
