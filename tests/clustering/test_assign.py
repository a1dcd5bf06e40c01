"""Exact nearest-centroid assignment (DeeperCluster Sec. 4.2 E-step)."""

import numpy as np
import torch

from vissl_clusterfit.clustering import nearest_centroids


def test_matches_float64_brute_force_and_is_block_invariant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    c = rng.standard_normal((7, 5))
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    labels, dist = nearest_centroids(torch.from_numpy(x), torch.from_numpy(c))
    np.testing.assert_array_equal(labels.numpy(), full.argmin(axis=1))
    np.testing.assert_allclose(dist.numpy(), full.min(axis=1), rtol=1e-12)
    assert labels.dtype == torch.int64 and dist.dtype == torch.float64
    for batch_size in (1, 7):
        lb, db = nearest_centroids(
            torch.from_numpy(x), torch.from_numpy(c), batch_size=batch_size
        )
        np.testing.assert_array_equal(lb.numpy(), labels.numpy())
        np.testing.assert_array_equal(db.numpy(), dist.numpy())


def test_exact_ties_go_to_the_lower_index():
    # (1, 0) is at squared distance 1 from centroids 1 and 2 and 4 from centroid 0.
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    c = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    labels, dist = nearest_centroids(x, c)
    assert labels.tolist() == [1, 2], labels
    assert dist.tolist() == [1.0, 1.0], dist
