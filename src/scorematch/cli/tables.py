"""The commands on table runs: ``train`` of a CSV table with typed columns, ``sample``, ``eval`` and
``impute`` (``scorematch.run.tables.folder``). Each imports the run layer only when called."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scorematch.errors import ConfigError

#: train flags a table run takes (TrainConfig field -> TableImputer setting); any other is refused
TABLE_TRAIN_FLAGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "hidden": "hidden", "depth": "depth",
                     "label_dropout": "label_dropout", "ema_decay": "ema"}
#: flags of train that mean the run itself, not its model
_RUN_FLAGS = ("data", "seed", "test_fraction", "class_conditional", "objective", "progress")


def wants_table(args: argparse.Namespace) -> bool:
    """Whether ``train`` was asked for a table run: --table, --columns or --label-column, or a CSV
    file with text or blank cells (which the vector loader refuses)."""
    if args.table or args.columns is not None or args.label_column is not None:
        return True
    data = getattr(args, "data", None)
    if not data or not str(data).lower().endswith(".csv") or not Path(data).is_file():
        return False
    from scorematch.data.tables import read_csv_table
    from scorematch.errors import DataError

    try:
        t = read_csv_table(data)
    except DataError:
        return False
    return bool(t.missing().any()) or any(c.dtype == object for c in t.columns)


def _columns(spec: str | None) -> Any:
    if spec is None or not spec.lower().endswith(".json"):
        return spec
    from scorematch.data.schema_io import read_schema_text

    p = Path(spec)
    if not p.is_file():
        raise ConfigError(f"--columns {spec}: no such file; give NAME=KIND,... or a JSON file of column types")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--columns {spec} cannot be read ({type(err).__name__}); give a UTF-8 JSON file") from None
    return read_schema_text(text, str(p))


def _table_objective() -> str:
    """The catalogue name of the objective a table run trains: the entry of ``objectives.edm.edm``,
    whose loss the table run takes on the observed cells only (``objectives.masked.edm_masked``)."""
    from scorematch.objectives import catalogue
    from scorematch.objectives.edm import edm

    return next(e.name for e in catalogue.entries() if e.resolved() is edm)


def cmd_train_table(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from scorematch.run.tables.folder import train_table

    if args.resume is not None or args.config is not None or args.force or getattr(args, "nproc", None):
        raise ConfigError("--resume, --config, --force and --nproc do not apply to a table run")
    if not overrides.get("data"):
        raise ConfigError("a table run needs --data FILE.csv (a header line naming the columns)")
    objective = _table_objective()
    if overrides.get("objective", objective) != objective:
        raise ConfigError(f"a table run trains the EDM objective (masked to the observed cells); drop --objective "
                          f"{overrides['objective']}")
    bad = sorted(k for k in overrides if k not in TABLE_TRAIN_FLAGS and k not in _RUN_FLAGS)
    if bad:
        raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in bad)} do"
                          f"{'es' if len(bad) == 1 else ''} not apply to a table run; it takes "
                          + ", ".join("--" + k.replace("_", "-") for k in TABLE_TRAIN_FLAGS))
    settings = {TABLE_TRAIN_FLAGS[k]: v for k, v in overrides.items() if k in TABLE_TRAIN_FLAGS}
    for flag in ("epochs", "impute_epochs"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    data = Path(overrides["data"])
    out = args.out or Path("runs") / f"{data.stem}-table-s{overrides.get('seed', 0)}"
    if args.out is None:
        print(f"scorematch: no --out given: writing the run to {out}", file=sys.stderr)
    run = train_table(data, out, columns=_columns(args.columns), label_column=args.label_column,
                      class_conditional=bool(overrides.get("class_conditional")),
                      test_fraction=overrides.get("test_fraction", 0.2), seed=overrides.get("seed", 0), **settings)
    print(f"run folder: {run}  (table run: scorematch sample {run} --out rows.csv)")
    return 0


def cmd_sample_table(args: argparse.Namespace) -> int:
    from scorematch.run.tables.folder import sample_table

    used = [f for f in ("sampler", "inpaint", "inpaint_method", "particles", "resample", "guidance")
            if getattr(args, f, None) is not None]
    if used:
        raise ConfigError(f"{', '.join('--' + f.replace('_', '-') for f in used)} do not apply to a table run; "
                          "fill blanks with scorematch impute RUN TABLE.csv --out FILLED.csv")
    out = args.out if args.out is not None else args.run / "samples.csv"
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: a table run writes its rows as CSV; give a name ending in .csv")
    t = sample_table(args.run, 1000 if args.n is None else args.n, out, seed=args.seed, label=args.label,
                     claim=args.out is not None, force=args.force)
    print(f"wrote {t.n_rows} rows x {len(t.names)} columns to {out}")
    return 0


def _number(v: Any) -> str:
    """A metric as eval prints it: 4 significant digits, or n/a for one that could not be computed."""
    return "n/a" if v is None or v != v else f"{v:.4g}"


def cmd_eval_table(args: argparse.Namespace) -> int:
    from scorematch.files import write_json
    from scorematch.run.folder.outdir import claim_file, precheck_file
    from scorematch.run.tables.folder import _jsonable, eval_table

    if args.out is not None:
        precheck_file(args.out, args.force)
    res = _jsonable(eval_table(args.run, n=None if args.n == 2000 else args.n, seed=args.seed))
    if args.out is not None:
        claim_file(args.out, args.force)
        write_json(args.out, res, exclusive=True)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for key in ("wasserstein_mean", "correlation_error", "range_violations", "tstr_accuracy"):
        if key in res:
            v = res[key]
            base = v.get("baseline", v.get("real"))
            print(f"{key:20s} synthetic {_number(v['synthetic'])}   real vs real {_number(base)}")
    if "closest_record" in res:
        c = res["closest_record"]
        print(f"{'closest record':20s} synthetic {c['synthetic_median']:.4g}   held-out {c['held_out_median']:.4g}   "
              f"copies {c['synthetic_copies']:.3g}")
    if "range_violations_per_column" in res and "wasserstein_mean" not in res:
        print("range violations per column: " + json.dumps(res["range_violations_per_column"]))
    return 0


def cmd_impute(args: argparse.Namespace) -> int:
    from scorematch.run.tables.folder import impute_table, is_table_run

    if not args.run.is_dir():
        raise ConfigError(f"{args.run} is not a run folder; give the folder of a table run (scorematch train "
                          "--data TABLE.csv ...)")
    if not is_table_run(args.run):
        raise ConfigError(f"{args.run} is not a table run (no table.json); train one with scorematch train --data "
                          "TABLE.csv, or fill vectors with scorematch sample RUN --inpaint FILE.npz")
    if args.out.suffix.lower() != ".csv":
        raise ConfigError(f"--out {args.out}: the filled table is written as CSV; give a name ending in .csv")
    if args.draws < 1:
        raise ConfigError(f"--draws must be at least 1, got {args.draws}")
    t = impute_table(args.run, args.data, args.out, draws=args.draws, seed=args.seed, force=args.force)
    print(f"wrote {t.n_rows} rows to {args.out}" + (f" and {args.draws} completions beside it" if args.draws > 1
                                                     else ""))
    return 0


def add_impute_parser(sub: Any, int_type: Any) -> None:
    """The ``impute`` subcommand."""
    p = sub.add_parser("impute", help="fill the blank cells of a CSV table with a table run",
                       description="Fill every blank cell of TABLE.csv (same columns as the run's table) with the "
                                   "aggregate of --draws completions (mean of numeric columns, rounded for "
                                   "integers; most frequent value of the others); with --draws > 1 also writes "
                                   "OUT-draws.csv with every completion (a column 'draw' first).")
    p.add_argument("run", type=Path, help="table run folder")
    p.add_argument("data", type=Path, help="CSV table with blank cells")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--draws", type=int_type, default=10, help="completions per row (default: 10)")
    p.add_argument("--seed", type=int_type, default=0, help="seed (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="write --out (and OUT-draws.csv) even where a file is in the way: it is renamed NAME.orig "
                        "first, nothing is deleted (default: refuse)")
    p.add_argument("--threads", type=int_type, default=None, help="CPU threads of torch (default: 1)")
