"""What every scorematch model shares: a ``score`` method, its constructor config, a registry.

A model is an ``nn.Module`` whose ``score(x)`` (unconditional), ``score(x, sigma)``
(noise-conditional) or ``score(x, t)`` (time-conditional) returns grad_x log p
for a batch.  ``config`` holds the constructor keyword arguments, so a run folder
can rebuild the model from JSON and load its safetensors weights: loading never
runs pickled code.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from scorematch.errors import CheckpointError

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
