"""ClusterFit's label-aware baselines (Sec. 4 prototype, Sec. 5.2 per-label), by hand."""

import numpy as np
import pytest

from vissl_clusterfit.clustering import (
    per_label_clustering,
    prototype_labels,
    sqrt_clusters,
)


def _points(xs) -> np.ndarray:
    """1-D positions as (N, 2) float32 rows on the x axis."""
    return np.array([[v, 0.0] for v in xs], dtype=np.float32)


def test_prototypes_by_hand():
    # class 0 = {0, 2} -> prototype 1; class 1 = {10, 4} -> prototype 7.
    # Row 4 is 3 away from both prototypes: the tie goes to class 0.
    x = _points([0.0, 2.0, 10.0, 4.0])
    res = prototype_labels(x, np.array([0, 0, 1, 1]), num_classes=2)
    np.testing.assert_array_equal(res.centroids, [[1.0, 0.0], [7.0, 0.0]])
    np.testing.assert_array_equal(res.labels, [0, 0, 1, 0])
    np.testing.assert_array_equal(res.distances, [1.0, 1.0, 9.0, 9.0])
    np.testing.assert_array_equal(res.classes, [0, 1])
    np.testing.assert_array_equal(res.k_per_label, [1, 1])
    assert res.labels.dtype == np.int64


def test_prototypes_move_rows_to_the_nearer_class():
    # class 0 = {0, 1, 9} -> 10/3; class 1 = {11, 12} -> 11.5: row 9 is 5.67 from
    # its own prototype and 2.5 from class 1's, so it moves to class 1.
    x = _points([0.0, 1.0, 9.0, 11.0, 12.0])
    res = prototype_labels(x, np.array([0, 0, 0, 1, 1]), num_classes=2)
    np.testing.assert_array_equal(res.labels, [0, 0, 1, 1, 1])
    np.testing.assert_allclose(res.centroids[:, 0], [10.0 / 3.0, 11.5], rtol=1e-6)
    np.testing.assert_allclose(
        res.distances, [(10 / 3) ** 2, (7 / 3) ** 2, 2.5**2, 0.25, 0.25], rtol=1e-6
    )


def test_prototype_errors():
    x = _points([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"1 of 3 classes have no row, e.g. \[2\]"):
        prototype_labels(x, np.array([0, 0, 1, 1]), num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, num_classes=2\), found 5"):
        prototype_labels(x, np.array([0, 1, 5, 1]), num_classes=2)
    with pytest.raises(ValueError, match="one entry per feature row"):
        prototype_labels(x, np.array([0, 1, 1]), num_classes=2)
    with pytest.raises(ValueError, match="integer class ids"):
        prototype_labels(x, np.array([0.0, 1.0, 1.0, 0.0]), num_classes=2)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        prototype_labels(x, np.array([0, -1, 1, 0]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes=0 must be a positive integer"):
        prototype_labels(x, np.array([0, 0, 0, 0]), num_classes=0)


@pytest.mark.parametrize(
    "n, k",
    [(1, 1), (2, 1), (3, 2), (4, 2), (6, 2), (7, 3), (12, 3), (13, 4), (100, 10)],
)
def test_sqrt_clusters(n, k):
    assert sqrt_clusters(n) == k, (n, sqrt_clusters(n), n**0.5)


def _per_label_data():
    # class 0: {0, 1} and {10, 11} (n=4 -> k=2); class 1: {100} (k=1);
    # class 2: absent; class 3: {50, 52} (n=2 -> k=1). Rows interleaved on purpose.
    x = _points([10.0, 100.0, 0.0, 50.0, 11.0, 52.0, 1.0])
    labels = np.array([0, 1, 0, 3, 0, 3, 0])
    return x, labels


def test_per_label_by_hand():
    x, labels = _per_label_data()
    res = per_label_clustering(x, labels, niter=10, seed=0)
    np.testing.assert_array_equal(res.classes, [0, 1, 3])
    np.testing.assert_array_equal(res.k_per_label, [2, 1, 1])
    # class 0 owns ids {0, 1}: {0, 1} one cluster, {10, 11} the other
    low, high = res.labels[2], res.labels[0]
    assert {int(low), int(high)} == {0, 1}, res.labels
    np.testing.assert_array_equal(res.labels, [high, 2, low, 3, high, 3, low])
    assert res.centroids.shape == (4, 2)
    np.testing.assert_allclose(res.centroids[low], [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(res.centroids[high], [10.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(
        res.centroids[2:], [[100.0, 0.0], [51.0, 0.0]], atol=1e-6
    )
    np.testing.assert_allclose(
        res.distances, [0.25, 0.0, 0.25, 1.0, 0.25, 1.0, 0.25], atol=1e-5
    )


def test_per_label_custom_k():
    x, labels = _per_label_data()
    res = per_label_clustering(x, labels, k_per_label=lambda n: n, niter=10)
    np.testing.assert_array_equal(res.k_per_label, [4, 1, 2])
    # one cluster per row: class 0 -> a permutation of 0..3, class 1 -> 4, class 3 -> 5, 6
    assert sorted(res.labels[labels == 0].tolist()) == [0, 1, 2, 3], res.labels
    assert res.labels[1] == 4
    assert sorted(res.labels[labels == 3].tolist()) == [5, 6], res.labels
    np.testing.assert_allclose(res.distances, 0.0, atol=1e-6)
    np.testing.assert_allclose(res.centroids[res.labels], x, atol=1e-6)


def test_per_label_errors():
    x, labels = _per_label_data()
    with pytest.raises(
        ValueError,
        match=r"k_per_label for class 0=5 is larger than the number of samples \(4\)",
    ):
        per_label_clustering(x, labels, k_per_label=lambda n: n + 1)
    with pytest.raises(
        ValueError, match="k_per_label for class 0=0 must be a positive"
    ):
        per_label_clustering(x, labels, k_per_label=lambda n: 0)
    with pytest.raises(ValueError, match="one entry per feature row"):
        per_label_clustering(x, labels[:3])
    with pytest.raises(ValueError, match="max_points_per_centroid must be >= 1"):
        per_label_clustering(x, labels, max_points_per_centroid=0)
