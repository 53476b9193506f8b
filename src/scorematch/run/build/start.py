"""What a training run starts from: its data (a spec, or a tensor, array or Dataset in memory),
the standardisation of that data, and its model (built from the config, or a user's module),
for a new run or one resumed from its folder."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorematch import _compile
from scorematch.data import (
    Dataset,
    Standardization,
    absolute_spec,
    fingerprint,
    from_memory,
    resolve_data,
    standardization_for,
    train_test_split,
)
from scorematch.data.arrays import csv_header_of
from scorematch.run.build import user_model as custom
from scorematch.run.build.loading import run_data
from scorematch.run.build.parts import build_for
from scorematch.run.folder.config import TrainConfig
from scorematch.run.system import limits


@dataclasses.dataclass
class RunData:
    """The training split in the model's space, and what run.json records about the data."""

    train: Dataset
    standardization: Standardization | None
    source: str
    fingerprint: dict[str, Any]
    memory: Dataset | None = None  # data given in memory, to be written into the run folder
    csv_header: str | None = None  # a .csv's header line, resolved: "yes" (skipped) or "no"


def prepare_data(cfg: TrainConfig, run_dir: Path, info: dict[str, Any] | None, data: Any = None) -> RunData:
    """The run's training split, standardised when ``cfg.standardize`` is "auto" and it is vector
    data (statistics of the training split; on resume, those run.json recorded)."""
    header = None
    if info is not None:  # resuming: the data where run.json says, checked against its fingerprint
        full = run_data(run_dir, cfg, info)
        source, fp = info["data"].get("source", cfg.data), info["data"].get("fingerprint") or {}
    elif data is not None:
        _check_dataset_size(data)
        full = from_memory(data)
        source, fp = "run:" + custom.MEMORY_DATA, {}
    else:
        full = resolve_data(cfg.data, n=cfg.n_data, seed=cfg.seed, csv_header=cfg.csv_header)
        source, fp = absolute_spec(cfg.data), fingerprint(cfg.data, cfg.n_data, cfg.seed)
        header = csv_header_of(source, cfg.csv_header) if source.lower().endswith(".csv") else None
    ds, _ = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    if info is not None:
        recorded = info["data"].get("standardize")
        st = Standardization.from_dict(recorded) if recorded else None
    else:
        st = standardization_for(ds.x, ds.kind, cfg.standardize)
    model_space = dataclasses.replace(ds, x=st.forward(ds.x)) if st is not None else ds
    return RunData(model_space, st, source, fp, memory=full if data is not None and info is None else None,
                   csv_header=header if info is None and data is None else None)


def _check_dataset_size(data: Any) -> None:
    """A torch Dataset given as data is stacked into one tensor: its length times its first
    item's size must fit in memory (checked before any other item is read)."""
    if not isinstance(data, torch.utils.data.Dataset) or isinstance(data, torch.Tensor):
        return
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return  # from_memory says that a length is needed
    if n < 1:
        return
    item = data[0]
    item = item[0] if isinstance(item, tuple | list) and item else item
    if isinstance(item, torch.Tensor):
        limits.check_items(n, tuple(item.shape))


def prepare_model(cfg: TrainConfig, ds: Dataset, info: dict[str, Any] | None,
                  model: nn.Module | None) -> tuple[nn.Module, nn.Module]:
    """(plain, trained): the module whose weights are saved and averaged, and the one the loss
    calls (the same, or its compiled form). A user's module is checked against the protocol of
    ``scorematch.run.build.user_model``; on resume without one, the class run.json names is rebuilt."""
    if model is None and info is not None and ":" in info["model"]["name"]:
        model = custom.rebuild(info["model"])
    if model is None:
        built = build_for(cfg, ds)
        return built, built
    trained = custom.check_model(model, ds, cfg.objective)
    return plain(trained), trained


def plain(model: nn.Module) -> nn.Module:
    """``model`` without torch.compile's wrapper (sharing its parameters)."""
    if _compile.is_compiled(model):
        return model._orig_mod
    if isinstance(model, custom.ForwardScore) and _compile.is_compiled(model.module):
        return type(model)(model.module._orig_mod)
    return model


def data_section(run_data_: RunData, kind: str, n_train: int, x: torch.Tensor) -> dict[str, Any]:
    """run.json's ``data``: name, kind, shape, the range lo/hi of the data the model sees
    (standardised when ``standardize`` is set: the Langevin start box of ``generate``), the
    absolute source, its fingerprint and the standardisation (per-dimension mean and std)."""
    ds = run_data_.train
    st = run_data_.standardization
    section = {"name": ds.name, "kind": kind, "sample_shape": list(ds.sample_shape),
               "lo": float(x.min()), "hi": float(x.max()), "n_train": n_train,
               "source": run_data_.source, "fingerprint": run_data_.fingerprint,
               "standardize": st.to_dict() if st is not None else None}
    if run_data_.csv_header is not None:
        section["csv_header"] = run_data_.csv_header
    return section


def say_standardized(st: Standardization | None) -> None:
    if st is not None and (st.std.max() > 10 or st.std.min() < 0.1 or st.mean.abs().max() > 10):
        print(f"scorematch: standardising the data (mean up to {float(st.mean.abs().max()):.4g}, std "
              f"{float(st.std.min()):.4g} to {float(st.std.max()):.4g}); samples, scores and likelihoods are "
              "returned in data units", file=sys.stderr)
