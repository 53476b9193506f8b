"""Checkpoints and weights of a run folder: atomic writes, verified on load, no pickle anywhere.

A checkpoint is two files, ``step_XXXXXXXX.safetensors`` (every tensor: weights, EMA weights,
optimizer moments, RNG states) and ``step_XXXXXXXX.json``: its manifest (the SHA-256 of the
tensor file and of the JSON state) and the state (step, world size, Adam's hyper-parameters).
Both are written to a temporary file, fsynced and renamed, so a crash leaves either the old or
the new checkpoint, never half of one. On load both checksums are verified, every field of
the state is checked (``scorematch.run.folder.validate``) and every tensor against the model it is
loaded into (``check_fits``); a checkpoint that fails is reported and the previous one is used.
``weights.safetensors`` is checksummed in the run folder's manifest (``scorematch.run.folder.manifest``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from scorematch.errors import CheckpointError, TrainingError
from scorematch.files import OutputError, atomic_write, probe_writable, remove_files, write_json
from scorematch.run.folder import manifest
from scorematch.run.folder.validate import check_checkpoint_state, note, parse_json, read_file

CHECKPOINT_FORMAT = 2
_STEP = re.compile(r"^step_(\d{8,12})\.json$")


def check_writable(folder: Path) -> None:
    """Fail now, before training, when ``folder`` cannot be created or written."""
    try:
        probe_writable(folder / ".write-test", root=folder)
    except OutputError as err:
        raise TrainingError(
            f"cannot write to the run folder {folder}: {err}; choose another --out folder, free disk space "
            "or fix its permissions"
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


def _state_hash(state: dict[str, Any]) -> str:
    return manifest.sha256(json.dumps(state, sort_keys=True, separators=(",", ":")).encode())


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                    keep: int = 2, root: Path | None = None) -> Path:
    """Write checkpoint ``step`` atomically (tensors, then the JSON with both checksums) and
    delete all but the newest ``keep``; no folder below ``root`` is entered through a link."""
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"step": str(step)})
    stem = folder / f"step_{step:08d}"
    tensor_file = stem.with_suffix(".safetensors")
    state = {**state, "step": step}
    atomic_write(tensor_file, data, root=root)
    write_json(stem.with_suffix(".json"), {
        "format": CHECKPOINT_FORMAT, "state": state,
        "sha256": {tensor_file.name: manifest.sha256(data), "state": _state_hash(state)},
    }, root=root)
    old = list_checkpoints(folder)[:-keep]
    if old:
        remove_files(folder, [n for s in old for n in (s.name + ".json", s.name + ".safetensors")], root=root)
    return tensor_file


def step_of(stem: Path) -> int:
    return int(stem.name.split("_", 1)[1])


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint stems (path without suffix) in ``folder``, oldest first."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    stems = [folder / p.name[: -len(".json")] for p in folder.iterdir() if _STEP.match(p.name)]
    return sorted(stems, key=step_of)


def orphans(folder: Path) -> list[str]:
    """Tensor files of checkpoints whose JSON was never written (a kill between the two writes)."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [p.name for p in folder.glob("step_*.safetensors") if not p.with_suffix(".json").exists()]


def load_checkpoint(stem: Path, max_step: int = 2**62) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint: (tensors, state). CheckpointError naming the file when
    either checksum fails or a field of the state is out of range."""
    js, st = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    doc = parse_json(read_file(js, "checkpoint"), js)
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT or set(doc) != {"format", "state", "sha256"}:
        raise CheckpointError(f"{js} is not a scorematch checkpoint of format {CHECKPOINT_FORMAT}; delete it to "
                              "use an earlier one")
    sums = doc["sha256"]
    if not isinstance(sums, dict) or set(sums) != {st.name, "state"}:
        raise CheckpointError(f"{js} has a malformed manifest (sha256 of {st.name} and of the state)")
    state = doc["state"]
    if not isinstance(state, dict) or _state_hash(state) != sums["state"]:
        raise CheckpointError(f"{js} does not match its SHA-256 (its state was changed after it was written); "
                              "delete it to use an earlier checkpoint")
    check_checkpoint_state(state, str(js), step_of(stem), max_step)
    data = read_file(st, "checkpoint", max_bytes=None)
    if manifest.sha256(data) != sums[st.name]:
        raise CheckpointError(f"checkpoint {st} is truncated or corrupted (checksum mismatch); delete it to resume "
                              "from the previous checkpoint")
    return parse_safetensors(data, f"checkpoint {st}"), state


Expected = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def check_fits(tensors: Mapping[str, torch.Tensor], expected: Expected, where: str,
               optional: Callable[[str], bool] = lambda k: False) -> None:
    """Every tensor of ``expected`` present with its shape and dtype, nothing else (except keys
    ``optional`` accepts, checked when present), every floating tensor finite."""
    missing = sorted(k for k in expected if k not in tensors and not optional(k))
    extra = sorted(k for k in tensors if k not in expected)
    if missing or extra:
        what = "; ".join(x for x in (f"missing {', '.join(missing[:3])}" if missing else "",
                                      f"unexpected {', '.join(extra[:3])}" if extra else "") if x)
        raise CheckpointError(f"{where} does not fit this run's model ({what}); it is from another run or model")
    for k in sorted(tensors):
        t, (shape, dtype) = tensors[k], expected[k]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise CheckpointError(f"{where}: {k} has shape {tuple(t.shape)} ({t.dtype}), this run's model needs "
                                  f"{tuple(shape)} ({dtype}); it is from another run or model")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: {k} holds NaN or inf values; delete it to use an earlier checkpoint")


Fits = Callable[[dict[str, torch.Tensor], dict[str, Any], str], None]


def fits_training(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                  g_data: torch.Generator, g_noise: torch.Generator) -> Fits:
    """The check that a checkpoint can resume training ``model``: its weights, EMA, Adam moments
    (for every parameter or none), data generator and one noise generator per process of the
    run that wrote it, each with this run's names, shapes and dtypes; Adam's settings of the
    same kind."""
    exp = {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    exp.update({f"ema.{k}": (tuple(v.shape), v.dtype) for k, v in ema.state_dict().items()})
    params = list(model.parameters())
    for i, p in enumerate(params):
        exp.update({f"optim.{i}.exp_avg": (tuple(p.shape), p.dtype), f"optim.{i}.exp_avg_sq": (tuple(p.shape), p.dtype),
                    f"optim.{i}.step": ((), torch.get_default_dtype())})
    exp["rng.data"] = (tuple(g_data.get_state().shape), torch.uint8)
    noise, group = tuple(g_noise.get_state().shape), set(opt.param_groups[0])

    def fits(tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str) -> None:
        expected = {**exp, **{f"rng.noise.{r}": (noise, torch.uint8) for r in range(state["world_size"])}}
        check_fits(tensors, expected, where, optional=lambda k: k.startswith("optim."))
        held = {int(k.split(".")[1]) for k in tensors if k.startswith("optim.")}
        if any(sum(f"optim.{i}.{k}" in tensors for k in ("exp_avg", "exp_avg_sq", "step")) != 3 for i in held):
            raise CheckpointError(f"{where} holds part of the optimizer state of a parameter; it is damaged")
        g = state["optimizer"]["param_groups"][0]
        if set(g) != group or len(g["params"]) != len(params):
            raise CheckpointError(f"{where} holds the optimizer of another model ({len(g['params'])} parameters, "
                                  f"this one has {len(params)})")

    return fits


def latest_checkpoint(folder: Path, fits: Fits | None = None,
                      max_step: int = 2**62) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint that verifies (and that ``fits(tensors, state, name)`` accepts);
    a bad newer one is reported on stderr and skipped."""
    for stem in reversed(list_checkpoints(folder)):
        try:
            tensors, state = load_checkpoint(stem, max_step)
            if fits is not None:
                fits(tensors, state, str(stem.with_suffix(".safetensors")))
            return tensors, state
        except CheckpointError as err:
            note(f"{err}; trying the previous checkpoint")
    return None


def load_weights(run: Path, name: str = "weights.safetensors") -> dict[str, torch.Tensor]:
    """Tensors of RUN/name, verified against the run's manifest; CheckpointError when missing,
    changed or broken."""
    return parse_safetensors(manifest.read_verified(run, name, "weights file"), str(Path(run) / name))


def parse_safetensors(data: bytes, label: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors bytes ``data``; CheckpointError '``label`` is not a valid
    safetensors file' when they do not parse."""
    try:
        return st_load(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{label} is not a valid safetensors file ({err})") from None


def save_weights(run: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 name: str = "weights.safetensors") -> None:
    """RUN/name (safetensors), recorded in the run's manifest."""
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    manifest.write_files(run, {name: data})
