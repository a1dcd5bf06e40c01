"""Exact, sharding-invariant nearest-centroid assignment in torch.

The assignment step of Lloyd's k-means as distributed in DeeperCluster (Caron et
al., ICCV 2019, Sec. 4.2: "each GPU is in charge of computing cluster assignments
for its partition"), also used to assign rows to the class prototypes of the
ClusterFit baseline (Yan et al., CVPR 2020, Sec. 4). A row's label must not depend
on which rank or block it sits in, so the float32 search is re-ranked in float64.
"""

from typing import Tuple

import torch

from .blocks import rows_per_block


__all__ = ["nearest_centroids", "nearest_centroids_bytes"]

# Candidates re-ranked in float64 after the float32 GEMM: see nearest_centroids.
_N_CANDIDATES = 2
# Room for the GEMM library's workspace in nearest_centroids_bytes (cuBLAS allocates
# its workspace through torch's allocator on first use).
_GEMM_WORKSPACE = 1 << 26


def nearest_centroids(
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

    Args:
        x: (n, D) floating point rows (any device; the work stays there).
        centroids: (K, D) float64 centroids on the device of ``x``.
        batch_size: rows per block; 0 = about ``2**24`` elements per block.

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
    rows = rows_per_block(max(k, m * x.shape[1]), batch_size)
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


def nearest_centroids_bytes(n: int, dim: int, k: int, batch_size: int = 0) -> int:
    """Upper bound on the memory :func:`nearest_centroids` allocates for ``n`` rows of
    ``dim`` features and ``k`` float64 centroids (the rows and the centroids
    themselves not counted): its outputs, the float32 centroid copy and one row
    block's temporaries (the float32 scores and their GEMM intermediates, the
    float64 candidate differences, the previous block's still referenced) and
    64 MiB for the GEMM library's workspace (cuBLAS). With ``batch_size=0`` a block
    holds at most ``2**24`` scores and ``2**24`` candidate elements, so the per-block
    term is bounded whatever ``n`` and ``k`` (under 0.8 GiB): the bounded route's
    streamed assignment (:mod:`.bounded`) needs this plus one chunk and the
    centroids on the device, whatever N is.
    """
    m = min(_N_CANDIDATES, k)
    b = min(max(n, 1), rows_per_block(max(k, m * dim), batch_size))
    persistent = 16 * n + 4 * k * (dim + 1)
    scores = 3 * 4 * b * k  # GEMM output, its scaled copy, last block's scores
    # float64: the block, its candidates' centroids, their difference and its
    # square, the last block's difference; topk values and indices.
    candidates = 8 * b * dim + 4 * 8 * b * m * dim + 32 * b * m
    return persistent + scores + candidates + _GEMM_WORKSPACE
