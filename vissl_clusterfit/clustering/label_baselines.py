"""The label-aware baselines of ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330).

ClusterFit's clustering step ignores the labels of D_cf. The paper measures what
labels would add with two baselines that replace that step:

- **Prototype** (Sec. 4, "Prototype", after prototype alignment [49]): K = the
  number of classes; each class's prototype is the mean embedding of its images,
  and every image is pseudo-labelled with its nearest prototype.
- **Per-label clustering** (Sec. 5.2): the images of each label l are clustered
  on their own into k_l clusters, "k_l proportional to sqrt(n_l)" (footnote 3:
  k_l ~ n_l did worse); the union of all labels' clusters is the label space.

Both take the features after the usual pre-processing (``preprocess_features``)
and return a :class:`LabelBaselineResult`, so they slot in wherever the k-means
labels of :func:`.kmeans.run_kmeans` are used.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .assign import nearest_centroids
from .kmeans import run_kmeans
from .reseed import local_stats
from .validation import check_num_clusters, validate_features


__all__ = [
    "LabelBaselineResult",
    "per_label_clustering",
    "prototype_labels",
    "sqrt_clusters",
]


@dataclass
class LabelBaselineResult:
    """Pseudo-labels of a label-aware baseline.

    Attributes:
        labels: (N,) int64 pseudo-label of every row.
        centroids: (K, D) float32; row c is the centre of pseudo-label c.
        distances: (N,) float32 squared L2 distance of every row to its centre.
        classes: (C,) int64 ground-truth class ids, ascending.
        k_per_label: (C,) int64 pseudo-labels per class; class ``classes[i]`` owns
            the consecutive ids ``[sum(k_per_label[:i]), sum(k_per_label[:i + 1]))``.
    """

    labels: np.ndarray
    centroids: np.ndarray
    distances: np.ndarray
    classes: np.ndarray
    k_per_label: np.ndarray


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"labels must be a 1-D array with one entry per feature row ({n}), got shape "
            f"{labels.shape}"
        )
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integer class ids, got dtype {labels.dtype}; map the class "
            "names to 0..C-1 first"
        )
    labels = labels.astype(np.int64, copy=False)
    if n and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, found {int(labels.min())}")
    return labels


def prototype_labels(
    x: np.ndarray, labels: np.ndarray, num_classes: int
) -> LabelBaselineResult:
    """The "prototype" baseline (ClusterFit Sec. 4): nearest class mean.

    Prototypes are the per-class means of ``x`` (float64 sums); every row then
    gets the id of its nearest prototype in squared L2, ties going to the lowest
    class id. Usually most rows keep their class, and the others move to the
    class their embedding resembles most.

    Args:
        x: (N, D) pre-processed features.
        labels: (N,) ground-truth class ids in [0, num_classes).
        num_classes: K = C, the number of classes; each must have a row.

    Returns:
        :class:`LabelBaselineResult` with K = ``num_classes`` pseudo-labels (one
        per class, ``k_per_label`` all ones).

    Raises:
        ValueError: bad shapes or ids, or a class without any row (its prototype
            would be undefined).
    """
    x = validate_features(x)
    num_classes = check_num_clusters(num_classes, None, key="num_classes")
    labels = _check_labels(labels, len(x))
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), found "
            f"{int(labels.max())}"
        )
    xt = torch.from_numpy(x)
    counts, sums = local_stats(xt, torch.from_numpy(labels), num_classes)
    empty = torch.nonzero(counts == 0).squeeze(1).tolist()
    if empty:
        shown = empty[:10]
        raise ValueError(
            f"{len(empty)} of {num_classes} classes have no row, e.g. {shown}: their "
            "prototypes are undefined; drop those classes (remap the ids) or pass "
            "features of every class"
        )
    centroids = sums / counts.unsqueeze(1)
    assigned, distances = nearest_centroids(xt, centroids)
    return LabelBaselineResult(
        labels=assigned.numpy(),
        centroids=centroids.to(torch.float32).numpy(),
        distances=distances.to(torch.float32).numpy(),
        classes=np.arange(num_classes, dtype=np.int64),
        k_per_label=np.ones(num_classes, dtype=np.int64),
    )


def sqrt_clusters(n: int) -> int:
    """The default k_l of per-label clustering: ``max(1, round(sqrt(n_l)))``."""
    return max(1, int(round(math.sqrt(n))))


def per_label_clustering(
    x: np.ndarray,
    labels: np.ndarray,
    k_per_label: Optional[Callable[[int], int]] = None,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: Optional[int] = None,
) -> LabelBaselineResult:
    """Per-label clustering (ClusterFit Sec. 5.2): k-means inside every class.

    The rows of each class present in ``labels`` are clustered separately with
    :func:`.kmeans.run_kmeans` into k_l = ``k_per_label(n_l)`` clusters (default
    :func:`sqrt_clusters`, the paper's k_l ~ sqrt(n_l); scale it, e.g.
    ``lambda n: max(1, round(2 * n ** 0.5))``, to reach another total K). Pseudo-label
    ids are consecutive blocks in ascending class order: the smallest class id
    owns ``[0, k_0)``, the next ``[k_0, k_0 + k_1)``, and so on. Class c's k-means
    uses seed ``seed + c``.

    Args:
        x: (N, D) pre-processed features.
        labels: (N,) non-negative integer class ids (absent ids are skipped).
        k_per_label: n_l -> k_l, with 1 <= k_l <= n_l; None = :func:`sqrt_clusters`.
        niter, seed: as :func:`.kmeans.run_kmeans`.
        max_points_per_centroid: None (default) trains every class's k-means on
            all its rows; an int lets faiss subsample (see ``run_kmeans``).

    Returns:
        :class:`LabelBaselineResult` with K = sum of k_l.
    """
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise ValueError(
            "max_points_per_centroid must be >= 1 or None (= all rows), got "
            f"{max_points_per_centroid}"
        )
    x = validate_features(x)
    labels = _check_labels(labels, len(x))
    k_fn = sqrt_clusters if k_per_label is None else k_per_label
    classes, counts = np.unique(labels, return_counts=True)
    ks = [
        check_num_clusters(k_fn(int(n)), int(n), key=f"k_per_label for class {c}")
        for c, n in zip(classes.tolist(), counts.tolist())
    ]
    out_labels = np.empty(len(x), dtype=np.int64)
    distances = np.empty(len(x), dtype=np.float32)
    centroids = []
    offset = 0
    for c, k in zip(classes.tolist(), ks):
        rows = np.flatnonzero(labels == c)
        per_centroid = max_points_per_centroid or -(-len(rows) // k)
        res = run_kmeans(
            x[rows],
            k,
            niter=niter,
            seed=seed + c,
            max_points_per_centroid=per_centroid,
        )
        out_labels[rows] = offset + res.labels
        distances[rows] = res.distances
        centroids.append(res.centroids)
        offset += k
    return LabelBaselineResult(
        labels=out_labels,
        centroids=(
            np.concatenate(centroids)
            if centroids
            else np.zeros((0, x.shape[1]), np.float32)
        ),
        distances=distances,
        classes=classes.astype(np.int64),
        k_per_label=np.asarray(ks, dtype=np.int64),
    )
