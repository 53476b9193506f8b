"""The argument parser of ``scorematch``: every command, its flags and their help texts.

Imports nothing heavy (no torch), so ``scorematch --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from scorematch._version import __version__
from scorematch.objectives import catalogue as objective_catalogue
from scorematch.run.folder.config import MODEL_NAMES, SDE_NAMES, TrainConfig
from scorematch.samplers import catalogue as sampler_catalogue

#: help text of every TrainConfig field that is a CLI flag (the flag is --field-name)
TRAIN_HELP: dict[str, str] = {
    "data": "toy name, 'digits', mnist:DIR, fashion-mnist:DIR, cifar10:DIR, images:DIR (labelled when every image "
            "is in a sub-folder per class), or a .npy/.npz/.csv file of shape (n, D)",
    "objective": " | ".join(objective_catalogue.names()),
    "model": f"{' | '.join(MODEL_NAMES)}; auto picks the model the objective needs (images: image_unet, the "
             "multi-resolution U-Net, for ncsn, sde and edm, inside the EDM preconditioning for edm; vectors: "
             "ncsn_mlp, time_mlp); unet and time_unet are the earlier two-resolution image networks",
    "model_size": "size of the image U-Net: tiny | small | base (auto: the image recipe's, chosen by quality per "
                  "CPU-minute in the image benchmark; docs/benchmarks.md)",
    "precision": "fp32 | bf16: bf16 trains under bfloat16 autocast (CPU and CUDA; the loss, the optimizer and "
                 "the weights stay float32)",
    "lr_warmup": "raise the learning rate linearly from lr / K to lr over the first K steps (0: no warm-up)",
    "ema_half_life": "EMA of the weights as a half-life in training images (Karras et al. 2022; replaces "
                     "--ema-decay when given)",
    "steps": "total training steps (with --resume: continue up to this many; image U-Net: the image recipe's "
             "unless given)",
    "batch_size": "batch size (image U-Net: the image recipe's unless given)",
    "lr": "Adam learning rate",
    "seed": "seed of data sampling, noise draws and initialisation",
    "n_data": "number of points drawn from a toy distribution",
    "test_fraction": "fraction of the data held out for evaluation",
    "hidden": "MLP width",
    "depth": "MLP hidden layers",
    "activation": "MLP activation: silu (default) | softplus | tanh | elu | gelu | relu | leaky_relu",
    "base_channels": "channels of the first level of the earlier image networks (--model unet | time_unet)",
    "conditioning": "noise conditioning of the image NCSN: auto | embedding | divide",
    "sigma": "DSM noise level (default 0.1 x the data's mean std; in standardised units unless --standardize none)",
    "sigma_max": "largest noise level sigma_1 (NCSN / VE SDE; default: largest pairwise distance; EDM: where "
                 "sampling starts, default 160 sigma_data, EDM's 80 at sigma_data = 0.5; standardised units unless "
                 "--standardize none)",
    "sigma_min": "smallest noise level sigma_L (default 0.01; EDM: where sampling ends, default 0.004 sigma_data; "
                 "standardised units unless --standardize none)",
    "n_levels": "number of noise levels L (default: NCSNv2's rule from the data dimension)",
    "steps_per_sigma": "annealed Langevin steps per noise level T (default: 100 for D <= 4, else 5)",
    "bandwidth": "KDE bandwidth h for esm_kde (default: Scott's rule)",
    "n_projections": "SSM projections per point",
    "projection": "SSM projection law: gaussian | rademacher",
    "sde": f"SDE of the 'sde' objective: {' | '.join(SDE_NAMES)}",
    "likelihood_weighting": "weight the continuous-time DSM by g(t)^2 (likelihood weighting)",
    "p_mean": "EDM: mean of ln(sigma) of the training noise levels (default -1.2 + ln(sigma_data / 0.5), EDM's "
              "-1.2 moved to the data's scale)",
    "p_std": "EDM: standard deviation of ln(sigma) of the training noise levels",
    "class_conditional": "train a class-conditional model s(x, sigma, y) on labelled data (digits, mnist:DIR, "
                         "fashion-mnist:DIR, cifar10:DIR, images:DIR with one sub-folder per class) for "
                         "`scorematch sample --label K --guidance W` (objectives ncsn, sde, edm); the default "
                         "of the image U-Net on labelled images (--no-class-conditional: unconditional)",
    "label_dropout": "with --class-conditional: share of labels replaced by the null label in training, so the "
                     "model also learns the unconditional score that classifier-free guidance needs",
    "ema_decay": "decay of the exponential moving average of the weights (used for sampling)",
    "posthoc_ema_every": "keep power-function EMA snapshots (sigma_rel 0.05 and 0.10) every K steps in "
                         "RUN/posthoc-ema/, so that `scorematch ema RUN --sigma-rel S` gives the EMA of any length "
                         "afterwards (Karras et al. 2024; 0 = none)",
    "grad_clip": "clip the gradient norm to this value",
    "checkpoint_every": "write a checkpoint every K steps",
    "keep_checkpoints": "how many checkpoints to keep",
    "sample_every": "write a sample grid every K steps (image data; 0 = never)",
    "log_every": "log the loss every K steps",
    "skip_nonfinite": "skip batches whose loss is NaN/inf instead of stopping",
    "max_skipped": "with --skip-nonfinite: stop (exit 2) once more than this many batches were skipped",
    "collective_timeout": "seconds a process waits for the others at a collective operation (DDP) before "
                          "the run ends with an error",
    "dequantize": "uniform dequantisation of image data during training",
    "standardize": "auto: train vector data standardised per dimension, z = (x - mean) / std (samples, scores "
                   "and likelihoods are still given in data units); none: train on the data as it is. Images "
                   "are never standardised",
    "csv_header": "auto: a first CSV line that is not numeric is a header (said on stderr); yes: skip the first "
                  "line; no: never",
    "device": "auto | cpu | cuda | cuda:N | mps",
}

DEVICE_HELP = "auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps (default: auto)"
THREADS_HELP = ("CPU threads of torch (default: 1, measured fastest for the small models of scorematch on a "
                "shared 2-core machine; more may pay on a machine of your own)")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TRAIN_HELP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            switch = argparse.BooleanOptionalAction if f.name == "class_conditional" else "store_true"
            p.add_argument(flag, action=switch, default=None, help=TRAIN_HELP[f.name])
            continue
        kind = {"int": _int, "float": float, "str": str}
        typ = str
        for name, t in kind.items():
            if name in str(f.type):
                typ = t
                break
        suffix = "" if default is None else f" (default: {default})"
        p.add_argument(flag, type=typ, default=None, help=TRAIN_HELP[f.name] + suffix)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every scorematch error: the problem
    and where the help is (not argparse's usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"scorematch: error: {self.prog}: {' '.join(message.split())}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="scorematch",
        description="Learn the score grad_x log p(x) by score matching, and sample with it.",
    )
    parser.add_argument("--version", action="version", version=f"scorematch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a score model and write a run folder",
                       description="Train a score or energy model; writes RUN/config.json, run.json, "
                                   "weights.safetensors, checkpoints/, loss.csv, manifest.json; exits 128 + N when "
                                   "stopped by signal N (after a checkpoint).")
    t.add_argument("--out", type=Path, help="run folder to create: a new or empty folder, or a run that stopped "
                                            "before its first checkpoint (default: runs/DATA-OBJECTIVE-sSEED, "
                                            "printed on stderr)")
    t.add_argument("--force", action="store_true",
                   help="train into a non-empty --out folder that is not a scorematch run; nothing there is deleted: "
                        "files named like a run's (config.json, loss.csv, ...) are renamed NAME.orig")
    t.add_argument("--resume", type=Path, help="continue this run folder up to --steps (--lr, --grad-clip and a "
                                               "few other settings may change; see the docs)")
    t.add_argument("--config", type=Path, help="a JSON file of TrainConfig fields; flags override it")
    _add_common_flags(t, device=False, force=False)
    t.add_argument("--nproc", type=_int, default=None,
                   help="train with DDP on N processes of this machine; "
                        "for several machines call torchrun yourself (docs/multi-process.md)")
    _add_train_flags(t)
    g = t.add_argument_group("tables (a CSV with a header; text and blank cells allowed)")
    g.add_argument("--table", action="store_true",
                   help="train the CSV of --data as a table run with typed columns (implied by --columns, "
                        "--label-column, or text or blank cells in the CSV)")
    g.add_argument("--columns", default=None, metavar="SPEC",
                   help="column types overriding the inferred ones: NAME=KIND,... with KIND continuous, nonnegative, "
                        "bounded:LOW:HIGH, integer, binary, categorical or constant; or a JSON file "
                        '{"columns": {"NAME": "KIND"}}')
    g.add_argument("--label-column", default=None, metavar="NAME",
                   help="the column of class labels: with --class-conditional the model is conditioned on it "
                        "(sample --label K), else it is one more categorical column")
    g.add_argument("--epochs", type=_int, default=None, metavar="N",
                   help="passes over the rows that train the generator of a table run (default: 1000; --steps "
                        "fixes the number of steps instead)")
    g.add_argument("--impute-epochs", type=_int, default=None, metavar="N",
                   help="passes over the rows that train the imputation model of a table run (default: 1000)")

    s = sub.add_parser("sample", help="draw samples from a trained run",
                       description="Draw samples; writes an .npz with the array 'samples' (data space; "
                                   "images in [0, 1] as (n, C, H, W)) and, for images, a PNG grid beside it.")
    s.add_argument("run", type=Path, help="run folder")
    s.add_argument("--sampler", default=None, help=sampler_help())
    s.add_argument("--n", type=_int, default=None, help="number of samples (default: 1000; with --inpaint: one per "
                                                        "row of x)")
    s.add_argument("--seed", type=_int, default=0, help="sampler seed (default: 0)")
    s.add_argument("--out", type=Path, default=None,
                   help="a new output file, written exactly as named; it must end in .npz (default: RUN/samples.npz, "
                        "replaced); for a table run a .csv with the table's columns (default: RUN/samples.csv)")
    s.add_argument("--log-prob", action="store_true", help=log_prob_help())
    s.add_argument("--allow-nonfinite", action="store_true",
                   help="write the samples even when some are NaN/inf (default: refuse, exit 2, say what to try)")
    s.add_argument("--nproc", type=_int, default=None,
                   help="split sampling over N processes (torchrun) and gather the samples")
    s.add_argument("--start-index", type=_int, default=0, metavar="K",
                   help="first sample to draw: writes samples K .. K+n-1 of --seed, each the same as in any other call "
                        "(sample i depends only on the seed and i, not on --n, --batch-size or --nproc; default: 0)")
    s.add_argument("--batch-size", type=_int, default=None,
                   help="draw the samples this many at a time (less memory; the same samples; default: all at once)")
    _add_common_flags(s)
    _add_sampler_flags(s)
    _add_conditional_flags(s)

    e = sub.add_parser("eval", help="evaluate a run: Fisher divergence, MMD, sliced Wasserstein, precision/"
                                     "recall, likelihood",
                       description="Evaluate a run against its held-out data; prints a table and writes "
                                   "RUN/eval.json, or, when RUN/eval.json holds an evaluation with other settings "
                                   "(n, seed, sampler, sampler options, likelihood), "
                                   "RUN/eval-SAMPLER-nN-seedS[...].json: an evaluation is never overwritten by a "
                                   "different one.")
    e.add_argument("run", type=Path, help="run folder")
    e.add_argument("--n", type=_int, default=2000, help="number of samples to draw (default: 2000)")
    e.add_argument("--seed", type=_int, default=0, help="seed (default: 0)")
    e.add_argument("--sampler", default=None, help="sampler to evaluate: " + sampler_help())
    e.add_argument("--likelihood", action="store_true", default=None,
                   help="also compute the test log-likelihood through the probability-flow ODE")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--out", type=Path, default=None, help="write the evaluation to this new JSON file instead")
    e.add_argument("--inception-weights", type=Path, default=None, metavar="FILE.safetensors",
                   help="image runs: also the Inception FID, with this safetensors file of the FID Inception "
                        "network's state dict (torchvision Inception3 names; see the docs); never downloaded")
    _add_common_flags(e)
    _add_sampler_flags(e)

    pl = sub.add_parser("plot", help="plot a run: score field, density, samples, trajectories, losses",
                        description="Write PNG figures of a run into RUN/plots (or --out).")
    pl.add_argument("run", type=Path, help="run folder")
    pl.add_argument("--out", type=Path, default=None, help="a new or empty folder for the PNGs, or one plot wrote "
                                                                "before (default: RUN/plots)")
    pl.add_argument("--n", type=_int, default=1000, help="number of samples to draw (default: 1000)")
    pl.add_argument("--seed", type=_int, default=0, help="seed (default: 0)")
    _add_common_flags(pl)

    em = sub.add_parser("ema", help="the EMA of any length of a run trained with --posthoc-ema-every, as a new run",
                        description="Reconstruct the power-function EMA of relative length --sigma-rel from the "
                                    "snapshots of RUN/posthoc-ema (Karras et al. 2024) and write it as a new run "
                                    "folder (RUN's config, run.json and final weights, the reconstructed average "
                                    "as the EMA weights that sample, eval, plot and report use). Never overwrites.")
    em.add_argument("run", type=Path, help="run folder trained with --posthoc-ema-every K")
    em.add_argument("--sigma-rel", type=float, required=True,
                    help="EMA length relative to the training time, in (0, 0.2887] (e.g. 0.05 or 0.10, the "
                         "lengths kept; others are reconstructed)")
    em.add_argument("--out", type=Path, default=None, help="run folder to create (default: RUN-ema<SIGMA_REL>)")

    r = sub.add_parser("report", help="write a self-contained HTML report of a run",
                       description="Write one HTML file with the config, loss curves, evaluation table, "
                                   "figures and sample grids of a run, images embedded (no network, no "
                                   "JavaScript).")
    r.add_argument("run", type=Path, help="run folder")
    r.add_argument("--out", type=Path, default=None, help="a new HTML file to write (default: RUN/report.html, "
                                                               "replaced)")
    r.add_argument("--n", type=_int, default=500, help="number of samples to draw (default: 500)")
    r.add_argument("--seed", type=_int, default=0, help="seed (default: 0)")
    r.add_argument("--no-eval", action="store_true",
                   help="do not run the evaluation; use RUN/eval.json if there is one")
    _add_common_flags(r)
    from scorematch.cli.tables import add_impute_parser

    add_impute_parser(sub, _int)
    return parser


def _add_common_flags(p: argparse.ArgumentParser, device: bool = True, force: bool = True) -> None:
    """--device (train has it as a config flag), --force (train has its own), --threads,
    --trust-model-module and --no-progress."""
    if device:
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if force:
        p.add_argument("--force", action="store_true",
                       help="write --out even where a file (or, for plot, a folder not written by scorematch) is in "
                            "the way: it is renamed NAME.orig first, nothing is deleted (default: refuse)")
    p.add_argument("--threads", type=_int, default=None, help=THREADS_HELP)
    p.add_argument("--trust-model-module", action="store_true",
                   help="let the run folder's run.json name the module of a model class of your own that is then "
                        "imported (runs its code): only for folders you trust (default: refuse, saying which "
                        "module it wants; see docs/security.md)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar with rate and ETA on a terminal, a line every 10 s otherwise)")


def sampler_help() -> str:
    """The help of --sampler: the samplers by family and the default of each model kind, from the
    sampler catalogue."""
    from scorematch.samplers import catalogue as C

    families = "; ".join(f"{' | '.join(e.name for e in C.entries(f))} ({C.FAMILY_TEXT[f]})" for f in C.FAMILIES
                         if C.entries(f))
    defaults = []
    for kind in C.KINDS:
        try:
            name, settings = C.default_for(kind)
        except Exception:  # noqa: BLE001 - a kind without a default is left out of the help
            continue
        defaults.append(f"{kind}: {name}" + "".join(f", {k} {v}" for k, v in settings.items()))
    return f"{families}. Default, measured fastest to good samples: {'; '.join(defaults)}"


def log_prob_help() -> str:
    """The help of --log-prob: the samplers that return log-likelihoods, from the sampler catalogue."""
    from scorematch.samplers import catalogue as C

    able = " | ".join(e.name for e in C.entries() if e.log_prob) or "none"
    return (f"also each sample's log-likelihood under the model, in the same solve (--sampler {able}): array "
            "'log_prob' of the .npz (data units; the density at the solver's end point, before the final "
            "denoising step, which is then left out), its mean printed")


def sampler_flags() -> list[str]:
    """The sampler options that are command-line flags (--name-with-dashes), in catalogue order."""
    from scorematch.samplers import catalogue as C

    names: list[str] = []
    for e in C.entries():
        names += [o.name for o in e.options if o.flag and o.name not in names]
    return names


def _add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """One flag per sampler option of the catalogue; its help says which samplers take it and its
    default in each."""
    from scorematch.samplers import catalogue as C

    g = p.add_argument_group("sampler options (defaults from the run; an option of another sampler is refused)")
    for name in sampler_flags():
        uses = [(e.name, e.option(name)) for e in C.entries() if name in e.option_names()]
        texts: dict[str, list[str]] = {}
        for sampler, o in uses:
            texts.setdefault(o.help, []).append(sampler)
        typ = uses[0][1].type
        helptext = "; ".join(f"{', '.join(who)}: {text}" for text, who in texts.items())
        if typ is bool:  # a switch: on when given (its default is off)
            g.add_argument("--" + name.replace("_", "-"), action="store_true", default=None, help=helptext)
            continue
        g.add_argument("--" + name.replace("_", "-"), type=_int if typ is int else typ, help=helptext)


def _add_conditional_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("class-conditional sampling and inpainting")
    g.add_argument("--label", default=None,
                   help="sample this class (an index 0..K-1 or a class name of run.json) of a run trained with "
                        "--class-conditional (default: each sample's class drawn with the training data's class "
                        "shares, so the samples follow the whole data; null: the null label's unconditional score)")
    g.add_argument("--guidance", type=float, default=None,
                   help="class-conditional runs: classifier-free guidance weight w >= 0, score (1 + w) s(x, y) - "
                        "w s(x) (default with --label: 1.0; without, classes drawn with the data's shares: 0.5; "
                        "both measured on digits, see the docs)")
    g.add_argument("--inpaint", type=Path, default=None, metavar="FILE.npz",
                   help="fill in the unknown part of the samples in FILE.npz: arrays x (n, *sample shape, data "
                        "units; images in [0, 1]) and mask (True or 1 = known; the shape of x or one that "
                        "broadcasts to it); writes the n filled samples")
    g.add_argument("--inpaint-method", default=None, choices=("smc", "replace", "repaint"),
                   help="smc (default): sequential Monte Carlo, the one of the three that converges to the exact "
                        "conditional p(x_unknown | x_known) (on a 2-D mixture it matches it where replacement puts "
                        "up to 37%% of the samples in the wrong mode); replace: replacement with --sampler (default "
                        f"{sampler_catalogue.DEFAULT_DENOISING}), fast, approximate; repaint: replacement with "
                        "RePaint resampling (--resample)")
    g.add_argument("--particles", type=_int, default=None,
                   help="--inpaint-method smc: particles per row of x, one of them returned (default: 32)")
    g.add_argument("--resample", type=_int, default=None,
                   help="--inpaint-method repaint: repeats of each step (default: 10)")


def _int(text: str) -> int:
    """An integer flag; 1e6-style values are accepted when they are whole numbers."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not (v == v and abs(v) < 1e30 and v.is_integer()):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(v)
