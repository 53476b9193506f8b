"""Post-hoc EMA on a real image run: one training with power-EMA snapshots, then the EMA of several
lengths reconstructed afterwards (`scorematch ema`) and each evaluated with the image metrics.

    python -m benchmarks.posthoc_ema [--steps 2000] [--data digits] [--threads 1]

Trains EDM on the data (default scikit-learn's 8x8 digits; `--data mnist:DIR` for 28x28) with
`--posthoc-ema-every` 100, then for each sigma_rel writes the post-hoc EMA run and evaluates it
(`scorematch eval --n 1000`, the run's default sampler), next to the run's own EMA (decay 0.999).
Results in benchmarks/results/posthoc_ema.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import environment, markdown_table, where, write
from scorematch.cli import main as cli
from scorematch.run.reporting.evaluate import evaluate

SIGMA_RELS = (0.01, 0.03, 0.05, 0.10, 0.15, 0.25)
METRICS = ("fd", "kid", "precision", "recall", "confident")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--data", default="digits")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="samples per evaluation")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="posthoc-ema-"))
    os.environ.setdefault("SCOREMATCH_CACHE", str(tmp / "cache"))
    run = tmp / "run"
    t0 = time.process_time()
    assert cli(["train", "--data", args.data, "--objective", "edm", "--steps", str(args.steps), "--batch-size", "64",
                "--posthoc-ema-every", "100", "--no-progress", "--device", "cpu", "--out", str(run)]) == 0
    train_seconds = time.process_time() - t0
    rows: dict[str, Any] = {}
    folders = {"run's EMA (decay 0.999)": run}
    for s in SIGMA_RELS:
        t0 = time.process_time()
        assert cli(["ema", str(run), "--sigma-rel", str(s), "--out", str(tmp / f"ema{s}")]) == 0
        print(f"sigma_rel {s}: reconstructed in {time.process_time() - t0:.2f} s", flush=True)
        folders[f"post-hoc sigma_rel {s}"] = tmp / f"ema{s}"
    for name, folder in folders.items():
        res = evaluate(folder, n=args.n, seed=0, likelihood=False, save=False)
        m = res["image_metrics"]
        rows[name] = {k: {"value": m[k]["value"], "se": m[k]["se"], "baseline": m[k]["baseline"]} for k in METRICS}
        print(name, {k: round(rows[name][k]["value"], 3) for k in METRICS}, flush=True)
    env = environment(torch.device("cpu"))
    real = next(iter(rows.values()))
    md = (f"EDM on {args.data}, {args.steps} steps of 64, snapshots every 100 steps; trained in "
          f"{train_seconds / 60:.1f} CPU-minutes on {where(env)}, torch {env['torch']}, {env['threads']} thread(s). "
          f"{args.n} samples per row with the run's default sampler; real vs real: FD "
          f"{real['fd']['baseline']:.3g}, precision {real['precision']['baseline']:.3g}, recall "
          f"{real['recall']['baseline']:.3g}, confident {real['confident']['baseline']:.3g}.\n\n")
    table = [[name] + [f"{m[k]['value']:.3g} ± {m[k]['se']:.2g}" for k in METRICS] for name, m in rows.items()]
    md += markdown_table(["weights", "FD", "KID", "precision", "recall", "confident"], table)
    write("posthoc_ema", {"environment": env, "steps": args.steps, "data": args.data,
                          "train_seconds": train_seconds, "rows": rows}, md)
    return rows


if __name__ == "__main__":
    main()
