"""Sample quality against the number of score evaluations (NFE), for every sampler of scorematch on
every kind of model, and the default sampler of each kind chosen from it.

Samplers, each at a ladder of score-evaluation budgets (``BUDGETS``; NFE counted by wrapping the
score function): the older ones, annealed Langevin (Song & Ermon 2019; NCSNv2's technique-4 eps
for each T, and ``annealed_eps5`` with the T = 5 eps kept fixed), Euler-Maruyama, the
reverse-diffusion predictor, predictor-corrector (one Langevin corrector, snr 0.16) and the
probability-flow ODE (dopri5 at a ladder of tolerances) of Song et al. (2021); and the denoising
samplers over Karras levels (``karras_sigmas(N, sigma_min, sigma_max)`` with the final 0): heun
(Karras et al. 2022, Algorithm 1), euler, euler_ancestral, ddim (eta = 0), dpm_solver (DPM-Solver++
2M and 3M, Lu et al. 2022), its SDE variants dpmpp_2m_sde and dpmpp_3m_sde (eta = 1), restart (Xu et
al. 2023: Heun with one restart interval [0.1, 2], about a third of the budget on the restarts, see
``restart_plan``) and the tutorial notes' continuous_langevin over the linear sigma(t); the adaptive
DPM-Solver-23 (dpm_adaptive, eta = 0) at a ladder of rtol (atol 0.0078), placed by its counted NFE.

Score functions (``benchmarks/nfe_subjects.py``):

* the exact noisy score of the 2-D mixtures gmm2d and imbalanced (``GaussianMixture.noisy_score``),
  so the quality reflects the sampler alone: the older samplers over the NCSN levels of the data
  (sigma_1 = the largest pairwise distance, sigma_L = 0.01, L = 10) and the VE SDE through them,
  the denoising samplers over EDM's range 80 -> 0.002 (``heun_ncsn``, ``dpm_solver_ncsn``: over the
  NCSN range);
* models trained on each toy: NCSN (noise-conditional MLP), VE, VP and sub-VP SDEs (TimeMLP), all by
  ``scorematch.train`` with its defaults (standardised data, 2000 steps), and an EDM model
  (``EDMPrecond("TimeMLP")`` trained with ``scorematch.objectives.edm``); each sampled over its own
  training range, the denoising samplers through ``scorematch.denoise.sigma_view``;
* (not with ``--no-digits``) U-Nets of the same kinds on scikit-learn's 8x8 digits, scored by
  precision and recall against held-out digits (k-NN manifolds, k = 3, Kynkaenniemi et al. 2019)
  and the mean confidence of a logistic-regression classifier fitted on the real digits.

Quality on the toys: unbiased MMD^2 (RBF, bandwidth 1) to fresh mixture samples and the mode
weights; the bar is MMD^2 < 2e-3 (about 5 standard deviations of the sample-vs-sample value at
n = 2000) and every mode weight within 0.03 of the truth.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m benchmarks.nfe_quality [--quick] [--no-digits]

Writes benchmarks/results/nfe_quality.{json,md} and nfe_quality_summary.md (the block of
docs/benchmarks.md; ``python -m benchmarks.readme`` copies it there).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import nfe_report
from benchmarks.nfe_merge import merge, save_rerun, write
from benchmarks.nfe_subjects import (
    MODEL_KINDS,
    Digits,
    Subject,
    analytic,
    digits_split,
    edm_toy,
    trained_digits,
    trained_toy,
)
from scorematch.distributions import toy
from scorematch.errors import ConfigError
from scorematch.metrics import mmd, mode_weights, precision_recall
from scorematch.noise import eps_for_schedule, karras_sigmas, linear_sigmas
from scorematch.samplers import annealed_langevin, euler_maruyama, ode, pc, reverse_diffusion, sample
from scorematch.samplers.adaptive import end_levels

RESULTS = Path(__file__).resolve().parent / "results"
MMD_BANDWIDTH = 1.0
MMD_GOOD = 2e-3
MODE_GOOD = 0.03
TOYS = ("gmm2d", "imbalanced")
#: the samplers scorematch had before the denoising samplers, and those
OLD = ("annealed", "annealed_eps5", "euler_maruyama", "reverse_diffusion", "pc", "ode")
NEW = ("heun", "euler", "euler_ancestral", "ddim", "dpm_solver", "dpm_solver_3m", "continuous_langevin",
       "dpmpp_2m_sde", "dpmpp_3m_sde", "dpm_adaptive", "restart")
#: kind -> (sampler name, options) of ``scorematch.samplers.sample``; ``_ncsn``: over the NCSN range
DENOISING = {"heun": ("heun", {}), "euler": ("euler", {}), "euler_ancestral": ("euler_ancestral", {}),
             "ddim": ("ddim", {}), "dpm_solver": ("dpm_solver", {}), "dpm_solver_3m": ("dpm_solver", {"order": 3}),
             "continuous_langevin": ("continuous_langevin", {}),
             "dpmpp_2m_sde": ("dpmpp_2m_sde", {}), "dpmpp_3m_sde": ("dpmpp_3m_sde", {}),
             "dpm_adaptive": ("dpm_adaptive", {}), "restart": ("restart", {}),
             "heun_ncsn": ("heun", {}), "dpm_solver_ncsn": ("dpm_solver", {}),
             "euler_levels": ("euler", {}), "heun_levels": ("heun", {}),
             "euler_ancestral_levels": ("euler_ancestral", {}), "dpm_solver_levels": ("dpm_solver", {})}
NCSN_VARIANTS = ("heun_ncsn", "dpm_solver_ncsn")
#: on an NCSN model: the denoising samplers over exactly its L training levels (then 0), one run each
LEVEL_VARIANTS = ("euler_levels", "heun_levels", "euler_ancestral_levels", "dpm_solver_levels")
#: score-evaluation budgets; annealed Langevin (technique-4 eps) and PC also at LONG, they converge slowest
BUDGETS = (10, 20, 35, 50, 100, 200, 500)
LONG = {"annealed": (1000, 2000), "pc": (1000,)}
ODE_TOLS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
DIGITS_BUDGETS = (10, 20, 50, 100, 200)
DIGITS_LONG = {"annealed": (500,), "pc": (500,)}
DIGITS_TOLS = (1e-2, 1e-3, 1e-5)
ADAPTIVE_RTOLS, DIGITS_ADAPTIVE_RTOLS, TOLERANCED = (nfe_report.ADAPTIVE_RTOLS, nfe_report.DIGITS_ADAPTIVE_RTOLS,
                                                     nfe_report.TOLERANCED)
#: Restart's single interval [t_min, t_max] in the model's space (t_min: the grid level nearest 0.1)
RESTART_INTERVAL = (0.1, 2.0)
#: ddim (eta = 0) is the Euler step in the VE view: run on the exact scores only, to show it
SCORE_ONLY = ("ddim",)

Quality = Callable[[torch.Tensor], dict[str, Any]]


class Counted:
    """A score function that counts its calls (one call = one network evaluation per batch)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any) -> torch.Tensor:
        self.calls += 1
        return self.fn(*args)


def restart_plan(budget: int) -> tuple[int, int, int]:
    """Restart's (N main steps, K restarts, M steps per restart) for ``budget`` evaluations: about a
    third of them on the restarts, 2 K M with K = max(1, round(budget / 60)) and
    M = max(1, round(budget / 6K)), the rest on the main pass, N = (budget + 1 - 2 K M) // 2."""
    k = max(1, round(budget / 60))
    m = max(1, round(budget / (6 * k)))
    return (budget + 1 - 2 * k * m) // 2, k, m


def setting_for(kind: str, budget: int, n_levels: int) -> int | None:
    """The step count of sampler ``kind`` that spends at most ``budget`` evaluations (None: none does).

    heun 2N - 1 (its last step, to sigma = 0, is an Euler step); PC 2N + 1 and Euler-Maruyama /
    reverse diffusion N + 1 (predictor + corrector per step; the final Tweedie denoising);
    annealed Langevin L T + 1; restart the budget itself (``restart_plan``); the other denoising samplers N."""
    if kind == "restart":
        return budget if restart_plan(budget)[0] >= 2 else None
    if kind.startswith("heun"):
        n = (budget + 1) // 2
    elif kind == "pc":
        n = (budget - 1) // 2
    elif kind.startswith("annealed"):
        n = (budget - 1) // n_levels
    elif kind in ("euler_maruyama", "reverse_diffusion"):
        n = budget - 1
    else:
        n = budget
    return n if n >= 1 else None


def expected_nfe(kind: str, steps: int, n_levels: int) -> int:
    """The evaluations ``setting_for``'s step count costs (the inverse of its rule)."""
    if kind == "restart":
        n, k, m = restart_plan(steps)
        return 2 * n - 1 + 2 * k * m
    if kind.startswith("heun"):
        return 2 * steps - 1
    if kind == "pc":
        return 2 * steps + 1
    if kind.startswith("annealed"):
        return n_levels * steps + 1
    if kind in ("euler_maruyama", "reverse_diffusion"):
        return steps + 1
    return steps


def run_sampler(subject: Subject, kind: str, setting: float, n: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """Samples (in the model's space), counted NFE and process seconds of one sampler at one setting."""
    g = torch.Generator().manual_seed(seed)
    shape, dtype, view = (n, *subject.shape), subject.dtype, subject.view
    t0 = time.process_time()
    if kind in DENOISING:
        if kind in NCSN_VARIANTS:
            lo, hi = subject.ncsn_range
            start = hi
        else:
            lo, hi, start = float(view.sigma_min), float(view.sigma_max), float(view.prior_std)
        name, opts = DENOISING[kind]
        steps = int(setting)
        if kind == "restart":
            steps, k, m = restart_plan(steps)
            t_min, t_max = RESTART_INTERVAL
            opts = {"restarts": k, "restart_steps": m, "restart_min": t_min, "restart_max": min(t_max, hi)}
        if kind == "dpm_adaptive":
            grid, opts = end_levels(None, lo, hi), {"rtol": setting}
        elif kind in LEVEL_VARIANTS:
            grid, start = torch.cat([subject.ncsn_sigmas, subject.ncsn_sigmas.new_zeros(1)]), hi
        elif name == "continuous_langevin":
            grid = linear_sigmas(steps + 1, lo, hi)
        else:
            grid = karras_sigmas(steps, lo, hi)
        fn = Counted(view)
        x = sample(name, fn, start * torch.randn(shape, generator=g, dtype=dtype), grid.to(dtype),
                   generator=g, **opts)
    elif kind.startswith("annealed"):
        steps, sig = int(setting), subject.ncsn_sigmas
        eps = eps_for_schedule(float(sig[0] / sig[1]), float(sig[-1]), steps if kind == "annealed" else 5)
        lo, hi = subject.box
        fn = Counted(view)
        x0 = lo + (hi - lo) * torch.rand(shape, generator=g, dtype=dtype)
        x = annealed_langevin(fn, x0, sig.to(dtype), eps=eps, steps_per_sigma=steps, generator=g)
    else:
        fn, sde = Counted(subject.time_score), subject.sde
        if kind == "ode":
            x = ode(fn, shape, sde, rtol=setting, atol=setting, generator=g, dtype=dtype)
        else:
            sampler = {"euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion, "pc": pc}[kind]
            x = sampler(fn, shape, sde, n_steps=int(setting), generator=g, dtype=dtype)
    return x, fn.calls, time.process_time() - t0


def plan(subject: Subject, budgets: Sequence[int], long: dict[str, Sequence[int]], tols: Sequence[float],
         annealed: bool = True, rtols: Sequence[float] = ADAPTIVE_RTOLS) -> list[tuple[str, int | None, float]]:
    """(sampler, budget, setting) of every run on ``subject`` (budget None: the tolerance ladders of the
    ODE and the adaptive DPM-Solver, or the one run over an NCSN model's own levels); the exact scores
    also get ddim and the ``_ncsn`` variants."""
    kinds = [k for k in OLD if annealed or not k.startswith("annealed")] + list(NEW)
    if subject.ncsn_range is not None:
        kinds += list(NCSN_VARIANTS)
    else:
        kinds = [k for k in kinds if k not in SCORE_ONLY]
    runs: list[tuple[str, int | None, float]] = []
    for kind in kinds:
        if kind in TOLERANCED:
            runs += [(kind, None, tol) for tol in (tols if kind == "ode" else rtols)]
            continue
        ladder = (*budgets, *long.get(kind, ()))
        for b in ladder:
            s = setting_for(kind, b, len(subject.ncsn_sigmas))
            if s is not None:
                runs.append((kind, b, s))
    if subject.model == "ncsn":
        runs += [(kind, None, len(subject.ncsn_sigmas)) for kind in LEVEL_VARIANTS]
    return runs


def label(kind: str, setting: float, n_levels: int) -> str:
    if kind.startswith("annealed"):
        return f"L x T = {n_levels} x {int(setting)}"
    if kind == "ode":
        return f"rtol = atol = {setting:.0e}"
    if kind == "dpm_adaptive":
        return f"rtol = {setting:g}"
    if kind == "restart":
        n, k, m = restart_plan(int(setting))
        return f"{n} steps + {k} x {m}"
    if kind in LEVEL_VARIANTS:
        return f"the {int(setting)} training levels"
    if kind in DENOISING:
        return f"{int(setting)} steps"
    return f"n_steps = {int(setting)}"


def sweep(subject: Subject, runs: list[tuple[str, int | None, float]], n: int, seed: int, quality: Quality,
          refused: list[dict[str, Any]], only: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every run of ``runs`` (of the samplers ``only``, default all) on ``subject``: one row each, with the
    quality of its samples in data space (a setting the sampler refuses, e.g. VP reverse diffusion with
    beta_max dt >= 1, goes to ``refused``)."""
    rows = []
    for kind, budget, setting in runs:
        if only is not None and kind not in only:
            continue
        try:
            x, nfe, secs = run_sampler(subject, kind, setting, n, seed)
        except ConfigError as e:
            refused.append({"data": subject.data, "model": subject.model, "sampler": kind, "budget": budget,
                            "setting": setting, "error": str(e)})
            print(f"  {subject.data:10s} {subject.model:8s} {kind:19s} refused: {e}", flush=True)
            continue
        row = {"data": subject.data, "model": subject.model, "sampler": kind,
               "family": "old" if kind in OLD else "new", "budget": budget if budget is not None else nfe,
               "setting": setting, "label": label(kind, setting, len(subject.ncsn_sigmas)), "nfe": nfe,
               **quality(subject.to_data(x)), "seconds": secs}
        rows.append(row)
        shown = (f"MMD2 {row['mmd2']:9.2e}  modes {[round(v, 3) for v in row['mode_weights']]}" if "mmd2" in row
                 else f"P {row['precision']:.3f} R {row['recall']:.3f} conf {row['confidence']:.3f}")
        print(f"  {subject.data:10s} {subject.model:8s} {kind:19s} {row['label']:20s} NFE {nfe:5d}  {shown}  "
              f"{secs:5.1f}s", flush=True)
    return rows


def toy_quality(mix: Any, fresh: torch.Tensor) -> Quality:
    """MMD^2 to ``fresh`` mixture samples and the mode weights; the bar: MMD^2 < MMD_GOOD and every
    weight within MODE_GOOD (non-finite samples: NaN, bar missed)."""
    def quality(x: torch.Tensor) -> dict[str, Any]:
        x = x.to(fresh.dtype)
        finite = bool(torch.isfinite(x).all())
        value = mmd(x, fresh, bandwidth=MMD_BANDWIDTH) if finite else math.nan
        w = mode_weights(x, mix.means.to(x.dtype)).tolist() if finite else [math.nan] * len(mix.weights)
        err = max(abs(a - b) for a, b in zip(w, mix.weights.tolist(), strict=True))
        return {"mmd2": value, "mode_weights": w, "mode_error": err,
                "good": bool(finite and value < MMD_GOOD and err < MODE_GOOD)}

    return quality


def digits_quality(digits: Digits) -> Quality:
    """Precision and recall against the held-out digits (k = 3) and the classifier's mean confidence,
    of samples clamped to [0, 1] as ``scorematch sample`` does."""
    def quality(x: torch.Tensor) -> dict[str, Any]:
        if not bool(torch.isfinite(x).all()):
            return {"precision": math.nan, "recall": math.nan, "confidence": math.nan}
        x = x.float().clamp(0, 1)
        p, r = precision_recall(digits.test, x, k=3)
        return {"precision": p, "recall": r, "confidence": digits.confidence(x)}

    return quality


# --------------------------------------------------------------------------- the runs


def toy_part(args: argparse.Namespace, budgets: Sequence[int], long: dict[str, Sequence[int]], tols: Sequence[float],
             rtols: Sequence[float],
             subjects_meta: list[dict[str, Any]], refused: list[dict[str, Any]]
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    for name in args.toys:
        mix = toy(name)
        fresh = mix.sample(args.n, torch.Generator().manual_seed(args.seed + 1000)).double()
        null = [mmd(mix.sample(args.n, torch.Generator().manual_seed(args.seed + 3000 + k)).double(), fresh,
                    bandwidth=MMD_BANDWIDTH) for k in range(5)]
        mean = sum(null) / len(null)
        sd = math.sqrt(sum((v - mean) ** 2 for v in null) / (len(null) - 1))
        baselines[name] = {"null_mmd2": null, "mean": mean, "sd": sd, "true_mode_weights": mix.weights.tolist()}
        quality = toy_quality(mix, fresh)
        makers = [("analytic", lambda name=name: analytic(name, args.seed))]
        makers += [(k, lambda name=name, k=k: trained_toy(name, k, args.train_steps, args.seed))
                   for k in args.kinds if k != "edm"]
        if "edm" in args.kinds:
            makers.append(("edm", lambda name=name: edm_toy(name, args.train_steps, args.seed)))
        saved = set() if args.saved is None else {(s["data"], s["model"]) for s in args.saved["subjects"]}
        for model, make in makers:
            if (name, model) in saved:  # --append: measured by the earlier rerun
                continue
            subject = make()
            subjects_meta.append(describe(subject))
            print(f"{name} {subject.model}: {subject.note} ({subject.train_seconds:.0f} s)", flush=True)
            rows += sweep(subject, plan(subject, budgets, long, tols, rtols=rtols), args.n, args.seed, quality, refused,
                          args.samplers)
            save_rerun(args, subjects_meta, refused, rows)
    return rows, baselines


def digits_part(args: argparse.Namespace, budgets: Sequence[int], long: dict[str, Sequence[int]],
                tols: Sequence[float], rtols: Sequence[float],
                subjects_meta: list[dict[str, Any]], refused: list[dict[str, Any]]
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    digits = digits_split(args.seed, args.digits_test)
    quality = digits_quality(digits)
    n = len(digits.test)
    g = torch.Generator().manual_seed(args.seed)
    real = digits.train[torch.randperm(len(digits.train), generator=g)[:n]]
    noise = torch.rand(n, 1, 8, 8, generator=g)
    reference = {"real": quality(real), "noise": quality(noise), "n": n, "n_train": len(digits.train)}
    print(f"digits: {len(digits.train)} training, {n} held-out; real {reference['real']}, noise {reference['noise']}",
          flush=True)
    rows: list[dict[str, Any]] = []
    for kind in args.digits_kinds:
        subject = trained_digits(digits, kind, args.digits_steps, args.seed)
        subjects_meta.append(describe(subject))
        print(f"digits {kind}: {subject.note} ({subject.train_seconds:.0f} s)", flush=True)
        rows += sweep(subject, plan(subject, budgets, long, tols, annealed=kind in ("ncsn", "edm"), rtols=rtols), n,
                      args.seed, quality, refused, args.samplers)
        save_rerun(args, subjects_meta, refused, args.toy_rows + rows)
    return rows, reference


def describe(subject: Subject) -> dict[str, Any]:
    v = subject.view
    return {"data": subject.data, "model": subject.model, "note": subject.note,
            "train_seconds": subject.train_seconds, "sigma_min": float(v.sigma_min), "sigma_max": float(v.sigma_max),
            "prior_std": float(v.prior_std), "sde": type(subject.sde).__name__,
            "ncsn_levels": len(subject.ncsn_sigmas), "ncsn_sigma_1": float(subject.ncsn_sigmas[0]),
            "ncsn_sigma_L": float(subject.ncsn_sigmas[-1]), **subject.info}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="samples per run (2-D toys)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=2000, help="training steps of the 2-D models")
    p.add_argument("--toys", nargs="+", default=list(TOYS), choices=TOYS)
    p.add_argument("--kinds", nargs="*", default=list(MODEL_KINDS), choices=MODEL_KINDS,
                   help="model kinds trained on the toys")
    p.add_argument("--no-digits", action="store_true", help="skip the digits U-Nets")
    p.add_argument("--digits-kinds", nargs="*", default=list(MODEL_KINDS), choices=MODEL_KINDS)
    p.add_argument("--digits-steps", type=int, default=3000)
    p.add_argument("--digits-test", type=int, default=297, help="held-out digits (= samples per digits run)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 samples, 30 training steps, budgets 10 and 20, tiny digits part")
    p.add_argument("--samplers", nargs="+", choices=[*OLD, *NEW, *NCSN_VARIANTS, *LEVEL_VARIANTS],
                   help="run only these samplers (default: all)")
    p.add_argument("--merge", type=Path, default=None,
                   help="with --samplers: a previous nfe_quality.json of the same settings whose other samplers' rows "
                        "are kept (the rerun samplers' rows replace theirs; rows of both are compared first)")
    p.add_argument("--merge-saved", action="store_true",
                   help="with --merge: sample nothing, merge the rows an earlier rerun saved in "
                        "OUT/nfe_quality_rerun.json")
    p.add_argument("--append", action="store_true",
                   help="with --merge: keep the models an earlier rerun saved in OUT/nfe_quality_rerun.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.train_steps, args.digits_steps, args.digits_test = 200, 30, 5, 40
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    saved_path = args.out / "nfe_quality_rerun.json"
    args.saved = json.loads(saved_path.read_text()) if args.append and saved_path.exists() else None
    if args.merge_saved:
        if args.merge is None:
            raise SystemExit("--merge-saved needs --merge OLD.json")
        saved = json.loads((args.out / "nfe_quality_rerun.json").read_text())
        payload = merge(json.loads(args.merge.read_text()), saved)
        write(payload, args.out)
        return payload
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    quick = args.quick
    budgets, long, tols, rtols = ((10, 20), {}, (1e-2,), (0.1,)) if quick else (BUDGETS, LONG, ODE_TOLS, ADAPTIVE_RTOLS)
    subjects: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    args.meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": args.threads, "n": args.n,
                 "seed": args.seed, "train_steps": args.train_steps, "budgets": list(budgets), "t0": t0, "c0": c0,
                 "adaptive_rtols": list(rtols), "digits_adaptive_rtols": None, "digits_budgets": None}
    rows, baselines = toy_part(args, budgets, long, tols, rtols, subjects, refused)
    args.toy_rows = rows
    digits_ref = None
    if not args.no_digits:
        d_budgets, d_long, d_tols, d_rtols = (((10,), {}, (1e-2,), (0.1,)) if quick
                                              else (DIGITS_BUDGETS, DIGITS_LONG, DIGITS_TOLS, DIGITS_ADAPTIVE_RTOLS))
        args.meta.update(digits_budgets=sorted({*d_budgets, *(b for v in d_long.values() for b in v)}),
                         digits_adaptive_rtols=list(d_rtols))
        digit_rows, digits_ref = digits_part(args, d_budgets, d_long, d_tols, d_rtols, subjects, refused)
        rows += digit_rows
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version(),
            "threads": args.threads, "n": args.n, "seed": args.seed, "train_steps": args.train_steps,
            "digits_steps": args.digits_steps, "quick": quick, "budgets": list(budgets), "long_budgets": long,
            "digits_budgets": (None if args.no_digits
                               else sorted({*d_budgets, *(b for v in d_long.values() for b in v)})),
            "digits_long_budgets": None if args.no_digits else d_long,
            "adaptive_rtols": list(rtols),
            "digits_adaptive_rtols": None if args.no_digits else list(d_rtols),
            "mmd_good": MMD_GOOD, "mode_good": MODE_GOOD, "mmd_bandwidth": MMD_BANDWIDTH,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    payload = {"meta": meta, "baselines": baselines, "digits_reference": digits_ref, "subjects": subjects,
               "refused": refused, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge is not None:  # the rerun's rows (with those --append kept) first, then the merged payload
        save_rerun(args, subjects, refused, rows)
        payload = merge(json.loads(args.merge.read_text()), json.loads(saved_path.read_text()))
    write(payload, args.out)
    print(f"wrote {args.out / 'nfe_quality.md'}, nfe_quality_summary.md and .json "
          f"({meta['seconds']:.0f} s wall, {meta['cpu_seconds']:.0f} s CPU)")
    return payload


if __name__ == "__main__":
    main()
