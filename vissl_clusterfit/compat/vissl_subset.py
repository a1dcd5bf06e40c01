"""VISSL's DATA_LIMIT subset of a ``GenericSSLDataset``, through one adapter.

VISSL 0.1.6 (vissl/data/ssl_dataset.py) takes ``DATA.<SPLIT>.DATA_LIMIT`` images in
``GenericSSLDataset`` itself when every data source allows it (its disk sources), and
serves position i from source index ``image_and_label_subset[i]``, also for
``label_objs``; sources that subset themselves (ours, e.g. Fashion-MNIST) serve position
i from source index i. VISSL has no public API for this: the names it uses
(``_can_random_subset_data_sources``, ``_subset_initialized``,
``_init_image_and_label_subset``) are read here only, and
``tests/compat/test_vissl_subset.py`` pins them against VISSL's own sub-sampling.
"""

from typing import Any, Optional

import numpy as np


def vissl_subsets(dataset: Any) -> bool:
    """Whether ``GenericSSLDataset`` itself would take the DATA_LIMIT subset (every
    data source is one of VISSL's), rather than the data sources."""
    return bool(dataset._can_random_subset_data_sources())


def subset_source_indices(
    dataset: Any, labels: Optional[np.ndarray] = None
) -> Optional[np.ndarray]:
    """The source index of each position when VISSL takes the DATA_LIMIT subset (drawn
    now if not yet); None when position i is source index i.

    ``labels``: what balanced sub-sampling (``DATA_LIMIT_SAMPLING.IS_BALANCED``) reads
    as ``label_objs[0]`` while the dataset's own labels are still being loaded."""
    if not (dataset.data_limit >= 0 and vissl_subsets(dataset)):
        return None
    if not dataset._subset_initialized:
        loaded = dataset.label_objs
        if labels is not None:
            dataset.label_objs = [labels]
        try:
            dataset._init_image_and_label_subset()
        finally:
            dataset.label_objs = loaded
    return np.asarray(dataset.image_and_label_subset, dtype=np.int64)


def source_indexed(dataset: Any, labels: np.ndarray, source: int = 0) -> np.ndarray:
    """``labels`` (one per position) as ``label_objs[source]`` must hold them: scattered
    to the source indices (-1 elsewhere) when VISSL subsets, else unchanged."""
    subset = subset_source_indices(dataset)
    if subset is None:
        return labels
    full = np.full(len(dataset.data_objs[source]), -1, dtype=np.int64)
    full[subset] = labels
    return full
