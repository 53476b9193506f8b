"""What every scorematch model shares: a ``score`` method, its constructor config, a registry.

A model is an ``nn.Module`` whose ``score(x)`` (unconditional), ``score(x, sigma)``
(noise-conditional) or ``score(x, t)`` (time-conditional) returns grad_x log p
for a batch.  ``config`` holds the constructor keyword arguments, so a run folder
can rebuild the model from JSON and load its safetensors weights: loading never
runs pickled code.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from scorematch.errors import CheckpointError, ConfigError, ModelError

Conditioning = Literal["none", "sigma", "time"]

MODEL_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` rebuildable by name from a run folder's config."""
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a registered model from its class name and constructor keyword arguments."""
    if name not in MODEL_REGISTRY:
        raise CheckpointError(
            f"unknown model class {name!r} in the run config; known: {', '.join(sorted(MODEL_REGISTRY))}"
        )
    return MODEL_REGISTRY[name](**config)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The JSON-serialisable description {"name", "config"} that ``build_model`` inverts."""
    return {"name": type(model).__name__, "config": dict(model.config)}


def label_table(n_classes: int, dim: int) -> nn.Embedding | None:
    """The class-label embedding of a class-conditional model: n_classes + 1 rows of size ``dim``.

    Row ``n_classes`` is the null label (no class), the one classifier-free guidance trains with
    label dropout. ``n_classes = 0`` (an unconditional model) has no table, so its weights and
    config are those of a model built before labels existed.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0:
        raise ConfigError(f"n_classes must be an integer >= 0 (0: unconditional), got {n_classes!r}")
    return nn.Embedding(n_classes + 1, dim) if n_classes else None


def add_label_embedding(e: torch.Tensor, table: nn.Embedding | None, labels: torch.Tensor | None) -> torch.Tensor:
    """The conditioning embedding e (n, dim) plus the label embedding B[y]; e itself when unconditional.

    ``labels`` is an integer tensor of shape (n,) with values in 0..n_classes (n_classes: the null
    label); None means the null label for every row.
    """
    if table is None:
        if labels is not None:
            raise ModelError("this model is unconditional (n_classes=0) and takes no labels; "
                             "build it with n_classes=K to train it on labelled data")
        return e
    null = table.num_embeddings - 1
    n = e.shape[0]
    if labels is None:
        labels = torch.full((n,), null, dtype=torch.long, device=e.device)
    elif not isinstance(labels, torch.Tensor) or labels.shape != (n,) or labels.is_floating_point():
        got = f"shape {tuple(labels.shape)}, dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else (
            type(labels).__name__)
        raise ModelError(f"labels must be an integer tensor of shape ({n},), one label per row of x; got {got}")
    elif not bool(((labels >= 0) & (labels <= null)).all()):
        raise ModelError(f"labels must lie in 0..{null} ({null} is the null label), "
                         f"got min {int(labels.min())}, max {int(labels.max())}")
    return e + table(labels.to(device=e.device, dtype=torch.long)).to(e.dtype)
