"""Two-level k-means of DeeperCluster (Caron et al., ICCV 2019, Sec. 4.1-4.2).

Sec. 4.1 "Choice of super-classes": level 1 splits the whole dataset into m groups
with k-means; level 2 runs k-means with k clusters inside each group. With the 4
rotations this gives the 4m super-classes and the k sub-classes of Eq. 5.

Both levels use every row by default. Sec. 4.2 "Distributed k-means" clusters "the
entire dataset" (96M features into m = 4 groups, then each group's ~23M features
into 80k clusters), and the authors' code (facebookresearch/DeeperCluster,
``src/clustering.py`` and ``src/distributed_kmeans.py``) iterates over every cached
feature at both levels: there is no training subsample. faiss' default of 256
points per centroid would train level 1 with m = 4 on 1024 rows only.

Small groups (one rule for every route): a group with n_g rows gets
``min(num_sub, n_g)`` sub-clusters, so every point gets a valid (group, sub) pair
and sub-ids ``n_g .. num_sub - 1`` of that group stay empty; a group of one row
gets sub-id 0 without running k-means. (The authors instead draw ``num_sub``
initial centroids with replacement and split random clusters into the empty ones.)

Routes:

- :func:`hierarchical_kmeans`: one process; ``backend="faiss"`` (faiss Lloyd,
  :func:`.kmeans.run_kmeans`) or ``backend="lloyd"`` (:func:`.distributed_kmeans`
  run in this process alone).
- :func:`distributed_hierarchical_kmeans`: the paper's Sec. 4.2 contribution on
  ``torch.distributed`` shards. Its labels equal ``hierarchical_kmeans(...,
  backend="lloyd")`` on the concatenated shards, whatever the number of ranks.
"""

from typing import Optional, Tuple, Union

import numpy as np
import torch

from .comm import Comm
from .distributed_kmeans import distributed_kmeans
from .kmeans import run_kmeans
from .validation import check_num_clusters, validate_features


__all__ = ["distributed_hierarchical_kmeans", "hierarchical_kmeans"]

#: Level-1/level-2 k-means implementations of :func:`hierarchical_kmeans`.
HIERARCHICAL_BACKENDS = ("faiss", "lloyd")


def _check_levels(num_groups: int, num_sub: int) -> Tuple[int, int]:
    return (
        check_num_clusters(num_groups, None, key="NUM_GROUPS"),
        check_num_clusters(num_sub, None, key="NUM_SUB"),
    )


def _sub_seed(seed: int, group: int) -> int:
    """Level-2 seed of ``group``: distinct per group, identical on every route."""
    return seed + 1 + group


def hierarchical_kmeans(
    x: np.ndarray,
    num_groups: int,
    num_sub: int,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: Optional[int] = None,
    backend: str = "faiss",
) -> Tuple[np.ndarray, np.ndarray]:
    """Two-level k-means of all rows of ``x`` in one process (DeeperCluster Sec. 4.1).

    Args:
        x: (N, D) pre-processed features.
        num_groups: level-1 clusters m, 1 <= m <= N.
        num_sub: level-2 clusters k per group (fewer in groups smaller than k,
            see the module docstring).
        niter: Lloyd iterations per k-means.
        seed: level-1 seed; group g's level-2 k-means uses ``seed + 1 + g``.
        max_points_per_centroid: ``backend="faiss"`` only: None (default) trains
            each k-means on all its rows, as the authors do; an int lets faiss
            train on a sample of ``k * max_points_per_centroid`` rows (faiss'
            own default is 256).
        backend: ``"faiss"`` (:func:`.kmeans.run_kmeans`) or ``"lloyd"``
            (:func:`.distributed_kmeans` without collectives: the same algorithm
            as :func:`distributed_hierarchical_kmeans`, hence the same labels).

    Returns:
        ``(group, sub)`` int64 arrays (N,): the level-1 group in [0, num_groups)
        and the level-2 cluster within that group in [0, num_sub).
    """
    if backend not in HIERARCHICAL_BACKENDS:
        raise ValueError(
            f"unknown hierarchical k-means backend {backend!r}; valid values are "
            f"{list(HIERARCHICAL_BACKENDS)}"
        )
    if max_points_per_centroid is not None:
        if backend != "faiss":
            raise ValueError(
                "max_points_per_centroid only applies to backend='faiss' (the Lloyd "
                "backend always uses every row); pass max_points_per_centroid=None"
            )
        if int(max_points_per_centroid) != max_points_per_centroid or (
            max_points_per_centroid < 1
        ):
            raise ValueError(
                "max_points_per_centroid must be a positive integer or None (= all "
                f"rows), got {max_points_per_centroid!r}"
            )
    num_groups, num_sub = _check_levels(num_groups, num_sub)
    x = validate_features(x)
    check_num_clusters(num_groups, len(x), key="NUM_GROUPS")

    def cluster(rows: np.ndarray, k: int, k_seed: int) -> np.ndarray:
        if backend == "lloyd":
            return distributed_kmeans(
                rows, k, niter=niter, seed=k_seed, single_process=True
            ).labels
        # ceil(n / k) points per centroid = faiss trains on every row.
        per_centroid = max_points_per_centroid or -(-len(rows) // k)
        return run_kmeans(
            rows, k, niter=niter, seed=k_seed, max_points_per_centroid=per_centroid
        ).labels

    group = cluster(x, num_groups, seed).astype(np.int64)
    sub = np.zeros(len(x), dtype=np.int64)
    for g in range(num_groups):
        members = np.flatnonzero(group == g)
        k = min(num_sub, len(members))
        if k <= 1:
            continue
        sub[members] = cluster(x[members], k, _sub_seed(seed, g))
    return group, sub


def distributed_hierarchical_kmeans(
    x_local: Union[np.ndarray, torch.Tensor],
    num_groups: int,
    num_sub: int,
    niter: int = 20,
    seed: int = 0,
    process_group: Optional[object] = None,
    batch_size: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Two-level k-means over ``torch.distributed`` shards (DeeperCluster Sec. 4.2).

    Level 1 is :func:`.distributed_kmeans` over the rows of all ranks. Level 2
    runs, group after group, :func:`.distributed_kmeans` on each rank's rows of
    that group (possibly none): every rank takes part, only counts and feature
    sums of the group's clusters cross the network, and the k initial rows are
    drawn in the global order of the group's rows, so the labels do not depend
    on how the rows are sharded. The paper instead moves each group's features
    to its own pool of GPUs and runs the m level-2 k-means concurrently; that
    changes where the work happens, not the result, at the price of moving the
    features, which this route never does. Small groups follow the module rule.

    Must be called on every rank of the group with the same arguments; each
    rank holds a contiguous block of the dataset, ranks in row order. Without
    ``torch.distributed`` it is ``hierarchical_kmeans(x, ..., backend="lloyd")``.

    Memory per rank: the shard, one copy of its rows of the current group, and
    what :func:`.distributed_kmeans` needs.

    Args:
        x_local: this rank's (n_local, D) pre-processed features.
        num_groups, num_sub, niter, seed: as :func:`hierarchical_kmeans`.
        process_group: ``torch.distributed`` group; None = the default group.
        batch_size: rows per assignment block; 0 = automatic.

    Returns:
        ``(group, sub)`` int64 arrays (n_local,) for this rank's rows.
    """
    num_groups, num_sub = _check_levels(num_groups, num_sub)
    comm = Comm(process_group)
    n_local = x_local.shape[0] if getattr(x_local, "ndim", 0) == 2 else 0
    total = int(comm.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64))[0])
    check_num_clusters(num_groups, total, key="NUM_GROUPS")

    level1 = distributed_kmeans(
        x_local,
        num_groups,
        niter=niter,
        seed=seed,
        process_group=process_group,
        batch_size=batch_size,
    )
    group = level1.labels.astype(np.int64)
    local_counts = torch.bincount(torch.from_numpy(group), minlength=num_groups)
    counts = comm.all_reduce_sum(local_counts.to(torch.int64)).tolist()
    sub = np.zeros(len(group), dtype=np.int64)
    for g in range(num_groups):
        # counts are all-reduced: every rank takes the same branch.
        k = min(num_sub, int(counts[g]))
        if k <= 1:
            continue
        members = np.flatnonzero(group == g)
        rows = (
            x_local[torch.from_numpy(members)]
            if torch.is_tensor(x_local)
            else x_local[members]
        )
        sub[members] = distributed_kmeans(
            rows,
            k,
            niter=niter,
            seed=_sub_seed(seed, g),
            process_group=process_group,
            batch_size=batch_size,
        ).labels
    return group, sub
