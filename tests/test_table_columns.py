"""Column types of tables: inference, overrides, exact decoding, CSV round trips (scorematch.data.columns/tables)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorematch.data.columns import (
    decode,
    dequantization,
    encode,
    infer_schema,
    log_jacobian,
    parse_columns,
)
from scorematch.data.schema_io import read_schema_text, schema_from_dict, schema_to_dict
from scorematch.data.tables import Table, as_table, read_csv_table, table_from_csv, table_to_csv, write_csv_table
from scorematch.errors import ConfigError, DataError, DataNotFoundError, ScoreMatchWarning

KIND_OF = {"c": "continuous", "n": "nonnegative", "i": "integer", "b": "binary", "k": "categorical", "u": "bounded"}


def _column(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    """Random cells of one column of ``kind`` and the override that names its type (None: inferred)."""
    if kind == "c":
        return rng.normal(0, 3, n) - 1.0, None if n > 2 else "continuous"
    if kind == "n":
        x = rng.exponential(2.0, n)
        x[rng.random(n) < 0.2] = 0.0
        return x, "nonnegative"
    if kind == "i":
        return rng.integers(-3, 40, n).astype(float), "integer"
    if kind == "b":
        a, b = sorted(rng.choice([-2.0, 0.0, 1.0, 7.5], 2, replace=False))
        x = np.where(rng.random(n) < 0.5, a, b)
        x[:2] = a, b
        return x, "binary"
    if kind == "u":
        return rng.uniform(2.0, 5.0, n), "bounded:2:5"
    if kind == "z":  # a wide integer column, half zeros: an atom at 0
        return np.where(rng.random(n) < 0.5, 0.0, rng.integers(100, 5000, n).astype(float)), "integer"
    levels = np.array(["red", "green", "blue", "a b", "7"], dtype=object)
    x = np.empty(n, dtype=object)
    x[:] = list(levels[rng.integers(0, 5, n)])
    return x, "categorical"


def _random_table(kinds: str, n: int, seed: int, missing: float = 0.0) -> tuple[Table, dict[str, str]]:
    rng = np.random.default_rng(seed)
    cols, over = [], {}
    for j, k in enumerate(kinds):
        x, o = _column(k, n, rng)
        drop = rng.random(n) < missing
        drop[:2] = False
        if x.dtype == object:
            x[drop] = None
        else:
            x[drop] = np.nan
        cols.append(x)
        if o is not None:
            over[f"{k}{j}"] = o
    return Table(tuple(f"{k}{j}" for j, k in enumerate(kinds)), tuple(cols)), over


@settings(max_examples=40, deadline=None)
@given(kinds=st.text(alphabet="cnibkuz", min_size=1, max_size=6), seed=st.integers(0, 10**6),
       scale=st.floats(0.1, 30.0), shift=st.floats(-20.0, 20.0))
def test_every_decoded_value_is_one_the_column_can_take(kinds, seed, scale, shift):
    """Decoding ANY finite encoding (here: Gaussian junk of any scale and offset) gives, in every
    discrete column, one of the column's values; nonnegative and bounded columns stay in bounds."""
    table, over = _random_table(kinds, 30, seed, missing=0.1)
    schema = infer_schema(table, over)
    z = np.random.default_rng(seed + 1).normal(shift, scale, (200, schema.dim))
    out = decode(schema, z)
    for col, values in zip(schema.columns, out.columns, strict=True):
        if col.kind in ("binary", "categorical", "constant"):
            assert set(values.tolist()) <= set(col.levels)
        elif col.kind == "integer":
            assert np.all(values == np.round(values)) and values.min() >= col.low and values.max() <= col.high
        elif col.kind == "nonnegative":
            assert values.min() >= 0
        elif col.kind == "bounded":
            assert values.min() >= col.low and values.max() <= col.high
        assert values.dtype == object or np.isfinite(values).all()


@settings(max_examples=40, deadline=None)
@given(kinds=st.text(alphabet="cnibkuz", min_size=1, max_size=6), seed=st.integers(0, 10**6))
def test_encode_decode_round_trip(kinds, seed):
    """decode(encode(t)) is t: discrete cells exactly, continuous ones to float64 rounding."""
    table, over = _random_table(kinds, 25, seed)
    schema = infer_schema(table, over)
    back = decode(schema, encode(schema, table))
    for col, a, b in zip(schema.columns, table.columns, back.columns, strict=True):
        if col.kind in ("binary", "categorical", "integer", "constant"):
            assert a.tolist() == b.tolist(), col
        else:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_inference_rules():
    t = table_from_csv("real,pos,count,flag,grade,const,name\n"
                       "-1.5,0.5,3,0,1,4,ann\n2.25,0,4,1,2,4,bob\n0.5,7,5,1,3,,ann\n")
    kinds = {c.name: c.kind for c in infer_schema(t).columns}
    assert kinds == {"real": "continuous", "pos": "nonnegative", "count": "integer", "flag": "binary",
                     "grade": "integer", "const": "constant", "name": "categorical"}
    s = infer_schema(t, "grade=categorical,pos=bounded:0:10")
    assert s.column("grade").levels == (1.0, 2.0, 3.0)
    assert (s.column("pos").low, s.column("pos").high) == (0.0, 10.0)
    assert s.column("pos").kind == "bounded"
    # categorical is one-hot: 3 coordinates for grade, 2 for name; constant takes none
    assert s.dim == 1 + 1 + 1 + 1 + 3 + 0 + 2


def test_standardised_encoding_has_zero_mean_unit_sd():
    rng = np.random.default_rng(0)
    t = as_table(np.column_stack([rng.normal(5, 3, 500), rng.integers(0, 9, 500)]))
    z = encode(infer_schema(t), t)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-12)


def test_closed_form_encodings():
    t = Table(("p", "b"), (np.array([0.0, 1.5, 3.5]), np.array([2.0, 4.0, 4.0])))
    s = infer_schema(t, "b=bounded:2:4")
    u = encode(s, t) * np.array(s.std) + np.array(s.mean)
    # nonnegative: log(x + c), c = smallest positive / 2 = 0.75
    np.testing.assert_allclose(u[:, 0], np.log([0.75, 2.25, 4.25]))
    # bounded [2, 4]: logit(eps + (1 - 2 eps) (x - 2) / 2), eps = 1e-3
    e = 1e-3
    np.testing.assert_allclose(u[:, 1], [math.log(e / (1 - e)), math.log((1 - e) / e), math.log((1 - e) / e)])
    # log |dz/dx| of the nonnegative column: -log sd - log(x + c)
    only = infer_schema(t.drop("b"))
    np.testing.assert_allclose(log_jacobian(only, t.drop("b")), -np.log(only.std[0]) - np.log([0.75, 2.25, 4.25]))


def test_dequantization_width_is_half_a_unit_in_standard_units():
    t = as_table(np.array([[0.0, 1.5], [2.0, 2.5], [4.0, 0.5]]))
    s = infer_schema(t)
    w = dequantization(s)
    assert w[0] == pytest.approx(0.5 / np.std([0, 2, 4])) and w[1] == 0


def test_missing_cells_encode_to_nan_in_all_their_coordinates():
    t = table_from_csv("a,k\n1.5,x\n,y\n2.5,\n")
    z = encode(infer_schema(t), t)
    assert np.isnan(z[1, 0]) and not np.isnan(z[1, 1:]).any()
    assert np.isnan(z[2, 1:]).all() and not np.isnan(z[2, 0])


def test_schema_json_round_trip_and_validation():
    t, over = _random_table("cnibku", 20, 3, missing=0.1)
    s = infer_schema(t, over)
    assert schema_from_dict(schema_to_dict(s)) == s
    with pytest.raises(DataError, match="malformed"):
        schema_from_dict({"columns": [{"name": "a"}]})
    assert read_schema_text('{"columns": {"a": "integer", "b": "bounded:0:1"}}')["b"]["high"] == 1.0


@pytest.mark.parametrize("spec, match", [
    ("a", "NAME=KIND"), ("a=weird", "unknown type"), ("a=bounded", "LOW < HIGH"), ("a=bounded:2:1", "LOW < HIGH"),
    ("a=bounded:x:1", "two numbers"),
])
def test_bad_column_specs_are_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_columns(spec)


def test_overrides_that_contradict_the_data_are_refused():
    t = table_from_csv("a,k,n\n1.5,x,-1\n2,y,2\n3,z,3\n")
    with pytest.raises(ConfigError, match="does not have"):
        infer_schema(t, "zzz=integer")
    with pytest.raises(DataError, match="declared integer"):
        infer_schema(t, "a=integer")
    with pytest.raises(DataError, match="holds text"):
        infer_schema(t, "k=integer")
    with pytest.raises(DataError, match="declared nonnegative"):
        infer_schema(t, "n=nonnegative")
    with pytest.raises(DataError, match="outside its bounds"):
        infer_schema(t, "a=bounded:0:2")
    s = infer_schema(t)
    with pytest.raises(DataError, match="not one of its values"):
        encode(s, table_from_csv("a,k,n\n1,w,2\n"))
    with pytest.raises(DataError, match="missing"):
        encode(s, table_from_csv("a,k\n1,x\n"))


def test_csv_round_trip_keeps_header_text_blanks_and_exact_floats(tmp_path):
    text = "name,x,count\nann,0.1,3\n,1e-300,\nbob b,-2.5,12\n"
    t = table_from_csv(text)
    assert t.names == ("name", "x", "count")
    assert t.column("name").tolist() == ["ann", None, "bob b"]
    assert np.isnan(t.column("count")[1]) and t.column("x")[1] == 1e-300
    p = write_csv_table(tmp_path / "t.csv", t)
    back = read_csv_table(p)
    assert back.names == t.names and back.column("name").tolist() == t.column("name").tolist()
    np.testing.assert_array_equal(back.column("x"), t.column("x"))
    assert table_to_csv(back) == text


@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("a,b\n", "no rows"), ("1,2\n3,4\n", "header"), ("a,b\n1,2,3\n", "row 2 has 3 cells"),
    ("a,a\n1,2\n", "unique"), ("a,\n1,2\n", "empty name"),
])
def test_bad_csv_is_refused_with_the_fix(text, match):
    with pytest.raises(DataError, match=match):
        table_from_csv(text)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_csv_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="folder"):
        read_csv_table(tmp_path)


def test_pandas_frames_in_and_out():
    pd = pytest.importorskip("pandas")
    from scorematch.data.tables import to_frame

    df = pd.DataFrame({"x": [1.5, None, 2.0], "k": ["a", None, "b"], "n": [1, 2, 3]})
    t = as_table(df)
    assert t.names == ("x", "k", "n") and t.column("k").tolist() == ["a", None, "b"]
    assert np.isnan(t.column("x")[1])
    back = to_frame(t)
    assert list(back.columns) == ["x", "k", "n"] and back["n"].tolist() == [1.0, 2.0, 3.0]


def test_semicolon_and_tab_separated_tables_read_as_comma_separated():
    rows = [["3.5", "x y", ""], ["-1", "z", "7"]]
    want = table_from_csv("a,b c,d\n" + "".join(",".join(r) + "\n" for r in rows))
    for sep in (";", "\t"):
        got = table_from_csv(sep.join(["a", "b c", "d"]) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
        assert got.names == want.names == ("a", "b c", "d")
        assert table_to_csv(got) == table_to_csv(want)
        assert [c.dtype for c in got.columns] == [c.dtype for c in want.columns]
    # a comma in the header means commas separate, even when a cell holds a semicolon
    assert table_from_csv("a,b\n1;2,3\n").column("a")[0] == "1;2"


def test_numbers_with_a_few_odd_cells_are_refused_unless_declared_text():
    t = table_from_csv("x,y\n" + "".join(f"{i / 7:.3f},{i}\n" for i in range(30)) + "inf,3\nn.a.,4\n")
    with pytest.raises(DataError, match=r"column 'x' holds numbers but for 2 of 32 cells \('inf', 'n.a.'\)"):
        infer_schema(t)
    assert infer_schema(t, "x=categorical").column("x").kind == "categorical"
    mostly_text = table_from_csv("c\n" + "a\nb\n3\n" * 5)  # numbers are a third: text with number-like levels
    assert infer_schema(mostly_text).column("c").levels == ("3", "a", "b")


def test_identifier_columns_warn_and_huge_numbers_are_refused():
    ids = table_from_csv("id,x\n" + "".join(f"u{i},{i % 3}\n" for i in range(25)))
    with pytest.warns(ScoreMatchWarning, match="'id' has a different value in every row"):
        infer_schema(ids)
    few = table_from_csv("id,x\n" + "".join(f"u{i},{i % 3}\n" for i in range(19)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infer_schema(few)
    with pytest.raises(DataError, match="holds 2.5e\\+200; values up to 1e\\+150"):
        infer_schema(as_table(np.array([[1.0], [-2.5e200]])))
    big = as_table(np.array([[1.5], [-2.5e140], [3.0]]))
    assert np.isfinite(encode(infer_schema(big), big)).all()


def test_atoms_of_a_zero_inflated_column_encode_and_decode_exactly():
    rng = np.random.default_rng(0)
    x = np.where(rng.random(200) < 0.6, 0.0, rng.lognormal(0, 1, 200))
    x[:3] = 0.0, np.nan, 2.5
    x[3:30] = 2.5  # a second atom (14% of the present cells)
    t = as_table(np.column_stack([x, rng.normal(size=200)]))
    s = infer_schema(t)
    col = s.column("x0")
    assert (col.kind, col.atoms, col.width, s.column("x1").atoms) == ("nonnegative", (0.0, 2.5), 4, ())
    z = encode(s, t)
    assert np.isnan(z[1, :4]).all() and not np.isnan(z[0]).any()
    u = z[:, 1:4] * np.array(s.std[1:4]) + np.array(s.mean[1:4])  # the one-hot of (0, 2.5, other)
    np.testing.assert_allclose(u[x == 0.0], np.tile([1.0, 0.0, 0.0], ((x == 0.0).sum(), 1)), atol=1e-12)
    np.testing.assert_allclose(u[x == 2.5], np.tile([0.0, 1.0, 0.0], ((x == 2.5).sum(), 1)), atol=1e-12)
    back = decode(s, np.nan_to_num(z)).column("x0")
    keep = ~np.isnan(x)
    assert np.array_equal(back[keep][x[keep] == 0.0], np.zeros((x == 0.0).sum()))
    np.testing.assert_allclose(back[keep], x[keep], rtol=1e-12)
    # junk encodings decode to an atom exactly or to a value of the column's range
    junk = decode(s, np.random.default_rng(1).normal(0, 3, (500, s.dim))).column("x0")
    assert junk.min() >= 0 and 0.2 < np.mean((junk == 0.0) | (junk == 2.5)) < 0.9
    assert schema_from_dict(schema_to_dict(s)) == s


def test_atoms_given_disabled_or_refused():
    x = np.array([0.0] * 10 + list(np.linspace(0.5, 4.0, 20)))
    t = as_table(x[:, None])
    assert infer_schema(t).column("x0").atoms == (0.0,)
    # the mode of a column rounded to a grid is no atom: 10 of 3.0 beside 3 of 2.9
    grid = as_table(np.array([3.0] * 10 + [2.9] * 3 + [3.1] * 2 + list(np.linspace(4.0, 9.0, 20)))[:, None])
    assert infer_schema(grid).column("x0").atoms == ()
    two = as_table(np.array([0.0] * 10 + [1.0] * 8 + list(np.linspace(1.5, 9.0, 20)))[:, None])
    assert infer_schema(two).column("x0").atoms == (0.0, 1.0)  # neighbouring atoms do not hide each other
    assert infer_schema(t, {"x0": {"kind": "nonnegative", "atoms": []}}).column("x0").atoms == ()
    assert infer_schema(t, {"x0": {"kind": "continuous", "atoms": [4, 0, 4]}}).column("x0").atoms == (0.0, 4.0)
    assert infer_schema(as_table(x[:24, None])).column("x0").atoms == (0.0,)  # 10 of 24
    assert infer_schema(as_table(x[6:, None])).column("x0").atoms == ()  # 4 zeros: too few
    with pytest.raises(DataError, match="atom 9.0 is not one of its values"):
        infer_schema(t, {"x0": {"kind": "nonnegative", "atoms": [9]}})
    with pytest.raises(ConfigError, match="atoms must be a list of numbers"):
        infer_schema(t, {"x0": {"kind": "binary", "atoms": [0]}})
    counts = as_table(np.array([0.0] * 30 + list(range(1, 20)) * 2)[:, None])  # sd 6: integers resolved
    assert infer_schema(counts).column("x0").atoms == ()
    income = as_table(np.array([0.0] * 30 + list(range(1000, 40000, 1000)))[:, None])  # sd > 10
    assert (infer_schema(income).column("x0").kind, infer_schema(income).column("x0").atoms) == ("integer", (0.0,))
    with pytest.raises(ConfigError, match="atoms must be a list of numbers"):
        parse_columns({"x0": {"kind": "continuous", "atoms": "0"}})
    bad = schema_to_dict(infer_schema(t))
    bad["columns"][0]["atoms"] = [1.0, 0.0]
    with pytest.raises(DataError, match="atoms must be increasing"):
        schema_from_dict(bad)
