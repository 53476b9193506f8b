"""Evaluation of a run: score quality against closed forms, sample quality against held-out data.

Reported (where they apply): the Fisher divergence 1/2 E_p||s_theta - s*||^2 to the analytic
score (unconditional models on a toy with a closed form); MMD^2 (RBF kernel, bandwidth the
median distance within the held-out data, so runs on the same data share one kernel) and sliced
Wasserstein between samples and held-out data, each with a standard error from 5 disjoint
subsets, beside the same numbers for a shuffled subset of the training data (the floor a
perfect sampler reaches); k-nearest-neighbour precision and recall (Kynkaanniemi et al. 2019,
k = 3); for labelled images, the Frechet distance, KID, precision/recall and
classifier-confident rate in the feature space of a classifier trained on the run's training
images (``scorematch.run.reporting.features``), each with its real-vs-real baseline, and the
Inception FID when the user gives the network's weights file; the count of
non-finite samples; mode weights on a mixture; the conservativeness of the
learned field ||J - J^T||_F / ||J||_F; and for noise- and time-conditional models the test
log-likelihood through the probability-flow ODE, in data units (a standardised run adds the
log-Jacobian -sum log sd of the standardisation), and bits per dimension for images.

``evaluate`` writes RUN/eval.json, unless it holds an evaluation with other settings (n, seed,
sampler, sampler options, likelihood): then RUN/eval-SAMPLER-nN-seedS.json (options and
"-likelihood" appended to the name when set), so an evaluation is never overwritten by a
different one; ``out`` names the file instead.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from scorematch.data import train_test_split
from scorematch.files import folder_lock, probe_writable, write_json
from scorematch.run.build.loading import data_score, held_out, load
from scorematch.run.folder.outdir import claim_file
from scorematch.run.folder.validate import check_seed
from scorematch.run.sampling.generate import count_nonfinite, resolve_sampler
from scorematch.run.sampling.space import space_of, time_sde
from scorematch.run.system import limits
from scorematch.run.system.environment import say, start_line

N_SUBSETS = 5
PR_NEIGHBOURS = 3
#: the lock held while an evaluation picks its file in the run folder and writes it
EVAL_LOCK = ".eval.lock"
_SETTINGS = ("n_samples", "seed", "sampler", "sampler_options", "likelihood")


def evaluate(run_dir: str | Path, n: int = 2000, seed: int = 0, sampler: str | None = None,
             likelihood: bool | None = None, out: str | Path | None = None, device: str | torch.device = "cpu",
             progress: bool = False, save: bool = True, force: bool = False,
             inception_weights: str | Path | None = None, **sampler_options: Any) -> dict[str, Any]:
    """Evaluate a run folder; writes the results (see the module docstring for where; checked
    writable before the work starts) unless ``save`` is False, and returns them;
    ``results["file"]`` is the file written. An ``out`` that exists is refused (``force``: it is
    renamed NAME.orig first); the file is created exclusively, and the choice of RUN/eval.json or
    RUN/eval-...json is made under a lock, so concurrent evaluations each keep their result.
    ``inception_weights``: a safetensors file of the FID Inception network
    (``scorematch.metrics.inception``), for the Inception FID of image runs."""
    check_seed("seed", seed)
    if inception_weights is not None and not Path(inception_weights).is_file():
        from scorematch.errors import CheckpointError

        raise CheckpointError(f"Inception weights {inception_weights} not found; pass a safetensors file of the "
                              "FID Inception state dict (scorematch never downloads it)")
    run = Path(run_dir)
    if save and out is not None:
        claim_file(Path(out), force)
    model = load(run, device=device)
    limits.check_request(model, n, model.run_info["data"]["sample_shape"], next(model.parameters()).device,
                         sampler_options)
    dev = next(model.parameters()).device
    name, sampler_options = resolve_sampler(model, sampler, sampler_options)
    full, test = held_out(run)
    if progress:
        say(start_line("eval", dev, torch.get_num_threads(), model, tuple(full.x.shape)))
    cfg = model.run_info["config"]
    train_x = train_test_split(full, cfg["test_fraction"], seed=cfg["seed"])[0].x
    if likelihood is None:
        likelihood = model.conditioning == "time"
    likelihood = bool(likelihood and model.conditioning != "none")
    results: dict[str, Any] = {"run": str(run), "n_samples": n, "seed": seed, "sampler": name,
                               "sampler_options": dict(sorted(sampler_options.items())), "likelihood": likelihood,
                               "device": str(dev)}
    target = eval_file(run, results, out)
    root = run if out is None else Path(out).parent
    if save:
        probe_writable(target, root=root)
    g = torch.Generator().manual_seed(seed)
    dist = full.dist
    if dist is not None and model.conditioning == "none":
        results["fisher_divergence"] = _fisher(model, dist, n, g)
    from scorematch.run.sampling.generate import generate

    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    samples = generate(model, model.run_info, n, sampler=sampler, seed=seed, progress=progress,
                       warn_nonfinite=False, report=report, **sampler_options)
    results["sampling_seconds"] = time.perf_counter() - t0
    if "nfe" in report:  # a sampler that picks its own steps says how many evaluations it took
        results["sampling_nfe"] = int(report["nfe"])
    results["nonfinite_samples"] = count_nonfinite(samples)
    if results["nonfinite_samples"]:
        say(f"scorematch eval: {results['nonfinite_samples']} of {n} samples are NaN/inf; the sample metrics "
            "use the finite ones only")
    finite = samples[torch.isfinite(samples.flatten(1)).all(1)]
    ref = test[: max(2, min(n, len(test)))].to(dev)
    results.update(_sample_metrics(finite, ref, train_x, g))
    if full.kind == "image":
        results["image_metrics"] = _image_metrics(finite, full, cfg, seed, inception_weights)
    if dist is not None and hasattr(dist, "means") and len(finite):
        from scorematch.metrics import mode_weights

        results["mode_weights"] = mode_weights(finite.cpu(), dist.means.float()).tolist()
        results["true_mode_weights"] = dist.weights.tolist()
    x_small = ref[:200].flatten(1) if math.prod(ref.shape[1:]) <= 64 else None
    if x_small is not None and getattr(model, "dim", None) == x_small.shape[1]:
        from scorematch.density import jacobian_asymmetry

        results["jacobian_asymmetry"] = float(jacobian_asymmetry(data_score(model), x_small))
    if likelihood:
        from scorematch.data import quantization_levels

        if progress:
            say("scorematch eval: test log-likelihood through the probability-flow ODE (adaptive solver)...")
        results.update(_likelihood(model, ref[: min(len(ref), 256)], full.kind, quantization_levels(full), g))
    if save:
        if out is not None:
            results["file"] = str(target)
            write_json(target, results, root=root, exclusive=True)
        else:
            with folder_lock(run, EVAL_LOCK, wait=True):
                target = eval_file(run, results)
                results["file"] = str(target)
                write_json(target, results, root=root)
    return results


def _image_metrics(samples: torch.Tensor, full: Any, cfg: dict[str, Any], seed: int,
                   inception_weights: str | Path | None = None) -> dict[str, Any]:
    """FD, KID, precision/recall and confident rate in the feature space of a classifier trained
    on the run's labelled training images (``scorematch.run.reporting.features``); a reason when
    they cannot be computed. Draws from its own generator (seeded with ``seed``)."""
    if full.labels is None:
        return {"skipped": "the data has no labels; the feature network is trained on labelled images"}
    least = N_SUBSETS * (PR_NEIGHBOURS + 1)
    if len(samples) < least:
        return {"skipped": f"fewer than {least} finite samples (precision/recall on {N_SUBSETS} subsets)"}
    from scorematch.run.reporting.features import run_image_metrics

    train, test = train_test_split(full, cfg["test_fraction"], seed=cfg["seed"])
    return run_image_metrics(samples, train.x, train.labels, test.x, test.labels,
                             torch.Generator().manual_seed(seed), inception_weights)


def _fisher(model: torch.nn.Module, dist: Any, n: int, g: torch.Generator) -> float:
    from scorematch.metrics import fisher_divergence

    return fisher_divergence(model, dist, n=n, generator=g)


def _sample_metrics(samples: torch.Tensor, ref: torch.Tensor, train_x: torch.Tensor,
                    g: torch.Generator) -> dict[str, Any]:
    """MMD^2 and sliced Wasserstein (with standard errors), precision and recall of the samples
    against ``ref``, and the same for a shuffled subset of the training data (the baseline)."""
    from scorematch.metrics import median_bandwidth, mmd, precision_recall, sliced_wasserstein, subset_estimates

    out: dict[str, Any] = {}
    half = len(ref) // 2
    h = median_bandwidth(ref[:half], ref[half:]) if half >= 1 else None
    out["mmd_bandwidth"] = h

    def kernel_mmd(a: torch.Tensor, b: torch.Tensor) -> float:
        return mmd(a, b, bandwidth=h)

    def sw(a: torch.Tensor, b: torch.Tensor) -> float:
        return sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0))

    base = train_x[torch.randperm(len(train_x), generator=g)[: len(ref)]].to(ref.device)
    for prefix, x in (("", samples[: len(ref) * 4]), ("baseline_", base)):
        if len(x) < 2:
            continue
        out[prefix + "mmd"] = kernel_mmd(x, ref)
        out[prefix + "sliced_wasserstein"] = sw(x, ref)
        if len(x) >= 2 * N_SUBSETS and len(ref) >= 2 * N_SUBSETS:
            out[prefix + "mmd_se"] = subset_estimates(kernel_mmd, x, ref, N_SUBSETS, g)[1]
            out[prefix + "sliced_wasserstein_se"] = subset_estimates(sw, x, ref, N_SUBSETS, g)[1]
        if len(x) > PR_NEIGHBOURS and len(ref) > PR_NEIGHBOURS:
            out[prefix + "precision"], out[prefix + "recall"] = precision_recall(ref, x[: len(ref)], PR_NEIGHBOURS)
    return out


def eval_file(run: Path, results: dict[str, Any], out: str | Path | None = None) -> Path:
    """Where an evaluation goes: ``out``; else RUN/eval.json when it is free or holds one with
    the same settings; else RUN/eval-SAMPLER-nN-seedS.json, with "-option=value" for each
    sampler option and "-likelihood" appended to the name when set."""
    if out is not None:
        return Path(out)
    default = run / "eval.json"
    try:
        old = json.loads(default.read_text())
    except (OSError, json.JSONDecodeError):
        return default
    mine = {k: results.get(k) for k in _SETTINGS}
    theirs = {k: old.get(k, {} if k == "sampler_options" else None) for k in _SETTINGS}
    if theirs.get("likelihood") is None:  # written before the setting was recorded
        theirs["likelihood"] = mine["likelihood"]
    if not isinstance(old, dict) or mine == theirs:
        return default
    opts = "".join(f"-{k}={v}" for k, v in mine["sampler_options"].items())
    return run / f"eval-{mine['sampler']}-n{mine['n_samples']}-seed{mine['seed']}{opts}" \
                 f"{'-likelihood' if mine['likelihood'] else ''}.json"


def _likelihood(model: torch.nn.Module, x: torch.Tensor, kind: str, levels: int,
                g: torch.Generator) -> dict[str, float]:
    """Test log-likelihood by the probability-flow ODE; images are uniformly dequantised first
    (y = (x_int + u)/levels, ``levels`` = 17 for digits' 0..16 pixels, else 256) for bits/dim. A
    standardised model's likelihood is that of z = (x - mu)/sd plus log |dz/dx| = -sum log sd."""
    from scorematch.data import dequantize
    from scorematch.likelihood import bits_per_dim, log_prob

    space = space_of(model, model.run_info)
    net, outer = space.inner, space.outer
    log_det = 0.0
    if outer is not None:
        x = outer.to_model_space(x)
        log_det = -float(outer.std.double().log().sum())
    sde, score_fn = time_sde(net, space.kind, space.schedule)
    if kind == "image":
        x = dequantize(x, generator=g, levels=levels)
    xin = x.flatten(1) if getattr(net, "dim", None) == x[0].numel() and x.dim() > 2 else x
    res = log_prob(score_fn, sde, xin, generator=g, return_nfe=True)
    lp = res.log_prob + log_det
    out = {"test_log_likelihood": float(lp.mean()), "likelihood_nfe": int(res.nfe)}
    if kind == "image":
        out["bits_per_dim"] = float(bits_per_dim(lp, x[0].numel(), levels=levels).mean())
    return out
