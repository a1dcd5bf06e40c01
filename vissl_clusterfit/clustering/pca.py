"""PCA(-whitening) of the features before clustering.

DeepCluster thesis (Caron 2018, Sec. 4.2 "The descriptors"): the descriptors are
projected on their top 256 principal directions and whitened before the L2
normalisation and k-means; DeeperCluster (Caron et al., ICCV 2019, Sec. 4.3)
whitens every activation before clustering, and ClusterFit (Yan et al., CVPR
2020, Sec. 3.1) inherits this pre-processing. The moments are float64 and
accumulated over row chunks, so the sharded fit (:mod:`.sharded`) can all-reduce
them and get the same transform on every rank. The moments are :mod:`.moments`, the
transform's (de)serialisation :mod:`.pca_state`.
"""

from typing import Optional, Tuple

import numpy as np
import torch

from .moments import (
    device_chunks,
    device_moments,
    row_chunks,
    row_sum,
    sample_rows,
    scatter,
)
from .validation import as_real_2d, check_finite


__all__ = ["PCAWhitening", "principal_directions"]


def principal_directions(cov: np.ndarray, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``dim`` largest eigenvalues (clipped at 0) of a symmetric covariance and
    their eigenvectors as columns, each sign pinned so that its largest-magnitude
    entry is positive (eigh's sign is arbitrary: results would depend on the LAPACK
    build)."""
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:dim]
    eigenvalues = np.maximum(eigenvalues[order], 0.0)
    eigenvectors = eigenvectors[:, order]
    pivot = np.argmax(np.abs(eigenvectors), axis=0)
    signs = np.sign(eigenvectors[pivot, np.arange(dim)])
    signs[signs == 0] = 1.0
    return eigenvalues, eigenvectors * signs


class PCAWhitening:
    """PCA projection to ``dim`` components, optionally whitened.

    Thesis Sec. 4.2: project on the principal directions, keep the top 256,
    and divide each component by the square root of its eigenvalue so that no
    single direction (up to 40% of the variance for random VGG16 features)
    dominates the k-means distances.

    Implemented with a float64 covariance accumulated over row chunks and
    ``numpy.linalg.eigh`` rather than ``faiss.PCAMatrix``: faiss silently
    subsamples the training set to ``max_points_per_d * d`` rows with its own
    RNG and accumulates the covariance in float32, which would make
    ``sample_size`` and the reproducibility contract of :meth:`fit` depend on
    faiss internals. A D x D eigendecomposition is cheap for D <= a few
    thousand, and the explicit ``eps`` keeps whitening finite for
    rank-deficient data.
    """

    def __init__(self, dim: int, whiten: bool = True, eps: float = 1e-5) -> None:
        """
        Args:
            dim: number of output dimensions (thesis: 256).
            whiten: divide each component by sqrt(eigenvalue + eps).
            eps: regulariser added to the eigenvalues before whitening.
        """
        if int(dim) != dim or dim < 1:
            raise ValueError(f"PCA dim must be a positive integer, got {dim!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.dim = int(dim)
        self.whiten = bool(whiten)
        self.eps = float(eps)
        self.mean: Optional[np.ndarray] = None
        self.projection: Optional[np.ndarray] = None
        self.eigenvalues: Optional[np.ndarray] = None

    @property
    def is_fitted(self) -> bool:
        return self.projection is not None

    def fit(
        self,
        x: np.ndarray,
        sample_size: int = 0,
        seed: int = 0,
        device: Optional[torch.device] = None,
    ) -> "PCAWhitening":
        """Estimate mean and principal directions of ``x``.

        Args:
            x: array of shape (N, D).
            sample_size: if > 0 and smaller than N, fit on that many rows drawn
                without replacement by ``numpy.random.default_rng(seed)``.
            seed: RNG seed for the row sample.
            device: compute the moments with torch on this device
                (:func:`device_moments`); None = numpy on the CPU.

        Returns:
            ``self``.

        Raises:
            ValueError: if ``dim`` exceeds min(rows used, D) or x is not finite.
        """
        x = as_real_2d(x, "features")
        check_finite(x)
        x = sample_rows(x, sample_size, seed)
        n, d = x.shape
        if self.dim > min(n, d):
            raise ValueError(
                f"PCA dim={self.dim} must be <= min(num_rows={n}, feature_dim={d}) "
                "of the data it is fitted on; lower the PCA dimension or fit on more rows"
            )

        if device is not None:
            return self.fit_moments(*device_moments(x, device))
        mean = row_sum(x) / n
        # Population covariance (1/n): whitened fitted data then has exactly
        # identity covariance in the same normalisation.
        return self.fit_moments(mean, scatter(x, mean) / n)

    def fit_moments(self, mean: np.ndarray, cov: np.ndarray) -> "PCAWhitening":
        """Set the transform from a float64 mean (D,) and population covariance (D, D).

        :meth:`fit` computes them from one array; the sharded clustering
        (:mod:`.sharded`) all-reduces them over ranks and calls this on each.

        Returns:
            ``self``.
        """
        mean = np.asarray(mean, dtype=np.float64)
        cov = np.asarray(cov, dtype=np.float64)
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"covariance has shape {cov.shape}, expected ({d}, {d})")
        if self.dim > d:
            raise ValueError(
                f"PCA dim={self.dim} must be <= feature_dim={d}; lower the PCA dimension"
            )
        eigenvalues, eigenvectors = principal_directions(cov, self.dim)
        projection = eigenvectors
        if self.whiten:
            projection = eigenvectors / np.sqrt(eigenvalues + self.eps)
        self.mean = mean
        self.projection = np.ascontiguousarray(projection)
        self.eigenvalues = eigenvalues
        return self

    def transform(
        self, x: np.ndarray, device: Optional[torch.device] = None
    ) -> np.ndarray:
        """Project ``x`` (N, D) to float32 (N, dim), chunk by chunk (in float64 with
        torch on ``device`` when given, one chunk there at a time).

        Raises:
            ValueError: if not fitted or the feature dimension differs.
        """
        if not self.is_fitted:
            raise ValueError(
                "PCAWhitening.transform called before fit(); call fit(x) first"
            )
        assert self.mean is not None and self.projection is not None
        x = as_real_2d(x, "features")
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"features have dimension {x.shape[1]} but the PCA was fitted on "
                f"dimension {self.mean.shape[0]}; use features from the same layer"
            )
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        if device is not None:
            mean = torch.from_numpy(self.mean).to(device)
            projection = torch.from_numpy(self.projection).to(device)
            for rows, chunk in zip(row_chunks(x.shape[0]), device_chunks(x, device)):
                chunk -= mean
                out[rows] = (chunk @ projection).to(torch.float32).cpu().numpy()
            return out
        for rows in row_chunks(x.shape[0]):
            out[rows] = (x[rows].astype(np.float64) - self.mean) @ self.projection
        return out
