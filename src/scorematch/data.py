"""Data loading: vector files, image sets, toy distributions and the data-spec resolver.

Vector data is a float32 tensor of shape (n, D); image data a float32 tensor of
shape (n, C, H, W) with pixel values scaled to [0, 1] (8-bit value k -> k / 255).
Nothing is ever downloaded: MNIST, Fashion-MNIST and CIFAR-10 are read from
files the user placed on disk; the only bundled set is scikit-learn's digits.
No loader uses pickle, and no loader writes anything.
"""

from __future__ import annotations

import difflib
import gzip
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from scorematch._checks import choice, positive_int
from scorematch.errors import ConfigError, DataError, DataNotFoundError

__all__ = [
    "Dataset",
    "data_names",
    "dequantize",
    "load_array",
    "load_cifar10",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "resolve_data",
    "train_test_split",
]

PathLike = str | os.PathLike[str]

ARRAY_EXTENSIONS = (".npy", ".npz", ".csv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
NPZ_PREFERRED_KEYS = ("x", "data", "samples")
DATA_PREFIXES = ("mnist", "fashion-mnist", "cifar10", "images")

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILES = ("test_batch.bin",)
_IMAGE_HINT = (
    "images need an image loader: load_mnist, load_cifar10 or load_image_folder "
    "(data specs mnist:DIR, cifar10:DIR, images:DIR)"
)


def _short(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ----------------------------------------------------------------------------- vector files


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
    for sep, name in (("\t", "tabs"), (";", "semicolons"), (" ", "spaces")):
        if sep in cell.strip():
            return f"; the file seems to use {name} as separator, scorematch reads commas only"
    return ""


def _load_csv(path: Path) -> tuple[np.ndarray, list[int]]:
    """Parse a comma-separated file of numbers (no header); return rows and their line numbers."""
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
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
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
                        f"is {_short(cell)}, not a number{_separator_hint(cell)}; scorematch reads "
                        "numbers only, remove the header line and any text columns"
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


def load_array(path: PathLike) -> torch.Tensor:
    """Load vector data, one sample per row, as a float32 tensor of shape (n, D); no scaling.

    Formats: ``.npy``; ``.npz`` (its only array, else the one named ``x``, ``data`` or
    ``samples``); ``.csv`` (comma-separated numbers, no header). Files are read
    with ``allow_pickle=False``. Raises DataNotFoundError if the file is missing and
    DataError for anything unusable (empty, not 2-D, NaN/inf, text, ragged rows,
    non-numeric dtype, unknown extension), naming the file, the problem and the fix.
    """
    p = Path(path).expanduser()
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
        array, lines = _load_csv(p)
        return _validate_vectors(array, source, lines)
    array, label = _load_numpy(p)
    return _validate_vectors(array, label)


# ----------------------------------------------------------------------------- images


def _to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 tensor in [0, 1] (k -> k / 255)."""
    return torch.from_numpy(pixels.astype(np.float32)).div_(255.0)


def dequantize(
    x: torch.Tensor, generator: torch.Generator | None = None, levels: int = 256
) -> torch.Tensor:
    """Uniform dequantisation: (x (levels - 1) + u) / levels with u ~ U[0, 1), elementwise.

    ``x`` holds values k / (levels - 1), k = 0..levels-1 (what the image loaders
    return for levels=256); the result lies in [k / levels, (k + 1) / levels), inside [0, 1).
    Returns a new tensor; ``x`` is not modified.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise DataError(
            f"dequantize needs a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    levels = positive_int("levels", levels, minimum=2)
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    return (x * (levels - 1) + u) / levels


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits: images (1797, 1, 8, 8) float32 in [0, 1], labels (1797,).

    Pixel values 0..16 are divided by 16. Labels are int64 digits 0..9. No network access.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.as_tensor(np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(np.asarray(bunch.target, dtype=np.int64))
    return images.contiguous(), labels


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: cannot be read ({type(e).__name__}: {e}); the file is truncated or not "
            "gzip-compressed; place an intact copy there"
        ) from None


def _find_file(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        p = folder / name
        if p.is_file():
            return p
    return None


def _parse_idx(data: bytes, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """Check an IDX header (big-endian magic and ``ndim`` uint32 sizes) and the file length."""
    what = "image" if magic == _IDX_IMAGES_MAGIC else "label"
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: is truncated ({len(data)} bytes, shorter than the {header}-byte IDX header); "
            "place an intact copy there"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        other = {_IDX_IMAGES_MAGIC: "an images file", _IDX_LABELS_MAGIC: "a labels file"}
        hint = f" (that is {other[found]}; are the names swapped?)" if found in other else ""
        raise DataError(
            f"{path}: wrong magic number 0x{found:08x}{hint}; an IDX {what} file starts with "
            f"0x{magic:08x}; place the original (Fashion-)MNIST file there"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: its header says {' x '.join(map(str, dims))} {what} bytes "
            f"({expected} bytes in all) but the file has {len(data)}; place an intact copy there"
        )
    if 0 in dims:
        raise DataError(f"{path}: holds no {what}s (header sizes {dims}); it needs data")
    return dims


def load_mnist(root: PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | None]:
    """MNIST or Fashion-MNIST from the standard IDX files in folder ``root``.

    Reads ``{train,t10k}-images-idx3-ubyte`` (or ``.gz``), and the matching
    ``-labels-idx1-ubyte[.gz]`` if present. Returns images (n, 1, rows, cols)
    float32 in [0, 1] (byte k -> k / 255) and labels (n,) int64, or None when the
    labels file is absent. ``split`` is "train" or "test". Never downloads.
    """
    choice("split", split, ("train", "test"))
    folder = Path(root).expanduser()
    prefix = "train" if split == "train" else "t10k"
    image_names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"]
    label_names = [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"]
    image_path = _find_file(folder, image_names) if folder.is_dir() else None
    if image_path is None:
        where = "" if folder.is_dir() else " (that folder does not exist)"
        raise DataNotFoundError(
            f"MNIST {split} images not found: expected {image_names[0]} or {image_names[1]} "
            f"(labels: {label_names[0]}[.gz], optional) in {folder}{where}; scorematch never "
            "downloads data: place the standard (Fashion-)MNIST IDX files in that folder"
        )
    data = _read_maybe_gzip(image_path)
    n, rows, cols = _parse_idx(data, image_path, _IDX_IMAGES_MAGIC, 3)
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    images = _to_unit(pixels)
    label_path = _find_file(folder, label_names)
    if label_path is None:
        return images, None
    ldata = _read_maybe_gzip(label_path)
    (n_labels,) = _parse_idx(ldata, label_path, _IDX_LABELS_MAGIC, 1)
    if n_labels != n:
        raise DataError(
            f"{label_path}: holds {n_labels} labels but {image_path} holds {n} images; "
            "the two files do not belong together"
        )
    labels = torch.from_numpy(np.frombuffer(ldata, dtype=np.uint8, offset=8).astype(np.int64))
    return images, labels


def load_cifar10(root: PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10, binary version: images (n, 3, 32, 32) float32 in [0, 1] (k -> k / 255), labels.

    ``root`` is the folder holding ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin``, or its parent holding ``cifar-10-batches-bin/``. Each record
    is 1 label byte then 3072 pixel bytes, channel-major (R plane, G, B; rows of
    32). ``split`` is "train" (50 000 images) or "test". Never downloads, never unpickles.
    """
    choice("split", split, ("train", "test"))
    base = Path(root).expanduser()
    names = _CIFAR_TRAIN_FILES if split == "train" else _CIFAR_TEST_FILES
    folder = base
    if not (base / names[0]).is_file() and (base / "cifar-10-batches-bin").is_dir():
        folder = base / "cifar-10-batches-bin"
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        hint = ""
        if (base / "cifar-10-batches-py").is_dir() or (base / "data_batch_1").is_file():
            hint = (
                " (found the Python/pickle version, which scorematch does not read: it never "
                "unpickles; get the binary version, cifar-10-binary.tar.gz)"
            )
        where = "" if base.is_dir() else " (that folder does not exist)"
        raise DataNotFoundError(
            f"CIFAR-10 {split} files not found: expected {', '.join(names)} in {base} or in "
            f"{base / 'cifar-10-batches-bin'}{where}; missing {', '.join(missing)}{hint}; "
            "scorematch never downloads data: extract the CIFAR-10 binary version there"
        )
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for name in names:
        path = folder / name
        try:
            data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e}); check the permissions") from None
        if data.size == 0 or data.size % _CIFAR_RECORD:
            raise DataError(
                f"{path}: size {data.size} bytes is not a positive multiple of {_CIFAR_RECORD} "
                "(1 label byte + 3072 pixel bytes per image): the file is truncated or not a "
                "CIFAR-10 binary batch (CIFAR-100 records have 3074 bytes)"
            )
        records = data.reshape(-1, _CIFAR_RECORD)
        if records[:, 0].max() > 9:
            raise DataError(
                f"{path}: label byte {int(records[:, 0].max())} is not a CIFAR-10 class (0..9); "
                "the file is not a CIFAR-10 binary batch"
            )
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return _to_unit(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _image_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ConfigError(f"size must be (H, W) or an int, got {size!r}")
    return positive_int("size[0] (H)", size[0]), positive_int("size[1] (W)", size[1])


def load_image_folder(
    root: PathLike,
    size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
) -> torch.Tensor:
    """All .png/.jpg/.jpeg files under ``root`` (recursive, sorted) as (n, C, H, W) in [0, 1].

    8-bit images are divided by 255, 16-bit grayscale by 65535. Channels: C = 1 if
    ``grayscale`` is True, or if it is None and every image is grayscale; else
    C = 3 (RGB; alpha is dropped). Every image must have the same size unless
    ``size=(H, W)`` (or an int, square) is given, which resizes all (bicubic).
    """
    from PIL import Image

    folder = Path(root).expanduser()
    if not folder.exists():
        raise DataNotFoundError(f"{folder}: no such folder; check the path")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder of images; for arrays use load_array")
    target = _image_size(size)
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise DataError(
            f"{folder}: contains no images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively); "
            "put PNG or JPEG files there"
        )

    def fail(path: Path, e: Exception) -> DataError:
        return DataError(
            f"{path}: cannot be decoded as an image ({type(e).__name__}: {e}); "
            "remove or replace that file"
        )

    sizes: list[tuple[int, int]] = []
    modes: list[str] = []
    for path in files:
        try:
            with Image.open(path) as im:
                width, height = im.size
                modes.append(im.mode)
        except Exception as e:  # Pillow raises many types for undecodable files
            raise fail(path, e) from None
        sizes.append((height, width))
        if target is None and sizes[-1] != sizes[0]:
            raise DataError(
                f"images of different sizes: {files[0]} is {sizes[0][0]}x{sizes[0][1]} (HxW) but "
                f"{path} is {height}x{width}; pass size=(H, W) to resize all of them"
            )
    if grayscale is None:
        grayscale = all(m in _GRAY_MODES for m in modes)
    mode = "L" if grayscale else "RGB"
    height, width = target if target is not None else sizes[0]
    out = np.empty((len(files), 1 if grayscale else 3, height, width), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in _WIDE_MODES:
                    scale = 1.0 if im.mode == "F" else 65535.0
                    im = im.convert("F")
                else:
                    scale = 255.0
                    im = im.convert(mode)
                if (im.height, im.width) != (height, width):
                    im = im.resize((width, height), Image.Resampling.BICUBIC)
                arr = np.asarray(im, dtype=np.float32) / scale
        except Exception as e:
            raise fail(path, e) from None
        arr = np.clip(arr, 0.0, 1.0)
        out[i] = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- resolver


@dataclass
class Dataset:
    """A training set: ``x`` float32 (n, D) ("vector") or (n, C, H, W) ("image", in [0, 1])."""

    x: torch.Tensor
    name: str
    kind: str
    dist: object | None = None
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        choice("dataset kind", self.kind, ("vector", "image"))
        want = 2 if self.kind == "vector" else 4
        if self.x.dim() != want:
            raise DataError(
                f"dataset {self.name!r}: kind {self.kind!r} needs a {want}-D tensor, "
                f"got shape {tuple(self.x.shape)}"
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (D,) or (C, H, W)."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])


def data_names() -> list[str]:
    """Every accepted data spec, for help texts: toy names, "digits", prefixed forms, files."""
    from scorematch.distributions import toy_names

    return [*toy_names(), "digits", *(f"{p}:DIR" for p in DATA_PREFIXES), "FILE.npy|.npz|.csv"]


def resolve_data(spec: str, n: int = 10_000, seed: int = 0) -> Dataset:
    """Turn a data spec into a Dataset.

    spec: a toy name (``n`` points sampled with ``torch.Generator().manual_seed(seed)``;
    ``dist`` is the toy when it is a GaussianMixture with closed forms), "digits",
    "mnist:DIR", "fashion-mnist:DIR", "cifar10:DIR" (training split), "images:DIR",
    or a path to a .npy/.npz/.csv file. ``n`` and ``seed`` are used for toys only;
    files and image sets are returned whole. Image sets are not dequantised.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data spec must be a non-empty string, got {spec!r}; valid: {_valid()}")
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix.lower() in DATA_PREFIXES:
        if not rest.strip():
            raise DataError(f"data spec {spec!r} names no folder; write {prefix}:DIR")
        key = prefix.lower()
        if key in ("mnist", "fashion-mnist"):
            x, labels = load_mnist(rest, "train")
            return Dataset(x=x, name=spec, kind="image", labels=labels)
        if key == "cifar10":
            x, labels = load_cifar10(rest, "train")
            return Dataset(x=x, name=spec, kind="image", labels=labels)
        return Dataset(x=load_image_folder(rest), name=spec, kind="image")
    if spec == "digits":
        x, labels = load_digits()
        return Dataset(x=x, name="digits", kind="image", labels=labels)
    path = Path(spec).expanduser()
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        return Dataset(x=load_array(path), name=spec, kind="vector")

    from scorematch import distributions

    if spec in distributions.toy_names():
        n = positive_int("n", n)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        dist = distributions.toy(spec)
        x = dist.sample(n, generator=torch.Generator().manual_seed(seed))
        x = x.detach().to(torch.float32).reshape(n, -1).contiguous()
        gm = dist if isinstance(dist, distributions.GaussianMixture) else None
        return Dataset(x=x, name=spec, kind="vector", dist=gm)
    if path.is_file():
        return Dataset(x=load_array(path), name=spec, kind="vector")
    if path.is_dir():
        raise DataError(
            f"data spec {spec!r} is a folder; say what it holds: "
            + ", ".join(f"{p}:{spec}" for p in DATA_PREFIXES)
        )
    close = difflib.get_close_matches(spec, [*distributions.toy_names(), "digits"], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown data spec {spec!r}{hint}; valid: {_valid()}")


def _valid() -> str:
    return ", ".join(data_names())


def train_test_split(
    ds: Dataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Random split into (train, test); the test part has round(n * test_fraction) rows.

    The permutation comes from ``torch.Generator().manual_seed(seed)``; labels and
    ``dist`` follow the rows. Both parts must be non-empty.
    """
    try:
        frac = float(test_fraction)
    except (TypeError, ValueError):
        raise ConfigError(
            f"test_fraction must be a number in (0, 1), got {test_fraction!r}"
        ) from None
    if not 0.0 < frac < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n = len(ds)
    n_test = round(n * frac)
    if n_test < 1 or n_test >= n:
        raise DataError(
            f"dataset {ds.name!r} has {n} samples: a test fraction of {frac} leaves "
            f"{n_test} test and {n - n_test} training samples; both need at least one"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    test_idx, train_idx = perm[:n_test], perm[n_test:]

    def take(idx: torch.Tensor) -> Dataset:
        labels = ds.labels[idx] if ds.labels is not None else None
        return replace(ds, x=ds.x[idx], labels=labels)

    return take(train_idx), take(test_idx)


def quantization_levels(ds: Dataset) -> int:
    """Pixel levels of an image data set: 17 for scikit-learn's digits (values 0..16), else 256."""
    return 17 if ds.name == "digits" else 256
