"""Clustering numerics for ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1).

Pure numpy / torch / faiss code with no VISSL dependency: feature
pre-processing (DeepCluster thesis Sec. 4.2), faiss k-means with empty-cluster
re-seeding, distributed k-means and the sharded pre-processing around it
(DeeperCluster Sec. 4.2), Power Iteration
Clustering (thesis Sec. 2.4 / 3.2) and clustering metrics.
"""

from .distributed_kmeans import distributed_kmeans
from .hierarchical import hierarchical_kmeans
from .kmeans import KMeansResult, assign_to_centroids, run_kmeans
from .metrics import ami, cluster_metrics, cluster_sizes, nmi, num_empty, purity
from .pic import make_knn_graph, run_pic
from .preprocess import (
    VALID_ORDERS,
    PCAWhitening,
    apply_preprocessing,
    check_finite,
    l2_normalize,
    preprocess_features,
)
from .sharded import ShardedClustering, fit_pca_sharded, gather_rows, sharded_kmeans


__all__ = [
    "KMeansResult",
    "PCAWhitening",
    "ShardedClustering",
    "VALID_ORDERS",
    "ami",
    "apply_preprocessing",
    "assign_to_centroids",
    "check_finite",
    "cluster_metrics",
    "cluster_sizes",
    "distributed_kmeans",
    "fit_pca_sharded",
    "gather_rows",
    "hierarchical_kmeans",
    "l2_normalize",
    "make_knn_graph",
    "nmi",
    "num_empty",
    "preprocess_features",
    "purity",
    "run_kmeans",
    "run_pic",
    "sharded_kmeans",
]
