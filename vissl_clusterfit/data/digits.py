"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1797 images of
8x8, 10 classes, shipped inside scikit-learn, so nothing is downloaded.

The data has no official split: we take a stratified, seeded 70/30 split
(``train_test_split(random_state=0)``), 1257 train and 540 test images. Pixels (0..16)
are scaled to 0..255. ``DATA_PATHS`` is required by VISSL's catalog logic but ignored:
use ``[sklearn]``.
"""

from typing import Tuple

import numpy as np

from vissl_clusterfit.data.array_source import ArrayImageSource


def load_digits_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    split = "test" if split in ("test", "val") else split
    if split not in ("train", "test"):
        raise ValueError(f"digits has splits train and test, not '{split}'")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=0.3, random_state=0, stratify=digits.target
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    return images[idx], digits.target[idx].astype(np.int64)


class DigitsSource(ArrayImageSource):
    """VISSL data source ``vcf_digits``."""

    def load_split(self, path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
        return load_digits_split(split)
