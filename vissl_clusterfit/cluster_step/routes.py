"""The two k-means routes of the cluster step (``KMEANS_BACKEND``).

- ``faiss``: rank 0 holds all features and runs faiss k-means (ClusterFit Sec. 3.1;
  fast on one machine, memory = the whole feature matrix on one process).
- ``distributed``: every rank keeps its shard; PCA and Lloyd k-means all-reduce
  counts and sums only (DeeperCluster Sec. 4.2); rank 0 receives labels and distances.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step.params import ClusterFitParams


@dataclass
class ClusterResult:
    labels: np.ndarray
    centroids: np.ndarray
    distances: np.ndarray
    pca: Any  # clustering.PCAWhitening or None
    n_empty_reseeded: int
    objective: float
    feature_dim: int
    clustered_dim: int
    time_s: float
    backend: str = (
        ""  # faiss-cpu | faiss-gpu | torch-cuda | torch-cpu (clustering.backend)
    )


def _result(
    res: Any,
    labels: np.ndarray,
    distances: np.ndarray,
    pca: Any,
    feature_dim: int,
    clustered_dim: int,
    t0: float,
    backend: str,
) -> ClusterResult:
    """A k-means result (faiss' KMeansResult or ShardedClustering) as ClusterResult."""
    logging.info(f"[vcf] k-means ran on {backend}")
    return ClusterResult(
        labels,
        res.centroids,
        distances,
        pca,
        int(res.n_empty_reseeded),
        float(res.objective),
        int(feature_dim),
        int(clustered_dim),
        time.time() - t0,
        backend,
    )


def _start(params: ClusterFitParams, shape: Any, algorithm: str) -> Any:
    """Log the start of a route; (start time, K, feature dim)."""
    k = params.num_clusters
    logging.info(
        f"[vcf] clustering {tuple(shape)} features (this rank's) into K={k} "
        f"({algorithm}, {params.niter} iterations)"
    )
    return time.time(), k, int(shape[1])


def cluster_on_rank0(params: ClusterFitParams, feats: np.ndarray) -> ClusterResult:
    """faiss route: all features on this process. ``feats`` is modified in place (the
    cluster step holds one copy of the features)."""
    t0, k, feature_dim = _start(params, feats.shape, "k-means")
    x, pca = clustering.preprocess_features(
        feats, inplace=True, **params.preprocessing()
    )
    del feats
    res = clustering.run_kmeans(
        x,
        k,
        niter=params.niter,
        seed=params.seed,
        max_points_per_centroid=params.max_points_per_centroid,
        verbose=False,
    )
    backend = "faiss-gpu" if clustering.faiss_has_gpu() else "faiss-cpu"
    return _result(
        res, res.labels, res.distances, pca, feature_dim, x.shape[1], t0, backend
    )


def cluster_sharded(
    params: ClusterFitParams, feats_local: np.ndarray
) -> Optional[ClusterResult]:
    """Distributed route, called on every rank with its shard (modified in place).
    Returns the result on rank 0, None elsewhere."""
    t0, k, feature_dim = _start(params, feats_local.shape, "distributed k-means")
    # A GPU without faiss-gpu still runs the Lloyd iterations (DeeperCluster Sec. 4.2)
    # when this rank's features fit on it.
    device = clustering.torch_device(feats_local.nbytes)
    res = clustering.sharded_kmeans(
        feats_local,
        k,
        niter=params.niter,
        inplace=True,
        device=device,
        **params.preprocessing(),
    )
    del feats_local
    labels = clustering.gather_rows(res.labels)
    distances = clustering.gather_rows(res.distances)
    if labels is None:
        return None
    backend = f"torch-{device.type}"
    return _result(
        res, labels, distances, res.pca, feature_dim, res.clustered_dim, t0, backend
    )


def per_label_k(counts: np.ndarray, k: int) -> np.ndarray:
    """k_l = max(1, floor(K sqrt(n_l) / sum_j sqrt(n_j))): per-label clustering with
    k_l ~ sqrt(n_l) (ClusterFit Sec. 5.2) scaled so that sum k_l <= K, the head size
    (ids from sum k_l to K - 1 stay unused; equal class sizes give K / C each)."""
    root = np.sqrt(counts.astype(np.float64))
    return np.maximum(1, np.floor(k * root / root.sum())).astype(np.int64)


def cluster_with_labels(
    params: ClusterFitParams, feats: np.ndarray, pretrain_labels: np.ndarray
) -> ClusterResult:
    """The label-using baselines on rank 0: ``prototype`` (ClusterFit Sec. 4: K =
    number of classes, centroids = class means of N_pre's features, label = nearest
    prototype) or ``per_label`` (Sec. 5.2: each label's images clustered separately),
    after the same pre-processing as k-means."""
    k = params.num_clusters
    t0 = time.time()
    feature_dim = int(feats.shape[1])
    x, pca = clustering.preprocess_features(
        feats, inplace=True, **params.preprocessing()
    )
    del feats
    classes = int(pretrain_labels.max()) + 1
    if params.method == "prototype":
        if k != classes:
            raise ValueError(
                f"config.VCF.CLUSTERFIT.METHOD=prototype makes one pseudo-label per "
                f"class: set config.VCF.CLUSTERFIT.NUM_CLUSTERS={classes} (now {k})"
            )
        res = clustering.prototype_labels(x, pretrain_labels, classes)
    else:
        counts = np.bincount(pretrain_labels, minlength=classes)
        k_of_count = dict(zip(counts.tolist(), per_label_k(counts, k).tolist()))
        res = clustering.per_label_clustering(
            x,
            pretrain_labels,
            k_per_label=lambda n: min(int(n), k_of_count[int(n)]),
            niter=params.niter,
            seed=params.seed,
            max_points_per_centroid=params.max_points_per_centroid,
        )
    logging.info(
        f"[vcf] {params.method} pseudo-labels: {int(res.k_per_label.sum())} of K={k} "
        f"ids used, per class {res.k_per_label.tolist()}"
    )
    return ClusterResult(
        labels=res.labels,
        centroids=res.centroids,  # the ids in use (ids >= len(centroids) stay empty)
        distances=res.distances,
        pca=pca,
        n_empty_reseeded=0,
        objective=float(res.distances.astype(np.float64).sum()),
        feature_dim=feature_dim,
        clustered_dim=int(x.shape[1]),
        time_s=time.time() - t0,
    )
