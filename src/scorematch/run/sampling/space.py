"""A trained model as the samplers see it: unwrapped from its standardisation, in the shape it
works in, with the noise process of its run.

``space_of(model, run_info)`` is the one place that looks through a ``Standardized`` model (a
model trained on standardised data, z = (x - mu) / sd: it is sampled in its own space, where the
run's schedule and data range hold, and its samples mapped back, x = mu + sd z), sees that an MLP
trained on images works on flat rows, and gives the device, dtype and seeded generator. A model of
a noise level is seen by the denoising samplers through ``noise_view`` (its sigma view) and by the
score-SDE samplers and the likelihood through ``time_sde`` (its SDE and time-conditional score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scorematch.models import Standardized
from scorematch.samplers import catalogue


@dataclass(frozen=True)
class ModelSpace:
    """``inner``: the module in its own space; ``outer``: the ``Standardized`` wrapper or None;
    ``kind``: its model kind (``scorematch.samplers.catalogue.model_kind``); ``schedule``: its
    run's noise schedule; ``sample_shape``: the data's shape of one sample; ``work_shape``: the
    shape the module works in (flat rows for a vector model trained on images)."""

    inner: nn.Module
    outer: Standardized | None
    kind: str
    schedule: dict[str, Any]
    sample_shape: tuple[int, ...]
    work_shape: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype

    @property
    def n_classes(self) -> int:
        return int(getattr(self.inner, "n_classes", 0) or 0)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data-space rows (n, *sample_shape) -> the module's space and shape (n, *work_shape)."""
        x = self.outer.to_model_space(x) if self.outer is not None else x
        return x.reshape(x.shape[0], *self.work_shape)

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        """The module's rows (n, *work_shape), or a trajectory of them (S, n, *work_shape), -> data space."""
        x = self.outer.to_data_space(x) if self.outer is not None else x
        lead = x.shape[: x.dim() - len(self.work_shape)]
        return x.reshape(*lead, *self.sample_shape)


def unwrap(model: nn.Module) -> tuple[nn.Module, Standardized | None]:
    """(the module in its own space, the ``Standardized`` wrapper or None)."""
    return (model.model, model) if isinstance(model, Standardized) else (model, None)


def space_of(model: nn.Module, run_info: dict[str, Any]) -> ModelSpace:
    """The ``ModelSpace`` of a trained ``model`` with its run.json contents ``run_info``."""
    inner, outer = unwrap(model)
    schedule = run_info.get("schedule", {})
    kind = catalogue.model_kind(getattr(inner, "conditioning", "none"), hasattr(inner, "energy"), schedule)
    shape = tuple(run_info["data"]["sample_shape"])
    flat = len(shape) > 1 and getattr(inner, "dim", None) == math.prod(shape)
    p = next(inner.parameters())
    return ModelSpace(inner, outer, kind, schedule, shape, (math.prod(shape),) if flat else shape, p.device, p.dtype)


def noise_view(score: Any, kind: str, schedule: dict[str, Any]) -> Any:
    """The ``scorematch.denoise.SigmaView`` of a noise- or time-conditional ``score`` of a run of
    ``kind`` over the run's noise range (NCSN: its sigmas; EDM: sigma_min .. sigma_max of its
    schedule; an SDE model: through its SDE)."""
    from scorematch.denoise import sigma_view

    if kind == catalogue.KIND_NCSN:
        return sigma_view(score, sigma_min=schedule["sigmas"][-1], sigma_max=schedule["sigmas"][0])
    if kind == catalogue.KIND_EDM:
        return sigma_view(score, sigma_min=schedule["sigma_min"], sigma_max=schedule["sigma_max"])
    return sigma_view(score, _sde(schedule))


def time_sde(score: Any, kind: str, schedule: dict[str, Any]) -> tuple[Any, Any]:
    """(the SDE, the time-conditional score on it) of a noise- or time-conditional ``score`` of a
    run of ``kind``: a noise-conditional model on the VE SDE of its noise range (NCSN: through its
    sigmas; EDM: sigma_min .. sigma_max), a time-conditional one on its run's SDE."""
    from scorematch.sde import VESDE, sigma_conditioned, ve_from_sigmas

    if kind == catalogue.KIND_NCSN:
        sde = ve_from_sigmas(schedule["sigmas"])
    elif kind == catalogue.KIND_EDM:
        sde = VESDE(sigma_min=schedule["sigma_min"], sigma_max=schedule["sigma_max"])
    else:
        return _sde(schedule), score
    return sde, sigma_conditioned(score, sde)


def _sde(schedule: dict[str, Any]) -> Any:
    """The SDE of a run's schedule: its name and parameters."""
    from scorematch.sde import get_sde

    params = dict(schedule)
    return get_sde(params.pop("sde"), **params)
