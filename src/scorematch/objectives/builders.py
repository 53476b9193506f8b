"""The noise schedules and training-step losses of the built-in objectives, as their catalogue
entries name them (``scorematch.objectives.catalogue``).

A schedule builder maps (settings, x) to the dict a run records (x: the training data in the
model's space); a loss builder maps (settings, schedule, data) to the training step's loss
``(model, x, generator, labels) -> (loss, per-row terms or None, noise-level index per row or None)``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from scorematch.errors import ConfigError
from scorematch.objectives.catalogue import LossData
from scorematch.objectives.dsm import dsm, ncsn_per_sample
from scorematch.objectives.edm import edm
from scorematch.objectives.esm import esm, esm_kde
from scorematch.objectives.labels import drop_labels
from scorematch.objectives.sde import sde_dsm
from scorematch.objectives.ssm import ssm

Settings = Mapping[str, Any]
LossFn = Callable[..., tuple[Tensor, Tensor | None, Tensor | None]]


def _flat(x: Tensor) -> Tensor:
    return x.flatten(1)


def kde_bandwidth(x: Tensor) -> float:
    """Scott's rule, h = n^(-1/(D+4)) * mean per-dimension standard deviation."""
    x = _flat(x)
    return float(x.shape[0] ** (-1.0 / (x.shape[1] + 4)) * x.std(0).mean())


def default_steps_per_sigma(steps_per_sigma: int | None, dim: int) -> int:
    """T of annealed Langevin: the given one, else 100 for D <= 4 (the NCSN paper's toy setting)
    and 5 above (NCSNv2, images)."""
    if steps_per_sigma is not None:
        return steps_per_sigma
    return 100 if dim <= 4 else 5


def default_sigma_min(x: Tensor) -> float:
    """sigma_L of NCSN: 0.01 for images and other D > 4 data (NCSN/NCSNv2), and for D <= 4 the
    single-sigma DSM default, 0.1 x the data's mean std: a low-dimensional density has full
    support, so scores below that scale only add variance to the loss."""
    return 0.01 if x.shape[1] > 4 else 0.1 * float(x.std(0).mean())


def dsm_schedule(settings: Settings, x: Tensor) -> dict[str, Any]:
    """DSM's sigma: the setting, else 0.1 x the data's mean standard deviation."""
    return {"sigma": settings.get("sigma") or 0.1 * float(_flat(x).std(0).mean())}


def kde_schedule(settings: Settings, x: Tensor) -> dict[str, Any]:
    """The KDE bandwidth h: the setting, else Scott's rule."""
    return {"bandwidth": settings.get("bandwidth") or kde_bandwidth(x)}


def ncsn_schedule(settings: Settings, x: Tensor) -> dict[str, Any]:
    """NCSN's sigmas by NCSNv2's rules (``scorematch.noise.propose_schedule``, reported on stderr)
    unless sigma_max is given (then geometric from sigma_max to sigma_min), with the step eps of
    annealed Langevin for them and T steps per level."""
    from scorematch.noise import eps_for_schedule, geometric_sigmas, propose_schedule

    x = _flat(x)
    sigma_min = settings.get("sigma_min") or default_sigma_min(x)
    steps = default_steps_per_sigma(settings.get("steps_per_sigma"), x.shape[1])
    n_levels = settings.get("n_levels")
    proposal = propose_schedule(x, sigma_min=sigma_min, steps_per_sigma=steps, n_levels=n_levels)
    sigmas = proposal.sigmas
    if settings.get("sigma_max") is not None:
        sigmas = geometric_sigmas(settings["sigma_max"], sigma_min, n_levels or len(sigmas))
    print(proposal.report(), file=sys.stderr)
    gamma = float(sigmas[0] / sigmas[1]) if len(sigmas) > 1 else 1.0
    eps = eps_for_schedule(gamma, float(sigmas[-1]), steps)
    return {"sigmas": [float(s) for s in sigmas], "eps": eps, "steps_per_sigma": steps}


def sde_schedule(settings: Settings, x: Tensor) -> dict[str, Any]:
    """The SDE's name and, for VE, its noise range (sigma_max default: the largest pairwise
    distance of up to 2000 points; sigma_min default 0.01)."""
    name = settings.get("sde") or "ve"
    kw: dict[str, float] = {}
    if name == "ve":
        flat = _flat(x)[:2000]
        sigma_max = settings.get("sigma_max") or float(torch.cdist(flat, flat).max())
        kw = {"sigma_min": settings.get("sigma_min") or 0.01, "sigma_max": sigma_max}
    return {"sde": name, **kw}


def edm_schedule(settings: Settings, x: Tensor) -> dict[str, float]:
    """EDM's training and sampling settings for data x (in the model's space): sigma_data, the
    standard deviation of all coordinates; P_mean (default -1.2 + ln(sigma_data / 0.5), EDM's
    choice moved to the data's scale), P_std; and the sampling range: sigma_min default EDM's
    0.002 scaled the same way (0.004 sigma_data), sigma_max default the larger of twice the
    largest distance between two of (up to) 2000 training points and 20 times the norm of their
    mean, so that the start N(0, sigma_max^2 I) covers the data and its offset from the origin
    (docs/objectives/edm.md)."""
    from scorematch.models.edm import estimate_sigma_data

    sd = estimate_sigma_data(x)
    p_mean = settings.get("p_mean")
    p_mean = p_mean if p_mean is not None else -1.2 + math.log(sd / 0.5)
    lo = settings.get("sigma_min") or 0.002 * sd / 0.5
    flat = _flat(x)[:2000].double()
    hi = settings.get("sigma_max") or max(2 * float(torch.cdist(flat, flat).max()), 20 * float(flat.mean(0).norm()))
    if lo >= hi:
        raise ConfigError(f"sigma_min {lo:.4g} must be below sigma_max {hi:.4g} (sigma_data is {sd:.4g})")
    p_std = settings.get("p_std")
    return {"sigma_data": sd, "p_mean": p_mean, "p_std": 1.2 if p_std is None else p_std, "sigma_min": lo,
            "sigma_max": hi}


def edm_precondition(network: str, config: dict[str, Any], schedule: Mapping[str, Any]) -> Any:
    """EDM's preconditioning around the network ``network`` (a built-in model name) built from ``config``."""
    from scorematch.models.edm import EDMPrecond

    return EDMPrecond(network, config, sigma_data=schedule["sigma_data"])


def _labels(data: LossData) -> Callable[[Tensor | None, torch.Generator], Tensor | None]:
    def labels(y: Tensor | None, g: torch.Generator) -> Tensor | None:
        return None if y is None else drop_labels(y, data.label_dropout, data.null_label, generator=g)

    return labels


def esm_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    if data.score is None:
        raise ConfigError(f"objective 'esm' needs the analytic score of the data, and {data.name!r} has none; use "
                          "esm_kde (KDE target), ism, ssm, ssm_vr or dsm")
    target = data.score
    return lambda m, x, g, y=None: (esm(m, x, target), None, None)


def kde_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    reference = _flat(data.x).to(data.device)
    h = schedule["bandwidth"]
    return lambda m, x, g, y=None: (esm_kde(m, x, reference, h, leave_one_out=True), None, None)


def _ssm(settings: Settings, vr: bool) -> LossFn:
    n, law = settings.get("n_projections", 1), settings.get("projection", "gaussian")
    return lambda m, x, g, y=None: (ssm(m, x, n, law, vr, generator=g), None, None)


def ssm_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    return _ssm(settings, False)


def ssm_vr_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    return _ssm(settings, True)


def dsm_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    sigma = schedule["sigma"]
    return lambda m, x, g, y=None: (dsm(m, x, sigma, generator=g), None, None)


def ncsn_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    sigmas = torch.tensor(schedule["sigmas"], device=data.device)
    labels = _labels(data)

    def loss(m: Any, x: Tensor, g: torch.Generator, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        rows, idx = ncsn_per_sample(m, x, sigmas, generator=g, labels=labels(y, g))
        return rows.mean(), rows.detach(), idx

    return loss


def edm_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    kw = {k: schedule[k] for k in ("sigma_data", "p_mean", "p_std")}
    labels = _labels(data)
    return lambda m, x, g, y=None: (edm(m, x, generator=g, labels=labels(y, g), **kw), None, None)


def sde_loss(settings: Settings, schedule: Mapping[str, Any], data: LossData) -> LossFn:
    from scorematch.sde import get_sde

    sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
    weighting = bool(settings.get("likelihood_weighting", False))
    labels = _labels(data)
    return lambda m, x, g, y=None: (sde_dsm(m, x, sde, likelihood_weighting=weighting, generator=g,
                                            labels=labels(y, g)), None, None)
