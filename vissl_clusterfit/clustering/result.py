"""The result type shared by the single-process and the distributed k-means.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) turns the k-means
assignments of N_pre's features into pseudo-labels; :func:`.kmeans.run_kmeans`
(faiss, one process) and :func:`.distributed_kmeans.distributed_kmeans`
(DeeperCluster Sec. 4.2, sharded over ranks) both return a :class:`KMeansResult`.
"""

from dataclasses import dataclass

import numpy as np


__all__ = ["KMeansResult"]


@dataclass
class KMeansResult:
    """Output of :func:`run_kmeans` and :func:`~.distributed_kmeans.distributed_kmeans`.

    Attributes:
        centroids: (K, D) float32 centroids the labels were assigned to.
        labels: (N,) int64 cluster id of every sample (of the local shard in
            the distributed case).
        distances: (N,) float32 squared L2 distance of every sample to its
            assigned centroid.
        objective: sum of the squared distances over all samples (over all
            ranks in the distributed case).
        n_empty_reseeded: number of empty clusters re-seeded in the final fix-up.
        iterations: number of centroid updates performed.
    """

    centroids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    objective: float
    n_empty_reseeded: int
    iterations: int
