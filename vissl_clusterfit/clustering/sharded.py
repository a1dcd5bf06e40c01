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
except through float64 rounding of the reductions.
"""

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .comm import Comm, gather_rows
from .distributed_kmeans import distributed_kmeans
from .hierarchical import distributed_hierarchical_kmeans
from .pca import PCAWhitening, row_sum, scatter
from .preprocess import apply_preprocessing, l2_normalize
from .validation import check_finite, check_order


logger = logging.getLogger(__name__)

__all__ = [
    "ShardedClustering",
    "ShardedHierarchicalClustering",
    "fit_pca_sharded",
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


def _check_shards(x_local: np.ndarray, comm: Comm) -> List[int]:
    """Validate every rank's shard with one small all_gather; the shard sizes.

    A bad shard raises on every rank (with the same message) instead of leaving the
    healthy ranks waiting in the next collective.
    """
    ok = isinstance(x_local, np.ndarray) and x_local.ndim == 2 and x_local.shape[1] > 0
    finite = False
    if ok:
        try:
            check_finite(x_local)  # chunked: no N x D mask
            finite = True
        except ValueError as e:
            logger.error(f"rank {comm.rank}: {e}")
    info = comm.all_gather(
        torch.tensor(
            [
                x_local.shape[0] if ok else -1,
                x_local.shape[1] if ok else -1,
                int(ok and finite),
            ],
            dtype=torch.int64,
        )
    )
    bad = [r for r in range(comm.world_size) if int(info[r, 2]) == 0]
    if bad:
        raise ValueError(
            f"features of rank(s) {bad} are not a finite 2-D (rows, dim) float array: check "
            "the N_pre checkpoint and the layer the features were extracted from"
        )
    dims = sorted({int(v) for v in info[:, 1].tolist()})
    if len(dims) > 1:
        raise ValueError(
            f"feature dimensions differ across ranks: {info[:, 1].tolist()}; every rank must "
            "extract the same layer"
        )
    return [int(v) for v in info[:, 0].tolist()]


def fit_pca_sharded(
    x_local: np.ndarray,
    dim: int,
    whiten: bool = True,
    sample_size: int = 0,
    seed: int = 0,
    process_group: Optional[object] = None,
) -> PCAWhitening:
    """:meth:`PCAWhitening.fit` over the union of every rank's rows.

    The mean and the covariance are accumulated in float64 per rank and all-reduced,
    so every rank ends up with the same PCA (the all-reduced sums are identical on all
    ranks). ``sample_size`` rows are drawn by ``default_rng(seed)`` in the global row
    order, as :meth:`PCAWhitening.fit` draws them from the concatenated array.
    """
    comm = Comm(process_group)
    return _fit_pca(
        x_local, _check_shards(x_local, comm), comm, dim, whiten, sample_size, seed
    )


def _fit_pca(
    x_local: np.ndarray,
    sizes: List[int],
    comm: Comm,
    dim: int,
    whiten: bool,
    sample_size: int,
    seed: int,
) -> PCAWhitening:
    """:func:`fit_pca_sharded` on shards already validated (``sizes``: rows per rank)."""
    total, offset = sum(sizes), sum(sizes[: comm.rank])
    x = x_local
    n_fit = total
    if 0 < sample_size < total:
        rows = np.sort(
            np.random.default_rng(seed).choice(total, size=sample_size, replace=False)
        )
        mine = rows[(rows >= offset) & (rows < offset + x.shape[0])] - offset
        x = x_local[mine]
        n_fit = sample_size
    d = x_local.shape[1]
    if dim > min(n_fit, d):
        raise ValueError(
            f"PCA dim={dim} must be <= min(num_rows={n_fit}, feature_dim={d}) of the data it "
            "is fitted on; lower the PCA dimension or fit on more rows"
        )
    mean = comm.all_reduce_sum(torch.from_numpy(row_sum(x))).numpy() / n_fit
    cov = comm.all_reduce_sum(torch.from_numpy(scatter(x, mean))).numpy() / n_fit
    return PCAWhitening(dim, whiten=whiten).fit_moments(mean, cov)


PREPROCESSING_DEFAULTS = {
    "pca_dim": 0,
    "whiten": True,
    "l2_norm": True,
    "order": "pca_l2",
    "pca_sample_size": 0,
}


def _preprocessing(options: Dict[str, Any]) -> Dict[str, Any]:
    """The pre-processing keywords of the sharded routes, defaults filled in."""
    unknown = sorted(set(options) - set(PREPROCESSING_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown pre-processing arguments {unknown}; valid: "
            f"{sorted(PREPROCESSING_DEFAULTS)}"
        )
    return {**PREPROCESSING_DEFAULTS, **options}


def _preprocess(
    x_local: np.ndarray,
    pca_dim: int,
    whiten: bool,
    l2_norm: bool,
    order: str,
    pca_sample_size: int,
    seed: int,
    inplace: bool,
    process_group: Optional[object],
) -> Tuple[np.ndarray, Optional[PCAWhitening], List[int]]:
    """Validate the shards, fit the PCA over all ranks and transform the local rows.

    Returns:
        (pre-processed local rows, PCA or None, rows per rank).
    """
    check_order(order)
    comm = Comm(process_group)
    sizes = _check_shards(x_local, comm)
    pca = None
    x = x_local
    if pca_dim > 0:
        if l2_norm and order == "l2_pca":
            x = l2_normalize(x, out=x if inplace and x.dtype == np.float32 else None)
            inplace = True
        pca = _fit_pca(x, sizes, comm, pca_dim, whiten, pca_sample_size, seed)
    x = apply_preprocessing(x, pca, l2_norm=l2_norm, order="pca_l2", inplace=inplace)
    return x, pca, sizes


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
    x, pca, sizes = _preprocess(
        x_local,
        seed=seed,
        inplace=inplace,
        process_group=process_group,
        **_preprocessing(preprocessing),
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
    x, pca, sizes = _preprocess(
        x_local,
        seed=seed,
        inplace=options.pop("inplace", False),
        process_group=process_group,
        **_preprocessing(options),
    )
    group, sub = distributed_hierarchical_kmeans(
        x, num_groups, num_sub, niter=niter, seed=seed, process_group=process_group
    )
    return ShardedHierarchicalClustering(
        group=group, sub=sub, pca=pca, total=sum(sizes), clustered_dim=int(x.shape[1])
    )
