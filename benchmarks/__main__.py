"""`python -m benchmarks [--device cuda] [--quick]`: every benchmark, results under benchmarks/results/."""

from __future__ import annotations

import argparse

import torch

from benchmarks import objectives, samplers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="skip the slowest reference (ISM loop at D=784)")
    args = p.parse_args()
    device = torch.device(args.device)
    objectives.main(["--device", args.device] + (["--quick"] if args.quick else []))
    samplers.main(["--device", str(device)])


if __name__ == "__main__":
    main()
