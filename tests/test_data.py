"""Tests of scorematch.data: file loaders, image sets, validation errors and the resolver."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from scorematch.data import (
    Dataset,
    data_names,
    dequantize,
    load_array,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
    resolve_data,
    train_test_split,
)
from scorematch.errors import ConfigError, DataError, DataNotFoundError

# ----------------------------------------------------------------------------- helpers


def write_idx_images(path: Path, pixels: np.ndarray, magic: int = 0x803) -> None:
    n, rows, cols = pixels.shape
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, n, rows, cols))
    data = header + pixels.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    data = (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    data += labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def cifar_records(n: int, label: int = 3) -> np.ndarray:
    rec = np.zeros((n, 3073), dtype=np.uint8)
    rec[:, 0] = label
    return rec


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ----------------------------------------------------------------------------- MNIST (IDX)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 5, 7), dtype=np.uint8)
    labels = np.array([0, 9, 3, 7], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx_images(tmp_path / f"train-images-idx3-ubyte{suffix}", pixels)
    write_idx_labels(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels)
    x, y = load_mnist(tmp_path)
    assert x.dtype == torch.float32 and x.shape == (4, 1, 5, 7)
    expected = torch.from_numpy(pixels.astype(np.float32)) / 255
    assert torch.equal(x[:, 0], expected)
    assert x[0, 0, 0, 0].item() == np.float32(pixels[0, 0, 0]) / np.float32(255)
    assert y is not None and y.tolist() == [0, 9, 3, 7] and y.dtype == torch.int64


def test_mnist_test_split_and_no_labels(tmp_path: Path) -> None:
    pixels = np.full((2, 28, 28), 255, dtype=np.uint8)
    pixels[1] = 0
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    x, y = load_mnist(tmp_path, split="test")
    assert x.shape == (2, 1, 28, 28) and y is None
    assert x[0].min().item() == 1.0 and x[1].max().item() == 0.0
    with pytest.raises(DataNotFoundError):
        load_mnist(tmp_path, split="train")
    with pytest.raises(ConfigError, match="split"):
        load_mnist(tmp_path, split="validation")


def test_mnist_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path) in msg and "download" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_mnist_truncated_and_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx_images(path, np.zeros((3, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)
    write_idx_images(path, np.zeros((3, 4, 4), dtype=np.uint8), magic=0x801)
    with pytest.raises(DataError, match="magic"):
        load_mnist(tmp_path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)


def test_mnist_bad_gzip_and_label_count(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)
    write_idx_images(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), dtype=np.uint8))
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(DataError, match="2 labels"):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10 (binary)


def write_cifar(folder: Path, n_per_batch: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        rec = cifar_records(n_per_batch, label=i)
        (folder / f"data_batch_{i}.bin").write_bytes(rec.tobytes())
    test = cifar_records(1, label=0)
    # image 0, channel 2 (blue), row 5, column 7 -> byte 1 + 2*1024 + 5*32 + 7
    test[0, 1 + 2 * 1024 + 5 * 32 + 7] = 200
    (folder / "test_batch.bin").write_bytes(test.tobytes())


def test_cifar_channel_major_layout(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    x, y = load_cifar10(tmp_path, split="test")
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert x[0, 2, 5, 7].item() == np.float32(200) / np.float32(255)
    assert x.sum().item() == pytest.approx(200 / 255)
    assert y.tolist() == [0]


def test_cifar_train_and_parent_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-bin", n_per_batch=3)
    batch = cifar_records(3, label=1)
    batch[2, 1 + 0 * 1024 + 31 * 32 + 0] = 255  # image 2 of batch 1: red, bottom-left
    (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(batch.tobytes())
    x, y = load_cifar10(tmp_path)
    assert x.shape == (15, 3, 32, 32)
    assert y.tolist() == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3
    assert x[2, 0, 31, 0].item() == 1.0 and x.sum().item() == 1.0


def test_cifar_missing_and_bad_size(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(tmp_path)
    assert "data_batch_1.bin" in str(info.value) and "download" in str(info.value)
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DataError, match="3073"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(cifar_records(1, label=42).tobytes())
    with pytest.raises(DataError, match="label"):
        load_cifar10(tmp_path, split="test")


# ----------------------------------------------------------------------------- image folders


def make_gray_folder(root: Path) -> list[np.ndarray]:
    arrays = [np.full((4, 5), v, dtype=np.uint8) for v in (0, 51, 255)]
    arrays[1][2, 3] = 102
    write_png(root / "a.png", arrays[0])
    write_png(root / "sub" / "b.PNG", arrays[1])
    write_png(root / "sub" / "c.png", arrays[2])
    (root / "notes.txt").write_text("ignored")
    return arrays


def test_image_folder_grayscale_values(tmp_path: Path) -> None:
    arrays = make_gray_folder(tmp_path)
    x = load_image_folder(tmp_path)
    assert x.shape == (3, 1, 4, 5) and x.dtype == torch.float32
    for i, a in enumerate(arrays):
        assert torch.equal(x[i, 0], torch.from_numpy(a.astype(np.float32)) / 255)
    assert x[1, 0, 2, 3].item() == pytest.approx(0.4)


def test_image_folder_rgb_and_modes(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[1, 2] = (255, 0, 51)
    write_png(tmp_path / "a.png", rgb)
    write_png(tmp_path / "b.png", np.full((4, 5), 255, dtype=np.uint8))
    x = load_image_folder(tmp_path)
    assert x.shape == (2, 3, 4, 5)
    assert x[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert x[1].min().item() == 1.0
    assert load_image_folder(tmp_path, grayscale=True).shape == (2, 1, 4, 5)


def test_image_folder_sizes(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", np.full((4, 5), 100, dtype=np.uint8))
    write_png(tmp_path / "b.png", np.full((6, 6), 100, dtype=np.uint8))
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    msg = str(info.value)
    assert "a.png" in msg and "b.png" in msg and "4x5" in msg and "6x6" in msg and "size=" in msg
    x = load_image_folder(tmp_path, size=(3, 2))
    assert x.shape == (2, 1, 3, 2)
    assert torch.allclose(x, torch.full_like(x, 100 / 255), atol=1e-6)
    assert load_image_folder(tmp_path, size=8).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError):
        load_image_folder(tmp_path, size=(0, 3))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path)
    write_png(tmp_path / "good.png", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------- digits, dequantize


def test_digits() -> None:
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert torch.equal(x * 16, torch.round(x * 16))


def test_dequantize() -> None:
    k = torch.arange(256, dtype=torch.float32).repeat(4)
    x = k / 255
    out = dequantize(x, generator=torch.Generator().manual_seed(1))
    assert out.min().item() >= 0.0 and out.max().item() < 1.0
    assert torch.equal(torch.floor(out * 256), k)
    again = dequantize(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    out4 = dequantize(torch.tensor([0.0, 1 / 3, 1.0]), levels=4)
    assert torch.equal(torch.floor(out4 * 4), torch.tensor([0.0, 1.0, 3.0]))
    with pytest.raises(ConfigError):
        dequantize(x, levels=1)


# ----------------------------------------------------------------------------- load_array


def test_load_array_round_trips(tmp_path: Path) -> None:
    a = np.array([[1.5, -2.0, 3.0], [0.0, 1e-3, 7.25]])
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "one.npz", a)
    np.savez(tmp_path / "named.npz", labels=np.arange(2), x=a)
    (tmp_path / "a.csv").write_text("1.5,-2,3\n0, 1e-3 ,7.25\n\n")
    expected = torch.from_numpy(a.astype(np.float32))
    for name in ("a.npy", "one.npz", "named.npz", "a.csv"):
        x = load_array(tmp_path / name)
        assert x.dtype == torch.float32 and torch.equal(x, expected), name
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.int64).reshape(3, 2))
    assert load_array(str(tmp_path / "i.npy")).tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("e.npy", b"", ["empty"]),
        ("e.csv", b"", ["empty"]),
        ("blank.csv", b"\n \n", ["empty"]),
        ("h.csv", b"x,y\nu,v\n1,2\n", ["header", "line 1", "'x'", "--csv-header yes"]),
        ("t.csv", b"1,2\n3,4\n5,abc\n", ["line 3", "cell 2", "'abc'"]),
        ("r.csv", b"1,2\n3,4,5\n", ["ragged", "line 2", "3 cells"]),
        ("sep.csv", b"1;2\n3;4\n", ["semicolons"]),
        ("nan.csv", b"1,2\n3,nan\n4,inf\n", ["NaN", "inf", "line 2"]),
        ("bin.csv", b"\xff\xfe\x00\x01", ["UTF-8"]),
        ("data.txt", b"1,2\n", [".npy", ".csv", "extension"]),
        ("fake.npy", b"1,2\n3,4\n", ["pickle"]),
        ("fake.npz", b"PK\x03\x04 garbage", ["cannot be read"]),
    ],
)
def test_load_array_bad_bytes(tmp_path: Path, name: str, content: bytes, words: list[str]) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_array(path)
    for word in words:
        assert word in str(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((0, 3)), ["empty", "zero rows"]),
        (np.zeros((3, 0)), ["zero columns"]),
        (np.float64(1.0), ["0-d"]),
        (np.arange(5.0), ["1-D", "reshape(-1, 1)"]),
        (np.zeros((2, 3, 4)), ["image", "load_image_folder", "reshape"]),
        (np.array([[1.0, 2], [np.nan, 1], [np.inf, np.nan]]), ["NaN", "2 NaN and 1 inf", "row 1"]),
        (np.array([[1.0], [1e300]]), ["float32", "row 1"]),
        (np.array([["a", "b"], ["c", "d"]]), ["non-numeric dtype"]),
        (np.array([[1 + 2j]]), ["non-numeric dtype"]),
        (np.array([[object(), 1]], dtype=object), ["object", "pickle"]),
    ],
)
def test_load_array_bad_arrays(tmp_path: Path, array: np.ndarray, words: list[str]) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError) as info:
        load_array(path)
    for word in words:
        assert word in str(info.value)
    assert "bad.npy" in str(info.value)


def test_load_array_missing_folder_npz_keys(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(DataError, match="folder"):
        load_array(tmp_path)
    np.savez(tmp_path / "many.npz", a=np.ones((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(DataError) as info:
        load_array(tmp_path / "many.npz")
    assert "a, b" in str(info.value) and "x=" in str(info.value)
    np.savez(tmp_path / "none.npz")
    with pytest.raises(DataError, match="no arrays"):
        load_array(tmp_path / "none.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match="object"):
        load_array(tmp_path / "obj.npz")


# ----------------------------------------------------------------------------- property test

_DTYPES = (
    hnp.floating_dtypes()
    | hnp.integer_dtypes()
    | hnp.boolean_dtypes()
    | hnp.complex_number_dtypes()
    | hnp.unicode_string_dtypes(max_len=3)
)


@st.composite
def malformed_arrays(draw: st.DrawFn) -> np.ndarray:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    if draw(st.integers(0, 5)) == 0:
        cells = draw(st.lists(st.none() | st.integers() | st.text(max_size=2), min_size=1))
        return np.array(cells + [object()], dtype=object)
    return draw(hnp.arrays(draw(_DTYPES), shape))


_CSV_TEXT = st.text(alphabet="0123456789.,-+e \t\n\rnaifNx;_", max_size=60)


def _assert_valid_or_data_error(path: Path) -> None:
    try:
        x = load_array(path)
    except DataError:
        return
    assert x.dtype == torch.float32 and x.dim() == 2
    assert x.shape[0] >= 1 and x.shape[1] >= 1
    assert torch.isfinite(x).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=malformed_arrays(), npz=st.booleans())
def test_property_npy_either_valid_or_data_error(array: np.ndarray, npz: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("a.npz" if npz else "a.npy")
        if npz:
            np.savez(path, x=array)
        else:
            np.save(path, array, allow_pickle=True)
        _assert_valid_or_data_error(path)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=80) | _CSV_TEXT.map(str.encode), ext=st.sampled_from(
    [".csv", ".csv", ".npy", ".npz"]))
def test_property_bytes_either_valid_or_data_error(content: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"f{ext}"
        path.write_bytes(content)
        _assert_valid_or_data_error(path)


# ----------------------------------------------------------------------------- resolver


def test_resolve_toys() -> None:
    from scorematch.distributions import GaussianMixture

    ds = resolve_data("gmm2d", n=300, seed=3)
    assert ds.kind == "vector" and ds.name == "gmm2d" and ds.x.shape == (300, 2)
    assert ds.x.dtype == torch.float32 and ds.sample_shape == (2,) and len(ds) == 300
    assert isinstance(ds.dist, GaussianMixture) and ds.labels is None
    assert torch.equal(ds.x, resolve_data("gmm2d", n=300, seed=3).x)
    assert not torch.equal(ds.x, resolve_data("gmm2d", n=300, seed=4).x)
    moons = resolve_data("moons", n=50)
    assert moons.dist is None and moons.x.shape == (50, 2)
    with pytest.raises(ConfigError):
        resolve_data("gmm2d", n=0)


def test_resolve_files_and_images(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((7, 3)))
    ds = resolve_data(str(tmp_path / "v.npy"))
    assert ds.kind == "vector" and ds.x.shape == (7, 3) and ds.dist is None
    digits = resolve_data("digits")
    assert digits.kind == "image" and digits.sample_shape == (1, 8, 8)
    assert digits.labels is not None and digits.labels.shape == (1797,)

    write_idx_images(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    for prefix in ("mnist", "fashion-mnist"):
        ds = resolve_data(f"{prefix}:{tmp_path}")
        assert ds.kind == "image" and ds.x.shape == (3, 1, 28, 28) and ds.labels is None
    write_cifar(tmp_path / "c" / "cifar-10-batches-bin")
    ds = resolve_data(f"cifar10:{tmp_path / 'c'}")
    assert ds.x.shape == (10, 3, 32, 32) and ds.labels is not None
    make_gray_folder(tmp_path / "imgs")
    ds = resolve_data(f"images:{tmp_path / 'imgs'}")
    assert ds.x.shape == (3, 1, 4, 5) and ds.name == f"images:{tmp_path / 'imgs'}"


def test_resolve_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_data("gmm")
    msg = str(info.value)
    assert "gmm2d" in msg and "mnist:DIR" in msg and "digits" in msg and ".npy" in msg
    with pytest.raises(DataError, match="names no folder"):
        resolve_data("mnist:")
    with pytest.raises(DataError, match="images:"):
        resolve_data(str(tmp_path))
    with pytest.raises(DataNotFoundError):
        resolve_data(str(tmp_path / "missing.csv"))
    with pytest.raises(DataNotFoundError):
        resolve_data(f"cifar10:{tmp_path}")


def test_data_names() -> None:
    names = data_names()
    assert "gmm2d" in names and "digits" in names and "mnist:DIR" in names
    assert "cifar10:DIR" in names and "images:DIR" in names


def test_train_test_split() -> None:
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    ds = Dataset(x=x, name="t", kind="vector", labels=torch.arange(10))
    train, test = train_test_split(ds, test_fraction=0.3, seed=1)
    assert len(train) == 7 and len(test) == 3
    rows = torch.cat([train.x[:, 0], test.x[:, 0]]).sort().values
    assert torch.equal(rows, x[:, 0])
    assert torch.equal(train.x[:, 0], train.labels.float() * 2)
    again, _ = train_test_split(ds, test_fraction=0.3, seed=1)
    assert torch.equal(again.x, train.x)
    with pytest.raises(ConfigError):
        train_test_split(ds, test_fraction=1.0)
    with pytest.raises(DataError):
        train_test_split(ds, test_fraction=0.01)
    with pytest.raises(DataError):
        Dataset(x=x, name="t", kind="image")
