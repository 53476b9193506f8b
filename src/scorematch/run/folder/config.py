"""The full configuration of a training run, as a validated, JSON-serialisable dataclass.

A run folder's ``config.json`` is this dataclass; loading it rejects unknown keys by name,
wrong types and values out of range, so a typo or a file from another version fails with a
message rather than training something else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from scorematch._version import __version__
from scorematch.errors import CheckpointError, ConfigError
from scorematch.objectives import catalogue as objective_catalogue
from scorematch.run.folder.validate import check_schedule, check_seed, parse_json, read_file
from scorematch.run.system.limits import check_steps

MODEL_NAMES = ("auto", "mlp", "energy", "ncsn_mlp", "unet", "time_mlp", "time_unet")
SDE_NAMES = ("ve", "vp", "subvp")
CONFIG_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything that determines a run. Defaults train a small DSM score MLP on gmm2d."""

    data: str = "gmm2d"
    objective: str = objective_catalogue.DEFAULT
    model: str = "auto"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    n_data: int = 10_000
    test_fraction: float = 0.2
    hidden: int = 128
    depth: int = 3
    activation: str = "silu"
    base_channels: int = 32
    conditioning: str = "auto"
    sigma: float | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None
    n_levels: int | None = None
    steps_per_sigma: int | None = None
    bandwidth: float | None = None
    n_projections: int = 1
    projection: str = "gaussian"
    sde: str = "ve"
    likelihood_weighting: bool = False
    p_mean: float | None = None
    p_std: float = 1.2
    class_conditional: bool = False
    label_dropout: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 0
    posthoc_ema_every: int = 0
    log_every: int = 10
    skip_nonfinite: bool = False
    max_skipped: int = 10
    dequantize: bool = False
    standardize: str = "auto"
    csv_header: str = "auto"
    device: str = "auto"
    progress: bool = True
    collective_timeout: float = 300.0
    schedule: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    version: str = __version__
    format: int = CONFIG_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    return True


def _short_repr(value: Any, limit: int = 60) -> str:
    """A value for a message: a tensor or array by its type and shape, anything else cut short."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__name__} of shape {tuple(shape)}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a dict, rejecting unknown keys and wrong types by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
    hints = get_type_hints(TrainConfig)
    # the format first: a newer version's config may also have keys this version does not know
    fmt = d.get("format", CONFIG_FORMAT)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > CONFIG_FORMAT:
        raise CheckpointError(
            f"this run was written by a newer scorematch (config format {fmt}, version "
            f"{d.get('version', '?')}); this is scorematch {__version__} (format {CONFIG_FORMAT}): upgrade scorematch"
        )
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(hints))}"
        )
    for key, value in d.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"config key {key!r} must be {hints[key]}, got {_short_repr(value)}")
    values = {k: (float(v) if hints[k] in (float, float | None) and isinstance(v, int) else v) for k, v in d.items()}
    return validate(TrainConfig(**values))


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range checks on every field; raises ConfigError naming the field and the fix."""
    from scorematch._checks import choice, positive, positive_int

    choice("objective", cfg.objective, objective_catalogue.names())
    choice("model", cfg.model, MODEL_NAMES)
    choice("sde", cfg.sde, SDE_NAMES)
    choice("projection", cfg.projection, ("gaussian", "rademacher"))
    choice("conditioning", cfg.conditioning, ("auto", "embedding", "divide"))
    choice("standardize", cfg.standardize, ("auto", "none"))
    choice("csv_header", cfg.csv_header, ("auto", "yes", "no"))
    if cfg.steps_per_sigma is not None:
        positive_int("steps_per_sigma", cfg.steps_per_sigma)
    for name in ("batch_size", "n_data", "hidden", "depth", "base_channels",
                 "n_projections", "checkpoint_every", "keep_checkpoints", "log_every"):
        positive_int(name, getattr(cfg, name))
    positive_int("steps", cfg.steps, minimum=0)
    positive_int("max_skipped", cfg.max_skipped, minimum=0)
    check_seed("seed", cfg.seed)
    positive("collective_timeout", cfg.collective_timeout)
    positive_int("sample_every", cfg.sample_every, minimum=0)
    positive_int("posthoc_ema_every", cfg.posthoc_ema_every, minimum=0)
    positive("lr", cfg.lr)
    for name in ("sigma", "sigma_max", "sigma_min", "bandwidth", "grad_clip"):
        if getattr(cfg, name) is not None:
            positive(name, getattr(cfg, name))
    if cfg.n_levels is not None:
        positive_int("n_levels", cfg.n_levels, minimum=2)
        check_steps("--n-levels", cfg.n_levels, "noise levels")
    if cfg.steps_per_sigma is not None:
        check_steps("--steps-per-sigma", cfg.steps_per_sigma, "steps per noise level")
    positive("p_std", cfg.p_std)
    if cfg.p_mean is not None and not math.isfinite(cfg.p_mean):
        raise ConfigError(f"p_mean must be a finite number, got {cfg.p_mean}")
    if cfg.class_conditional and cfg.conditioning == "divide":
        raise ConfigError("--class-conditional needs --conditioning embedding (or auto): the labels are added to "
                          "the noise-level embedding, which 'divide' does not have")
    if not 0 <= cfg.label_dropout < 1:
        raise ConfigError(f"label_dropout must be in [0, 1) (the share of labels replaced by the null label), "
                          f"got {cfg.label_dropout}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {cfg.test_fraction}")
    if cfg.sigma_max is not None and cfg.sigma_min is not None and cfg.sigma_max <= cfg.sigma_min:
        raise ConfigError(f"sigma_max must exceed sigma_min, got {cfg.sigma_max} <= {cfg.sigma_min}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
    if cfg.schedule:
        check_schedule(cfg.objective, cfg.schedule, "config schedule", cfg.sde)
    _check_history(cfg.history)
    return cfg


#: the settings a resumed run may change (the others would make it another run)
RESUME_SETTINGS = ("steps", "lr", "grad_clip", "skip_nonfinite", "max_skipped", "checkpoint_every",
                   "keep_checkpoints", "sample_every", "log_every", "device", "progress", "collective_timeout")


def _check_history(history: list[Any]) -> None:
    """config history: one entry per resume that changed settings, {"step": N, "set": {...}, "was": {...}}."""
    for i, h in enumerate(history):
        if not isinstance(h, dict) or set(h) != {"step", "set", "was"}:
            raise ConfigError(f"config history[{i}] must be an object with step, set and was, got {h!r:.80}")
        if isinstance(h["step"], bool) or not isinstance(h["step"], int) or h["step"] < 0:
            raise ConfigError(f"config history[{i}].step must be an integer >= 0, got {h['step']!r:.40}")
        for k in ("set", "was"):
            if not isinstance(h[k], dict) or not set(h[k]) <= set(RESUME_SETTINGS):
                raise ConfigError(f"config history[{i}].{k} must map settings among {', '.join(RESUME_SETTINGS)}")
            for v in h[k].values():
                if not (v is None or isinstance(v, bool | int | float | str)):
                    raise ConfigError(f"config history[{i}].{k} holds {v!r:.40}, not a plain value")


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a config.json (a run folder's or a user's)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists() and not p.is_symlink():
        raise CheckpointError(f"no config at {p}; is this a scorematch run folder (made by `scorematch train`)?")
    return parse_config(read_file(p, "config file", error=ConfigError), p)


def parse_config(data: bytes, where: str | Path) -> TrainConfig:
    """A TrainConfig from the bytes of a config.json (validated; ConfigError naming ``where``)."""
    return from_dict(parse_json(data, where, ConfigError))
