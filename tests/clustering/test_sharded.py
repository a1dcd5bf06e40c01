"""Sharded pre-processing + k-means (DeeperCluster Sec. 4.2): 2 gloo ranks vs 1 process.

Two ranks are spawned once per module; each runs every scenario on its contiguous
block of the data and saves what it got, and the tests compare with one process.
"""

import os

import numpy as np
import pytest

from tests.clustering.gloo import error_message, run_on_ranks
from vissl_clusterfit.clustering import (
    PCAWhitening,
    fit_pca_sharded,
    gather_rows,
    hierarchical_kmeans,
    pca_state_dict,
    preprocess_features,
    sharded_hierarchical_kmeans,
    sharded_kmeans,
)


WORLD_SIZE = 2
SPLIT = 230  # uneven shards on purpose


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 16)) * 4
    x = centers[rng.integers(0, 6, 500)] + rng.standard_normal((500, 16))
    # very different scales per dimension: whitening matters
    return (x * np.linspace(0.1, 10, 16)).astype(np.float32)


SCENARIOS = {
    "plain": dict(k=6, niter=10, seed=1),
    "pca_whiten": dict(k=6, niter=10, seed=2, pca_dim=8, whiten=True),
    "l2_pca_sampled": dict(
        k=6, niter=10, seed=3, pca_dim=8, order="l2_pca", pca_sample_size=300
    ),
    "no_l2": dict(k=6, niter=10, seed=4, l2_norm=False),
}
HIERARCHICAL = dict(
    num_groups=2, num_sub=3, niter=10, seed=6, pca_dim=8, order="l2_pca"
)


def _worker(rank: int, out_dir: str) -> None:
    x = _data()
    shard = x[:SPLIT] if rank == 0 else x[SPLIT:]
    for name, kwargs in SCENARIOS.items():
        res = sharded_kmeans(shard.copy(), inplace=True, **kwargs)
        labels = gather_rows(res.labels)
        np.savez(
            os.path.join(out_dir, f"{name}_{rank}.npz"),
            local=res.labels,
            gathered=labels if labels is not None else np.zeros(0),
            centroids=res.centroids,
            total=res.total,
        )
    hier = sharded_hierarchical_kmeans(shard.copy(), inplace=True, **HIERARCHICAL)
    np.savez(
        os.path.join(out_dir, f"hierarchical_{rank}.npz"),
        group=hier.group,
        sub=hier.sub,
        total=hier.total,
        dim=hier.clustered_dim,
    )
    pca = fit_pca_sharded(shard, 5, whiten=True, sample_size=200, seed=7)
    np.savez(os.path.join(out_dir, f"pca_{rank}.npz"), **pca_state_dict(pca))
    bad = shard.copy()
    if rank == 1:
        bad[3, 2] = np.inf
    with open(os.path.join(out_dir, f"bad_{rank}.txt"), "w") as f:
        f.write(error_message(lambda: sharded_kmeans(bad, k=3)))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("sharded"))
    run_on_ranks(_worker, out_dir, WORLD_SIZE)
    return out_dir


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_give_the_single_process_labels(two_ranks, name):
    single = sharded_kmeans(_data(), **SCENARIOS[name])
    r0, r1 = (
        dict(np.load(os.path.join(two_ranks, f"{name}_{r}.npz"))) for r in range(2)
    )
    assert r0["local"].shape == (SPLIT,) and r1["local"].shape == (500 - SPLIT,)
    assert int(r0["total"]) == 500
    np.testing.assert_array_equal(
        np.concatenate([r0["local"], r1["local"]]), single.labels
    )
    np.testing.assert_array_equal(r0["gathered"], single.labels)  # rank 0 receives all
    assert r1["gathered"].size == 0  # the other rank receives nothing
    np.testing.assert_allclose(r0["centroids"], single.centroids, atol=1e-5)
    np.testing.assert_array_equal(r0["centroids"], r1["centroids"])
    # the clustering is meaningful: the 6 planted groups are found
    assert len(np.unique(single.labels)) == 6


def test_hierarchical_two_ranks_give_the_single_process_labels(two_ranks):
    single = sharded_hierarchical_kmeans(_data(), **HIERARCHICAL)
    parts = [
        dict(np.load(os.path.join(two_ranks, f"hierarchical_{r}.npz")))
        for r in range(2)
    ]
    assert parts[0]["group"].shape == (SPLIT,) and int(parts[0]["total"]) == 500
    assert int(parts[1]["dim"]) == 8 == single.clustered_dim
    np.testing.assert_array_equal(
        np.concatenate([p["group"] for p in parts]), single.group
    )
    np.testing.assert_array_equal(np.concatenate([p["sub"] for p in parts]), single.sub)
    # one process: the same labels as pre-processing then the Lloyd two-level k-means
    x, pca = preprocess_features(_data(), pca_dim=8, order="l2_pca", seed=6)
    np.testing.assert_allclose(single.pca.projection, pca.projection, rtol=1e-6)
    group, sub = hierarchical_kmeans(x, 2, 3, niter=10, seed=6, backend="lloyd")
    np.testing.assert_array_equal(single.group, group)
    np.testing.assert_array_equal(single.sub, sub)
    assert len(np.unique(single.group * 3 + single.sub)) == 6


def test_sharded_pca_equals_pca_on_all_rows(two_ranks):
    ref = PCAWhitening(5, whiten=True).fit(_data(), sample_size=200, seed=7)
    for r in range(2):
        state = dict(np.load(os.path.join(two_ranks, f"pca_{r}.npz")))
        np.testing.assert_allclose(state["mean"], ref.mean, rtol=1e-10)
        np.testing.assert_allclose(
            state["projection"], ref.projection, rtol=1e-6, atol=1e-9
        )


def test_bad_shard_raises_on_every_rank(two_ranks):
    for r in range(2):
        message = open(os.path.join(two_ranks, f"bad_{r}.txt")).read()
        assert "rank(s) [1]" in message, message


def test_single_process_matches_preprocess_features():
    x = _data()
    ref, pca = preprocess_features(x, pca_dim=8, whiten=True, seed=0)
    res = sharded_kmeans(x.copy(), k=6, pca_dim=8, whiten=True, seed=0)
    np.testing.assert_allclose(res.pca.projection, pca.projection, rtol=1e-6, atol=1e-9)
    assert res.clustered_dim == 8 and res.total == 500


def test_inplace_preprocessing_reuses_the_buffer():
    x = _data()
    ref, _ = preprocess_features(x.copy())
    y = x.copy()
    out, _ = preprocess_features(y, inplace=True)
    assert np.shares_memory(out, y)  # no second N x D matrix
    np.testing.assert_array_equal(out, ref)
    z = x.copy()
    out2, _ = preprocess_features(z)  # default: the caller's array is left alone
    np.testing.assert_array_equal(z, x)
    assert not np.shares_memory(out2, z)
