"""Single-process k-means with faiss and an explicit empty-cluster fix-up.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) clusters the
N_pre features of D_cf with k-means into K groups and uses the assignments as
pseudo-labels for N_cf. An empty cluster would be a class without a single
training image, so, following the DeepCluster thesis (Caron 2018, Sec. 3.2
"Joint optimization" / Sec. 4.2), every empty cluster is re-seeded by
splitting a non-empty one before the labels are returned.
"""

from typing import Optional, Tuple

import faiss
import numpy as np
import torch

from .comm import Comm
from .reseed import local_stats, reseed_empty_clusters
from .result import KMeansResult
from .validation import check_num_clusters, validate_features


__all__ = [
    "KMeansResult",
    "assign_to_centroids",
    "faiss_has_gpu",
    "fix_empty_clusters",
    "run_kmeans",
    "train_kmeans",
]


def faiss_has_gpu() -> bool:
    """True when this faiss build sees a GPU (faiss-gpu and a visible device)."""
    return (faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0) > 0


def _resolve_use_gpu(use_gpu: Optional[bool]) -> bool:
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is None:
        return n_gpus > 0
    if use_gpu and n_gpus == 0:
        raise ValueError(
            "use_gpu=True but faiss sees no GPU (faiss-cpu build or no visible device); "
            "pass use_gpu=False or None, or install faiss-gpu"
        )
    return bool(use_gpu)


def assign_to_centroids(
    x: np.ndarray,
    centroids: np.ndarray,
    batch_size: int = 65536,
    use_gpu: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest-centroid assignment with a faiss ``IndexFlatL2``.

    Queries are processed ``batch_size`` rows at a time so the faiss result
    buffers stay O(batch_size) whatever N is; no N x K matrix is formed.

    Args:
        x: (N, D) features.
        centroids: (K, D) centroids.
        batch_size: rows per faiss search call.
        use_gpu: search on all visible GPUs.

    Returns:
        (labels int64 (N,), squared L2 distances float32 (N,)).
    """
    x = validate_features(x)
    centroids = validate_features(centroids, "centroids")
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids have dimension {centroids.shape[1]} but features have dimension "
            f"{x.shape[1]}; apply the same pre-processing (PCA dim) to both"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = faiss.IndexFlatL2(centroids.shape[1])
    if _resolve_use_gpu(use_gpu):
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(centroids)
    labels = np.empty(x.shape[0], dtype=np.int64)
    distances = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], batch_size):
        dist, idx = index.search(x[start : start + batch_size], 1)
        labels[start : start + batch_size] = idx[:, 0]
        distances[start : start + batch_size] = dist[:, 0]
    # ||x||^2 - 2<x,c> + ||c||^2 can round slightly below zero for x == c.
    np.maximum(distances, 0.0, out=distances)
    return labels, distances


def fix_empty_clusters(
    x: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    distances: np.ndarray,
    keep: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Re-seed every empty cluster by splitting the currently largest one.

    Thesis Sec. 3.2: "we avoid empty clusters ... by assigning to an empty
    cluster half of the images assigned to a ... non-empty cluster". The split
    rule is shared with the distributed k-means (see
    ``reseed.reseed_empty_clusters``) so both give the same result.

    Args:
        x: (N, D) float32 features.
        centroids: (K, D) centroids ``labels`` refer to.
        labels: (N,) int64 assignments.
        distances: (N,) squared distances to the assigned centroid.
        keep: optional (K,) bool: clusters that have members outside ``x`` (rows
            not passed, e.g. outside a training sample), never re-seeded.

    Returns:
        (centroids float32, labels int64, distances float32, number of re-seeds).
        Inputs are not modified.
    """
    k = centroids.shape[0]
    counts = np.bincount(labels, minlength=k)
    if keep is not None:
        counts = np.where(keep, np.maximum(counts, 1), counts)
    if (counts > 0).all():
        return centroids, labels, distances, 0
    # K > N: some cluster must stay empty whatever the split rule.
    check_num_clusters(k, x.shape[0], key="K")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels_t = torch.from_numpy(labels.astype(np.int64, copy=True))
    dist_t = torch.from_numpy(distances.astype(np.float64))
    cent_t = torch.from_numpy(centroids.astype(np.float64))
    counts_t, sums_t = local_stats(xt, labels_t, k)
    if keep is not None:
        # A kept cluster without rows here is marked -1: not empty, never the largest.
        counts_t[torch.from_numpy(np.asarray(keep, dtype=bool)) & (counts_t == 0)] = -1
    n_reseeded = reseed_empty_clusters(
        xt,
        labels_t,
        cent_t,
        counts_t,
        sums_t,
        Comm(None, single_process=True),
        row_offset=0,
        distances=dist_t,
    )
    return (
        cent_t.numpy().astype(np.float32),
        labels_t.numpy(),
        dist_t.numpy().astype(np.float32),
        n_reseeded,
    )


def run_kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: int = 256,
    use_gpu: Optional[bool] = None,
    verbose: bool = False,
    min_points_per_centroid: int = 1,
    nredo: int = 1,
) -> KMeansResult:
    """Cluster ``x`` into ``k`` groups with ``faiss.Kmeans`` (ClusterFit Sec. 3.1).

    faiss trains on at most ``k * max_points_per_centroid`` rows sampled with
    ``seed``; afterwards every row is assigned to its nearest centroid in
    chunks, and empty clusters are re-seeded by splitting the largest cluster
    (DeepCluster thesis Sec. 3.2), so no pseudo-class is left without images.
    Only the members of a split cluster are re-assigned: a point of another
    cluster keeps its label even if one of the two new centroids is now
    nearer, since a full re-assignment could empty clusters again.

    Args:
        x: (N, D) floating point features (pre-processed, see ``preprocess``).
        k: number of clusters, 1 <= k <= N.
        niter: Lloyd iterations run by faiss.
        seed: seed of faiss' initialisation / subsampling; same seed, same result.
        max_points_per_centroid: faiss subsampling cap per centroid.
        use_gpu: None = use a GPU when faiss sees one; True without GPU raises.
        verbose: let faiss print its per-iteration objective.
        min_points_per_centroid: below ``k * this`` rows faiss warns.
        nredo: number of faiss runs from different initialisations; the one
            with the lowest objective is kept (faiss' random initialisation
            can merge two true clusters, restarts make that unlikely).

    Returns:
        :class:`KMeansResult` with no empty cluster.
    """
    x = validate_features(x)
    n, d = x.shape
    k = check_num_clusters(k, n, key="K")
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    if max_points_per_centroid < 1:
        raise ValueError(
            f"max_points_per_centroid must be >= 1, got {max_points_per_centroid}"
        )
    if min_points_per_centroid < 0:
        raise ValueError(
            f"min_points_per_centroid must be >= 0, got {min_points_per_centroid}"
        )
    if int(nredo) != nredo or nredo < 1:
        raise ValueError(f"nredo must be a positive integer, got {nredo!r}")
    gpu = _resolve_use_gpu(use_gpu)
    centroids = train_kmeans(
        x,
        k,
        niter,
        seed,
        max_points_per_centroid,
        gpu,
        verbose,
        min_points_per_centroid,
        nredo,
    )
    labels, distances = assign_to_centroids(x, centroids, use_gpu=gpu)
    centroids, labels, distances, n_reseeded = fix_empty_clusters(
        x, centroids, labels, distances
    )
    return KMeansResult(
        centroids=centroids,
        labels=labels,
        distances=distances,
        objective=float(distances.sum(dtype=np.float64)),
        n_empty_reseeded=n_reseeded,
        iterations=int(niter),
    )


def train_kmeans(
    x: np.ndarray,
    k: int,
    niter: int,
    seed: int,
    max_points_per_centroid: int,
    gpu: bool,
    verbose: bool = False,
    min_points_per_centroid: int = 1,
    nredo: int = 1,
) -> np.ndarray:
    """The (k, D) float32 centroids of ``faiss.Kmeans`` trained on ``x`` (arguments
    checked by :func:`run_kmeans`; no assignment, no empty-cluster fix-up). The
    bounded-memory route (:mod:`.bounded`) trains on a sample with it and assigns
    the full data set itself, chunk by chunk.
    """
    d = x.shape[1]
    kmeans = faiss.Kmeans(
        d,
        k,
        niter=int(niter),
        seed=int(seed),
        max_points_per_centroid=int(max_points_per_centroid),
        min_points_per_centroid=int(min_points_per_centroid),
        verbose=bool(verbose),
        nredo=int(nredo),
        gpu=gpu,
    )
    kmeans.train(x)
    return np.array(kmeans.centroids, dtype=np.float32).reshape(k, d)
