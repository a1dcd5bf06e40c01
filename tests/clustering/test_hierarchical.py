import numpy as np
import pytest

from vissl_clusterfit.clustering import hierarchical_kmeans, nmi


def test_two_levels_recover_groups_and_subclusters():
    rng = np.random.RandomState(0)
    centers = []
    for g in range(3):  # 3 far-apart groups, each made of 2 closer sub-blobs
        for s in range(2):
            centers.append(np.array([100.0 * g, 10.0 * s]))
    x = np.concatenate([c + rng.randn(40, 2) for c in centers]).astype(np.float32)
    true_group = np.repeat(np.arange(3), 80)
    true_code = np.repeat(np.arange(6), 40)
    group, sub = hierarchical_kmeans(x, num_groups=3, num_sub=2, seed=0)
    assert nmi(group, true_group) == pytest.approx(1.0), nmi(group, true_group)
    assert nmi(group * 2 + sub, true_code) == pytest.approx(1.0)
    assert sub.min() >= 0 and sub.max() <= 1


def test_small_groups_and_errors():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [50.0, 50.0]], dtype=np.float32)
    group, sub = hierarchical_kmeans(x, num_groups=2, num_sub=5)
    assert sub.max() < 5 and len(set(group.tolist())) == 2
    with pytest.raises(ValueError, match="NUM_GROUPS=9"):
        hierarchical_kmeans(x, num_groups=9, num_sub=2)
