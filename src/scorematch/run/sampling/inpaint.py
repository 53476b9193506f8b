"""Inpainting and imputation with a trained run: fill the unknown part of x given the rest.

``read_inpaint_file(path, sample_shape, kind)`` reads an .npz with the arrays ``x``, shape
(n, *sample_shape), and ``mask`` (True or 1 where a value is known; the shape of x or one that
broadcasts to it, e.g. the sample shape), checked at the boundary: one ScoreMatchError naming
the problem for a missing or unreadable file, missing or extra arrays, wrong shapes, a mask
that is not boolean, or NaN/inf among the known values (NaN where the mask is False is fine).

``inpaint_run(model, run_info, x, mask, method)`` fills the unknown values with the model's
noise-level view (``scorematch.denoise.sigma_view``, as ``generate`` uses) by one of three
methods of ``scorematch.samplers.conditional``:

    smc       sequential Monte Carlo over ancestral steps (Trippe et al. 2023, ``inpaint_smc``):
              each row of x is a group of ``particles`` particles and one is returned; it
              converges to the exact conditional p(x_unknown | x_known) as the particles grow
    replace   replacement (Song et al. 2021, Appendix I, ``inpaint``) with a denoising sampler
    repaint   replacement with RePaint resampling (Lugmayr et al. 2022), ``resample`` times per step

A standardised run fills z = (x - mu) / sd and maps back; the known values are returned exactly.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scorematch._checks import choice, positive_int
from scorematch._random import RowGenerators, randints
from scorematch.errors import ConfigError, DataError
from scorematch.objectives import catalogue as objective_catalogue
from scorematch.run.folder.validate import check_seed, read_file
from scorematch.run.sampling.generate import check_label, conditioned_score, noise_levels
from scorematch.run.sampling.space import noise_view, space_of
from scorematch.run.system.limits import check_sampling
from scorematch.samplers import catalogue

INPAINT_METHODS = ("smc", "replace", "repaint")
#: particles per row of x for smc, its number of noise levels, and RePaint's repeats per step
DEFAULT_PARTICLES = 32
DEFAULT_SMC_STEPS = 200
DEFAULT_RESAMPLE = 10
#: no inpainting file scorematch reads may be larger
MAX_INPAINT_BYTES = 2**32


def _array(npz: Any, key: str, path: Path) -> np.ndarray:
    try:
        arr = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{path}: array {key!r} cannot be read ({str(err)[:100]}); write it again with "
                        "numpy.savez(FILE, x=..., mask=...)") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: array {key!r} must hold numbers, got dtype {arr.dtype}")
    return arr


def read_inpaint_file(path: str | Path, sample_shape: tuple[int, ...], kind: str = "vector") -> tuple[
        torch.Tensor, torch.Tensor]:
    """(x, mask) of an inpainting file: x float32 (n, *sample_shape), mask bool broadcast to x's
    shape (True = known). DataError naming the file and the fix for anything else."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} {'is a link to nothing' if p.is_symlink() else 'does not exist'}; give the .npz file "
                        "with the arrays x and mask")
    if p.is_dir():
        raise DataError(f"{p} is a folder; give the .npz file with the arrays x and mask")
    data = read_file(p, "NumPy .npz file", max_bytes=MAX_INPAINT_BYTES, error=DataError)
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, BadZipFile... for non-npz bytes
        raise DataError(f"{p} is not a NumPy .npz file ({type(err).__name__}); write one with "
                        "numpy.savez(FILE, x=..., mask=...)") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{p} holds a single array, not an .npz with arrays x and mask; write "
                        "numpy.savez(FILE, x=..., mask=...)")
    with npz:
        names = set(npz.files)
        missing = [k for k in ("x", "mask") if k not in names]
        if missing or names - {"x", "mask"}:
            raise DataError(f"{p} must hold exactly the arrays x and mask; it holds "
                            f"{', '.join(sorted(names)) or 'no arrays'}")
        x, mask = _array(npz, "x", p), _array(npz, "mask", p)
    want = f"(n, {', '.join(map(str, sample_shape))})"
    if x.shape[1:] != tuple(sample_shape) or x.ndim != len(sample_shape) + 1:
        raise DataError(f"{p}: x must have shape {want}, n rows of this run's sample shape, got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{p}: x has no rows; give at least one sample to fill")
    try:
        fits = mask.ndim <= x.ndim and np.broadcast_shapes(mask.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise DataError(f"{p}: mask of shape {mask.shape} does not fit x of shape {x.shape}; give the shape of x, "
                        f"the sample shape {tuple(sample_shape)}, or one that broadcasts to x")
    if mask.dtype.kind != "b":
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            shown = ", ".join(f"{v:g}" for v in values[~np.isin(values, (0, 1))][:3])
            raise DataError(f"{p}: mask must be boolean (True or 1 = known, False or 0 = unknown), "
                            f"got the value(s) {shown}")
    known = np.broadcast_to(mask.astype(bool), x.shape)
    bad = int((~np.isfinite(x.astype(np.float64)) & known).sum())
    if bad:
        raise DataError(f"{p}: x has NaN or inf at {bad} known position(s) (mask True); the known values must be "
                        "finite (NaN is fine where mask is False)")
    xk = x[known].astype(np.float64)
    if kind == "image" and xk.size and (xk.min() < 0 or xk.max() > 1):
        raise DataError(f"{p}: the known pixels must lie in [0, 1] like the run's images, got [{xk.min():.4g}, "
                        f"{xk.max():.4g}]; divide 8-bit images by 255")
    x32 = np.where(known, x, 0).astype(np.float32)
    return torch.from_numpy(x32), torch.from_numpy(np.array(known, copy=True))  # writable: torch warns otherwise


def check_method(method: str | None, sampler: str | None, options: dict[str, Any], particles: int | None,
                 resample: int | None) -> tuple[str, str | None]:
    """(method, sampler) after checking that the sampler, options, particles and resample fit the
    method; ConfigError with the fix otherwise."""
    method = choice("inpaint method", method or "smc", INPAINT_METHODS)
    if method == "smc":
        if sampler is not None:
            raise ConfigError(f"--sampler {sampler} does not apply to --inpaint-method smc (its steps are ancestral "
                              "Euler steps); use --inpaint-method replace or repaint to choose a sampler")
        bad = [k for k in options if k != "n_steps"]
        if bad:
            raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in bad)} do"
                              f"{'es' if len(bad) == 1 else ''} not apply to --inpaint-method smc, which takes "
                              "--n-steps and --particles")
    else:
        sampler = sampler or catalogue.DEFAULT_DENOISING
        denoising = [e.name for e in catalogue.entries(catalogue.DENOISING) if e.schedule_option in e.option_names()]
        if sampler not in denoising:
            raise ConfigError(f"inpainting by {method} runs a denoising sampler ({', '.join(denoising)}), "
                              f"got --sampler {sampler}")
        catalogue.check_options(sampler, options)
    if particles is not None and method != "smc":
        raise ConfigError(f"--particles only applies to --inpaint-method smc, not {method}")
    if resample is not None and method != "repaint":
        raise ConfigError(f"--resample only applies to --inpaint-method repaint, not {method}")
    if particles is not None:
        positive_int("particles", particles, minimum=2)
    if resample is not None:
        positive_int("resample", resample, minimum=2)
    if "n_steps" in options:
        noise_levels(sampler or catalogue.DEFAULT_DENOISING, options["n_steps"], None)
    return method, sampler


def check_request(model: nn.Module, run_info: dict[str, Any], method: str | None = None, sampler: str | None = None,
                  options: dict[str, Any] | None = None, particles: int | None = None, resample: int | None = None,
                  label: int | str | None = None, guidance: float | None = None) -> tuple[str, str | None, Any, float]:
    """(method, sampler, class index, guidance) of an inpainting request, every setting checked
    against the method and the model before any work; ConfigError with the fix otherwise."""
    if space_of(model, run_info).kind not in catalogue.NOISE_CONDITIONAL:
        conditional = ", ".join(e.name for e in objective_catalogue.entries() if e.conditional)
        raise ConfigError(f"inpainting needs a noise- or time-conditional model (objective {conditional}); this "
                          "model is unconditional")
    method, sampler = check_method(method, sampler, options or {}, particles, resample)
    return (method, sampler, *check_label(model, run_info, label, guidance))


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    """A tensor or NumPy array as a tensor (DataError naming ``name`` for anything else)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{name} must be a tensor or a NumPy array, got {type(value).__name__}")
    return value


def inpaint_run(model: nn.Module, run_info: dict[str, Any], x: torch.Tensor | np.ndarray,
                mask: torch.Tensor | np.ndarray,
                method: str | None = None, sampler: str | None = None, seed: int = 0, particles: int | None = None,
                resample: int | None = None, label: int | str | None = None, guidance: float | None = None,
                progress: bool = False, start_index: int = 0, batch_size: int | None = None,
                **options: Any) -> torch.Tensor:
    """``x`` (n, *sample_shape, data space; a tensor or NumPy array, as ``mask``, which is boolean)
    with the values where ``mask`` is False filled in by
    ``method`` (smc by default; see the module docstring) from a noise- or time-conditional
    ``model`` and its run.json contents ``run_info``. ``sampler`` (replace, repaint; default heun)
    and its ``options`` (``n_steps`` noise levels: default 200 for smc, else the sampler's),
    ``particles`` per row (smc, default 32), ``resample`` (repaint, default 10), and a class
    ``label`` with ``guidance`` for a class-conditional model.

    Per-sample seeds: row i of x is filled as sample ``start_index + i`` of ``seed``, every draw
    of it (start, noise, and for smc its group's particles and resampling) from its own stream
    (``RowGenerators``), so it does not depend on the other rows of x or on ``batch_size`` (rows
    filled that many at a time; default all at once)."""
    check_seed("seed", seed)
    check_seed("start_index", start_index)
    method, sampler, label, w = check_request(model, run_info, method, sampler, options, particles, resample, label,
                                              guidance)
    space = space_of(model, run_info)
    shape = space.sample_shape
    x, mask = _as_tensor("x", x), _as_tensor("mask", mask)
    if mask.dtype != torch.bool:
        raise DataError(f"mask must be boolean (True where x is known), got dtype {mask.dtype}")
    if not x.is_floating_point():
        x = x.float()
    if tuple(x.shape[1:]) != shape or x.shape != mask.shape:
        raise DataError(f"x and mask must both have shape (n, {', '.join(map(str, shape))}), got "
                        f"{tuple(x.shape)} and {tuple(mask.shape)}")
    n = x.shape[0]
    batch = n if batch_size is None else positive_int("batch_size", batch_size)
    known = space.to_model_space(torch.where(mask, x, 0).to(device=space.device, dtype=space.dtype))
    m = mask.to(space.device).reshape(known.shape)
    view = noise_view(conditioned_score(space.inner, label, w), space.kind, space.schedule)
    opts = dict(options)
    steps = opts.pop("n_steps", DEFAULT_SMC_STEPS if method == "smc" else None)
    own = space.schedule["sigmas"] if space.kind == catalogue.KIND_NCSN and steps is None else None
    sigmas = noise_levels(sampler or catalogue.DEFAULT_DENOISING, steps, view, own)
    extra = {"progress": progress} if method == "replace" else {
        "resample": positive_int("resample", DEFAULT_RESAMPLE if resample is None else resample, minimum=2)}
    parts = []
    for a in range(0, n, batch):
        b = min(n, a + batch)
        g = RowGenerators.from_seed(seed, b - a, start=start_index + a, device=space.device)
        if method == "smc":
            parts.append(_smc(view, known[a:b], m[a:b], sigmas, particles, g, progress and a == 0))
            continue
        from scorematch.samplers import inpaint

        check_sampling(b - a, shape, space.device)
        start = view.prior_sample(known[a:b].shape, generator=g, dtype=space.dtype, device=space.device)
        parts.append(inpaint(catalogue.entry(sampler).resolved(), view, start, sigmas, known[a:b], m[a:b], generator=g,
                             **(extra | {"progress": progress and a == 0} if method == "replace" else extra), **opts))
    out = space.to_data_space(torch.cat(parts))
    out = torch.where(mask.to(out.device), x.to(out), out)
    return out.clamp(0.0, 1.0) if run_info["data"].get("kind") == "image" else out


def _smc(view: Any, known: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor, particles: int | None,
         g: RowGenerators, progress: bool) -> torch.Tensor:
    """One draw per row of ``known``: a particle of its group of P, chosen uniformly after SMC's final
    resampling; row i's group draws from stream i of ``g`` alone (its particles' start too)."""
    from scorematch._progress import progress as bar_of
    from scorematch.samplers import inpaint_smc

    p = positive_int("particles", DEFAULT_PARTICLES if particles is None else particles, minimum=2)
    n = known.shape[0]
    check_sampling(n * p, tuple(known.shape[1:]), known.device)
    rows, m = known.repeat_interleave(p, 0), mask.repeat_interleave(p, 0)
    start = view.prior_sample((n, p, *known.shape[1:]), generator=g, dtype=known.dtype,
                              device=known.device).reshape(rows.shape)
    bar = bar_of(len(sigmas) - 1, "inpaint smc", progress)
    out = inpaint_smc(view, start, sigmas, rows, m, particles=p, generator=g,
                      callback=(lambda info: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()
    # after the final resampling the P particles are equally weighted: a uniformly chosen one is a
    # draw (the first slot is not: systematic resampling orders them by their weights' positions)
    pick = randints((n,), p, g, known.device)
    return out.reshape(n, p, *known.shape[1:])[torch.arange(n, device=known.device), pick]
