"""Every field scorematch reads back from a run folder, checked before it is used.

A run folder may come from someone else, from an older version, or from a disk that lost a
write: ``read_json`` refuses what is not a regular file, not UTF-8, not JSON, nested deeper
than any scorematch file, or holds NaN/Infinity; ``check_schedule``, ``check_run_info``,
``check_model_spec`` and ``check_checkpoint_state`` check types and ranges field by field. Each
failure is a ScoreMatchError naming the file and the field. ``check_settings_apply`` refuses a
setting the chosen objective or model would silently ignore.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError, ConfigError, ScoreMatchError
from scorematch.objectives import catalogue
from scorematch.run.system import limits

#: seeds are integers in [0, SEED_MAX]; ranks and steps are added to them, within torch's 64 bits
SEED_MAX = 2**62
#: no JSON file scorematch writes comes near this size or nesting depth
MAX_JSON_BYTES = 64 * 2**20
MAX_DEPTH = 32
#: sample shapes: at most 3 axes of at most 2^16 each, at most 2^26 numbers per sample
MAX_AXIS, MAX_NUMEL = 2**16, 2**26
#: at most this many classes of a class-conditional run (the label embedding's rows)
MAX_CLASSES = 2**16

SDE_FIELDS = {"ve": ("sigma_min", "sigma_max"), "vp": ("beta_min", "beta_max"), "subvp": ("beta_min", "beta_max")}
#: the settings of class-conditional training, which only noise- or time-conditional objectives read
CLASS_SETTINGS = ("class_conditional", "label_dropout")
#: models that use each architecture setting
MODEL_SETTINGS: dict[str, tuple[str, ...]] = {
    "hidden": ("mlp", "energy", "ncsn_mlp", "time_mlp"), "depth": ("mlp", "energy", "ncsn_mlp", "time_mlp"),
    "activation": ("mlp", "energy", "ncsn_mlp", "time_mlp"), "base_channels": ("unet", "time_unet"),
    "conditioning": ("unet",), "model_size": ("image_unet",),
}
_DEFAULTS = {"sde": "ve", "likelihood_weighting": False, "n_projections": 1, "projection": "gaussian", "p_std": 1.2,
             "class_conditional": False, "label_dropout": 0.1}


def note(message: str) -> None:
    """A one-line note on stderr (``scorematch: ...``), from rank 0 only under several processes."""
    if os.environ.get("RANK", "0") == "0":
        print(f"scorematch: {message}", file=sys.stderr)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_seed(name: str, value: Any, error: type[ScoreMatchError] = ConfigError) -> int:
    """``value`` as an int in [0, SEED_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise error(f"{name} must be an integer between 0 and 2**62 = {SEED_MAX}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- reading files


def read_file(path: str | Path, what: str = "file", max_bytes: int | None = MAX_JSON_BYTES,
              error: type[ScoreMatchError] = CheckpointError) -> bytes:
    """The bytes of a regular file (a symbolic link to one is fine); a folder, a device, a pipe,
    a missing or unreadable file, or more than ``max_bytes`` is an ``error`` naming the path."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{p} is missing; is this a complete scorematch run folder?") from None
    except IsADirectoryError:
        raise error(f"{p} is a folder, not a {what}; restore the file") from None
    except OSError as err:
        raise error(f"cannot read {p} ({err.strerror or err}); fix its permissions or restore it") from None
    try:
        st = os.fstat(fd)
        problem = None
        if stat.S_ISDIR(st.st_mode):
            problem = f"{p} is a folder, not a {what}; restore the file"
        elif not stat.S_ISREG(st.st_mode):
            problem = f"{p} is not a regular file (a device, pipe or socket); restore the {what}"
        elif max_bytes is not None and st.st_size > max_bytes:
            problem = f"{p} is {st.st_size} bytes, far more than any {what} scorematch writes; restore it"
        elif max_bytes is None:
            problem = limits.file_too_big(p, st.st_size, what)
        data = b""
        if problem is None:
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as err:
        raise error(f"cannot read {p} ({err.strerror or err}); restore it") from None
    finally:
        os.close(fd)
    if problem is not None:
        raise error(problem)
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{p} grew past {max_bytes} bytes while being read; restore it")
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(obj: Any, limit: int) -> int:
    stack, deepest = [(obj, 1)], 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def parse_json(data: bytes, where: str | Path, error: type[ScoreMatchError] = CheckpointError) -> Any:
    """JSON text to Python, with every way it can fail as one ``error`` naming ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{where} is not text (binary content); restore it") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{where} is nested far deeper than any scorematch file; restore it") from None
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, integers of thousands of digits
        raise error(f"{where} is not valid JSON ({str(err)[:120]}); restore it") from None
    if _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise error(f"{where} is nested deeper than {MAX_DEPTH} levels; restore it")
    return obj


def read_json(path: str | Path, what: str = "JSON file", error: type[ScoreMatchError] = CheckpointError) -> Any:
    return parse_json(read_file(path, what, error=error), path, error)


# ----------------------------------------------------------------------------- values


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def number(where: str, v: Any, error: type[ScoreMatchError], positive: bool = False) -> float:
    if not is_number(v) or (positive and v <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise error(f"{where} must be {kind}, got {_short(v)}")
    return float(v)


def integer(where: str, v: Any, error: type[ScoreMatchError], lo: int = 0, hi: int = 2**62) -> int:
    if not is_int(v) or not lo <= v <= hi:
        raise error(f"{where} must be an integer in [{lo}, {hi}], got {_short(v)}")
    return v


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def obj(where: str, v: Any, error: type[ScoreMatchError], keys: Iterable[str] | None = None,
        optional: Iterable[str] = (), strict: bool = True) -> dict[str, Any]:
    """``v`` as a dict with the ``keys`` (all present) and ``optional`` ones; with ``strict``
    nothing else."""
    if not isinstance(v, dict):
        raise error(f"{where} must be a JSON object, got {type(v).__name__}")
    if keys is not None:
        missing = [k for k in keys if k not in v]
        if missing:
            raise error(f"{where} lacks {', '.join(map(repr, missing))}")
        extra = sorted(set(v) - set(keys) - set(optional))
        if strict and extra:
            raise error(f"{where} has unknown key(s) {', '.join(map(repr, extra[:5]))}")
    return v


# ----------------------------------------------------------------------------- schedules


def check_schedule(objective: str, schedule: Any, where: str, sde: str | None = None,
                   error: type[ScoreMatchError] = ConfigError) -> dict[str, Any]:
    """The noise schedule of ``objective``: the keys of its catalogue entry (``schedule_keys``,
    e.g. NCSN sigmas/eps/T, DSM sigma, KDE bandwidth; empty for none), or an SDE's name and range
    (``schedule_sde``), every value in range."""
    e = catalogue.entry(objective) if objective in catalogue.names() else None
    if e is not None and e.schedule_sde:
        s = obj(where, schedule, error, ("sde",), SDE_FIELDS["ve"] + SDE_FIELDS["vp"])
        name = s["sde"]
        if name not in SDE_FIELDS:
            raise error(f"{where}.sde must be one of {', '.join(SDE_FIELDS)}, got {_short(name)}")
        if sde is not None and name != sde:
            raise error(f"{where}.sde is {name!r} but the config's sde is {sde!r}")
        allowed = SDE_FIELDS[name]
        extra = sorted(set(s) - {"sde", *allowed})
        if extra:
            raise error(f"{where} has key(s) {', '.join(extra)} that SDE {name!r} does not take")
        vals = {k: number(f"{where}.{k}", s[k], error, positive=True) for k in allowed if k in s}
        if len(vals) == 2 and vals[allowed[0]] >= vals[allowed[1]]:
            raise error(f"{where}: {allowed[0]} must be below {allowed[1]}, got {vals}")
        return s
    keys = e.schedule_keys if e is not None else ()
    s = obj(where, schedule, error, keys)
    for k in keys:
        if k == "p_mean":
            number(f"{where}.p_mean", s[k], error)
        elif k == "sigmas":
            _sigmas(f"{where}.sigmas", s[k], error)
        elif k == "steps_per_sigma":
            integer(f"{where}.steps_per_sigma", s[k], error, 1, 10**6)
        else:
            number(f"{where}.{k}", s[k], error, positive=True)
    if {"sigma_min", "sigma_max"} <= set(keys) and s["sigma_min"] >= s["sigma_max"]:
        raise error(f"{where}: sigma_min must be below sigma_max, got {s['sigma_min']} >= {s['sigma_max']}")
    return s


def _sigmas(where: str, v: Any, error: type[ScoreMatchError]) -> None:
    if not isinstance(v, list) or not 1 <= len(v) <= 100_000:
        raise error(f"{where} must be a list of 1 to 100000 noise levels, got {_short(v)}")
    vals = [number(f"{where}[{i}]", s, error, positive=True) for i, s in enumerate(v)]
    if any(b >= a for a, b in zip(vals, vals[1:], strict=False)):
        raise error(f"{where} must be strictly descending (sigma_1 > ... > sigma_L)")


# ----------------------------------------------------------------------------- run.json


def check_sample_shape(where: str, v: Any, kind: str, error: type[ScoreMatchError]) -> tuple[int, ...]:
    axes = 1 if kind == "vector" else 3
    if not isinstance(v, list) or len(v) != axes:
        raise error(f"{where} must be a list of {axes} positive integer(s) for {kind} data, got {_short(v)}")
    shape = tuple(integer(f"{where}[{i}]", d, error, 1, MAX_AXIS) for i, d in enumerate(v))
    if math.prod(shape) > MAX_NUMEL:
        raise error(f"{where} {list(shape)} has more than {MAX_NUMEL} numbers per sample")
    return shape


def check_model_spec(spec: Any, where: str, error: type[ScoreMatchError] = CheckpointError) -> dict[str, Any]:
    """{"name": a registered model class, or a user's class as "module:QualName", "config": its
    constructor's keyword arguments, as JSON scalars, short lists or (for a wrapped network such
    as EDMPrecond's) one nested object of the same}."""
    from scorematch.models import MODEL_REGISTRY

    s = obj(where, spec, error, ("name", "config"))
    name, config = s["name"], obj(f"{where}.config", s["config"], error)
    user = isinstance(name, str) and re.fullmatch(r"[A-Za-z_][\w.]*:[\w.<>]+", name) is not None
    if not isinstance(name, str) or not (name in MODEL_REGISTRY or user):
        raise error(f"{where}.name must be a known model class ({', '.join(sorted(MODEL_REGISTRY))}) or a "
                    f"user's class as module:QualName, got {_short(name)}")
    if not user:
        params = inspect.signature(MODEL_REGISTRY[name].__init__).parameters
        named = {k for k, p in params.items() if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(config) - named)
        if unknown:
            raise error(f"{where}.config has argument(s) {', '.join(unknown)} that {name} does not take")
    _check_config_values(config, f"{where}.config", error, nested=True)
    return s


def _check_config_values(config: dict[str, Any], where: str, error: type[ScoreMatchError], nested: bool) -> None:
    for k, v in config.items():
        if isinstance(v, dict) and nested:
            _check_config_values(v, f"{where}.{k}", error, nested=False)
            continue
        items = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) > 8:
            raise error(f"{where}.{k} is a list of {len(v)} values; at most 8 are expected")
        for u in items:
            if not (u is None or isinstance(u, bool | str) and len(str(u)) <= 64 or is_number(u)):
                raise error(f"{where}.{k} must be a number, a short string or null, got {_short(u)}")
            if is_int(u) and not 0 <= u <= MAX_AXIS:
                raise error(f"{where}.{k} = {u} is out of range [0, {MAX_AXIS}]")


def check_run_info(info: Any, where: str, objective: str, sde: str, schedule: Mapping[str, Any],
                   error: type[ScoreMatchError] = CheckpointError) -> dict[str, Any]:
    """run.json: ``model`` (check_model_spec), ``data`` (kind, sample_shape, lo <= hi, and when
    present name, n_train, mean, std, path, sha256), ``schedule`` (check_schedule, equal to the
    config's when that has one), and when present ``environment`` (an object). Other top-level
    keys and other ``data`` keys are records this version does not read, and are left alone."""
    top = obj(where, info, error, ("model", "data", "schedule"), strict=False)
    if "environment" in top:
        obj(f"{where}.environment", top["environment"], error)
    data = obj(f"{where}.data", top["data"], error, ("kind", "sample_shape", "lo", "hi"), strict=False)
    kind = data["kind"]
    if kind not in ("vector", "image"):
        raise error(f"{where}.data.kind must be 'vector' or 'image', got {_short(kind)}")
    shape = check_sample_shape(f"{where}.data.sample_shape", data["sample_shape"], kind, error)
    lo, hi = number(f"{where}.data.lo", data["lo"], error), number(f"{where}.data.hi", data["hi"], error)
    if lo > hi:
        raise error(f"{where}.data: lo {lo} exceeds hi {hi}")
    _optional_data(f"{where}.data", data, shape, error)
    spec = check_model_spec(top["model"], f"{where}.model", error)
    cfg = spec["config"]
    if "dim" in cfg and cfg["dim"] != math.prod(shape):
        raise error(f"{where}: the model takes {cfg['dim']} numbers per sample but data.sample_shape "
                    f"{list(shape)} has {math.prod(shape)}")
    if "channels" in cfg and (kind != "image" or cfg["channels"] != shape[0]):
        raise error(f"{where}: the model takes {cfg['channels']} image channel(s) but the data is "
                    f"{kind} of shape {list(shape)}")
    net = cfg.get("net_config") if isinstance(cfg.get("net_config"), dict) else cfg
    if "classes" in data and net.get("n_classes") != len(data["classes"]):
        raise error(f"{where}: data.classes names {len(data['classes'])} classes but the model has "
                    f"n_classes = {_short(net.get('n_classes'))}")
    check_schedule(objective, top["schedule"], f"{where}.schedule", sde, error)
    if schedule and top["schedule"] != schedule:
        raise error(f"{where}.schedule differs from the schedule in config.json; restore one of them")
    return top


def _optional_data(where: str, data: dict[str, Any], shape: tuple[int, ...], error: type[ScoreMatchError]) -> None:
    for k in ("name", "path"):
        if k in data and not isinstance(data[k], str):
            raise error(f"{where}.{k} must be a string, got {_short(data[k])}")
    if "n_train" in data:
        integer(f"{where}.n_train", data["n_train"], error, 1)
    if "sha256" in data and not (isinstance(data["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", data["sha256"])):
        raise error(f"{where}.sha256 must be 64 hexadecimal digits, got {_short(data['sha256'])}")
    for k in ("mean", "std"):
        if data.get(k) is None:
            continue
        vals = data[k] if isinstance(data[k], list) else [data[k]]
        if not 1 <= len(vals) <= math.prod(shape):
            raise error(f"{where}.{k} must hold 1 to {math.prod(shape)} numbers, got {len(vals)}")
        for i, v in enumerate(vals):
            number(f"{where}.{k}[{i}]", v, error, positive=k == "std")
    if "source" in data and not (isinstance(data["source"], str) and data["source"]):
        raise error(f"{where}.source must be the data's path or name, got {_short(data['source'])}")
    if "classes" in data:
        classes = data["classes"]
        if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES
                and all(isinstance(c, str) and 0 < len(c) <= 255 for c in classes)):
            raise error(f"{where}.classes must be a list of 1 to {MAX_CLASSES} class names (strings), "
                        f"got {_short(classes)}")
        prior = data.get("class_prior", [1.0 / len(classes)] * len(classes))
        if not (isinstance(prior, list) and len(prior) == len(classes)
                and all(isinstance(q, int | float) and not isinstance(q, bool) and 0 <= q <= 1 for q in prior)
                and abs(sum(prior) - 1) < 1e-6):
            raise error(f"{where}.class_prior must be {len(classes)} shares in [0, 1] that sum to 1, "
                        f"got {_short(prior)}")
    if data.get("csv_header") not in (None, "yes", "no"):
        raise error(f"{where}.csv_header must be 'yes' or 'no', got {_short(data['csv_header'])}")
    if data.get("standardize") is not None:
        st = obj(f"{where}.standardize", data["standardize"], error, ("mean", "std"))
        dim = math.prod(shape)
        for k in ("mean", "std"):
            vals = st[k]
            if not isinstance(vals, list) or len(vals) != dim:
                raise error(f"{where}.standardize.{k} must be a list of {dim} numbers (one per dimension), "
                            f"got {_short(vals)}")
            for i, v in enumerate(vals):
                number(f"{where}.standardize.{k}[{i}]", v, error, positive=k == "std")
    if data.get("fingerprint"):
        fp = obj(f"{where}.fingerprint", data["fingerprint"], error, ("kind",), strict=False)
        if fp["kind"] not in ("toy", "bundled", "file", "folder", "memory"):
            raise error(f"{where}.fingerprint.kind must be toy, bundled, file, folder or memory, "
                        f"got {_short(fp['kind'])}")
        for k in ("sha256", "listing_sha256"):
            if k in fp and not (isinstance(fp[k], str) and re.fullmatch(r"[0-9a-f]{64}", fp[k])):
                raise error(f"{where}.fingerprint.{k} must be 64 hexadecimal digits, got {_short(fp[k])}")
        if "path" in fp and not isinstance(fp["path"], str):
            raise error(f"{where}.fingerprint.path must be a string, got {_short(fp['path'])}")


# ----------------------------------------------------------------------------- checkpoints


def check_checkpoint_state(state: Any, where: str, step: int, max_step: int) -> dict[str, Any]:
    """The JSON state of checkpoint ``step``: its step (equal to the file name's, at most
    ``max_step``), the world size, and Adam's hyper-parameters (one parameter group)."""
    e = CheckpointError
    s = obj(where, state, e, ("step", "world_size", "optimizer"))
    if s["step"] != step or not is_int(s["step"]):
        raise e(f"{where}.step is {_short(s['step'])} but the file is the checkpoint of step {step}")
    if step > max_step:
        raise e(f"{where}.step {step} is past the run's {max_step} steps")
    integer(f"{where}.world_size", s["world_size"], e, 1, 65536)
    opt = obj(f"{where}.optimizer", s["optimizer"], e, ("param_groups", "scalars"))
    groups = opt["param_groups"]
    if not isinstance(groups, list) or len(groups) != 1:
        raise e(f"{where}.optimizer.param_groups must be a list of one group, got {_short(groups)}")
    g = obj(f"{where}.optimizer.param_groups[0]", groups[0], e, ("params", "lr", "betas", "eps", "weight_decay"),
            strict=False)
    params = g["params"]
    if not isinstance(params, list) or params != list(range(len(params))) or len(params) > 100_000:
        raise e(f"{where}.optimizer.param_groups[0].params must be 0, 1, ..., n-1, got {_short(params)}")
    number(f"{where}.optimizer lr", g["lr"], e, positive=True)
    number(f"{where}.optimizer eps", g["eps"], e, positive=True)
    if number(f"{where}.optimizer weight_decay", g["weight_decay"], e) < 0:
        raise e(f"{where}.optimizer weight_decay must be >= 0")
    betas = g["betas"]
    if not isinstance(betas, list) or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise e(f"{where}.optimizer betas must be two numbers in [0, 1), got {_short(betas)}")
    for k, v in g.items():
        if k not in ("params", "lr", "betas", "eps", "weight_decay") and not (v is None or isinstance(v, bool)):
            raise e(f"{where}.optimizer.{k} must be true, false or null, got {_short(v)}")
    scalars = obj(f"{where}.optimizer.scalars", opt["scalars"], e)
    for k, v in scalars.items():
        m = re.fullmatch(r"(\d+)\.(\w+)", k)
        if not m or int(m.group(1)) >= len(params) or not is_number(v):
            raise e(f"{where}.optimizer.scalars has a bad entry {_short(k)}: {_short(v)}")
    return s


# ----------------------------------------------------------------------------- settings


def objective_settings() -> dict[str, list[str]]:
    """Each setting some objective reads, with the objectives that read it (``"name KEY VALUE"``
    where the objective reads it only under another setting's value), from the catalogue."""
    out: dict[str, list[str]] = {}
    for e in catalogue.entries():
        for k in e.reads:
            out.setdefault(k, []).append(e.name)
        for k, (key, value) in e.reads_if.items():
            out.setdefault(k, []).append(f"{e.name} {flag(key)} {value}")
        if e.conditional:
            for k in CLASS_SETTINGS:
                out.setdefault(k, []).append(e.name)
    return out


def non_default(values: Mapping[str, Any]) -> set[str]:
    """The settings of ``values`` that differ from their defaults among those checked here."""
    return {k for k in objective_settings() if k in values and values[k] != _DEFAULTS.get(k)}


def check_settings_apply(objective: str, sde: str, given: Iterable[str]) -> None:
    """Refuse settings (``given``: the ones a user set) that ``objective`` ignores (its catalogue
    entry does not read them)."""
    given = set(given)
    e = catalogue.entry(objective)
    if "class_conditional" in given and not e.conditional:
        conditional = [o.name for o in catalogue.entries() if o.conditional]
        raise ConfigError(f"--class-conditional needs a noise- or time-conditional model (objective "
                          f"{', '.join(conditional)}); objective {objective!r} trains an unconditional one")
    under = sorted({key for key, _ in e.reads_if.values()})  # the setting whose value decides (the SDE)
    used = catalogue.reads(objective, {key: sde for key in under})
    used |= set(CLASS_SETTINGS) if e.conditional else set()
    readers = objective_settings()
    ignored = [k for k in sorted(given) if k in readers and k not in used]
    if "label_dropout" in given and "class_conditional" not in given:
        raise ConfigError("--label-dropout only applies to a class-conditional run; add --class-conditional or "
                          "drop --label-dropout")
    if ignored:
        who = "; ".join(f"{flag(k)} by {', '.join(readers[k])}" for k in ignored)
        target = f"objective {objective!r}" + "".join(f" with {flag(key)} {sde}" for key in under)
        raise ConfigError(f"{', '.join(map(flag, ignored))} would be ignored by {target} (used: {who}); drop "
                          f"{'them' if len(ignored) > 1 else 'it'} or choose that objective")


def check_model_settings(model: str, kind: str, given: Iterable[str]) -> None:
    """Refuse architecture settings that ``model`` ignores, and image-only settings on vector data."""
    given = set(given)
    ignored = [k for k in sorted(given) if k in MODEL_SETTINGS and model not in MODEL_SETTINGS[k]]
    if ignored:
        raise ConfigError(f"{', '.join(map(flag, ignored))} would be ignored by model {model!r}; "
                          f"drop {'them' if len(ignored) > 1 else 'it'} or choose a model that uses "
                          f"{'them' if len(ignored) > 1 else 'it'} with --model")
    if kind != "image":
        image_only = sorted(given & {"dequantize", "sample_every"})
        if image_only:
            raise ConfigError(f"{', '.join(map(flag, image_only))} only apply to image data; drop them")
