"""NCSN vs single-sigma DSM on 2-D toys, at the same training budget.

For each toy, two models are trained with ``scorematch.train`` on the same data, with the same
steps, batch size, learning rate, network width and depth, and seed:

- DSM: a score MLP s(x) trained by denoising score matching at one sigma (the library default,
  0.1 x the data's mean std), sampled with plain Langevin dynamics (1000 steps, the default);
- NCSN: a noise-conditional MLP s(x, sigma) trained by multi-scale DSM over the proposed
  geometric schedule (sigma_1 = the largest pairwise distance, sigma_L = 0.01, L = 10), sampled
  with annealed Langevin (Algorithm 1) at T = 100 steps per level, i.e. the same 1000 score
  evaluations; also at the default T = 5 (50 evaluations).

Both samplers start from the same uniform box over the data range. Sample quality is the
unbiased squared MMD (RBF kernel) between 2000 samples and 2000 held-out points drawn fresh from
the toy, at the median-heuristic bandwidth h and at h/5 (which sees the fine structure, e.g. the
squares of the checkerboard, that the median bandwidth averages out), plus the MMD of a second
held-out draw as the noise floor. One table per learning rate in ``--lrs`` (both models always
get the same one); printed and written to OUT/ncsn_vs_dsm.json, with the samples drawn in
OUT/ncsn_vs_dsm.png; OUT is docs/figures unless ``--out`` says otherwise.

    python examples/ncsn_toys.py --threads 1
    python examples/ncsn_toys.py --toys moons imbalanced --steps 1000 --lrs 1e-3
    python examples/ncsn_toys.py --tiny --out /tmp/toys     # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import scorematch
from scorematch.distributions import toy
from scorematch.metrics import median_bandwidth, mmd, mode_weights
from scorematch.noise import eps_for_schedule
from scorematch.run.sampling.generate import generate

ROOT = Path(__file__).resolve().parents[1]
TOYS = ("imbalanced", "8gaussians", "moons", "swissroll", "checkerboard", "rings")


def compare(name: str, lr: float, args: argparse.Namespace, folder: Path) -> tuple[dict, dict]:
    budget = {"data": name, "steps": args.steps, "batch_size": args.batch_size, "lr": lr,
              "hidden": args.hidden, "depth": args.depth, "seed": args.seed, "device": "cpu",
              "progress": False, "checkpoint_every": args.steps}
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    dist = toy(name)
    held_out, floor_draw = dist.sample(args.n, generator=gen).float(), dist.sample(args.n, generator=gen).float()
    fine = median_bandwidth(held_out, floor_draw) / 5
    folder = folder / f"{name}-lr{lr:g}"

    t0 = time.perf_counter()
    scorematch.train(out=folder / f"{name}-dsm", objective="dsm", **budget)
    scorematch.train(out=folder / f"{name}-ncsn", objective="ncsn", steps_per_sigma=args.T, **budget)
    t_train = time.perf_counter() - t0
    dsm_model = scorematch.load(folder / f"{name}-dsm")
    ncsn_model = scorematch.load(folder / f"{name}-ncsn")
    schedule = ncsn_model.run_info["schedule"]
    sigmas = schedule["sigmas"]
    x_dsm = generate(dsm_model, dsm_model.run_info, args.n, sampler="langevin", seed=args.seed)
    x_ncsn = generate(ncsn_model, ncsn_model.run_info, args.n, sampler="annealed", seed=args.seed)
    eps5 = eps_for_schedule(sigmas[0] / sigmas[1], sigmas[-1], 5)
    x_ncsn5 = generate(ncsn_model, ncsn_model.run_info, args.n, sampler="annealed", seed=args.seed,
                       eps=eps5, steps_per_sigma=5)
    row = {
        "mmd_dsm_langevin": mmd(x_dsm, held_out),
        "mmd_ncsn_annealed": mmd(x_ncsn, held_out),
        "mmd_ncsn_annealed_T5": mmd(x_ncsn5, held_out),
        "mmd_floor": mmd(floor_draw, held_out),
        "fine_bandwidth": fine,
        "mmd_fine_dsm_langevin": mmd(x_dsm, held_out, bandwidth=fine),
        "mmd_fine_ncsn_annealed": mmd(x_ncsn, held_out, bandwidth=fine),
        "mmd_fine_ncsn_annealed_T5": mmd(x_ncsn5, held_out, bandwidth=fine),
        "mmd_fine_floor": mmd(floor_draw, held_out, bandwidth=fine),
        "dsm_sigma": dsm_model.run_info["schedule"]["sigma"],
        "ncsn_sigmas": [sigmas[0], sigmas[-1], len(sigmas)],
        "ncsn_eps": schedule["eps"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_s": round(t_train, 1),
    }
    if hasattr(dist, "means") and name == "imbalanced":
        row["mode_weights_true"] = dist.weights.tolist()
        row["mode_weights_dsm"] = mode_weights(x_dsm, dist.means).tolist()
        row["mode_weights_ncsn"] = mode_weights(x_ncsn, dist.means).tolist()
    return row, {"held-out": held_out, "DSM + Langevin": x_dsm, f"NCSN, T = {args.T}": x_ncsn}


def figure(samples: dict[str, dict[str, dict[str, torch.Tensor]]], path: Path) -> None:
    """One row per toy: the held-out data, then DSM and NCSN samples for each learning rate."""
    lrs = list(samples)
    toys = list(samples[lrs[0]])
    cols = [("", "held-out")] + [(lr, k) for lr in lrs for k in samples[lr][toys[0]] if k != "held-out"]
    fig = Figure(figsize=(2.4 * len(cols), 2.4 * len(toys)), layout="constrained")
    for i, name in enumerate(toys):
        ref = samples[lrs[0]][name]["held-out"]
        lo, hi = ref.min(0).values, ref.max(0).values
        pad = 0.15 * (hi - lo)
        for j, (lr, key) in enumerate(cols):
            ax = fig.add_subplot(len(toys), len(cols), i * len(cols) + j + 1)
            x = samples[lr or lrs[0]][name][key]
            ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.5, color="C0" if j == 0 else "C1")
            ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
            ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{key}" + (f"\n{lr}" if lr else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(name)
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toys", nargs="+", default=list(TOYS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="one table per lr")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--T", type=int, default=100, help="annealed Langevin steps per noise level")
    p.add_argument("--n", type=int, default=2000, help="samples and held-out points per toy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="folder for the JSON and PNG")
    p.add_argument("--tiny", action="store_true",
                   help="a few seconds: two toys, 20 steps, 200 samples, T = 5 (numbers meaningless)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.toys, args.steps, args.n, args.T, args.lrs = ["imbalanced", "moons"], 20, 200, 5, [1e-3]

    tables: dict[str, dict] = {}
    samples: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ncsn_toys_") as tmp:
        for lr in args.lrs:
            rows = tables[f"lr={lr:g}"] = {}
            drawn = samples[f"lr={lr:g}"] = {}
            for name in args.toys:
                rows[name], drawn[name] = compare(name, lr, args, Path(tmp))
                r = rows[name]
                print(f"lr {lr:g} {name}: dsm {r['mmd_dsm_langevin']:.4f}  ncsn {r['mmd_ncsn_annealed']:.4f}  "
                      f"({r['wall_s']:.0f} s)", flush=True)

    for key, rows in tables.items():
        print(f"\n{key}, {args.steps} steps, batch {args.batch_size}, width {args.hidden} x {args.depth}: "
              "squared MMD x 1e3 to held-out data (lower is better; floor = a second held-out draw)")
        print(f"{'':<13} {'median bandwidth h':^40}  {'bandwidth h/5':^40}")
        cols = f"{'DSM+Lang':>9} {'NCSN T=' + str(args.T):>10} {'NCSN T=5':>9} {'floor':>8}"
        print(f"{'toy':<13} {cols}  {cols}")
        for name, r in rows.items():
            vals = [r[k] * 1e3 for k in ("mmd_dsm_langevin", "mmd_ncsn_annealed", "mmd_ncsn_annealed_T5",
                                          "mmd_floor", "mmd_fine_dsm_langevin", "mmd_fine_ncsn_annealed",
                                          "mmd_fine_ncsn_annealed_T5", "mmd_fine_floor")]
            print(f"{name:<13} {vals[0]:>9.3f} {vals[1]:>10.3f} {vals[2]:>9.3f} {vals[3]:>8.3f}  "
                  f"{vals[4]:>9.3f} {vals[5]:>10.3f} {vals[6]:>9.3f} {vals[7]:>8.3f}")
        if "imbalanced" in rows:
            r = rows["imbalanced"]
            w = lambda v: "/".join(f"{u:.3f}" for u in v)  # noqa: E731
            print(f"imbalanced mode weights: true {w(r['mode_weights_true'])}, DSM {w(r['mode_weights_dsm'])}, "
                  f"NCSN {w(r['mode_weights_ncsn'])}")
    budget = {k: getattr(args, k) for k in ("steps", "batch_size", "lrs", "hidden", "depth", "T", "n", "seed")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ncsn_vs_dsm.json").write_text(json.dumps({"budget": budget, "results": tables}, indent=2) + "\n")
    figure(samples, args.out / "ncsn_vs_dsm.png")
    print(f"wrote {args.out / 'ncsn_vs_dsm.json'} and {args.out / 'ncsn_vs_dsm.png'}")


if __name__ == "__main__":
    main()
