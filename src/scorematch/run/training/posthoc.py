"""Post-hoc EMA of a run (Karras et al. 2024; the mathematics in ``scorematch.ema``).

With ``posthoc_ema_every = K`` a run tracks power-function EMAs of sigma_rel 0.05 and 0.10 of its
weights and writes them every K steps, and at every checkpoint (so that a resumed run continues
them), to

    RUN/posthoc-ema/step_XXXXXXXX.safetensors   the averages, tensors "I.NAME" for the I-th sigma_rel
    RUN/posthoc-ema/step_XXXXXXXX.json          format, step of the averages, gammas, SHA-256 of the tensors

(the JSON is written last: a snapshot without it is incomplete and ignored). A resumed run takes
its averages from the snapshot of its checkpoint's step and removes the snapshots after it.

``posthoc_run(RUN, sigma_rel, OUT)`` (``scorematch ema``) reconstructs the EMA of any length
sigma_rel at the last snapshot and writes it as a new run folder OUT: RUN's config.json and
run.json (with a ``posthoc_ema`` record), and weights.safetensors holding RUN's final weights
("model.*") and the reconstructed average ("ema.*", what sample, eval, plot and report use).
Nothing in RUN is changed and OUT must not exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from scorematch.ema import DEFAULT_SIGMA_RELS, PowerEMA, Snapshot, reconstruct, sigma_rel_to_gamma
from scorematch.errors import CheckpointError, ConfigError
from scorematch.files import atomic_write, ensure_folder, remove_files, write_json
from scorematch.run.build.user_model import MEMORY_DATA
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder.runfiles import LOSS_CSV, read_run_info
from scorematch.run.folder.validate import parse_json, read_file

FOLDER = "posthoc-ema"
SNAPSHOT_FORMAT = 1
_STEP = re.compile(r"^step_(\d{8,12})\.json$")


def attach(run: Any) -> None:
    """Give a run (``scorematch.run.training.loop.Run``; called on rank 0) its tracker ``run.phema``
    when ``posthoc_ema_every`` > 0. Resuming at step > 0 restores the averages from the snapshot
    of that step; snapshots after it (left by a run stopped after them) are removed."""
    every, run_dir, step = run.cfg.posthoc_ema_every, run.run_dir, run.step
    if not every:
        return
    tracker = PowerEMA(DEFAULT_SIGMA_RELS)
    folder = run_dir / FOLDER
    stems = list_snapshots(folder)
    later = [s for s in stems if _file_step(s) > step]
    if later:
        remove_files(folder, [n for s in later for n in (s.name + ".json", s.name + ".safetensors")], root=run_dir)
    if step > 0:
        stem = folder / f"step_{step:08d}"
        if stem not in stems:
            raise CheckpointError(f"{stem}.json is missing: the post-hoc EMA of step {step} cannot be continued; "
                                  "restore it, or train a new run")
        snaps = read_snapshot(stem)
        tracker.load_state_dict({"step": snaps[0].step, "gammas": [s.gamma for s in snaps],
                                 "averages": [s.state for s in snaps]})
    run.phema = tracker


def update(run: Any) -> None:
    """Fold the weights after optimiser step ``run.step`` into the averages (no-op without a tracker)."""
    if run.phema is not None:
        run.phema.update(run.step, run.model.state_dict())


def snapshot_if_due(run: Any, checkpoint: bool) -> None:
    """Write the snapshot of ``run.step`` when it is a multiple of ``posthoc_ema_every`` or a
    checkpoint follows (so a resumed run finds the averages of its checkpoint's step)."""
    tracker, step = run.phema, run.step
    if tracker is None or tracker.averages is None or not (step % run.cfg.posthoc_ema_every == 0 or checkpoint):
        return
    snaps = tracker.snapshots()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in enumerate(snaps) for k, v in s.state.items()}
    data = st_save(tensors)
    stem = run.run_dir / FOLDER / f"step_{step:08d}"
    ensure_folder(stem.parent, root=run.run_dir)
    atomic_write(stem.with_suffix(".safetensors"), data, root=run.run_dir)
    write_json(stem.with_suffix(".json"), {"format": SNAPSHOT_FORMAT, "step": tracker.step,
                                           "gammas": [s.gamma for s in snaps],
                                           "sha256": manifest.sha256(data)}, root=run.run_dir)


def _file_step(stem: Path) -> int:
    return int(stem.name.split("_", 1)[1])


def list_snapshots(folder: Path) -> list[Path]:
    """Snapshot stems (with their JSON written) in ``folder``, oldest first."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted((folder / p.name[:-5] for p in folder.iterdir() if _STEP.match(p.name)), key=_file_step)


def read_snapshot(stem: Path) -> list[Snapshot]:
    """The averages of one snapshot, verified (format, fields, SHA-256, tensor names)."""
    js = stem.with_suffix(".json")
    doc = parse_json(read_file(js, "post-hoc EMA snapshot"), js)
    if (not isinstance(doc, dict) or set(doc) != {"format", "step", "gammas", "sha256"}
            or doc["format"] != SNAPSHOT_FORMAT or not isinstance(doc["step"], int) or doc["step"] < 1
            or not isinstance(doc["gammas"], list) or not doc["gammas"]
            or not all(isinstance(g, int | float) and g >= 0 for g in doc["gammas"])):
        raise CheckpointError(f"{js} is not a post-hoc EMA snapshot of format {SNAPSHOT_FORMAT}; delete it and "
                              "its .safetensors file")
    data = read_file(stem.with_suffix(".safetensors"), "post-hoc EMA snapshot", max_bytes=None)
    if manifest.sha256(data) != doc["sha256"]:
        raise CheckpointError(f"{stem}.safetensors does not match the SHA-256 in {js.name} (changed or truncated); "
                              "delete both files to use the other snapshots")
    tensors = ckpt.parse_safetensors(data, f"{stem}.safetensors")
    states: list[dict[str, torch.Tensor]] = [{} for _ in doc["gammas"]]
    for key, v in tensors.items():
        i, _, name = key.partition(".")
        if not i.isdigit() or int(i) >= len(states) or not name:
            raise CheckpointError(f"{stem}.safetensors holds a tensor {key!r} of no average; delete the snapshot")
        states[int(i)][name] = v
    return [Snapshot(doc["step"], float(g), st) for g, st in zip(doc["gammas"], states, strict=True)]


def posthoc_run(run: str | Path, sigma_rel: float, out: str | Path | None = None) -> Path:
    """Write the run folder of RUN's post-hoc EMA of length ``sigma_rel`` (see the module
    docstring); default OUT: RUN-ema<sigma_rel> beside RUN. Returns OUT."""
    run = Path(run)
    cfg = manifest.run_config(run)  # refuses a folder that is not a run
    sigma_rel_to_gamma(sigma_rel)  # refuses a length no power EMA has, before any reading
    stems = list_snapshots(run / FOLDER)
    if not stems:
        raise ConfigError(f"{run} has no post-hoc EMA snapshots ({run / FOLDER} is empty or missing); train with "
                          "--posthoc-ema-every K to keep them")
    target = Path(out) if out is not None else run.parent / f"{run.name}-ema{sigma_rel:g}"
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} exists; scorematch ema never overwrites: pass another --out")
    snapshots = [s for stem in stems for s in read_snapshot(stem)]
    weights = ckpt.load_weights(run)
    ema_keys = {k[len("ema."):]: v for k, v in weights.items() if k.startswith("ema.")}
    state = reconstruct(snapshots, sigma_rel)
    floating = {k: (tuple(v.shape), v.dtype) for k, v in ema_keys.items() if v.is_floating_point()}
    ckpt.check_fits({k: v.to(floating[k][1]) if k in floating else v for k, v in state.items()}, floating,
                    f"the post-hoc EMA snapshots of {run}")
    tensors = {k: v for k, v in weights.items() if k.startswith("model.")}
    tensors.update({f"ema.{k}": (state[k].to(v.dtype) if k in floating else v) for k, v in ema_keys.items()})
    info: dict[str, Any] = read_run_info(run, cfg)
    info["posthoc_ema"] = {"sigma_rel": float(sigma_rel), "gamma": sigma_rel_to_gamma(sigma_rel),
                           "from": str(run.resolve()), "at_step": max(s.step for s in snapshots),
                           "snapshots": len(stems)}
    ensure_folder(target)
    manifest.write_json_files(target, {"config.json": cfg.to_dict(), "run.json": info})
    ckpt.save_weights(target, tensors, {"posthoc_ema_sigma_rel": f"{float(sigma_rel):g}"})
    for name in (MEMORY_DATA, LOSS_CSV):  # data given in memory (read back by eval), the loss curve
        if (run / name).is_file():
            atomic_write(target / name, read_file(run / name, name, max_bytes=None), root=target)
    return target
