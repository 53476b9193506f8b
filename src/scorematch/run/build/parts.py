"""What a training run is made of, built from its config: the model, the noise schedule, the loss.

``build_for`` picks and constructs the model the objective needs; ``make_schedule`` the noise
levels (NCSN sigmas by NCSNv2's rules, DSM's sigma, the SDE's parameters, the KDE bandwidth,
EDM's sigma_data, noise distribution and sampling range); ``make_loss`` the function
(model, batch, generator, labels) -> (loss, per-row terms, level per row).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scorematch.data import Dataset, Standardization
from scorematch.errors import ConfigError
from scorematch.models.mlp import EnergyMLP, NoiseConditionalMLP, ScoreMLP
from scorematch.run.folder.config import TrainConfig


def needed_conditioning(objective: str) -> str:
    """The conditioning a model must have for ``objective``: "sigma" (NCSN, EDM), "time" (score
    SDE) or "none"."""
    return {"ncsn": "sigma", "edm": "sigma", "sde": "time"}.get(objective, "none")


def default_model_name(cfg: TrainConfig, ds: Dataset) -> str:
    """The model an objective needs when ``--model auto``: NCSN -> noise-conditional, SDE ->
    time-conditional, EDM -> a time-conditional network F inside ``EDMPrecond``, images ->
    convolutional for those three, else a score MLP."""
    if cfg.model != "auto":
        return cfg.model
    image = ds.kind == "image"
    if cfg.objective == "ncsn":
        return "unet" if image else "ncsn_mlp"
    if cfg.objective in ("sde", "edm"):
        return "time_unet" if image else "time_mlp"
    return "mlp"


def n_classes_of(ds: Dataset) -> int:
    """The number of classes of a labelled data set: its class names, else the largest label + 1."""
    if ds.classes:
        return len(ds.classes)
    return int(ds.labels.max()) + 1 if ds.labels is not None and len(ds.labels) else 0


def class_names(ds: Dataset) -> list[str]:
    """The class names run.json records: the data set's, else "0", "1", ..."""
    return list(ds.classes) if ds.classes else [str(k) for k in range(n_classes_of(ds))]


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
    """Construct the model named by cfg.model (or its default) for data of ds.sample_shape; for
    EDM, that network as F inside ``EDMPrecond`` (sigma_data from ``cfg.schedule``); with
    ``class_conditional``, with ``n_classes`` of the data."""
    name = default_model_name(cfg, ds)
    shape = ds.sample_shape
    dim = math.prod(shape)
    needs = needed_conditioning(cfg.objective)
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
    elif cfg.objective == "edm" and name in ("time_mlp", "time_unet"):
        from scorematch.models.edm import EDMPrecond

        if name == "time_unet":
            _need_image(ds, name)
        net = ({"dim": dim, "hidden": cfg.hidden, "depth": cfg.depth, "activation": cfg.activation}
               if name == "time_mlp" else {"channels": shape[0], "base": cfg.base_channels})
        model = EDMPrecond("TimeMLP" if name == "time_mlp" else "TimeUNet", {**net, **cls_kw},
                           sigma_data=cfg.schedule["sigma_data"])
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


def _need_image(ds: Dataset, name: str) -> None:
    if ds.kind != "image":
        raise ConfigError(
            f"model {name!r} is for images (n, C, H, W) but {ds.name!r} is vector data of shape "
            f"{ds.sample_shape}; use --model auto"
        )


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Flatten image batches for vector models (an MLP trained on images sees ``(n, C*H*W)``)."""
    return x.flatten(1) if x.dim() > 2 and getattr(model, "dim", None) == x[0].numel() else x


def kde_bandwidth(x: torch.Tensor) -> float:
    """Scott's rule, h = n^(-1/(D+4)) * mean per-dimension standard deviation."""
    x = x.flatten(1)
    return float(x.shape[0] ** (-1.0 / (x.shape[1] + 4)) * x.std(0).mean())


def default_steps_per_sigma(cfg: TrainConfig, dim: int) -> int:
    """T of annealed Langevin: the config's, else 100 for D <= 4 (the NCSN paper's toy setting;
    measured on the 2-D toys T = 5 gives 2-6x the MMD of T = 100) and 5 above (NCSNv2, images)."""
    if cfg.steps_per_sigma is not None:
        return cfg.steps_per_sigma
    return 100 if dim <= 4 else 5


def default_sigma_min(x: torch.Tensor) -> float:
    """sigma_L of NCSN: 0.01 for images and other D > 4 data (NCSN/NCSNv2), and for D <= 4 the
    single-sigma DSM default, 0.1 x the data's mean std: a low-dimensional density has full
    support, so scores below that scale only add variance to the loss."""
    return 0.01 if x.shape[1] > 4 else 0.1 * float(x.std(0).mean())


def make_schedule(cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    """Noise schedule of the run: NCSN sigmas (propose_schedule unless given), DSM's sigma, SDE."""
    from scorematch.noise import geometric_sigmas, propose_schedule

    if cfg.schedule:
        return cfg.schedule
    x = ds.x.flatten(1)
    if cfg.objective == "ncsn":
        sigma_min = cfg.sigma_min or default_sigma_min(x)
        steps = default_steps_per_sigma(cfg, x.shape[1])
        proposal = propose_schedule(x, sigma_min=sigma_min, steps_per_sigma=steps,
                                    n_levels=cfg.n_levels)
        sigmas = proposal.sigmas
        if cfg.sigma_max is not None:
            sigmas = geometric_sigmas(cfg.sigma_max, sigma_min, cfg.n_levels or len(sigmas))
        print(proposal.report(), file=sys.stderr)
        from scorematch.noise import eps_for_schedule

        gamma = float(sigmas[0] / sigmas[1]) if len(sigmas) > 1 else 1.0
        eps = eps_for_schedule(gamma, float(sigmas[-1]), steps)
        return {"sigmas": [float(s) for s in sigmas], "eps": eps, "steps_per_sigma": steps}
    if cfg.objective == "dsm":
        return {"sigma": cfg.sigma or 0.1 * float(x.std(0).mean())}
    if cfg.objective == "esm_kde":
        return {"bandwidth": cfg.bandwidth or kde_bandwidth(x)}
    if cfg.objective == "edm":
        return edm_schedule(cfg, ds.x)
    if cfg.objective == "sde":
        kw: dict[str, float] = {}
        if cfg.sde == "ve":
            sigma_max = cfg.sigma_max or float(torch.cdist(x[:2000], x[:2000]).max())
            kw = {"sigma_min": cfg.sigma_min or 0.01, "sigma_max": sigma_max}
        return {"sde": cfg.sde, **kw}
    return {}


def edm_schedule(cfg: TrainConfig, x: torch.Tensor) -> dict[str, float]:
    """EDM's training and sampling settings for data x (in the model's space): sigma_data, the
    standard deviation of all coordinates; P_mean (default -1.2 + ln(sigma_data / 0.5), EDM's
    choice moved to the data's scale), P_std; and the sampling range: sigma_min default EDM's
    0.002 scaled the same way (0.004 sigma_data), sigma_max default the larger of twice the
    largest distance between two of (up to) 2000 training points and 20 times the norm of their
    mean, so that the start N(0, sigma_max^2 I) covers the data and its offset from the origin
    (measured better than EDM's 80 scaled by sigma_data / 0.5 for Heun at 18 levels on the 2-D
    toys: docs/objectives/edm.md)."""
    from scorematch.models.edm import estimate_sigma_data

    sd = estimate_sigma_data(x)
    p_mean = cfg.p_mean if cfg.p_mean is not None else -1.2 + math.log(sd / 0.5)
    lo = cfg.sigma_min or 0.002 * sd / 0.5
    flat = x.flatten(1)[:2000].double()
    hi = cfg.sigma_max or max(2 * float(torch.cdist(flat, flat).max()), 20 * float(flat.mean(0).norm()))
    if lo >= hi:
        raise ConfigError(f"sigma_min {lo:.4g} must be below sigma_max {hi:.4g} (sigma_data is {sd:.4g})")
    return {"sigma_data": sd, "p_mean": p_mean, "p_std": cfg.p_std, "sigma_min": lo, "sigma_max": hi}


Rows = torch.Tensor | None
Labels = torch.Tensor | None
LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator, Labels], tuple[torch.Tensor, Rows, Rows]]


def make_loss(cfg: TrainConfig, ds: Dataset, schedule: dict[str, Any], device: torch.device,
              standardization: Standardization | None = None) -> LossFn:
    """(model, batch, generator, labels) -> (loss, per-row terms or None, noise-level index per row or None).

    ``ds`` is the data the model sees; with a ``standardization`` z = (x - mu) / sd, ESM's
    analytic target becomes the score of z, s_z(z) = sd * s_x(mu + sd z). ``labels`` (int64,
    (n,)) are None unless the run is class-conditional; then each is replaced by the null label
    with probability ``label_dropout`` (``scorematch.objectives.drop_labels``, the noise
    generator) before the model sees it."""
    from scorematch import objectives as O

    obj = cfg.objective
    if obj == "esm":
        if ds.dist is None:
            raise ConfigError(
                f"objective 'esm' needs the analytic score of the data, and {ds.name!r} has none; "
                "use esm_kde (KDE target), ism, ssm, ssm_vr or dsm"
            )
        target = ds.dist.score
        if standardization is not None:
            st = standardization
            target = lambda z: st.std.to(z) * ds.dist.score(st.inverse(z))  # noqa: E731
        return lambda m, x, g, y=None: (O.esm(m, x, target), None, None)
    if obj == "esm_kde":
        reference = ds.x.flatten(1).to(device)
        h = schedule["bandwidth"]
        return lambda m, x, g, y=None: (O.esm_kde(m, x, reference, h, leave_one_out=True), None, None)
    if obj == "ism":
        return lambda m, x, g, y=None: (O.ism(m, x), None, None)
    if obj in ("ssm", "ssm_vr"):
        vr = obj == "ssm_vr"
        return lambda m, x, g, y=None: (O.ssm(m, x, cfg.n_projections, cfg.projection, vr, generator=g), None, None)
    if obj == "dsm":
        sigma = schedule["sigma"]
        return lambda m, x, g, y=None: (O.dsm(m, x, sigma, generator=g), None, None)
    null = n_classes_of(ds)

    def labels(y: Labels, g: torch.Generator) -> Labels:
        return None if y is None else O.drop_labels(y, cfg.label_dropout, null, generator=g)

    if obj == "ncsn":
        sigmas = torch.tensor(schedule["sigmas"], device=device)

        def ncsn_loss(m: nn.Module, x: torch.Tensor, g: torch.Generator, y: Labels = None):
            rows, idx = O.ncsn_per_sample(m, x, sigmas, generator=g, labels=labels(y, g))
            return rows.mean(), rows.detach(), idx

        return ncsn_loss
    if obj == "edm":
        kw = {k: schedule[k] for k in ("sigma_data", "p_mean", "p_std")}
        return lambda m, x, g, y=None: (O.edm(m, x, generator=g, labels=labels(y, g), **kw), None, None)
    from scorematch.sde import get_sde

    sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
    weighting = cfg.likelihood_weighting
    return lambda m, x, g, y=None: (O.sde_dsm(m, x, sde, likelihood_weighting=weighting, generator=g,
                                              labels=labels(y, g)), None, None)


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
