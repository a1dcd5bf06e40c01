"""Empty-cluster re-seeding shared by both k-means routes.

DeepCluster thesis (Caron 2018, Sec. 3.2 "Joint optimization", Sec. 4.2): "we
avoid empty clusters ... by assigning to an empty cluster half of the images
assigned to a ... non-empty cluster". Here the largest cluster is split, along the
direction of its farthest member, so no RNG has to be shared across ranks. The same
code serves the distributed k-means (DeeperCluster, Caron et al., ICCV 2019,
Sec. 4.2: every decision is taken from all-reduced statistics, identically on
every rank) and, with a one-rank :class:`.comm.Comm`, the single-process
:func:`.kmeans.run_kmeans`, so both give the same result.
"""

from typing import NamedTuple, Optional, Tuple

import torch

from .blocks import rows_per_block
from .comm import Comm


__all__ = ["local_stats", "reseed_empty_clusters"]


def local_stats(
    x: torch.Tensor, labels: torch.Tensor, k: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster counts and float64 feature sums of the local rows."""
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    rows = rows_per_block(x.shape[1])
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
    step = rows_per_block(x.shape[1])
    for start in range(0, rows.numel(), step):
        diff = x[rows[start : start + step]].to(torch.float64) - point
        out[start : start + step] = (diff * diff).sum(dim=1)
    return out


def _project_rows(
    x: torch.Tensor, rows: torch.Tensor, origin: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """float64 ``(x[rows] - origin) . direction``, in blocks."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    step = rows_per_block(x.shape[1])
    for start in range(0, rows.numel(), step):
        block = x[rows[start : start + step]].to(torch.float64)
        out[start : start + step] = (block - origin) @ direction
    return out


class _KMeansState(NamedTuple):
    """What a split reads and updates in place (see ``reseed_empty_clusters``)."""

    x: torch.Tensor
    labels: torch.Tensor
    centroids: torch.Tensor
    counts: torch.Tensor
    sums: torch.Tensor
    comm: Comm
    row_offset: int
    distances: Optional[torch.Tensor]


def _split_cluster(state: _KMeansState, source: int, target: int) -> None:
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
    x, labels, centroids, counts, sums, comm, row_offset, distances = state
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
    step = rows_per_block(x.shape[1])
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


def reseed_empty_clusters(
    x: torch.Tensor,
    labels: torch.Tensor,
    centroids: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    comm: Comm,
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
    state = _KMeansState(
        x, labels, centroids, counts, sums, comm, row_offset, distances
    )
    n_reseeded = 0
    while True:
        empty = torch.nonzero(counts == 0).squeeze(1)
        if empty.numel() == 0:
            return n_reseeded
        # argmax returns the first maximum: ties go to the lowest index on every rank.
        source = int(torch.argmax(counts))
        _split_cluster(state, source=source, target=int(empty[0]))
        n_reseeded += 1
