"""Time one NCSN training step of ``NCSNUNet`` against the bare network-step floor.

NCSN step: draw one sigma per row from a geometric schedule, x~ = x + sigma z,
per-row loss 1/2 ||sigma s(x~, sigma) + z||^2 (the contract's multi-scale DSM with
lambda = sigma^2), batch mean, backward, Adam step. Floor: the same network
called on (x, sigma) with the same per-row sigmas, MSE against a fixed random
target, backward, Adam step.
Warm-up, then the median of N interleaved repeats; prints ms and the ratio.

``--compare`` instead trains both conditioning modes on sklearn digits and prints
the held-out loss per noise level (the measurement behind NCSNUNet's default).

    PYTHONPATH=src python benchmarks/ncsn_image_step.py [--device cuda] [--threads 2]
    PYTHONPATH=src python benchmarks/ncsn_image_step.py --compare [--steps 1500]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from scorematch.models.images import NCSNUNet
from scorematch.noise import geometric_sigmas

try:
    from scorematch.objectives import ncsn as _library_ncsn
except ImportError:
    _library_ncsn = None


def ncsn_loss_inline(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean over rows of 1/2 ||sigma_i s(x + sigma_i z, sigma_i) + z||^2, sigma_i uniform."""
    idx = torch.randint(0, len(sigmas), (x.shape[0],), device=x.device, generator=generator)
    sigma = sigmas[idx]
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    sb = sigma.view(-1, *([1] * (x.dim() - 1)))
    s = score_fn(x + sb * z, sigma)
    return 0.5 * (sb * s + z).pow(2).flatten(1).sum(1).mean()


ncsn_loss = _library_ncsn if _library_ncsn is not None else ncsn_loss_inline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    c, n, hw = 3, args.batch, args.size
    sigmas = geometric_sigmas(50.0, 0.01, 10).to(device)
    x = torch.rand(n, c, hw, hw, device=device)
    target = torch.randn_like(x)
    sigma_fixed = sigmas[torch.randint(0, len(sigmas), (n,), device=device)]

    def make() -> tuple[NCSNUNet, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = NCSNUNet(channels=c, base=args.base).to(device)
        return m, torch.optim.Adam(m.parameters(), lr=1e-4)

    m_ncsn, opt_ncsn = make()
    m_floor, opt_floor = make()

    def step_ncsn() -> None:
        loss = ncsn_loss(m_ncsn, x, sigmas)
        opt_ncsn.zero_grad(set_to_none=True)
        loss.backward()
        opt_ncsn.step()

    def step_floor() -> None:
        loss = torch.nn.functional.mse_loss(m_floor(x, sigma_fixed), target)
        opt_floor.zero_grad(set_to_none=True)
        loss.backward()
        opt_floor.step()

    def timed(fn: Callable[[], None]) -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return (time.perf_counter() - t0) * 1e3

    for _ in range(args.warmup):
        step_ncsn()
        step_floor()
    t_ncsn, t_floor = [], []
    for _ in range(args.repeats):
        t_ncsn.append(timed(step_ncsn))
        t_floor.append(timed(step_floor))
    med_ncsn, med_floor = statistics.median(t_ncsn), statistics.median(t_floor)
    src = "scorematch.objectives.ncsn" if _library_ncsn is not None else "inline formula"
    n_par = sum(p.numel() for p in m_ncsn.parameters())
    print(
        f"NCSNUNet(channels=3, base={args.base}), {n_par} params, batch {n}x{c}x{hw}x{hw}, "
        f"device {device}, threads {torch.get_num_threads()}, loss: {src}, "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    print(f"{'step':<32}{'ms':>10}{'ratio':>8}")
    print(f"{'floor (MSE, same net)':<32}{med_floor:>10.2f}{1.0:>8.2f}")
    print(f"{'NCSN (multi-scale DSM)':<32}{med_ncsn:>10.2f}{med_ncsn / med_floor:>8.2f}")


def compare(args: argparse.Namespace) -> None:
    from sklearn.datasets import load_digits

    device = torch.device(args.device)
    data = torch.tensor(load_digits().images / 16.0, dtype=torch.float32)[:, None]
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    train, test = data[perm[:1500]].to(device), data[perm[1500:]].to(device)
    sigma_max = float(torch.cdist(data.flatten(1), data.flatten(1)).max())
    sigmas = geometric_sigmas(round(sigma_max), 0.01, args.levels).to(device)
    print(
        f"digits: train {tuple(train.shape)}, held-out {tuple(test.shape)}, largest pairwise "
        f"distance {sigma_max:.2f}; sigmas {[round(s, 3) for s in sigmas.tolist()]}"
    )
    results: dict[str, list[torch.Tensor]] = {}
    for mode in ("embedding", "divide"):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            m = NCSNUNet(channels=1, conditioning=mode).to(device)
            opt = torch.optim.Adam(m.parameters(), lr=args.lr)
            g = torch.Generator(device=device).manual_seed(seed)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                idx = torch.randint(0, len(train), (args.batch,), device=device, generator=g)
                loss = ncsn_loss_inline(m, train[idx], sigmas, generator=g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            ms = (time.perf_counter() - t0) / args.steps * 1e3
            per_level = held_out(m, test, sigmas)
            results.setdefault(mode, []).append(per_level)
            print(
                f"  {mode} seed {seed}: {ms:.1f} ms/step, held-out mean {per_level.mean():.3f}, "
                f"per level {[round(v, 3) for v in per_level.tolist()]}"
            )
    print(f"held-out 1/2||sigma s + z||^2 per level, mean of {args.seeds} seed(s)")
    print(f"{'sigma':>8}" + "".join(f"{k:>12}" for k in results))
    means = {k: torch.stack(v).mean(0) for k, v in results.items()}
    for i, s in enumerate(sigmas.tolist()):
        print(f"{s:>8.3f}" + "".join(f"{means[k][i].item():>12.3f}" for k in means))
    print(f"{'mean':>8}" + "".join(f"{means[k].mean().item():>12.3f}" for k in means))


@torch.no_grad()
def held_out(m: NCSNUNet, x: torch.Tensor, sigmas: torch.Tensor, draws: int = 8) -> torch.Tensor:
    """Held-out loss per noise level, averaged over ``draws`` fixed noise draws."""
    g = torch.Generator(device=x.device).manual_seed(1234)
    out = []
    for s in sigmas:
        tot = 0.0
        for _ in range(draws):
            z = torch.randn(x.shape, device=x.device, generator=g)
            sig = s.expand(len(x))
            tot += 0.5 * (s * m(x + s * z, sig) + z).pow(2).flatten(1).sum(1).mean().item()
        out.append(tot / draws)
    return torch.tensor(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compare", action="store_true", help="train both modes on digits")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--levels", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device} requested but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
