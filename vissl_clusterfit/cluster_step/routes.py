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


def cluster_on_rank0(params: ClusterFitParams, feats: np.ndarray) -> ClusterResult:
    """faiss route: all features on this process. ``feats`` is modified in place (the
    cluster step holds one copy of the features)."""
    k = params.num_clusters
    t0 = time.time()
    logging.info(
        f"[vcf] clustering {feats.shape} features into K={k} "
        f"(k-means, {params.niter} iterations)"
    )
    feature_dim = int(feats.shape[1])
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
    return ClusterResult(
        labels=res.labels,
        centroids=res.centroids,
        distances=res.distances,
        pca=pca,
        n_empty_reseeded=res.n_empty_reseeded,
        objective=res.objective,
        feature_dim=feature_dim,
        clustered_dim=int(x.shape[1]),
        time_s=time.time() - t0,
    )


def cluster_sharded(
    params: ClusterFitParams, feats_local: np.ndarray
) -> Optional[ClusterResult]:
    """Distributed route, called on every rank with its shard (modified in place).
    Returns the result on rank 0, None elsewhere."""
    k = params.num_clusters
    t0 = time.time()
    logging.info(
        f"[vcf] clustering sharded features ({feats_local.shape} on this rank) into "
        f"K={k} (distributed k-means, {params.niter} iterations)"
    )
    feature_dim = int(feats_local.shape[1])
    res = clustering.sharded_kmeans(
        feats_local, k, niter=params.niter, inplace=True, **params.preprocessing()
    )
    del feats_local
    labels = clustering.gather_rows(res.labels)
    distances = clustering.gather_rows(res.distances)
    if labels is None:
        return None
    return ClusterResult(
        labels=labels,
        centroids=res.centroids,
        distances=distances,
        pca=res.pca,
        n_empty_reseeded=res.n_empty_reseeded,
        objective=res.objective,
        feature_dim=feature_dim,
        clustered_dim=res.clustered_dim,
        time_s=time.time() - t0,
    )
