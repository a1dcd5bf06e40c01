"""Data sources and label sources; registered into VISSL on import.

VISSL has no decorator for data sources: they go into ``vissl.data.DATASET_SOURCE_MAP``.
"""

from vissl.data import DATASET_SOURCE_MAP

from vissl_clusterfit.data import (  # noqa: F401
    fashion_mnist_tops,
    index_label_collator,
    jigsaw_permutations,
    label_sources,
    rotation_cluster_collator,
)
from vissl_clusterfit.data.digits import DigitsSource
from vissl_clusterfit.data.fashion_mnist import FashionMNISTSource


DATA_SOURCES = {"vcf_fashion_mnist": FashionMNISTSource, "vcf_digits": DigitsSource}

for _name, _cls in DATA_SOURCES.items():
    DATASET_SOURCE_MAP.setdefault(_name, _cls)
label_sources.install()
