"""Fashion-MNIST read from its IDX files (Xiao et al. 2017): 60k train, 10k test, 10
classes, 28x28 grayscale. The Debian package ``dataset-fashion-mnist`` installs the four
files in /usr/share/datasets/fashion-mnist, the default path; nothing is downloaded.

Config::

    DATA_SOURCES: [vcf_fashion_mnist]
    DATA_PATHS: [/usr/share/datasets/fashion-mnist]   # folder with the IDX files (.gz or not)
    LABEL_SOURCES: [vcf_fashion_mnist]                 # optional: the class labels
    DATASET_NAMES: [fashion_mnist]
"""

import gzip
import os
from typing import Tuple

import numpy as np

from vissl_clusterfit.data.array_source import ArrayImageSource


DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "install it with 'sudo apt-get install dataset-fashion-mnist' (files land in "
    f"{DEFAULT_PATH}) or set DATA.<SPLIT>.DATA_PATHS to a folder holding the four "
    "Fashion-MNIST IDX files"
)


def _find(folder: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {os.path.join(folder, stem)}[.gz] not found: {_HOW_TO_GET}"
    )


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (the MNIST format: magic 0x0000 0x08 ndim, big-endian dims,
    uint8 payload). Raises ValueError naming the file when it is corrupt."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(
            f"Fashion-MNIST file {path} is unreadable ({e}): {_HOW_TO_GET}"
        )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(
            f"Fashion-MNIST file {path} is not a uint8 IDX file (bad magic number): "
            f"{_HOW_TO_GET}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(
            f"Fashion-MNIST file {path} is truncated or corrupt: header says {dims} "
            f"({expected} bytes), file has {len(raw) - header}: {_HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``split`` (train or test;
    VISSL's 'val' is accepted for test)."""
    split = "test" if split in ("test", "val") else split
    if split not in _FILES:
        raise ValueError(f"Fashion-MNIST has splits train and test, not '{split}'")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Fashion-MNIST folder {path} does not exist: {_HOW_TO_GET}"
        )
    image_file, label_file = (_find(path, stem) for stem in _FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files {image_file} and {label_file} do not match: "
            f"images {images.shape}, labels {labels.shape}: {_HOW_TO_GET}"
        )
    return images, labels.astype(np.int64)


class FashionMNISTSource(ArrayImageSource):
    """VISSL data source ``vcf_fashion_mnist``."""

    def load_split(self, path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
        return load_fashion_mnist(path or DEFAULT_PATH, split)
