"""Checkpoints and weights of a run folder: atomic writes, checksummed safetensors checkpoints, no pickle anywhere.

A checkpoint is two files, ``step_XXXXXXXX.safetensors`` (every tensor: weights, EMA weights,
optimizer moments, RNG states) and ``step_XXXXXXXX.json`` (step, optimizer hyper-parameters,
the SHA-256 of the tensor file). Both are written to a temporary file, fsynced and renamed, so
a crash leaves either the old or the new checkpoint, never half of one; a truncated or
corrupted file is detected by its checksum and the previous checkpoint is used instead.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from scorematch.errors import CheckpointError, TrainingError
from scorematch.files import atomic_write, write_json


def check_writable(folder: Path) -> None:
    """Fail now, before training, when ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        atomic_write(probe, b"x" * 4096)
        probe.unlink()
    except OSError as err:
        raise TrainingError(
            f"cannot write to the run folder {folder}: {err.strerror or err}; "
            "choose another --out folder, free disk space or fix its permissions"
        ) from None


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON (hyper-parameters)."""
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``."""
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"step": str(step)})
    stem = folder / f"step_{step:08d}"
    atomic_write(stem.with_suffix(".safetensors"), data)
    write_json(stem.with_suffix(".json"), {**meta, "step": step, "sha256": hashlib.sha256(data).hexdigest()})
    for old in list_checkpoints(folder)[:-keep]:
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return stem.with_suffix(".safetensors")


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint stems (path without suffix) in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p.with_suffix("") for p in folder.glob("step_*.json"))


def load_checkpoint(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint; CheckpointError when it is truncated or corrupted."""
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    try:
        meta = json.loads(js.read_text())
        data = st.read_bytes()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {stem} cannot be read ({err}); delete it to use an earlier one") from None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {st} is truncated or corrupted (checksum mismatch); delete it to resume "
            "from the previous checkpoint"
        )
    try:
        return st_load(data), meta
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"checkpoint {st} is not a valid safetensors file ({err})") from None


def latest_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint that verifies; a bad newer one is reported and skipped."""
    for stem in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(stem)
        except CheckpointError as err:
            print(f"scorematch: {err}; trying the previous checkpoint", file=sys.stderr)
    return None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a clear error when it is missing or broken."""
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"no weights at {path}; was the run finished or checkpointed?") from None
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err})") from None


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    atomic_write(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata))
