"""Clustering numerics for ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1).

Pure numpy / torch / faiss code with no VISSL dependency: feature
pre-processing (DeepCluster thesis Sec. 4.2), faiss k-means with empty-cluster
re-seeding, distributed k-means and the sharded pre-processing around it
(DeeperCluster Sec. 4.2), Power Iteration
Clustering (thesis Sec. 2.4 / 3.2), the label-aware baselines of ClusterFit
(Sec. 4 prototypes, Sec. 5.2 per-label clustering) and clustering metrics. :mod:`.comm` is the
package's one ``torch.distributed`` helper module and :mod:`.validation` its one
place for input checks (features, pre-processing order, K).
"""

from .assign import nearest_centroids, nearest_centroids_bytes
from .backend import choose_backend, torch_device
from .bounded import BoundedClustering, RowSource, bounded_kmeans, training_sample
from .comm import (
    Comm,
    barrier,
    broadcast_from_rank0,
    dist_is_initialized,
    gather_rows,
    rank_and_world,
    run_on_rank0,
)
from .distributed_kmeans import distributed_kmeans
from .hierarchical import distributed_hierarchical_kmeans, hierarchical_kmeans
from .kmeans import (
    assign_to_centroids,
    faiss_has_gpu,
    fix_empty_clusters,
    run_kmeans,
    train_kmeans,
)
from .label_baselines import (
    LabelBaselineResult,
    per_label_clustering,
    prototype_labels,
    sqrt_clusters,
)
from .metrics import ami, cluster_metrics, cluster_sizes, nmi, num_empty, purity
from .pca import PCAWhitening
from .pca_state import pca_from_state_dict, pca_state_dict
from .pic import make_knn_graph, run_pic
from .preprocess import apply_preprocessing, l2_normalize, preprocess_features
from .reseed import local_stats, reseed_empty_clusters
from .result import KMeansResult
from .sharded import (
    ShardedClustering,
    ShardedHierarchicalClustering,
    sharded_hierarchical_kmeans,
    sharded_kmeans,
)
from .sharded_preprocess import fit_pca_sharded
from .validation import (
    VALID_ORDERS,
    check_finite,
    check_num_clusters,
    check_order,
    validate_features,
)


__all__ = [
    "BoundedClustering",
    "Comm",
    "KMeansResult",
    "LabelBaselineResult",
    "PCAWhitening",
    "pca_from_state_dict",
    "pca_state_dict",
    "ShardedClustering",
    "ShardedHierarchicalClustering",
    "VALID_ORDERS",
    "ami",
    "apply_preprocessing",
    "assign_to_centroids",
    "barrier",
    "bounded_kmeans",
    "choose_backend",
    "broadcast_from_rank0",
    "check_finite",
    "check_num_clusters",
    "check_order",
    "cluster_metrics",
    "cluster_sizes",
    "dist_is_initialized",
    "distributed_hierarchical_kmeans",
    "distributed_kmeans",
    "faiss_has_gpu",
    "fix_empty_clusters",
    "fit_pca_sharded",
    "gather_rows",
    "hierarchical_kmeans",
    "l2_normalize",
    "local_stats",
    "make_knn_graph",
    "nearest_centroids",
    "nearest_centroids_bytes",
    "nmi",
    "num_empty",
    "per_label_clustering",
    "preprocess_features",
    "prototype_labels",
    "purity",
    "RowSource",
    "rank_and_world",
    "reseed_empty_clusters",
    "run_kmeans",
    "run_on_rank0",
    "run_pic",
    "sharded_hierarchical_kmeans",
    "sharded_kmeans",
    "sqrt_clusters",
    "torch_device",
    "train_kmeans",
    "training_sample",
    "validate_features",
]
