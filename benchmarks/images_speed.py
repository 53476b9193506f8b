"""Speed of the image U-Net on a CPU: seconds per EDM training step per size, against the floor
(the bare forward and backward of the network), with the speed options: bfloat16 autocast,
channels_last memory format and torch.compile; and the cost of one sampling evaluation.

    python -m benchmarks.images_speed [--sizes tiny,small,base] [--batch 64] [--image 28] [--compile]

One thread, process CPU time (benchmarks.common.clock), median of a few repeats.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import edm_train_step, environment, fmt_ms, markdown_table, timeit, where, write
from scorematch.models.edm import EDMPrecond
from scorematch.models.unet import parameter_count, unet_config


def _train_step(model: torch.nn.Module, x: torch.Tensor, bf16: bool, channels_last: bool,
                compiled: torch.nn.Module | None = None) -> Any:
    """One EDM training step: loss, backward, gradient clipping, Adam."""
    net = compiled if compiled is not None else model
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return edm_train_step(model, net, x, bf16)


def _floor(model: torch.nn.Module, x: torch.Tensor) -> Any:
    """The bare forward and backward of the network: F(x, c_noise).sum().backward()."""
    c = torch.full((x.shape[0],), -0.3)

    def step() -> None:
        model.net(x, c).sum().backward()

    return step


def _sample_eval(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> Any:
    sigma = torch.full((x.shape[0],), 1.0)

    def step() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.score(x, sigma)

    return step


def run(sizes: list[str], batch: int, image: int, compile_: bool, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = EDMPrecond("UNet", unet_config(size, 1), sigma_data=0.31)
        x = torch.rand(batch, 1, image, image)
        kw = {"device": dev, "repeats": repeats, "warmup": 2, "max_seconds": 60.0}
        row: dict[str, Any] = {"size": size, "params": parameter_count(model)}
        row["floor_ms"] = timeit(_floor(model, x), **kw)
        row["step_fp32_ms"] = timeit(_train_step(model, x, False, False), **kw)
        row["step_bf16_ms"] = timeit(_train_step(model, x, True, False), **kw)
        model = model.to(memory_format=torch.channels_last)
        row["step_channels_last_ms"] = timeit(_train_step(model, x, False, True), **kw)
        model = model.to(memory_format=torch.contiguous_format)
        row["eval_fp32_ms"] = timeit(_sample_eval(model, x, False), **kw)
        row["eval_bf16_ms"] = timeit(_sample_eval(model, x, True), **kw)
        if compile_:
            compiled = torch.compile(model)
            t0 = time.process_time()
            _train_step(model, x, False, False, compiled)()
            row["compile_cpu_s"] = time.process_time() - t0
            row["step_compiled_ms"] = timeit(_train_step(model, x, False, False, compiled), **kw)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return report(rows, batch, image)


def report(rows: list[dict[str, Any]], batch: int, image: int) -> dict[str, Any]:
    """The results payload and its markdown table from the measured rows (one per size)."""
    env = environment(torch.device("cpu"))
    header = ["size", "parameters", "floor (fwd+bwd)", "step fp32", "step bf16", "step channels_last",
              "step compiled", "compile (CPU s)", "1 eval fp32", "1 eval bf16"]
    table = [[r["size"], f"{r['params'] / 1e6:.2f} M", fmt_ms(r["floor_ms"]), fmt_ms(r["step_fp32_ms"]),
              fmt_ms(r["step_bf16_ms"]), fmt_ms(r["step_channels_last_ms"]), fmt_ms(r.get("step_compiled_ms")),
              f"{r['compile_cpu_s']:.0f}" if "compile_cpu_s" in r else "", fmt_ms(r["eval_fp32_ms"]),
              fmt_ms(r["eval_bf16_ms"])] for r in rows]
    md = (f"Image U-Net speed, {where(env)}, torch {env['torch']}, 1 thread, {env['clock']}, median: one EDM "
          f"training step (loss, backward, clipping, Adam) on a batch of {batch} {image}x{image} images, the floor "
          "(bare forward + backward of the network) and one score evaluation of the batch (sampling).\n\n"
          + markdown_table(header, table))
    return {"environment": env, "batch": batch, "image": image, "rows": rows, "markdown": md}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small,base")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=28)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (inductor; minutes of CPU)")
    p.add_argument("--name", default="images_speed")
    p.add_argument("--rows", type=Path, help="write the results from rows printed by an earlier run (JSON lines)")
    a = p.parse_args(argv)
    if a.rows is not None:
        rows = [json.loads(line) for line in a.rows.read_text().splitlines() if line.startswith("{")]
        out = report(rows, a.batch, a.image)
    else:
        out = run(a.sizes.split(","), a.batch, a.image, a.compile, a.repeats)
    write(a.name, {k: v for k, v in out.items() if k != "markdown"}, out["markdown"])
    print(out["markdown"])


if __name__ == "__main__":
    main()
