"""Vector data files: ``.npy``, ``.npz`` and ``.csv`` as a float32 tensor of shape (n, D).

Files are read with ``allow_pickle=False`` and validated at the boundary: anything unusable
(empty, not 2-D, NaN/inf, text, ragged rows, non-numeric dtype) is a DataError that names the
file, the problem and the fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from scorematch._checks import user_path
from scorematch.errors import DataError, DataNotFoundError

PathLike = str | os.PathLike[str]

ARRAY_EXTENSIONS = (".npy", ".npz", ".csv")
CSV_HEADER = ("auto", "yes", "no")
_told_header: set[str] = set()
NPZ_PREFERRED_KEYS = ("x", "data", "samples")
_IMAGE_HINT = (
    "images need an image loader: load_mnist, load_cifar10 or load_image_folder "
    "(data specs mnist:DIR, cifar10:DIR, images:DIR)"
)

def _short(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _validate_vectors(
    a: np.ndarray, source: str, lines: Sequence[int] | None = None
) -> torch.Tensor:
    """Check that ``a`` is a finite numeric (n, D) array with n, D >= 1; return it as float32.

    ``lines`` maps row indices to 1-based line numbers of a text file, for messages.
    """
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: the array has non-numeric dtype {a.dtype} (kind {a.dtype.kind!r}); "
            "scorematch needs numbers: save x.astype(np.float32) with np.save"
        )
    if a.ndim == 0:
        raise DataError(
            f"{source}: holds a single number (a 0-d array), expected a 2-D array of shape "
            "(n, D), one sample per row"
        )
    if a.ndim == 1:
        raise DataError(
            f"{source}: the array is 1-D with shape {a.shape}, expected (n, D); for n samples of "
            "one variable save x.reshape(-1, 1), for one D-dimensional sample x.reshape(1, -1)"
        )
    if a.ndim > 2:
        raise DataError(
            f"{source}: the array has shape {a.shape} ({a.ndim}-D), expected (n, D); "
            f"{_IMAGE_HINT}; to use each sample as a flat vector save x.reshape(len(x), -1)"
        )
    n, d = a.shape
    if n == 0:
        raise DataError(f"{source}: the array is empty: zero rows (shape {a.shape}); it needs data")
    if d == 0:
        raise DataError(
            f"{source}: the array has zero columns (shape {a.shape}); each row needs D >= 1 values"
        )

    def where(bad_rows: np.ndarray) -> str:
        first = int(bad_rows[0])
        at = f"row {first} (0-based)"
        if lines is not None:
            at += f", line {lines[first]} of the file"
        return f"in {bad_rows.size} row(s), the first at {at}"

    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            n_nan = int(np.isnan(a).sum())
            n_inf = int((~finite).sum()) - n_nan
            bad = np.flatnonzero(~finite.all(axis=1))
            raise DataError(
                f"{source}: contains non-finite values, {n_nan} NaN and {n_inf} inf, "
                f"{where(bad)}; drop or impute them first, e.g. x = x[np.isfinite(x).all(axis=1)]"
            )
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise DataError(
            f"{source}: values too large for float32 (|x| > 3.4e38) {where(bad)}; rescale the data"
        )
    return torch.from_numpy(np.ascontiguousarray(out))


def _numpy_error(where: str, e: Exception) -> DataError:
    """Turn a failure of np.load (or of reading an array from an .npz) into a DataError."""
    text = str(e)
    if isinstance(e, ValueError) and "Object arrays" in text:
        return DataError(
            f"{where}: holds Python objects (dtype object), which scorematch never unpickles; "
            "save a numeric array instead: np.save(path, x.astype(np.float32))"
        )
    if isinstance(e, ValueError) and "pickle" in text:
        return DataError(
            f"{where}: is not a NumPy .npy/.npz file (it would need pickle, which scorematch "
            "never uses); save the data with np.save or np.savez"
        )
    return DataError(
        f"{where}: cannot be read as a NumPy file ({type(e).__name__}: {e}); "
        "is it truncated? save it again with np.save / np.savez"
    )


def _load_numpy(path: Path) -> tuple[np.ndarray, str]:
    """Read a .npy or .npz file without pickle; return the array and a label for messages."""
    source = str(path)
    try:
        fh = open(path, "rb")  # closed below; np.load itself leaks it on a bad zip
    except OSError as e:
        raise DataError(f"{source}: cannot be read ({e}); check the permissions") from None
    with fh:
        try:
            loaded = np.load(fh, allow_pickle=False)
        except Exception as e:  # any parse failure of a foreign file is a data problem
            raise _numpy_error(source, e) from None
        if isinstance(loaded, np.ndarray):
            return loaded, source
        with loaded as archive:
            keys = list(archive.files)
            if not keys:
                raise DataError(f"{source}: the .npz archive is empty (no arrays); it needs data")
            named = [k for k in NPZ_PREFERRED_KEYS if k in keys]
            if len(keys) > 1 and not named:
                raise DataError(
                    f"{source}: the .npz archive holds several arrays ({', '.join(keys)}) and "
                    f"none is named {', '.join(NPZ_PREFERRED_KEYS)}; save the training data as "
                    "np.savez(path, x=array) or pass a single-array file"
                )
            key = keys[0] if len(keys) == 1 else named[0]
            where = f"{source} (array {key!r})"
            try:
                return archive[key], where
            except Exception as e:
                raise _numpy_error(where, e) from None


def _separator_hint(cell: str) -> str:
    for sep, name in (("\t", "tabs"), (";", "semicolons")):
        if sep in cell.strip():
            return f"; the file seems to use {name} as separator: give --table to read it as a table (tables may)"
    if " " in cell.strip():
        return "; the file seems to use spaces as separator, scorematch reads commas"
    return ""


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _header_line(text: str, source: str, header: str) -> int:
    """1-based number of the header line to skip (0: none). ``auto``: the first non-empty line
    when one of its cells is not a number and the next non-empty line is all numbers (said once
    on stderr); ``yes``: the first non-empty line; ``no``: none."""
    if header == "no":
        return 0
    first = [(i, ln) for i, ln in enumerate(text.split("\n"), start=1) if ln.strip()][:2]
    if not first:
        return 0
    if header == "yes":
        return first[0][0]
    lineno, line = first[0]
    if not any(c.strip() and not _is_number(c) for c in line.split(",")):
        return 0
    if len(first) < 2 or not all(_is_number(c) for c in first[1][1].split(",")):
        return 0  # text further down too: not a header, report it as text below
    if source not in _told_header:
        _told_header.add(source)
        cells = ", ".join(c.strip() for c in line.split(","))
        print(f"scorematch: {source}: line {lineno} ({_short(cells, 60)}) is not numeric: read as a header "
              "(--csv-header no, or header='no', to refuse it)", file=sys.stderr)
    return lineno


def csv_header_of(path: PathLike, header: str = "auto") -> str:
    """``"yes"`` when ``load_array(path, header)`` skips a header line of the .csv, else ``"no"``
    (quietly: nothing is said on stderr)."""
    p = user_path(path)
    if header != "auto" or p.suffix.lower() != ".csv":
        return header if p.suffix.lower() == ".csv" else "no"
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return "no"
    _told_header.add(str(p))
    return "yes" if _header_line(text, str(p), "auto") else "no"


def _load_csv(path: Path, header: str = "auto") -> tuple[np.ndarray, list[int]]:
    """Parse a comma-separated file of numbers, skipping a header line (see ``_header_line``);
    return rows and their line numbers."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{source}: cannot be read ({e}); check the permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source}: is not a UTF-8 text file (undecodable byte at offset {e.start}); "
            "a .csv must hold comma-separated numbers; for binary arrays use .npy"
        ) from None
    rows: list[list[float]] = []
    lines: list[int] = []
    width = 0
    skip = _header_line(text, source, header)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or lineno == skip:
            continue
        cells = line.split(",")
        values: list[float] = []
        for col, cell in enumerate(cells, start=1):
            try:
                values.append(float(cell))
            except ValueError:
                if not cell.strip():
                    raise DataError(
                        f"{source}: line {lineno}, cell {col} is empty (a trailing or doubled "
                        "comma?); every cell must hold a number"
                    ) from None
                if not rows:
                    raise DataError(
                        f"{source}: line {lineno} looks like a header or holds text: cell {col} "
                        f"is {_short(cell)}, not a number{_separator_hint(cell)}; skip a header line with "
                        "--csv-header yes (header='yes'), and remove any text columns"
                    ) from None
                raise DataError(
                    f"{source}: line {lineno}, cell {col} is {_short(cell)}, not a number"
                    f"{_separator_hint(cell)}; a .csv must hold numbers only"
                ) from None
        if rows and len(values) != width:
            raise DataError(
                f"{source}: ragged rows: line {lineno} has {len(values)} cells but line {lines[0]} "
                f"has {width}; every row needs the same number of comma-separated values"
            )
        width = len(values)
        rows.append(values)
        lines.append(lineno)
    if not rows:
        raise DataError(
            f"{source}: the file is empty: no data rows; it needs comma-separated numbers"
        )
    return np.asarray(rows, dtype=np.float64), lines


def load_array(path: PathLike, header: str | bool = "auto") -> torch.Tensor:
    """Load vector data, one sample per row, as a float32 tensor of shape (n, D); no scaling.

    Formats: ``.npy``; ``.npz`` (its only array, else the one named ``x``, ``data`` or
    ``samples``); ``.csv`` (comma-separated numbers). ``header`` (CSV only): ``"auto"`` skips
    a first line that is not numeric when the next one is (and says so once on stderr),
    ``"yes"`` (or True) always skips the first line, ``"no"`` (or False) never. Files are read
    with ``allow_pickle=False``. Raises DataNotFoundError if the file is missing and
    DataError for anything unusable (empty, not 2-D, NaN/inf, text, ragged rows,
    non-numeric dtype, unknown extension), naming the file, the problem and the fix.
    """
    header = {True: "yes", False: "no"}.get(header, header) if isinstance(header, bool) else header
    if header not in CSV_HEADER:
        raise DataError(f"header must be one of {', '.join(CSV_HEADER)} (or a bool), got {header!r}")
    p = user_path(path)
    source = str(p)
    try:
        exists = p.exists()
    except (OSError, ValueError) as e:
        raise DataError(f"{source}: not a usable path ({e})") from None
    if not exists:
        raise DataNotFoundError(f"{source}: no such file; check the path")
    if p.is_dir():
        raise DataError(
            f"{source}: is a folder, not a data file; load_array reads one .npy/.npz/.csv file; "
            "for a folder of images use load_image_folder (data spec images:DIR)"
        )
    ext = p.suffix.lower()
    if ext not in ARRAY_EXTENSIONS:
        raise DataError(
            f"{source}: unsupported file extension {ext or '(none)'!r}; supported: "
            f"{', '.join(ARRAY_EXTENSIONS)}; for images use load_image_folder (images:DIR)"
        )
    if p.stat().st_size == 0:
        raise DataError(f"{source}: the file is empty (0 bytes); it needs data")
    if ext == ".csv":
        array, lines = _load_csv(p, header)
        return _validate_vectors(array, source, lines)
    array, label = _load_numpy(p)
    return _validate_vectors(array, label)

