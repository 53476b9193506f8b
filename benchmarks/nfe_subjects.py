"""The score functions ``benchmarks.nfe_quality`` samples: what each sampler needs of a model.

A ``Subject`` holds one score function in every form the samplers take: the noise-level view
s(x, sigma) with its training range (``scorematch.denoise.sigma_view``) for the denoising samplers
and annealed Langevin, and the time-conditional s(x, t) with its SDE for Euler-Maruyama, the
reverse-diffusion predictor, PC and the probability-flow ODE. Samplers run in the space the model
was trained in (standardised for vector data, as ``scorematch.train`` does by default) and
``to_data`` maps their samples back, as ``scorematch sample`` does.

Subjects: the analytic noisy score of a 2-D mixture; models trained on a 2-D toy with
``scorematch.train`` (NCSN, VE, VP and sub-VP SDEs, every setting at its default) or with the EDM
loss (``EDMPrecond`` around a ``TimeMLP``, trained by ``train_edm`` below); the same kinds on
scikit-learn's 8x8 digits (a U-Net).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scorematch.denoise import SigmaView, sigma_view
from scorematch.distributions import toy
from scorematch.noise import propose_schedule
from scorematch.sde import SDE, VESDE, get_sde, sigma_conditioned, ve_from_sigmas

#: EDM's noise range (Karras et al. 2022), used for the EDM models and for the exact scores
EDM_RANGE = (0.002, 80.0)
#: the SDE kinds of ``scorematch.train(objective="sde", sde=...)``
SDE_KINDS = ("ve", "vp", "subvp")
MODEL_KINDS = ("ncsn", *SDE_KINDS, "edm")

ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Subject:
    """One score function, seen by every sampler.

    ``view``: s(x, sigma) over the training range (view.sigma_min .. view.sigma_max) with the start
    N(0, view.prior_std^2 I) of the denoising samplers; ``sde``/``time_score``: what the SDE samplers
    integrate; ``ncsn_sigmas``: annealed Langevin's levels, started uniformly in ``box``; all in the
    model's space, mapped to the data's by ``to_data``.
    """

    data: str
    model: str
    view: SigmaView
    sde: SDE
    time_score: ScoreFn
    ncsn_sigmas: Tensor
    box: tuple[float, float]
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    to_data: Callable[[Tensor], Tensor] = lambda x: x  # noqa: E731
    ncsn_range: tuple[float, float] | None = None
    train_seconds: float = 0.0
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def ncsn_levels(x: Tensor, sigma_min: float = 0.01, sigma_max: float | None = None) -> Tensor:
    """NCSNv2's levels for data x (sigma_1 = the largest pairwise distance, capped at ``sigma_max``;
    L from the dimension, 10 for D <= 4), in float64."""
    sig = propose_schedule(x.flatten(1), sigma_min=sigma_min, steps_per_sigma=5).sigmas.double()
    if sigma_max is not None and float(sig[0]) > sigma_max:
        ratio = torch.linspace(0, 1, len(sig), dtype=torch.float64)
        sig = sigma_max * (sigma_min / sigma_max) ** ratio
    return sig


def analytic(name: str, seed: int) -> Subject:
    """The exact noisy score of toy ``name`` (``GaussianMixture.noisy_score``): the denoising samplers
    over EDM's range from N(0, 80^2 I) (``*_ncsn`` variants over the NCSN range), the others over the
    NCSN levels of the data and the VE SDE through them; float64."""
    mix = toy(name)
    data = mix.sample(2000, torch.Generator().manual_seed(seed)).double()
    sig = ncsn_levels(data)
    sde = ve_from_sigmas(sig)
    view = SigmaView(mix.noisy_score, *EDM_RANGE, EDM_RANGE[1], source="analytic")
    return Subject(name, "analytic", view, sde, sigma_conditioned(mix.noisy_score, sde), sig,
                   (float(data.min()), float(data.max())), (2,), torch.float64,
                   ncsn_range=(float(sig[-1]), float(sig[0])),
                   note=f"exact noisy score; NCSN levels L = {len(sig)}, sigma_1 = {float(sig[0]):.3g}")


# ------------------------------------------------------------------------------ trained with scorematch.train


def _train_run(data: Any, objective: str, sde: str | None, steps: int, seed: int, **kw: Any) -> tuple[Any, dict]:
    """``scorematch.train`` into a temporary folder: (the trained module, run.json)."""
    import json

    from scorematch.run.training.loop import train

    opts = {"sde": sde} if sde else {}
    with tempfile.TemporaryDirectory(prefix="nfe_quality_") as tmp:
        res = train(data=data, objective=objective, steps=steps, seed=seed, progress=False, device="cpu",
                    out=Path(tmp) / "run", **opts, **kw)
        info = json.loads((Path(tmp) / "run" / "run.json").read_text())
    return res.model, info


def _subject_of(data: str, kind: str, inner: nn.Module, schedule: dict[str, Any], x_model: Tensor,
                box: tuple[float, float], shape: tuple[int, ...], to_data: Callable[[Tensor], Tensor],
                seconds: float, note: str) -> Subject:
    """A Subject from a trained module in its own space (``schedule``: the run's)."""
    inner.eval()
    if kind == "ncsn":
        sig = torch.tensor(schedule["sigmas"], dtype=torch.float64)
        view = sigma_view(inner, sigma_min=float(sig[-1]), sigma_max=float(sig[0]))
        sde = ve_from_sigmas(sig)
        return Subject(data, kind, view, sde, sigma_conditioned(view, sde), sig, box, shape,
                       to_data=to_data, train_seconds=seconds, note=note,
                       info={"steps_per_sigma": schedule.get("steps_per_sigma")})
    sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
    view = sigma_view(inner, sde=sde)
    sig = ncsn_levels(x_model, max(0.01, float(view.sigma_min)), float(view.sigma_max))
    return Subject(data, kind, view, sde, inner.score, sig, box, shape, to_data=to_data,
                   train_seconds=seconds, note=note)


def trained_toy(name: str, kind: str, steps: int, seed: int) -> Subject:
    """A model of kind ``kind`` (ncsn, ve, vp, subvp) trained on toy ``name`` by ``scorematch.train``
    with every other setting at its default (standardised data, 128 x 3 MLP, batch 256, EMA)."""
    t0 = time.process_time()
    objective, sde = ("ncsn", None) if kind == "ncsn" else ("sde", kind)
    model, info = _train_run(name, objective, sde, steps, seed)
    seconds = time.process_time() - t0
    st = info["data"]["standardize"]
    mean, std = torch.tensor(st["mean"]), torch.tensor(st["std"])
    x = toy(name).sample(2000, torch.Generator().manual_seed(seed)).float()
    z = (x - mean) / std
    box = (float(info["data"]["lo"]), float(info["data"]["hi"]))
    return _subject_of(name, kind, model.model, info["schedule"], z, box, (2,), model.to_data_space,
                       seconds, f"scorematch.train(objective={objective!r}{f', sde={sde!r}' if sde else ''}, "
                       f"steps={steps}), defaults otherwise")


# ------------------------------------------------------------------------------ EDM


def train_edm(x: Tensor, net: str, net_config: dict[str, Any], steps: int, seed: int, batch_size: int = 256,
              lr: float = 1e-3, ema_decay: float = 0.999) -> nn.Module:
    """An ``EDMPrecond`` trained on x with ``scorematch.objectives.edm`` (Karras et al. 2022: log-normal
    sigma, P_mean = -1.2, P_std = 1.2, sigma_data from the data); Adam, gradient clipping at 1 and an
    EMA with warm-up, as ``scorematch.train`` runs; returns the EMA model."""
    from torch.optim.swa_utils import AveragedModel

    from scorematch.models import EDMPrecond
    from scorematch.models.edm import estimate_sigma_data
    from scorematch.objectives import edm
    from scorematch.run.training.loop import ema_with_warmup

    torch.manual_seed(seed)
    model = EDMPrecond(net, net_config, sigma_data=estimate_sigma_data(x))
    ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(ema_decay), use_buffers=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g_data, g_noise = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (batch_size,), generator=g_data)]
        loss = edm(model, xb, generator=g_noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update_parameters(model)
    return ema.module.eval()


def edm_subject(data: str, model: nn.Module, x_model: Tensor, box: tuple[float, float], shape: tuple[int, ...],
                to_data: Callable[[Tensor], Tensor], seconds: float, note: str) -> Subject:
    """An EDM model over EDM's range; the SDE samplers through the VE SDE over the same range."""
    view = sigma_view(model, sigma_min=EDM_RANGE[0], sigma_max=EDM_RANGE[1])
    sde = VESDE(*EDM_RANGE)
    sig = ncsn_levels(x_model, 0.01, EDM_RANGE[1])
    return Subject(data, "edm", view, sde, sigma_conditioned(view, sde), sig, box, shape, to_data=to_data,
                   train_seconds=seconds, note=note, info={"sigma_data": model.sigma_data})


def edm_toy(name: str, steps: int, seed: int) -> Subject:
    """``EDMPrecond("TimeMLP", 128 x 3)`` trained on toy ``name``, standardised like ``scorematch.train``
    (8000 training points, batch 256, lr 1e-3)."""
    from scorematch.data.transforms import Standardization

    x = toy(name).sample(8000, torch.Generator().manual_seed(seed)).float()
    st = Standardization.fit(x)
    z = st.forward(x)
    t0 = time.process_time()
    model = train_edm(z, "TimeMLP", {"dim": 2, "hidden": 128, "depth": 3}, steps, seed)
    seconds = time.process_time() - t0
    return edm_subject(name, model, z[:2000], (float(z.min()), float(z.max())), (2,), st.inverse, seconds,
                       f"EDMPrecond('TimeMLP', hidden 128, depth 3), objectives.edm, {steps} steps, standardised")


# ------------------------------------------------------------------------------ digits


@dataclass
class Digits:
    """scikit-learn's 8x8 digits split into training and held-out images, with a classifier."""

    train: Tensor
    test: Tensor
    confidence: Callable[[Tensor], float]
    predict: Callable[[Tensor], Tensor]


def digits_split(seed: int, n_test: int = 297) -> Digits:
    """Held-out digits (``n_test``) and a logistic-regression classifier fitted on the rest."""
    from sklearn.linear_model import LogisticRegression

    from scorematch.data import load_digits

    images, labels = load_digits()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[n_test:], perm[:n_test]
    clf = LogisticRegression(max_iter=2000).fit(images[tr].flatten(1).numpy(), labels[tr].numpy())

    def proba(x: Tensor) -> Any:
        return clf.predict_proba(x.clamp(0, 1).flatten(1).double().numpy())

    return Digits(images[tr], images[te], lambda x: float(proba(x).max(1).mean()),
                  lambda x: torch.as_tensor(proba(x).argmax(1)))


def trained_digits(digits: Digits, kind: str, steps: int, seed: int, base: int = 16) -> Subject:
    """A U-Net of kind ``kind`` on the training digits: ``scorematch.train`` for ncsn / ve / vp / subvp
    (NCSNUNet or TimeUNet, batch 128), ``train_edm`` with a TimeUNet for edm."""
    box, shape = (0.0, 1.0), (1, 8, 8)
    t0 = time.process_time()
    if kind == "edm":
        model = train_edm(digits.train, "TimeUNet", {"channels": 1, "base": base}, steps, seed, batch_size=128)
        return edm_subject("digits", model, digits.train, box, shape, lambda x: x, time.process_time() - t0,
                           f"EDMPrecond('TimeUNet', base {base}), objectives.edm, {steps} steps, batch 128")
    objective, sde = ("ncsn", None) if kind == "ncsn" else ("sde", kind)
    model, info = _train_run(digits.train, objective, sde, steps, seed, batch_size=128, base_channels=base)
    return _subject_of("digits", kind, model, info["schedule"], digits.train, box, shape, lambda x: x,
                       time.process_time() - t0,
                       f"scorematch.train(objective={objective!r}{f', sde={sde!r}' if sde else ''}, steps={steps}, "
                       f"batch_size=128, base_channels={base})")
