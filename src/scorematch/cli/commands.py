"""What each command does once its arguments are parsed: ``cmd_train``, ``cmd_sample``,
``cmd_eval``, ``cmd_plot``, ``cmd_report``, ``cmd_ema`` (table runs go to ``scorematch.cli.tables``). Each
imports the run layer (and torch) only when called."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from scorematch.cli.parser import TRAIN_HELP, sampler_flags
from scorematch.errors import ConfigError
from scorematch.run.folder.config import TrainConfig


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in sampler_flags() if getattr(args, k, None) is not None}


def _threads(args: argparse.Namespace) -> int:
    from scorematch.run.system.environment import set_threads

    return set_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name in TRAIN_HELP and getattr(args, f.name) is not None}
    if args.no_progress:
        overrides["progress"] = False
    from scorematch.cli.tables import cmd_train_table, wants_table

    if wants_table(args):
        _threads(args)
        return cmd_train_table(args, overrides)
    for flag in ("epochs", "impute_epochs"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} applies to a table run (--table, --columns or "
                              "--label-column)")
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ConfigError(f"--out cannot be used with --resume: a resumed run continues in its own folder "
                              f"({args.resume}); drop --resume to start a new run in {args.out}")
        if args.config is not None:
            raise ConfigError(f"--config cannot be used with --resume: the run's settings are "
                              f"{args.resume}/config.json (flags such as --steps, --lr, --grad-clip may change them)")
        if args.force:
            raise ConfigError("--force cannot be used with --resume (it is for a new run in a non-empty folder)")
        from scorematch.run.training.loop import train

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
        from scorematch.run.training.loop import train  # torch: after the config is checked

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


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from scorematch.files import write_npz
    from scorematch.run.sampling.draw import draw, nonfinite_advice
    from scorematch.run.sampling.generate import count_nonfinite
    from scorematch.run.system.environment import pick_device
    from scorematch.run.tables.folder import is_table_run

    if is_table_run(args.run):
        from scorematch.cli.tables import cmd_sample_table

        _threads(args)
        return cmd_sample_table(args)
    _check_npz(args.out)
    _check_conditional_flags(args)
    _check_rows(args)
    out = args.out or args.run / "samples.npz"
    threads = _threads(args)
    drawn = draw(args.run, out, n=args.n, sampler=args.sampler, seed=args.seed, options=_sampler_options(args),
                 label=args.label, guidance=args.guidance, inpaint=args.inpaint, inpaint_method=args.inpaint_method,
                 particles=args.particles, resample=args.resample, device=pick_device(args.device), threads=threads,
                 progress=not args.no_progress, claim=args.out is not None, force=args.force,
                 log_prob=args.log_prob, start_index=args.start_index, batch_size=args.batch_size)
    if not drawn.is_main:
        return 0
    x = drawn.samples
    bad = count_nonfinite(x)
    if bad and not args.allow_nonfinite:
        from scorematch.errors import SamplingError

        raise SamplingError(nonfinite_advice(bad, len(x), drawn.sampler, drawn.model))
    arrays = {"samples": x.numpy()}
    if drawn.log_prob is not None:
        arrays["log_prob"] = drawn.log_prob.numpy()
    if drawn.nfe is not None:
        arrays["nfe"] = np.asarray(drawn.nfe, dtype=np.int64)
    if drawn.evaluations is not None:
        arrays.update(row_index=np.arange(args.start_index, args.start_index + len(x)), seed=np.int64(args.seed),
                      score_evaluations=np.int64(drawn.evaluations))
        print(f"score evaluations: {drawn.evaluations} per sample (sampler {drawn.sampler})")
    write_npz(out, exclusive=args.out is not None, **arrays)
    note = f", {bad} of them NaN/inf" if bad else ""
    print(f"wrote {out} (samples: {tuple(x.shape)}{note}"
          f"{f', from {drawn.world_size} processes' if drawn.world_size > 1 else ''}"
          f"{f', {drawn.nfe} score evaluations' if drawn.nfe is not None else ''})")
    if drawn.log_prob is not None:
        print(f"mean log-likelihood: {float(drawn.log_prob.mean()):.6g} (log_prob in {out})")
    if drawn.model.run_info["data"]["kind"] == "image":
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
    """Flags of --inpaint that do not apply without it, and --n with it (--start-index and
    --batch-size apply: row i of x is sample start-index + i, filled batch-size rows at a time)."""
    if args.inpaint is None:
        given = [f for f in ("inpaint_method", "particles", "resample") if getattr(args, f) is not None]
        if given:
            raise ConfigError(f"{', '.join('--' + f.replace('_', '-') for f in given)} only appl"
                              f"{'ies' if len(given) == 1 else 'y'} with --inpaint FILE.npz")
    elif args.n is not None:
        raise ConfigError("--n does not apply with --inpaint: one sample is filled in per row of x")


def cmd_eval(args: argparse.Namespace) -> int:
    from scorematch.run.reporting.evaluate import evaluate
    from scorematch.run.system.environment import pick_device
    from scorematch.run.tables.folder import is_table_run

    _threads(args)
    if is_table_run(args.run):
        from scorematch.cli.tables import cmd_eval_table

        return cmd_eval_table(args)
    res = evaluate(args.run, n=args.n, seed=args.seed, sampler=args.sampler, likelihood=args.likelihood,
                   out=args.out, device=pick_device(args.device), progress=not args.no_progress, force=args.force,
                   inception_weights=args.inception_weights, **_sampler_options(args))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    width = max(len(k) for k in res)
    for k, v in res.items():
        if k == "file":
            continue
        if k == "image_metrics":
            from scorematch.run.reporting.features import image_metric_lines

            for name, text, _ in image_metric_lines(v):
                print(f"{name:<{width}}  {text}")
            continue
        val = f"{v:.6g}" if isinstance(v, float) else (
            "[" + ", ".join(f"{u:.3f}" for u in v) + "]" if isinstance(v, list) else str(v))
        print(f"{k:<{width}}  {val}")
    print(f"(written to {res['file']})")
    return 0


def cmd_ema(args: argparse.Namespace) -> int:
    from scorematch.run.training.posthoc import posthoc_run

    out = posthoc_run(args.run, args.sigma_rel, args.out)
    print(f"post-hoc EMA sigma_rel {args.sigma_rel:g} of {args.run}: {out} "
          f"(a run folder: scorematch sample {out})")
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
                         progress=not args.no_progress, force=args.force):
        print(f"wrote {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from scorematch.run.reporting.html import write_report
    from scorematch.run.system.environment import pick_device
    from scorematch.run.tables.folder import is_table_run

    _threads(args)
    if is_table_run(args.run):
        from scorematch.run.tables.report import write_table_report

        print(f"wrote {write_table_report(args.run, out=args.out, n=args.n, seed=args.seed, force=args.force)}")
        return 0
    path = write_report(args.run, out=args.out, n=args.n, seed=args.seed, evaluate=not args.no_eval,
                        device=pick_device(args.device), progress=not args.no_progress, force=args.force)
    print(f"wrote {path}")
    return 0
