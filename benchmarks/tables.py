"""`python -m benchmarks.tables [--only NAME ...] [--methods M ...] [--merge] [--no-forest] [--steps N] [--hidden H]
[--name NAME]`:
generators and imputers on scikit-learn's bundled tables, quality and time side by side.

Tables: iris (150 x 5, class label), wine (178 x 14, class label), breast cancer (569 x 31, 0/1
diagnosis), diabetes (442 x 11 with the raw integer target, no label). Each is split 70/30 into
training and held-out rows (seed 0).

Generators (trained on the training rows, as many rows drawn as there are training rows):
scorematch's ``TableDiffusion`` (class-conditional on the label), a multivariate Gaussian and a
Gaussian copula fitted to the same standardised encoding and decoded by the same schema (so their
values are valid too), and ForestDiffusion (Jolicoeur-Martineau et al. 2024; flow, XGBoost,
n_t = 20, duplicate_K = 10: its defaults 50 and 100 multiply its work by 25) when it is
installed. Metrics
(``scorematch.metrics.tables``) against the held-out rows, with the train-vs-held-out baseline;
W1 and correlation error also on 10 x n drawn rows (the model's distribution without the sampling
noise of n rows).

Imputers (on all rows, 20% of the feature cells hidden completely at random, seed 0): column
mean, scikit-learn's IterativeImputer (BayesianRidge, 10 rounds; with ``sample_posterior`` for
its draws) on the raw table and, as a linear reference in the model's space, on scorematch's
standardised encoding (decoded by the same schema), IterativeImputer with extremely randomised
trees (a missForest-like nonlinear reference), KNNImputer (k = 5), scorematch's
``TableImputer`` (its conditional denoiser: the mean of 19 draws in antithetic pairs, and 19
independent draws for the coverage) and ForestDiffusion's imputation (VP, RePaint) when
installed. RMSE over the hidden cells in units of each column's sd,
and the coverage of the hidden values by the range of 19 draws, a 90% interval for a calibrated
imputer (19 exchangeable draws and the truth: the truth is outside [min, max] with chance 2/20).

Time is the process's CPU time at one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1),
XGBoost n_jobs=1), so a shared machine's load does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from benchmarks.common import RESULTS, environment, markdown_table, write  # noqa: E402
from scorematch.data.columns import decode, encode, infer_schema  # noqa: E402
from scorematch.data.tables import Table, as_table  # noqa: E402
from scorematch.metrics.tables import column_wasserstein, correlation_error, table_metrics  # noqa: E402
from scorematch.tabular import TableDiffusion, TableImputer  # noqa: E402

TABLES = ("iris", "wine", "breast_cancer", "diabetes")
DRAWS = 19
#: the model's distribution is also measured on MANY x n drawn rows
MANY = 10
MISSING = 0.2
#: ForestDiffusion's noise levels and noise draws per row (its defaults, 50 and 100, take minutes of CPU
#: per table here)
FOREST_NT, FOREST_K = 20, 10


def load(name: str) -> tuple[Table, str | None]:
    """The bundled table as a Table (label column last, named 'label') and the label's name."""
    from sklearn import datasets

    if name == "diabetes":
        d = datasets.load_diabetes(scaled=False)
        names = [str(f) for f in d.feature_names] + ["progression"]
        x = np.column_stack([d.data, d.target])
        return as_table(x, names), None
    d = getattr(datasets, f"load_{name}")()
    names = [str(f).replace(" ", "_") for f in d.feature_names] + ["label"]
    x = np.column_stack([d.data, d.target])
    return as_table(x, names), "label"


def _split(t: Table, seed: int = 0) -> tuple[Table, Table]:
    idx = np.random.default_rng(seed).permutation(t.n_rows)
    cut = int(round(0.7 * t.n_rows))
    return t.rows(np.sort(idx[:cut])), t.rows(np.sort(idx[cut:]))


def _distribution(schema: Any, train: Table, held: Table, many: Table) -> dict[str, float]:
    """W1 and correlation error over their real-vs-real values for MANY x n drawn rows: the model's
    distribution with the sampling noise of n rows taken out."""
    w, base = column_wasserstein(schema, many, held, train), column_wasserstein(schema, train, held, train)
    return {"wasserstein_ratio_many": float(np.mean(list(w.values())) / np.mean(list(base.values()))),
            "correlation_ratio_many": correlation_error(schema, many, held) / correlation_error(schema, train, held)}


def _cpu() -> float:
    return time.process_time()


# ------------------------------------------------------------------------------------------ generators


Draw = Callable[[int, int], Table]  # draw(n, seed): n synthetic rows


def gen_scorematch(train: Table, label: str | None, schema: Any, args: Any, seed: int) -> Draw:
    m = TableDiffusion(steps=args.steps, epochs=args.epochs, hidden=args.hidden, random_state=seed,
                       columns={c.name: c.kind for c in schema.columns if c.name != label and c.kind != "bounded"})
    if label is None:
        m.fit(train)
        return lambda n, s: m.sample(n, random_state=s)
    m.fit(train.drop(label), train.column(label))

    def draw(n: int, s: int) -> Table:
        x, y = m.sample(n, random_state=s)
        return Table(train.names, (*x.columns, np.asarray(y, dtype=np.float64)))

    return draw


def gen_gaussian(train: Table, label: str | None, schema: Any, args: Any, seed: int) -> Draw:
    z = encode(schema, train)
    mean, cov = z.mean(0), np.cov(z, rowvar=False)
    return lambda n, s: decode(schema, np.random.default_rng(s).multivariate_normal(mean, cov, size=n, method="eigh"))


def gen_copula(train: Table, label: str | None, schema: Any, args: Any, seed: int) -> Draw:
    from scipy.stats import norm, rankdata

    z = encode(schema, train)
    corr = np.corrcoef(norm.ppf((np.apply_along_axis(rankdata, 0, z) - 0.5) / len(z)), rowvar=False)

    def draw(n: int, s: int) -> Table:
        g = np.random.default_rng(s).multivariate_normal(np.zeros(z.shape[1]), corr, size=n, method="eigh")
        return decode(schema, np.column_stack([np.quantile(z[:, j], norm.cdf(g[:, j])) for j in range(z.shape[1])]))

    return draw


def _forest_indexes(schema: Any, label: str | None) -> dict[str, list[int]]:
    cols = [c for c in schema.columns if c.name != label]
    return {"bin_indexes": [i for i, c in enumerate(cols) if c.kind == "binary"],
            "cat_indexes": [i for i, c in enumerate(cols) if c.kind == "categorical"],
            "int_indexes": [i for i, c in enumerate(cols) if c.kind == "integer"]}


def _writable_clip(model_class: Any) -> None:
    """ForestDiffusion 1.0.6 rounds integer columns in place in ``clip_extremes``, which fails on the
    read-only arrays pandas 3 hands out (copy-on-write); give it a copy."""
    clip = model_class.clip_extremes
    if not getattr(clip, "copies", False):
        def copying(self: Any, x: np.ndarray) -> np.ndarray:
            return clip(self, np.array(x))

        copying.copies = True  # type: ignore[attr-defined]
        model_class.clip_extremes = copying


def gen_forest(train: Table, label: str | None, schema: Any, args: Any, seed: int) -> Draw:
    from ForestDiffusion import ForestDiffusionModel

    _writable_clip(ForestDiffusionModel)
    x = (train.drop(label) if label else train).to_numpy()
    y = train.column(label) if label else None
    m = ForestDiffusionModel(x, label_y=y, n_t=FOREST_NT, duplicate_K=FOREST_K, diffusion_type="flow", n_jobs=1,
                             seed=seed, **_forest_indexes(schema, label))

    def draw(n: int, s: int) -> Table:
        np.random.seed(s)  # ForestDiffusion draws its starting noise from numpy's global generator
        out = m.generate(batch_size=n)
        return Table(train.names, tuple(np.ascontiguousarray(out[:, j], dtype=np.float64) for j in range(out.shape[1])))

    return draw


GENERATORS = {"scorematch": gen_scorematch, "gaussian": gen_gaussian, "copula": gen_copula,
              "forestdiffusion": gen_forest}


# ------------------------------------------------------------------------------------------- imputers


def _hide(t: Table, label: str | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hide = rng.random((t.n_rows, len(t.names))) < MISSING
    if label is not None:
        hide[:, t.names.index(label)] = False
    full = hide.all(axis=1)
    hide[full, 0] = False
    return hide


def imp_mean(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.impute import SimpleImputer

    return SimpleImputer().fit_transform(x), None


def imp_iterative(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point = IterativeImputer(max_iter=10, random_state=0).fit_transform(x)
        draws = np.stack([IterativeImputer(max_iter=10, sample_posterior=True, random_state=k).fit_transform(x)
                          for k in range(DRAWS)])
    return point, draws


def imp_iterative_encoded(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """IterativeImputer on scorematch's standardised encoding of the table (log of nonnegative
    columns, one-hot categories), decoded by the same schema: a linear reference in the model's space."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    t = as_table(x, list(schema.names))
    schema = infer_schema(t, {c.name: c.kind for c in schema.columns if c.kind != "bounded"})  # the blanks' table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = IterativeImputer(max_iter=10, random_state=0).fit_transform(encode(schema, t))
    return decode(schema, z).to_numpy(), None


def imp_iterative_trees(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """IterativeImputer with extremely randomised trees (100, leaves of 2 or more rows, 5 rounds): a
    missForest-like nonlinear reference (Stekhoven & Buehlmann 2012)."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    trees = ExtraTreesRegressor(n_estimators=100, min_samples_leaf=2, random_state=0, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return IterativeImputer(trees, max_iter=5, random_state=0).fit_transform(x), None


def imp_knn(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.impute import KNNImputer

    return KNNImputer(n_neighbors=5).fit_transform(x), None


def imp_scorematch(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    kinds = {f"x{j}": c.kind for j, c in enumerate(schema.columns) if c.kind != "bounded"}
    m = TableImputer(steps=args.steps, hidden=args.hidden, draws=DRAWS, random_state=0, columns=kinds,
                     impute_epochs=args.impute_epochs).fit(x)
    point = m.transform(x)  # the mean of DRAWS completions in antithetic pairs
    return point, np.stack([t.to_numpy() for t in m.impute_draws(as_table(x))])  # independent ones


def imp_forest(x: np.ndarray, args: Any, schema: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from ForestDiffusion import ForestDiffusionModel

    _writable_clip(ForestDiffusionModel)
    m = ForestDiffusionModel(x, n_t=FOREST_NT, duplicate_K=FOREST_K, diffusion_type="vp", n_jobs=1, seed=0,
                             **_forest_indexes(schema, None))
    draws = np.stack(m.impute(k=DRAWS, repaint=True, r=10, j=5))
    return draws.mean(0), draws


IMPUTERS = {"mean": imp_mean, "iterative": imp_iterative, "iterative_encoded": imp_iterative_encoded,
            "iterative_trees": imp_iterative_trees, "knn": imp_knn,
            "scorematch": imp_scorematch, "forestdiffusion": imp_forest}


def imputation_scores(x: np.ndarray, hide: np.ndarray, point: np.ndarray, draws: np.ndarray | None) -> dict:
    sd = np.where(x.std(0) > 0, x.std(0), 1.0)
    err = ((point - x) / sd)[hide]
    out = {"rmse_sd": float(np.sqrt(np.mean(err**2)))}
    if draws is not None:
        lo, hi = draws.min(0), draws.max(0)
        out["coverage90"] = float(np.mean(((x >= lo) & (x <= hi))[hide]))
    return out


# ------------------------------------------------------------------------------------------------ main


def _mean_of(runs: list[Any]) -> Any:
    """The mean of the numbers at the same place in each of ``runs`` (nested dicts); others from the first."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: _mean_of([r[k] for r in runs]) for k in first}
    if isinstance(first, int | float) and not isinstance(first, bool):
        return float(np.mean(runs))
    return first


def _wanted(method: str, args: Any) -> bool:
    return method in args.methods and not (method == "forestdiffusion" and args.no_forest)


def run_table(name: str, args: Any, env: dict) -> dict:
    t, label = load(name)
    over = {label: "categorical"} if label else {}
    train, held = _split(t)
    schema = infer_schema(train, over)
    res: dict[str, Any] = {"rows": t.n_rows, "columns": len(t.names), "label": label, "generators": {},
                           "imputers": {}, "kinds": {c.name: c.kind for c in schema.columns}}
    for g, fn in GENERATORS.items():
        if not _wanted(g, args):
            continue
        runs = []
        try:
            for seed in range(args.seeds):
                t0 = _cpu()
                draw = fn(train, label, schema, args, seed)
                synth = draw(train.n_rows, seed + 1)
                sec = _cpu() - t0
                runs.append({**table_metrics(schema, train, held, synth, label=label), "cpu_s": sec,
                             **_distribution(schema, train, held, draw(MANY * train.n_rows, seed + 1000))})
        except ImportError as err:
            res["generators"][g] = {"skipped": f"not installed ({err.name})"}
            continue
        m = _mean_of(runs)
        m["seeds"] = args.seeds
        m["wasserstein_ratio_per_seed"] = [r["wasserstein_mean"]["synthetic"] / r["wasserstein_mean"]["baseline"]
                                           for r in runs]
        res["generators"][g] = m
        print(f"{name:14s} {g:16s} W1 {m['wasserstein_mean']['synthetic']:.3f} (base "
              f"{m['wasserstein_mean']['baseline']:.3f}) corr {m['correlation_error']['synthetic']:.3f} (base "
              f"{m['correlation_error']['baseline']:.3f}) tstr {m.get('tstr_accuracy')} {sec:.1f}s", flush=True)
    if args.no_impute:
        return res
    x = t.to_numpy()
    hide = _hide(t, label)
    xm = np.where(hide, np.nan, x)
    full_schema = infer_schema(t, over)
    for i, fn in IMPUTERS.items():
        if not _wanted(i, args):
            continue
        t0 = _cpu()
        try:
            point, draws = fn(xm, args, full_schema)
        except ImportError as err:
            res["imputers"][i] = {"skipped": f"not installed ({err.name})"}
            continue
        sec = _cpu() - t0
        sc = imputation_scores(x, hide, point, draws)
        sc["cpu_s"] = sec
        res["imputers"][i] = sc
        print(f"{name:14s} impute {i:12s} {sc} ", flush=True)
    return res


def report(results: dict, env: dict) -> str:
    rows = []
    for name, r in results.items():
        for g, m in r["generators"].items():
            if "skipped" in m:
                rows.append([name, g, m["skipped"], None, None, None, None, None, None, None])
                continue
            tstr = m.get("tstr_accuracy")
            rows.append([name, g, m["wasserstein_mean"]["synthetic"], m["wasserstein_mean"]["baseline"],
                         m["correlation_error"]["synthetic"], m["correlation_error"]["baseline"],
                         tstr["synthetic"] if tstr else None, tstr["real"] if tstr else None,
                         m["closest_record"]["ratio"], f"{m['cpu_s']:.1f} s"])
    gen = markdown_table(["table", "generator", "W1/sd", "W1 real", "corr err", "corr real", "TSTR acc",
                          "TRTR acc", "DCR ratio", "CPU time"], rows)
    rows = []
    for name, r in results.items():
        for i, m in r.get("imputers", {}).items():
            if "skipped" in m:
                rows.append([name, i, m["skipped"], None, None])
                continue
            rows.append([name, i, m["rmse_sd"], m.get("coverage90"), f"{m['cpu_s']:.1f} s"])
    imp = markdown_table(["table", "imputer", "RMSE/sd", "coverage of 90%", "CPU time"], rows)
    return _header(results, env) + f"{gen}\n{imp}\n{_against_targets(results)}"


def _against_targets(results: dict) -> str:
    """Each method with a generator and an imputer against the quality targets: W1 and correlation error
    over real-vs-real, TSTR - TRTR, RMSE over IterativeImputer's, coverage; CPU of one generator run
    and of the imputer (scorematch's imputer time includes training its generator)."""
    rows = []
    for name, r in results.items():
        it = r.get("imputers", {}).get("iterative", {}).get("rmse_sd")
        for method in ("scorematch", "forestdiffusion", "copula"):
            g, i = r["generators"].get(method, {}), r.get("imputers", {}).get(method, {})
            if "wasserstein_mean" not in g:
                continue
            tstr = g.get("tstr_accuracy")
            rows.append([name, method, g["wasserstein_mean"]["synthetic"] / g["wasserstein_mean"]["baseline"],
                         g["correlation_error"]["synthetic"] / g["correlation_error"]["baseline"],
                         g.get("wasserstein_ratio_many"), g.get("correlation_ratio_many"),
                         f"{tstr['synthetic'] - tstr['real']:+.3f}" if tstr else None,
                         i["rmse_sd"] / it if "rmse_sd" in i and it else None, i.get("coverage90"),
                         f"{g['cpu_s']:.1f} s / {i['cpu_s']:.1f} s" if "cpu_s" in i else f"{g['cpu_s']:.1f} s",
                         int(g.get("seeds", 1))])
    return markdown_table(["table", "method", "W1 / real (<= 1.2)", "corr / real (<= 1.1)", "W1, 10 n rows",
                           "corr, 10 n rows", "TSTR - TRTR (>= -0.01)",
                           "RMSE / IterativeImputer (<= 0.8)", "coverage (0.85-0.95)", "CPU generate / impute",
                           "generator seeds"], rows)


def _header(results: dict, env: dict) -> str:
    first = next(iter(results.values()))
    return (f"Measured on {env['cpu']}, torch {env['torch']}, one thread, {env['date']}; TableDiffusion "
            f"epochs={first.get('epochs')} (steps={first['steps']}), hidden={first['hidden']}, TableImputer "
            f"impute_epochs={first.get('impute_epochs')}; generators averaged over their seeds.\n\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=TABLES, default=list(TABLES))
    p.add_argument("--methods", nargs="+", choices=sorted({*GENERATORS, *IMPUTERS}),
                   default=sorted({*GENERATORS, *IMPUTERS}), help="the generators and imputers to run")
    p.add_argument("--merge", action="store_true",
                   help="update these methods' entries in the existing results file, keeping the others")
    p.add_argument("--no-forest", action="store_true", help="leave ForestDiffusion out")
    p.add_argument("--no-impute", action="store_true", help="generators only")
    p.add_argument("--steps", type=int, default=TableDiffusion().steps)
    p.add_argument("--epochs", type=int, default=TableDiffusion().epochs)
    p.add_argument("--seeds", type=int, default=3, help="generator seeds (training and sampling) averaged")
    p.add_argument("--hidden", type=int, default=TableDiffusion().hidden)
    p.add_argument("--impute-epochs", type=int, default=TableImputer().impute_epochs)
    p.add_argument("--name", default="tables", help="results file name under benchmarks/results/")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(torch.device("cpu"))
    results: dict[str, Any] = {}
    if args.merge:
        results = json.loads((RESULTS / f"{args.name}.json").read_text())["results"]
    for name in args.only:
        new = run_table(name, args, env)
        new.update(steps=args.steps, epochs=args.epochs, hidden=args.hidden, impute_epochs=args.impute_epochs)
        if args.merge and name in results:
            for part in ("generators", "imputers"):
                results[name][part].update(new[part])
            if "scorematch" in args.methods:
                results[name].update({k: new[k] for k in ("steps", "epochs", "hidden", "impute_epochs")})
        else:
            results[name] = new
    write(args.name, {"environment": env, "results": results}, report(results, env))


if __name__ == "__main__":
    main()
