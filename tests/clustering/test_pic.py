"""Tests for Power Iteration Clustering (DeepCluster thesis Sec. 2.4 / 3.2 / 4.6).

The reference semantics (authors' deepcluster ``clustering.py``) are re-stated
here as a dense loop, :func:`_dense_reference_pic`, that the sparse
implementation must reproduce on small graphs.
"""

import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from vissl_clusterfit.clustering import make_knn_graph, nmi, purity, run_pic
from vissl_clusterfit.clustering.pic import (
    _attractor_clusters,
    _power_iteration,
    _relative_affinity,
)
from vissl_clusterfit.clustering.pic_clusters import (
    merge_to_bound as _merge_to_bound,
    redistribute_singletons as _redistribute_singletons,
)


def _three_blobs(seed: int, std: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = np.repeat(np.arange(3), 20)
    x = (centers[truth] + std * rng.standard_normal((60, 2))).astype(np.float32)
    return x, truth


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _graph(n, edges):
    """Symmetric CSR from (i, j, weight) triples."""
    rows = [i for i, j, _ in edges] + [j for i, j, _ in edges]
    cols = [j for i, j, _ in edges] + [i for i, j, _ in edges]
    data = [w for _, _, w in edges] * 2
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def _dense_reference_pic(x, k, sigma, alpha, n_iter, singletons):
    """Reference PIC in plain loops: returns (v, labels numbered by first row)."""
    x = x.astype(np.float64)
    n = len(x)
    d2 = np.array([[((x[i] - x[j]) ** 2).sum() for j in range(n)] for i in range(n)])
    knn = []
    for i in range(n):
        order = [j for j in np.argsort(d2[i], kind="stable") if j != i]
        knn.append(order[:k])
    a = np.zeros((n, n))
    for i in range(n):
        for j in knn[i]:
            a[i, j] = np.exp(-d2[i, j] / sigma**2)
    w = a + a.T
    v = np.full(n, 1.0 / n)
    for _ in range(n_iter):
        v = alpha * (w.T @ v) + (1 - alpha) / n
        v = v / v.sum()
    pointer = list(range(n))
    for i in range(n):
        best = 0.0
        for j in range(n):
            if w[i, j] != 0 and w[i, j] * (v[j] - v[i]) > best:
                best, pointer[i] = w[i, j] * (v[j] - v[i]), j
    root = []
    for i in range(n):
        r = i
        while pointer[r] != r:
            r = pointer[r]
        root.append(r)
    if singletons:
        size = {r: root.count(r) for r in root}
        moved = list(root)
        for i in range(n):
            if size[root[i]] == 1:
                for j in knn[i]:
                    if size[root[j]] > 1:
                        moved[i] = root[j]
                        break
        root = moved
    first = {}
    labels = np.array([first.setdefault(r, len(first)) for r in root])
    return v, labels


# ---------------------------------------------------------------- graph


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


def test_affinity_is_symmetrised_gaussian_hand_example():
    # 1-NN of 0, 1, 3, 6 (sigma 2): 0->1 and 1->0 (d^2 1, mutual: both weights),
    # 3->1 (d^2 4), 6->3 (d^2 9).
    x = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    w_rel, w_max = _relative_affinity(*make_knn_graph(x, 1), sigma=2.0)
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 2 * np.exp(-1 / 4)
    expected[1, 2] = expected[2, 1] = np.exp(-4 / 4)
    expected[2, 3] = expected[3, 2] = np.exp(-9 / 4)
    np.testing.assert_allclose(w_max * w_rel.toarray(), expected, rtol=1e-12)
    # w_max is the largest kernel value; the mutual edge sums two of them
    assert w_max == pytest.approx(np.exp(-1 / 4)) and w_rel.max() == 2.0
    # distances far beyond sigma: absolute weights underflow, relative ones do not
    far = np.array([[0.0], [1e3], [2e3], [3e3]], dtype=np.float32)
    w_rel, w_max = _relative_affinity(*make_knn_graph(far, 1), sigma=0.2)
    assert w_max == 0.0 and w_rel.nnz == 6 and (w_rel.data > 0).all(), w_rel


# ------------------------------------------------------- power iteration


def _v(w, alpha, n_iter):
    u, beta, gamma = _power_iteration(sp.csr_matrix(w), 1.0, alpha, n_iter)
    return beta + gamma * u


def test_power_iteration_hand_example():
    # path 0-1-2, unit weights, alpha 0.5, from v0 = 1/3:
    # v1 ∝ 0.5 * (1, 2, 1)/3 + 0.5/3 ∝ (2, 3, 2); v2 ∝ 0.5 * W v1 + 0.5/3 ∝ (16, 19, 16)
    w = _graph(3, [(0, 1, 1.0), (1, 2, 1.0)])
    np.testing.assert_allclose(_v(w, 0.5, 0), [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(_v(w, 0.5, 1), np.array([2, 3, 2]) / 7, rtol=1e-15)
    np.testing.assert_allclose(_v(w, 0.5, 2), np.array([16, 19, 16]) / 51, rtol=1e-15)
    # the walk gets alpha, the restart 1 - alpha: a small alpha stays near uniform
    v = _v(w, 0.001, 200)
    assert v[1] - v[0] == pytest.approx(0.001 / 3, rel=0.01), v


@pytest.mark.parametrize("alpha,n_iter", [(0.001, 200), (0.3, 7), (0.9, 50)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_iteration_matches_dense_reference(seed, alpha, n_iter):
    x = np.random.default_rng(seed).uniform(0, 1, (7, 2)).astype(np.float32)
    v_ref, _ = _dense_reference_pic(x, 2, 0.5, alpha, n_iter, singletons=False)
    w_rel, w_max = _relative_affinity(*make_knn_graph(x, 2), sigma=0.5)
    u, beta, gamma = _power_iteration(w_rel, w_max, alpha, n_iter)
    # float32 distances in the implementation against float64 in the loop
    # bound the agreement; v - v[0] is what the climbing rule sees
    np.testing.assert_allclose(beta + gamma * u, v_ref, rtol=1e-6)
    np.testing.assert_allclose(gamma * (u - u[0]), v_ref - v_ref[0], rtol=1e-5)


def test_power_iteration_keeps_weights_far_below_float_precision():
    # One close pair (d^2 0.01) and nodes 1.4-1.9 apart: with sigma 0.2 their
    # weights are exp(-50) to exp(-90) of the pair's, so their differences in v
    # are ~1e-26, below float64's resolution of v ~ 1/6 (and of the centred
    # v - 1/N, whose scale the close pair sets). 100-digit decimals hold them.
    x = np.array([[0.0], [0.1], [2.0], [3.45], [4.85], [6.3]], dtype=np.float32)
    sigma, n, n_iter = 0.2, 6, 30
    indices, d2 = make_knn_graph(x, 2)
    w_rel, w_max = _relative_affinity(indices, d2, sigma)
    u, beta, gamma = _power_iteration(w_rel, w_max, 0.001, n_iter)
    with localcontext() as ctx:
        ctx.prec = 100
        w = [[Decimal(0)] * n for _ in range(n)]
        for i in range(n):
            for j, d in zip(indices[i], d2[i]):
                a = (-Decimal(float(d)) / Decimal(sigma) ** 2).exp()
                w[i][j] += a
                w[j][i] += a
        v = [Decimal(1) / n] * n
        for _ in range(n_iter):
            v = [
                Decimal("0.001") * sum(w[j][i] * v[j] for j in range(n))
                + Decimal("0.999") / n
                for i in range(n)
            ]
            total = sum(v)
            v = [vi / total for vi in v]
        exact = np.array([float(vi - v[2]) for vi in v])
    np.testing.assert_allclose(gamma * (u - u[2]), exact, rtol=1e-6)
    far = np.abs(exact[3:])
    assert (far > 0).all() and far.max() < 1e-20, exact


# ------------------------------------------------------------- climbing


def test_attractor_clusters_hand_example():
    # path 0-1-2-3-4: 0 -> 1 -> 2 (local max), 3 -> 4 (max of its neighbours 2 and 4)
    graph = _graph(5, [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 1.0), (3, 4, 1.0)])
    v = np.array([1.0, 2.0, 3.0, 2.0, 5.0])
    np.testing.assert_array_equal(_attractor_clusters(graph, v), [0, 0, 0, 1, 1])
    # an isolated node is its own cluster
    graph = _graph(3, [(0, 1, 1.0)])
    np.testing.assert_array_equal(
        _attractor_clusters(graph, np.array([1.0, 2.0, 0.5])), [0, 0, 1]
    )


def test_attractor_climbs_on_weighted_gain_not_on_value():
    # node 0: to 1 gains 0.1 * (5 - 1) = 0.4, to 2 gains 1.0 * (4 - 1) = 3.0, so
    # it joins 2 although v_1 > v_2 (a climb on v_j alone would pick 1)
    graph = _graph(3, [(0, 1, 0.1), (0, 2, 1.0)])
    v = np.array([1.0, 5.0, 4.0])
    # labels are numbered by their root's row: root 1 -> 0, root 2 -> 1
    np.testing.assert_array_equal(_attractor_clusters(graph, v), [1, 0, 1])
    # equal gains: the lowest column wins, whatever order the row is stored in
    graph = _graph(3, [(0, 2, 1.0), (0, 1, 1.0)])
    np.testing.assert_array_equal(
        _attractor_clusters(graph, np.array([0.0, 1.0, 1.0])), [0, 0, 1]
    )
    # a zero weight is no climb, as W_ij (v_j - v_i) = 0
    graph = _graph(2, [(0, 1, 0.0)])
    np.testing.assert_array_equal(
        _attractor_clusters(graph, np.array([0.0, 1.0])), [0, 1]
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("singletons", [False, True])
def test_run_pic_matches_dense_reference(seed, singletons):
    x = np.random.default_rng(seed).uniform(0, 1, (8, 2)).astype(np.float32)
    _, expected = _dense_reference_pic(x, 2, 0.3, 0.001, 200, singletons)
    labels = run_pic(x, n_neighbors=2, sigma=0.3, distribute_singletons=singletons)
    np.testing.assert_array_equal(labels, expected, err_msg=f"seed {seed}")


# ----------------------------------------------------- singletons, bound


def test_redistribute_singletons_hand_example():
    # clusters {0, 1}, {2}, {3}, {4}, {5, 6}. 2: nearest 3 is a singleton, next
    # 1 is not, so 2 joins {0, 1}. 3: nearest 2 counts as a singleton (every
    # decision uses the input labels, as the reference does), so 3 joins 5's
    # cluster, not 2's new one. 4: both neighbours are singletons, it stays one.
    labels = np.array([0, 0, 1, 2, 3, 4, 4])
    indices = np.array([[1, 2], [0, 2], [3, 1], [2, 5], [2, 3], [6, 0], [5, 0]])
    np.testing.assert_array_equal(
        _redistribute_singletons(labels, indices), [0, 0, 0, 4, 3, 4, 4]
    )
    no_singles = np.array([0, 0, 1, 1, 1, 2, 2])
    assert _redistribute_singletons(no_singles, indices) is no_singles


def test_merge_to_bound_hand_example():
    # clusters {0,1,2} {3,4} {5} {6}; 5 touches cluster 0 (0.2) and 1 (0.5);
    # 6 has no edge to another cluster and sits next to cluster 0's mean.
    labels = np.array([0, 0, 0, 1, 1, 2, 3])
    w = _graph(
        7,
        [(0, 1, 1.0), (1, 2, 1.0), (3, 4, 1.0), (1, 4, 0.3), (5, 0, 0.2), (5, 3, 0.5)],
    )
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [3.0], [0.5]], dtype=np.float32)
    v = np.zeros(7)
    # 4 clusters -> 3: the smallest, lowest id, is {5}: strongest link is cluster 1
    np.testing.assert_array_equal(
        _merge_to_bound(labels, w, x, v, 3), [0, 0, 0, 1, 1, 1, 3]
    )
    # -> 2: then {6}, no edge: nearest mean (0.1 vs 4.37) is cluster 0
    np.testing.assert_array_equal(
        _merge_to_bound(labels, w, x, v, 2), [0, 0, 0, 1, 1, 1, 0]
    )
    # -> 1: cluster 1 (size 3) merges into cluster 0 (size 4), summed link 0.5
    np.testing.assert_array_equal(_merge_to_bound(labels, w, x, v, 1), [0] * 7)
    assert _merge_to_bound(labels, w, x, v, 4) is labels


def test_merge_to_bound_order_and_running_means():
    # as above plus an isolated node 7 at 2.0; equal sizes merge lowest peak
    # of v first: {6} (v 0), then {5} (v 1), then {7} (v 2).
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 4])
    w = _graph(
        8,
        [(0, 1, 1.0), (1, 2, 1.0), (3, 4, 1.0), (1, 4, 0.3), (5, 0, 0.2), (5, 3, 0.5)],
    )
    x = np.array([[0, 0.1, 0.2, 5, 5.1, 3, 0.5, 2]], dtype=np.float32).T
    v = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 2.0])
    # {6} -> cluster 0 (nearest mean); {5} -> cluster 1 (link 0.5 > 0.2); {7}:
    # means are now 0.2 and 13.1 / 3 = 4.37, so cluster 0 (a mean not updated
    # by the edge merge, 10.1 / 3 = 3.37, would pull it to cluster 1)
    np.testing.assert_array_equal(
        _merge_to_bound(labels, w, x, v, 2), [0, 0, 0, 1, 1, 1, 0, 0]
    )
    # one merge: the lowest peak, {6}, not the lowest id, {5}
    np.testing.assert_array_equal(
        _merge_to_bound(labels, w, x, v, 4), [0, 0, 0, 1, 1, 2, 0, 4]
    )
    v[5] = -1.0
    np.testing.assert_array_equal(
        _merge_to_bound(labels, w, x, v, 4), [0, 0, 0, 1, 1, 1, 3, 4]
    )


# -------------------------------------------------------------- at scale


@pytest.fixture(scope="module")
def gauss_5000():
    return _l2(np.random.default_rng(0).standard_normal((5000, 64)))


def test_pic_on_5000_unstructured_points(gauss_5000):
    # the thesis setting (5 NN, sigma 0.2, L2-normalised) on structureless data
    raw = run_pic(gauss_5000, distribute_singletons=False)
    labels = run_pic(gauss_5000)
    for lab in (raw, labels):
        c = int(lab.max()) + 1
        assert lab.dtype == np.int64 and lab.shape == (5000,)
        np.testing.assert_array_equal(np.unique(lab), np.arange(c))
    raw_sizes, sizes = np.bincount(raw), np.bincount(labels)
    assert (raw_sizes == 1).sum() > 0, "expected PIC to leave singletons here"
    assert (sizes == 1).sum() == 0, f"{(sizes == 1).sum()} singletons left"
    assert labels.max() + 1 == raw.max() + 1 - (raw_sizes == 1).sum()
    # far more clusters than a head of 100: the bound brings it to exactly 100
    assert labels.max() + 1 > 100, labels.max() + 1
    bounded = run_pic(gauss_5000, max_clusters=100)
    np.testing.assert_array_equal(np.unique(bounded), np.arange(100))
    # merging only joins whole clusters: every unbounded cluster lies in one
    assert purity(labels, bounded) == 1.0


def test_pic_on_5000_point_blobs():
    rng = np.random.default_rng(1)
    centers = 3.0 * rng.standard_normal((10, 64))
    truth = np.repeat(np.arange(10), 500)
    x = _l2(centers[truth] + 0.3 * rng.standard_normal((5000, 64)))
    labels = run_pic(x)
    # PIC over-segments (basins of the weighted degree) but never crosses blobs
    assert purity(labels, truth) == 1.0
    assert 10 <= labels.max() + 1 <= 200, labels.max() + 1
    bounded = run_pic(x, max_clusters=10)
    score = nmi(bounded, truth)
    assert bounded.max() + 1 == 10 and score > 0.99, score


def test_pic_recovers_three_blobs_with_a_bound():
    for seed in range(3):
        x, truth = _three_blobs(seed)
        labels = run_pic(x, n_neighbors=10, sigma=0.5, max_clusters=3)
        ari = adjusted_rand_score(truth, labels)
        assert labels.max() + 1 == 3 and ari == 1.0, (seed, ari)


def test_pic_default_parameters_never_merge_components():
    # Thesis parameters on blobs at the thesis scale: a cluster never spans
    # two blobs, since pointers and redistribution only follow graph edges.
    for seed in range(5):
        x, truth = _three_blobs(seed, std=0.06)
        x /= 5.0
        labels = run_pic(x)
        n_clusters = labels.max() + 1
        np.testing.assert_array_equal(np.unique(labels), np.arange(n_clusters))
        assert purity(labels, truth) == 1.0, (seed, labels)
        assert 3 <= n_clusters <= 15, (seed, n_clusters)


# ---------------------------------------------------- determinism, errors


def test_pic_is_deterministic(gauss_5000):
    x = gauss_5000[:2000]
    first = run_pic(x, seed=4, max_clusters=50)
    np.testing.assert_array_equal(first, run_pic(x, seed=4, max_clusters=50))
    # the reference variant has no randomness: the seed does not matter
    np.testing.assert_array_equal(first, run_pic(x, seed=5, max_clusters=50))
    # nor does the row order, up to the numbering of the clusters
    perm = np.random.default_rng(0).permutation(len(x))
    shuffled = run_pic(x[perm], max_clusters=50)
    assert adjusted_rand_score(first[perm], shuffled) == 1.0


def test_pic_invalid_parameters_raise():
    x, _ = _three_blobs(0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        run_pic(x, sigma=0.0)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="alpha"):
            run_pic(x, alpha=alpha)
    with pytest.raises(ValueError, match="n_iter"):
        run_pic(x, n_iter=-1)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="max_clusters"):
            run_pic(x, max_clusters=bad)
    with pytest.raises(ValueError, match="n_neighbors"):
        run_pic(x, n_neighbors=60)


def test_pic_warns_when_sigma_does_not_fit_the_distances():
    # 1-NN squared distances 1, 1, 81, 100, 100 against sigma^2 = 0.04: the
    # last three are exp(-2000) of the first, below float64, and are lost
    x = np.array([[0.0], [1.0], [10.0], [20.0], [30.0]], dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="6 of 8 k-NN edge weights"):
        run_pic(x, n_neighbors=1)
    # raw 16-d blobs, squared neighbour distances 1.5 to 8.8: relative weights
    # down to exp(-184) are kept and every node can climb, so there are no
    # singletons even without redistribution
    rng = np.random.RandomState(0)
    x = 0.5 * np.concatenate([rng.randn(30, 16) + 8 * i for i in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = run_pic(x.astype(np.float32), distribute_singletons=False)
    assert np.bincount(labels).min() > 1, np.bincount(labels)
