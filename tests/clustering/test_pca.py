"""PCA(-whitening) before clustering (DeepCluster thesis Sec. 4.2)."""

import numpy as np
import pytest
import torch

from tests.clustering.synthetic import anisotropic as _anisotropic
from vissl_clusterfit.clustering.moments import device_moments, row_sum, scatter
from vissl_clusterfit.clustering.pca import PCAWhitening, principal_directions
from vissl_clusterfit.clustering.pca_state import pca_state_dict


def test_pca_whitening_identity_covariance_on_fitted_data():
    x = _anisotropic()
    pca = PCAWhitening(8).fit(x)
    y = pca.transform(x).astype(np.float64)
    assert y.shape == (2000, 8) and pca.transform(x).dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4)
    cov = np.cov(y, rowvar=False, bias=True)
    err = np.abs(cov - np.eye(8)).max()
    assert err < 1e-4, f"whitened covariance differs from identity by {err}:\n{cov}"


def test_pca_matches_numpy_svd_reference_up_to_sign():
    x = _anisotropic(n=1500, d=12, seed=1)
    dim = 5
    ours_white = (
        PCAWhitening(dim, whiten=True, eps=0.0).fit(x).transform(x).astype(np.float64)
    )
    ours_plain = PCAWhitening(dim, whiten=False).fit(x).transform(x).astype(np.float64)

    centered = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    ref_plain = centered @ vt[:dim].T
    ref_white = ref_plain / (s[:dim] / np.sqrt(x.shape[0]))
    for ours, ref in ((ours_plain, ref_plain), (ours_white, ref_white)):
        signs = np.sign((ours * ref).sum(axis=0))
        assert np.all(signs != 0)
        diff = np.abs(ours - ref * signs).max()
        scale = np.abs(ref).max()
        assert diff < 1e-5 * scale, f"max abs diff {diff} vs reference scale {scale}"
    variances = ours_plain.var(axis=0)
    np.testing.assert_allclose(variances, (s[:dim] ** 2) / x.shape[0], rtol=1e-5)
    assert np.all(
        np.diff(variances) < 0
    ), f"components not sorted by variance: {variances}"


def test_pca_dim_larger_than_data_raises():
    x = _anisotropic(n=50, d=6)
    with pytest.raises(
        ValueError, match=r"dim=7 must be <= min\(num_rows=50, feature_dim=6\)"
    ):
        PCAWhitening(7).fit(x)
    with pytest.raises(ValueError, match=r"num_rows=5"):
        PCAWhitening(6).fit(x, sample_size=5)
    with pytest.raises(ValueError, match="positive integer"):
        PCAWhitening(0)


def test_pca_fit_is_reproducible_and_sample_is_seeded():
    x = _anisotropic(n=3000, d=8, seed=3)
    a = pca_state_dict(PCAWhitening(4).fit(x, sample_size=500, seed=7))
    b = pca_state_dict(PCAWhitening(4).fit(x, sample_size=500, seed=7))
    c = pca_state_dict(PCAWhitening(4).fit(x, sample_size=500, seed=8))
    for key in ("mean", "projection"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(
        a["mean"], c["mean"]
    ), "different seeds drew the same sample"
    rows = np.sort(np.random.default_rng(7).choice(3000, size=500, replace=False))
    manual = pca_state_dict(PCAWhitening(4).fit(x[rows]))
    np.testing.assert_array_equal(a["projection"], manual["projection"])


def test_pca_on_a_torch_device_equals_numpy() -> None:
    """The GPU code path of the fit and the transform (device_moments, chunked torch
    float64), run on the CPU device: same transform as numpy's, up to rounding."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((9000, 40)) @ rng.standard_normal((40, 40))).astype(
        np.float32
    )
    cpu = torch.device("cpu")
    mean, cov = device_moments(x, cpu)
    np.testing.assert_allclose(mean, row_sum(x) / len(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, scatter(x, mean) / len(x), rtol=1e-10)
    ref = PCAWhitening(12).fit(x, sample_size=5000, seed=1)
    dev = PCAWhitening(12).fit(x, sample_size=5000, seed=1, device=cpu)
    np.testing.assert_allclose(dev.projection, ref.projection, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        dev.transform(x, cpu), ref.transform(x), rtol=1e-5, atol=1e-5
    )


def test_principal_directions_sorted_clipped_and_sign_pinned():
    cov = np.diag([1.0, 4.0, -1e-12])  # a tiny negative eigenvalue from rounding
    vals, vecs = principal_directions(cov, 3)
    np.testing.assert_array_equal(vals, [4.0, 1.0, 0.0])
    pivots = vecs[np.argmax(np.abs(vecs), axis=0), np.arange(3)]
    assert (pivots > 0).all(), f"largest entries {pivots} must be positive"
    vals2, vecs2 = principal_directions(cov, 2)
    np.testing.assert_array_equal(vecs2, vecs[:, :2])
