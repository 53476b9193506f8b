"""A trained run back in memory: its model (``load``), its data (``held_out``), and the score
of its model closest to the data distribution (``data_score``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorematch.errors import CheckpointError
from scorematch.models import build_model
from scorematch.run import checkpoint as ckpt
from scorematch.run.config import load_config
from scorematch.run.runinfo import read_run_info


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.`` with the prefix removed ("model.net.0.weight" -> "net.0.weight")."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained module of a run folder; ``m.score(x)`` (or ``m.score(x, sigma)``,
    ``m.score(x, t)``) then gives its score whatever the parameterisation (energy: -grad E).

    Loads the EMA weights by default (what sampling should use); never unpickles anything.
    ``m.run_info`` holds the run's config and noise schedule.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    cfg = load_config(run)
    info = read_run_info(run)
    try:
        model = build_model(info["model"]["name"], info["model"]["config"])
    except TypeError as err:
        raise CheckpointError(f"{run / 'run.json'} has a model config this version cannot build: {err}") from None
    weights = run / "weights.safetensors"
    if weights.exists():
        state = split_prefix(ckpt.load_weights(weights), "ema" if ema else "model")
    else:
        found = ckpt.latest_checkpoint(run / "checkpoints")
        if found is None:
            raise CheckpointError(f"{run} has neither weights.safetensors nor a usable checkpoint")
        state = split_prefix(found[0], "ema" if ema else "model")
        if ema:
            state = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {run} do not fit the model in run.json: {err}") from None
    model.run_info = {"config": cfg.to_dict(), **info}
    return model.to(device).eval()


def held_out(run_dir: Path) -> tuple[Any, torch.Tensor]:
    """The run's data set and its held-out split (recomputed from the config's seed)."""
    from scorematch.data import resolve_data, train_test_split

    cfg = load_config(run_dir)
    full = resolve_data(cfg.data, n=cfg.n_data, seed=cfg.seed)
    _, test = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    return full, test.x


def data_score(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's score of the data: its own for unconditional models, at the smallest noise
    level sigma_L for noise-conditional ones, at t = 1e-3 for time-conditional ones."""
    cond = getattr(model, "conditioning", "none")
    schedule = model.run_info.get("schedule", {})
    if cond == "sigma":
        sigma_l = float(schedule["sigmas"][-1])
        return lambda x: model.score(x, torch.full((x.shape[0],), sigma_l, dtype=x.dtype, device=x.device))
    if cond == "time":
        return lambda x: model.score(x, torch.full((x.shape[0],), 1e-3, dtype=x.dtype, device=x.device))
    return model.score
