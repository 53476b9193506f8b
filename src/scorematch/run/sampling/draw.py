"""``scorematch sample`` as one function: the samples of a run folder, split over the processes of
a torchrun launch (rank r draws samples r m .. (r + 1) m - 1 of the seed, each from its own
streams, so the samples are those one process draws; rank 0 gathers them), or the rows of
an inpainting file filled in (one process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scorematch.errors import ConfigError
from scorematch.files import probe_writable
from scorematch.run.build.loading import load
from scorematch.run.sampling.generate import check_label, check_log_prob, generate, resolve_sampler
from scorematch.run.sampling.inpaint import check_request, inpaint_run, read_inpaint_file
from scorematch.run.system import distributed as D
from scorematch.run.system import limits
from scorematch.run.system.environment import say, start_line
from scorematch.samplers import catalogue

#: samples drawn when none are asked for
DEFAULT_N = 1000


@dataclass(frozen=True)
class Drawn:
    """What ``draw`` returns: the samples (on the CPU; None on a process other than rank 0), the
    sampler that drew them (or ``inpaint METHOD``), the model, the number of processes, each
    sample's log-likelihood (with ``log_prob``), for a sampler that picks its own steps (its
    entry's ``info``) the score evaluations it took (summed over the processes), and the score
    evaluations per sample (counted; None for inpainting)."""

    samples: torch.Tensor | None
    sampler: str
    model: Any
    world_size: int
    log_prob: torch.Tensor | None = None
    nfe: int | None = None
    evaluations: int | None = None

    @property
    def is_main(self) -> bool:
        return self.samples is not None


def draw(run: Path, out: Path, n: int | None = None, sampler: str | None = None, seed: int = 0,
         options: dict[str, Any] | None = None, label: int | str | None = None, guidance: float | None = None,
         inpaint: Path | None = None, inpaint_method: str | None = None, particles: int | None = None,
         resample: int | None = None, device: Any = "cpu", threads: int = 1, progress: bool = True,
         claim: bool = False, force: bool = False, log_prob: bool = False, start_index: int = 0,
         batch_size: int | None = None) -> Drawn:
    """Samples of the run folder ``run`` (``generate``), or with ``inpaint`` (an .npz of x and mask)
    its rows filled in (``inpaint_run``); ``out`` is probed for writing first (rank 0), and with
    ``claim`` it (and its image grid FILE.png for image runs) must not exist unless ``force``
    (then it is renamed aside). The request is checked against the memory before any work. Under
    torchrun the processes share the work and are shut down here, on success and on error.
    ``log_prob``: also each sample's log-likelihood, from a sampler whose entry has ``log_prob``
    (ConfigError naming them otherwise)."""
    ctx, device = D.init_from_env(device)
    options = dict(options or {})
    done = False
    try:
        model = load(run, device=device)
        info = model.run_info
        shape = tuple(info["data"]["sample_shape"])
        if claim:
            D.on_main(lambda: _claim_files(out, info, force), ctx)
        if inpaint is None:
            limits.check_request(model, DEFAULT_N if n is None else n, shape, device, options)
        if inpaint is not None:
            if log_prob:
                raise ConfigError("--log-prob does not apply with --inpaint; drop one of them")
            if ctx.enabled:
                raise ConfigError("--inpaint runs in one process; drop --nproc")
            method, name, _, _ = check_request(model, info, inpaint_method, sampler, options, particles, resample,
                                               label, guidance)
            x, mask = read_inpaint_file(inpaint, shape, info["data"]["kind"])
            probe_writable(out)
            say(start_line("sample", device, threads, model, shape,
                           f"inpainting {x.shape[0]} rows by {method}{f' with {name}' if name else ''}"))
            filled = inpaint_run(model, info, x, mask, method=method, sampler=name, seed=seed, particles=particles,
                                 resample=resample, label=label, guidance=guidance, progress=progress,
                                 start_index=start_index, batch_size=batch_size, **options)
            done = True
            return Drawn(filled.cpu(), f"inpaint {method}", model, 1)
        n = DEFAULT_N if n is None else n
        D.on_main(lambda: probe_writable(out), ctx)
        name, options = resolve_sampler(model, sampler, options)
        if log_prob:
            check_log_prob(name)
        check_label(model, info, label, guidance)
        if ctx.is_main:
            say(start_line("sample", device, threads, model, shape,
                           f"sampler {name}, n {n}" + (f", label {label}" if label is not None else "")))
        per_rank = -(-n // ctx.world_size)
        report: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        x = generate(model, info, per_rank, sampler=name, seed=seed, start_index=start_index + ctx.rank * per_rank,
                     batch_size=batch_size, stats=stats, progress=ctx.is_main and progress, warn_nonfinite=False,
                     label=label, guidance=guidance, return_log_prob=log_prob, report=report, **options)
        x = D.gather_rows(x.contiguous(), ctx)[:n].cpu()
        lp = D.gather_rows(report["log_prob"].to(device).contiguous(), ctx)[:n].cpu() if log_prob else None
        evals = int(D.gather_rows(torch.tensor([stats["evaluations"]], device=device), ctx).max())
        nfe = None
        if "nfe" in report:
            nfe = int(D.gather_rows(torch.tensor([report["nfe"]], device=device), ctx).sum())
            rows = None
            if "row_nfe" in report:  # each sample stepped on its own: its evaluations, on average
                rows = int(D.gather_rows(torch.tensor([report["row_nfe"]], device=device), ctx).sum())
                rows /= per_rank * ctx.world_size
            if ctx.is_main:
                say(f"scorematch: sampler {name} took {nfe} score evaluations"
                    + (f" ({ctx.world_size} processes together)" if ctx.world_size > 1 else "")
                    + (f"; each sample its own steps, {rows:.1f} evaluations per sample on average" if rows else ""))
        done = True
        return Drawn(x if ctx.is_main else None, name, model, ctx.world_size, lp, nfe, evals)
    finally:
        D.shutdown(ctx, clean=done)


def _claim_files(out: Path, info: dict[str, Any], force: bool) -> None:
    """``sample --out FILE.npz`` (and FILE.png beside it for images) must be new, or ``force``."""
    from scorematch.run.folder.outdir import claim_file

    claim_file(out, force)
    if info["data"]["kind"] == "image":
        claim_file(out.with_suffix(".png"), force, flag="--out (its image grid)")


def nonfinite_advice(bad: int, n: int, name: str, model: Any) -> str:
    """The refusal of samples with NaN or inf entries: how many, and what to try (a smaller step
    for a sampler with a step size, more steps or another sampler otherwise; standardised data)."""
    entry = catalogue.CATALOGUE.get(name)
    step = next((o.name for o in entry.options if o.name in ("step_size", "eps")), None) if entry else None
    flag = "--" + step.replace("_", "-") if step else None
    tips = ["a smaller " + flag if flag else "more --n-steps", "more steps" if flag else "another sampler (ode)"]
    data = getattr(model, "run_info", {}).get("data", {})
    if data.get("kind") == "vector" and not data.get("standardize"):
        tips.insert(0, "training on standardised data (train --standardize auto)")
    return (f"{bad} of {n} samples are NaN or inf (sampler {name}); nothing was written. Try "
            f"{', '.join(tips)}; --allow-nonfinite writes them anyway")
