"""What each command does once its arguments are parsed: ``cmd_train``, ``cmd_sample``,
``cmd_eval``, ``cmd_plot``, ``cmd_report``. Each imports the run layer (and torch) only when called."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from scorematch.cli.parser import SAMPLER_FLAGS, TRAIN_HELP
from scorematch.errors import ConfigError
from scorematch.run.folder.config import TrainConfig


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k, None) is not None}


def _threads(args: argparse.Namespace) -> int:
    from scorematch.run.system.environment import set_threads

    return set_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> int:
    from scorematch.run.training.loop import train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name in TRAIN_HELP and getattr(args, f.name) is not None}
    if args.no_progress:
        overrides["progress"] = False
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ConfigError(f"--out cannot be used with --resume: a resumed run continues in its own folder "
                              f"({args.resume}); drop --resume to start a new run in {args.out}")
        if args.config is not None:
            raise ConfigError(f"--config cannot be used with --resume: the run's settings are "
                              f"{args.resume}/config.json (flags such as --steps, --lr, --grad-clip may change them)")
        if args.force:
            raise ConfigError("--force cannot be used with --resume (it is for a new run in a non-empty folder)")
        _threads(args)
        result = train(resume=args.resume, **overrides)
    else:
        from scorematch.run.folder.config import from_dict, load_config

        base = load_config(args.config) if args.config is not None else None
        cfg = from_dict({**(base.to_dict() if base else {}), **overrides})
        out = args.out
        if out is None:
            out = Path("runs") / f"{Path(cfg.data).stem.replace(':', '_')}-{cfg.objective}-s{cfg.seed}"
            if os.environ.get("RANK", "0") == "0":
                print(f"scorematch: no --out given: writing the run to {out}", file=sys.stderr)
        _threads(args)
        result = train(base, out=out, force=args.force, **overrides)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {result.run_dir}  steps: {result.steps}  final loss: {result.final_loss:.5g}")
    return 0 if result.signal is None else 128 + result.signal


def _check_npz(out: Path | None) -> None:
    if out is not None and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name ending in .npz, e.g. {out / 'samples.npz'}")
    if out is not None and out.suffix.lower() != ".npz":
        raise ConfigError(f"--out {out}: samples are written as a NumPy .npz file (array 'samples'); give a name "
                          f"ending in .npz, e.g. {out.with_suffix('.npz')}")


def _nonfinite_message(bad: int, n: int, name: str, model: Any) -> str:
    step = {"langevin": "--step-size", "mala": "--step-size", "annealed": "--eps"}.get(name)
    tips = ["a smaller " + step if step else "more --n-steps", "more steps" if step else "another sampler (ode)"]
    if getattr(model, "run_info", {}).get("data", {}).get("kind") == "vector" \
            and not model.run_info["data"].get("standardize"):
        tips.insert(0, "training on standardised data (train --standardize auto)")
    return (f"{bad} of {n} samples are NaN or inf (sampler {name}); nothing was written. Try "
            f"{', '.join(tips)}; --allow-nonfinite writes them anyway")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from scorematch.files import probe_writable, write_npz
    from scorematch.run.build.loading import load
    from scorematch.run.sampling.generate import check_label, count_nonfinite, generate, resolve_sampler
    from scorematch.run.system import distributed as D
    from scorematch.run.system.environment import pick_device, say, start_line

    _check_npz(args.out)
    _check_conditional_flags(args)
    _check_rows(args)
    out = args.out or args.run / "samples.npz"
    threads = _threads(args)
    ctx, device = D.init_from_env(pick_device(args.device))
    done = False
    try:
        model = load(args.run, device=device)
        info = model.run_info
        options = _sampler_options(args)
        if args.inpaint is not None:
            if ctx.enabled:
                raise ConfigError("--inpaint runs in one process; drop --nproc")
            x, name = _inpaint(args, model, options, out, device, threads)
        else:
            n = 1000 if args.n is None else args.n
            D.on_main(lambda: probe_writable(out), ctx)
            name, options = resolve_sampler(model, args.sampler, options)
            check_label(model, info, args.label, args.guidance)
            if ctx.is_main:
                say(start_line("sample", device, threads, model, tuple(info["data"]["sample_shape"]),
                               f"sampler {name}, n {n}" + (f", label {args.label}" if args.label is not None else "")))
            per_rank = -(-n // ctx.world_size)
            # rank r draws samples K + r per_rank ..: the same rows as one process would draw
            stats: dict[str, Any] = {}
            x = generate(model, info, per_rank, sampler=name, seed=args.seed,
                         start_index=args.start_index + ctx.rank * per_rank, batch_size=args.batch_size, stats=stats,
                         progress=ctx.is_main and not args.no_progress, warn_nonfinite=False, label=args.label,
                         guidance=args.guidance, **options)
            x = D.gather_rows(x.contiguous(), ctx)[:n].cpu()
            evals = int(D.gather_rows(torch.tensor([stats["evaluations"]], device=device), ctx).max())
        done = True
    finally:
        D.shutdown(ctx, clean=done)
    if not ctx.is_main:
        return 0
    bad = count_nonfinite(x)
    if bad and not args.allow_nonfinite:
        from scorematch.errors import SamplingError

        raise SamplingError(_nonfinite_message(bad, len(x), name, model))
    if args.inpaint is not None:
        write_npz(out, samples=x.numpy())
    else:
        import numpy as np

        write_npz(out, samples=x.numpy(), row_index=np.arange(args.start_index, args.start_index + len(x)),
                  seed=np.int64(args.seed), score_evaluations=np.int64(evals))
        print(f"score evaluations: {evals} per sample (sampler {name})")
    note = f", {bad} of them NaN/inf" if bad else ""
    print(f"wrote {out} (samples: {tuple(x.shape)}{note}"
          f"{f', from {ctx.world_size} processes' if ctx.enabled else ''})")
    if info["data"]["kind"] == "image":
        from scorematch.plotting import save_image_grid

        png = out.with_suffix(".png")
        save_image_grid(x[:100].to(torch.float32), png)
        print(f"wrote {png}")
    return 0


def _check_rows(args: argparse.Namespace) -> None:
    """--start-index an integer >= 0 (up to 2**62), --batch-size one >= 1."""
    from scorematch._checks import positive_int
    from scorematch.run.folder.validate import check_seed

    check_seed("--start-index", args.start_index)
    if args.batch_size is not None:
        positive_int("--batch-size", args.batch_size)


def _check_conditional_flags(args: argparse.Namespace) -> None:
    """Flags of --inpaint that do not apply without it, and --n with it."""
    if args.inpaint is None:
        given = [f for f in ("inpaint_method", "particles", "resample") if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"{', '.join('--' + f.replace('_', '-') for f in given)} only appl"
                              f"{'ies' if len(given) == 1 else 'y'} with --inpaint FILE.npz")
    elif args.n is not None:
        raise ConfigError("--n does not apply with --inpaint: one sample is filled in per row of x")
    elif args.start_index or args.batch_size is not None:
        raise ConfigError("--start-index and --batch-size do not apply with --inpaint: one sample is filled in per "
                          "row of x, all at once")


def _inpaint(args: argparse.Namespace, model: Any, options: dict[str, Any], out: Path, device: Any,
             threads: int) -> tuple[Any, str]:
    """The rows of --inpaint FILE filled in: checked (file, flags, label) before anything is written."""
    from scorematch.files import probe_writable
    from scorematch.run.sampling.inpaint import check_request, inpaint_run, read_inpaint_file
    from scorematch.run.system.environment import say, start_line

    info = model.run_info
    method, sampler, _, _ = check_request(model, info, args.inpaint_method, args.sampler, options, args.particles,
                                          args.resample, args.label, args.guidance)
    x, mask = read_inpaint_file(args.inpaint, tuple(info["data"]["sample_shape"]), info["data"]["kind"])
    probe_writable(out)
    say(start_line("sample", device, threads, model, tuple(info["data"]["sample_shape"]),
                   f"inpainting {x.shape[0]} rows by {method}{f' with {sampler}' if sampler else ''}"))
    filled = inpaint_run(model, info, x, mask, method=method, sampler=sampler, seed=args.seed,
                         particles=args.particles, resample=args.resample, label=args.label,
                         guidance=args.guidance, progress=not args.no_progress, **options)
    return filled.cpu(), f"inpaint {method}"


def cmd_eval(args: argparse.Namespace) -> int:
    from scorematch.run.reporting.evaluate import evaluate
    from scorematch.run.system.environment import pick_device

    _threads(args)
    res = evaluate(args.run, n=args.n, seed=args.seed, sampler=args.sampler, likelihood=args.likelihood,
                   out=args.out, device=pick_device(args.device), progress=not args.no_progress,
                   **_sampler_options(args))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    width = max(len(k) for k in res)
    for k, v in res.items():
        if k == "file":
            continue
        val = f"{v:.6g}" if isinstance(v, float) else (
            "[" + ", ".join(f"{u:.3f}" for u in v) + "]" if isinstance(v, list) else str(v))
        print(f"{k:<{width}}  {val}")
    print(f"(written to {res['file']})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from scorematch.errors import CheckpointError
    from scorematch.run.folder.config import load_config
    from scorematch.run.reporting.figures import run_figures
    from scorematch.run.system.environment import pick_device

    # check the run folder before run_figures creates RUN/plots (it would create RUN too)
    if not Path(args.run).is_dir():
        raise CheckpointError(f"run folder {args.run} does not exist; pass the --out folder of `scorematch train`")
    load_config(args.run)
    _threads(args)
    for p in run_figures(args.run, out=args.out, n=args.n, seed=args.seed, device=pick_device(args.device),
                         progress=not args.no_progress):
        print(f"wrote {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from scorematch.run.reporting.html import write_report
    from scorematch.run.system.environment import pick_device

    _threads(args)
    path = write_report(args.run, out=args.out, n=args.n, seed=args.seed, evaluate=not args.no_eval,
                        device=pick_device(args.device), progress=not args.no_progress)
    print(f"wrote {path}")
    return 0
