"""``vcf_fashion_mnist_tops``: the Fashion-MNIST images of the coarse group "tops", with
their 4 fine labels, a fine-grained target for linear probes (a network pre-trained on
the coarse labels of ``vcf_fashion_mnist_coarse`` sees all tops as one class).

====  =============  ======================
top   name           Fashion-MNIST class
====  =============  ======================
0     T-shirt/top    0
1     pullover       2
2     coat           4
3     shirt          6
====  =============  ======================

24,000 train and 4,000 test images. ``DATA_LIMIT`` subsets the tops (after filtering),
as for ``vcf_fashion_mnist``. Config::

    DATA_SOURCES: [vcf_fashion_mnist_tops]
    DATA_PATHS: [/usr/share/datasets/fashion-mnist]
    LABEL_SOURCES: [vcf_fashion_mnist_tops]
"""

from typing import Tuple

import numpy as np
from vissl.data import DATASET_SOURCE_MAP

from vissl_clusterfit.data.fashion_mnist import (
    DEFAULT_PATH,
    FashionMNISTSource,
    load_fashion_mnist,
)
from vissl_clusterfit.data.fashion_mnist_coarse import FINE_TO_COARSE


SOURCE_NAME = "vcf_fashion_mnist_tops"
# the fine classes of the coarse group "tops" (0), in label order: (0, 2, 4, 6)
TOPS_FINE_LABELS = tuple(int(c) for c in np.flatnonzero(FINE_TO_COARSE == 0))
TOPS_NAMES = ("T-shirt/top", "pullover", "coat", "shirt")


def tops_only(images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Keep the tops, in dataset order, relabelled 0..3 in the order of ``TOPS_FINE_LABELS``."""
    keep = np.isin(labels, TOPS_FINE_LABELS)
    remap = np.full(10, -1, dtype=np.int64)
    remap[list(TOPS_FINE_LABELS)] = np.arange(len(TOPS_FINE_LABELS))
    return images[keep], remap[labels[keep]]


class FashionMNISTTopsSource(FashionMNISTSource):
    """VISSL data source ``vcf_fashion_mnist_tops``: labels come from
    ``get_labels()`` as for ``vcf_fashion_mnist``."""

    def load_split(self, path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
        return tops_only(*load_fashion_mnist(path or DEFAULT_PATH, split))


DATASET_SOURCE_MAP.setdefault(SOURCE_NAME, FashionMNISTTopsSource)
