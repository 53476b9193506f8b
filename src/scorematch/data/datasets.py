"""Data sets by name: the resolver from a data spec to a Dataset, and the train/test split.

A spec is a toy name (``scorematch.distributions.toy_names()``), ``digits``, ``mnist:DIR``,
``fashion-mnist:DIR``, ``cifar10:DIR``, ``images:DIR`` or a .npy/.npz/.csv file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import torch

from scorematch._checks import choice, positive_int, user_path
from scorematch.data.arrays import ARRAY_EXTENSIONS, load_array
from scorematch.data.images import load_cifar10, load_digits, load_image_folder, load_mnist
from scorematch.errors import ConfigError, DataError

DATA_PREFIXES = ("mnist", "fashion-mnist", "cifar10", "images")

#: class names of the labelled image sets (digits and MNIST: "0" to "9")
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
DIGIT_CLASSES = tuple(str(k) for k in range(10))


@dataclass
class Dataset:
    """A training set: ``x`` float32 (n, D) ("vector") or (n, C, H, W) ("image", in [0, 1])."""

    x: torch.Tensor
    name: str
    kind: str
    dist: object | None = None
    labels: torch.Tensor | None = None  #: (n,) int64 class indices, when the data set has classes
    classes: tuple[str, ...] | None = None  #: the class names, index k -> classes[k]

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


def resolve_data(spec: str, n: int = 10_000, seed: int = 0, csv_header: str = "auto") -> Dataset:
    """Turn a data spec into a Dataset.

    spec: a toy name (``n`` points sampled with ``torch.Generator().manual_seed(seed)``;
    ``dist`` is the toy when it is a GaussianMixture with closed forms), "digits",
    "mnist:DIR", "fashion-mnist:DIR", "cifar10:DIR" (training split), "images:DIR",
    or a path to a .npy/.npz/.csv file. ``n`` and ``seed`` are used for toys only;
    files and image sets are returned whole. Image sets are not dequantised. ``csv_header``
    goes to ``load_array``'s ``header`` for .csv files.
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
            names = CLASS_NAMES.get(key, DIGIT_CLASSES) if labels is not None else None
            return Dataset(x=x, name=spec, kind="image", labels=labels, classes=names)
        if key == "cifar10":
            x, labels = load_cifar10(rest, "train")
            return Dataset(x=x, name=spec, kind="image", labels=labels, classes=CLASS_NAMES["cifar10"])
        x, labels, classes = load_image_folder(rest, labels=True)
        return Dataset(x=x, name=spec, kind="image", labels=labels, classes=tuple(classes) if classes else None)
    if spec == "digits":
        x, labels = load_digits()
        return Dataset(x=x, name="digits", kind="image", labels=labels, classes=DIGIT_CLASSES)
    path = user_path(spec)
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        return Dataset(x=load_array(path, csv_header), name=spec, kind="vector")

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
        return Dataset(x=load_array(path, csv_header), name=spec, kind="vector")
    if path.is_dir():
        raise DataError(
            f"data spec {spec!r} is a folder; say what it holds: "
            + ", ".join(f"{p}:{spec}" for p in DATA_PREFIXES)
        )
    close = difflib.get_close_matches(spec, [*distributions.toy_names(), "digits"], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown data spec {spec!r}{hint}; valid: {_valid()}")


def from_memory(data: object, name: str = "memory") -> Dataset:
    """A Dataset from data in memory: a tensor or NumPy array of shape (n, D) (vector data) or
    (n, C, H, W) with values in [0, 1] (images), or a ``torch.utils.data.Dataset`` whose items
    are such rows (or tuples whose first element is one, e.g. (image, label)), stacked once."""
    import numpy as np

    from scorematch.data.arrays import _validate_vectors

    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        data = _stack_items(data)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray):
        raise DataError(
            f"data must be a data spec (str), a tensor, a NumPy array or a torch Dataset, got {type(data).__name__}"
        )
    where = f"data ({name}, shape {tuple(data.shape)})"
    if data.ndim == 4:
        x = _validate_vectors(data.reshape(len(data), -1), where).reshape(data.shape)
        if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DataError(f"{where}: images must have values in [0, 1], got [{float(x.min()):.4g}, "
                            f"{float(x.max()):.4g}]; divide 8-bit images by 255")
        return Dataset(x=x, name=name, kind="image")
    return Dataset(x=_validate_vectors(data, where), name=name, kind="vector")


def _stack_items(ds: torch.utils.data.Dataset) -> torch.Tensor:
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError("a torch Dataset given as data needs a length (len(dataset))") from None
    rows = []
    for i in range(n):
        item = ds[i]
        if isinstance(item, tuple | list):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise DataError(f"item {i} of the Dataset is a {type(item).__name__}; items must be tensors "
                            "(or tuples whose first element is a tensor)")
        rows.append(item)
    if not rows:
        raise DataError("the Dataset given as data is empty")
    shapes = {tuple(r.shape) for r in rows}
    if len(shapes) > 1:
        raise DataError(f"the Dataset's items have different shapes ({len(shapes)} kinds, e.g. "
                        f"{sorted(shapes)[:2]}); every item must have the same shape")
    return torch.stack(rows).reshape(n, -1) if rows[0].dim() == 1 else torch.stack(rows)


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
