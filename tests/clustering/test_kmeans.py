"""Tests for faiss k-means with empty-cluster re-seeding (ClusterFit Sec. 3.1)."""

import faiss
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from vissl_clusterfit.clustering import (
    KMeansResult,
    assign_to_centroids,
    cluster_sizes,
    nmi,
    num_empty,
    run_kmeans,
)
from vissl_clusterfit.clustering.kmeans import fix_empty_clusters


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def test_two_locations_exact_labels_and_centroids():
    x = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 10.0], [10.0, 10.1]], dtype=np.float32)
    result = run_kmeans(x, 2, niter=10, seed=0)
    assert isinstance(result, KMeansResult)
    assert result.labels.dtype == np.int64 and result.distances.dtype == np.float32
    assert result.centroids.dtype == np.float32 and result.centroids.shape == (2, 2)
    labels = result.labels
    assert (
        labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    ), labels
    np.testing.assert_allclose(result.centroids[labels[0]], [0.0, 0.05], atol=1e-6)
    np.testing.assert_allclose(result.centroids[labels[2]], [10.0, 10.05], atol=1e-5)
    np.testing.assert_allclose(result.distances, 0.0025, atol=1e-5)
    assert abs(result.objective - 0.01) < 1e-4, result.objective
    assert result.n_empty_reseeded == 0 and result.iterations == 10


def test_objective_close_to_sklearn_best_of_n_init():
    x, truth = make_blobs(
        2000, n_features=8, centers=5, cluster_std=1.0, random_state=0
    )
    x = x.astype(np.float32)
    reference = KMeans(5, n_init=10, random_state=0).fit(x).inertia_
    for seed in range(3):
        result = run_kmeans(x, 5, niter=50, seed=seed, nredo=10)
        ratio = result.objective / reference
        assert (
            ratio < 1.02
        ), f"seed {seed}: objective {result.objective} vs sklearn {reference}"
        # the objective is the sum of the returned distances, recomputed here in float64
        exact = ((x - result.centroids[result.labels]).astype(np.float64) ** 2).sum()
        assert abs(exact - result.objective) < 1e-4 * exact, (exact, result.objective)
        assert nmi(result.labels, truth) > 0.99


def test_k_larger_than_n_raises():
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"K=11 is larger than the number of samples \(10\)"
    ):
        run_kmeans(x, 11)


@pytest.mark.parametrize(
    "x, k, pattern",
    [
        (np.zeros((5, 2), dtype=np.int64), 2, "floating point"),
        (np.zeros(5, dtype=np.float32), 2, "2-D"),
        (np.zeros((5, 2), dtype=np.float32), 0, "positive integer"),
    ],
)
def test_invalid_inputs_raise(x, k, pattern):
    with pytest.raises(ValueError, match=pattern):
        run_kmeans(x, k)


def test_nan_features_raise():
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="first bad row index: 5"):
        run_kmeans(x, 2)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is visible")
def test_use_gpu_without_gpu_raises():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="use_gpu=True"):
        run_kmeans(x, 2, use_gpu=True)


def test_deterministic_for_a_seed():
    x = np.random.default_rng(1).standard_normal((3000, 16)).astype(np.float32)
    a = run_kmeans(x, 30, niter=10, seed=5)
    b = run_kmeans(x, 30, niter=10, seed=5)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.objective == b.objective


def test_fix_up_splits_largest_cluster_into_empty_one():
    x = np.array(
        [[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0], [1.2, 1.0]], dtype=np.float32
    )
    centroids = np.array([[0.05, 0.0], [100.0, 100.0], [1.1, 1.0]], dtype=np.float32)
    labels, distances = assign_to_centroids(x, centroids)
    np.testing.assert_array_equal(labels, [0, 0, 2, 2, 2])
    new_c, new_labels, new_d, n_reseeded = fix_empty_clusters(
        x, centroids, labels, distances
    )
    assert n_reseeded == 1
    assert num_empty(new_labels, 3) == 0, cluster_sizes(new_labels, 3)
    # Cluster 2 (3 members, the largest) is split along the direction of its
    # farthest member (1.0, 1.0, lowest row among the two at distance 0.1):
    # row 2 moves to the empty cluster 1, rows 3 and 4 stay.
    np.testing.assert_array_equal(new_labels, [0, 0, 1, 2, 2])
    np.testing.assert_allclose(new_c[1], [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(new_c[2], [1.15, 1.0], atol=1e-6)
    np.testing.assert_allclose(new_c[0], centroids[0])
    np.testing.assert_allclose(new_d, [0.0025, 0.0025, 0.0, 0.0025, 0.0025], atol=1e-6)
    # inputs untouched
    np.testing.assert_array_equal(labels, [0, 0, 2, 2, 2])


def test_run_kmeans_reseeds_when_faiss_leaves_clusters_empty():
    # Only 3 distinct points: any K > 3 forces duplicated centroids, and
    # nearest-centroid ties leave the duplicates empty after faiss.
    x = np.repeat(
        np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]], dtype=np.float32), 10, axis=0
    )
    for k in (4, 8):
        result = run_kmeans(x, k, seed=0)
        sizes = cluster_sizes(result.labels, k)
        assert result.n_empty_reseeded >= 1, (k, result.n_empty_reseeded, sizes)
        assert (sizes > 0).all(), (k, sizes)
        assert result.objective == 0.0
    result = run_kmeans(x, 3, seed=0)
    assert result.n_empty_reseeded == 0
    np.testing.assert_array_equal(
        np.sort(cluster_sizes(result.labels, 3)), [10, 10, 10]
    )


def test_k_equals_n_gives_singletons():
    x = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    result = run_kmeans(x, 40, seed=0)
    np.testing.assert_array_equal(cluster_sizes(result.labels, 40), np.ones(40))
    assert result.objective < 1e-8


def test_assign_to_centroids_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    centroids = rng.standard_normal((20, 8)).astype(np.float32)
    labels, distances = assign_to_centroids(x, centroids, batch_size=37)
    assert labels.dtype == np.int64 and distances.dtype == np.float32
    full = (
        (x[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2
    ).sum(-1)
    expected = full.argmin(axis=1)
    ordered = np.sort(full, axis=1)
    clear = ordered[:, 1] - ordered[:, 0] > 1e-4  # ignore float32 near-ties
    assert clear.sum() > 490
    np.testing.assert_array_equal(labels[clear], expected[clear])
    np.testing.assert_allclose(distances, ordered[:, 0], rtol=1e-4, atol=1e-5)


def test_assign_to_centroids_dimension_mismatch_raises():
    x = np.zeros((5, 4), np.float32)
    expected = "centroids have dimension 3 but features have dimension 4"
    with pytest.raises(ValueError, match=expected):
        assign_to_centroids(x, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        assign_to_centroids(x, np.zeros((2, 4), np.float32), batch_size=0)
