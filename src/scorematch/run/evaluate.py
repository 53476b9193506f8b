"""Evaluation of a run: score quality against closed forms, sample quality against held-out data.

Reported (where they apply): the Fisher divergence 1/2 E_p||s_theta - s*||^2 to the analytic
score (unconditional models on a toy with a closed form), MMD^2 and sliced Wasserstein between
samples and held-out data, mode weights on a mixture, the conservativeness of the learned
field ||J - J^T||_F / ||J||_F, and for time-conditional models the test log-likelihood through
the probability-flow ODE (bits per dimension for images).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from scorematch.files import probe_writable, write_json
from scorematch.run.loading import data_score, held_out, load
from scorematch.run.validate import check_seed


def evaluate(run_dir: str | Path, n: int = 2000, seed: int = 0, sampler: str | None = None,
             likelihood: bool | None = None, save: bool = True, **sampler_options: Any) -> dict[str, Any]:
    """Evaluate a run folder; writes RUN/eval.json (unless ``save`` is False; checked writable
    before the work starts) and returns the same dict."""
    from scorematch import metrics
    from scorematch.data import quantization_levels
    from scorematch.density import jacobian_asymmetry
    from scorematch.run.generate import generate

    check_seed("seed", seed)
    run = Path(run_dir)
    model = load(run)
    if save:
        probe_writable(run / "eval.json", root=run)
    full, test = held_out(run)
    results: dict[str, Any] = {"run": str(run), "n_samples": n, "seed": seed}
    g = torch.Generator().manual_seed(seed)
    flat_score = data_score(model)
    dist = full.dist
    if dist is not None and getattr(model, "conditioning", "none") == "none":
        results["fisher_divergence"] = metrics.fisher_divergence(model, dist, n=n, generator=g)
    t0 = time.perf_counter()
    samples = generate(model, model.run_info, n, sampler=sampler, seed=seed, **sampler_options)
    results["sampling_seconds"] = time.perf_counter() - t0
    results["sampler"] = sampler or {"none": "langevin", "sigma": "annealed", "time": "pc"}[model.conditioning]
    finite = torch.isfinite(samples.flatten(1)).all(1)
    results["nonfinite_samples"] = int((~finite).sum())
    ref = test[: max(2, min(n, len(test)))]
    s = samples[finite][: len(ref) * 4]
    if len(s) >= 2:
        results["mmd"] = metrics.mmd(s, ref)
        results["sliced_wasserstein"] = metrics.sliced_wasserstein(s, ref, generator=g)
        results["baseline_mmd"] = _baseline_mmd(full.x, ref)
    if dist is not None and hasattr(dist, "means") and len(s):
        results["mode_weights"] = metrics.mode_weights(s, dist.means.float()).tolist()
        results["true_mode_weights"] = dist.weights.tolist()
    x_small = ref[:200].flatten(1) if math.prod(ref.shape[1:]) <= 64 else None
    if x_small is not None and getattr(model, "dim", None) == x_small.shape[1]:
        results["jacobian_asymmetry"] = float(jacobian_asymmetry(flat_score, x_small))
    if likelihood is None:
        likelihood = model.conditioning == "time"
    if likelihood and model.conditioning != "none":
        levels = quantization_levels(full)
        results.update(_likelihood(model, ref[: min(len(ref), 256)], full.kind, levels, g))
    if save:
        write_json(run / "eval.json", results, root=run)
    return results


def _baseline_mmd(train: torch.Tensor, ref: torch.Tensor) -> float:
    """MMD^2 between training data and the held-out set: the floor a perfect sampler reaches."""
    from scorematch.metrics import mmd

    return mmd(train[: len(ref)], ref)


def _likelihood(model: torch.nn.Module, x: torch.Tensor, kind: str, levels: int,
                g: torch.Generator) -> dict[str, float]:
    """Test log-likelihood by the probability-flow ODE; images are uniformly dequantised first
    (y = (x_int + u)/levels, ``levels`` = 17 for digits' 0..16 pixels, else 256) for bits/dim."""
    from scorematch.data import dequantize
    from scorematch.likelihood import bits_per_dim, log_prob
    from scorematch.sde import get_sde, sigma_conditioned, ve_from_sigmas

    schedule = model.run_info["schedule"]
    if model.conditioning == "sigma":
        sde = ve_from_sigmas(schedule["sigmas"])
        score_fn = sigma_conditioned(model, sde)
    else:
        sde = get_sde(schedule["sde"], **{k: v for k, v in schedule.items() if k != "sde"})
        score_fn = model.score
    if kind == "image":
        x = dequantize(x, generator=g, levels=levels)
    xin = x.flatten(1) if getattr(model, "dim", None) == x[0].numel() and x.dim() > 2 else x
    res = log_prob(score_fn, sde, xin, generator=g, return_nfe=True)
    out = {"test_log_likelihood": float(res.log_prob.mean()), "likelihood_nfe": int(res.nfe)}
    if kind == "image":
        out["bits_per_dim"] = float(bits_per_dim(res.log_prob, x[0].numel(), levels=levels).mean())
    return out
