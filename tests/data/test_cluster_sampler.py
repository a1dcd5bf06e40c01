"""UniformClusterSampler: DeepCluster's batches sampled uniformly over clusters (thesis,
Sec. 3.2-3.3), split across ranks."""

from collections import Counter

import numpy as np
import pytest

from vissl_clusterfit.data.cluster_sampler import UniformClusterSampler


# skewed: cluster 0 dominates, 3 and 5 are tiny, 2 and 4 are empty, -1 marks ignored samples
SKEWED = np.array([0] * 300 + [1] * 40 + [3] * 2 + [5] * 1 + [6] * 17 + [-1] * 40)


def _cluster_counts(sampler: UniformClusterSampler, labels: np.ndarray) -> Counter:
    return Counter(labels[i] for i in sampler)


@pytest.mark.parametrize("num_samples", [None, 250, 1003])
def test_each_nonempty_cluster_drawn_equally_often(num_samples):
    s = UniformClusterSampler(SKEWED, num_samples=num_samples, seed=3)
    counts = _cluster_counts(s, SKEWED)
    total = num_samples or len(SKEWED)
    assert len(s) == total and sum(counts.values()) == total
    assert set(counts) == {
        0,
        1,
        3,
        5,
        6,
    }, counts  # empty clusters 2, 4 and -1 never drawn
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_small_clusters_repeat_evenly_large_ones_without_replacement():
    s = UniformClusterSampler(SKEWED, seed=1)  # 400 draws over 5 clusters: 80 each
    drawn = Counter(iter(s))
    tiny = np.flatnonzero(SKEWED == 3)
    assert sorted(drawn[i] for i in tiny) == [40, 40], drawn
    big = np.flatnonzero(SKEWED == 0)
    assert max(drawn[i] for i in big) == 1  # 80 of 300 distinct members
    assert all(drawn[i] == 0 for i in np.flatnonzero(SKEWED == -1))


def test_deterministic_for_a_seed_and_changes_with_epoch_and_seed():
    a, b = UniformClusterSampler(SKEWED, seed=5), UniformClusterSampler(SKEWED, seed=5)
    first = list(a)
    assert first == list(b) == list(a)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    assert list(UniformClusterSampler(SKEWED, seed=6)) != first
    a.set_epoch(0)
    assert list(a) == first


@pytest.mark.parametrize("num_samples", [400, 401, 10])
def test_two_ranks_disjoint_and_cover_the_epoch_list(num_samples):
    ranks = [
        UniformClusterSampler(
            SKEWED, num_samples=num_samples, seed=2, num_replicas=2, rank=r
        )
        for r in (0, 1)
    ]
    for r in ranks:
        r.set_epoch(4)
    full = ranks[0].epoch_indices()
    assert np.array_equal(full, ranks[1].epoch_indices())
    total = -(-num_samples // 2) * 2  # rounded up to a multiple of num_replicas
    assert len(full) == total
    parts = [list(r) for r in ranks]
    assert [len(p) for p in parts] == [len(r) for r in ranks] == [total // 2] * 2
    # disjoint positions of the shared list (dataset indices may repeat within a cluster)
    assert parts[0] == full[0::2].tolist() and parts[1] == full[1::2].tolist()
    assert Counter(parts[0]) + Counter(parts[1]) == Counter(full.tolist())


def test_set_labels_after_reclustering():
    s = UniformClusterSampler(SKEWED, seed=0)
    new = np.array([7, 8] * 50)
    s.set_labels(new)
    assert len(s) == 100 and s.num_nonempty_clusters == 2
    assert Counter(new[i] for i in s) == {7: 50, 8: 50}


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="1-D integer"):
        UniformClusterSampler(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="no sample"):
        UniformClusterSampler(np.array([-1, -1]))
    with pytest.raises(ValueError, match="rank"):
        UniformClusterSampler(SKEWED, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_samples"):
        UniformClusterSampler(SKEWED, num_samples=0)
