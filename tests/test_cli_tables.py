"""Table runs from the command line: train a CSV with blanks, text and a label; sample, impute, eval;
every user mistake one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from scorematch.data.tables import Table, read_csv_table, table_to_csv

FAST = ["--steps", "60", "--hidden", "32", "--depth", "2", "--impute-epochs", "5"]


def _csv(path, n=90, seed=0, blanks=0.1):
    rng = np.random.default_rng(seed)
    lines = ["size,count,colour,kind"]
    for _ in range(n):
        k = int(rng.integers(0, 2))
        size = rng.normal(3 + 2 * k, 0.5)
        count = int(rng.poisson(2 + 3 * k))
        colour = ["red", "blue", "green"][int(rng.integers(0, 3))]
        cells = [f"{size:.3f}", str(count), colour]
        cells = ["" if rng.random() < blanks else c for c in cells]
        lines.append(",".join(cells + [["ale", "lager"][k]]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tables")
    data = _csv(d / "beer.csv")
    from scorematch.cli import main

    rc = main(["train", "--data", str(data), "--label-column", "kind", "--class-conditional", *FAST,
               "--out", str(d / "run")])
    assert rc == 0
    return d


def test_train_sample_with_label_keeps_columns_and_types(table_run, capsys):
    out = table_run / "lager.csv"
    rc, stdout, err = run_cli(["sample", table_run / "run", "--n", 40, "--label", "lager", "--out", out], capsys)
    assert rc == 0, err
    t = read_csv_table(out)
    assert t.names == ("size", "count", "colour", "kind")
    assert set(t.column("kind").tolist()) == {"lager"}
    assert set(t.column("colour").tolist()) <= {"red", "blue", "green"}
    c = t.column("count")
    assert np.all(c == np.round(c)) and not np.isnan(c).any()


@pytest.mark.parametrize("fmt", [1, 2])
def test_a_run_of_an_earlier_format_is_refused_in_one_line(table_run, tmp_path, capsys, fmt):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(table_run / "run", old)
    info = json.loads((old / "table.json").read_text())
    info["format"] = fmt
    (old / "table.json").write_text(json.dumps(info))
    rc, _, err = run_cli(["sample", old, "--n", 5, "--out", tmp_path / "s.csv"], capsys)
    assert_one_line_error(rc, err, f"format {fmt}")
    assert "train it again" in err


def test_impute_fills_every_blank_and_keeps_the_rest(table_run, capsys):
    src = _csv(table_run / "holes.csv", n=12, seed=5, blanks=0.3)
    out = table_run / "filled.csv"
    rc, stdout, err = run_cli(["impute", table_run / "run", src, "--out", out, "--draws", 3], capsys)
    assert rc == 0, err
    before, after = read_csv_table(src), read_csv_table(out)
    assert after.names == before.names and not after.missing().any()
    keep = ~before.missing()
    for j, name in enumerate(before.names):
        a, b = before.column(name), after.column(name)
        assert [x for x, k in zip(a, keep[:, j], strict=True) if k] == [y for y, k in zip(b, keep[:, j], strict=True)
                                                                         if k]
    draws = read_csv_table(table_run / "filled-draws.csv")
    assert draws.names[0] == "draw" and draws.n_rows == 3 * before.n_rows


def test_eval_writes_table_metrics_with_baselines(table_run, capsys):
    rc, stdout, err = run_cli(["eval", table_run / "run", "--json"], capsys)
    assert rc == 0, err
    res = json.loads(stdout)
    assert set(res["wasserstein_mean"]) == {"synthetic", "baseline"}
    assert 0 <= res["tstr_accuracy"]["synthetic"] <= 1
    assert res["range_violations"]["synthetic"] >= 0
    assert (table_run / "run" / "eval-table.json").is_file()


def test_test_fraction_zero_warns_and_eval_has_no_held_out_metrics(tmp_path, capsys):
    data = _csv(tmp_path / "t.csv", n=30)
    rc, stdout, err = run_cli(["train", "--data", data, "--test-fraction", 0, *FAST, "--steps", 20, "--out",
                               tmp_path / "run"], capsys)
    assert rc == 0, err
    assert "no held-out metrics" in err
    rc, stdout, err = run_cli(["eval", tmp_path / "run"], capsys)
    assert rc == 0 and "only range violations" in err


@pytest.mark.parametrize("case", ["missing", "empty", "header_only", "bad_column", "bad_kind", "label_missing",
                                  "objective", "impute_epochs_vector", "epochs_vector", "epochs_zero",
                                  "epochs_absurd", "impute_epochs_absurd", "steps_absurd"])
def test_train_mistakes_are_one_line(tmp_path, capsys, case):
    data = _csv(tmp_path / "t.csv", n=20)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "head.csv").write_text("a,b\n")
    (tmp_path / "num.csv").write_text("a,b\n" + "".join(f"{i},{i * i}\n" for i in range(20)))
    args = {
        "missing": ["--data", tmp_path / "nope.csv", "--table"],
        "empty": ["--data", tmp_path / "empty.csv", "--table"],
        "header_only": ["--data", tmp_path / "head.csv", "--table"],
        "bad_column": ["--data", data, "--columns", "weight=integer"],
        "bad_kind": ["--data", data, "--columns", "size=weird"],
        "label_missing": ["--data", data, "--label-column", "brand"],
        "objective": ["--data", data, "--table", "--objective", "dsm"],
        "impute_epochs_vector": ["--data", tmp_path / "num.csv"],  # FAST has --impute-epochs
        "epochs_vector": ["--data", tmp_path / "num.csv", "--epochs", "5"],
        "epochs_zero": ["--data", data, "--epochs", "0"],
        "epochs_absurd": ["--data", data, "--epochs", "1e9"],
        "impute_epochs_absurd": ["--data", data, "--impute-epochs", "1e9"],
        "steps_absurd": ["--data", data, "--steps", "1e12"],
    }[case]
    needle = {"missing": "does not exist", "empty": "empty", "header_only": "no rows", "bad_column": "weight",
              "bad_kind": "unknown type", "label_missing": "brand", "objective": "EDM",
              "impute_epochs_vector": "applies to a table run", "epochs_vector": "applies to a table run",
              "epochs_zero": "epochs", "epochs_absurd": "--epochs 1000000000 on 16 training rows",
              "impute_epochs_absurd": "--impute-epochs 1000000000", "steps_absurd": "more than"}[case]
    fast = [a for a in FAST if a not in ("--steps", "60")] if case == "epochs_absurd" else FAST
    rc, _, err = run_cli(["train", *fast, *args, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "run").exists()


def test_epochs_set_the_generators_training_length(tmp_path, capsys):
    """--epochs E on n training rows: ceil(E n / 256) steps (40 rows, 0.2 held out: 32 rows)."""
    data = _csv(tmp_path / "t.csv", n=40)
    fast = [a for a in FAST if a not in ("--steps", "60")]
    rc, _, err = run_cli(["train", "--data", data, *fast, "--epochs", "17", "--out", tmp_path / "run"], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "run" / "table.json").read_text())
    assert info["steps_trained"] == 3 and info["settings"]["epochs"] == 17 and info["settings"]["steps"] is None


def test_sample_and_impute_mistakes_are_one_line(table_run, tmp_path, capsys):
    run = table_run / "run"
    rc, _, err = run_cli(["sample", run, "--label", "stout", "--out", tmp_path / "x.csv"], capsys)
    assert_one_line_error(rc, err, "unknown label 'stout'", "ale, lager")
    rc, _, err = run_cli(["sample", run, "--out", tmp_path / "x.npz"], capsys)
    assert_one_line_error(rc, err, ".csv")
    for command in (["sample", run, "--out", tmp_path / "x.csv"], ["eval", run], ["report", run]):
        rc, _, err = run_cli([*command, "--n", "0"], capsys)
        assert_one_line_error(rc, err, "--n must be an integer >= 1, got 0")
        rc, _, err = run_cli([*command, "--n", "1e13"], capsys)
        assert_one_line_error(rc, err, "--n 10000000000000 needs at least", "use a smaller --n")
    assert not (tmp_path / "x.csv").exists()
    rc, _, err = run_cli(["impute", run, run / "data.csv", "--out", tmp_path / "f.csv", "--draws", "1e12"], capsys)
    assert_one_line_error(rc, err, "--draws 1000000000000", "use fewer --draws")
    assert not (tmp_path / "f.csv").exists()
    rc, _, err = run_cli(["impute", run, tmp_path / "nope.csv", "--out", tmp_path / "f.csv"], capsys)
    assert_one_line_error(rc, err, "does not exist")
    (tmp_path / "empty.csv").write_text("")
    rc, _, err = run_cli(["impute", run, tmp_path / "empty.csv", "--out", tmp_path / "f.csv"], capsys)
    assert_one_line_error(rc, err, "empty")
    (tmp_path / "other.csv").write_text("size,weight\n1,2\n")
    rc, _, err = run_cli(["impute", run, tmp_path / "other.csv", "--out", tmp_path / "f.csv"], capsys)
    assert_one_line_error(rc, err, "missing count, colour", "unknown weight")
    (tmp_path / "text.csv").write_text("size,count,colour\n1.5,abc,red\n")
    rc, _, err = run_cli(["impute", run, tmp_path / "text.csv", "--out", tmp_path / "f.csv"], capsys)
    assert_one_line_error(rc, err, "count")
    rc, _, err = run_cli(["impute", tmp_path, tmp_path / "text.csv", "--out", tmp_path / "f.csv"], capsys)
    assert_one_line_error(rc, err, "not a table run")
    rc, _, err = run_cli(["impute", run, tmp_path / "text.csv", "--out", tmp_path / "f.npz"], capsys)
    assert_one_line_error(rc, err, ".csv")


def test_report_of_a_table_run_shows_marginals_and_correlations(table_run, capsys):
    out = table_run / "report.html"
    rc, stdout, err = run_cli(["report", table_run / "run", "--out", out, "--n", 60], capsys)
    assert rc == 0, err
    page = out.read_text()
    assert "Per-column marginals" in page and "Correlation matrices" in page
    assert page.count("data:image/png;base64,") == 2
    assert "train-on-synthetic accuracy" in page and "colour" in page


def test_outputs_in_the_way_are_refused_or_kept_as_orig(table_run, tmp_path, capsys):
    """sample, impute, eval and report never overwrite a file the user named: refused in one line with
    the file untouched; with --force the old file is kept as NAME.orig."""
    run = table_run / "run"
    data = run / "data.csv"
    cases = {"rows.csv": ["sample", run, "--n", 5], "filled.csv": ["impute", run, data, "--draws", 2],
             "filled-draws.csv": ["impute", run, data, "--draws", 2], "e.json": ["eval", run, "--n", 20],
             "r.html": ["report", run, "--n", 20]}
    for name, command in cases.items():
        mine = tmp_path / name
        mine.write_text("mine\n")
        out = tmp_path / ("filled.csv" if name.startswith("filled") else name)
        rc, _, err = run_cli([*command, "--out", out], capsys)
        assert_one_line_error(rc, err, "never overwrites a file of yours", "--force")
        assert mine.read_text() == "mine\n"
        assert not any(p.name.endswith(".orig") for p in tmp_path.iterdir())
        rc, _, err = run_cli([*command, "--out", out, "--force"], capsys)
        assert rc == 0, err
        assert (tmp_path / (name + ".orig")).read_text() == "mine\n"
        assert mine.read_text() != "mine\n"
        for p in tmp_path.iterdir():
            p.unlink()
    rc, _, err = run_cli(["impute", run, data, "--out", data], capsys)
    assert_one_line_error(rc, err, "never overwrites")


def test_eval_prints_a_metric_it_could_not_compute_as_n_a(table_run, capsys, monkeypatch):
    """A correlation error without any pair of cells present together (NaN) is printed n/a (it raised
    a TypeError on a table with many blanks)."""
    import scorematch.run.tables.folder as folder

    real = folder.eval_table

    def without_correlation(*args, **kwargs):
        res = real(*args, **kwargs)
        res["correlation_error"] = {"synthetic": float("nan"), "baseline": float("nan")}
        return res

    monkeypatch.setattr(folder, "eval_table", without_correlation)
    rc, stdout, err = run_cli(["eval", table_run / "run", "--n", 30], capsys)
    assert rc == 0, err
    assert "correlation_error    synthetic n/a   real vs real n/a" in stdout


def test_sampled_and_filled_tables_keep_the_users_column_order(tmp_path, capsys):
    """The label column first in the CSV stays first in what sample writes; impute writes the columns
    in the order of the table it was given."""
    t = read_csv_table(_csv(tmp_path / "t.csv", n=40))
    header = "kind,size,count,colour"
    names = tuple(header.split(","))
    (tmp_path / "first.csv").write_text(table_to_csv(Table(names, tuple(t.column(n) for n in names))))
    rc, _, err = run_cli(["train", "--data", tmp_path / "first.csv", "--label-column", "kind", "--class-conditional",
                          *FAST, "--out", tmp_path / "run"], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["sample", tmp_path / "run", "--n", 5, "--out", tmp_path / "s.csv"], capsys)
    assert rc == 0, err
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == header
    (tmp_path / "mixed.csv").write_text("colour,count,kind,size\nred,,ale,3.1\n,2,lager,\n")
    rc, _, err = run_cli(["impute", tmp_path / "run", tmp_path / "mixed.csv", "--out", tmp_path / "f.csv",
                          "--draws", 2], capsys)
    assert rc == 0, err
    assert (tmp_path / "f.csv").read_text().splitlines()[0] == "colour,count,kind,size"
    assert (tmp_path / "f-draws.csv").read_text().splitlines()[0] == "draw,colour,count,kind,size"
    filled = read_csv_table(tmp_path / "f.csv")
    assert filled.column("colour")[0] == "red" and filled.column("kind").tolist() == ["ale", "lager"]
    assert not filled.missing().any()
