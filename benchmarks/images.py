"""The image benchmark that decides: quality of the image U-Net against CPU-minutes of training.

``benchmarks/images_train.py`` trains under a CPU-time budget and saves EMA weights at CPU-time
marks; this script samples each saved checkpoint with Heun's method (18 Karras levels, 35 score
evaluations, EDM's rho = 7) and measures the samples against held-out real images in the feature
space of a small classifier trained on the labelled training images (scorematch.metrics.images):
classifier-confident rate, k-NN precision and recall (k = 3), Frechet distance and KID, each with
the real-vs-real baseline; on 8x8 digits also pixel-space precision and recall.

    python -m benchmarks.images_train --data mnist:DIR --size tiny --out RUN   # train (CPU budget)
    python -m benchmarks.images --runs RUN [RUN ...] --data mnist:DIR --n 1000 # evaluate, write results
    python -m benchmarks.images --figure RUN --mark 30 --half-life 20000       # samples next to real

Results: benchmarks/results/images.json / images.md. One CPU thread, process CPU time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from benchmarks.common import environment, markdown_table, where, write
from benchmarks.images_train import build, load
from scorematch.metrics import precision_recall
from scorematch.metrics.images import image_metrics, train_feature_net
from scorematch.models.base import build_model
from scorematch.noise import karras_sigmas
from scorematch.samplers.catalogue import sample
from scorematch.samplers.conditional import guided

HEUN_LEVELS = 18  # 18 Karras levels + the final 0: 35 score evaluations
_NETS: dict[str, Any] = {}


def load_checkpoint(run: Path, mark: float, half_life: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    meta = json.loads((run / "meta.json").read_text())
    spec = meta["spec"]
    if "model" in meta:
        model = build_model(meta["model"]["name"], meta["model"]["config"])
    else:
        model = build(spec["objective"], spec["size"], spec["channels"], meta["settings"],
                      dropout=meta["args"]["dropout"])
    state = load_file(str(run / f"ema-{int(mark)}min-hl{half_life}.safetensors"))
    model.load_state_dict(state, strict=False)  # buffers (Fourier frequencies) come from the config
    return model.eval(), meta


def sampling_range(x: torch.Tensor) -> tuple[float, float]:
    """(sigma_min, sigma_max) of ``scorematch train --objective edm`` for training images x, so the
    benchmark samples as ``scorematch sample`` does."""
    from scorematch.objectives.builders import edm_schedule

    s = edm_schedule({}, x)
    return s["sigma_min"], s["sigma_max"]


def nfe(sampler: str, levels: int) -> int:
    """Score evaluations of ``sampler`` on ``levels`` Karras levels and the final 0."""
    return 2 * levels - 1 if sampler == "heun" else levels


def generate(model: torch.nn.Module, x_train: torch.Tensor, n: int, seed: int, levels: int = HEUN_LEVELS,
             batch: int = 250, sampler: str = "heun", y_train: torch.Tensor | None = None,
             guidance: float = 0.0) -> torch.Tensor:
    """n images by ``sampler`` (heun, or another denoising sampler of scorematch) on the Karras grid
    sigma_max .. sigma_min (rho 7) then 0 (the range of ``sampling_range``), clamped to [0, 1]. A
    class-conditional model (``y_train`` given) samples p(x) = sum_y p(y) p(x | y): each image's
    label is drawn from the training labels, then the image from the (guided) conditional score."""
    lo, hi = sampling_range(x_train)
    sigmas = karras_sigmas(levels, lo, hi)
    shape = tuple(x_train.shape[1:])
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        x = torch.randn((m, *shape), generator=g) * float(sigmas[0])
        score_fn: Any = model
        if y_train is not None:
            labels = y_train[torch.randint(len(y_train), (m,), generator=g)]
            score_fn = guided(model, labels, guidance)
        out.append(sample(sampler, score_fn, x, sigmas).clamp(0, 1))
    return torch.cat(out)


def feature_net(data: str, x: torch.Tensor, y: torch.Tensor, cache: Path | None = None) -> Any:
    """The feature network of ``data`` (trained with seed 0 on the training images), kept in memory
    and, with ``cache`` (a folder), in CACHE/featnet-NAME.safetensors for the next process."""
    if data in _NETS:
        return _NETS[data]
    name = data.split(":")[0]
    path = cache / f"featnet-{name}.safetensors" if cache is not None else None
    if path is not None and path.is_file():
        from scorematch.metrics.images import FeatureNet

        spec = json.loads((cache / f"featnet-{name}.json").read_text())
        net = FeatureNet(spec["channels"], tuple(spec["image_size"]), spec["n_classes"], spec["width"],
                         spec["feature_dim"])
        net.load_state_dict(load_file(str(path)))
        _NETS[data] = net.eval()
    else:
        _NETS[data] = train_feature_net(x, y, seed=0)
        if path is not None:
            from safetensors.torch import save_file

            from scorematch.files import write_json

            save_file(_NETS[data].state_dict(), str(path))
            write_json(cache / f"featnet-{name}.json", _NETS[data].spec)
    return _NETS[data]


def evaluate(run: Path, data: str, n: int, marks: list[float] | None, half_lives: list[int] | None,
             seed: int, cache: Path | None = None, sampler: str = "heun",
             levels: int = HEUN_LEVELS, guidance: float = 0.0) -> list[dict[str, Any]]:
    x, y, xt, _ = load(data)
    net = feature_net(data, x, y, cache)
    meta = json.loads((run / "meta.json").read_text())
    rows = []
    for ck in meta["checkpoints"]:
        if marks and ck["cpu_min"] not in marks:
            continue
        for hl in half_lives or [int(h) for h in meta["args"]["half_lives"].split(",")]:
            model, _ = load_checkpoint(run, ck["cpu_min"], hl)
            t0 = time.process_time()
            with torch.no_grad():
                conditional = meta["args"].get("class_conditional", False)
                samples = generate(model, x, n, seed, levels=levels, sampler=sampler,
                                   y_train=y if conditional else None, guidance=guidance)
            sample_cpu = time.process_time() - t0
            m = image_metrics(net, x, xt, samples, torch.Generator().manual_seed(seed))
            row = {"run": run.name, "data": data, **meta["spec"], "params": meta["params"],
                   "batch": meta["args"]["batch"], "lr": meta["args"]["lr"], "cpu_min": ck["cpu_min"],
                   "steps": ck["step"], "images_seen": ck["images"], "ema_half_life_images": hl,
                   "n": n, "sampler": sampler, "conditional": conditional, "guidance": guidance,
                   "levels": levels, "nfe": nfe(sampler, levels),
                   "sample_cpu_s": sample_cpu,
                   **{k: m[k] for k in ("confident", "precision", "recall", "fd", "kid")}}
            if x.shape[-1] <= 8:
                p, r = precision_recall(xt.flatten(1), samples.flatten(1), k=3)
                row["pixel_precision"], row["pixel_recall"] = p, r
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    c = r["confident"]
    return (f"{r['run']} {r['cpu_min']:g} CPU-min step {r['steps']} hl {r['ema_half_life_images']}: "
            f"confident {c['value']:.3f} (real {c['baseline']:.3f}, ratio {c['value'] / c['baseline']:.2f}) "
            f"P {r['precision']['value']:.3f} R {r['recall']['value']:.3f} FD {r['fd']['value']:.2f} "
            f"(real {r['fd']['baseline']:.2f}) KID {r['kid']['value']:.4f}"
            + (f" pixel P {r['pixel_precision']:.3f} R {r['pixel_recall']:.3f}" if "pixel_precision" in r else ""))


def table(rows: list[dict[str, Any]]) -> str:
    head = ["data", "objective", "size", "params", "CPU min", "steps", "EMA half-life (images)", "sampler (NFE)",
            "confident / real",
            "precision", "recall", "FD (real-real)", "KID", "pixel P / R"]
    body = []
    for r in rows:
        c = r["confident"]
        objective = r["objective"] + (f" class-conditional, w {r.get('guidance', 0):g}" if r.get("conditional") else "")
        body.append([r["data"].split(":")[0], objective, r["size"], f"{r['params'] / 1e6:.2f} M", r["cpu_min"],
                     r["steps"], r["ema_half_life_images"], f"{r.get('sampler', 'heun')} ({r['nfe']})",
                     f"{c['value']:.3f} / {c['baseline']:.3f} = {c['value'] / c['baseline']:.2f}",
                     f"{r['precision']['value']:.3f} ± {r['precision']['se']:.3f}",
                     f"{r['recall']['value']:.3f} ± {r['recall']['se']:.3f}",
                     f"{r['fd']['value']:.2f} ({r['fd']['baseline']:.2f})", f"{r['kid']['value']:.4f}",
                     f"{r['pixel_precision']:.3f} / {r['pixel_recall']:.3f}" if "pixel_precision" in r else ""])
    return markdown_table(head, body)


BUDGET_MIN = 30.0  # the CPU-minutes of training the image recipe is sized for


def _score(r: dict[str, Any]) -> float:
    """One number per row: the mean of the confident rate relative to real digits' (at most 1: more
    confident than real digits is no better), precision and recall."""
    confident = min(1.0, r["confident"]["value"] / r["confident"]["baseline"])
    return (confident + r["precision"]["value"] + r["recall"]["value"]) / 3


def _variant(r: dict[str, Any]) -> tuple[str, bool]:
    return r["size"], bool(r.get("conditional", False))


def decide(rows: list[dict[str, Any]], speed: dict[str, Any]) -> dict[str, Any]:
    """The image recipe from the measurements: the U-Net size, class-conditional or not, with the
    best quality (``_score``, its best EMA half-life) on 28x28 digits at the largest CPU-minute
    mark every measured variant reached (Heun rows), trained in bf16 when the speed benchmark
    measured bf16 steps faster, for as many steps as fit in ``BUDGET_MIN`` CPU-minutes (the
    training run's own count when it reached the budget, else from the measured step; rounded
    down to hundreds); the EMA half-life that scored best at that variant's last mark; the sampler,
    its levels and (class-conditional) the guidance weight that scored best on that checkpoint."""
    mnist = [r for r in rows if r["data"].startswith("mnist") and r.get("sampler", "heun") == "heun"]
    variants = sorted({_variant(r) for r in mnist})
    common = min(max(r["cpu_min"] for r in mnist if _variant(r) == v) for v in variants)
    at = {v: max((r for r in mnist if _variant(r) == v and r["cpu_min"] == common), key=_score) for v in variants}
    best = max(at.values(), key=_score)
    mine = [r for r in mnist if _variant(r) == _variant(best)]
    last = max(r["cpu_min"] for r in mine)
    ema = max((r for r in mine if r["cpu_min"] == last), key=_score)
    same = [r for r in rows if r["data"] == best["data"] and _variant(r) == _variant(best) and r["cpu_min"] == last
            and r["ema_half_life_images"] == ema["ema_half_life_images"]]
    pick = max(same, key=lambda r: (_score(r), -r["nfe"]))
    step = {r["size"]: r for r in speed["rows"]}[best["size"]]
    bf16 = step["step_bf16_ms"] < step["step_fp32_ms"]
    step_s = (step["step_bf16_ms"] if bf16 else step["step_fp32_ms"]) / 1e3
    if last >= BUDGET_MIN:  # the steps the training run itself made in the budget
        step_s = ema["cpu_min"] * 60 / ema["steps"]
    return {"model_size": best["size"], "class_conditional": _variant(best)[1],
            "steps": int(BUDGET_MIN * 60 / step_s) // 100 * 100,
            "batch_size": best["batch"], "lr": best["lr"], "lr_warmup": 200,
            "ema_half_life": float(ema["ema_half_life_images"]), "precision": "bf16" if bf16 else "fp32",
            "sampler": pick.get("sampler", "heun"), "n_steps": pick.get("levels", HEUN_LEVELS),
            "guidance": pick.get("guidance", 0.0),
            "compared_at_cpu_min": common, "ema_chosen_at_cpu_min": last,
            "scores": {f"{v[0]}{' conditional' if v[1] else ''}": _score(r) for v, r in at.items()},
            "step_s": step_s}


def figure(run: Path, data: str, mark: float, half_life: int, out: Path, n: int = 64, seed: int = 0,
           sampler: str = "heun", levels: int = HEUN_LEVELS, guidance: float = 0.0) -> None:
    """Generated images (left) next to held-out real ones (right), 8 x 8 each, upscaled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scorematch.files import atomic_write

    x, y, xt, _ = load(data)
    model, meta = load_checkpoint(run, mark, half_life)
    conditional = meta["args"].get("class_conditional", False)
    with torch.no_grad():
        samples = generate(model, x, n, seed, levels=levels, sampler=sampler, y_train=y if conditional else None,
                           guidance=guidance)

    def grid(imgs: torch.Tensor) -> torch.Tensor:
        k = int(n**0.5)
        h, w = imgs.shape[-2:]
        pad = torch.ones(k * k, 1, h + 2, w + 2)
        pad[:, :, 1:-1, 1:-1] = imgs[: k * k, :1]
        return pad.view(k, k, h + 2, w + 2).permute(0, 2, 1, 3).reshape(k * (h + 2), k * (w + 2))

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, imgs, title in ((axes[0], samples, f"generated ({meta['spec']['objective'].upper()}, "
                             f"{meta['spec']['size']} U-Net, {mark:g} CPU-min, {sampler} {nfe(sampler, levels)} NFE"
                             + (f", w = {guidance:g})" if conditional else ")")),
                            (axes[1], xt[torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))[:n]],
                             "real (held out, a random draw)")):
        ax.imshow(1 - grid(imgs), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(out, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--data", default="digits")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--marks", default="", help="CPU-minute marks to evaluate (default: all)")
    p.add_argument("--half-lives", default="", help="EMA half-lives to evaluate (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="images", help="results file name (benchmarks/results/NAME.json)")
    p.add_argument("--append", action="store_true", help="add to the rows already in the results file")
    p.add_argument("--parts", nargs="*", default=[], help="results files (names) whose rows to include")
    p.add_argument("--decide", action="store_true", help="record the image recipe the rows decide")
    p.add_argument("--sampler", default="heun", help="a denoising sampler of scorematch")
    p.add_argument("--levels", type=int, default=HEUN_LEVELS, help="Karras noise levels (then 0)")
    p.add_argument("--guidance", type=float, default=0.0, help="class-conditional runs: guidance weight w")
    p.add_argument("--cache", type=Path, default=None, help="folder to keep the feature networks in")
    p.add_argument("--figure", default="", help="a run folder: write a samples-vs-real PNG instead")
    p.add_argument("--mark", type=float, default=30)
    p.add_argument("--half-life", type=int, default=20000)
    p.add_argument("--out", default="docs/figures/mnist_samples.png")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.figure:
        figure(Path(a.figure), a.data, a.mark, a.half_life, Path(a.out), sampler=a.sampler, levels=a.levels,
               guidance=a.guidance)
        return
    marks = [float(m) for m in a.marks.split(",")] if a.marks else None
    hls = [int(h) for h in a.half_lives.split(",")] if a.half_lives else None
    rows: list[dict[str, Any]] = []
    results = Path(__file__).parent / "results"
    path = results / f"{a.name}.json"
    if a.append and path.is_file():
        rows = json.loads(path.read_text())["rows"]
    for part in a.parts:
        rows += json.loads((results / f"{part}.json").read_text())["rows"]
    for run in a.runs:
        rows += evaluate(Path(run), a.data, a.n, marks, hls, a.seed, a.cache, a.sampler, a.levels, a.guidance)
    rows.sort(key=lambda r: (r["data"] != "digits", r["size"], bool(r.get("conditional")), r["cpu_min"],
                             r.get("guidance", 0.0), r["ema_half_life_images"], r.get("sampler", "heun")))
    decision = decide(rows, json.loads((results / "images_speed.json").read_text())) if a.decide else None
    env = environment(torch.device("cpu"))
    md = (f"Image U-Net quality against CPU-minutes of training, {where(env)}, torch {env['torch']}, 1 thread "
          f"({env['clock']}): EMA weights sampled on a Karras grid (rho 7); metrics in the feature "
          "space of a classifier trained on the training images, against held-out real images (k = 3); in "
          "parentheses and after the slash the real-vs-real baseline.\n\n" + table(rows))
    if decision is not None:
        md += (f"\nDecision (the image recipe of `scorematch train`): size {decision['model_size']}"
               f"{', class-conditional' if decision['class_conditional'] else ''} (best at "
               f"{decision['compared_at_cpu_min']:g} CPU-min), {decision['precision']}, "
               f"batch {decision['batch_size']}, "
               f"{decision['steps']} steps ({BUDGET_MIN:g} CPU-min at {decision['step_s']:.3f} s a step), "
               f"warm-up {decision['lr_warmup']} steps, EMA half-life {decision['ema_half_life']:g} images, "
               f"sampler {decision['sampler']} with {decision['n_steps']} levels"
               + (f", guidance {decision['guidance']:g} without a label" if decision["class_conditional"] else "")
               + ".\n")
    write(a.name, {"environment": env, "rows": rows, **({"decision": decision} if decision else {})}, md)
    print(md)


if __name__ == "__main__":
    main()
