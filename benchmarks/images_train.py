"""Train the image U-Net under a CPU-time budget, saving EMA weights at CPU-time marks.

The training half of the image benchmark (``benchmarks/images.py`` evaluates what this writes):

    python -m benchmarks.images_train --data mnist:DIR --objective edm --size tiny \
        --budget-min 30 --marks 5,10,20,30 --out /tmp/images-bench/mnist-edm-tiny

Recipe: Adam (lr, betas 0.9/0.999), linear learning-rate warm-up over ``--warmup`` steps,
gradient-norm clipping at 1, several EMAs of the weights at once, each given as a half-life
in images seen (Karras et al. 2022: beta = 0.5^(batch / half_life) per step, the half-life
ramped up as min(half_life, 0.05 * images seen) early on). One CPU thread; the budget and the
marks are process CPU time (time.process_time), so time the OS gave other processes on a
shared machine is not counted.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from scorematch.data.images import load_digits, load_mnist
from scorematch.files import ensure_folder, write_json
from scorematch.models.base import model_spec
from scorematch.models.edm import EDMPrecond, estimate_sigma_data
from scorematch.models.unet import UNet, parameter_count, unet_config
from scorematch.objectives import edm, ncsn_per_sample, sde_dsm
from scorematch.objectives.labels import drop_labels


def load(spec: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train labels, held-out x, held-out labels) in [0, 1]: ``digits`` (sklearn 8x8,
    1500 / 297 by a fixed permutation) or ``mnist:DIR`` (the IDX train and t10k files)."""
    if spec == "digits":
        x, y = load_digits()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        x, y = x[perm], y[perm]
        return x[:1500], y[:1500], x[1500:], y[1500:]
    if spec.startswith("mnist:"):
        root = spec.split(":", 1)[1]
        x, y = load_mnist(root, "train")
        xt, yt = load_mnist(root, "test")
        return x, y, xt, yt
    raise SystemExit(f"unknown data {spec!r}: use digits or mnist:DIR")


def edm_settings(x: torch.Tensor) -> dict[str, float]:
    """sigma_data (pooled std), P_mean = -1.2 + ln(sigma_data / 0.5) and EDM's sampling range
    0.002 .. 80 moved to the data's scale by sigma_data / 0.5."""
    sd = estimate_sigma_data(x)
    return {"sigma_data": sd, "p_mean": -1.2 + math.log(sd / 0.5), "p_std": 1.2,
            "sigma_min": 0.002 * sd / 0.5, "sigma_max": 80 * sd / 0.5}


def build(objective: str, size: str, channels: int, settings: dict[str, Any], **kw: Any) -> torch.nn.Module:
    """The U-Net of ``size`` for ``objective``: inside EDMPrecond (edm), sigma-conditioned (ncsn),
    time-conditioned (sde)."""
    if objective == "edm":
        return EDMPrecond("UNet", unet_config(size, channels, **kw), sigma_data=settings["sigma_data"])
    return UNet(**unet_config(size, channels, conditioning="sigma" if objective == "ncsn" else "time", **kw))


def loss_fn(objective: str, settings: dict[str, Any]):
    if objective == "edm":
        kw = {k: settings[k] for k in ("sigma_data", "p_mean", "p_std")}
        return lambda m, x, g, y=None: edm(m, x, generator=g, labels=y, **kw)
    if objective == "ncsn":
        sig = torch.tensor(settings["sigmas"])
        return lambda m, x, g: ncsn_per_sample(m, x, sig, generator=g)[0].mean()
    from scorematch.sde import get_sde

    sde = get_sde("vp")
    return lambda m, x, g: sde_dsm(m, x, sde, generator=g)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--objective", default="edm", choices=["edm", "ncsn", "sde"])
    p.add_argument("--size", default="tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--half-lives", default="10000,30000,100000", help="EMA half-lives in images")
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--marks", default="5,10,20,30", help="CPU minutes at which to save the EMAs")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-conditional", action="store_true",
                   help="train on the labels (10%% dropped to the null label, for guidance)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    out = ensure_folder(a.out)
    x, y, _, _ = load(a.data)
    classes = int(y.max()) + 1 if a.class_conditional else 0
    if classes and a.objective != "edm":
        raise SystemExit("--class-conditional: edm only")
    settings: dict[str, Any] = edm_settings(x)
    if a.objective == "ncsn":
        from scorematch.noise import geometric_sigmas

        flat = x.flatten(1)[:2000]
        settings["sigmas"] = geometric_sigmas(float(torch.cdist(flat, flat).max()), 0.01, 232).tolist()
    model = build(a.objective, a.size, x.shape[1], settings, dropout=a.dropout,
                  **({"n_classes": classes} if classes else {}))
    loss = loss_fn(a.objective, settings)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    half_lives = [float(h) for h in a.half_lives.split(",")]
    emas = [[q.detach().clone() for q in model.parameters()] for _ in half_lives]
    marks = sorted(float(m) * 60 for m in a.marks.split(","))
    g = torch.Generator().manual_seed(a.seed)
    gd = torch.Generator().manual_seed(a.seed + 1)
    meta: dict[str, Any] = {"args": vars(a), "settings": settings, "params": parameter_count(model),
                            "spec": {"objective": a.objective, "size": a.size, "channels": x.shape[1]},
                            "model": model_spec(model),
                            "checkpoints": []}
    t0, w0, step, seen = time.process_time(), time.perf_counter(), 0, 0
    log = open(Path(out) / "train.log", "a", buffering=1)  # noqa: SIM115
    while marks:
        idx = torch.randint(len(x), (a.batch,), generator=gd)
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            if classes:
                value = loss(model, x[idx], g, drop_labels(y[idx], 0.1, classes, generator=g))
            else:
                value = loss(model, x[idx], g)
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, seen = step + 1, seen + a.batch
        with torch.no_grad():
            cur = [q.detach() for q in model.parameters()]
            for hl, avg in zip(half_lives, emas, strict=True):
                beta = 0.5 ** (a.batch / max(min(hl, 0.05 * seen), 1e-8))
                torch._foreach_lerp_(avg, cur, 1 - beta)
        cpu = time.process_time() - t0
        if step % 50 == 0:
            print(f"step {step} loss {value.item():.4f} cpu {cpu:.0f}s wall {time.perf_counter() - w0:.0f}s",
                  file=log)
        if cpu >= marks[0]:
            mark = marks.pop(0)
            for hl, avg in zip(half_lives, emas, strict=True):
                names = [n for n, _ in model.named_parameters()]
                save_file({n: v.contiguous() for n, v in zip(names, avg, strict=True)},
                          str(Path(out) / f"ema-{int(mark // 60)}min-hl{int(hl)}.safetensors"))
            meta["checkpoints"].append({"cpu_min": mark / 60, "step": step, "images": seen,
                                        "cpu_s": cpu, "wall_s": time.perf_counter() - w0})
            write_json(Path(out) / "meta.json", meta)
            print(f"checkpoint {mark / 60:g} CPU-min at step {step}", file=log)
    log.close()
    print(f"done: {step} steps", file=sys.stderr)


if __name__ == "__main__":
    main()
