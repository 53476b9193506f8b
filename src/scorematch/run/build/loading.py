"""A trained run back in memory: its model (``load``), its data (``run_data``, ``held_out``),
and the score of its model closest to the data distribution (``data_score``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorematch.data import Dataset, Standardization
from scorematch.errors import CheckpointError, ConfigError
from scorematch.models import Standardized
from scorematch.run.build import user_model as custom
from scorematch.run.build.parts import needed_conditioning
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder.config import TrainConfig
from scorematch.run.folder.runfiles import read_run_info
from scorematch.run.folder.validate import note
from scorematch.run.system import limits


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.`` with the prefix removed ("model.net.0.weight" -> "net.0.weight")."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
         trust_model_module: bool = False) -> nn.Module:
    """Rebuild the trained module of a run folder (or a model written by ``scorematch.save``);
    ``m.score(x)`` (or ``m.score(x, sigma)``, ``m.score(x, t)``) then gives its score in data
    space whatever the parameterisation (energy: -grad E).

    A run trained on standardised data gives a ``scorematch.models.Standardized`` (its
    ``.model`` is the network, which saw z = (x - mu) / sd). A user's own class is rebuilt from
    its import path and ``config`` (see ``scorematch.run.build.user_model``). Loads the EMA weights by
    default (what sampling should use); never unpickles anything. config.json, run.json and
    weights.safetensors are validated field by field and checked against the run's manifest;
    weights that fail are reported and the newest checkpoint that verifies is used instead.
    ``m.run_info`` holds the run's config and run.json (the same as ``train(...).model.run_info``).

    A user's class is rebuilt only when its module is already imported, or with
    ``trust_model_module=True`` (the folder's module is then imported: only for folders you trust),
    or when it is listed in SCOREMATCH_TRUSTED_MODULES; a run folder never makes scorematch
    import a module otherwise (docs/security.md).
    """
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise ConfigError(f"load needs the path of a run folder (a str or pathlib.Path), got "
                          f"{type(path).__name__}: e.g. scorematch.load('runs/NAME')")
    device = check_device(device)
    run = Path(path)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    with custom.trusting(bool(trust_model_module)):
        if not (run / "run.json").exists() and (run / "weights.safetensors").exists():
            return custom.load_bare(run, device)
        return _load_run(run, ema, device)


def check_device(device: Any) -> torch.device:
    """``device`` (a name or a torch.device) as a device this machine has; ConfigError naming
    the ones it has otherwise (``scorematch.run.system.environment.pick_device``)."""
    from scorematch.run.system.environment import pick_device

    if isinstance(device, torch.device):
        device = str(device)
    return pick_device(device)


def _load_run(run: Path, ema: bool, device: torch.device) -> nn.Module:
    cfg = manifest.run_config(run)
    info = read_run_info(run, cfg)
    spec = info["model"]
    n_params = limits.parameter_count(lambda: custom.rebuild(spec))
    limits.check_fits(f"the model in {run / 'run.json'} ({n_params} parameters)", 4 * n_params, device,
                      "run.json does not describe a model scorematch trained here")
    model = custom.rebuild(spec)
    _check_conditioning(model, cfg.objective, run)
    state = _weights(run, "ema" if ema else "model", model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()[:200]
        raise CheckpointError(f"weights in {run} do not fit the model in run.json: {first}") from None
    model = wrap_standardized(model, info)
    model.run_info = run_info(cfg, info)
    return model.to(device).eval()


def _check_conditioning(model: nn.Module, objective: str, run: Path) -> None:
    needs, has = needed_conditioning(objective), getattr(model, "conditioning", "none")
    if has != needs:
        raise CheckpointError(f"{run / 'run.json'} names a {has}-conditioned model, but objective {objective!r} "
                              f"trains a {needs}-conditioned one; restore run.json")


def _weights(run: Path, prefix: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``prefix`` ("ema" or "model") weights of weights.safetensors, verified; else of the
    newest checkpoint that verifies and fits ``model``."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    weights = run / "weights.safetensors"
    if weights.exists() or weights.is_symlink():
        try:
            tensors = ckpt.load_weights(run)
            for p in ("model", "ema"):
                ckpt.check_fits(split_prefix(tensors, p), expected, str(weights))
            if set(tensors) == {f"{p}.{k}" for p in ("model", "ema") for k in expected}:
                return split_prefix(tensors, prefix)
            raise CheckpointError(f"{weights} holds tensors other than the model's and its EMA's")
        except CheckpointError as err:
            if not ckpt.list_checkpoints(run / "checkpoints"):
                raise
            note(f"{err}; using the newest checkpoint instead")
    elif ckpt.list_checkpoints(run / "checkpoints"):
        note(f"{weights} is missing; using the newest checkpoint that verifies instead")

    def fits(tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str) -> None:
        ckpt.check_fits(split_prefix(tensors, "model"), expected, where)
        ema_state = {k[len("module."):]: v for k, v in split_prefix(tensors, "ema").items() if k.startswith("module.")}
        ckpt.check_fits(ema_state, expected, where)

    found = ckpt.latest_checkpoint(run / "checkpoints", fits)
    if found is None:
        raise CheckpointError(f"{run} has neither weights.safetensors nor a usable checkpoint")
    state = split_prefix(found[0], prefix)
    if prefix == "ema":
        state = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    return state


def run_info(cfg: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """What ``model.run_info`` holds: the config and run.json's sections."""
    return {"config": cfg.to_dict(), **info}


def wrap_standardized(model: nn.Module, info: dict[str, Any]) -> nn.Module:
    """``Standardized(model, mu, sd)`` when run.json records a standardisation, else ``model``."""
    st = info["data"].get("standardize")
    if not st:
        return model
    s = Standardization.from_dict(st)
    return Standardized(model, s.mean, s.std)


def run_data(run_dir: Path, cfg: TrainConfig, info: dict[str, Any] | None) -> Dataset:
    """The whole data set of a run, from run.json's absolute ``source`` (so from any working
    directory), checked against its recorded fingerprint (DataChangedError when it changed)."""
    from scorematch.data import check_fingerprint, resolve_data

    data = (info or {}).get("data", {})
    source = data.get("source", cfg.data)
    recorded = data.get("fingerprint") or {}
    if source.startswith("run:"):
        ds = custom.load_memory_data(run_dir, data.get("kind", "vector"))
        if recorded.get("sha256") and recorded["sha256"] != _sha(run_dir / custom.MEMORY_DATA):
            from scorematch.errors import DataChangedError

            raise DataChangedError(f"{run_dir / custom.MEMORY_DATA} (this run's data) changed since training; "
                                   "restore it or train a new run")
        return ds
    if recorded:
        check_fingerprint(recorded, source, f"run {run_dir}")
    return resolve_data(source, n=cfg.n_data, seed=cfg.seed, csv_header=data.get("csv_header", cfg.csv_header))


def _sha(path: Path) -> str:
    from scorematch.data.identity import sha256_file

    return sha256_file(path)


def held_out(run_dir: Path) -> tuple[Any, torch.Tensor]:
    """The run's data set and its held-out split (recomputed from the config's seed), in data space."""
    from scorematch.data import train_test_split

    run = Path(run_dir)
    cfg = manifest.run_config(run)
    info = read_run_info(run, cfg) if (run / "run.json").exists() else None
    full = run_data(run, cfg, info)
    _, test = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    return full, test.x


def data_score(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's score of the data: its own for unconditional models, at the smallest noise
    level sigma_L for noise-conditional ones (EDM: its sigma_min), at t = 1e-3 for time-conditional ones."""
    cond = getattr(model, "conditioning", "none")
    schedule = model.run_info.get("schedule", {})
    if cond == "sigma":
        sigma_l = float(schedule["sigmas"][-1] if "sigmas" in schedule else schedule["sigma_min"])
        return lambda x: model.score(x, torch.full((x.shape[0],), sigma_l, dtype=x.dtype, device=x.device))
    if cond == "time":
        return lambda x: model.score(x, torch.full((x.shape[0],), 1e-3, dtype=x.dtype, device=x.device))
    return model.score
