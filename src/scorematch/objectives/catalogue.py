"""The objective catalogue: what each objective is, written once, read by everything else.

One ``Objective`` entry per method, plain data. ``scorematch train --objective`` (its choices and
help), the run layer (the model an objective needs and its conditioning, the noise schedule a run
records, the loss of a training step, which settings apply to which objective, the checks of a
run folder's schedule), the README's objective table and the refusal messages all read this
module; nothing else names an objective. It imports no torch (the command line's help reads it).

Built-in entries name their functions lazily (``scorematch._lazy.Lazy("module:name")``); an added
entry may give the functions themselves. Adding an objective is one function plus one entry::

    def my_loss(model, x, sigma, generator=None):
        ...                                     # a scalar, differentiable in the model's weights

    register(Objective(name="my_loss", function=my_loss, summary="1/2 E||...||^2",
                       conditioning="none", reads=("sigma",)))

The fields of an entry:

- ``name``: the name ``--objective`` and ``TrainConfig.objective`` accept; ``summary``: its
  equation in one line (the README's table), ``reference``: the paper, author and year;
- ``function``: the loss, ``function(model, x, **settings)`` -> scalar;
- ``conditioning``: what the model it trains takes: "none" (s(x)), "sigma" (s(x, sigma), sigma
  of shape (n,)) or "time" (s(x, t), t of shape (n,) in [0, 1]); "sigma" and "time" models may
  also be class-conditional (``labels``);
- ``reads``: the training settings (``TrainConfig`` fields) it reads; a user's setting of one it
  does not read is refused as ignored. ``reads_if``: settings read only under another setting's
  value, e.g. {"sigma_max": ("sde", "ve")};
- ``schedule(settings, x)``: the noise schedule the run records in run.json (a dict of JSON
  values) from the settings it reads and the training data x (n, ...) in the model's space, or
  None for no schedule; ``schedule_keys``: the keys of that dict (checked when a run is read;
  ``schedule_sde`` True: the dict names an SDE and its range instead);
- ``loss(settings, schedule, data)``: the loss of a training step, a function
  ``(model, x, generator, labels) -> (loss, per-row terms or None, noise-level index per row or
  None)``; ``data`` is a ``LossData``. None: ``function(model, x, **settings it reads)``, with
  ``generator=`` when it takes one;
- ``needs``: what it needs of the data and what it is good for, in a few words (the README's table);
- ``models``: the built-in model of ``--model auto`` for vector and for image data;
  ``precondition(network name, network config, schedule)``: the module the network is wrapped
  in (EDM's preconditioning), or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scorematch import _catalogue
from scorematch._lazy import Lazy, resolve
from scorematch.errors import ConfigError

__all__ = ["CONDITIONINGS", "DEFAULT", "LossData", "Objective", "entries", "entry", "names", "reads", "register",
           "table", "unregister"]

CONDITIONINGS = ("none", "sigma", "time")
#: the objective of a run that names none
DEFAULT = "dsm"


@dataclass(frozen=True)
class LossData:
    """What a loss may need of the training data besides the batch: all of it (``x``, in the
    model's space), the analytic score of its distribution in that space (``score``, or None),
    its name, the label of "no class" (``null_label``, the number of classes) and the label
    dropout of classifier-free guidance, and the device."""

    x: Any
    name: str
    score: Callable[[Any], Any] | None = None
    null_label: int = 0
    label_dropout: float = 0.0
    device: Any = None


@dataclass(frozen=True)
class Objective:
    """One objective of the catalogue (the fields are described in the module docstring)."""

    name: str
    function: Callable[..., Any]
    summary: str
    conditioning: str = "none"
    reference: str = ""
    reads: tuple[str, ...] = ()
    reads_if: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    schedule: Callable[[Mapping[str, Any], Any], dict[str, Any]] | None = None
    schedule_keys: tuple[str, ...] = ()
    schedule_sde: bool = False
    loss: Callable[[Mapping[str, Any], Mapping[str, Any], LossData], Callable[..., Any]] | None = None
    needs: str = ""
    models: tuple[str, str] = ("mlp", "mlp")
    precondition: Callable[[str, dict[str, Any], Mapping[str, Any]], Any] | None = None

    def resolved(self) -> Callable[..., Any]:
        """The loss function itself (built-in entries name it lazily: see ``scorematch._lazy``)."""
        return resolve(self.function)

    @property
    def conditional(self) -> bool:
        """Whether its model is noise- or time-conditional (and so may also be class-conditional)."""
        return self.conditioning != "none"


_CATALOGUE: dict[str, Objective] = {}


def register(e: Objective) -> Objective:
    """Add (or replace) the entry ``e.name``. Returns it."""
    return _catalogue.add(_CATALOGUE, e, Objective, _check_entry)


def _check_entry(e: Objective) -> None:
    if not (isinstance(e.name, str) and e.name.isidentifier()):
        raise ConfigError(f"an objective name is a Python identifier, got {e.name!r}")
    if e.conditioning not in CONDITIONINGS:
        raise ConfigError(f"objective {e.name!r}: conditioning must be one of {', '.join(CONDITIONINGS)}")
    if not callable(e.function):
        raise ConfigError(f"objective {e.name!r}: function must be callable")


def unregister(name: str) -> None:
    """Remove the entry ``name`` (for tests that register a method of their own)."""
    _CATALOGUE.pop(name, None)


def names() -> list[str]:
    """Every objective name, in catalogue order."""
    return list(_CATALOGUE)


def entries() -> list[Objective]:
    return list(_CATALOGUE.values())


def entry(name: str) -> Objective:
    """The entry ``name``; ConfigError listing the known names otherwise."""
    return _catalogue.lookup(_CATALOGUE, name, "objective")


def reads(name: str, settings: Mapping[str, Any]) -> set[str]:
    """The settings objective ``name`` reads given the ``settings`` (for ``reads_if``)."""
    e = entry(name)
    return {*e.reads, *(k for k, (key, value) in e.reads_if.items() if settings.get(key) == value)}


def table() -> str:
    """The objectives as a Markdown table (the README's)."""
    rows = ["| `--objective` | loss | model | settings | needs |", "| --- | --- | --- | --- | --- |"]
    for e in _CATALOGUE.values():
        model = {"none": "s(x)", "sigma": "s(x, sigma)", "time": "s(x, t)"}[e.conditioning]
        settings = ", ".join(f"`--{k.replace('_', '-')}`" for k in (*e.reads, *e.reads_if)) or "-"
        ref = f" ({e.reference})" if e.reference else ""
        summary = e.summary.replace("||", "\u2016")
        rows.append(f"| `{e.name}` | {summary}{ref} | {model} | {settings} | {e.needs} |")
    return "\n".join(rows)


def _b(name: str) -> Lazy:
    return Lazy(f"scorematch.objectives.builders:{name}")


def _f(module: str, name: str) -> Lazy:
    return Lazy(f"scorematch.objectives.{module}:{name}")


_NOISE_RANGE = ("sigma_max", "sigma_min")
for _e in (
    Objective(name="esm", function=_f("esm", "esm"), summary="1/2 E||s_theta(x) - s*(x)||^2", loss=_b("esm_loss"),
              needs="the true score s* (the Gaussian-mixture toys)"),
    Objective(name="esm_kde", function=_f("esm", "esm_kde"),
              summary="the same with s* = grad log q_h, q_h a Gaussian KDE of the data", reads=("bandwidth",),
              schedule=_b("kde_schedule"), schedule_keys=("bandwidth",), loss=_b("kde_loss"),
              needs="low-dimensional samples"),
    Objective(name="ism", function=_f("ism", "ism"),
              summary="E[tr(grad_x s_theta) + 1/2 ||s_theta||^2] (exact trace)", reference="Hyvarinen 2005",
              needs="samples; one backward pass for MLPs"),
    Objective(name="ssm", function=_f("ssm", "ssm"), summary="E_v[v^T (grad_x s_theta) v + 1/2 (v^T s_theta)^2]",
              reference="Song et al. 2019", reads=("n_projections", "projection"), loss=_b("ssm_loss"),
              needs="samples, any dimension"),
    Objective(name="ssm_vr", function=_f("ssm", "ssm"),
              summary="E_v[v^T (grad_x s_theta) v] + 1/2 ||s_theta||^2 (variance reduced)",
              reference="Song et al. 2019", reads=("n_projections", "projection"), loss=_b("ssm_vr_loss"),
              needs="samples, any dimension"),
    Objective(name="dsm", function=_f("dsm", "dsm"), summary="1/2 E||s_theta(x + sigma z) + z/sigma||^2",
              reference="Vincent 2011", reads=("sigma",), schedule=_b("dsm_schedule"), schedule_keys=("sigma",),
              loss=_b("dsm_loss"), needs="samples; learns the score of the noised data"),
    Objective(name="ncsn", function=_f("dsm", "ncsn"), summary="multi-scale DSM with lambda(sigma) = sigma^2",
              conditioning="sigma", reference="Song & Ermon 2019",
              reads=(*_NOISE_RANGE, "n_levels", "steps_per_sigma"), schedule=_b("ncsn_schedule"),
              schedule_keys=("sigmas", "eps", "steps_per_sigma"), loss=_b("ncsn_loss"),
              models=("ncsn_mlp", "image_unet"),
              needs="samples; multimodal data, images"),
    Objective(name="sde", function=_f("sde", "sde_dsm"), summary="continuous-time DSM of a VE, VP or sub-VP SDE",
              conditioning="time", reference="Song et al. 2021", reads=("sde", "likelihood_weighting"),
              reads_if={k: ("sde", "ve") for k in _NOISE_RANGE}, schedule=_b("sde_schedule"), schedule_sde=True,
              loss=_b("sde_loss"), models=("time_mlp", "image_unet"), needs="samples; likelihoods"),
    Objective(name="edm", function=_f("edm", "edm"),
              summary="1/2 E[lambda(sigma)||D_theta(x + n; sigma) - x||^2], ln sigma ~ N(P_mean, P_std^2)",
              conditioning="sigma", reference="Karras et al. 2022", reads=(*_NOISE_RANGE, "p_mean", "p_std"),
              schedule=_b("edm_schedule"), schedule_keys=("sigma_data", "p_mean", "p_std", "sigma_min", "sigma_max"),
              loss=_b("edm_loss"), models=("time_mlp", "image_unet"), precondition=_b("edm_precondition"),
              needs="samples; the fewest sampling steps"),
):
    register(_e)

#: read-only view of the catalogue, name -> entry
CATALOGUE: Mapping[str, Objective] = MappingProxyType(_CATALOGUE)
