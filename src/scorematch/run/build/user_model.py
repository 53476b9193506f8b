"""A user's own model and data in the managed loop, and bare models on disk.

The protocol a module follows to be trained by ``scorematch.train(cfg, model=module)``:

- it is an ``nn.Module``; class attribute ``conditioning`` is ``"none"`` (s(x)), ``"sigma"``
  (s(x, sigma), sigma of shape (n,)) or ``"time"`` (s(x, t), t of shape (n,)), default
  ``"none"``: the conditioning its objective's catalogue entry names
  (``scorematch.objectives.catalogue``); ``kind`` is ``"score"`` or ``"energy"``, default ``"score"``;
- ``score(x[, c])`` returns the score, shaped like x; without a ``score`` method, ``forward`` is
  the score (kind ``"score"``) or the energy E(x) of shape (n,) (kind ``"energy"``, s = -grad E);
- ``config``, a dict of JSON values, holds its constructor's keyword arguments, so that
  ``scorematch.load(run)`` rebuilds it as ``cls(**config)`` (the class by its import path
  ``module:QualName``) and loads its safetensors weights. Nothing is ever unpickled.

``save(model, folder)`` / ``load_bare(folder)`` write and read a bare model in the same form:
``config.json`` (class, constructor config, standardisation, run information) and
``weights.safetensors``.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scorematch import _compile
from scorematch.data import Dataset, Standardization
from scorematch.errors import CheckpointError, ModelError, ScoreMatchWarning
from scorematch.files import atomic_write, write_json
from scorematch.models import MODEL_REGISTRY, Standardized, build_model, model_spec
from scorematch.models.mlp import neg_grad_sum
from scorematch.objectives import catalogue
from scorematch.run.folder import checkpoint as ckpt

CONDITIONINGS = ("none", "sigma", "time")
KINDS = ("score", "energy")
MEMORY_DATA = "data.npy"
BARE_FORMAT = 1


class ForwardScore(nn.Module):
    """A module without ``score``: its forward is the score, or the energy for kind "energy"."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.conditioning = getattr(module, "conditioning", "none")
        self.kind = getattr(module, "kind", "score")
        if hasattr(module, "dim"):
            self.dim = module.dim

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return self.module(x, *condition)

    def score(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        if self.kind == "energy":
            return neg_grad_sum(lambda y: self.module(y, *condition), x)
        return self.module(x, *condition)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def adapt(module: nn.Module) -> nn.Module:
    """``module`` itself when it has ``score``, else ``ForwardScore(module)``."""
    return module if callable(getattr(_compile.uncompiled(module), "score", None)) else ForwardScore(module)


def user_class(model: nn.Module) -> nn.Module:
    """The user's module behind adapters and torch.compile."""
    model = _compile.uncompiled(model)
    return model.module if isinstance(model, ForwardScore) else model


def class_path(cls: type) -> str:
    """``module:QualName`` of a class, or the registry name of a built-in scorematch model."""
    if MODEL_REGISTRY.get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def spec_of(model: nn.Module) -> dict[str, Any]:
    """The run.json model description {"name", "config"} of a built-in or a user's module."""
    inner = user_class(model)
    if MODEL_REGISTRY.get(type(inner).__name__) is type(inner):
        return model_spec(inner)
    config = getattr(inner, "config", None)
    config = {} if config is None else config
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError):
        raise ModelError(
            f"{type(inner).__name__}.config must be a dict of JSON values (its constructor's keyword "
            f"arguments), got {type(config).__name__}; set self.config = {{'hidden': 64, ...}} in __init__"
        ) from None
    if not isinstance(config, dict):
        raise ModelError(f"{type(inner).__name__}.config must be a dict of constructor keyword arguments")
    return {"name": class_path(type(inner)), "config": config}


def import_class(path: str) -> type:
    """The class named ``module:QualName`` (or a registered model name)."""
    if ":" not in path:
        if path not in MODEL_REGISTRY:
            raise CheckpointError(f"unknown model class {path!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
        return MODEL_REGISTRY[path]
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f"the model class {path} cannot be imported ({type(err).__name__}: {err}); make its module "
            f"importable (install it or add its folder to PYTHONPATH) and load again"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise CheckpointError(f"{path} is not an nn.Module class")
    return obj


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """The module a run.json / config.json model description names, freshly constructed."""
    name, config = spec["name"], spec.get("config") or {}
    if ":" not in name:
        try:
            return build_model(name, config)
        except (TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"run.json has a model config this version cannot build ({name}: {err})") from None
    cls = import_class(name)
    try:
        return adapt(cls(**config))
    except Exception as err:  # the user's constructor: anything it raises means "cannot rebuild"
        raise CheckpointError(
            f"{name}(**{json.dumps(config)}) failed ({type(err).__name__}: {err}); its config attribute must "
            "hold the keyword arguments that rebuild it"
        ) from None


def check_model(model: nn.Module, ds: Dataset, objective: str) -> nn.Module:
    """Check a user's module against the protocol and the data; return it adapted (``adapt``).
    Warns when ``scorematch.load`` will not be able to rebuild it."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    cond, kind = getattr(model, "conditioning", "none"), getattr(model, "kind", "score")
    if cond not in CONDITIONINGS:
        raise ModelError(f"{type(user_class(model)).__name__}.conditioning must be one of "
                         f"{', '.join(CONDITIONINGS)}, got {cond!r}")
    if kind not in KINDS:
        raise ModelError(f"{type(user_class(model)).__name__}.kind must be 'score' or 'energy', got {kind!r}")
    need = catalogue.entry(objective).conditioning
    if cond != need:
        raise ModelError(f"objective {objective!r} needs a {need}-conditioned model; "
                         f"{type(user_class(model)).__name__}.conditioning is {cond!r}")
    adapted = adapt(model)
    _check_output(adapted, ds, cond)
    spec = spec_of(adapted)
    if ":" in spec["name"]:
        _warn_if_not_rebuildable(adapted, spec)
    return adapted


def _check_output(model: nn.Module, ds: Dataset, cond: str) -> None:
    p = next(model.parameters(), None)
    x = ds.x[:2].to(device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else torch.float32)
    args = [] if cond == "none" else [torch.full((len(x),), 0.5 if cond == "time" else 1.0, device=x.device)]
    name = type(user_class(model)).__name__
    try:
        with torch.enable_grad():
            s = _compile.method(model, "score")(x, *args)
    except Exception as err:  # the user's code: report what it was called with
        raise ModelError(f"{name}.score failed on a batch of shape {tuple(x.shape)}"
                         f"{' and ' + cond + ' of shape (2,)' if args else ''} ({type(err).__name__}: {err})") from None
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ModelError(f"{name}'s score returned {got} for x of shape {tuple(x.shape)}: a score has x's shape "
                         "(an energy model sets kind = 'energy' and returns E(x) of shape (n,) from forward)")


def _warn_if_not_rebuildable(model: nn.Module, spec: dict[str, Any]) -> None:
    why = ""
    if "<locals>" in spec["name"]:
        why = "it is defined inside a function"
    else:
        try:
            fresh = rebuild(spec)
            want = {k: tuple(v.shape) for k, v in user_class(model).state_dict().items()}
            if {k: tuple(v.shape) for k, v in user_class(fresh).state_dict().items()} != want:
                why = (f"{spec['name']}(**config) has other weights (set its config attribute to its "
                       "constructor's arguments)")
        except CheckpointError as err:
            why = str(err)
    if why:
        warnings.warn(f"scorematch.load will not rebuild this model: {why}; the run still trains and its weights "
                      "are saved", ScoreMatchWarning, stacklevel=4)


# ----------------------------------------------------------------------------- data in memory


def save_memory_data(run_dir: Path, ds: Dataset) -> dict[str, Any]:
    """Write in-memory data as RUN/data.npy (so eval, plot, report and resume find it); returns
    its fingerprint (path relative to the run folder)."""
    import hashlib

    buf = io.BytesIO()
    np.save(buf, ds.x.numpy().astype(np.float32), allow_pickle=False)
    data = buf.getvalue()
    atomic_write(Path(run_dir) / MEMORY_DATA, data)
    return {"kind": "file", "path": MEMORY_DATA, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def load_memory_data(run_dir: Path, kind: str) -> Dataset:
    path = Path(run_dir) / MEMORY_DATA
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} (the run's data, given in memory) cannot be read: {err}") from None
    return Dataset(x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), name="memory", kind=kind)


# ----------------------------------------------------------------------------- bare models


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model`` (a scorematch model, a user's module following the protocol, or the
    ``Standardized`` model ``train``/``load`` return) to ``folder``: config.json and
    weights.safetensors. ``scorematch.load(folder)`` reads it back."""
    folder = Path(folder)
    model = _compile.uncompiled(model)
    std = None
    if isinstance(model, Standardized):
        std = Standardization(model.mean.cpu(), model.std.cpu()).to_dict()
        inner = model.model
    else:
        inner = model
    config = {"format": BARE_FORMAT, "model": spec_of(inner), "standardize": std,
              "run_info": getattr(model, "run_info", None)}
    try:
        text = json.dumps(config, allow_nan=False)
    except (TypeError, ValueError):
        config["run_info"] = None
        text = json.dumps(config)
    ckpt.save_weights(folder / "weights.safetensors", user_class(inner).state_dict())
    write_json(folder / "config.json", json.loads(text))
    return folder


def load_bare(folder: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model ``save`` wrote to ``folder``."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder / 'config.json'} cannot be read: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{folder} is neither a run folder (no run.json) nor a model saved by scorematch.save")
    model = rebuild(config["model"])
    state = ckpt.load_weights(folder / "weights.safetensors")
    try:
        user_class(model).load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {folder} do not fit {config['model']['name']}: {err}") from None
    if config.get("standardize"):
        st = Standardization.from_dict(config["standardize"])
        model = Standardized(model, st.mean, st.std)
    if config.get("run_info") is not None:
        model.run_info = config["run_info"]
    return model.to(device).eval()


