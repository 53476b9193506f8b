"""A user's own model and data in the managed loop, and bare models on disk.

The protocol a module follows to be trained by ``scorematch.train(cfg, model=module)``:

- it is an ``nn.Module``; class attribute ``conditioning`` is ``"none"`` (s(x)), ``"sigma"``
  (s(x, sigma), sigma of shape (n,)) or ``"time"`` (s(x, t), t of shape (n,)), default
  ``"none"``: the conditioning its objective's catalogue entry names
  (``scorematch.objectives.catalogue``); ``kind`` is ``"score"`` or ``"energy"``, default ``"score"``;
  for edm, ``EDMPrecond(F, sigma_data=...)`` wraps a user's network F, and a module with a
  ``denoise(x, sigma)`` method is trained through it (docs/your-model.md states it all);
- ``score(x[, c])`` returns the score, shaped like x; without a ``score`` method, ``forward`` is
  the score (kind ``"score"``) or the energy E(x) of shape (n,) (kind ``"energy"``, s = -grad E);
- ``config``, a dict of JSON values, holds its constructor's keyword arguments, so that
  ``scorematch.load(run)`` rebuilds it as ``cls(**config)`` (the class by its import path
  ``module:QualName``) and loads its safetensors weights. Nothing is ever unpickled, and a
  module a folder names is never imported unless the user says so (``import_class``): a class
  defined in the script being run (``__main__``) is refused when the model is saved.

``save(model, folder)`` / ``load_bare(folder)`` write and read a bare model in the same form:
``config.json`` (class, constructor config, standardisation, run information),
``weights.safetensors`` and ``manifest.json`` (their SHA-256).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scorematch import _compile
from scorematch.data import Dataset, Standardization
from scorematch.errors import CheckpointError, ModelError, ScoreMatchWarning
from scorematch.files import atomic_write, ensure_folder
from scorematch.models import MODEL_REGISTRY, Standardized, build_model, model_spec
from scorematch.models.mlp import neg_grad_sum
from scorematch.objectives import catalogue
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder.validate import MAX_JSON_BYTES, parse_json

CONDITIONINGS = ("none", "sigma", "time")
KINDS = ("score", "energy")
MEMORY_DATA = "data.npy"
BARE_FORMAT = 1
#: environment variable: comma-separated modules (or packages) whose model classes a folder may name
TRUSTED_ENV = "SCOREMATCH_TRUSTED_MODULES"
_TRUST: contextvars.ContextVar[bool] = contextvars.ContextVar("scorematch_trust_model_module", default=False)


@contextlib.contextmanager
def trusting(trust: bool = True) -> Iterator[None]:
    """While the block runs, ``import_class`` may import the module a folder names (``trust``);
    ``trusting(False)`` leaves the current setting as it is."""
    token = _TRUST.set(True) if trust else None
    try:
        yield
    finally:
        if token is not None:
            _TRUST.reset(token)


def _allowed(module_name: str) -> bool:
    """Whether the user allowed importing ``module_name``: ``trusting()``, or the module or a
    package above it listed in SCOREMATCH_TRUSTED_MODULES."""
    if _TRUST.get():
        return True
    listed = {m.strip() for m in os.environ.get(TRUSTED_ENV, "").split(",") if m.strip()}
    parts = module_name.split(".")
    return any(".".join(parts[:i]) in listed for i in range(1, len(parts) + 1))


class ForwardScore(nn.Module):
    """A module without ``score``: its forward is the score, or the energy for kind "energy"."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.conditioning = getattr(module, "conditioning", "none")
        self.kind = getattr(module, "kind", "score")
        for name in ("dim", "n_classes", "null_label", "sigma_data"):
            if hasattr(module, name):
                setattr(self, name, getattr(module, name))

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return self.module(x, *condition)

    def score(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return self.module(x, *condition)


class ForwardEnergy(ForwardScore):
    """A module of kind "energy" without ``score``: its forward is E(x), shape (n,), and s = -grad E."""

    def score(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return neg_grad_sum(lambda y: self.module(y, *condition), x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def adapt(module: nn.Module) -> nn.Module:
    """``module`` itself when it has ``score``, else ``ForwardScore(module)`` (``ForwardEnergy`` for kind
    "energy"): only an energy model has ``energy``, so MALA refuses a score model in one line."""
    if callable(getattr(_compile.uncompiled(module), "score", None)):
        return module
    return ForwardEnergy(module) if getattr(module, "kind", "score") == "energy" else ForwardScore(module)


def user_class(model: nn.Module) -> nn.Module:
    """The user's module behind adapters and torch.compile."""
    model = _compile.uncompiled(model)
    return model.module if isinstance(model, ForwardScore) else model


def class_path(cls: type) -> str:
    """``module:QualName`` of a class, or the registry name of a built-in scorematch model."""
    if MODEL_REGISTRY.get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def _refuse_main(name: str) -> None:
    raise ModelError(
        f"{name} is defined in the script being run (__main__), so scorematch.load could "
        "never find it again: define the class in a module (e.g. my_models.py next to the script), import it "
        "from there and train or save again"
    )


def spec_of(model: nn.Module) -> dict[str, Any]:
    """The run.json model description {"name", "config"} of a built-in or a user's module."""
    inner = user_class(model)
    if MODEL_REGISTRY.get(type(inner).__name__) is type(inner):
        spec = model_spec(inner)
        net = str(spec["config"].get("net", ""))  # EDMPrecond around a user's network names its class
        if net.startswith("__main__:"):
            _refuse_main(net.partition(":")[2])
        return spec
    if type(inner).__module__ == "__main__":
        _refuse_main(type(inner).__name__)
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
    """The class named ``module:QualName`` (or a registered model name).

    A folder's text decides ``path``, so its module is imported only when the user allowed it:
    it is already imported in this process (the user's own code imported it), or ``trusting()``
    is active (``load(..., trust_model_module=True)``, ``--trust-model-module``), or it is listed
    in the SCOREMATCH_TRUSTED_MODULES environment variable. Otherwise CheckpointError says which
    module the folder wants and how to allow it; nothing is imported and no code runs."""
    if ":" not in path:
        if path not in MODEL_REGISTRY:
            raise CheckpointError(f"unknown model class {path!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
        return MODEL_REGISTRY[path]
    module_name, _, qualname = path.partition(":")
    parts = [*module_name.split("."), *(q for q in qualname.split(".") if q != "<locals>")]
    if not module_name or not qualname or not all(p.isidentifier() for p in parts):
        raise CheckpointError(f"model class {path!r} is not of the form module:QualName")
    if module_name == "__main__":
        raise CheckpointError(f"the model class {path} was defined in a script (__main__), which cannot be "
                              "imported; define the class in a module and train again")
    if module_name not in sys.modules and not _allowed(module_name):
        raise CheckpointError(
            f"the folder names the model class {path}: loading it would import module {module_name!r}, "
            f"which scorematch never does on a folder's word; if you trust this folder, import {module_name} "
            f"yourself first, or pass --trust-model-module (load(..., trust_model_module=True)), or set "
            f"{TRUSTED_ENV}={module_name.split('.')[0]}"
        )
    try:
        obj: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
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
    if name == "EDMPrecond" and ":" in str(config.get("net", "")):
        return _rebuild_precond(config)
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


def _rebuild_precond(config: dict[str, Any]) -> nn.Module:
    """``EDMPrecond`` around a user's network F, from the config it records: {"net": "module:QualName",
    "net_config": F's constructor arguments, "sigma_data"}."""
    from scorematch.models.edm import EDMPrecond

    net = rebuild({"name": config["net"], "config": config.get("net_config") or {}})
    try:
        return EDMPrecond(user_class(net), sigma_data=config.get("sigma_data", 0.5))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"run.json has an EDMPrecond config this version cannot build ({err})") from None


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
    if next(model.parameters(), None) is None:
        raise ModelError(f"{type(user_class(model)).__name__} has no parameters to train; give a module with "
                         "trainable weights (nn.Linear, nn.Parameter, ...)")
    if callable(getattr(model, "denoise", None)) and not callable(getattr(model, "score", None)):
        raise ModelError(f"{type(user_class(model)).__name__} has denoise but no score: add score(x, sigma) "
                         "returning (denoise(x, sigma) - x) / sigma**2, which the samplers call")
    adapted = adapt(model)
    _check_output(adapted, ds, cond)
    spec = spec_of(adapted)
    if ":" in spec["name"] or ":" in str(spec["config"].get("net", "")):
        _warn_if_not_rebuildable(adapted, spec)
    return adapted


#: batch sizes the shape check runs a user's module on: two, then a larger and different one, so that
#: an output that is right only for the first size (broadcasting, a hard-coded batch) is caught
CHECK_BATCHES = (2, 5)


def _check_output(model: nn.Module, ds: Dataset, cond: str) -> None:
    p = next(model.parameters(), None)
    name = type(user_class(model)).__name__
    device, dtype = (p.device, p.dtype) if p is not None else ("cpu", torch.float32)
    for n in CHECK_BATCHES:
        x = ds.x[torch.arange(n) % len(ds.x)].to(device=device, dtype=dtype)
        args = [] if cond == "none" else [torch.full((n,), 0.5 if cond == "time" else 1.0, device=x.device)]
        called = f"a batch of shape {tuple(x.shape)}{' and ' + cond + f' of shape ({n},)' if args else ''}"
        if isinstance(model, ForwardScore) and model.kind == "energy":
            e = _call(model.module, (x, *args), f"{name}.forward", called)
            if not isinstance(e, torch.Tensor) or tuple(e.shape) != (n,):
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ModelError(f"{name} (kind 'energy') returned {got} from forward for {called}: an energy is "
                                 f"one number per row, shape ({n},) (reduce over the other dimensions, e.g. "
                                 "with .sum(-1))")
        s = _call(_compile.method(model, "score"), (x, *args), f"{name}.score", called)
        if not isinstance(s, torch.Tensor) or s.shape != x.shape:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ModelError(f"{name}'s score returned {got} for x of shape {tuple(x.shape)}: a score has x's shape "
                             "(an energy model sets kind = 'energy' and returns E(x) of shape (n,) from forward)")


def _call(fn: Any, args: tuple[torch.Tensor, ...], what: str, called: str) -> Any:
    """``fn(*args)`` (the user's code, with gradients on); ModelError saying what it was called
    with when it raises."""
    try:
        with torch.enable_grad():
            return fn(*args)
    except Exception as err:  # noqa: BLE001 - the user's code: report what it was called with
        raise ModelError(f"{what} failed on {called} ({type(err).__name__}: {err})") from None


def _warn_if_not_rebuildable(model: nn.Module, spec: dict[str, Any]) -> None:
    why = ""
    if "<locals>" in spec["name"] or "<locals>" in str(spec["config"].get("net", "")):
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
    ``Standardized`` model ``train``/``load`` return) to ``folder``, a new or empty folder:
    config.json, weights.safetensors and manifest.json (their SHA-256). ``scorematch.load(folder)``
    reads it back. A folder that is not empty is refused (nothing of yours is overwritten)."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"save needs a torch.nn.Module (a scorematch model or your own), got {type(model).__name__}")
    if isinstance(folder, bool) or not isinstance(folder, str | os.PathLike):
        raise ModelError(f"save needs the path of a new or empty folder (a str or pathlib.Path), got "
                         f"{type(folder).__name__}")
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise ModelError(f"{folder} exists and is not a folder; save into a new or empty folder")
        entries = sorted(p.name for p in folder.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ModelError(f"{folder} is not empty ({shown}); save into a new or empty folder (nothing there is "
                             "overwritten)")
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
    ensure_folder(folder)
    ckpt.save_weights(folder, user_class(inner).state_dict())
    manifest.write_json_files(folder, {"config.json": json.loads(text)})
    return folder


def load_bare(folder: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model ``save`` wrote to ``folder`` (config.json and weights.safetensors verified
    against its manifest.json; a folder of an earlier version, with weights.safetensors/ a
    folder holding the weights and their manifest, is read too)."""
    weights = folder / "weights.safetensors"
    legacy = weights.is_dir() and not weights.is_symlink()
    try:
        data = (folder / "config.json").read_bytes() if legacy else manifest.read_verified(
            folder, "config.json", "model config", max_bytes=MAX_JSON_BYTES)
        config = parse_json(data, folder / "config.json")
    except OSError as err:
        raise CheckpointError(f"{folder / 'config.json'} cannot be read: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config["model"].get("name"), str):
        raise CheckpointError(f"{folder} is neither a run folder (no run.json) nor a model saved by scorematch.save")
    model = rebuild(config["model"])
    state = ckpt.load_weights(weights if legacy else folder)
    try:
        user_class(model).load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()[:200]
        raise CheckpointError(f"the weights in {folder} do not fit {config['model']['name']}: {first}") from None
    if config.get("standardize"):
        try:
            st = Standardization.from_dict(config["standardize"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{folder / 'config.json'} has a malformed standardize entry ({err})") from None
        model = Standardized(model, st.mean, st.std)
    if config.get("run_info") is not None:
        model.run_info = config["run_info"]
    return model.to(device).eval()
