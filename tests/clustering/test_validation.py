"""The package's one set of input checks (features, pre-processing order, K)."""

import numpy as np
import pytest

from vissl_clusterfit.clustering import (
    check_num_clusters,
    check_order,
    validate_features,
)


KEY = "config.VCF.CLUSTERFIT.NUM_CLUSTERS"


@pytest.mark.parametrize("k", [-5, 0, 2.5, "3", None, True, float("nan")])
def test_check_num_clusters_rejects_non_positive_integers(k):
    with pytest.raises(ValueError) as err:
        check_num_clusters(k, None, key=KEY)
    assert str(err.value) == f"{KEY}={k!r} must be a positive integer", str(err.value)


def test_check_num_clusters_k_larger_than_n():
    with pytest.raises(ValueError) as err:
        check_num_clusters(11, 10, key=KEY)
    expected = (
        f"{KEY}=11 is larger than the number of samples (10): lower K or use more data"
    )
    assert str(err.value) == expected, str(err.value)


def test_check_num_clusters_accepts_and_returns_int():
    assert check_num_clusters(10, 10, key=KEY) == 10
    out = check_num_clusters(np.int64(3), None)
    assert out == 3 and type(out) is int
    assert check_num_clusters(4.0, 7) == 4 and type(check_num_clusters(4.0, 7)) is int
    with pytest.raises(ValueError, match=r"^NUM_CLUSTERS=0 must be"):
        check_num_clusters(0, 5)  # default key


def test_check_order():
    check_order("pca_l2")
    check_order("l2_pca")
    with pytest.raises(ValueError, match="unknown pre-processing order 'pca'"):
        check_order("pca")


def test_validate_features():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    out = validate_features(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)
    same = np.zeros((2, 2), dtype=np.float32)
    assert validate_features(same) is same
    with pytest.raises(ValueError, match="centroids must be a floating point"):
        validate_features(np.zeros((2, 2), np.int64), "centroids")
    with pytest.raises(ValueError, match="2-D"):
        validate_features(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="dimension 0"):
        validate_features(np.zeros((3, 0), np.float32))
    bad = np.zeros((4, 2), np.float32)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="first bad row index: 2"):
        validate_features(bad)
