"""Soak: many short training runs and sampling calls back to back, in one process and across
processes; memory must stay flat and no file handle may leak.

    python -m benchmarks.soak [--runs 40] [--procs 6]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import environment, markdown_table, write


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def in_process(runs: int) -> list[dict[str, float]]:
    import scorematch
    from scorematch.run.sampling.generate import generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            objective = ("dsm", "ssm_vr", "ncsn", "ism")[i % 4]
            res = scorematch.train(data="gmm2d", objective=objective, steps=30, batch_size=128, n_data=500,
                                   checkpoint_every=10, progress=False, seed=i, out=Path(tmp) / f"r{i}")
            model = scorematch.load(res.run_dir)
            generate(model, model.run_info, 500, seed=i, **({"n_steps": 50} if objective != "ncsn" else {}))
            del res, model
            gc.collect()
            rows.append({"run": i + 1, "rss_mib": rss_mib(), "open_fds": open_fds()})
    return rows


def across_processes(procs: int) -> list[dict[str, float]]:
    rows = []
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(procs):
            run = Path(tmp) / f"p{i}"
            for cmd in (["train", "--data", "gmm2d", "--objective", "dsm", "--steps", "30", "--n-data", "500",
                         "--no-progress", "--out", str(run)],
                        ["sample", str(run), "--n", "300", "--n-steps", "50", "--out", str(run / "s.npz")]):
                subprocess.run([sys.executable, "-m", "scorematch", *cmd], check=True, env=env,
                               capture_output=True)
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            leftovers = [p.name for p in run.rglob(".*.tmp")]
            rows.append({"process": i + 1, "max_child_rss_mib": children, "temp_files_left": len(leftovers)})
    return rows


def run(runs: int, procs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    one = in_process(runs)
    many = across_processes(procs)
    first, last = one[min(4, len(one) - 1)], one[-1]
    growth = (last["rss_mib"] - first["rss_mib"]) / max(1, last["run"] - first["run"])
    env = environment(torch.device("cpu"))
    summary = {
        "runs_in_process": runs,
        "rss_after_run_5_mib": first["rss_mib"],
        "rss_after_last_run_mib": last["rss_mib"],
        "rss_growth_per_run_mib": growth,
        "open_fds_first_last": [one[0]["open_fds"], last["open_fds"]],
        "processes": procs,
        "max_child_rss_mib": max(r["max_child_rss_mib"] for r in many),
        "temp_files_left": sum(r["temp_files_left"] for r in many),
    }
    md = (f"Soak, {env['date']}, torch {env['torch']}, CPU: {runs} train+load+sample cycles in one process "
          f"(dsm, ssm_vr, ncsn, ism in turn), then {procs} CLI train+sample process pairs.\n\n"
          + markdown_table(["measure", "value"], [[k, v] for k, v in summary.items()]))
    return {"environment": env, "summary": summary, "in_process": one, "across_processes": many, "markdown": md}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--procs", type=int, default=6)
    args = p.parse_args(argv)
    res = run(args.runs, args.procs)
    write("soak", res, res["markdown"])
    print(res["markdown"])


if __name__ == "__main__":
    main()
