"""The whole pre-clustering pipeline on features sharded over ``torch.distributed`` ranks.

DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2) never gathers the features of the
whole dataset on one machine: every rank keeps the features it extracted, and only
small statistics cross the network. :func:`.distributed_kmeans` does that for the Lloyd
iterations; this module adds the steps before and after it so that ClusterFit's and
DeepCluster's cluster step (thesis Sec. 4.2: PCA-whitening, L2, k-means) can run the
same way:

- the PCA is fitted from an all-reduced float64 mean and covariance (D + D x D numbers,
  whatever N is), then applied by every rank to its own rows;
- L2 normalisation is per row, so it is local;
- k-means is :func:`.distributed_kmeans`, whose initial rows are drawn in the global
  row order (rank 0's rows first, then rank 1's...);
- :func:`.comm.gather_rows` brings the per-row outputs (labels, distances: a few bytes per
  image) to rank 0 in that global order.

Memory per rank is its shard plus O(K * D + D * D). When the shards are contiguous
blocks of the dataset in rank order, the result does not depend on the number of ranks
except through float64 rounding of the reductions. The PCA and L2 steps are
:mod:`.sharded_preprocess`.
"""

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .comm import gather_rows
from .distributed_kmeans import distributed_kmeans
from .hierarchical import distributed_hierarchical_kmeans
from .pca import PCAWhitening
from .sharded_preprocess import preprocess_shards, preprocessing_options


__all__ = [
    "ShardedClustering",
    "ShardedHierarchicalClustering",
    "gather_rows",
    "sharded_hierarchical_kmeans",
    "sharded_kmeans",
]


@dataclass
class ShardedClustering:
    """Result of :func:`sharded_kmeans` on one rank."""

    labels: np.ndarray  # (n_local,) int64, this rank's rows
    distances: np.ndarray  # (n_local,) float32 squared distances to the own centroid
    centroids: np.ndarray  # (K, D') float32, identical on every rank
    pca: Optional[PCAWhitening]  # identical on every rank; None without PCA
    n_empty_reseeded: int
    objective: float
    iterations: int
    total: int  # rows over all ranks
    clustered_dim: int


@dataclass
class ShardedHierarchicalClustering:
    """Result of :func:`sharded_hierarchical_kmeans` on one rank."""

    group: np.ndarray  # (n_local,) int64 level-1 group of this rank's rows
    sub: np.ndarray  # (n_local,) int64 level-2 cluster within the group
    pca: Optional[PCAWhitening]  # identical on every rank; None without PCA
    total: int  # rows over all ranks
    clustered_dim: int


def sharded_kmeans(
    x_local: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    inplace: bool = False,
    process_group: Optional[object] = None,
    device: Optional[torch.device] = None,
    **preprocessing: Any,
) -> ShardedClustering:
    """Pre-process (thesis Sec. 4.2) and k-means (DeeperCluster Sec. 4.2) sharded features.

    The sharded counterpart of ``preprocess_features`` + ``run_kmeans``; must be called
    on every rank of the group with the same arguments. Without ``torch.distributed``
    it runs in one process. It is plain Lloyd k-means on all rows (no faiss training
    subsample), so its labels are not those of ``run_kmeans``.

    Args:
        x_local: this rank's (n_local, D) float32 features.
        k, niter, seed: as :func:`.distributed_kmeans` (seed also seeds the PCA sample).
        inplace: allow L2-normalising ``x_local`` in place.
        device: where the Lloyd iterations run (the pre-processed shard is moved
            there; e.g. a GPU without faiss-gpu, see :func:`.backend.torch_device`);
            None = the CPU.
        preprocessing: ``pca_dim`` (0), ``whiten`` (True), ``l2_norm`` (True),
            ``order`` ("pca_l2"), ``pca_sample_size`` (0): as ``preprocess_features``.
    """
    x, pca, sizes = preprocess_shards(
        x_local,
        seed=seed,
        inplace=inplace,
        process_group=process_group,
        **preprocessing_options(preprocessing),
    )
    xt = torch.from_numpy(x).to(device) if device is not None else x
    res = distributed_kmeans(xt, k, niter=niter, seed=seed, process_group=process_group)
    del xt
    return ShardedClustering(
        labels=res.labels,
        distances=res.distances,
        centroids=res.centroids,
        pca=pca,
        n_empty_reseeded=res.n_empty_reseeded,
        objective=res.objective,
        iterations=res.iterations,
        total=sum(sizes),
        clustered_dim=int(x.shape[1]),
    )


def sharded_hierarchical_kmeans(
    x_local: np.ndarray, num_groups: int, num_sub: int, **options: Any
) -> ShardedHierarchicalClustering:
    """Pre-process and two-level k-means sharded features (DeeperCluster Sec. 4.2-4.3).

    DeeperCluster whitens and L2-normalises the activations (Sec. 4.3) and then
    runs the distributed hierarchical k-means (Sec. 4.2): this is
    :func:`sharded_kmeans`' pre-processing followed by
    :func:`.hierarchical.distributed_hierarchical_kmeans`. Must be called on every
    rank with the same arguments; without ``torch.distributed`` it runs in one
    process and its labels equal ``preprocess_features`` + ``hierarchical_kmeans(...,
    backend="lloyd")`` up to the float64 rounding of the PCA moments.

    Args:
        x_local: this rank's (n_local, D) float32 features.
        num_groups, num_sub, niter, seed: as ``hierarchical_kmeans`` (seed also
            seeds the PCA sample).
        options: ``niter`` (20), ``seed`` (0), ``inplace`` (False), ``process_group``
            (None) and the pre-processing keywords, as :func:`sharded_kmeans`.
    """
    niter, seed = options.pop("niter", 20), options.pop("seed", 0)
    process_group = options.pop("process_group", None)
    x, pca, sizes = preprocess_shards(
        x_local,
        seed=seed,
        inplace=options.pop("inplace", False),
        process_group=process_group,
        **preprocessing_options(options),
    )
    group, sub = distributed_hierarchical_kmeans(
        x, num_groups, num_sub, niter=niter, seed=seed, process_group=process_group
    )
    return ShardedHierarchicalClustering(
        group=group, sub=sub, pca=pca, total=sum(sizes), clustered_dim=int(x.shape[1])
    )
