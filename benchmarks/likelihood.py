"""Probability-flow ODE log p of a batch: the exact divergence against the Hutchinson estimate, and
error and time against k-diffusion on Gaussian mixtures whose log-density is known.

    python -m benchmarks.likelihood [--threads 1] [--device cpu] [--smoke] [--part trace|mixtures|all]

D = 784, batch 256, dopri5 at rtol = atol = 1e-5 (the peer comparison's setting): the
noise-conditional MLP 784-256-256-784 of benchmarks/compare.py through ``sigma_conditioned`` on
its VE SDE, and a TimeMLP (width 128, depth 3) on the VP SDE. ``exact_trace=True`` takes the
structured trace (scorematch.autodiff.structured) for both; the Hutchinson estimate uses one
Rademacher probe per row. Each figure is the median of a few whole solves (process CPU time at
one thread); the NFE differ because the adaptive solver also controls the error of the
log-density state. Writes benchmarks/results/likelihood[_DEVICE].json and .md.

Mixtures (``--part mixtures``): the 2-D mixture gmm2d (batch 1024) and a 784-D scale mixture
0.4 N(0, 0.25 I) + 0.6 N(0, diag(linspace(0.5, 2, 784))) (batch 256), float64, their exact
noisy scores; data drawn from each. ``scorematch.likelihood.log_prob`` on the VE SDE
(sigma_min = 0.01, sigma_max = 1e4 at D = 2, 1e3 at D = 784, large enough that the prior's
mismatch with p_T stays under 3e-4 nats; eps_t = 1e-5) with the exact trace and with one
Rademacher probe, and k-diffusion's ``sampling.log_likelihood`` (dopri5 in sigma from sigma_min to
sigma_max, one Rademacher probe from the global generator) at a ladder of rtol = atol (k-diffusion
one rung further, 1e-7, to reach scorematch's accuracy at 1e-6). scorematch solves in the scaled
state y = x / c(t) (``scorematch.likelihood``). Error:
log p against the closed form of the mixture noised at each one's starting sigma, per row (mean
of |error|, and the mean error, which the probe's noise averages out of), time of the whole solve.
Writes benchmarks/results/likelihood_mixtures.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from benchmarks.common import clock, environment, fmt_ms, markdown_table, sync, where, write
from benchmarks.peers import make_setup
from scorematch.likelihood import log_prob
from scorematch.models.time import TimeMLP
from scorematch.sde import VPSDE, sigma_conditioned


def cases(d: int, batch: int, device: torch.device) -> dict[str, tuple[Any, Any, torch.Tensor]]:
    s = make_setup(d, batch, 256, device)
    torch.manual_seed(1)
    time_mlp = TimeMLP(d, hidden=128, depth=3).to(device)
    nc = sigma_conditioned(s.nc_net, s.sde)
    return {
        f"NoiseConditionalMLP {d}-256-256-{d} via sigma_conditioned, VE": (nc, s.sde, s.x),
        f"TimeMLP {d}-128x4-{d} (depth 3), VP": (time_mlp, VPSDE(), s.x),
    }


def solve(score: Any, sde: Any, x: torch.Tensor, exact: bool, device: torch.device, repeats: int) -> dict[str, Any]:
    now = clock(device)
    times, nfe, out = [], 0, None
    for _ in range(repeats):
        g = torch.Generator(device=device).manual_seed(0)
        t0 = now()
        res = log_prob(score, sde, x, exact_trace=exact, n_probes=1, rtol=1e-5, atol=1e-5, generator=g,
                       return_nfe=True)
        sync(device)
        times.append(now() - t0)
        nfe, out = res.nfe, res.log_prob
    ms = 1e3 * sorted(times)[len(times) // 2]
    return {"ms": ms, "nfe": nfe, "ms_per_nfe": ms / nfe, "log_prob": out}


def run(device: torch.device, smoke: bool) -> dict[str, Any]:
    d, batch, repeats = (16, 8, 1) if smoke else (784, 256, 3)
    payload: dict[str, Any] = {"environment": environment(device), "d": d, "batch": batch, "cases": {}}
    for name, (score, sde, x) in cases(d, batch, device).items():
        hutch = solve(score, sde, x, False, device, repeats)
        exact = solve(score, sde, x, True, device, repeats)
        diff = (exact.pop("log_prob") - hutch.pop("log_prob")).abs()
        payload["cases"][name] = {
            "hutchinson": hutch, "exact": exact, "exact_over_hutchinson": exact["ms"] / hutch["ms"],
            "mean_abs_log_prob_difference": float(diff.mean()),
        }
        print(f"  {name}: Hutchinson {hutch['ms']:.4g} ms ({hutch['nfe']} NFE), exact {exact['ms']:.4g} ms "
              f"({exact['nfe']} NFE)", flush=True)
    payload["markdown"] = markdown(payload)
    return payload


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    rows = []
    for name, c in payload["cases"].items():
        h, e = c["hutchinson"], c["exact"]
        rows.append([name, f"{fmt_ms(h['ms'])} ({h['nfe']} NFE, {h['ms_per_nfe']:.3g} ms each)",
                     f"{fmt_ms(e['ms'])} ({e['nfe']} NFE, {e['ms_per_nfe']:.3g} ms each)",
                     f"{c['exact_over_hutchinson']:.2f}", f"{c['mean_abs_log_prob_difference']:.3g}"])
    head = (f"Measured {env['date']} on {where(env)} ({env['threads']} thread(s), {env['clock']}), torch "
            f"{env['torch']}. Probability-flow ODE log p of a batch of {payload['batch']} points N(0, I) at "
            f"D = {payload['d']}, dopri5, rtol = atol = 1e-5; median of whole solves.")
    table = markdown_table(["score network, SDE", "Hutchinson (1 probe)", "exact (structured trace)",
                            "exact / Hutchinson", "mean abs. difference of log p"], rows)
    return head + "\n\n" + table


MIXTURE_TOLS = (1e-3, 1e-4, 1e-5, 1e-6)
#: k-diffusion also runs at this tolerance, so that its errors reach down to scorematch's at 1e-6
PEER_EXTRA_TOL = 1e-7
PROBE_SEED = 1


def _gmm2d_score() -> tuple[Any, Any, float]:
    """(score s(x, sigma) in plain tensor operations, closed-form log p_sigma(x), sigma_max) of gmm2d."""
    from scorematch.distributions import toy

    mix = toy("gmm2d")
    eye = torch.eye(2, dtype=torch.float64)

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cov = mix.covs[None] + sigma.reshape(-1, 1, 1, 1) ** 2 * eye
        diff = mix.means[None] - x[:, None]
        sol = torch.linalg.solve(cov, diff[..., None])[..., 0]
        logits = mix.weights.log() - 0.5 * torch.logdet(cov) - 0.5 * (diff * sol).sum(-1)
        return (torch.softmax(logits, 1)[..., None] * sol).sum(1)

    return score, lambda x, sigma: mix.noisy(sigma).log_prob(x), 1e4


def _scale_mixture(d: int) -> tuple[Any, Any, float, Any]:
    """0.4 N(0, 0.25 I) + 0.6 N(0, diag(linspace(0.5, 2, d))): score, log p_sigma, sigma_max, sampler."""
    weights = torch.tensor([0.4, 0.6], dtype=torch.float64)
    var = torch.stack([torch.full((d,), 0.25, dtype=torch.float64), torch.linspace(0.5, 2.0, d, dtype=torch.float64)])

    def logits(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = var[None] + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1) ** 2  # (n, 2, d)
        lg = weights.log() - 0.5 * (torch.log(2 * math.pi * v) + x[:, None] ** 2 / v).sum(-1)
        return lg, v

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        lg, v = logits(x, sigma)
        return (torch.softmax(lg, 1)[..., None] * (-x[:, None] / v)).sum(1)

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        k = (torch.rand(n, generator=g, dtype=torch.float64) < weights[1]).long()
        return torch.randn(n, d, generator=g, dtype=torch.float64) * var[k].sqrt()

    return score, lambda x, sigma: torch.logsumexp(logits(x, sigma)[0], 1), 1e3, sample


def mixtures(device: torch.device, smoke: bool) -> dict[str, Any]:
    from scorematch.sde import VESDE

    try:
        from benchmarks.peers.k_diffusion_peer import _load_k_diffusion

        sampling = _load_k_diffusion()[0]
    except (ImportError, ModuleNotFoundError):
        sampling = None
    now = clock(device)
    tols = MIXTURE_TOLS[:2] if smoke else MIXTURE_TOLS
    payload: dict[str, Any] = {"environment": environment(device), "k_diffusion": sampling is not None, "rows": []}
    from scorematch.distributions import toy

    g = torch.Generator().manual_seed(0)
    score2, exact2, hi2 = _gmm2d_score()
    score784, exact784, hi784, sample784 = _scale_mixture(784)
    cases = [(2, 64 if smoke else 1024, score2, exact2, hi2, lambda n: toy("gmm2d").sample(n, g).double()),
             (784, 16 if smoke else 256, score784, exact784, hi784, lambda n: sample784(n, g))]
    lo = 0.01
    repeats = 1 if smoke else 3
    for d, batch, score, exact, hi, draw in cases:
        x = draw(batch).to(device)
        sde = VESDE(sigma_min=lo, sigma_max=hi)
        eps_t = 1e-5
        ours_ref = exact(x, float(sde.sigma(torch.tensor(eps_t, dtype=torch.float64))))
        kd_ref = exact(x, lo)

        def ours_score(y: torch.Tensor, t: torch.Tensor, f=score, sde=sde) -> torch.Tensor:
            return f(y, sde.sigma(t))

        def denoiser(y: torch.Tensor, sigma: torch.Tensor, f=score) -> torch.Tensor:
            sigma = torch.as_tensor(sigma, dtype=y.dtype).expand(y.shape[0])
            return y + sigma.square()[:, None] * f(y, sigma)

        def ours(exact_trace: bool, tol: float, x=x, sde=sde, f=ours_score, eps_t=eps_t) -> tuple[torch.Tensor, int]:
            # the probe k-diffusion draws after torch.manual_seed(PROBE_SEED)
            res = log_prob(f, sde, x, exact_trace=exact_trace, rtol=tol, atol=tol, eps_t=eps_t,
                           generator=torch.Generator().manual_seed(PROBE_SEED), return_nfe=True)
            return res.log_prob, res.nfe

        def theirs(tol: float, x=x, hi=hi, den=denoiser) -> tuple[torch.Tensor, int]:
            torch.manual_seed(PROBE_SEED)
            ll, info = sampling.log_likelihood(den, x, lo, hi, atol=tol, rtol=tol)
            return ll, info["fevals"]

        # the same probe's integral, solved tightly: the solver error of a one-probe solve is its
        # distance to this (the probe's own noise is common to both libraries)
        probe_ref = ours(False, 1e-10)[0]
        methods: dict[str, Any] = {"scorematch, Hutchinson (1 probe)": lambda tol: ours(False, tol)}
        if d <= 16:
            methods = {"scorematch, exact trace": lambda tol: ours(True, tol), **methods}
        if sampling is not None:
            methods["k-diffusion log_likelihood (1 probe)"] = theirs
        for tol in tols + ((PEER_EXTRA_TOL,) if sampling is not None and not smoke else ()):
            for label, fn in methods.items():
                if tol not in tols and not label.startswith("k-diffusion"):
                    continue
                fn(tols[0])  # warm-up
                times, out, nfe = [], None, 0
                for _ in range(repeats):
                    t0 = now()
                    out, nfe = fn(tol)
                    sync(device)
                    times.append(1e3 * (now() - t0))
                ref = kd_ref if label.startswith("k-diffusion") else ours_ref
                row = _row(d, batch, label, tol, nfe, sorted(times)[len(times) // 2], out - ref)
                row["solver_error"] = float((out - (ref - ours_ref + probe_ref if "probe" in label else ref))
                                            .abs().mean())
                payload["rows"].append(row)
                print(f"  D={d} {label:38s} tol {tol:g}: {nfe:5d} NFE {fmt_ms(row['ms']):>9s}  "
                      f"|err| {row['mean_abs_error']:.2e}  solver |err| {row['solver_error']:.2e}", flush=True)
    payload["markdown"] = mixtures_markdown(payload)
    return payload


def _row(d: int, batch: int, method: str, tol: float, nfe: int, ms: float, err: torch.Tensor) -> dict[str, Any]:
    return {"d": d, "batch": batch, "method": method, "tol": tol, "nfe": int(nfe), "ms": ms,
            "mean_abs_error": float(err.abs().mean()), "mean_error": float(err.mean()),
            "max_abs_error": float(err.abs().max())}


def mixtures_markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    head = (f"Measured {env['date']} on {where(env)} ({env['threads']} thread(s), {env['clock']}), torch "
            f"{env['torch']}, float64. log p of data drawn from each mixture; dopri5 at rtol = atol = tol; time of "
            "the whole solve (median of 3). Solver error: mean |log p - the same probe's integral solved at "
            "rtol = atol = 1e-10| per row (the exact trace: against the closed form); error vs closed form: mean "
            "|log p - log p_sigma_min(x)| per row, the probe's noise included; mean error: its mean over the batch.")
    if not payload["k_diffusion"]:
        head += " k-diffusion not installed: its rows are missing."
    rows = [[f"D = {r['d']} (batch {r['batch']})", r["method"], f"{r['tol']:g}", r["nfe"], fmt_ms(r["ms"]),
             f"{r['solver_error']:.2e}", f"{r['mean_abs_error']:.2e}", f"{r['mean_error']:+.2e}"]
            for r in payload["rows"]]
    table = markdown_table(["mixture", "method", "tol", "NFE", "time", "solver error", "error vs closed form",
                            "mean error"], rows)
    matched = equal_accuracy(payload["rows"])
    if not matched:
        return head + "\n\n" + table
    lines = [[f"D = {m['d']}", f"{m['tol']:g}", f"{m['solver_error']:.2e}", fmt_ms(m["ms"]),
              ("> " if m["bound"] else "") + fmt_ms(m["peer_ms"]), ("< " if m["bound"] else "") + f"{m['ratio']:.2f}"]
             for m in matched]
    return (head + "\n\n" + table + "\n\nAt equal accuracy: k-diffusion's time at scorematch's solver error (one "
            "probe each), interpolated log-log between its two nearest tolerances; where scorematch's error is "
            "below every k-diffusion row's, k-diffusion's time at its most accurate row (which a smaller error "
            "would only raise: > time, < ratio).\n\n"
            + markdown_table(["mixture", "scorematch tol", "solver error", "scorematch", "k-diffusion",
                              "scorematch / k-diffusion"], lines))


def equal_accuracy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each scorematch one-probe row, k-diffusion's time at the same solver error (log-log
    interpolation between the k-diffusion rows around it), or, for a row more accurate than every
    k-diffusion row, k-diffusion's time at its most accurate row (``bound``: the equal-accuracy
    time is larger, the ratio smaller); rows less accurate than every k-diffusion row are left out."""
    out = []
    for d in sorted({r["d"] for r in rows}):
        peer = sorted(((r["solver_error"], r["ms"]) for r in rows if r["d"] == d and r["method"].startswith("k-")),
                      reverse=True)
        for r in rows:
            if r["d"] != d or not r["method"].startswith("scorematch, Hutchinson"):
                continue
            for (e0, t0), (e1, t1) in zip(peer, peer[1:], strict=False):
                if e1 <= r["solver_error"] <= e0 and e0 > e1 > 0:
                    w = math.log(e0 / r["solver_error"]) / math.log(e0 / e1)
                    peer_ms = math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))
                    out.append({"d": d, "tol": r["tol"], "solver_error": r["solver_error"], "ms": r["ms"],
                                "peer_ms": peer_ms, "ratio": r["ms"] / peer_ms, "bound": False})
                    break
            else:
                best = min(peer, default=None)
                if best is not None and 0 < r["solver_error"] < best[0]:
                    # more accurate than k-diffusion's most accurate row: its time there bounds it from below
                    slowest = max(t for e, t in peer if e == best[0])
                    out.append({"d": d, "tol": r["tol"], "solver_error": r["solver_error"], "ms": r["ms"],
                                "peer_ms": slowest, "ratio": r["ms"] / slowest, "bound": True})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="D = 16, batch 8, one solve each")
    p.add_argument("--part", choices=["trace", "mixtures", "all"], default="all",
                   help="the exact trace against Hutchinson, the mixtures against k-diffusion, or both")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    suffix = ("" if device.type == "cpu" else f"_{device.type}") + ("_smoke" if args.smoke else "")
    payload: dict[str, Any] = {}
    if args.part in ("trace", "all"):
        payload = run(device, args.smoke)
        write(f"likelihood{suffix}", payload, payload["markdown"])
        print(payload["markdown"])
    if args.part in ("mixtures", "all"):
        payload["mixtures"] = mixtures(device, args.smoke)
        write(f"likelihood_mixtures{suffix}", payload["mixtures"], payload["mixtures"]["markdown"])
        print(payload["mixtures"]["markdown"])
    print(f"({time.perf_counter() - t0:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
