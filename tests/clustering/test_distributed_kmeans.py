"""Tests for the distributed k-means of DeeperCluster Sec. 4.2.

The multi-process tests spawn 2 gloo ranks on localhost once per module; each
rank runs every scenario below on its shard and saves its result, and the
tests compare the concatenated shards with a single-process run.
"""

import os
from dataclasses import asdict
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from tests.clustering.gloo import error_message, run_on_ranks
from vissl_clusterfit.clustering import cluster_sizes, distributed_kmeans, nmi


WORLD_SIZE = 2
K = 12


def _random_data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)


def _blobs() -> Tuple[np.ndarray, np.ndarray]:
    x, truth = make_blobs(
        1000, n_features=2, centers=4, cluster_std=0.5, random_state=0
    )
    return x.astype(np.float32), truth


def _forced_empty_init(x: np.ndarray) -> np.ndarray:
    # Rows 0 and 1 duplicated and one centroid far from all data: the
    # duplicate and the far one get no point at the first assignment.
    init = x[:K].copy()
    init[1] = init[0]
    init[2] = 1e3
    return init


# name -> (data, split point, kwargs); built identically in every process.
def _scenarios() -> Dict[str, Tuple[np.ndarray, int, dict]]:
    x = _random_data()
    blobs, _ = _blobs()
    return {
        "given_init": (
            x,
            500,
            dict(k=K, niter=15, init_centroids=x[100 : 100 + K].copy()),
        ),
        "seeded_init": (x, 500, dict(k=K, niter=15, seed=3)),
        "uneven_shards": (x, 137, dict(k=K, niter=15, seed=4)),
        "empty_in_loop": (
            x,
            500,
            dict(k=K, niter=5, init_centroids=_forced_empty_init(x)),
        ),
        "empty_final": (
            x,
            500,
            dict(k=K, niter=0, init_centroids=_forced_empty_init(x)),
        ),
        "blobs": (blobs, 500, dict(k=4, niter=50, seed=3)),
    }


def _worker(rank: int, out_dir: str) -> None:
    for name, (x, split, kwargs) in _scenarios().items():
        shard = x[:split] if rank == 0 else x[split:]
        result = distributed_kmeans(shard, **kwargs)
        # Every field of the KMeansResult, as one .npz per scenario and rank.
        np.savez(os.path.join(out_dir, f"{name}_{rank}.npz"), **asdict(result))
    # Invalid K must raise on every rank instead of deadlocking.
    message = error_message(
        lambda: distributed_kmeans(
            _random_data()[:5] if rank == 0 else _random_data()[5:9], k=10
        )
    )
    with open(os.path.join(out_dir, f"k_too_large_{rank}.txt"), "w") as f:
        f.write(message)
    # A NaN on one rank only must raise on both.
    shard = _random_data()[:50].copy()
    if rank == 1:
        shard[3, 0] = np.nan
    with open(os.path.join(out_dir, f"nan_{rank}.txt"), "w") as f:
        f.write(error_message(lambda: distributed_kmeans(shard, k=2)))


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("dist_kmeans"))
    run_on_ranks(_worker, out_dir, WORLD_SIZE)
    return out_dir


def _load(out_dir: str, name: str):
    return [
        dict(np.load(os.path.join(out_dir, f"{name}_{r}.npz")))
        for r in range(WORLD_SIZE)
    ]


@pytest.mark.parametrize(
    "name",
    ["given_init", "seeded_init", "uneven_shards", "empty_in_loop", "empty_final"],
)
def test_two_ranks_equal_single_process(two_rank_results, name):
    x, _, kwargs = _scenarios()[name]
    single = distributed_kmeans(x, **kwargs)
    ranks = _load(two_rank_results, name)
    labels = np.concatenate([r["labels"] for r in ranks])
    distances = np.concatenate([r["distances"] for r in ranks])
    np.testing.assert_array_equal(
        labels, single.labels, err_msg=f"{name}: labels differ"
    )
    for r in ranks:
        np.testing.assert_allclose(
            r["centroids"], single.centroids, rtol=1e-5, atol=1e-5
        )
        assert float(r["objective"]) == pytest.approx(single.objective, rel=1e-9)
        assert int(r["n_empty_reseeded"]) == single.n_empty_reseeded
        assert int(r["iterations"]) == single.iterations
    np.testing.assert_array_equal(ranks[0]["centroids"], ranks[1]["centroids"])
    np.testing.assert_allclose(distances, single.distances, rtol=1e-5, atol=1e-6)
    sizes = cluster_sizes(labels, kwargs["k"])
    assert (sizes > 0).all(), f"{name}: empty clusters {sizes}"


def test_forced_empty_clusters_are_reseeded(two_rank_results):
    final = _load(two_rank_results, "empty_final")
    # niter=0: the two empty clusters of the initial assignment are fixed at the end.
    assert int(final[0]["n_empty_reseeded"]) == 2, final[0]["n_empty_reseeded"]
    in_loop = _load(two_rank_results, "empty_in_loop")
    # re-seeded during the iterations already, nothing left for the final fix-up
    assert int(in_loop[0]["n_empty_reseeded"]) == 0


def test_two_ranks_cluster_blobs(two_rank_results):
    _, truth = _blobs()
    ranks = _load(two_rank_results, "blobs")
    labels = np.concatenate([r["labels"] for r in ranks])
    score = nmi(labels, truth)
    assert score > 0.95, f"NMI {score} on 4 separated blobs"


def test_errors_raise_on_every_rank(two_rank_results):
    for r in range(WORLD_SIZE):
        with open(os.path.join(two_rank_results, f"k_too_large_{r}.txt")) as f:
            message = f.read()
        assert "K=10 is larger than the number of samples (9)" in message, message
    with open(os.path.join(two_rank_results, "nan_0.txt")) as f:
        message = f.read()
    assert "on rank(s) [1]" in message, message
    with open(os.path.join(two_rank_results, "nan_1.txt")) as f:
        message = f.read()
    assert "NaN" in message and "first bad local row index: 3" in message, message


def _numpy_lloyd(
    x: np.ndarray, init: np.ndarray, niter: int
) -> Tuple[np.ndarray, np.ndarray]:
    centroids = init.astype(np.float64)
    x64 = x.astype(np.float64)
    for _ in range(niter):
        labels = ((x64[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        for c in range(len(centroids)):
            assert (labels == c).any()
            centroids[c] = x64[labels == c].mean(0)
    labels = ((x64[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return labels, centroids


def test_single_process_matches_numpy_lloyd():
    x = _random_data()
    init = x[100 : 100 + K]
    result = distributed_kmeans(x, K, niter=8, init_centroids=init)
    labels, centroids = _numpy_lloyd(x, init, result.iterations)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.centroids, centroids, rtol=1e-5, atol=1e-6)
    exact = ((x.astype(np.float64) - centroids[labels]) ** 2).sum(1)
    np.testing.assert_allclose(result.distances, exact, rtol=1e-5)
    assert result.objective == pytest.approx(exact.sum(), rel=1e-6)


def test_single_process_hand_example_and_early_stop():
    x = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 10.0], [10.0, 10.1]], dtype=np.float32)
    result = distributed_kmeans(x, 2, niter=20, init_centroids=x[[0, 2]])
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1])
    np.testing.assert_allclose(
        result.centroids, [[0.0, 0.05], [10.0, 10.05]], atol=1e-6
    )
    # the labels never change after the first update: stops at a fixed point
    assert result.iterations == 1, result.iterations
    assert result.n_empty_reseeded == 0


def test_seeded_init_picks_global_rows_and_is_deterministic():
    x = _random_data()
    a = distributed_kmeans(x, K, niter=0, seed=11)
    b = distributed_kmeans(torch.from_numpy(x), K, niter=0, seed=11)
    rows = np.random.default_rng(11).choice(len(x), size=K, replace=False)
    np.testing.assert_array_equal(a.centroids, x[rows])
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_single_process_validation():
    x = _random_data()[:10]
    with pytest.raises(
        ValueError, match=r"K=11 is larger than the number of samples \(10\)"
    ):
        distributed_kmeans(x, 11)
    bad = x.copy()
    bad[4, 2] = np.inf
    with pytest.raises(ValueError, match="first bad local row index: 4"):
        distributed_kmeans(bad, 2)
    expected = r"init_centroids has shape \(2, 8\), expected \(K=3, D=8\)"
    with pytest.raises(ValueError, match=expected):
        distributed_kmeans(x, 3, init_centroids=x[:2])
    with pytest.raises(ValueError, match="2-D"):
        distributed_kmeans(x[0], 1)
    with pytest.raises(ValueError, match="process_group was given"):
        distributed_kmeans(x, 2, process_group=object())
