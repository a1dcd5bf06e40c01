"""Empty-cluster re-seeding (DeepCluster thesis Sec. 3.2), checked by hand."""

import numpy as np
import torch

from vissl_clusterfit.clustering import Comm, local_stats, reseed_empty_clusters


def test_local_stats_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    counts, sums = local_stats(x, torch.tensor([2, 0, 2]), 3)
    assert counts.dtype == sums.dtype == torch.float64
    assert counts.tolist() == [1.0, 0.0, 2.0]
    assert sums.tolist() == [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]]


def test_largest_cluster_is_split_into_the_empty_one():
    x = torch.tensor(
        [[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0], [1.2, 1.0]],
        dtype=torch.float32,
    )
    labels = torch.tensor([0, 0, 2, 2, 2])
    counts, sums = local_stats(x, labels, 3)
    centroids = torch.zeros(3, 2, dtype=torch.float64)
    centroids[[0, 2]] = sums[[0, 2]] / counts[[0, 2]].unsqueeze(1)
    distances = torch.zeros(5, dtype=torch.float64)
    n = reseed_empty_clusters(
        x, labels, centroids, counts, sums, Comm(single_process=True), 0, distances
    )
    # Cluster 2 (3 members, mean (1.1, 1)) is the largest; its farthest member is
    # row 2 (1.0, 1.0) (tied with row 4 at 0.01; the lower row wins). Projections
    # on (f - m) = (-0.1, 0): row 2 > 0 moves, rows 3 (0) and 4 (< 0) stay.
    assert n == 1
    assert labels.tolist() == [0, 0, 1, 2, 2]
    assert counts.tolist() == [2.0, 1.0, 2.0]
    np.testing.assert_allclose(centroids[1].numpy(), [1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(centroids[2].numpy(), [1.15, 1.0], atol=1e-7)
    np.testing.assert_allclose(
        distances.numpy(), [0.0, 0.0, 0.0, 0.0025, 0.0025], atol=1e-7
    )


def test_nothing_to_do_without_empty_clusters():
    x = torch.tensor([[0.0], [1.0]])
    labels = torch.tensor([0, 1])
    counts, sums = local_stats(x, labels, 2)
    centroids = sums / counts.unsqueeze(1)
    n = reseed_empty_clusters(
        x, labels, centroids, counts, sums, Comm(single_process=True), 0
    )
    assert n == 0 and labels.tolist() == [0, 1]
