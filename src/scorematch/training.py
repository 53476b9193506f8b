"""The training loop: data -> model -> objective -> Adam, with EMA, checkpoints and resume.

``train(cfg)`` writes a run folder:

    config.json        the full TrainConfig (validated JSON; unknown keys rejected)
    run.json           model class + constructor config, data shape/range, noise schedule
    weights.safetensors  final weights ("model.*") and EMA weights ("ema.*")
    checkpoints/       step_XXXXXXXX.{safetensors,json}: weights, EMA, optimizer, RNG states
    loss.csv           step, loss, grad norm, steps/s, and the loss per noise level for NCSN
    samples/           periodic sample grids (image data)

``train(resume=RUN, steps=N)`` continues RUN up to N steps in total and reproduces the weights
of an uninterrupted run (the data and noise generators are part of the checkpoint).
"""

from __future__ import annotations

import contextlib
import csv
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from scorematch import checkpoint as ckpt
from scorematch.config import TrainConfig, from_dict, load_config, validate
from scorematch.data import Dataset, dequantize, quantization_levels, resolve_data, train_test_split
from scorematch.errors import CheckpointError, ConfigError, TrainingError
from scorematch.models import build_model, model_spec
from scorematch.models.mlp import EnergyMLP, NoiseConditionalMLP, ScoreMLP

LOSS_CSV = "loss.csv"


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present and asked for (``auto``), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


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
    needs = {"ncsn": "sigma", "sde": "time"}.get(cfg.objective, "none")
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


def make_loss(cfg: TrainConfig, ds: Dataset, schedule: dict[str, Any], device: torch.device) -> LossFn:
    """(model, batch, generator) -> (loss, per-row terms or None, noise-level index per row or None)."""
    from scorematch import objectives as O

    obj = cfg.objective
    if obj == "esm":
        if ds.dist is None:
            raise ConfigError(
                f"objective 'esm' needs the analytic score of the data, and {ds.name!r} has none; "
                "use esm_kde (KDE target), ism, ssm, ssm_vr or dsm"
            )
        dist = ds.dist
        return lambda m, x, g: (O.esm(m, x, dist.score), None, None)
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


@dataclass
class TrainResult:
    """What ``train`` returns: the run folder, the trained module (EMA weights) and the log."""

    run_dir: Path
    model: nn.Module
    final_loss: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can checkpoint and exit cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        old = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, self._handle)
        except ValueError:
            old = {}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """EMA update theta_ema <- d theta_ema + (1 - d) theta with d = min(decay, (1 + k)/(10 + k)),

    k the number of updates so far: the warm-up keeps a short run's EMA from staying at its
    random initialisation (a plain 0.999 EMA still holds 74% of it after 300 steps).
    """

    def update(avg: list[torch.Tensor], cur: list[torch.Tensor], k: Any) -> None:
        k = float(k)
        d = min(decay, (1 + k) / (10 + k))
        torch._foreach_lerp_(avg, cur, 1 - d)

    return update


def _state_tensors(model: nn.Module, ema: AveragedModel, opt: torch.optim.Optimizer,
                   g_data: torch.Generator, noise_states: list[torch.Tensor]) -> tuple[dict, dict]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_t, opt_meta = ckpt.flatten_optimizer(opt.state_dict())
    tensors.update(opt_t)
    tensors["rng.data"] = g_data.get_state()
    tensors.update({f"rng.noise.{r}": st.cpu() for r, st in enumerate(noise_states)})
    return tensors, {"optimizer": opt_meta, "world_size": len(noise_states)}


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _resolve_config(cfg: TrainConfig | None, out: str | Path | None, resume: str | Path | None,
                    overrides: dict[str, Any]) -> tuple[TrainConfig, Path]:
    if resume is not None:
        run_dir = Path(resume)
        base = load_config(run_dir)
        allowed = {"steps", "progress", "checkpoint_every", "sample_every", "log_every", "device", "skip_nonfinite"}
        bad = sorted(set(overrides) - allowed)
        if bad:
            raise ConfigError(f"cannot change {', '.join(bad)} when resuming; only {', '.join(sorted(allowed))}")
        return base.replace(**overrides), run_dir
    cfg = validate(cfg.replace(**overrides)) if cfg is not None else from_dict(overrides)
    if out is None:
        raise ConfigError("train needs an output folder: out='runs/NAME' (CLI: --out)")
    run_dir = Path(out)
    if (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --out")
    return cfg, run_dir


def train(cfg: TrainConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
          **overrides: Any) -> TrainResult:
    """Train a score model and write a run folder (see the module docstring).

    ``train(data="gmm2d", objective="ssm_vr", steps=2000, out="runs/x")`` or
    ``train(TrainConfig(...), out=...)``; ``train(resume="runs/x", steps=4000)`` continues a run.
    Every keyword is a TrainConfig field (``scorematch train --help`` lists them). Under
    torchrun it trains with DDP (``scorematch.distributed``); rank 0 writes the run folder.
    """
    from scorematch import distributed as D

    cfg, run_dir = _resolve_config(cfg, out, resume, overrides)
    ctx, device = D.init_from_env(pick_device(cfg.device))
    try:
        return _train(cfg, run_dir, resume is not None, ctx, device)
    finally:
        D.shutdown(ctx)


def _train(cfg: TrainConfig, run_dir: Path, resuming: bool, ctx: Any, device: torch.device) -> TrainResult:
    from scorematch import distributed as D

    torch.manual_seed(cfg.seed)
    full = resolve_data(cfg.data, n=cfg.n_data, seed=cfg.seed)
    ds, _ = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    schedule = make_schedule(cfg, ds) if ctx.is_main or cfg.schedule else None
    schedule = D.gather_objects(schedule, ctx)[0]
    cfg = cfg.replace(schedule=schedule)
    model = build_for(cfg, ds).to(device)
    loss_fn = make_loss(cfg, ds, schedule, device)
    rows_per_rank = D.shard(cfg.batch_size, ctx)
    if ctx.is_main:
        ckpt.check_writable(run_dir)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
    g_data = torch.Generator().manual_seed(cfg.seed)
    g_noise = torch.Generator(device=device).manual_seed(cfg.seed + 1 + ctx.rank)
    start = 0
    if resuming:
        found = ckpt.latest_checkpoint(run_dir / "checkpoints")
        if found is None:
            raise CheckpointError(f"{run_dir} has no usable checkpoint to resume from")
        tensors, meta = found
        model.load_state_dict(_split(tensors, "model"))
        ema.load_state_dict(_split(tensors, "ema"))
        opt.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        g_data.set_state(tensors["rng.data"])
        key = f"rng.noise.{ctx.rank}"
        if key in tensors:
            g_noise.set_state(tensors[key].to(g_noise.get_state().device))
        start = int(meta["step"])
        if ctx.is_main:
            ckpt.write_json(run_dir / "config.json", cfg.to_dict())
    elif ctx.is_main:
        info = {
            "model": model_spec(model),
            "data": {"name": ds.name, "kind": ds.kind, "sample_shape": list(ds.sample_shape),
                     "lo": float(ds.x.min()), "hi": float(ds.x.max()), "n_train": len(ds.x)},
            "schedule": schedule,
        }
        ckpt.write_json(run_dir / "config.json", cfg.to_dict())
        ckpt.write_json(run_dir / "run.json", info)
    if ctx.enabled and ctx.is_main:
        print(f"scorematch: DDP on {ctx.world_size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}): "
              f"global batch {cfg.batch_size} = {ctx.world_size} x {cfg.batch_size // ctx.world_size} per process; "
              f"learning rate {cfg.lr} unscaled (the global batch equals a single-process batch)", file=sys.stderr)
    trained = D.wrap(model, ctx, device)
    x_all = ds.x.to(device)
    n_levels = len(schedule.get("sigmas", []))
    log = _CsvLog(run_dir / LOSS_CSV, n_levels, append=start > 0, start=start) if ctx.is_main else None
    tb = _tensorboard(run_dir) if ctx.is_main else None
    bar = _progress(cfg, start) if ctx.is_main else None
    stop = _StopRequest()
    model.train()
    history: list[dict[str, float]] = []
    loss_value = float("nan")
    t0, last_ckpt = time.perf_counter(), start
    level_sum = torch.zeros(max(1, n_levels), device=device)
    level_cnt = torch.zeros(max(1, n_levels), device=device)
    step = start

    def save(step: int) -> None:
        states = D.gather_objects(g_noise.get_state().cpu(), ctx)
        if ctx.is_main:
            tensors, meta = _state_tensors(model, ema, opt, g_data, states)
            ckpt.save_checkpoint(run_dir / "checkpoints", step, tensors, meta, keep=cfg.keep_checkpoints)
        D.barrier(ctx)

    with stop.installed():
        while step < cfg.steps:
            idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g_data)[rows_per_rank].to(device)
            xb = model_input(model, x_all[idx])
            if cfg.dequantize and ds.kind == "image":
                xb = dequantize(xb, generator=g_noise, levels=quantization_levels(ds))
            loss, rows, lvl = loss_fn(trained, xb, g_noise)
            nonfinite, stopping = not bool(torch.isfinite(loss.detach())), stop.signal is not None
            if ctx.enabled:  # every rank must take the same branch
                flags = D.all_sum(torch.tensor([float(nonfinite), float(stopping)], device=device), ctx)
                nonfinite, stopping = bool(flags[0] > 0), bool(flags[1] > 0)
            if nonfinite:
                where = ""
                if rows is not None and lvl is not None:
                    bad = lvl[~torch.isfinite(rows)]
                    if len(bad):
                        where = f" at noise level {int(bad[0]) + 1} (sigma = {schedule['sigmas'][int(bad[0])]:.4g})"
                if cfg.skip_nonfinite:
                    print(f"scorematch: skipping step {step + 1}: loss is {float(loss.detach())}{where}",
                          file=sys.stderr)
                    step += 1
                    continue
                if bar is not None:
                    bar.close()
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {step + 1}{where}. Likely causes: a learning rate "
                    f"too high (now {cfg.lr}), a sigma_min too small for the data's precision, or NaN/inf in the "
                    f"data. The last good checkpoint (step {last_ckpt}) is kept in {run_dir / 'checkpoints'}; "
                    "lower --lr, or pass --skip-nonfinite to skip such batches"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            opt.step()
            ema.update_parameters(model)
            step += 1
            if rows is not None and lvl is not None:
                level_sum.index_add_(0, lvl, rows)
                level_cnt.index_add_(0, lvl, torch.ones_like(rows))
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_value = float(D.all_sum(loss.detach().clone(), ctx)) / ctx.world_size
                D.all_sum(level_sum, ctx)
                D.all_sum(level_cnt, ctx)
                rate = (step - start) / max(1e-9, time.perf_counter() - t0)
                mean = torch.where(level_cnt > 0, level_sum / level_cnt.clamp_min(1), float("nan"))
                levels = mean.tolist() if n_levels else []
                level_sum.zero_()
                level_cnt.zero_()
                row = {"step": step, "loss": loss_value, "grad_norm": float(gnorm), "steps_per_s": rate}
                history.append(row)
                if log is not None:
                    log.write(row, levels)
                if tb is not None:
                    tb.add_scalar("loss", loss_value, step)
                    for i, v in enumerate(levels):
                        tb.add_scalar(f"loss_level/{i + 1}", v, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.4g}")
            if bar is not None:
                bar.update(1)
            if ctx.is_main and cfg.sample_every and step % cfg.sample_every == 0 and ds.kind == "image":
                _sample_grid(ema.module, run_dir, step, schedule, cfg, ds)
            if step % cfg.checkpoint_every == 0:
                save(step)
                last_ckpt = step
            if stopping:
                break
    for closer in (bar, log, tb):
        if closer is not None:
            closer.close()
    if step != last_ckpt:
        save(step)
    if ctx.is_main:
        weights = {f"model.{k}": v for k, v in model.state_dict().items()}
        weights.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        ckpt.save_weights(run_dir / "weights.safetensors", weights, {"step": str(step)})
    D.barrier(ctx)
    if stop.signal is not None and ctx.is_main:
        print(f"scorematch: stopped by signal {stop.signal} at step {step}; checkpoint written, "
              f"continue with `scorematch train --resume {run_dir} --steps {cfg.steps}`", file=sys.stderr)
    final = ema.module.eval()
    final.run_info = {"config": cfg.to_dict(), "schedule": schedule}
    return TrainResult(run_dir, final, loss_value, step, history)


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.objective}", unit="step",
                dynamic_ncols=True, file=sys.stderr)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


class _CsvLog:
    """loss.csv: step, loss, grad_norm, steps_per_s, then loss_level_1..L for NCSN runs."""

    def __init__(self, path: Path, n_levels: int, append: bool, start: int = 0) -> None:
        self.fields = ["step", "loss", "grad_norm", "steps_per_s"] + [f"loss_level_{i + 1}" for i in range(n_levels)]
        new = not (append and path.exists())
        if not new:
            # resuming from an older checkpoint (the newest was corrupted, or rows were logged after
            # it): drop the rows past the resume step, or they would appear twice
            lines = path.read_text().splitlines(keepends=True)
            keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(ln.split(",", 1)[0]) <= start]
            if len(keep) != len(lines):
                ckpt.atomic_write(path, "".join(keep).encode())
        self.f = path.open("w" if new else "a", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(self.fields)

    def write(self, row: dict[str, float], levels: list[float]) -> None:
        self.w.writerow([row["step"], f"{row['loss']:.6g}", f"{row['grad_norm']:.6g}",
                         f"{row['steps_per_s']:.4g}", *(f"{v:.6g}" for v in levels)])
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _sample_grid(model: nn.Module, run_dir: Path, step: int, schedule: dict[str, Any], cfg: TrainConfig,
                 ds: Dataset) -> None:
    from scorematch.generate import generate
    from scorematch.viz import save_image_grid

    was_training = model.training
    model.eval()
    x = generate(model, {"schedule": schedule, "data": {"kind": ds.kind, "sample_shape": list(ds.sample_shape),
                                                        "lo": 0.0, "hi": 1.0}},
                 n=36, seed=cfg.seed + step)
    save_image_grid(x.clamp(0, 1).cpu(), run_dir / "samples" / f"step_{step:08d}.png", nrow=6)
    model.train(was_training)


def load(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained module of a run folder; ``m.score(x)`` (or ``m.score(x, sigma)``,
    ``m.score(x, t)``) then gives its score whatever the parameterisation (energy: -grad E).

    Loads the EMA weights by default (what sampling should use); never unpickles anything.
    ``m.run_info`` holds the run's config and noise schedule.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass the --out folder of `scorematch train`")
    cfg = load_config(run)
    info = _read_run_info(run)
    try:
        model = build_model(info["model"]["name"], info["model"]["config"])
    except TypeError as err:
        raise CheckpointError(f"{run / 'run.json'} has a model config this version cannot build: {err}") from None
    weights = run / "weights.safetensors"
    if weights.exists():
        tensors = ckpt.load_weights(weights)
        state = _split(tensors, "ema" if ema else "model")
    else:
        found = ckpt.latest_checkpoint(run / "checkpoints")
        if found is None:
            raise CheckpointError(f"{run} has neither weights.safetensors nor a usable checkpoint")
        tensors = found[0]
        state = _split(tensors, "ema") if ema else _split(tensors, "model")
        if ema:
            state = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {run} do not fit the model in run.json: {err}") from None
    model.run_info = {"config": cfg.to_dict(), **info}
    return model.to(device).eval()


def _read_run_info(run: Path) -> dict[str, Any]:
    import json

    p = run / "run.json"
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} is missing; {run} is not a complete scorematch run folder") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{p} is not valid JSON ({err})") from None
    unknown = sorted(set(info) - {"model", "data", "schedule"})
    if unknown or not {"model", "data", "schedule"} <= set(info):
        raise CheckpointError(f"{p} must have exactly the keys model, data, schedule; got {sorted(info)}")
    return info
