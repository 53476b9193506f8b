"""Reruns of some samplers of ``benchmarks.nfe_quality`` merged into a full run's results: the rows a
rerun saves after every model (``--merge``, ``--append``, ``--merge-saved``), the merge that keeps
the other samplers' rows, and the writing of the result files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import nfe_report
from scorematch.errors import ConfigError

__all__ = ["merge", "save_rerun", "write"]


def save_rerun(args: argparse.Namespace, subjects: list[dict[str, Any]], refused: list[dict[str, Any]],
               rows: list[dict[str, Any]]) -> None:
    """With --merge: the rows so far to nfe_quality_rerun.json after every model (a run stopped early
    keeps them; ``--merge-saved`` merges them), after those of the models an earlier rerun saved there
    with ``--append``."""
    if args.merge is None:
        return
    if args.saved is not None:
        done = {(s["data"], s["model"]) for s in subjects}
        subjects = [s for s in args.saved["subjects"] if (s["data"], s["model"]) not in done] + subjects
        rows = [r for r in args.saved["rows"] if (r["data"], r["model"]) not in done] + rows
        refused = [f for f in args.saved["refused"] if (f["data"], f["model"]) not in done] + refused
    meta = {k: v for k, v in args.meta.items() if k not in ("t0", "c0")}
    before = {"seconds": 0.0, "cpu_seconds": 0.0} if args.saved is None else args.saved["meta"]
    meta.update(seconds=before["seconds"] + time.perf_counter() - args.meta["t0"],
                cpu_seconds=before["cpu_seconds"] + time.process_time() - args.meta["c0"], partial=True,
                digits_steps=args.digits_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "subjects": subjects, "refused": refused, "rows": rows}
    (args.out / "nfe_quality_rerun.json").write_text(json.dumps(payload, indent=1) + "\n")


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the rows of each (data, model, sampler) ``new`` ran replaced by ``new``'s. Both must
    share their settings (n, seed, training steps, budgets; the digits' only where ``new`` ran digits);
    where both have a run (same model, sampler and NFE) the largest difference of its quality is
    recorded in ``meta["merged"]`` (0 when the models and samplers reproduce), with the samplers rerun
    and the date of the older rows."""
    same = ["n", "seed", "train_steps", "budgets", "threads"]
    if new["meta"].get("digits_budgets") is not None:
        same += ["digits_steps", "digits_budgets"]
    differ = [k for k in same if old["meta"].get(k) != new["meta"].get(k)]
    if differ:
        raise ConfigError(f"--merge: the runs differ in {', '.join(differ)}; merge runs of the same settings only")
    rerun = sorted({r["sampler"] for r in new["rows"]}, key=nfe_report.ORDER.index)
    key = ("data", "model", "sampler", "nfe")
    before = {tuple(r[k] for k in key): r for r in old["rows"]}
    gaps: dict[str, float] = {}
    for r in new["rows"]:
        o = before.get(tuple(r[k] for k in key))
        if o is None:
            continue
        metric = "precision" if r["data"] == "digits" else "mmd2"
        for m in (metric, "recall") if metric == "precision" else (metric,):
            gaps[m] = max(gaps.get(m, 0.0), abs(r[m] - o[m]))
    ran = {(r["data"], r["model"], r["sampler"]) for r in new["rows"]}
    kept = [r for r in old["rows"] if (r["data"], r["model"], r["sampler"]) not in ran]
    meta = {**old["meta"], "date": new["meta"]["date"], "torch": new["meta"]["torch"],
            "merged": {"older_rows_from": old["meta"]["date"], "rerun": rerun, "compared_runs": sum(
                1 for r in new["rows"] if tuple(r[k] for k in key) in before), "largest_difference": gaps,
                "rerun_seconds": new["meta"]["seconds"], "rerun_cpu_seconds": new["meta"]["cpu_seconds"]},
            **{k: new["meta"][k] for k in ("adaptive_rtols", "digits_adaptive_rtols")}}
    fresh = {(s["data"], s["model"]) for s in new["subjects"]}
    subjects = [s for s in old["subjects"] if (s["data"], s["model"]) not in fresh] + new["subjects"]
    return {**old, "meta": meta, "subjects": subjects, "rows": kept + new["rows"],
            "refused": [f for f in old.get("refused", []) if (f["data"], f["model"], f["sampler"]) not in ran]
            + new["refused"]}


def write(payload: dict[str, Any], out: Path) -> None:
    """The decisions, targets and the three result files of ``payload``."""
    payload["decisions"] = nfe_report.decisions(payload)
    payload["targets"] = nfe_report.targets(payload)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nfe_quality.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "nfe_quality.md").write_text(nfe_report.markdown(payload))
    (out / "nfe_quality_summary.md").write_text(nfe_report.summary(payload))
