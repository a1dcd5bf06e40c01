"""Distributed Lloyd k-means (DeeperCluster, Caron et al., ICCV 2019, Sec. 4.2).

"Each GPU is in charge of computing cluster assignments for its partition,
whereas centroids are updated across GPUs. We reduce communication between
GPUs by sharing only the number of assigned elements for each cluster and the
sum of their features." This module implements exactly that with
``torch.distributed``: every rank keeps its shard of the features, and per
iteration only a K-vector of counts and a K x D matrix of feature sums
(float64, so the result depends on the sharding only through rounding) are
all-reduced. It is the scalable counterpart of :func:`.kmeans.run_kmeans` for
the k-means step of ClusterFit (Yan et al., CVPR 2020, Sec. 3.1).

Empty clusters are re-seeded as in the DeepCluster thesis (Caron 2018,
Sec. 3.2 / 4.2) by splitting the largest cluster (:mod:`.reseed`); the split rule
is also the one used by the single-process :func:`.kmeans.run_kmeans`.
"""

import logging
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .assign import nearest_centroids
from .blocks import rows_per_block
from .comm import Comm
from .reseed import local_stats, reseed_empty_clusters
from .result import KMeansResult
from .validation import check_num_clusters


__all__ = ["distributed_kmeans"]

logger = logging.getLogger(__name__)


def _to_tensor(
    x_local: Union[np.ndarray, torch.Tensor]
) -> Tuple[Optional[torch.Tensor], Optional[str]]:
    """Wrap the local shard without copying; return (tensor, error message)."""
    if isinstance(x_local, np.ndarray):
        if not np.issubdtype(x_local.dtype, np.floating):
            return None, (
                f"x_local must be a floating point array, got dtype {x_local.dtype}; "
                "convert it with .astype(np.float32)"
            )
        x = torch.from_numpy(np.ascontiguousarray(x_local))
    elif isinstance(x_local, torch.Tensor):
        x = x_local.detach()
    else:
        return None, (
            f"x_local must be a numpy array or a torch tensor, got {type(x_local).__name__}"
        )
    if not x.is_floating_point():
        return (
            None,
            f"x_local must be floating point, got dtype {x.dtype}; convert it to float32",
        )
    if x.dim() != 2:
        return None, (
            f"x_local must be 2-D (num_local_samples, feature_dim), got shape {tuple(x.shape)}"
        )
    if x.shape[1] == 0:
        return None, "x_local has feature dimension 0; nothing to cluster"
    rows = rows_per_block(x.shape[1])
    bad_rows = 0
    first_bad = -1
    for start in range(0, x.shape[0], rows):
        bad = ~torch.isfinite(x[start : start + rows]).all(dim=1)
        if bool(bad.any()):
            if first_bad < 0:
                first_bad = start + int(torch.nonzero(bad)[0])
            bad_rows += int(bad.sum())
    if bad_rows:
        return None, (
            f"features contain NaN or inf values in {bad_rows} of {x.shape[0]} local rows "
            f"(first bad local row index: {first_bad}). Check the N_pre checkpoint and the "
            "layer the features were extracted from."
        )
    return x, None


def _initial_centroids(
    x: torch.Tensor,
    k: int,
    seed: int,
    comm: Comm,
    row_offset: int,
    total: int,
    init_centroids: Optional[np.ndarray],
) -> torch.Tensor:
    """K x D float64 starting centroids, identical on every rank."""
    d = x.shape[1]
    buf = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    if init_centroids is not None:
        init = np.asarray(init_centroids)
        if init.shape != (k, d):
            raise ValueError(
                f"init_centroids has shape {init.shape}, expected (K={k}, D={d})"
            )
        if not np.isfinite(init).all():
            raise ValueError(
                "init_centroids contain NaN or inf values; pass finite centroids"
            )
        # Zero-padded sum = rank 0's copy everywhere, in case ranks disagree in the last bits.
        if comm.rank == 0:
            buf.copy_(torch.from_numpy(init.astype(np.float64)))
        return comm.all_reduce_sum(buf)
    # Row ids are drawn in the global index space, so the initialisation
    # (hence the whole run) does not depend on how the data is sharded.
    global_ids = np.random.default_rng(seed).choice(total, size=k, replace=False)
    mine = np.nonzero(
        (global_ids >= row_offset) & (global_ids < row_offset + x.shape[0])
    )[0]
    if mine.size:
        local_rows = torch.from_numpy(global_ids[mine] - row_offset).to(x.device)
        buf[torch.from_numpy(mine).to(x.device)] = x[local_rows].to(torch.float64)
    return comm.all_reduce_sum(buf)


def distributed_kmeans(
    x_local: Union[np.ndarray, torch.Tensor],
    k: int,
    niter: int = 20,
    seed: int = 0,
    init_centroids: Optional[np.ndarray] = None,
    process_group: Optional[object] = None,
    batch_size: int = 0,
    single_process: bool = False,
) -> KMeansResult:
    """Lloyd k-means over features sharded across ``torch.distributed`` ranks.

    DeeperCluster Sec. 4.2: every rank assigns its own shard to the current
    centroids; only the per-cluster counts (K) and feature sums (K x D, in
    float64) are all-reduced to form the new centroids. Must be called on
    every rank of the group with the same ``k``, ``niter``, ``seed`` and
    ``init_centroids``. Without an initialised ``torch.distributed`` it is a
    plain single-process Lloyd k-means; for the same data and initialisation
    the concatenated labels of all ranks equal the single-process labels.

    Iterations stop early once no label changes (a fixed point). After the
    last assignment, empty clusters are re-seeded by splitting the largest
    cluster (thesis Sec. 3.2), identically on every rank.

    Memory per rank: the shard plus O(K * D) plus row blocks of about
    ``2**24`` elements (or ``batch_size`` rows).

    Args:
        x_local: this rank's (n_local, D) features, numpy or torch (any device;
            computation stays on that device).
        k: number of clusters, 1 <= k <= total number of rows over all ranks.
        niter: maximum number of Lloyd updates (0 = only assign to the initial
            centroids).
        seed: selects the k initial rows among all rows of all ranks.
        init_centroids: optional (k, D) initial centroids (rank 0's copy is used).
        process_group: ``torch.distributed`` group; None = the default group.
        batch_size: rows per assignment block; 0 = automatic.
        single_process: cluster ``x_local`` alone, without collectives, even
            when ``torch.distributed`` is initialised (e.g. on rank 0 only).

    Returns:
        :class:`KMeansResult`: centroids (identical on all ranks), labels and
        distances of the local rows, global objective, number of final
        re-seeds and number of updates performed.
    """
    comm = Comm(process_group, single_process=single_process)
    x, error = _to_tensor(x_local)
    n_local = x.shape[0] if x is not None else 0
    d_local = x.shape[1] if x is not None else -1
    # One tiny all_gather validates every rank and gives the shard sizes, so a
    # bad shard raises on all ranks instead of deadlocking the healthy ones.
    info = comm.all_gather(
        torch.tensor([n_local, d_local, 0 if error is None else 1], dtype=torch.int64)
    )
    bad_ranks = [r for r in range(comm.world_size) if int(info[r, 2])]
    if bad_ranks:
        raise ValueError(
            error
            or f"invalid features (NaN/inf, wrong shape or dtype) on rank(s) {bad_ranks}; "
            "see the ValueError raised there"
        )
    assert x is not None
    dims = sorted({int(v) for v in info[:, 1].tolist()})
    if len(dims) > 1:
        raise ValueError(
            f"feature dimensions differ across ranks: {info[:, 1].tolist()}; every rank must "
            "extract features from the same layer with the same pre-processing"
        )
    sizes: List[int] = info[:, 0].tolist()
    total = int(sum(sizes))
    row_offset = int(sum(sizes[: comm.rank]))
    k = check_num_clusters(k, total, key="K")
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")

    centroids = _initial_centroids(x, k, seed, comm, row_offset, total, init_centroids)
    labels: Optional[torch.Tensor] = None
    iterations = 0
    in_loop_reseeds = 0
    while True:
        new_labels, distances = nearest_centroids(x, centroids, batch_size)
        counts, sums = local_stats(x, new_labels, k)
        changed = 0.0 if labels is None else float((new_labels != labels).sum())
        changed_t = torch.tensor([changed], dtype=torch.float64, device=x.device)
        stats = comm.all_reduce_sum(torch.cat([counts, sums.flatten(), changed_t]))
        counts = stats[:k].clone()
        sums = stats[k : k + k * x.shape[1]].view(k, x.shape[1]).clone()
        converged = labels is not None and float(stats[-1]) == 0.0
        labels = new_labels
        if iterations == niter or converged:
            break
        in_loop_reseeds += reseed_empty_clusters(
            x, labels, centroids, counts, sums, comm, row_offset
        )
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty].unsqueeze(1)
        iterations += 1

    n_reseeded = reseed_empty_clusters(
        x, labels, centroids, counts, sums, comm, row_offset, distances=distances
    )
    objective = comm.all_reduce_sum(distances.sum().reshape(1))
    if in_loop_reseeds:
        logger.debug(
            "distributed_kmeans re-seeded %d empty clusters during the iterations",
            in_loop_reseeds,
        )
    return KMeansResult(
        centroids=centroids.to(torch.float32).cpu().numpy(),
        labels=labels.cpu().numpy().astype(np.int64, copy=False),
        distances=distances.to(torch.float32).cpu().numpy(),
        objective=float(objective[0]),
        n_empty_reseeded=n_reseeded,
        iterations=iterations,
    )
