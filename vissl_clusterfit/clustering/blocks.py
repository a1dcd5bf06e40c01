"""Row blocks for the chunked torch passes of the k-means code.

DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2) runs k-means on features that
fill a machine's memory; every per-row pass of :mod:`.distributed_kmeans` and
:mod:`.reseed` therefore works on row blocks of bounded size, never on an
N x K or N x D temporary.
"""

__all__ = ["BLOCK_ELEMENTS", "rows_per_block"]

#: Elements per temporary block in the chunked passes (~128 MB in float64).
BLOCK_ELEMENTS = 1 << 24


def rows_per_block(width: int, batch_size: int = 0) -> int:
    """Rows per block when each row costs ``width`` elements (``batch_size`` if > 0)."""
    if batch_size > 0:
        return batch_size
    return max(1, BLOCK_ELEMENTS // max(1, width))
