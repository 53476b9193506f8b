"""Data loading: vector files, image sets, toy distributions and the data-spec resolver.

Vector data is a float32 tensor of shape (n, D); image data a float32 tensor of shape
(n, C, H, W) with pixel values scaled to [0, 1] (8-bit value k -> k / 255). Nothing is ever
downloaded: MNIST, Fashion-MNIST and CIFAR-10 are read from files the user placed on disk; the
only bundled set is scikit-learn's digits. No loader uses pickle, and no loader writes anything.

    arrays     load_array: .npy / .npz / .csv of shape (n, D)
    images     load_digits, load_mnist, load_cifar10, load_image_folder, dequantize
    datasets   Dataset, resolve_data (a data spec -> Dataset), train_test_split
"""

from scorematch.data.arrays import ARRAY_EXTENSIONS, NPZ_PREFERRED_KEYS, load_array
from scorematch.data.datasets import (
    DATA_PREFIXES,
    Dataset,
    data_names,
    quantization_levels,
    resolve_data,
    train_test_split,
)
from scorematch.data.images import (
    IMAGE_EXTENSIONS,
    dequantize,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
)

__all__ = [
    "ARRAY_EXTENSIONS", "DATA_PREFIXES", "IMAGE_EXTENSIONS", "NPZ_PREFERRED_KEYS", "Dataset", "data_names",
    "dequantize", "load_array", "load_cifar10", "load_digits", "load_image_folder", "load_mnist",
    "quantization_levels", "resolve_data", "train_test_split",
]
