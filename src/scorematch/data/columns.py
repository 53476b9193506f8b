"""Column types of a table: inferred from the data, overridable, encoded for a model and decoded exactly.

A ``Schema`` holds one ``Column`` per table column and the standardisation of the encoded
coordinates. Each kind maps its cells to encoded coordinates u (before standardisation) and
back, so that every decoded value is one the column can take:

    kind         encoded u (per cell)                         decoded value
    continuous   u = x                                        x (any real)
    nonnegative  u = log(x + c), c > 0                        max(exp(u) - c, 0) >= 0
    bounded      u = logit(eps + (1 - 2 eps) (x - a)/(b - a))  in [a, b]
    integer      u = x (trained with x + U(-1/2, 1/2))         round(u) clipped to [low, high]
    binary       u = 0 or 1 (the first or second value)       the second value iff u > 1/2
    categorical  one-hot over the K levels (K coordinates)    the level of the largest coordinate
    constant     nothing (no coordinate)                      the column's one value

A continuous, nonnegative, bounded or integer column may have atoms, values it takes with
positive probability (the zeros of a zero-inflated column): inferred as the values held by at
least 10% of the present cells, 5 of them and 5 times as many as each neighbouring value (which
tells a point mass from the mode of a column rounded to a grid), for an integer column only when
its sd exceeds 10 (smaller ones resolve each integer by dequantisation), or given. Its cells then
add a one-hot over (atom 1, ..., atom K, other) after u, in the manner of the mixed columns of
Zhao et al. (2021, CTAB-GAN), and decode to the atom of the largest of those coordinates, or from
u when it is "other".

The nonnegative offset c is the smallest positive value over 2, so zeros (a spike at log c)
decode back to 0; eps = 1e-3 keeps bounded values at a bound finite. Integers are dequantised
(Ho et al. 2019; a uniform draw per cell, per training step, ``dequantization``) so that the model
learns a density whose mass over [k - 1/2, k + 1/2) is P(x = k); one-hot categories decoded by
argmax are the scheme of Kotelnikov et al. (2023, TabDDPM's Gaussian variant) and Kim et al. (2023,
STaSy). Every coordinate u is then standardised, z = (u - mean) / sd, the mean and sd over the
present cells of the data the schema was fitted on; a missing cell is NaN in all its coordinates.

Inference (``infer_schema``): a column holding text is categorical; a numeric column with one
value is constant, with two binary, with only whole numbers integer, with no negative value
nonnegative, else continuous. ``parse_columns("age=integer,grade=categorical,pct=bounded:0:100")``
or a JSON file override any of it. Decoding is exact on encoded data: decode(encode(t)) returns
t's discrete cells unchanged and its continuous ones to float64 rounding.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from scorematch.data.tables import Table, parse_number
from scorematch.errors import ConfigError, DataError, ScoreMatchWarning

__all__ = ["KINDS", "ATOM_KINDS", "Column", "Schema", "decode", "encode", "fit_schema", "infer_schema",
           "log_jacobian", "dequantization", "parse_columns"]

KINDS = ("continuous", "nonnegative", "bounded", "integer", "binary", "categorical", "constant")
#: the kinds of column that may have atoms (integer ones when wide: see INTEGER_ATOM_SD)
ATOM_KINDS = KINDS[:4]
#: the squeeze of bounded columns before the logit
BOUNDED_EPS = 1e-3


@dataclass(frozen=True)
class Column:
    """One column: its ``name``, ``kind`` (one of KINDS), its ``levels`` (binary, categorical,
    constant: the values, text or numbers, in encoding order), the bounds ``low``/``high``
    (integer: observed range; bounded: the given bounds), the nonnegative offset ``shift`` and the
    ``atoms`` of a column of ATOM_KINDS (values it takes with positive probability)."""

    name: str
    kind: str
    levels: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    shift: float = 0.0
    atoms: tuple[float, ...] = ()

    @property
    def width(self) -> int:
        """How many encoded coordinates the column takes."""
        base = {"categorical": len(self.levels), "constant": 0}.get(self.kind, 1)
        return base + (len(self.atoms) + 1 if self.atoms else 0)


@dataclass(frozen=True)
class Schema:
    """The columns and the standardisation (``mean``, ``std``, one per encoded coordinate)."""

    columns: tuple[Column, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    spans: tuple[tuple[int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        spans, at = [], 0
        for c in self.columns:
            spans.append((at, at + c.width))
            at += c.width
        object.__setattr__(self, "spans", tuple(spans))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def dim(self) -> int:
        """The number of encoded coordinates."""
        return self.spans[-1][1] if self.spans else 0

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(f"no column {name!r}; the columns are {', '.join(self.names)}")


def _present(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.array([v for v in values if v is not None], dtype=object)
    return values[~np.isnan(values)]


def _numeric_levels(v: np.ndarray) -> tuple[float, ...]:
    return tuple(float(a) for a in np.unique(v))


def _sort_levels(values: np.ndarray) -> tuple[Any, ...]:
    if values.dtype == object:
        return tuple(sorted({str(v) for v in values}))
    return _numeric_levels(values)


def _nonneg_shift(v: np.ndarray) -> float:
    pos = v[v > 0]
    return float(pos.min()) / 2 if pos.size else 1.0


#: a value held by this share of a real column's present cells (and ATOM_COUNT of them) is an atom
ATOM_SHARE, ATOM_COUNT = 0.1, 5
#: ... and ATOM_RATIO times as many as either neighbouring value (else it is the mode of a rounded column)
ATOM_RATIO = 5
#: an integer column has atoms when its sd exceeds this: a unit bin is then too narrow for the model
INTEGER_ATOM_SD = 10.0
#: numbers larger than this cannot be standardised in float64 (their squares overflow)
MAX_MAGNITUDE = 1e150
#: a text column with at least this many values, all different, is taken for an identifier
ID_ROWS = 20


def _check_text(name: str, v: np.ndarray) -> None:
    """Refuse a text column that is numbers but for a few cells (a typo, or a missing-value mark
    scorematch does not know); warn about one whose every value differs (an identifier)."""
    odd = [str(a) for a in v if parse_number(str(a)) is None]
    if 0 < len(odd) <= len(v) / 2:
        shown = ", ".join(repr(a) for a in sorted(set(odd))[:3])
        raise DataError(f"column {name!r} holds numbers but for {len(odd)} of {len(v)} cells ({shown}): correct "
                        f"them or leave them blank (missing), or declare the column text ({name}=categorical)")
    if len(v) >= ID_ROWS and len({str(a) for a in v}) == len(v):
        warnings.warn(f"column {name!r} has a different value in every row (an identifier?): a model can only "
                      "copy the values it saw; drop the column", ScoreMatchWarning, stacklevel=4)


def _infer_column(name: str, values: np.ndarray, override: dict[str, Any] | None) -> Column:
    v = _present(values)
    if v.size == 0:
        raise DataError(f"column {name!r} has no value at all; drop it or give at least one value")
    kind = override["kind"] if override else None
    if values.dtype != object and float(np.abs(v).max()) > MAX_MAGNITUDE:
        raise DataError(f"column {name!r} holds {float(np.abs(v).max()):.3g}; values up to {MAX_MAGNITUDE:g} in "
                        "size can be standardised: rescale the column")
    if values.dtype == object and kind is None:
        _check_text(name, v)
    if values.dtype == object:
        if kind not in (None, "categorical", "binary", "constant"):
            raise DataError(f"column {name!r} holds text ({v[0]!r}), so it cannot be {kind}; make it categorical "
                            "or fix its cells")
        levels = _sort_levels(v)
        kind = kind or ("constant" if len(levels) == 1 else "categorical")
    else:
        levels = _numeric_levels(v)
        if kind is None:
            whole = bool(np.all(v == np.round(v)))
            kind = ("constant" if len(levels) == 1 else "binary" if len(levels) == 2 else "integer" if whole
                    else "nonnegative" if v.min() >= 0 else "continuous")
    if kind == "binary" and len(levels) != 2:
        raise DataError(f"column {name!r} is declared binary but holds {len(levels)} distinct values; make it "
                        "categorical or integer")
    if kind == "constant" and len(levels) != 1:
        raise DataError(f"column {name!r} is declared constant but holds {len(levels)} distinct values")
    if kind in ("binary", "categorical", "constant"):
        return Column(name, kind, levels=levels)
    col = _integer_column(name, v, override) if kind == "integer" else _real_column(name, kind, v, override)
    wide = kind != "integer" or float(v.std()) > INTEGER_ATOM_SD
    return replace(col, atoms=_atoms(name, v, override, wide))


def _atoms(name: str, v: np.ndarray, override: dict[str, Any] | None, infer: bool) -> tuple[float, ...]:
    """The given atoms (which the column must hold), else (with ``infer``) the values held by at
    least ATOM_SHARE of the present cells, ATOM_COUNT of them and ATOM_RATIO times as many as the
    next smaller and the next larger value that are not such values themselves."""
    given = override.get("atoms") if override else None
    if given is not None:
        absent = [a for a in given if not np.any(v == a)]
        if absent:
            raise DataError(f"column {name!r}: atom {absent[0]!r} is not one of its values")
        return tuple(sorted({float(a) for a in given}))
    if not infer:
        return ()
    values, counts = np.unique(v, return_counts=True)
    big = (counts >= ATOM_SHARE * v.size) & (counts >= ATOM_COUNT)
    near = np.where(big, 0, counts)  # the neighbours that are not candidates themselves
    beside = np.maximum(np.append(near[1:], 0), np.insert(near[:-1], 0, 0))
    return tuple(float(a) for a in values[big & (counts >= ATOM_RATIO * beside)])


def _integer_column(name: str, v: np.ndarray, override: dict[str, Any] | None) -> Column:
    if not np.all(v == np.round(v)):
        bad = v[v != np.round(v)][0]
        raise DataError(f"column {name!r} is declared integer but holds {bad!r}; make it continuous")
    low = override.get("low") if override else None
    high = override.get("high") if override else None
    return Column(name, "integer", low=float(v.min() if low is None else low),
                  high=float(v.max() if high is None else high))


def _real_column(name: str, kind: str, v: np.ndarray, override: dict[str, Any] | None) -> Column:
    if kind == "nonnegative":
        if v.min() < 0:
            raise DataError(f"column {name!r} is declared nonnegative but holds {v.min()!r}; make it continuous")
        return Column(name, kind, low=0.0, shift=_nonneg_shift(v))
    if kind == "bounded":
        a, b = override.get("low"), override.get("high")
        if a is None or b is None:
            raise ConfigError(f"column {name!r}: bounded needs its bounds, e.g. {name}=bounded:0:1")
        if v.min() < a or v.max() > b:
            raise DataError(f"column {name!r} has values in [{v.min():g}, {v.max():g}], outside its bounds "
                            f"[{a:g}, {b:g}]")
        return Column(name, kind, low=float(a), high=float(b))
    return Column(name, "continuous")


def parse_columns(spec: str | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Column overrides from ``"NAME=KIND,..."`` (KIND one of KINDS; ``bounded:LOW:HIGH``, optionally
    ``integer:LOW:HIGH``) or a dict {name: KIND-text or {"kind": ..., "low": ..., "high": ...}}."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        for part in spec.split(","):
            name, eq, kind = part.partition("=")
            if not eq or not name.strip() or not kind.strip():
                raise ConfigError(f"column type {part.strip()!r} must read NAME=KIND (KIND one of {', '.join(KINDS)})")
            items[name.strip()] = kind.strip()
        spec = items
    if not isinstance(spec, dict):
        raise ConfigError(f"column types must be a dict name -> kind or text NAME=KIND,..., got {type(spec).__name__}")
    out = {}
    for name, kind in spec.items():
        if isinstance(kind, dict):
            entry = {"kind": kind.get("kind"), "low": kind.get("low"), "high": kind.get("high"),
                     "atoms": _atom_list(name, kind)}
        else:
            head, *bounds = str(kind).split(":")
            entry = {"kind": head, "low": None, "high": None}
            if bounds:
                try:
                    entry["low"], entry["high"] = (float(b) for b in bounds)
                except ValueError:
                    raise ConfigError(f"column {name!r}: bounds must read KIND:LOW:HIGH with two numbers, "
                                      f"got {kind!r}") from None
        if entry["kind"] not in KINDS:
            raise ConfigError(f"column {name!r}: unknown type {entry['kind']!r}; valid types: {', '.join(KINDS)}")
        for key in ("low", "high"):
            if entry[key] is not None and not math.isfinite(float(entry[key])):
                raise ConfigError(f"column {name!r}: {key} must be a finite number")
        if entry["kind"] == "bounded" and (entry["low"] is None or not entry["low"] < entry["high"]):
            raise ConfigError(f"column {name!r}: bounded needs LOW < HIGH, e.g. {name}=bounded:0:1")
        out[str(name)] = entry
    return out


def _atom_list(name: str, entry: dict[str, Any]) -> list[float] | None:
    atoms = entry.get("atoms")
    if atoms is None:
        return None
    if entry.get("kind") not in ATOM_KINDS or not isinstance(atoms, list) or not all(
            isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in atoms):
        raise ConfigError(f"column {name!r}: atoms must be a list of numbers, on a column of kind "
                          f"{', '.join(ATOM_KINDS)}")
    return [float(a) for a in atoms]


def infer_schema(table: Table, columns: str | dict[str, Any] | None = None) -> Schema:
    """The Schema of ``table`` (see the module docstring), types overridden by ``columns``, fitted to it."""
    overrides = parse_columns(columns)
    unknown = sorted(set(overrides) - set(table.names))
    if unknown:
        raise ConfigError(f"column types given for {', '.join(map(repr, unknown))}, which the table does not have; "
                          f"its columns are {', '.join(table.names)}")
    if table.n_rows < 1:
        raise DataError("the table has no rows")
    cols = tuple(_infer_column(n, c, overrides.get(n)) for n, c in zip(table.names, table.columns, strict=True))
    return fit_schema(Schema(cols), table)


def _key(v: Any, text: bool) -> Any:
    """A cell as the schema stores its level: text (a whole float as '3') or a float."""
    if text:
        return str(int(v)) if isinstance(v, float | np.floating) and float(v).is_integer() else str(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _encode_column(col: Column, values: np.ndarray) -> np.ndarray:
    n = len(values)
    miss = np.array([v is None for v in values]) if values.dtype == object else np.isnan(values)
    if col.kind == "constant":
        return np.zeros((n, 0))
    if col.kind in ("binary", "categorical"):
        index = {lv: i for i, lv in enumerate(col.levels)}
        out = np.full((n, col.width), np.nan)
        for i, v in enumerate(values):
            if miss[i]:
                continue
            key = _key(v, isinstance(col.levels[0], str))
            if key not in index:
                raise DataError(f"column {col.name!r} holds {v!r}, not one of its values "
                                f"{', '.join(map(repr, col.levels[:8]))}")
            if col.kind == "binary":
                out[i, 0] = float(index[key])
            else:
                out[i] = 0.0
                out[i, index[key]] = 1.0
        return out
    if values.dtype == object:
        raise DataError(f"column {col.name!r} is {col.kind} but holds text")
    x = values.astype(np.float64)
    p = x[~miss]
    if col.kind == "integer" and p.size and not np.all(p == np.round(p)):
        raise DataError(f"column {col.name!r} is integer but holds {p[p != np.round(p)][0]!r}")
    if col.kind == "nonnegative":
        if p.size and p.min() < 0:
            raise DataError(f"column {col.name!r} is nonnegative but holds {p.min()!r}")
        x = np.log(x + col.shift)
    elif col.kind == "bounded":
        if p.size and (p.min() < col.low or p.max() > col.high):
            raise DataError(f"column {col.name!r} holds values outside its bounds [{col.low:g}, {col.high:g}]")
        u = BOUNDED_EPS + (1 - 2 * BOUNDED_EPS) * (x - col.low) / (col.high - col.low)
        x = np.log(u) - np.log1p(-u)
    if not col.atoms:
        return x[:, None]
    at = np.searchsorted(col.atoms, np.where(miss, col.atoms[0], values))
    hit = (at < len(col.atoms)) & (np.take(col.atoms, np.minimum(at, len(col.atoms) - 1)) == values)
    onehot = np.eye(len(col.atoms) + 1)[np.where(hit, at, len(col.atoms))]
    return np.where(miss[:, None], np.nan, np.column_stack([x, onehot]))


def _encode_raw(schema: Schema, table: Table) -> np.ndarray:
    if tuple(table.names) != schema.names:
        missing = [n for n in schema.names if n not in table.names]
        extra = [n for n in table.names if n not in schema.names]
        if missing or extra:
            raise DataError("the table's columns differ from the schema's: "
                            + "; ".join(s for s in (f"missing {', '.join(missing)}" if missing else "",
                                                    f"unknown {', '.join(extra)}" if extra else "") if s))
        table = Table(schema.names, tuple(table.column(n) for n in schema.names))
    parts = [_encode_column(c, v) for c, v in zip(schema.columns, table.columns, strict=True)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((table.n_rows, 0))


def fit_schema(schema: Schema, table: Table) -> Schema:
    """``schema`` with the mean and sd of each encoded coordinate over ``table``'s present cells (sd 1
    where a coordinate is constant or has fewer than two values)."""
    u = _encode_raw(replace(schema, mean=(), std=()), table)
    mean, std = [], []
    for j in range(u.shape[1]):
        p = u[~np.isnan(u[:, j]), j]
        m = float(p.mean()) if p.size else 0.0
        s = float(p.std()) if p.size > 1 else 0.0
        mean.append(m)
        std.append(s if s > 1e-12 * max(1.0, abs(m)) else 1.0)
    return replace(schema, mean=tuple(mean), std=tuple(std))


def encode(schema: Schema, table: Table) -> np.ndarray:
    """float64 (n, schema.dim): the standardised encoding z of ``table`` (NaN where a cell is missing)."""
    if len(schema.mean) != schema.dim:
        raise ConfigError("the schema is not fitted: build it with infer_schema or fit_schema")
    return (_encode_raw(schema, table) - np.array(schema.mean)) / np.array(schema.std)


def _decode_column(col: Column, u: np.ndarray, n: int) -> np.ndarray:
    text = bool(col.levels) and isinstance(col.levels[0], str)
    if col.kind in ("binary", "categorical", "constant"):
        if col.kind == "constant":
            idx = np.zeros(n, dtype=int)
        elif col.kind == "binary":
            idx = (u[:, 0] > 0.5).astype(int)
        else:
            idx = np.argmax(u, axis=1)
        if text:
            out = np.empty(n, dtype=object)
            out[:] = [col.levels[i] for i in idx]
            return out
        return np.array(col.levels, dtype=np.float64)[idx]
    x = _decode_real(col, u[:, 0])
    if col.atoms:
        k = np.argmax(u[:, 1:], axis=1)
        x = np.where(k < len(col.atoms), np.take(np.append(col.atoms, 0.0), k), x)
    return x


def _decode_real(col: Column, x: np.ndarray) -> np.ndarray:
    if col.kind == "integer":
        return np.clip(np.round(x), col.low, col.high)
    if col.kind == "nonnegative":
        return np.maximum(np.exp(np.minimum(x, 700.0)) - col.shift, 0.0)
    if col.kind == "bounded":
        s = 1.0 / (1.0 + np.exp(-np.clip(x, -700.0, 700.0)))
        t = np.clip((s - BOUNDED_EPS) / (1 - 2 * BOUNDED_EPS), 0.0, 1.0)
        return np.clip(col.low + t * (col.high - col.low), col.low, col.high)
    return x.copy()


def decode(schema: Schema, z: np.ndarray | torch.Tensor) -> Table:
    """The Table of standardised encodings ``z`` (n, schema.dim), every value one its column can take
    (see the module docstring). z must be finite."""
    z = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != schema.dim:
        raise DataError(f"encodings must have shape (n, {schema.dim}), got {z.shape}")
    if not np.isfinite(z).all():
        raise DataError("encodings hold NaN or inf; they cannot be decoded")
    u = z * np.array(schema.std) + np.array(schema.mean)
    cols = tuple(_decode_column(c, u[:, a:b], z.shape[0]) for c, (a, b) in zip(schema.columns, schema.spans,
                                                                             strict=True))
    return Table(schema.names, cols)


def dequantization(schema: Schema) -> np.ndarray:
    """float64 (schema.dim,): the half-width of the uniform dequantisation noise of each coordinate in
    standardised units (1 / (2 sd) for integer columns, 0 elsewhere). Training adds
    U(-w, w) to each integer coordinate per step."""
    w = np.zeros(schema.dim)
    for c, (a, _) in zip(schema.columns, schema.spans, strict=True):
        if c.kind == "integer":
            w[a] = 0.5 / schema.std[a]
    return w


def log_jacobian(schema: Schema, table: Table) -> np.ndarray:
    """float64 (n,): sum over the continuous-valued columns of log |dz/dx| at each row (standardisation,
    log and logit), so that log p(x) = log p_z(z) + this for those columns; discrete columns add nothing."""
    total = np.zeros(table.n_rows)
    for c, (a, b) in zip(schema.columns, schema.spans, strict=True):
        if b == a:
            continue
        if c.kind in ("continuous", "nonnegative", "bounded", "integer"):
            total -= math.log(schema.std[a])
        x = table.column(c.name)
        if c.kind == "nonnegative":
            total -= np.log(x + c.shift)
        elif c.kind == "bounded":
            u = BOUNDED_EPS + (1 - 2 * BOUNDED_EPS) * (x - c.low) / (c.high - c.low)
            total += math.log((1 - 2 * BOUNDED_EPS) / (c.high - c.low)) - np.log(u) - np.log1p(-u)
    return total
