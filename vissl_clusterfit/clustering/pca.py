"""PCA(-whitening) of the features before clustering.

DeepCluster thesis (Caron 2018, Sec. 4.2 "The descriptors"): the descriptors are
projected on their top 256 principal directions and whitened before the L2
normalisation and k-means; DeeperCluster (Caron et al., ICCV 2019, Sec. 4.3)
whitens every activation before clustering, and ClusterFit (Yan et al., CVPR
2020, Sec. 3.1) inherits this pre-processing. The moments are float64 and
accumulated over row chunks, so the sharded fit (:mod:`.sharded`) can all-reduce
them and get the same transform on every rank.
"""

from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from .validation import as_real_2d, check_finite


__all__ = [
    "PCAWhitening",
    "device_moments",
    "device_transform_bytes",
    "row_sum",
    "scatter",
]

# Rows per chunk for the streaming passes: large enough for BLAS efficiency,
# small enough that a float64 copy of a chunk of 4096-d features stays ~130 MB.
_CHUNK_ROWS = 4096


def row_sum(x: np.ndarray) -> np.ndarray:
    """Float64 sum of the rows of ``x`` (D,), chunk by chunk."""
    out = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        out += x[start : start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    return out


def scatter(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Float64 scatter matrix sum_i (x_i - mean)(x_i - mean)^T (D, D), chunk by chunk."""
    out = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        centered = x[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        out += centered.T @ centered
    return out


def _device_chunks(x: np.ndarray, device: torch.device) -> Iterator[torch.Tensor]:
    """float64 copies of ``x``'s row chunks on ``device``, one at a time (device
    memory: one chunk, whatever N)."""
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + _CHUNK_ROWS]))
        yield chunk.to(device).to(torch.float64)


def device_moments(
    x: np.ndarray, device: torch.device
) -> Tuple[np.ndarray, np.ndarray]:
    """Float64 mean (D,) and population covariance (D, D) of ``x``, computed on
    ``device`` chunk by chunk: :func:`row_sum` and :func:`scatter` on a GPU, where
    the D x D float64 GEMMs of a large sample (ImageNet: 1M x 2048, 8.6 TFLOP) take
    a second instead of minutes on the CPU. Rounding differs from numpy's BLAS only
    in the order of the float64 sums."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
    for chunk in _device_chunks(x, device):
        total += chunk.sum(dim=0)
    mean = total / x.shape[0]
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=device)
    for chunk in _device_chunks(x, device):
        chunk -= mean
        cov.addmm_(chunk.T, chunk)
    return mean.cpu().numpy(), (cov / x.shape[0]).cpu().numpy()


def device_transform_bytes(dim_in: int, dim_out: int) -> int:
    """Device memory of :meth:`PCAWhitening.transform` with a ``device``: one chunk
    (float32 and float64), its float64 and float32 projections, the mean and the
    projection matrix, whatever N."""
    chunk = _CHUNK_ROWS * (12 * dim_in + 12 * dim_out)
    return chunk + 8 * dim_in * (dim_out + 1)


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
        if sample_size < 0:
            raise ValueError(
                f"sample_size must be >= 0 (0 = use all rows), got {sample_size}"
            )
        if 0 < sample_size < x.shape[0]:
            rng = np.random.default_rng(seed)
            # Sorted so the accumulation order, hence the rounding, only depends on the sample.
            rows = np.sort(rng.choice(x.shape[0], size=sample_size, replace=False))
            x = x[rows]
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
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1][: self.dim]
        eigenvalues = np.maximum(eigenvalues[order], 0.0)
        eigenvectors = eigenvectors[:, order]
        # eigh's sign is arbitrary; pin it so results do not depend on LAPACK build.
        pivot = np.argmax(np.abs(eigenvectors), axis=0)
        signs = np.sign(eigenvectors[pivot, np.arange(self.dim)])
        signs[signs == 0] = 1.0
        eigenvectors = eigenvectors * signs

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
            for start, chunk in zip(
                range(0, x.shape[0], _CHUNK_ROWS), _device_chunks(x, device)
            ):
                chunk -= mean
                y = (chunk @ projection).to(torch.float32).cpu().numpy()
                out[start : start + _CHUNK_ROWS] = y
            return out
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            chunk = x[start : start + _CHUNK_ROWS].astype(np.float64) - self.mean
            out[start : start + _CHUNK_ROWS] = chunk @ self.projection
        return out

    def state_dict(self) -> Dict[str, Any]:
        """Return everything needed to rebuild the transform (numpy arrays + scalars)."""
        if not self.is_fitted:
            raise ValueError(
                "PCAWhitening.state_dict called before fit(); call fit(x) first"
            )
        assert self.mean is not None and self.projection is not None
        assert self.eigenvalues is not None
        return {
            "mean": self.mean.copy(),
            "projection": self.projection.copy(),
            "eigenvalues": self.eigenvalues.copy(),
            "dim": self.dim,
            "whiten": self.whiten,
            "eps": self.eps,
        }

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "PCAWhitening":
        """Rebuild a fitted :class:`PCAWhitening` from :meth:`state_dict` output."""
        missing = {"mean", "projection", "dim", "whiten", "eps"} - set(state)
        if missing:
            raise ValueError(
                f"PCA state dict is missing keys {sorted(missing)}; it must come from "
                "PCAWhitening.state_dict()"
            )
        pca = cls(
            int(state["dim"]), whiten=bool(state["whiten"]), eps=float(state["eps"])
        )
        mean = np.asarray(state["mean"], dtype=np.float64)
        projection = np.asarray(state["projection"], dtype=np.float64)
        if projection.shape != (mean.shape[0], pca.dim):
            raise ValueError(
                f"PCA state dict is inconsistent: projection has shape {projection.shape}, "
                f"expected ({mean.shape[0]}, {pca.dim})"
            )
        pca.mean = mean
        pca.projection = projection
        if "eigenvalues" in state:
            pca.eigenvalues = np.asarray(state["eigenvalues"], dtype=np.float64)
        else:
            pca.eigenvalues = np.full(pca.dim, np.nan)
        return pca
