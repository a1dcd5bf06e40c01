"""The weighted k-NN of tools/nearest_neighbor_eval.py against a direct reference."""

import numpy as np

from vissl_clusterfit.launch.knn import knn_accuracy


def reference(train_x, train_y, test_x, test_y, k, sigma, l2):
    if l2:
        train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
        test_x = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    top1 = top5 = 0
    for x, y in zip(test_x, test_y):
        sim = train_x @ x
        nearest = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(train_y.max() + 1)
        for i in nearest:
            votes[train_y[i]] += np.exp(sim[i] / sigma)
        ranked = np.argsort(-votes, kind="stable")
        top1 += ranked[0] == y
        top5 += y in ranked[:5]
    return 100.0 * top1 / len(test_y), 100.0 * top5 / len(test_y)


def test_knn_matches_reference():
    rng = np.random.RandomState(0)
    centers = rng.randn(8, 16) * 3
    train_y = rng.randint(0, 8, 300)
    test_y = rng.randint(0, 8, 70)
    train_x = (centers[train_y] + rng.randn(300, 16)).astype(np.float32)
    test_x = (centers[test_y] + rng.randn(70, 16)).astype(np.float32)
    for k, sigma, l2 in ((20, 0.1, True), (5, 1.0, False), (300, 0.07, True)):
        got = knn_accuracy(train_x, train_y, test_x, test_y, k, sigma, l2, chunk=16)
        want = reference(train_x, train_y, test_x, test_y, k, sigma, l2)
        np.testing.assert_allclose(got, want, err_msg=f"k={k} sigma={sigma} l2={l2}")
    top1, _ = knn_accuracy(train_x, train_y, test_x, test_y, 20, 0.1, True)
    assert top1 > 80, top1  # separable classes: the vote works, not just matches
    # a k larger than the training set and fewer than 5 classes are handled
    few = train_y % 3
    got = knn_accuracy(train_x[:10], few[:10], test_x, test_y % 3, 50, 0.1, True)
    want = reference(train_x[:10], few[:10], test_x, test_y % 3, 10, 0.1, True)
    np.testing.assert_allclose(got, want)
