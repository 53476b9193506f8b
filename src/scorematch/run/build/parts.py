"""What a training run is made of, built from its config: the model, the noise schedule, the loss.

``build_for`` picks and constructs the model the objective needs; ``make_schedule`` the noise
levels and ``make_loss`` the function (model, batch, generator, labels) -> (loss, per-row terms,
level per row), both as the objective's entry in ``scorematch.objectives.catalogue`` says.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scorematch.data import Dataset, Standardization
from scorematch.errors import ConfigError
from scorematch.models.mlp import EnergyMLP, NoiseConditionalMLP, ScoreMLP
from scorematch.objectives import catalogue
from scorematch.run.folder.config import TrainConfig


def needed_conditioning(objective: str) -> str:
    """The conditioning a model must have for ``objective`` (its catalogue entry): "sigma", "time"
    or "none"."""
    return catalogue.entry(objective).conditioning


def default_model_name(cfg: TrainConfig, ds: Dataset) -> str:
    """The model ``--model auto`` picks: the objective's built-in model for vector or image data
    (its catalogue entry's ``models``)."""
    if cfg.model != "auto":
        return cfg.model
    vector, image = catalogue.entry(cfg.objective).models
    return image if ds.kind == "image" else vector


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that its objective reads (``catalogue.reads``), by name."""
    values = dataclasses.asdict(cfg)
    return {k: values[k] for k in catalogue.reads(cfg.objective, values) if k in values}


def n_classes_of(ds: Dataset) -> int:
    """The number of classes of a labelled data set: its class names, else the largest label + 1."""
    if ds.classes:
        return len(ds.classes)
    return int(ds.labels.max()) + 1 if ds.labels is not None and len(ds.labels) else 0


def class_names(ds: Dataset) -> list[str]:
    """The class names run.json records: the data set's, else "0", "1", ..."""
    return list(ds.classes) if ds.classes else [str(k) for k in range(n_classes_of(ds))]


def class_prior(ds: Dataset) -> list[float]:
    """The share of each class among the data's labels (run.json's ``data.class_prior``), the
    p(y) that a class-conditional run is sampled with when no label is asked for."""
    counts = torch.bincount(ds.labels.reshape(-1).long(), minlength=n_classes_of(ds)).double()
    return (counts / counts.sum()).tolist()


def check_labelled(cfg: TrainConfig, ds: Dataset, model: nn.Module | None = None) -> None:
    """A class-conditional run needs labelled data with at least two classes (and a user's
    ``model``, the data's ``n_classes``)."""
    if not cfg.class_conditional:
        return
    if ds.labels is None:
        raise ConfigError(f"--class-conditional needs labelled data and {ds.name!r} has no labels; use digits, "
                          "mnist:DIR, fashion-mnist:DIR, cifar10:DIR or images:DIR with one sub-folder per class")
    if n_classes_of(ds) < 2:
        raise ConfigError(f"--class-conditional needs at least two classes; {ds.name!r} has {n_classes_of(ds)}")
    if model is not None and getattr(model, "n_classes", 0) != n_classes_of(ds):
        raise ConfigError(f"class_conditional: the model must take labels of the data's {n_classes_of(ds)} classes "
                          f"(n_classes = {n_classes_of(ds)}, called as score(x, sigma, labels)); it has n_classes = "
                          f"{getattr(model, 'n_classes', 0)}")


def build_for(cfg: TrainConfig, ds: Dataset) -> nn.Module:
    """Construct the model named by cfg.model (or its default) for data of ds.sample_shape; for an
    objective with a preconditioning (EDM), that network as F inside it (from ``cfg.schedule``); with
    ``class_conditional``, with ``n_classes`` of the data."""
    name = default_model_name(cfg, ds)
    shape = ds.sample_shape
    dim = math.prod(shape)
    needs = needed_conditioning(cfg.objective)
    precondition = catalogue.entry(cfg.objective).precondition
    cls_kw = {"n_classes": n_classes_of(ds)} if cfg.class_conditional else {}
    if name in ("mlp", "energy"):
        cls = ScoreMLP if name == "mlp" else EnergyMLP
        model = cls(dim, cfg.hidden, cfg.depth, cfg.activation)
    elif name == "ncsn_mlp":
        model = NoiseConditionalMLP(dim, cfg.hidden, cfg.depth, cfg.activation, **cls_kw)
    elif name == "unet":
        from scorematch.models.images import NCSNUNet

        _need_image(ds, name)
        kw = {} if cfg.conditioning == "auto" else {"conditioning": cfg.conditioning}
        model = NCSNUNet(channels=shape[0], base=cfg.base_channels, **kw, **cls_kw)
    elif name == "image_unet":
        from scorematch.models.unet import UNet, unet_config

        _need_image(ds, name)
        net = unet_config(image_model_size(cfg), shape[0], **cls_kw)
        model = precondition("UNet", net, cfg.schedule) if precondition is not None else UNet(
            **net, conditioning=needs if needs != "none" else "time")
    elif precondition is not None and name in ("time_mlp", "time_unet"):
        if name == "time_unet":
            _need_image(ds, name)
        net = ({"dim": dim, "hidden": cfg.hidden, "depth": cfg.depth, "activation": cfg.activation}
               if name == "time_mlp" else {"channels": shape[0], "base": cfg.base_channels})
        model = precondition("TimeMLP" if name == "time_mlp" else "TimeUNet", {**net, **cls_kw}, cfg.schedule)
    elif name == "time_mlp":
        from scorematch.models.time import TimeMLP

        model = TimeMLP(dim, hidden=cfg.hidden, depth=cfg.depth, activation=cfg.activation, **cls_kw)
    else:
        from scorematch.models.time import TimeUNet

        _need_image(ds, name)
        model = TimeUNet(channels=shape[0], base=cfg.base_channels, **cls_kw)
    if model.conditioning != needs:
        raise ConfigError(
            f"model {name!r} is {model.conditioning}-conditioned but objective {cfg.objective!r} needs a "
            f"{needs}-conditioned model; use --model auto"
        )
    return model


#: the image recipe: what ``scorematch train`` uses on image data with the U-Net (``--model auto``,
#: objectives ncsn, sde, edm) for each setting the user leaves out; chosen by quality per CPU-minute
#: in ``python -m benchmarks.images`` (docs/benchmarks.md), and a test keeps it equal to the decision
#: recorded in benchmarks/results/images.json.
IMAGE_RECIPE: dict[str, Any] = {
    "model_size": "tiny", "steps": 8100, "batch_size": 64, "lr": 1e-3, "lr_warmup": 200,
    "ema_half_life": 20000.0, "precision": "bf16", "class_conditional": True,
}


def image_model_size(cfg: TrainConfig) -> str:
    """The U-Net size of a run: the config's, or the recipe's when "auto"."""
    return IMAGE_RECIPE["model_size"] if cfg.model_size == "auto" else cfg.model_size


def image_recipe(cfg: TrainConfig, ds: Dataset, given: set[str] | frozenset[str]) -> TrainConfig:
    """``cfg`` with ``IMAGE_RECIPE`` in place of each setting the user did not give (``given``), when
    the run trains the image U-Net (image data, objective ncsn, sde or edm, ``--model auto`` or
    ``image_unet``); ``cfg`` itself otherwise. The model size is recorded, never "auto";
    ``class_conditional`` applies only to data with labels of two classes or more."""
    if ds.kind != "image" or default_model_name(cfg, ds) != "image_unet":
        return cfg
    chosen = {k: v for k, v in IMAGE_RECIPE.items() if k not in given}
    if ds.labels is None or n_classes_of(ds) < 2:
        chosen.pop("class_conditional", None)
    if cfg.model_size == "auto":
        chosen["model_size"] = IMAGE_RECIPE["model_size"]
    return cfg.replace(**chosen)


def warmup_factor(step: int, warmup: int) -> float:
    """The learning-rate factor of step ``step`` (0-based) under a linear warm-up of ``warmup``
    steps: min(1, (step + 1) / warmup); 1 without warm-up."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def ema_half_life(half_life: float, batch: int, ramp: float = 0.05) -> Callable[[list[torch.Tensor],
                                                                            list[torch.Tensor], Any], None]:
    """EMA update with a half-life in training images (Karras et al. 2022): after k updates of
    ``batch`` images, theta_ema <- beta theta_ema + (1 - beta) theta with

        beta = 0.5^(batch / h_k),  h_k = min(half_life, ramp * batch * (k + 1)),

    so the average forgets half its weight every h_k images, and early in a run (the ramp-up)
    at most the last ``ramp`` share of what it has seen counts."""

    def update(avg: list[torch.Tensor], cur: list[torch.Tensor], k: Any) -> None:
        h = min(half_life, ramp * batch * (float(k) + 1))
        torch._foreach_lerp_(avg, cur, 1 - 0.5 ** (batch / h))

    return update


def _need_image(ds: Dataset, name: str) -> None:
    if ds.kind != "image":
        raise ConfigError(
            f"model {name!r} is for images (n, C, H, W) but {ds.name!r} is vector data of shape "
            f"{ds.sample_shape}; use --model auto"
        )


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Flatten image batches for vector models (an MLP trained on images sees ``(n, C*H*W)``)."""
    return x.flatten(1) if x.dim() > 2 and getattr(model, "dim", None) == x[0].numel() else x


def make_schedule(cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    """Noise schedule of the run: the config's, else the objective's (its catalogue entry's
    ``schedule`` from the settings it reads and the data), else empty."""
    if cfg.schedule:
        return cfg.schedule
    build = catalogue.entry(cfg.objective).schedule
    return {} if build is None else build(settings(cfg), ds.x)


Rows = torch.Tensor | None
Labels = torch.Tensor | None
LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator, Labels], tuple[torch.Tensor, Rows, Rows]]


def make_loss(cfg: TrainConfig, ds: Dataset, schedule: dict[str, Any], device: torch.device,
              standardization: Standardization | None = None) -> LossFn:
    """(model, batch, generator, labels) -> (loss, per-row terms or None, noise-level index per row or None),
    the objective's catalogue entry's ``loss`` (or its function called with the settings it reads).

    ``ds`` is the data the model sees; with a ``standardization`` z = (x - mu) / sd, a toy's
    analytic score becomes the score of z, s_z(z) = sd * s_x(mu + sd z). ``labels`` (int64,
    (n,)) are None unless the run is class-conditional; then each is replaced by the null label
    with probability ``label_dropout`` (``scorematch.objectives.drop_labels``, the noise
    generator) before the model sees it."""
    e = catalogue.entry(cfg.objective)
    target = ds.dist.score if ds.dist is not None else None
    if target is not None and standardization is not None:
        st, dist = standardization, ds.dist
        target = lambda z: st.std.to(z) * dist.score(st.inverse(z))  # noqa: E731
    data = catalogue.LossData(x=ds.x, name=ds.name, score=target, null_label=n_classes_of(ds),
                              label_dropout=cfg.label_dropout, device=device)
    if e.loss is not None:
        return e.loss(settings(cfg), schedule, data)
    fn, kw = e.resolved(), {**settings(cfg), **schedule}
    if "generator" in inspect.signature(fn).parameters:
        return lambda m, x, g, y=None: (fn(m, x, generator=g, **kw), None, None)
    return lambda m, x, g, y=None: (fn(m, x, **kw), None, None)


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """EMA update theta_ema <- d theta_ema + (1 - d) theta with d = min(decay, (1 + k)/(10 + k)),

    k the number of updates so far: the warm-up keeps a short run's EMA from staying at its
    random initialisation (a plain 0.999 EMA still holds 74% of it after 300 steps).
    """

    def update(avg: list[torch.Tensor], cur: list[torch.Tensor], k: Any) -> None:
        k = float(k)
        d = min(decay, (1 + k) / (10 + k))
        torch._foreach_lerp_(avg, cur, 1 - d)

    return update
