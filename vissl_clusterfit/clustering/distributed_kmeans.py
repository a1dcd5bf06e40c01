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
Sec. 3.2 / 4.2) by splitting the largest cluster; the split rule here is also
the one used by the single-process :func:`.kmeans.run_kmeans`.
"""

import logging
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist

from .kmeans import KMeansResult


__all__ = ["distributed_kmeans"]

logger = logging.getLogger(__name__)

# Elements per temporary block in the chunked passes (~128 MB in float64).
_BLOCK_ELEMENTS = 1 << 24
# Candidates re-ranked in float64 after the float32 GEMM: see _assign.
_N_CANDIDATES = 2


class _Comm:
    """The few collectives this module needs, or no-ops in a single process."""

    def __init__(
        self, process_group: Optional[object] = None, single_process: bool = False
    ) -> None:
        initialised = dist.is_available() and dist.is_initialized()
        if single_process:
            initialised = False
        elif process_group is not None and not initialised:
            raise ValueError(
                "process_group was given but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first or pass process_group=None"
            )
        self.group = process_group
        self.rank = 0
        self.world_size = 1
        self.device = torch.device("cpu")
        if initialised:
            self.rank = dist.get_rank(process_group)
            if self.rank < 0:
                raise ValueError(
                    "this process is not a member of the given process_group; call "
                    "distributed_kmeans only on the ranks of that group"
                )
            self.world_size = dist.get_world_size(process_group)
            if dist.get_backend(process_group) == "nccl":
                # NCCL only moves CUDA tensors.
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.active = initialised and self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return tensor
        buf = tensor.to(self.device).contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        return buf.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return a (world_size, *tensor.shape) stack of every rank's tensor."""
        if not self.active:
            return tensor.unsqueeze(0)
        buf = tensor.to(self.device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(out, buf, group=self.group)
        return torch.stack(out).to(tensor.device)


def _rows_per_block(width: int, batch_size: int = 0) -> int:
    if batch_size > 0:
        return batch_size
    return max(1, _BLOCK_ELEMENTS // max(1, width))


def _assign(
    x: torch.Tensor, centroids: torch.Tensor, batch_size: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of ``x``, in row blocks.

    The K-way search is a float32 GEMM (fast on CPU and GPU), but its rounding
    depends on the block composition, i.e. on the sharding; so the best
    ``_N_CANDIDATES`` are re-ranked with exact float64 distances computed row
    by row. Labels could then only differ between shardings if three
    centroids were within float32 rounding of each other for one row; exact
    ties go to the lower centroid index. The re-ranking costs O(n * D) per
    candidate against O(n * K * D) for the GEMM.

    Returns:
        (labels int64 (n,), squared distances float64 (n,)).
    """
    n = x.shape[0]
    k = centroids.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float64, device=x.device)
    c32 = centroids.to(torch.float32)
    c32_sqnorm = (c32 * c32).sum(dim=1)
    m = min(_N_CANDIDATES, k)
    rows = _rows_per_block(max(k, m * x.shape[1]), batch_size)
    for start in range(0, n, rows):
        block = x[start : start + rows]
        scores = c32_sqnorm.unsqueeze(0) - 2.0 * (block.to(torch.float32) @ c32.T)
        cand = torch.topk(scores, m, dim=1, largest=False).indices
        cand, _ = torch.sort(cand, dim=1)
        diff = block.to(torch.float64).unsqueeze(1) - centroids[cand]
        exact = (diff * diff).sum(dim=2)
        best = torch.argmin(exact, dim=1, keepdim=True)
        labels[start : start + rows] = cand.gather(1, best).squeeze(1)
        distances[start : start + rows] = exact.gather(1, best).squeeze(1)
    return labels, distances


def _local_stats(
    x: torch.Tensor, labels: torch.Tensor, k: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster counts and float64 feature sums of the local rows."""
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    rows = _rows_per_block(x.shape[1])
    for start in range(0, x.shape[0], rows):
        sums.index_add_(
            0, labels[start : start + rows], x[start : start + rows].to(torch.float64)
        )
    return counts, sums


def _sqdist_rows(
    x: torch.Tensor, rows: torch.Tensor, point: torch.Tensor
) -> torch.Tensor:
    """float64 squared distances from ``x[rows]`` to ``point``, in blocks."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    step = _rows_per_block(x.shape[1])
    for start in range(0, rows.numel(), step):
        diff = x[rows[start : start + step]].to(torch.float64) - point
        out[start : start + step] = (diff * diff).sum(dim=1)
    return out


def _project_rows(
    x: torch.Tensor, rows: torch.Tensor, origin: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """float64 ``(x[rows] - origin) . direction``, in blocks."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    step = _rows_per_block(x.shape[1])
    for start in range(0, rows.numel(), step):
        block = x[rows[start : start + step]].to(torch.float64)
        out[start : start + step] = (block - origin) @ direction
    return out


def _split_cluster(
    x: torch.Tensor,
    labels: torch.Tensor,
    centroids: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    comm: _Comm,
    row_offset: int,
    source: int,
    target: int,
    distances: Optional[torch.Tensor],
) -> None:
    """Split cluster ``source`` in two, giving one part to the empty ``target``.

    Thesis Sec. 3.2 gives an empty cluster half of the images of a randomly
    picked non-empty one; the caller picks the largest instead, which needs
    no RNG shared across ranks and splits where a split helps most.

    Let m be the mean of ``source`` and f its member farthest from m (the
    lowest global row id breaks ties). The centroid is copied to ``target``
    with the symmetric perturbation m +/- eps (f - m); for any eps > 0 the
    members closer to m + eps (f - m) are exactly those with
    (x - m).(f - m) > 0, which is what is computed, so eps never needs to be
    chosen. Both parts are non-empty: f has a positive projection and the
    projections of the members sum to zero around their mean. If rounding or
    identical members defeat this, the second half in global row order moves.
    Both centroids are then set to the means of their parts.

    All decisions use all-reduced quantities, so every rank takes the same
    one; costs 3-5 collectives of at most D + 1 numbers. Updates the tensors
    in place.
    """
    n_source = float(counts[source])
    assert n_source >= 2, "splitting needs a cluster with at least two members"
    mean = sums[source] / n_source
    members = torch.nonzero(labels == source).squeeze(1)
    local_best = -1

    # Farthest member: gather (distance, -global id) from each rank, take the max.
    if members.numel() > 0:
        d2 = _sqdist_rows(x, members, mean)
        local_best = int(torch.argmax(d2))
        candidate = torch.tensor(
            [float(d2[local_best]), -float(row_offset + int(members[local_best]))],
            dtype=torch.float64,
        )
    else:
        candidate = torch.tensor([-1.0, -float("inf")], dtype=torch.float64)
    gathered = comm.all_gather(candidate).tolist()
    owner = max(range(len(gathered)), key=lambda r: (gathered[r][0], gathered[r][1]))
    far_d2 = gathered[owner][0]

    move = torch.zeros(0, dtype=torch.int64, device=x.device)
    n_moved = 0.0
    if far_d2 > 0:
        far = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        if comm.rank == owner:
            far = x[int(members[local_best])].to(torch.float64).clone()
        far = comm.all_reduce_sum(far)
        proj = _project_rows(x, members, mean, far - mean)
        move = members[proj > 0]
        n_moved_t = torch.tensor([float(move.numel())], dtype=torch.float64)
        n_moved = float(comm.all_reduce_sum(n_moved_t)[0])
    if n_moved < 1 or n_moved > n_source - 1:
        # Identical members (or rounding at the hyperplane): split by global order.
        per_rank = comm.all_gather(
            torch.tensor([members.numel()], dtype=torch.int64)
        ).squeeze(1)
        first_pos = int(per_rank[: comm.rank].sum())
        keep = int(n_source) // 2
        positions = first_pos + torch.arange(members.numel(), device=x.device)
        move = members[positions >= keep]

    labels[move] = target
    moved = torch.zeros(x.shape[1] + 1, dtype=torch.float64, device=x.device)
    moved[0] = float(move.numel())
    step = _rows_per_block(x.shape[1])
    for start in range(0, move.numel(), step):
        moved[1:] += x[move[start : start + step]].to(torch.float64).sum(dim=0)
    moved = comm.all_reduce_sum(moved)
    counts[target] = moved[0]
    sums[target] = moved[1:]
    counts[source] -= moved[0]
    sums[source] -= moved[1:]
    assert counts[target] >= 1 and counts[source] >= 1
    centroids[source] = sums[source] / counts[source]
    centroids[target] = sums[target] / counts[target]
    if distances is not None:
        for cluster in (source, target):
            rows = torch.nonzero(labels == cluster).squeeze(1)
            distances[rows] = _sqdist_rows(x, rows, centroids[cluster])


def _reseed_empty_clusters(
    x: torch.Tensor,
    labels: torch.Tensor,
    centroids: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    comm: _Comm,
    row_offset: int,
    distances: Optional[torch.Tensor] = None,
) -> int:
    """Fill every empty cluster by splitting the currently largest one.

    ``counts`` and ``sums`` must be the global (all-reduced) statistics of
    ``labels``; all arguments are updated in place. Each split fills one
    empty cluster and leaves both halves non-empty, so the loop ends after
    exactly as many splits as there were empty clusters (possible whenever
    K <= N, by pigeonhole the largest cluster then has >= 2 members).

    Returns:
        number of clusters re-seeded.
    """
    n_reseeded = 0
    while True:
        empty = torch.nonzero(counts == 0).squeeze(1)
        if empty.numel() == 0:
            return n_reseeded
        # argmax returns the first maximum: ties go to the lowest index on every rank.
        source = int(torch.argmax(counts))
        _split_cluster(
            x,
            labels,
            centroids,
            counts,
            sums,
            comm,
            row_offset,
            source=source,
            target=int(empty[0]),
            distances=distances,
        )
        n_reseeded += 1


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
    rows = _rows_per_block(x.shape[1])
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
    comm: _Comm,
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

    Returns:
        :class:`KMeansResult`: centroids (identical on all ranks), labels and
        distances of the local rows, global objective, number of final
        re-seeds and number of updates performed.
    """
    comm = _Comm(process_group)
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
    if int(k) != k or k < 1:
        raise ValueError(f"K must be a positive integer, got {k!r}")
    k = int(k)
    if k > total:
        raise ValueError(
            f"K={k} is larger than the number of samples N={total}; lower K or use more data"
        )
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")

    centroids = _initial_centroids(x, k, seed, comm, row_offset, total, init_centroids)
    labels: Optional[torch.Tensor] = None
    iterations = 0
    in_loop_reseeds = 0
    while True:
        new_labels, distances = _assign(x, centroids, batch_size)
        counts, sums = _local_stats(x, new_labels, k)
        changed = 0.0 if labels is None else float((new_labels != labels).sum())
        changed_t = torch.tensor([changed], dtype=torch.float64, device=x.device)
        stats = comm.all_reduce_sum(torch.cat([counts, sums.flatten(), changed_t]))
        counts = stats[:k].clone()
        sums = stats[k : k + k * x.shape[1]].view(k, x.shape[1]).clone()
        converged = labels is not None and float(stats[-1]) == 0.0
        labels = new_labels
        if iterations == niter or converged:
            break
        in_loop_reseeds += _reseed_empty_clusters(
            x, labels, centroids, counts, sums, comm, row_offset
        )
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty].unsqueeze(1)
        iterations += 1

    n_reseeded = _reseed_empty_clusters(
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
