"""The training loop: data -> model -> objective -> Adam, with EMA, checkpoints and resume.

``train(cfg)`` writes a run folder:

    config.json        the full TrainConfig (validated JSON; unknown keys rejected)
    run.json           model class + constructor config, data shape/range, noise schedule
    weights.safetensors  final weights ("model.*") and EMA weights ("ema.*")
    checkpoints/       step_XXXXXXXX.{safetensors,json}: weights, EMA, optimizer, RNG states
                       (a first one at step 0, before any step)
    manifest.json      SHA-256 of config.json, run.json and weights.safetensors
    loss.csv           step, loss, grad norm, steps/s, and the loss per noise level for NCSN
    samples/           periodic sample grids (image data)
    posthoc-ema/       power-EMA snapshots with posthoc_ema_every (``scorematch.run.training.posthoc``)

``train(resume=RUN, steps=N)`` continues RUN up to N steps in total and reproduces the weights
of an uninterrupted run (the data and noise generators are part of the checkpoint); ``lr``,
``grad_clip`` and the other ``RESUME_SETTINGS`` may change then, recorded in the config's history.

``train(cfg, model=module, data=x)`` trains a user's own module (the protocol of
``scorematch.run.build.user_model``) on data in memory (a tensor, NumPy array or torch Dataset, written
to RUN/data.npy). Vector data is standardised (``standardize="auto"``): the model sees
z = (x - mu) / sd, and the returned model (``scorematch.models.Standardized``) answers in data
units.

A run is four named steps: ``setup`` (data, schedule, model, optimizer, EMA, generators, the
resume point), ``train_step`` (one batch: loss, backward, update), ``log_step`` (loss.csv,
TensorBoard, progress) and ``save_checkpoint``; ``train`` strings them together.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from scorematch.data import Dataset, dequantize, quantization_levels
from scorematch.errors import CheckpointError, ConfigError, DataError, ModelError, ScoreMatchError, TrainingError
from scorematch.run.build import start as inputs
from scorematch.run.build import user_model as custom
from scorematch.run.build.loading import run_info, split_prefix, wrap_standardized
from scorematch.run.build.parts import (
    LossFn,
    build_for,
    check_labelled,
    class_names,
    class_prior,
    default_model_name,
    ema_half_life,
    ema_with_warmup,
    image_recipe,
    make_loss,
    make_schedule,
    model_input,
    warmup_factor,
)
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder import outdir as folder
from scorematch.run.folder import validate as V
from scorematch.run.folder.config import TrainConfig, from_dict, validate
from scorematch.run.folder.runfiles import LOSS_CSV, read_run_info
from scorematch.run.system import distributed as D
from scorematch.run.system import environment as env
from scorematch.run.system import limits
from scorematch.run.training import posthoc
from scorematch.run.training.logs import CsvLog, progress_bar, sample_grid, tensorboard


@dataclass
class TrainResult:
    """What ``train`` returns: the run folder, the trained module (EMA weights) and the log."""

    run_dir: Path
    model: nn.Module
    final_loss: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    signal: int | None = None  #: the signal (SIGINT/TERM/HUP/QUIT) that stopped the run early, if one did


@dataclass
class Run:
    """Everything one training run holds between steps."""

    cfg: TrainConfig
    run_dir: Path
    ctx: D.DistContext
    device: torch.device
    ds: Dataset
    schedule: dict[str, Any]
    model: nn.Module
    trained: nn.Module
    ema: AveragedModel
    opt: torch.optim.Optimizer
    loss_fn: LossFn
    g_data: torch.Generator
    g_noise: torch.Generator
    x_all: torch.Tensor
    rows: slice
    y_all: torch.Tensor | None = None  # the labels of a class-conditional run
    step: int = 0
    last_checkpoint: int = -1
    skipped: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    timer: env.PhaseTimer = field(default_factory=env.PhaseTimer)
    memory: Dataset | None = None  # data given in memory, written to RUN/data.npy by ``start``
    standardization: Any = None  # the data's standardisation (scorematch.data.Standardization) or None
    level_sum: torch.Tensor | None = None
    level_cnt: torch.Tensor | None = None
    phema: Any = None  # the post-hoc EMA tracker (scorematch.ema.PowerEMA), rank 0, posthoc_ema_every > 0

    @property
    def n_levels(self) -> int:
        return len(self.schedule.get("sigmas", []))


def _given(cfg: TrainConfig, overrides: dict[str, Any]) -> set[str]:
    """The settings a user chose: those passed as keywords, and those off their default."""
    defaults = TrainConfig()
    return set(overrides) | {k for k in cfg.to_dict() if getattr(cfg, k) != getattr(defaults, k)}


def train(cfg: TrainConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
          force: bool = False, model: nn.Module | None = None, **overrides: Any) -> TrainResult:
    """Train a score model and write a run folder (see the module docstring).

    ``train(data="gmm2d", objective="ssm_vr", steps=2000, out="runs/x")`` or
    ``train(TrainConfig(...), out=...)``; ``train(resume="runs/x", steps=4000)`` continues a run.
    Every keyword is a TrainConfig field (``scorematch train --help`` lists them); ``data`` may
    also be a tensor, NumPy array or torch Dataset, and ``model`` a user's module (see the
    module docstring; a string is the config field, a built-in model name). ``out`` must be
    a new or empty folder, a scorematch run that stopped before its first checkpoint (started
    again), or, with ``force``, any folder (files named like a run's are renamed NAME.orig).
    A setting the objective or model would ignore is refused. Under torchrun it trains with DDP
    (``scorematch.run.system.distributed``); rank 0 writes the run folder.
    """
    timer = env.PhaseTimer()
    if isinstance(model, str):  # the config field: train(model="energy")
        overrides["model"], model = model, None
    data = overrides.pop("data") if not isinstance(overrides.get("data", ""), str) else None
    if data is not None and resume is None:
        overrides["data"] = "memory"
    was: dict[str, Any] = {}
    given: set[str] = set()
    for what, value in (("out", out), ("resume", resume)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | os.PathLike)):
            raise ConfigError(f"{what} must be the path of a folder (a str or pathlib.Path), got "
                              f"{type(value).__name__}: e.g. {what}='runs/NAME'")
    if cfg is not None and not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg must be a TrainConfig (or pass its fields as keywords), got {type(cfg).__name__}")
    if resume is not None:
        if cfg is not None or force:
            raise ConfigError("train(resume=RUN) continues RUN with its own config.json; pass no config and no force")
        if out is not None and Path(out) != Path(resume):
            raise ConfigError(f"out={out} cannot be used with resume={resume}: a resumed run continues in its "
                              "own folder; drop one of them")
        run_dir = Path(resume)
        cfg, was, restart = folder.resume_config(run_dir, overrides)
    else:
        cfg = validate(cfg.replace(**overrides)) if cfg is not None else from_dict(overrides)
        if out is None:
            raise ConfigError("train needs an output folder: out='runs/NAME' (CLI: --out)")
        run_dir, restart = Path(out), True
        given = _given(cfg, overrides)
        V.check_settings_apply(cfg.objective, cfg.sde, given)
    ctx, device = D.init_from_env(env.pick_device(cfg.device), cfg.collective_timeout)
    done, run = False, None
    try:
        with timer.phase("setup"):
            run = setup(cfg, run_dir, not restart, ctx, device, given=given, was=was, model=model, data=data)
        run.timer = timer
        with folder.session(run_dir, ctx, new=resume is None, force=force):
            start(run, resuming=not restart)
            result = _loop(run)
        done = True
        return result
    finally:
        # the DDP wrapper's reducer holds the process group: freed after the group, gloo's
        # destructor can wait forever for its threads
        run = None
        gc.collect()
        D.shutdown(ctx, clean=done)


# ----------------------------------------------------------------------------- set-up


def setup(cfg: TrainConfig, run_dir: Path, resuming: bool, ctx: D.DistContext, device: torch.device, *,
          given: set[str] | frozenset[str] = frozenset(), was: dict[str, Any] | None = None,
          model: nn.Module | None = None, data: Any = None) -> Run:
    """Data, noise schedule, model, loss, optimizer, EMA and generators of a run; restored from
    the newest usable checkpoint when ``resuming`` (``was``: the previous values of the settings
    this resume changes, recorded in the config's history). ``model`` and ``data``: a user's
    module and data in memory (``scorematch.run.build.start``). Writes nothing. Sizes that cannot
    fit in memory and settings the model would ignore (``given``) are refused before allocating."""
    torch.manual_seed(cfg.seed)
    _check_toy_size(cfg)
    limits.check_train_steps(cfg.steps, cfg.log_every)
    old_info = read_run_info(run_dir, cfg) if resuming else None
    rd = inputs.prepare_data(cfg, run_dir, old_info, data)
    ds = rd.train
    if not resuming and model is None:
        cfg = image_recipe(cfg, ds, given)
    check_labelled(cfg, ds, model)
    if len(ds.x) > 1 and float(ds.x.flatten(1).std(0).max()) == 0.0:
        raise DataError(f"all {len(ds.x)} training points of {ds.name!r} are the same point: there is no "
                        "distribution to learn the score of; check the data")
    schedule = D.on_main(lambda: make_schedule(cfg, ds), ctx)
    V.check_schedule(cfg.objective, schedule, "the noise schedule from the data", cfg.sde)
    cfg = cfg.replace(schedule=schedule)
    if model is None:
        V.check_model_settings(default_model_name(cfg, ds), ds.kind, given)
        n_params = limits.parameter_count(lambda: build_for(cfg, ds))
    else:
        n_params = sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else 0
    limits.check_training(cfg.batch_size, tuple(ds.sample_shape), n_params, ctx.world_size, device)
    plain, trained = inputs.prepare_model(cfg, ds, old_info, model)
    plain, trained = plain.to(device), trained.to(device)
    run = Run(
        cfg=cfg, run_dir=run_dir, ctx=ctx, device=device, ds=ds, schedule=schedule, model=plain,
        trained=trained, ema=AveragedModel(plain, multi_avg_fn=_ema_update(cfg), use_buffers=True),
        opt=torch.optim.Adam(plain.parameters(), lr=cfg.lr),
        loss_fn=make_loss(cfg, ds, schedule, device, rd.standardization),
        g_data=torch.Generator().manual_seed(cfg.seed),
        g_noise=torch.Generator(device=device).manual_seed(cfg.seed + 1 + ctx.rank),
        x_all=ds.x.to(device), rows=D.shard(cfg.batch_size, ctx), memory=rd.memory,
        y_all=ds.labels.to(device) if cfg.class_conditional else None,
    )
    if resuming:
        _restore(run)
        if was:
            run.cfg = cfg = cfg.replace(history=[*cfg.history, {
                "step": run.step, "set": {k: getattr(cfg, k) for k in was}, "was": was}])
    run.info = old_info or _run_json(run, rd)
    run.standardization = rd.standardization
    levels = max(1, run.n_levels)
    run.level_sum = torch.zeros(levels, device=device)
    run.level_cnt = torch.zeros(levels, device=device)
    run.trained = D.wrap(trained, ctx, device)
    return run


def _ema_update(cfg: TrainConfig) -> Any:
    """The EMA of the run: a half-life in images (``ema_half_life``), else the decay ``ema_decay``."""
    if cfg.ema_half_life is not None:
        return ema_half_life(cfg.ema_half_life, cfg.batch_size)
    return ema_with_warmup(cfg.ema_decay)


def start(run: Run, resuming: bool) -> None:
    """Write config.json (and for a new run run.json and the step-0 checkpoint, so a run is
    resumable from its first step on), recorded in manifest.json (rank 0)."""
    if run.ctx.is_main:
        env.say(env.start_line("train", run.device, torch.get_num_threads(), run.model, tuple(run.ds.x.shape),
                               "standardised" if run.standardization is not None else ""))
        inputs.say_standardized(run.standardization)
    if not resuming and run.memory is not None and run.ctx.is_main:
        run.info["data"]["fingerprint"] = custom.save_memory_data(run.run_dir, run.memory)
        run.cfg = run.cfg.replace(data=str((run.run_dir / custom.MEMORY_DATA).resolve()))
    cfg = run.cfg.to_dict()
    files = {"config.json": cfg} if resuming else {"config.json": cfg, "run.json": run.info}
    D.on_main(lambda: manifest.write_json_files(run.run_dir, files), run.ctx)
    D.on_main(lambda: posthoc.attach(run), run.ctx)
    if not resuming:
        save_checkpoint(run)


def _check_toy_size(cfg: TrainConfig) -> None:
    """Refuse a toy data set too large for memory before drawing it (one point drawn from a private
    generator for its dimension: the global generator, which initialises the model, is untouched)."""
    from scorematch import distributions

    if cfg.data in distributions.toy_names():
        one = distributions.toy(cfg.data).sample(1, generator=torch.Generator().manual_seed(0))
        limits.check_data(cfg.n_data, one.shape[-1])


def _run_json(run: Run, rd: inputs.RunData) -> dict[str, Any]:
    ds = run.ds
    classes = {"classes": class_names(ds), "class_prior": class_prior(ds)} if run.cfg.class_conditional else {}
    return {
        "model": custom.spec_of(run.model),
        "data": {**inputs.data_section(rd, ds.kind, len(ds.x), ds.x), **classes},
        "schedule": run.schedule,
        "environment": env.describe(run.device, torch.get_num_threads()),
    }


def _restore(run: Run) -> None:
    fits = ckpt.fits_training(run.model, run.ema, run.opt, run.g_data, run.g_noise)
    found = ckpt.latest_checkpoint(run.run_dir / "checkpoints", fits, max_step=run.cfg.steps)
    if found is None:
        raise CheckpointError(f"{run.run_dir} has no usable checkpoint to resume from (the messages above say why)")
    tensors, state = found
    run.model.load_state_dict(split_prefix(tensors, "model"))
    run.ema.load_state_dict(split_prefix(tensors, "ema"))
    run.opt.load_state_dict(ckpt.unflatten_optimizer(tensors, state["optimizer"]))
    for g in run.opt.param_groups:
        g["lr"] = run.cfg.lr  # the config is the record of the learning rate (changes: its history)
    run.g_data.set_state(tensors["rng.data"])
    key = f"rng.noise.{run.ctx.rank}"
    if key in tensors:
        run.g_noise.set_state(tensors[key].to(run.g_noise.get_state().device))
    run.step = run.last_checkpoint = int(state["step"])


# ----------------------------------------------------------------------------- one step


@dataclass
class StepOutcome:
    """One step's loss (detached), per-row terms and noise-level indices (NCSN), gradient norm."""

    loss: torch.Tensor
    rows: torch.Tensor | None
    levels: torch.Tensor | None
    grad_norm: torch.Tensor | None
    stopping: bool


def _batch(run: Run) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's rows of the step's batch, and their labels (class-conditional runs)."""
    idx = torch.randint(0, len(run.x_all), (run.cfg.batch_size,), generator=run.g_data)[run.rows].to(run.device)
    xb = model_input(run.model, run.x_all[idx])
    if run.cfg.dequantize and run.ds.kind == "image":
        xb = dequantize(xb, generator=run.g_noise, levels=quantization_levels(run.ds))
    return xb, (run.y_all[idx] if run.y_all is not None else None)


def train_step(run: Run, stop_requested: bool) -> StepOutcome:
    """Draw a batch, compute the loss, and (when it is finite on every rank) take one Adam step
    and update the EMA. A non-finite loss raises TrainingError, or skips the batch with
    ``skip_nonfinite``; either way every rank takes the same branch."""
    xb, yb = _batch(run)
    if run.cfg.lr_warmup:
        for group in run.opt.param_groups:
            group["lr"] = run.cfg.lr * warmup_factor(run.step, run.cfg.lr_warmup)
    try:
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.cfg.precision == "bf16"):
            loss, rows, lvl = run.loss_fn(run.trained, xb, run.g_noise, yb)
    except ScoreMatchError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's module: say where, with its message
        name = run.info.get("model", {}).get("name", "")
        if ":" not in name:
            raise  # a built-in model: a bug of scorematch, with its traceback
        raise ModelError(f"{name} failed at step {run.step + 1} on a batch of shape {tuple(xb.shape)} "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); it passed the checks on "
                         "batches of 2 and 5 rows: make it work for any batch size") from None
    nonfinite, stopping = not bool(torch.isfinite(loss.detach())), stop_requested
    if run.ctx.enabled:
        flags = D.all_sum(torch.tensor([float(nonfinite), float(stopping)], device=run.device), run.ctx)
        nonfinite, stopping = bool(flags[0] > 0), bool(flags[1] > 0)
    if nonfinite:
        where = _where_nonfinite(run, rows, lvl)
        if not run.cfg.skip_nonfinite:
            raise TrainingError(
                f"loss became {float(loss.detach())} at step {run.step + 1}{where}. Likely causes: a learning rate "
                f"too high (now {run.cfg.lr}), a sigma_min too small for the data's precision, or NaN/inf in the "
                f"data. {folder.resume_advice(run.run_dir, run.cfg.lr)}, or add --skip-nonfinite to skip such batches"
            )
        run.skipped += 1
        if run.skipped > run.cfg.max_skipped:
            raise TrainingError(
                f"{run.skipped} batches had a non-finite loss (the last at step {run.step + 1}{where}), more than "
                f"--max-skipped {run.cfg.max_skipped}: the training diverges. "
                f"{folder.resume_advice(run.run_dir, run.cfg.lr)}"
            )
        if run.ctx.is_main:
            print(f"scorematch: skipping step {run.step + 1}: loss is {float(loss.detach())}{where} "
                  f"({run.skipped} of at most {run.cfg.max_skipped} skipped)", file=sys.stderr)
        run.step += 1
        return StepOutcome(loss.detach(), None, None, None, stopping)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip or float("inf"))
    run.opt.step()
    run.ema.update_parameters(run.model)
    run.step += 1
    posthoc.update(run)
    if rows is not None and lvl is not None:
        run.level_sum.index_add_(0, lvl, rows)
        run.level_cnt.index_add_(0, lvl, torch.ones_like(rows))
    return StepOutcome(loss.detach(), rows, lvl, gnorm, stopping)


def _where_nonfinite(run: Run, rows: torch.Tensor | None, lvl: torch.Tensor | None) -> str:
    if rows is None or lvl is None:
        return ""
    bad = lvl[~torch.isfinite(rows)]
    if not len(bad):
        return ""
    return f" at noise level {int(bad[0]) + 1} (sigma = {run.schedule['sigmas'][int(bad[0])]:.4g})"


# ----------------------------------------------------------------------------- logging


@dataclass
class Reporters:
    """Rank 0's outputs during training: loss.csv, TensorBoard, the progress bar."""

    csv: CsvLog | None = None
    tb: Any = None
    bar: Any = None
    history: list[dict[str, float]] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    start: int = 0

    def close(self) -> None:
        for closer in (self.bar, self.csv, self.tb):
            if closer is not None:
                closer.close()


def open_reporters(run: Run) -> Reporters:
    if not run.ctx.is_main:
        return Reporters(start=run.step)
    csv_log = CsvLog(run.run_dir / LOSS_CSV, run.n_levels, append=run.step > 0, start=run.step)
    return Reporters(csv_log, tensorboard(run.run_dir), progress_bar(run.cfg, run.step), start=run.step)


def log_step(run: Run, out: StepOutcome, rep: Reporters) -> float | None:
    """Every ``log_every`` steps (and at the last): the loss averaged over ranks, the loss per
    noise level since the last log, written to loss.csv and TensorBoard; returns the loss then."""
    if rep.bar is not None:
        rep.bar.update(1)
    if not (run.step % run.cfg.log_every == 0 or run.step == run.cfg.steps) or out.grad_norm is None:
        return None
    ctx = run.ctx
    loss_value = float(D.all_sum(out.loss.clone(), ctx)) / ctx.world_size
    D.all_sum(run.level_sum, ctx)
    D.all_sum(run.level_cnt, ctx)
    rate = (run.step - rep.start) / max(1e-9, time.perf_counter() - rep.t0)
    mean = torch.where(run.level_cnt > 0, run.level_sum / run.level_cnt.clamp_min(1), float("nan"))
    levels = mean.tolist() if run.n_levels else []
    run.level_sum.zero_()
    run.level_cnt.zero_()
    row = {"step": run.step, "loss": loss_value, "grad_norm": float(out.grad_norm), "steps_per_s": rate}
    rep.history.append(row)
    if rep.csv is not None:
        rep.csv.write(row, levels)
    if rep.tb is not None:
        rep.tb.add_scalar("loss", loss_value, run.step)
        for i, v in enumerate(levels):
            rep.tb.add_scalar(f"loss_level/{i + 1}", v, run.step)
    if rep.bar is not None:
        rep.bar.set_postfix(loss=f"{loss_value:.4g}")
    return loss_value


# ----------------------------------------------------------------------------- checkpointing


def save_checkpoint(run: Run) -> None:
    """Checkpoint of the current step (rank 0 writes; every rank's noise generator state included)."""
    states = D.gather_objects(run.g_noise.get_state().cpu(), run.ctx)

    def write() -> None:
        tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in run.ema.state_dict().items()})
        opt_t, opt_meta = ckpt.flatten_optimizer(run.opt.state_dict())
        tensors.update(opt_t)
        tensors["rng.data"] = run.g_data.get_state()
        tensors.update({f"rng.noise.{r}": st.cpu() for r, st in enumerate(states)})
        meta = {"optimizer": opt_meta, "world_size": len(states)}
        ckpt.save_checkpoint(run.run_dir / "checkpoints", run.step, tensors, meta, keep=run.cfg.keep_checkpoints,
                             root=run.run_dir)

    D.on_main(write, run.ctx)
    run.last_checkpoint = run.step


def save_weights(run: Run) -> None:
    """weights.safetensors: the raw ("model.*") and EMA ("ema.*") weights (rank 0)."""
    def write() -> None:
        weights = {f"model.{k}": v for k, v in run.model.state_dict().items()}
        weights.update({f"ema.{k}": v for k, v in run.ema.module.state_dict().items()})
        ckpt.save_weights(run.run_dir, weights, {"step": str(run.step)})

    D.on_main(write, run.ctx)


# ----------------------------------------------------------------------------- the loop


def _loop(run: Run) -> TrainResult:
    cfg, ctx = run.cfg, run.ctx
    if ctx.enabled and ctx.is_main:
        print(f"scorematch: DDP on {ctx.world_size} processes ({'nccl' if run.device.type == 'cuda' else 'gloo'}): "
              f"global batch {cfg.batch_size} = {ctx.world_size} x {cfg.batch_size // ctx.world_size} per process; "
              f"learning rate {cfg.lr} unscaled (the global batch equals a single-process batch)", file=sys.stderr)
    rep = open_reporters(run)
    stop = env.StopRequest()
    run.model.train()
    loss_value = float("nan")
    try:
        with stop.installed():
            while run.step < cfg.steps:
                out = train_step(run, stop.signal is not None)
                logged = log_step(run, out, rep)
                loss_value = loss_value if logged is None else logged
                if ctx.is_main and cfg.sample_every and run.step % cfg.sample_every == 0 and run.ds.kind == "image":
                    sample_grid(run.ema.module, run.schedule, run.ds, run.run_dir, run.cfg.seed + run.step, run.step)
                due = run.step % cfg.checkpoint_every == 0
                posthoc.snapshot_if_due(run, due or run.step == cfg.steps or out.stopping)
                if due:
                    with run.timer.phase("checkpoints"):
                        save_checkpoint(run)
                if out.stopping:
                    break
    except RuntimeError as err:  # DDP's gradient all-reduce inside backward
        if ctx.enabled and D.is_collective_failure(err):
            raise D.collective_error(err, ctx) from None
        raise
    finally:
        rep.close()
    run.timer.add("train", time.perf_counter() - rep.t0 - run.timer.get("checkpoints"))
    with run.timer.phase("checkpoints"):
        if run.step != run.last_checkpoint:
            save_checkpoint(run)
        save_weights(run)
    _record_environment(run)
    if stop.signal is not None and ctx.is_main:
        print(f"scorematch: stopped by signal {stop.signal} at step {run.step}; checkpoint written, "
              f"continue with `scorematch train --resume {run.run_dir} --steps {cfg.steps}`", file=sys.stderr)
    final = wrap_standardized(run.ema.module.eval(), run.info)
    final.run_info = run_info(cfg, run.info)
    return TrainResult(run.run_dir, final, loss_value, run.step, rep.history, stop.signal)


def _record_environment(run: Run) -> None:
    """run.json's ``environment`` updated at the end of a start (rank 0): ``environment.record``."""
    if run.ctx.is_main:
        run.info["environment"] = env.record(run.info.get("environment"), run.timer, run.device, run.ctx.world_size)
        manifest.write_json_files(run.run_dir, {"run.json": run.info})
