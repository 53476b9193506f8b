"""Image data: scikit-learn's bundled digits, MNIST / Fashion-MNIST IDX files, CIFAR-10 binary
batches and folders of PNG/JPEG files, all as float32 tensors (n, C, H, W) in [0, 1].

Nothing is ever downloaded and nothing is unpickled: the files are read from where the user
placed them, and every header and size is checked before use.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from scorematch._checks import choice, positive_int, user_path
from scorematch.data.arrays import PathLike
from scorematch.errors import ConfigError, DataError, DataNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILES = ("test_batch.bin",)

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
    folder = user_path(root)
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
    base = user_path(root)
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
    labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """All .png/.jpg/.jpeg files under ``root`` (recursive, sorted) as (n, C, H, W) in [0, 1].

    8-bit images are divided by 255, 16-bit grayscale by 65535. Channels: C = 1 if
    ``grayscale`` is True, or if it is None and every image is grayscale; else
    C = 3 (RGB; alpha is dropped). Every image must have the same size unless
    ``size=(H, W)`` (or an int, square) is given, which resizes all (bicubic).

    With ``labels=True`` returns (images, labels, classes): when every image lies in a
    first-level sub-folder (``root/CLASS/...``), ``classes`` are those folders' names, sorted,
    and ``labels`` (n,) int64 the index of each image's folder in that list; when some image
    lies directly in ``root``, both are None.
    """
    from PIL import Image

    folder = user_path(root)
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
    if not labels:
        return torch.from_numpy(out)
    parts = [p.relative_to(folder).parts for p in files]
    if any(len(q) < 2 for q in parts):
        return torch.from_numpy(out), None, None
    classes = sorted({q[0] for q in parts})
    index = {c: k for k, c in enumerate(classes)}
    return torch.from_numpy(out), torch.tensor([index[q[0]] for q in parts], dtype=torch.int64), classes

