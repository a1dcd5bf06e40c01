"""Two-level k-means of DeeperCluster (Sec. 4.1-4.2): one process, and 2 gloo ranks."""

import os

import numpy as np
import pytest

from tests.clustering.gloo import error_message, run_on_ranks
from vissl_clusterfit.clustering import (
    distributed_hierarchical_kmeans,
    distributed_kmeans,
    hierarchical_kmeans,
    nmi,
    run_kmeans,
)


def _two_level_blobs(per_blob: int = 40, seed: int = 0) -> np.ndarray:
    """3 far-apart groups, each made of 2 closer sub-blobs; rows sorted by group."""
    rng = np.random.RandomState(seed)
    centers = [np.array([100.0 * g, 10.0 * s]) for g in range(3) for s in range(2)]
    return np.concatenate([c + rng.randn(per_blob, 2) for c in centers]).astype(
        np.float32
    )


def _few_rows() -> np.ndarray:
    """Two rows close together and one far away (groups of 2 and 1 rows for m=2)."""
    return np.array([[0.0, 0.0], [0.1, 0.0], [50.0, 50.0]], dtype=np.float32)


@pytest.mark.parametrize("backend", ["faiss", "lloyd"])
def test_two_levels_recover_groups_and_subclusters(backend):
    x = _two_level_blobs()
    true_group = np.repeat(np.arange(3), 80)
    true_code = np.repeat(np.arange(6), 40)
    group, sub = hierarchical_kmeans(
        x, num_groups=3, num_sub=2, seed=0, backend=backend
    )
    assert nmi(group, true_group) == pytest.approx(1.0), nmi(group, true_group)
    assert nmi(group * 2 + sub, true_code) == pytest.approx(1.0)
    assert sub.min() >= 0 and sub.max() <= 1


def test_faiss_levels_train_on_every_row_by_default():
    # 3000 rows, m=2: faiss' default of 256 points per centroid would train level 1
    # on 512 rows. The default must equal faiss asked to use all rows, and the
    # explicit cap must equal faiss' subsampled run.
    x = np.random.default_rng(3).standard_normal((3000, 4)).astype(np.float32)
    group, sub = hierarchical_kmeans(x, num_groups=2, num_sub=3, niter=5, seed=4)
    every_row = run_kmeans(x, 2, niter=5, seed=4, max_points_per_centroid=3000)
    np.testing.assert_array_equal(group, every_row.labels)
    for g in range(2):
        members = np.flatnonzero(group == g)
        ref = run_kmeans(
            x[members], 3, niter=5, seed=4 + 1 + g, max_points_per_centroid=len(members)
        )
        np.testing.assert_array_equal(sub[members], ref.labels)
    capped, _ = hierarchical_kmeans(
        x, num_groups=2, num_sub=3, niter=5, seed=4, max_points_per_centroid=256
    )
    sampled = run_kmeans(x, 2, niter=5, seed=4, max_points_per_centroid=256)
    np.testing.assert_array_equal(capped, sampled.labels)


def test_lloyd_backend_is_distributed_kmeans_per_level():
    x = _two_level_blobs(per_blob=15, seed=1)
    group, sub = hierarchical_kmeans(
        x, num_groups=2, num_sub=4, niter=6, seed=9, backend="lloyd"
    )
    ref_group = distributed_kmeans(x, 2, niter=6, seed=9).labels
    np.testing.assert_array_equal(group, ref_group)
    for g in range(2):
        members = np.flatnonzero(ref_group == g)
        ref_sub = distributed_kmeans(x[members], 4, niter=6, seed=9 + 1 + g).labels
        np.testing.assert_array_equal(sub[members], ref_sub)


@pytest.mark.parametrize("backend", ["faiss", "lloyd"])
def test_small_groups_get_one_sub_cluster_per_row(backend):
    # Level 1 (m=2) must separate {row 0, row 1} from {row 2} whatever the
    # initialisation; with num_sub=5 the 2-row group gets k=2 sub-clusters (one row
    # each) and the 1-row group sub-id 0.
    group, sub = hierarchical_kmeans(
        _few_rows(), num_groups=2, num_sub=5, backend=backend
    )
    assert group[0] == group[1] != group[2], group
    assert sorted(sub[:2].tolist()) == [0, 1], sub
    assert sub[2] == 0, sub


def test_errors():
    x = _few_rows()
    with pytest.raises(ValueError, match=r"NUM_GROUPS=9 is larger than the number of"):
        hierarchical_kmeans(x, num_groups=9, num_sub=2)
    with pytest.raises(ValueError, match="NUM_SUB=0 must be a positive integer"):
        hierarchical_kmeans(x, num_groups=2, num_sub=0)
    with pytest.raises(ValueError, match="unknown hierarchical k-means backend 'sk'"):
        hierarchical_kmeans(x, num_groups=2, num_sub=2, backend="sk")
    with pytest.raises(ValueError, match="only applies to backend='faiss'"):
        hierarchical_kmeans(
            x, num_groups=2, num_sub=2, backend="lloyd", max_points_per_centroid=10
        )
    with pytest.raises(ValueError, match="max_points_per_centroid must be a positive"):
        hierarchical_kmeans(x, num_groups=2, num_sub=2, max_points_per_centroid=0)
    bad = x.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="first bad row index: 1"):
        hierarchical_kmeans(bad, num_groups=2, num_sub=2)
    with pytest.raises(ValueError, match="NUM_GROUPS=4 is larger than the number"):
        distributed_hierarchical_kmeans(x, num_groups=4, num_sub=2)
    with pytest.raises(ValueError, match="process_group was given"):
        distributed_hierarchical_kmeans(x, 2, 2, process_group=object())


# --- 2 gloo ranks -------------------------------------------------------------------

# Uneven split of the group-sorted blobs: rank 0 holds all of group 0 and 20 rows of
# group 1, rank 1 the rest, so each rank has no row at all of one group.
SPLIT = 100
SCENARIOS = {
    "blobs": dict(num_groups=3, num_sub=2, niter=10, seed=0),
    "more_subs": dict(num_groups=2, num_sub=7, niter=10, seed=5),
}


def _worker(rank: int, out_dir: str) -> None:
    x = _two_level_blobs()
    shard = x[:SPLIT] if rank == 0 else x[SPLIT:]
    for name, kwargs in SCENARIOS.items():
        group, sub = distributed_hierarchical_kmeans(shard, **kwargs)
        np.savez(os.path.join(out_dir, f"{name}_{rank}.npz"), group=group, sub=sub)
    few = _few_rows()
    few_shard = few[:1] if rank == 0 else few[1:]  # the 2-row group spans both ranks
    group, sub = distributed_hierarchical_kmeans(few_shard, num_groups=2, num_sub=5)
    np.savez(os.path.join(out_dir, f"few_{rank}.npz"), group=group, sub=sub)
    bad = shard.copy()
    if rank == 1:
        bad[5, 1] = np.inf
    with open(os.path.join(out_dir, f"bad_{rank}.txt"), "w") as f:
        f.write(error_message(lambda: distributed_hierarchical_kmeans(bad, 3, 2)))
    with open(os.path.join(out_dir, f"too_many_{rank}.txt"), "w") as f:
        f.write(error_message(lambda: distributed_hierarchical_kmeans(few_shard, 4, 2)))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("hierarchical"))
    run_on_ranks(_worker, out_dir, 2)
    return out_dir


def _load(out_dir: str, name: str):
    parts = [dict(np.load(os.path.join(out_dir, f"{name}_{r}.npz"))) for r in range(2)]
    return tuple(np.concatenate([p[key] for p in parts]) for key in ("group", "sub"))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_equal_one_process(two_ranks, name):
    x = _two_level_blobs()
    group, sub = _load(two_ranks, name)
    single = hierarchical_kmeans(x, backend="lloyd", **SCENARIOS[name])
    one_rank = distributed_hierarchical_kmeans(x, **SCENARIOS[name])
    for ref in (single, one_rank):
        np.testing.assert_array_equal(group, ref[0])
        np.testing.assert_array_equal(sub, ref[1])
    # the scenario exercises a group with no row on one of the ranks
    on_rank0, on_rank1 = set(group[:SPLIT].tolist()), set(group[SPLIT:].tolist())
    assert on_rank0 != on_rank1, (on_rank0, on_rank1)
    num_sub = SCENARIOS[name]["num_sub"]
    for g in np.unique(group):
        used = np.unique(sub[group == g])
        assert used.tolist() == list(range(num_sub)), (g, used)


def test_two_ranks_blobs_are_recovered(two_ranks):
    group, sub = _load(two_ranks, "blobs")
    assert nmi(group, np.repeat(np.arange(3), 80)) == pytest.approx(1.0)
    assert nmi(group * 2 + sub, np.repeat(np.arange(6), 40)) == pytest.approx(1.0)


def test_two_ranks_small_groups(two_ranks):
    group, sub = _load(two_ranks, "few")
    assert group[0] == group[1] != group[2], group
    assert sorted(sub[:2].tolist()) == [0, 1] and sub[2] == 0, sub
    ref = hierarchical_kmeans(_few_rows(), 2, 5, backend="lloyd")
    np.testing.assert_array_equal(group, ref[0])
    np.testing.assert_array_equal(sub, ref[1])


def test_two_ranks_errors_raise_on_every_rank(two_ranks):
    for r in range(2):
        bad = open(os.path.join(two_ranks, f"bad_{r}.txt")).read()
        # the healthy rank names the bad one, the bad rank names its row
        expected = "on rank(s) [1]" if r == 0 else "first bad local row index: 5"
        assert expected in bad, bad
        too_many = open(os.path.join(two_ranks, f"too_many_{r}.txt")).read()
        assert "NUM_GROUPS=4 is larger than the number of samples (3)" in too_many
