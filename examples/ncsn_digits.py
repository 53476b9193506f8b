"""NCSN on scikit-learn's 8x8 digits, on CPU in about ten minutes.

Trains a noise-conditional U-Net with the multi-scale DSM objective (``scorematch.train``,
objective "ncsn"), draws samples with annealed Langevin dynamics (Algorithm 1 of Song & Ermon
2019, with the NCSNv2 schedule that ``train`` proposes from the data), and asks a classifier
trained on the real digits (scikit-learn LogisticRegression) what it sees: the fraction of
samples it labels with probability > 0.9, and the histogram of the labels over the ten classes.
For scale the same numbers are printed for real digits (which the classifier
was fitted on: the ceiling) and for uniform-noise images (the floor).

Writes OUT/ncsn_digits_samples.png (a 10 x 10 grid of samples), OUT/ncsn_digits_annealing.png
(the annealing trajectory of 8 chains, one row per noise level) and OUT/ncsn_digits.json (the
numbers, the config and the wall time); OUT is docs/figures unless ``--out`` says otherwise.

    python examples/ncsn_digits.py --threads 1          # the full run (~10 min on a 2-core CPU)
    python examples/ncsn_digits.py --tiny --out /tmp/d  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import scorematch
from scorematch.data import load_digits
from scorematch.plotting import annealing_rows, save_image_grid
from scorematch.run.sampling.generate import generate

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
CONFIDENT = 0.9


def classifier() -> LogisticRegression:
    """Logistic regression on all 1797 real digits (pixels / 16, flattened to 64 values)."""
    x, y = load_digits()
    clf = LogisticRegression(max_iter=5000)
    clf.fit(x.flatten(1).numpy(), y.numpy())
    return clf


def judge(clf: LogisticRegression, images: torch.Tensor) -> dict:
    """Confident fraction (max class probability > 0.9), label histogram, mean max probability."""
    prob = clf.predict_proba(images.flatten(1).double().numpy())
    top, label = prob.max(1), prob.argmax(1)
    hist = np.bincount(label, minlength=10)
    confident_hist = np.bincount(label[top > CONFIDENT], minlength=10)
    return {
        "confident_fraction": float((top > CONFIDENT).mean()),
        "mean_max_prob": float(top.mean()),
        "class_histogram": hist.tolist(),
        "confident_class_histogram": confident_hist.tolist(),
        "classes_present": int((hist > 0).sum()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--steps-per-sigma", type=int, default=5)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=FIGURES, help="folder for the PNG and the JSON")
    p.add_argument("--tiny", action="store_true",
                   help="a few seconds: 10 steps of a narrow U-Net, 20 samples (numbers meaningless)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.steps, args.batch_size, args.base_channels, args.n_samples, args.sample_every = 10, 16, 8, 20, 5

    config = {
        "data": "digits", "objective": "ncsn", "model": "auto", "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "base_channels": args.base_channels,
        "steps_per_sigma": args.steps_per_sigma, "sample_every": args.sample_every,
        "seed": args.seed, "device": "cpu", "progress": False, "log_every": 50,
        "checkpoint_every": max(args.steps, 1),
    }
    tmp = None
    run = args.run
    if run is None:
        tmp = tempfile.TemporaryDirectory(prefix="ncsn_digits_")
        run = Path(tmp.name) / "run"

    t0, cpu0 = time.perf_counter(), time.process_time()
    result = scorematch.train(out=run, **config)
    t_train = time.perf_counter() - t0
    model = scorematch.load(run)  # EMA weights, with the run's data range and noise schedule
    schedule = model.run_info["schedule"]
    t1 = time.perf_counter()
    samples = generate(model, model.run_info, args.n_samples, sampler="annealed", seed=args.seed)
    t_sample = time.perf_counter() - t1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    clf = classifier()
    x, _ = load_digits()
    real = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[: args.n_samples]]
    noise = torch.rand(args.n_samples, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    report = {"samples": judge(clf, samples), "real_digits": judge(clf, real),
              "uniform_noise": judge(clf, noise)}

    args.out.mkdir(parents=True, exist_ok=True)
    png = save_image_grid(samples[:100], args.out / "ncsn_digits_samples.png", nrow=10, upscale=4)
    _, trajectory = generate(model, model.run_info, 8, sampler="annealed", seed=args.seed, return_trajectory=True)
    annealing_rows(trajectory.clamp(0, 1), path=args.out / "ncsn_digits_annealing.png", sigmas=schedule["sigmas"])
    out = {
        "config": config,
        "schedule": {"sigma_1": schedule["sigmas"][0], "sigma_L": schedule["sigmas"][-1],
                     "L": len(schedule["sigmas"]), "eps": schedule["eps"],
                     "steps_per_sigma": schedule["steps_per_sigma"]},
        "final_loss": result.final_loss,
        "n_samples": args.n_samples,
        "confidence_threshold": CONFIDENT,
        **report,
        "wall_time_s": {"train": round(t_train, 1), "sample": round(t_sample, 1), "total": round(wall, 1)},
        "cpu_time_s": round(cpu, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "ncsn_digits.json").write_text(json.dumps(out, indent=2) + "\n")

    print(f"schedule: sigma_1 = {schedule['sigmas'][0]:.3g}, sigma_L = {schedule['sigmas'][-1]:.3g}, "
          f"L = {len(schedule['sigmas'])}, eps = {schedule['eps']:.3g}, T = {schedule['steps_per_sigma']}")
    print(f"trained {result.steps} steps in {t_train:.0f} s, sampled {args.n_samples} in {t_sample:.0f} s "
          f"(total {wall:.0f} s)")
    print(f"{'':<14} {'confident':>9} {'mean p':>7}  class histogram (0..9)")
    for name, r in report.items():
        print(f"{name:<14} {r['confident_fraction']:>9.3f} {r['mean_max_prob']:>7.3f}  {r['class_histogram']}")
    print(f"wrote {png} and {args.out / 'ncsn_digits.json'}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
