"""Tests for the clustering diagnostics."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from vissl_clusterfit.clustering import (
    ami,
    cluster_metrics,
    cluster_sizes,
    nmi,
    num_empty,
    purity,
)


def test_cluster_sizes_and_num_empty():
    labels = np.array([0, 0, 3, 3, 3, 1])
    np.testing.assert_array_equal(cluster_sizes(labels, 5), [2, 1, 0, 3, 0])
    assert cluster_sizes(labels, 5).dtype == np.int64
    assert num_empty(labels, 5) == 2
    assert num_empty(labels, 4) == 1
    with pytest.raises(
        ValueError, match=r"labels must lie in \[0, k=3\), found range \[0, 3\]"
    ):
        cluster_sizes(labels, 3)
    with pytest.raises(ValueError, match="integer"):
        cluster_sizes(np.array([0.0, 1.0]), 2)


def test_nmi_and_ami_match_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, size=500)
    b = np.where(rng.random(500) < 0.7, a, rng.integers(0, 5, size=500))
    assert nmi(a, b) == normalized_mutual_info_score(a, b)
    assert ami(a, b) == adjusted_mutual_info_score(a, b)
    assert 0.2 < nmi(a, b) < 0.9, nmi(a, b)
    permuted = (a * 3 + 11) % 7  # a relabelling of the same partition
    assert nmi(a, permuted) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="a has 500 entries but b has 499"):
        nmi(a, b[:-1])


def test_purity_hand_example():
    labels = np.array([0, 0, 0, 1, 1, 2])
    truth = np.array([10, 10, 20, 20, 20, 30])
    # cluster 0: majority class 10 (2), cluster 1: class 20 (2), cluster 2: class 30 (1) -> 5 / 6
    assert purity(labels, truth) == pytest.approx(5 / 6)
    assert purity(np.array([7, 7, 7, -1]), np.array([0, 1, 1, 5])) == pytest.approx(
        3 / 4
    )
    assert purity(np.zeros(4, dtype=int), np.array([0, 1, 2, 3])) == pytest.approx(
        1 / 4
    )
    assert purity(np.arange(4), np.zeros(4, dtype=int)) == 1.0
    with pytest.raises(ValueError, match="labels has 3 entries but truth has 4"):
        purity(np.arange(3), np.arange(4))


def test_cluster_metrics_keys_and_values():
    labels = np.array([0, 0, 0, 1, 1, 3])
    truth = np.array([5, 5, 6, 6, 6, 7])
    previous = np.array([1, 1, 1, 0, 0, 2])
    m = cluster_metrics(labels, 4, truth=truth, previous=previous)
    assert set(m) == {
        "num_clusters",
        "num_empty",
        "size_min",
        "size_max",
        "size_mean",
        "size_std",
        "nmi",
        "ami",
        "purity",
        "nmi_previous",
    }
    sizes = np.array([3, 2, 0, 1])
    assert m["num_clusters"] == 4 and m["num_empty"] == 1
    assert (m["size_min"], m["size_max"]) == (0, 3)
    assert m["size_mean"] == pytest.approx(1.5) and m["size_std"] == pytest.approx(
        sizes.std()
    )
    assert m["purity"] == pytest.approx(5 / 6)
    assert m["nmi"] == normalized_mutual_info_score(labels, truth)
    assert m["nmi_previous"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in m.values())
    basic = cluster_metrics(labels, 4)
    assert set(basic) == {
        "num_clusters",
        "num_empty",
        "size_min",
        "size_max",
        "size_mean",
        "size_std",
    }


def test_cluster_metrics_length_mismatch_raises():
    labels = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="labels has 3 entries but truth has 2"):
        cluster_metrics(labels, 2, truth=np.array([0, 1]))
    with pytest.raises(ValueError, match="labels has 3 entries but previous has 4"):
        cluster_metrics(labels, 2, previous=np.array([0, 1, 1, 0]))
