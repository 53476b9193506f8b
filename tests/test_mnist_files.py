"""benchmarks/mnist_files.py: a CSV of digits becomes IDX files that load_mnist reads back exactly."""

import gzip

import numpy as np
import pytest

from benchmarks.mnist_files import idx_bytes, mnist_folder, split
from scorematch.data import load_mnist
from scorematch.errors import DataError


def _csv(path, per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    pixels = rng.integers(0, 256, size=(labels.size, 784))
    table = np.concatenate([pixels, labels[:, None]], axis=1)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    return pixels.reshape(-1, 28, 28), labels


def test_idx_header():
    data = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    assert data[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(data[4:8], "big") == 2
    assert len(data) == 16 + 24


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 5)
    train, test = split(labels, test_per_class=2, seed=0)
    assert np.bincount(labels[test]).tolist() == [2] * 10
    assert set(train).isdisjoint(test) and train.size + test.size == labels.size


def test_mnist_folder_round_trip(tmp_path):
    pixels, labels = _csv(tmp_path / "d.csv.gz")
    out = mnist_folder(tmp_path / "idx", csv=tmp_path / "d.csv.gz", test_per_class=1)
    x, y = load_mnist(out, "train")
    xt, yt = load_mnist(out, "test")
    assert x.shape == (20, 1, 28, 28) and xt.shape == (10, 1, 28, 28)
    train, test = split(labels, 1)
    np.testing.assert_array_equal((x[:, 0] * 255).round().byte().numpy(), pixels[train])
    np.testing.assert_array_equal(yt.numpy(), labels[test])
    mnist_folder(out, csv=tmp_path / "d.csv.gz", test_per_class=1)  # same content: kept
    _csv(tmp_path / "other.csv.gz", seed=1)
    with pytest.raises(DataError, match="other content"):
        mnist_folder(out, csv=tmp_path / "other.csv.gz", test_per_class=1)
