"""Tables with named, typed columns: CSV in and out, NumPy arrays, pandas DataFrames.

A ``Table`` is a tuple of column names and one 1-D NumPy array per column, all of the same
length: a float64 array for a numeric column (NaN marks a missing cell) or an object array of
``str`` for a text column (``None`` marks a missing cell). Nothing is converted beyond that:
which values a column may take is the business of ``scorematch.data.columns``.

``read_csv_table(path)`` reads a CSV whose first line is the header (the names), its cells
separated by commas (or by semicolons or tabs when the header line has no comma); a cell is
missing when it is blank or one of ``MISSING_TOKENS``; a column whose every present cell parses
as a number is numeric, otherwise text. ``write_csv_table(path, table)`` writes it back through
the atomic writer: integers without a decimal point, floats in the shortest form that reads
back to the same float64 (``repr``), missing cells blank. ``as_table`` accepts a ``Table``, a
2-D NumPy array (columns named ``x0, x1, ...``), or a pandas DataFrame (pandas is optional).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scorematch.errors import DataError, DataNotFoundError
from scorematch.files import write_text

__all__ = ["MISSING_TOKENS", "Table", "as_table", "from_frame", "input_kind", "like_input", "parse_number",
           "read_csv_table", "table_to_csv", "to_frame", "write_csv_table"]

#: cell texts read as a missing value (besides the blank cell), compared after stripping spaces
MISSING_TOKENS = ("NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?")
#: no table file scorematch reads may be larger
MAX_TABLE_BYTES = 2**31


@dataclass(frozen=True)
class Table:
    """Named columns of equal length: float64 (NaN = missing) or object arrays of str (None = missing)."""

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.columns):
            raise DataError(f"a table needs one name per column: {len(self.names)} names, {len(self.columns)} columns")
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise DataError(f"column names must be unique; repeated: {', '.join(map(repr, dup[:5]))}")
        lengths = {len(c) for c in self.columns}
        if len(lengths) > 1:
            raise DataError(f"the columns of a table must have the same length, got {sorted(lengths)}")
        for name, c in zip(self.names, self.columns, strict=True):
            if c.ndim != 1 or c.dtype not in (np.float64, np.dtype(object)):
                raise DataError(f"column {name!r} must be a 1-D float64 or object array, got {c.dtype} {c.shape}")

    @property
    def n_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def column(self, name: str) -> np.ndarray:
        """The column called ``name``; DataError listing the names otherwise."""
        if name not in self.names:
            raise DataError(f"no column {name!r}; the columns are {', '.join(self.names)}")
        return self.columns[self.names.index(name)]

    def missing(self) -> np.ndarray:
        """Boolean (n_rows, n_columns): True where a cell is missing."""
        return np.stack([_missing(c) for c in self.columns], axis=1) if self.columns else np.zeros((0, 0), bool)

    def rows(self, index: Any) -> Table:
        """The rows ``index`` (a slice, integer array or boolean mask) of every column."""
        return Table(self.names, tuple(np.asarray(c[index]) for c in self.columns))

    def drop(self, name: str) -> Table:
        """The table without the column ``name``."""
        self.column(name)
        keep = [i for i, n in enumerate(self.names) if n != name]
        return Table(tuple(self.names[i] for i in keep), tuple(self.columns[i] for i in keep))

    def to_numpy(self) -> np.ndarray:
        """float64 (n_rows, n_columns) of a table whose columns are all numeric (NaN = missing)."""
        text = [n for n, c in zip(self.names, self.columns, strict=True) if c.dtype == object]
        if text:
            raise DataError(f"columns {', '.join(map(repr, text[:5]))} hold text; encode the table with its schema "
                            "(scorematch.data.columns) to get numbers")
        return np.stack(self.columns, axis=1) if self.columns else np.zeros((0, 0))


def _missing(c: np.ndarray) -> np.ndarray:
    if c.dtype == object:
        return np.array([v is None for v in c], dtype=bool)
    return np.isnan(c)


def parse_number(text: str) -> float | None:
    """The finite number the cell text ``text`` spells, else None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _column_of(values: Sequence[Any], name: str) -> np.ndarray:
    """A float64 column if every present value is a finite number, else an object column of str."""
    cells = [None if _is_missing(v) else v for v in values]
    odd = next((v for v in cells if v is not None and not isinstance(v, str | int | float | np.number | np.bool_)),
               None)
    if odd is not None:
        raise TypeError(f"column {name!r} holds a {type(odd).__name__}: the argument must be a string or a number")
    nums = [None if v is None else (parse_number(v) if isinstance(v, str) else _as_float(v)) for v in cells]
    if all(v is not None for v, c in zip(nums, cells, strict=True) if c is not None):
        return np.array([math.nan if v is None else v for v in nums], dtype=np.float64)
    for v in cells:
        if isinstance(v, float | int | np.floating | np.integer) and not math.isfinite(float(v)):
            raise DataError(f"column {name!r} holds {v!r}; only finite numbers, text or blanks are allowed")
    out = np.empty(len(cells), dtype=object)
    out[:] = [None if v is None else _text(v) for v in cells]
    return out


def _text(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool | np.bool_):
        return float(v)
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        s = v.strip()
        return s == "" or s in MISSING_TOKENS
    if isinstance(v, float | np.floating):
        return math.isnan(float(v))
    try:  # pandas.NA, pandas.NaT
        import pandas as pd  # noqa: PLC0415

        return bool(pd.isna(v))
    except (ImportError, TypeError, ValueError):
        return False


def read_csv_table(path: str | os.PathLike[str], max_rows: int | None = None) -> Table:
    """The table in the CSV file ``path``: the first line names the columns (see the module docstring).
    DataError naming the file and the fix for a missing, empty, ragged or headerless file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"{p} does not exist; give the path of a CSV file with a header line")
    if p.is_dir():
        raise DataError(f"{p} is a folder; give the path of a CSV file with a header line")
    try:
        size = p.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise DataError(f"{p} is {size} bytes, more than the {MAX_TABLE_BYTES} a table may have")
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text; save the table as a UTF-8 CSV file") from None
    except OSError as err:
        raise DataError(f"{p} cannot be read ({err.strerror or err}); check the path and its permissions") from None
    return table_from_csv(text, str(p), max_rows)


def table_from_csv(text: str, source: str = "the CSV text", max_rows: int | None = None) -> Table:
    """The table in CSV ``text`` (first line the header); see ``read_csv_table``."""
    if "\x00" in text:
        raise DataError(f"{source} holds NUL bytes; it is not a CSV text file")
    lines = [row for row in csv.reader(io.StringIO(text), delimiter=_delimiter(text)) if any(c.strip() for c in row)]
    if not lines:
        raise DataError(f"{source} is empty; a table needs a header line and at least one row")
    header = [h.strip() for h in lines[0]]
    if any(h == "" for h in header):
        raise DataError(f"{source}: the header line has an empty name (column {header.index('') + 1}); "
                        "name every column in the first line")
    if all(parse_number(h) is not None for h in header):
        raise DataError(f"{source}: the first line ({', '.join(header[:4])}...) holds only numbers; a table needs "
                        "a header line naming its columns")
    body = lines[1:] if max_rows is None else lines[1: 1 + max_rows]
    if not body:
        raise DataError(f"{source} has a header but no rows; a table needs at least one row")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{source}: row {i} has {len(row)} cells, the header {len(header)}; give every row "
                            "one cell per column (blank for a missing value)")
    cols = tuple(_column_of([row[j] for row in body], header[j]) for j in range(len(header)))
    return Table(tuple(header), cols)


def _delimiter(text: str) -> str:
    """The comma, or the semicolon or tab that separates the header line's names when it has no comma."""
    head = text.lstrip("\r\n").split("\n", 1)[0]
    if "," in head:
        return ","
    return next((d for d in (";", "\t") if d in head), ",")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    f = float(v)
    if math.isnan(f):
        return ""
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f)


def table_to_csv(table: Table) -> str:
    """The CSV text of ``table``: the header, then one line per row (see the module docstring)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.names)
    for i in range(table.n_rows):
        w.writerow([_cell(c[i]) for c in table.columns])
    return buf.getvalue()


def write_csv_table(path: str | os.PathLike[str], table: Table) -> Path:
    """Write ``table`` as CSV to ``path`` atomically; returns the path."""
    return write_text(path, table_to_csv(table))


def from_frame(frame: Any) -> Table:
    """A pandas DataFrame as a Table (column names as text; numeric columns float64, others text)."""
    names = tuple(str(c) for c in frame.columns)
    cols = []
    for name, c in zip(names, frame.columns, strict=True):
        series = frame[c]
        kind = getattr(series.dtype, "kind", "O")
        if kind in "biuf":
            cols.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            cols.append(_column_of(list(series.astype(object)), name))
    return Table(names, tuple(cols))


def to_frame(table: Table) -> Any:
    """The Table as a pandas DataFrame (ImportError if pandas is not installed)."""
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame({n: c for n, c in zip(table.names, table.columns, strict=True)}, columns=list(table.names))


def as_table(data: Any, names: Sequence[str] | None = None) -> Table:
    """``data`` as a Table: a Table (returned as is), a pandas DataFrame, or anything NumPy reads as a
    2-D array (numbers, or text mixed with numbers), its columns named ``names`` or x0, x1, ..."""
    if isinstance(data, Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return from_frame(data)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as err:
        raise DataError(f"the data cannot be read as a table ({err}); give a 2-D array, a DataFrame or a CSV") from None
    if arr.ndim != 2:
        hint = " Reshape your data with x.reshape(-1, 1) (one column) or x.reshape(1, -1) (one row)."
        raise DataError(f"a table is 2-D (rows x columns), got an array of shape {arr.shape}.{hint * (arr.ndim == 1)}")
    if arr.shape[1] == 0:
        raise DataError(f"the table has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.dtype.kind == "c":
        raise DataError("Complex data not supported; a table holds real numbers or text")
    names = tuple(names) if names is not None else tuple(f"x{j}" for j in range(arr.shape[1]))
    if len(names) != arr.shape[1]:
        raise DataError(f"{len(names)} names for {arr.shape[1]} columns")
    if arr.dtype.kind in "biuf":
        a = arr.astype(np.float64)
        if np.isinf(a).any():
            raise DataError("the table holds inf; only finite numbers or NaN (missing) are allowed")
        return Table(names, tuple(np.ascontiguousarray(a[:, j]) for j in range(a.shape[1])))
    if arr.dtype.kind not in "OUS":
        raise DataError(f"a table holds numbers or text, got dtype {arr.dtype}")
    return Table(names, tuple(_column_of(list(arr[:, j]), names[j]) for j in range(arr.shape[1])))


def input_kind(X: Any) -> str:
    """What ``X`` is: "table" (a Table), "frame" (a pandas DataFrame) or "array"."""
    if isinstance(X, Table):
        return "table"
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        return "frame"
    return "array"


def like_input(t: Table, kind: str, dtypes: Any = None) -> Any:
    """``t`` in the type of an input of ``input_kind`` ``kind``: the Table, a DataFrame with the
    input's column ``dtypes`` where its values allow them (bool, integer, nullable integer, category,
    string), or an array (of objects when a column holds text)."""
    if kind == "table":
        return t
    if kind == "frame":
        frame = to_frame(t)
        for name, dtype in (dtypes.items() if dtypes is not None else ()):
            if name in frame.columns and frame[name].dtype != dtype:
                with contextlib.suppress(TypeError, ValueError):
                    frame[name] = frame[name].astype(dtype)
        return frame
    if any(c.dtype == object for c in t.columns):
        return np.stack([c.astype(object) for c in t.columns], axis=1)
    return t.to_numpy()
