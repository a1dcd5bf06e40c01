"""Tests for Power Iteration Clustering (DeepCluster thesis Sec. 2.4 / 3.2 / 4.6)."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from vissl_clusterfit.clustering import make_knn_graph, purity, run_pic
from vissl_clusterfit.clustering.pic import _attractor_clusters


def _three_blobs(seed: int, std: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = np.repeat(np.arange(3), 20)
    x = (centers[truth] + std * rng.standard_normal((60, 2))).astype(np.float32)
    return x, truth


def test_knn_graph_hand_example():
    x = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    indices, distances = make_knn_graph(x, 1)
    np.testing.assert_array_equal(indices, [[1], [0], [1], [2]])
    np.testing.assert_allclose(distances, [[1.0], [1.0], [4.0], [9.0]])
    indices, distances = make_knn_graph(x, 2)
    np.testing.assert_array_equal(indices, [[1, 2], [0, 2], [1, 0], [2, 1]])
    np.testing.assert_allclose(distances, [[1, 9], [1, 4], [4, 9], [9, 25]])
    assert indices.dtype == np.int64 and distances.dtype == np.float32


def test_knn_graph_excludes_self_with_duplicates():
    x = np.array([[0.0, 0.0]] * 4 + [[1.0, 0.0]] * 3, dtype=np.float32)
    indices, _ = make_knn_graph(x, 3)
    assert not (indices == np.arange(7)[:, None]).any(), indices
    expected = "n_neighbors=7 must be smaller than the number of samples N=7"
    with pytest.raises(ValueError, match=expected):
        make_knn_graph(x, 7)


def test_attractor_clusters_hand_example():
    # path 0-1-2-3-4: 0 -> 1 -> 2 (local max), 3 -> 4 (max of its neighbours 2 and 4)
    edges = [(0, 1), (1, 2), (2, 3), (3, 4)]
    rows = [a for a, b in edges] + [b for a, b in edges]
    cols = [b for a, b in edges] + [a for a, b in edges]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(5, 5))
    v = np.array([1.0, 2.0, 3.0, 2.0, 5.0])
    np.testing.assert_array_equal(_attractor_clusters(graph, v), [0, 0, 0, 1, 1])
    # an isolated node is its own cluster
    graph = sp.csr_matrix((np.ones(2), ([0, 1], [1, 0])), shape=(3, 3))
    np.testing.assert_array_equal(
        _attractor_clusters(graph, np.array([1.0, 2.0, 0.5])), [0, 0, 1]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pic_recovers_three_blobs(seed):
    x, truth = _three_blobs(seed)
    labels = run_pic(x, n_neighbors=10, sigma=0.5)
    ari = adjusted_rand_score(truth, labels)
    assert (
        labels.max() + 1 == 3 and ari == 1.0
    ), f"{labels.max() + 1} clusters, ARI {ari}"


def test_pic_default_parameters_never_merge_components():
    # Thesis parameters (5 neighbours, sigma 0.2) on blobs of the same shape
    # at the thesis scale: PIC may over-segment but a cluster never spans two
    # blobs, since pointers only follow graph edges.
    for seed in range(5):
        x, truth = _three_blobs(seed, std=0.06)
        x /= 5.0
        labels = run_pic(x)
        n_clusters = labels.max() + 1
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(np.unique(labels), np.arange(n_clusters))
        assert purity(labels, truth) == 1.0, (seed, labels)
        assert 3 <= n_clusters <= 10, (seed, n_clusters)


def test_pic_is_deterministic_for_a_seed():
    x, _ = _three_blobs(3)
    np.testing.assert_array_equal(run_pic(x, seed=4), run_pic(x, seed=4))


def test_pic_invalid_parameters_raise():
    x, _ = _three_blobs(0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        run_pic(x, sigma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        run_pic(x, alpha=1.0)
    far = np.array([[0.0], [1e3], [2e3], [3e3]], dtype=np.float32)
    with pytest.raises(ValueError, match="underflow"):
        run_pic(far, n_neighbors=1, sigma=0.2)
