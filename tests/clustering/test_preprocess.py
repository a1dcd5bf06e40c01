"""Tests for feature pre-processing (DeepCluster thesis Sec. 4.2)."""

import numpy as np
import pytest

from tests.clustering.synthetic import anisotropic as _anisotropic
from vissl_clusterfit.clustering import moments, preprocess, validation
from vissl_clusterfit.clustering.preprocess import (
    PCAWhitening,
    apply_preprocessing,
    check_finite,
    l2_normalize,
    preprocess_features,
)


def test_check_finite_reports_rows_and_first_index():
    x = np.ones((10, 4), dtype=np.float32)
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    x[7, 2] = np.nan
    with pytest.raises(ValueError) as err:
        check_finite(x, name="res5 features")
    message = str(err.value)
    assert "2 of 10 rows" in message, message
    assert "first bad row index: 3" in message, message
    assert "N_pre checkpoint" in message, message
    assert "res5 features" in message, message


def test_check_finite_accepts_finite_and_integer_arrays():
    check_finite(np.zeros((5, 3), dtype=np.float32))
    check_finite(np.arange(6).reshape(3, 2))
    with pytest.raises(ValueError, match="2-D"):
        check_finite(np.zeros(4))


def test_l2_normalize_unit_rows_zero_row_stays_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1e-3, 0.0], [1e20, 1e20]], dtype=np.float64)
    before = x.copy()
    y = l2_normalize(x)
    assert y.dtype == np.float32
    norms = np.linalg.norm(y.astype(np.float64), axis=1)
    np.testing.assert_allclose(
        norms[[0, 2, 3]], 1.0, atol=1e-6, err_msg=f"norms {norms}"
    )
    np.testing.assert_array_equal(y[1], [0.0, 0.0])
    np.testing.assert_allclose(y[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(x, before)


def test_chunked_passes_equal_single_pass(monkeypatch):
    x = _anisotropic(n=300, d=6, seed=4)
    full_pca = PCAWhitening(3).fit(x)
    full = full_pca.transform(x)
    full_l2 = l2_normalize(x)
    monkeypatch.setattr(moments, "CHUNK_ROWS", 7)  # the PCA's moments and transform
    for module in (preprocess, validation):  # their own chunked passes
        monkeypatch.setattr(module, "_CHUNK_ROWS", 7)
    chunked_pca = PCAWhitening(3).fit(x)
    np.testing.assert_allclose(
        chunked_pca.projection, full_pca.projection, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(chunked_pca.transform(x), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(l2_normalize(x), full_l2)
    x[250, 2] = np.nan
    with pytest.raises(ValueError, match="first bad row index: 250"):
        check_finite(x)


def test_preprocess_pca_l2_default():
    x = _anisotropic(n=800, d=16, seed=5)
    y, pca = preprocess_features(x, pca_dim=8)
    assert pca is not None and pca.dim == 8 and pca.whiten
    assert y.shape == (800, 8) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(y, l2_normalize(pca.transform(x)))


def test_preprocess_l2_pca_matches_manual_pipeline():
    x = _anisotropic(n=800, d=16, seed=6)
    y, pca = preprocess_features(x, pca_dim=8, order="l2_pca")
    manual_pca = PCAWhitening(8).fit(l2_normalize(x))
    expected = l2_normalize(manual_pca.transform(l2_normalize(x)))
    np.testing.assert_array_equal(y, expected)


def test_preprocess_without_pca_and_without_l2():
    x = _anisotropic(n=100, d=5, seed=7)
    y, pca = preprocess_features(x)
    assert pca is None
    np.testing.assert_array_equal(y, l2_normalize(x))
    y_l2pca, _ = preprocess_features(x, order="l2_pca")
    np.testing.assert_array_equal(y_l2pca, y)
    raw, pca = preprocess_features(x, l2_norm=False)
    assert pca is None
    np.testing.assert_array_equal(raw, x)


def test_preprocess_rejects_bad_order_and_nan():
    x = _anisotropic(n=100, d=5)
    with pytest.raises(ValueError) as err:
        preprocess_features(x, order="l2_then_pca")
    assert "'pca_l2'" in str(err.value) and "'l2_pca'" in str(err.value), str(err.value)
    x[42, 0] = np.nan
    with pytest.raises(ValueError, match="first bad row index: 42"):
        preprocess_features(x, pca_dim=2)


@pytest.mark.parametrize("order", ["pca_l2", "l2_pca"])
def test_apply_preprocessing_reproduces_train_transform(order):
    train = _anisotropic(n=700, d=12, seed=8)
    test = _anisotropic(n=90, d=12, seed=9)
    y_train, pca = preprocess_features(
        train, pca_dim=6, order=order, pca_sample_size=400, seed=3
    )
    again = apply_preprocessing(train, pca, l2_norm=True, order=order)
    np.testing.assert_array_equal(again, y_train)
    y_test = apply_preprocessing(test, pca, l2_norm=True, order=order)
    assert y_test.shape == (90, 6)
    np.testing.assert_allclose(np.linalg.norm(y_test, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="dimension 5"):
        apply_preprocessing(test[:, :5], pca, l2_norm=True, order=order)
