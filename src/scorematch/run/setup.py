"""What a training run is made of, built from its config: the model, the noise schedule, the loss.

``build_for`` picks and constructs the model the objective needs; ``make_schedule`` the noise
levels (NCSN sigmas by NCSNv2's rules, DSM's sigma, the SDE's parameters, the KDE bandwidth);
``make_loss`` the function (model, batch, generator) -> (loss, per-row terms, level per row).
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
from scorematch.run.config import TrainConfig


def needed_conditioning(objective: str) -> str:
    """The conditioning a model must have for ``objective``: "sigma" (NCSN, EDM), "time" (score
    SDE) or "none"."""
    return {"ncsn": "sigma", "edm": "sigma", "sde": "time"}.get(objective, "none")


def default_model_name(cfg: TrainConfig, ds: Dataset) -> str:
    """The model an objective needs when ``--model auto``: NCSN -> noise-conditional, SDE ->
    time-conditional, images -> convolutional for those two, else a score MLP."""
    if cfg.model != "auto":
        return cfg.model
    image = ds.kind == "image"
    if cfg.objective == "ncsn":
        return "unet" if image else "ncsn_mlp"
    if cfg.objective == "sde":
        return "time_unet" if image else "time_mlp"
    return "mlp"


def build_for(cfg: TrainConfig, ds: Dataset) -> nn.Module:
    """Construct the model named by cfg.model (or its default) for data of ds.sample_shape."""
    name = default_model_name(cfg, ds)
    shape = ds.sample_shape
    dim = math.prod(shape)
    needs = needed_conditioning(cfg.objective)
    if name in ("mlp", "energy"):
        cls = ScoreMLP if name == "mlp" else EnergyMLP
        model = cls(dim, cfg.hidden, cfg.depth, cfg.activation)
    elif name == "ncsn_mlp":
        model = NoiseConditionalMLP(dim, cfg.hidden, cfg.depth, cfg.activation)
    elif name == "unet":
        from scorematch.models.images import NCSNUNet

        _need_image(ds, name)
        kw = {} if cfg.conditioning == "auto" else {"conditioning": cfg.conditioning}
        model = NCSNUNet(channels=shape[0], base=cfg.base_channels, **kw)
    elif name == "time_mlp":
        from scorematch.models.time import TimeMLP

        model = TimeMLP(dim, hidden=cfg.hidden, depth=cfg.depth, activation=cfg.activation)
    else:
        from scorematch.models.time import TimeUNet

        _need_image(ds, name)
        model = TimeUNet(channels=shape[0], base=cfg.base_channels)
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
    if cfg.objective == "sde":
        kw: dict[str, float] = {}
        if cfg.sde == "ve":
            sigma_max = cfg.sigma_max or float(torch.cdist(x[:2000], x[:2000]).max())
            kw = {"sigma_min": cfg.sigma_min or 0.01, "sigma_max": sigma_max}
        return {"sde": cfg.sde, **kw}
    return {}


Rows = torch.Tensor | None
LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], tuple[torch.Tensor, Rows, Rows]]


def make_loss(cfg: TrainConfig, ds: Dataset, schedule: dict[str, Any], device: torch.device,
              standardization: Standardization | None = None) -> LossFn:
    """(model, batch, generator) -> (loss, per-row terms or None, noise-level index per row or None).

    ``ds`` is the data the model sees; with a ``standardization`` z = (x - mu) / sd, ESM's
    analytic target becomes the score of z, s_z(z) = sd * s_x(mu + sd z)."""
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
        return lambda m, x, g: (O.esm(m, x, target), None, None)
    if obj == "esm_kde":
        reference = ds.x.flatten(1).to(device)
        h = schedule["bandwidth"]
        return lambda m, x, g: (O.esm_kde(m, x, reference, h, leave_one_out=True), None, None)
    if obj == "ism":
        return lambda m, x, g: (O.ism(m, x), None, None)
    if obj in ("ssm", "ssm_vr"):
        vr = obj == "ssm_vr"
        return lambda m, x, g: (O.ssm(m, x, cfg.n_projections, cfg.projection, vr, generator=g), None, None)
    if obj == "dsm":
        sigma = schedule["sigma"]
        return lambda m, x, g: (O.dsm(m, x, sigma, generator=g), None, None)
    if obj == "ncsn":
        sigmas = torch.tensor(schedule["sigmas"], device=device)

        def ncsn_loss(m: nn.Module, x: torch.Tensor, g: torch.Generator):
            rows, idx = O.ncsn_per_sample(m, x, sigmas, generator=g)
            return rows.mean(), rows.detach(), idx

        return ncsn_loss
    from scorematch.sde import get_sde

    sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
    weighting = cfg.likelihood_weighting
    return lambda m, x, g: (O.sde_dsm(m, x, sde, likelihood_weighting=weighting, generator=g), None, None)
