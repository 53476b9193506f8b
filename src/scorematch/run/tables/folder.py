"""A table run: a CSV table trained with its column types, sampled, imputed and evaluated.

``train_table(data, out, ...)`` reads the CSV (header, text, blanks), splits off ``test_fraction``
of the rows (seed ``seed``; 0 keeps every row for training, with a warning that ``eval`` then has
no held-out rows), fits ``scorematch.tabular.TableImputer`` on the training rows (blanks left out
of the loss; class-conditional on ``label_column`` with ``class_conditional``) and writes

    table.json           the schema, the label column and its classes, the settings, the data's
                         SHA-256 and the row split, and the SHA-256 of both weights files
    weights.safetensors  the EMA weights of the denoiser (the generator)
    imputer.safetensors  the EMA weights of the conditional denoiser that imputes
    data.csv             the table as read (the rows of the split refer to it)

``load_table_run(RUN)`` reads it back, every field checked (CheckpointError naming the file for a
damaged run); ``sample_table``, ``impute_table`` and ``eval_table`` use it, each writing CSV or
JSON through the atomic writer.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from scorematch.data.columns import parse_columns
from scorematch.data.schema_io import schema_from_dict, schema_to_dict
from scorematch.data.tables import Table, read_csv_table, table_from_csv, table_to_csv
from scorematch.errors import CheckpointError, ConfigError, DataError, ScoreMatchWarning
from scorematch.files import atomic_write, write_json, write_text
from scorematch.models import EDMPrecond, MaskedDenoiser
from scorematch.run.folder.outdir import claim_file, precheck_file
from scorematch.run.folder.validate import parse_json, read_file
from scorematch.run.system.limits import MAX_STEPS, check_fits, check_steps
from scorematch.tabular import TableDiffusion, TableImputer

__all__ = ["TABLE_FILE", "eval_table", "impute_table", "is_table_run", "load_table_run", "sample_table",
           "train_table"]

TABLE_FILE = "table.json"
TABLE_FORMAT = 3
#: the estimator settings a table run records
SETTINGS = ("hidden", "depth", "steps", "epochs", "batch_size", "lr", "ema", "n_levels", "label_dropout", "guidance",
            "random_state", "draws", "impute_epochs", "impute_levels")
MAX_TABLE_RUN_BYTES = 2**31


def is_table_run(run: str | Path) -> bool:
    """Whether the folder ``run`` holds a table run (its table.json)."""
    return (Path(run) / TABLE_FILE).is_file()


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(test_fraction, int | float) and 0 <= test_fraction < 1):
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    n_test = int(math.floor(n * test_fraction))
    if test_fraction > 0 and n - n_test < 2:
        raise DataError(f"the table has {n} rows: too few to hold out {test_fraction:g} of them and train on the "
                        "rest; give more rows or --test-fraction 0")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def train_table(data: str | Path, out: str | Path, columns: Any = None, label_column: str | None = None,
                class_conditional: bool = False, test_fraction: float = 0.2, seed: int = 0,
                **settings: Any) -> Path:
    """Train a table run into the new or empty folder ``out`` (see the module docstring); ``settings``
    are TableImputer's (hidden, steps, batch_size, lr, ...). Returns the run folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; give a new folder for the run")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} do not apply to a table run")
    path = Path(data)
    table = read_csv_table(path)
    over = parse_columns(columns)
    if label_column is not None:
        table.column(label_column)
        if class_conditional:
            over.pop(label_column, None)  # the label's classes are the model's conditioning
        else:
            over.setdefault(label_column, {"kind": "categorical", "low": None, "high": None})
    if class_conditional and label_column is None:
        raise ConfigError("--class-conditional on a table needs --label-column NAME (the column of the classes)")
    train_rows, test_rows = _split(table.n_rows, test_fraction, seed)
    if len(test_rows) == 0:
        warnings.warn("--test-fraction 0: every row trains the model; eval will compute no held-out metrics",
                      ScoreMatchWarning, stacklevel=2)
    train = table.rows(train_rows)
    est = TableImputer(columns=over or None, random_state=seed, **settings)
    _check_lengths(est, len(train_rows))
    if class_conditional:
        yv = train.column(label_column)
        miss = np.array([v is None for v in yv]) if yv.dtype == object else np.isnan(yv)
        if miss.any():
            raise DataError(f"the label column {label_column!r} has {int(miss.sum())} blank cell(s); every "
                            "training row of a class-conditional run needs its label")
        # TableImputer.fit leaves labels out (in a Pipeline y is the target, not a condition); a
        # class-conditional table run trains on them: the estimator's own fit, with y
        TableDiffusion.fit(est, train.drop(label_column), yv)
        est.fit_imputer(train.drop(label_column))
    else:
        est.fit(train)
    weights = st_save({k: v.contiguous() for k, v in est.model_.state_dict().items()})
    imputer = st_save({k: v.contiguous() for k, v in est.imputer_.state_dict().items()})
    info = {
        "format": TABLE_FORMAT, "kind": "table", "schema": schema_to_dict(est.schema_),
        "label_column": label_column, "class_conditional": bool(class_conditional),
        "classes": [_plain(c) for c in getattr(est, "classes_", [])],
        "class_prior": [float(p) for p in getattr(est, "class_prior_", [])],
        "settings": {k: v for k, v in est.get_params().items() if k in SETTINGS},
        "model": est.model_.config, "imputer_model": est.imputer_.config, "steps_trained": est.steps_,
        "data": {"source": str(path.resolve()), "sha256": hashlib.sha256(table_to_csv(table).encode()).hexdigest(),
                 "rows": table.n_rows, "train_rows": train_rows.tolist(), "test_rows": test_rows.tolist()},
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "imputer_sha256": hashlib.sha256(imputer).hexdigest(),
    }
    atomic_write(out / "weights.safetensors", weights)
    atomic_write(out / "imputer.safetensors", imputer)
    write_text(out / "data.csv", table_to_csv(table))
    write_json(out / TABLE_FILE, info)
    return out


def _check_lengths(est: TableImputer, n: int) -> None:
    """ConfigError when --steps, or --epochs / --impute-epochs on ``n`` training rows, mean more than
    ``MAX_STEPS`` training steps (and for any invalid setting, before training)."""
    lengths = [("--impute-epochs", est.impute_epochs, est.imputer_training_steps(n))]
    if est.steps is None:
        lengths.append(("--epochs", est.epochs, est.training_steps(n)))
    else:
        check_steps("--steps", est.training_steps(n))
    for flag, epochs, steps in lengths:
        if steps > MAX_STEPS:
            raise ConfigError(f"{flag} {epochs} on {n} training rows means {steps} steps, more than the "
                              f"{MAX_STEPS} scorematch takes; use fewer")


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _text(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the table as a UTF-8 CSV file") from None


def load_table_run(run: str | Path) -> tuple[TableImputer, dict[str, Any], Table]:
    """(the fitted estimator, the contents of table.json, the table of data.csv) of the table run ``run``."""
    run = Path(run)
    where = run / TABLE_FILE
    info = parse_json(read_file(where, "JSON file"), where)
    if not isinstance(info, dict) or info.get("kind") != "table" or info.get("format") != TABLE_FORMAT:
        if isinstance(info, dict) and info.get("kind") == "table" and info.get("format") in range(1, TABLE_FORMAT):
            raise CheckpointError(f"{where} is a table run of format {info['format']}, older than this version's "
                                  f"{TABLE_FORMAT} (its imputation model differs); train it again (scorematch train "
                                  "--data ... --out NEW)")
        raise CheckpointError(f"{where} is not a scorematch table run (format {TABLE_FORMAT}); restore it")
    try:
        schema = schema_from_dict(info["schema"])
        settings, model_cfg, data = dict(info["settings"]), dict(info["model"]), dict(info["data"])
        imputer_cfg = dict(info["imputer_model"])
        if info["label_column"] is not None and not isinstance(info["label_column"], str):
            raise ValueError("label_column must be text")
        classes, prior = list(info["classes"]), [float(p) for p in info["class_prior"]]
        n_rows = int(data["rows"])
        train_rows, test_rows = (np.array(data[k], dtype=np.int64) for k in ("train_rows", "test_rows"))
    except (KeyError, TypeError, ValueError, DataError) as err:
        raise CheckpointError(f"{where} is damaged ({type(err).__name__}: {str(err)[:100]}); restore it") from None
    model = _load_weights(run, "weights.safetensors", info.get("weights_sha256"), where,
                          lambda: EDMPrecond(**model_cfg))
    imputer = _load_weights(run, "imputer.safetensors", info.get("imputer_sha256"), where,
                            lambda: MaskedDenoiser(**imputer_cfg))
    table = table_from_csv(_text(read_file(run / "data.csv", "CSV file", max_bytes=MAX_TABLE_RUN_BYTES,
                                           error=CheckpointError), run / "data.csv"), str(run / "data.csv"))
    if table.n_rows != n_rows or hashlib.sha256(table_to_csv(table).encode()).hexdigest() != data.get("sha256"):
        raise CheckpointError(f"{run / 'data.csv'} does not match {where}; restore it")
    if np.any((train_rows < 0) | (train_rows >= n_rows)) or np.any((test_rows < 0) | (test_rows >= n_rows)):
        raise CheckpointError(f"{where}: the row split points outside the table; restore it")
    est = TableImputer(**{k: v for k, v in settings.items() if k in SETTINGS})
    est.model_ = model.eval()
    est.imputer_ = imputer.eval()
    est.schema_ = schema
    est.n_features_in_ = len(schema.columns)
    est.output_kind_ = "table"
    if info.get("class_conditional"):
        est.classes_, est.class_prior_ = np.array(classes, dtype=object if isinstance(classes[0], str) else float), \
            np.array(prior)
    return est, info, table


def _load_weights(run: Path, name: str, sha256: Any, where: Path, build: Any) -> Any:
    """The module ``build()`` with the weights of ``run/name``, checked against ``sha256`` of table.json."""
    raw = read_file(run / name, "safetensors file", max_bytes=MAX_TABLE_RUN_BYTES)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise CheckpointError(f"{run / name} does not match its SHA-256 in {where}; restore it")
    try:
        model = build()
        model.load_state_dict(st_load(raw))
    except (SafetensorError, RuntimeError, TypeError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{run / name} does not fit the model of {where} ({str(err)[:100]}); "
                              "restore it") from None
    return model


def _classes_of(info: dict[str, Any], label: Any) -> Any:
    """``label`` (text from the command line) as one of the run's classes; ConfigError listing them."""
    classes = info["classes"]
    for c in classes:
        if str(c) == str(label) or (not isinstance(c, str) and _num(label) == c):
            return c
    raise ConfigError(f"unknown label {label!r}; the classes of column {info['label_column']!r} are "
                      f"{', '.join(map(str, classes[:20]))}")


def _num(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def check_rows(est: TableDiffusion, n: Any) -> int:
    """``n`` as a number of rows to draw from ``est``: an integer >= 1 whose draws fit in memory
    (the encoded rows in float64 and the sampler's float32 states: a lower bound), else ConfigError
    naming --n."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"--n must be an integer >= 1, got {n!r}")
    check_fits(f"--n {n}", 24.0 * n * max(est.schema_.dim, 1), "cpu", "use a smaller --n")
    return int(n)


def sample_table(run: str | Path, n: int, out: str | Path, seed: int = 0, label: Any = None,
                 claim: bool = True, force: bool = False) -> Table:
    """``n`` rows drawn from the table run (class ``label`` for a class-conditional run), written as CSV
    to ``out`` with the run's columns; returns the table. With ``claim`` (a file the user named) an
    ``out`` that exists is refused, or with ``force`` renamed NAME.orig first, and ``out`` is created
    exclusively."""
    est, info, trained = load_table_run(run)
    n = check_rows(est, n)
    if claim:
        precheck_file(Path(out), force)
    if label is not None and not info.get("class_conditional"):
        raise ConfigError("--label applies to a class-conditional table run (train with --label-column NAME "
                          "--class-conditional)")
    t = in_order(draw_table(est, info, n, seed, None if label is None else _classes_of(info, label)),
                 trained.names)
    if claim:
        claim_file(Path(out), force)
    write_text(out, table_to_csv(t), exclusive=claim)
    return t


def draw_table(est: TableImputer, info: dict[str, Any], n: int, seed: int, label: Any = None) -> Table:
    """``n`` rows drawn from the run's generator (class ``label``, a class of the run, or drawn from
    the class prior), the label column last for a class-conditional run."""
    if not info.get("class_conditional"):
        return est.sample(n, random_state=seed)
    x, y = est.sample(n, random_state=seed, label=label)
    col = np.array(list(y), dtype=object) if any(isinstance(v, str) for v in y) else np.asarray(y, dtype=np.float64)
    return Table((*x.names, info["label_column"]), (*x.columns, col))


def in_order(t: Table, names: tuple[str, ...]) -> Table:
    """``t`` with its columns in the order of ``names`` (a table the user gave), as far as it has them."""
    first = [n for n in names if n in t.names]
    order = first + [n for n in t.names if n not in first]
    return Table(tuple(order), tuple(t.column(n) for n in order))


def draws_path(out: str | Path) -> Path:
    """Where ``impute_table`` writes the completions beside ``out``: OUT-draws.csv."""
    o = Path(out)
    return o.with_name(o.stem + "-draws" + o.suffix)


def impute_table(run: str | Path, data: str | Path, out: str | Path, draws: int = 10, seed: int = 0,
                 force: bool = False) -> Table:
    """The CSV table ``data`` with its blank cells filled (the aggregate of ``draws`` completions in
    antithetic pairs, ``TableImputer.fill``), written to ``out``; with draws > 1, ``draws`` independent
    completions (``impute_draws``, for multiple imputation) are also written to OUT-draws.csv, a column
    ``draw`` first. Files in the way are refused, or with ``force`` renamed NAME.orig first; both
    are created exclusively."""
    est, info, _ = load_table_run(run)
    table = read_csv_table(data)
    order = table.names
    outputs = [(Path(out), "--out"), (draws_path(out), "the draws file")][: 2 if draws > 1 else 1]
    for path, flag in outputs:
        precheck_file(path, force, flag)
    lab = info["label_column"] if info.get("class_conditional") else None
    want = [c["name"] for c in info["schema"]["columns"]]
    kept = None
    if lab is not None and lab in table.names:  # imputed without it (the null label), written back as it was
        kept = table.column(lab)
        table = table.drop(lab)
    if sorted(table.names) != sorted(want):
        missing = [n for n in want if n not in table.names]
        extra = [n for n in table.names if n not in want]
        raise DataError(f"{data}: the columns differ from the run's"
                        + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(extra)}" if extra else ""))
    table = Table(tuple(want), tuple(table.column(n) for n in want))
    # the encoded draws (float64) and their float32 sampler states: a lower bound of what imputing needs
    check_fits(f"--draws {draws} of {table.n_rows} rows", 12.0 * draws * table.n_rows * max(est.schema_.dim, 1),
               "cpu", "use fewer --draws")
    filled = est.fill(table, draws, seed)
    completions = est.impute_draws(table, draws, seed) if draws > 1 else []
    if kept is not None:
        filled = Table((*filled.names, lab), (*filled.columns, kept))
        completions = [Table((*c.names, lab), (*c.columns, kept)) for c in completions]
    filled, completions = in_order(filled, order), [in_order(c, order) for c in completions]
    want = list(filled.names)
    for path, flag in outputs:
        claim_file(path, force, flag)
    write_text(out, table_to_csv(filled), exclusive=True)
    if draws > 1:
        cols = [np.concatenate([np.full(table.n_rows, float(k)) for k in range(draws)])]
        for j in range(len(want)):
            parts = [c.columns[j] for c in completions]
            cols.append(np.concatenate(parts) if parts[0].dtype != object else np.array(
                [v for p in parts for v in p], dtype=object))
        write_text(draws_path(out), table_to_csv(Table(("draw", *want), tuple(cols))), exclusive=True)
    return filled


def eval_table(run: str | Path, n: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Table metrics (``scorematch.metrics.tables``) of ``n`` sampled rows (default: as many as the
    training rows) against the held-out rows, with the training-vs-held-out baseline; without held-out
    rows only the range violations against the training rows. Also written to RUN/eval-table.json."""
    loaded = load_table_run(run)
    est, info, _ = loaded
    n = len(info["data"]["train_rows"]) if n is None else check_rows(est, n)
    return evaluate_drawn(run, loaded, draw_table(est, info, n, seed), seed)


def evaluate_drawn(run: str | Path, loaded: tuple[TableImputer, dict[str, Any], Table], synth: Table,
                   seed: int) -> dict[str, Any]:
    """``eval_table``'s metrics of the rows ``synth`` (``draw_table``) of the run ``loaded``
    (``load_table_run``)."""
    from scorematch.metrics.tables import range_violations, table_metrics

    est, info, table = loaded
    lab = info["label_column"]
    tr, te = (table.rows(np.array(info["data"][k], dtype=np.int64)) for k in ("train_rows", "test_rows"))
    n = synth.n_rows
    full = est.schema_
    if info.get("class_conditional"):
        from dataclasses import replace

        from scorematch.data.columns import Column
        levels = tuple(info["classes"])
        full = replace(full, columns=(*full.columns, Column(lab, "categorical", levels=levels)), mean=(), std=())
        tr, te = (Table(synth.names, tuple(t.column(c) for c in synth.names)) for t in (tr, te))
    res: dict[str, Any] = {"n_samples": n, "seed": seed, "held_out_rows": te.n_rows, "train_rows": tr.n_rows}
    if te.n_rows == 0:
        warnings.warn("the run has no held-out rows (--test-fraction 0): only range violations are computed",
                      ScoreMatchWarning, stacklevel=2)
        res["range_violations_per_column"] = range_violations(full, synth, tr)
        return res
    res.update(table_metrics(full, tr, te, synth, label=lab if lab in synth.names else None))
    write_json(Path(run) / "eval-table.json", _jsonable(res))
    return res


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

