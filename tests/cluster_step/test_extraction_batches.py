"""cluster_step.extraction_batches: the global batches each rank extracts."""

import numpy as np

from vissl_clusterfit.cluster_step import extraction_batches


def test_rank_batches_partition_the_dataset():
    for world in (1, 2, 3):
        parts = [
            extraction_batches.rank_batches(103, 10, r, world) for r in range(world)
        ]
        flat = np.concatenate([np.concatenate(p) for p in parts if p])
        assert sorted(flat.tolist()) == list(range(103))
        # every image sits in the same global batch whatever the world size
        for p in parts:
            for b in p:
                assert b[0] % 10 == 0 and len(b) <= 10


def test_contiguous_rank_batches_cover_the_dataset_in_rank_order():
    for world in (1, 2, 3, 4):
        parts = [
            extraction_batches.rank_batches(103, 10, r, world, contiguous=True)
            for r in range(world)
        ]
        flat = np.concatenate([np.concatenate(p) for p in parts if p])
        np.testing.assert_array_equal(
            flat, np.arange(103)
        )  # rank 0's rows, then rank 1's...
        assert all(p for p in parts)  # 11 batches: every rank gets one
        assert all(b[0] % 10 == 0 for p in parts for b in p)  # the same global batches
