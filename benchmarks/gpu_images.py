"""The image U-Net on a CUDA GPU: seconds per EDM training step, training images per second,
sampling images per second (one Heun step = two score evaluations) and peak memory, per size,
in float32 and under bfloat16 autocast, eager and optionally with torch.compile and channels_last.

    python -m benchmarks.gpu_images [--sizes tiny,small,base] [--batch 256] [--image 28] [--compile]

Without CUDA it says so and exits with status 0 (CI never has a GPU). Wall time with
torch.cuda.synchronize around each timed call, median of the repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks.common import edm_train_step, environment, markdown_table, timeit, where, write
from scorematch.models.edm import EDMPrecond
from scorematch.models.unet import parameter_count, unet_config


def _heun_step(net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> Any:
    s1, s2 = torch.full((x.shape[0],), 2.0, device=x.device), torch.full((x.shape[0],), 1.5, device=x.device)

    def step() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            d = net(x, s1)
            net(x + 0.5 * d, s2)

    return step


def run(sizes: list[str], batch: int, image: int, channels: int, compile_: bool, repeats: int) -> dict[str, Any]:
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rows = []
    for size in sizes:
        for bf16 in (False, True):
            variants: list[tuple[str, bool]] = [("eager", False)] + ([("compiled", True)] if compile_ else [])
            for variant, comp in variants:
                torch.manual_seed(0)
                model = EDMPrecond("UNet", unet_config(size, channels), sigma_data=0.5).to(dev)
                x = torch.rand(batch, channels, image, image, device=dev)
                if comp:
                    model = model.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                net = torch.compile(model) if comp else model
                t0 = time.perf_counter()
                edm_train_step(model, net, x, bf16)()
                torch.cuda.synchronize(dev)
                first_s = time.perf_counter() - t0
                torch.cuda.reset_peak_memory_stats(dev)
                step_ms = timeit(edm_train_step(model, net, x, bf16), dev, repeats=repeats, warmup=3)
                mem = torch.cuda.max_memory_allocated(dev) / 2**20
                heun_ms = timeit(_heun_step(net, x, bf16), dev, repeats=repeats, warmup=3)
                row = {"size": size, "params": parameter_count(model), "precision": "bf16" if bf16 else "fp32",
                       "variant": variant + (" + channels_last" if comp else ""), "first_step_s": first_s,
                       "step_ms": step_ms, "train_images_per_s": batch / step_ms * 1e3,
                       "sample_images_per_s_per_heun_step": batch / heun_ms * 1e3, "peak_memory_mib": mem}
                rows.append(row)
                print(row, flush=True)
    env = environment(dev)
    table = [[r["size"], f"{r['params'] / 1e6:.2f} M", r["precision"], r["variant"], f"{r['step_ms']:.1f} ms",
              f"{r['train_images_per_s']:.0f}", f"{r['sample_images_per_s_per_heun_step']:.0f}",
              f"{r['peak_memory_mib']:.0f}", f"{r['first_step_s']:.1f}"] for r in rows]
    md = (f"Image U-Net on {where(env)}, torch {env['torch']}, batch {batch} of {channels}x{image}x{image}, "
          "wall time, median: EDM training step, training images/s, sampling images/s per Heun step "
          "(2 evaluations), peak memory of a training step, first step (with compilation).\n\n"
          + markdown_table(["size", "parameters", "precision", "variant", "step", "train img/s",
                            "sample img/s per Heun step", "peak MiB", "first step s"], table))
    return {"environment": env, "rows": rows, "markdown": md}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small,base")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--name", default="gpu_images")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this where a GPU is at hand)", file=sys.stderr)
        return 0
    out = run(a.sizes.split(","), a.batch, a.image, a.channels, a.compile, a.repeats)
    write(a.name, {k: v for k, v in out.items() if k != "markdown"}, out["markdown"])
    print(out["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
