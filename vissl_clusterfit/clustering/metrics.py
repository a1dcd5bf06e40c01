"""Clustering diagnostics.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) trains N_cf on
k-means pseudo-labels, so the label distribution matters: the DeepCluster
thesis (Caron 2018, Sec. 3.2) forbids empty clusters and samples uniformly
over clusters because of imbalance. DeeperCluster (Caron et al., ICCV 2019,
Sec. 5.3, Fig. 4) tracks the NMI between its clusterings and known labels
across training. These helpers report sizes, agreement with ground truth and
stability with respect to a previous clustering.
"""

from typing import Dict, Optional

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score


__all__ = ["cluster_sizes", "num_empty", "nmi", "ami", "purity", "cluster_metrics"]


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of cluster ids, got shape {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer cluster ids, got dtype {labels.dtype}"
        )
    return labels


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has {a.shape[0]} entries but {name_b} has {b.shape[0]}; "
            "both must label the same samples in the same order"
        )


def cluster_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    """Number of samples in each of the ``k`` clusters (int64, length k).

    Raises:
        ValueError: if a label is outside [0, k).
    """
    labels = _as_labels(labels, "labels")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"labels must lie in [0, k={k}), found range [{labels.min()}, {labels.max()}]; "
            "pass the K used for clustering"
        )
    return np.bincount(labels.astype(np.int64), minlength=k).astype(np.int64)


def num_empty(labels: np.ndarray, k: int) -> int:
    """Number of clusters among ``k`` without any sample."""
    return int((cluster_sizes(labels, k) == 0).sum())


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized mutual information (sklearn, arithmetic normalisation)."""
    a = _as_labels(a, "a")
    b = _as_labels(b, "b")
    _same_length(a, b, "a", "b")
    return float(normalized_mutual_info_score(a, b))


def ami(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted mutual information (sklearn), corrected for chance agreement."""
    a = _as_labels(a, "a")
    b = _as_labels(b, "b")
    _same_length(a, b, "a", "b")
    return float(adjusted_mutual_info_score(a, b))


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Sum over clusters of the count of their majority true class, divided by N."""
    labels = _as_labels(labels, "labels")
    truth = _as_labels(truth, "truth")
    _same_length(labels, truth, "labels", "truth")
    if labels.size == 0:
        raise ValueError(
            "purity of an empty labelling is undefined; pass at least one sample"
        )
    _, cluster_ids = np.unique(labels, return_inverse=True)
    _, class_ids = np.unique(truth, return_inverse=True)
    n_classes = int(class_ids.max()) + 1
    # Sort by (cluster, class) and count runs instead of a dense
    # clusters x classes table, which could be 16k x 22k for ImageNet-22k.
    pair = cluster_ids.astype(np.int64) * n_classes + class_ids
    pair_values, pair_counts = np.unique(pair, return_counts=True)
    pair_cluster = pair_values // n_classes
    majority = np.zeros(int(cluster_ids.max()) + 1, dtype=np.int64)
    np.maximum.at(majority, pair_cluster, pair_counts)
    return float(majority.sum() / labels.size)


def cluster_metrics(
    labels: np.ndarray,
    k: int,
    truth: Optional[np.ndarray] = None,
    previous: Optional[np.ndarray] = None,
) -> Dict[str, float]:
    """Summary statistics of a clustering.

    Keys: ``num_clusters`` (= k), ``num_empty``, ``size_min``, ``size_max``,
    ``size_mean``, ``size_std`` (over all k clusters, empty ones included);
    with ``truth``: ``nmi``, ``ami``, ``purity``; with ``previous`` (an
    earlier clustering of the same samples, e.g. before re-clustering):
    ``nmi_previous``.
    """
    labels = _as_labels(labels, "labels")
    sizes = cluster_sizes(labels, k)
    out: Dict[str, float] = {
        "num_clusters": float(k),
        "num_empty": float((sizes == 0).sum()),
        "size_min": float(sizes.min()),
        "size_max": float(sizes.max()),
        "size_mean": float(sizes.mean()),
        "size_std": float(sizes.std()),
    }
    if truth is not None:
        truth = _as_labels(truth, "truth")
        _same_length(labels, truth, "labels", "truth")
        out["nmi"] = nmi(labels, truth)
        out["ami"] = ami(labels, truth)
        out["purity"] = purity(labels, truth)
    if previous is not None:
        previous = _as_labels(previous, "previous")
        _same_length(labels, previous, "labels", "previous")
        out["nmi_previous"] = nmi(labels, previous)
    return out
