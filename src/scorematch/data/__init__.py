"""Data loading: vector files, image sets, toy distributions and the data-spec resolver.

Vector data is a float32 tensor of shape (n, D); image data a float32 tensor of shape
(n, C, H, W) with pixel values scaled to [0, 1] (8-bit value k -> k / 255). Nothing is ever
downloaded: MNIST, Fashion-MNIST and CIFAR-10 are read from files the user placed on disk; the
only bundled set is scikit-learn's digits. No loader uses pickle, and no loader writes anything.

    arrays     load_array: .npy / .npz / .csv of shape (n, D)
    images     load_digits, load_mnist, load_cifar10, load_image_folder, dequantize
    datasets   Dataset, resolve_data (a data spec -> Dataset), from_memory, train_test_split
    transforms Standardization (per-dimension z = (x - mu) / sd), standardization_for
    tables     Table, read_csv_table, write_csv_table, as_table: named columns, CSV and pandas in and out
    columns    Schema, infer_schema, encode, decode: column types, encoded for a model and decoded exactly
    identity   absolute_spec, fingerprint, check_fingerprint: where the data is, and whether it changed
"""

from scorematch.data.arrays import ARRAY_EXTENSIONS, CSV_HEADER, NPZ_PREFERRED_KEYS, load_array
from scorematch.data.columns import Column, Schema, decode, encode, infer_schema
from scorematch.data.datasets import (
    DATA_PREFIXES,
    Dataset,
    data_names,
    from_memory,
    quantization_levels,
    resolve_data,
    train_test_split,
)
from scorematch.data.identity import absolute_spec, check_fingerprint, fingerprint
from scorematch.data.images import (
    IMAGE_EXTENSIONS,
    dequantize,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
)
from scorematch.data.tables import Table, as_table, read_csv_table, write_csv_table
from scorematch.data.transforms import STANDARDIZE, Standardization, standardization_for

__all__ = [
    "ARRAY_EXTENSIONS", "CSV_HEADER", "DATA_PREFIXES", "IMAGE_EXTENSIONS", "NPZ_PREFERRED_KEYS", "STANDARDIZE",
    "Column", "Dataset", "Schema", "Standardization", "Table", "as_table", "decode", "encode", "infer_schema",
    "read_csv_table", "write_csv_table", "absolute_spec", "check_fingerprint", "data_names", "dequantize",
    "fingerprint", "from_memory", "load_array", "load_cifar10", "load_digits", "load_image_folder", "load_mnist",
    "quantization_levels", "resolve_data", "standardization_for", "train_test_split",
]
