"""`python -m benchmarks [--device cuda] [--quick] [--only NAME ...]`: every benchmark, results
under benchmarks/results/, then the tables of docs/benchmarks.md refreshed from them.

compare: scorematch next to torchebm, score-models, diffusers and k-diffusion (`pip install -e
'.[bench]'`, see `make bench-install`; absent peers are empty cells), scaling: cost against D and
N, objectives and samplers: scorematch next to the floor, likelihood: the exact probability-flow
ODE log p against the Hutchinson estimate, nfe_quality: sample quality per score evaluation of
every sampler on every model kind and the default sampler of each (CPU only, about half an hour),
image_metrics: the feature-space image metrics on real digits (CPU only),
tables: table generators and imputers on scikit-learn's bundled tables (CPU only).
"""

from __future__ import annotations

import argparse

from benchmarks import compare, image_metrics, likelihood, nfe_quality, objectives, readme, samplers, scaling, tables

ALL = ["compare", "scaling", "objectives", "samplers", "likelihood", "nfe_quality", "image_metrics", "tables"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every benchmark (default 1)")
    p.add_argument("--quick", action="store_true", help="skip the slowest reference (ISM loop at D=784)")
    p.add_argument("--only", nargs="+", choices=ALL, default=ALL)
    args = p.parse_args()
    common = ["--device", args.device, "--threads", str(args.threads)]
    if "compare" in args.only:
        compare.main(common)
    if "scaling" in args.only:
        scaling.main(common)
    if "objectives" in args.only:
        objectives.main(common + (["--quick"] if args.quick else []))
    if "samplers" in args.only:
        samplers.main(common)
    if "likelihood" in args.only:
        likelihood.main(common)
    if "image_metrics" in args.only and args.device == "cpu":
        image_metrics.main(["--threads", str(args.threads)])
    if "nfe_quality" in args.only and args.device == "cpu":
        nfe_quality.main(["--threads", str(args.threads)])
    if "tables" in args.only and args.device == "cpu":
        tables.main([])
    if args.device == "cpu":
        readme.main()


if __name__ == "__main__":
    main()
