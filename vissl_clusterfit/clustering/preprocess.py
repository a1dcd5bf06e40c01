"""Feature pre-processing before clustering.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) clusters the
penultimate-layer features of N_pre with k-means. The paper does not spell out
the pre-processing; it inherits it from DeepCluster: the thesis (Caron 2018,
Sec. 4.2 "The descriptors") applies PCA-whitening down to 256
dimensions followed by an L2 normalisation, and DeeperCluster (Caron et al.,
ICCV 2019, Sec. 4.3) whitens and L2-normalises every activation before
clustering. VISSL's ``cluster_features_and_label.py`` instead L2-normalises,
applies PCA and L2-normalises again; both orders are offered here.
"""

from typing import Any, Dict, Optional, Tuple

import numpy as np


__all__ = [
    "VALID_ORDERS",
    "check_finite",
    "l2_normalize",
    "PCAWhitening",
    "preprocess_features",
    "apply_preprocessing",
]

#: Orders accepted by :func:`preprocess_features` / :func:`apply_preprocessing`.
VALID_ORDERS: Tuple[str, ...] = ("pca_l2", "l2_pca")

# Rows per chunk for the streaming passes: large enough for BLAS efficiency,
# small enough that a float64 copy of a chunk of 4096-d features stays ~130 MB.
_CHUNK_ROWS = 4096


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (num_samples, feature_dim), got "
            f"shape {x.shape}; reshape or flatten the extracted features first"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(
            f"{name} must hold real numbers, got dtype {x.dtype}; "
            "convert it with .astype(np.float32)"
        )
    return x


def check_finite(x: np.ndarray, name: str = "features") -> None:
    """Raise ``ValueError`` if any entry of ``x`` is NaN or infinite.

    A single non-finite feature poisons every centroid it is averaged into
    (ClusterFit Sec. 3.1 clusters all of D_cf at once), so this is checked
    before any clustering step. The scan is chunked so it never allocates a
    full ``x.shape`` boolean mask.

    Args:
        x: array of shape (N, D).
        name: how to call ``x`` in the error message.

    Raises:
        ValueError: naming how many rows contain NaN/inf and the first bad row.
    """
    x = _as_2d(x, name)
    if np.issubdtype(x.dtype, np.integer):
        return
    n_bad = 0
    first_bad = -1
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start : start + _CHUNK_ROWS]
        bad_rows = ~np.isfinite(chunk).all(axis=1)
        count = int(bad_rows.sum())
        if count and first_bad < 0:
            first_bad = start + int(np.argmax(bad_rows))
        n_bad += count
    if n_bad:
        raise ValueError(
            f"{name} contain NaN or inf values in {n_bad} of {x.shape[0]} rows "
            f"(first bad row index: {first_bad}). Check the N_pre checkpoint and "
            "the layer the features were extracted from (a diverged model or an "
            "uninitialised buffer typically causes this)."
        )


def l2_normalize(
    x: np.ndarray, eps: float = 1e-10, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Return a float32 copy of ``x`` with each row scaled to unit L2 norm.

    Thesis Sec. 4.2: descriptors are L2-normalised so that k-means on them
    behaves like clustering on cosine similarity. Rows whose norm is below
    ``eps`` are divided by ``eps`` instead, so all-zero rows stay zero instead
    of becoming NaN.

    Args:
        x: array of shape (N, D).
        eps: lower bound on the norm used as divisor.
        out: float32 C-contiguous (N, D) array to write into; may be ``x`` itself
            (in place: the clustering step then holds one copy of the features
            instead of two).

    Returns:
        float32 array of shape (N, D) (``out`` when given).
    """
    x = _as_2d(x, "features")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 to keep zero rows finite, got {eps}")
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float32 array of shape {x.shape}, got "
            f"{out.dtype} {out.shape}"
        )
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start : start + _CHUNK_ROWS]
        # Norms accumulated in float64 (float32 sums of squares lose ~3 digits for
        # 4096-d rows) without a float64 copy of the chunk: einsum casts in small
        # buffers. The scaling then writes straight into ``out``, so the only N x D
        # array is ``out`` (and none at all in place); results are within 1 ulp of
        # dividing in float64.
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64))
        scale = (1.0 / np.maximum(norms, eps)).astype(np.float32)
        np.multiply(
            chunk,
            scale[:, None],
            out=out[start : start + _CHUNK_ROWS],
            casting="unsafe",
        )
    return out


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

    def fit(self, x: np.ndarray, sample_size: int = 0, seed: int = 0) -> "PCAWhitening":
        """Estimate mean and principal directions of ``x``.

        Args:
            x: array of shape (N, D).
            sample_size: if > 0 and smaller than N, fit on that many rows drawn
                without replacement by ``numpy.random.default_rng(seed)``.
            seed: RNG seed for the row sample.

        Returns:
            ``self``.

        Raises:
            ValueError: if ``dim`` exceeds min(rows used, D) or x is not finite.
        """
        x = _as_2d(x, "features")
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

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` (N, D) to float32 (N, dim), chunk by chunk.

        Raises:
            ValueError: if not fitted or the feature dimension differs.
        """
        if not self.is_fitted:
            raise ValueError(
                "PCAWhitening.transform called before fit(); call fit(x) first"
            )
        assert self.mean is not None and self.projection is not None
        x = _as_2d(x, "features")
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"features have dimension {x.shape[1]} but the PCA was fitted on "
                f"dimension {self.mean.shape[0]}; use features from the same layer"
            )
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
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


def _check_order(order: str) -> None:
    if order not in VALID_ORDERS:
        raise ValueError(
            f"unknown pre-processing order {order!r}; valid values are {list(VALID_ORDERS)} "
            "('pca_l2': PCA(-whitening) then L2 as in the DeepCluster thesis Sec. 4.2, "
            "'l2_pca': L2, PCA, L2 as in VISSL's cluster_features_and_label.py)"
        )


def preprocess_features(
    x: np.ndarray,
    pca_dim: int = 0,
    whiten: bool = True,
    l2_norm: bool = True,
    order: str = "pca_l2",
    pca_sample_size: int = 0,
    seed: int = 0,
    inplace: bool = False,
) -> Tuple[np.ndarray, Optional[PCAWhitening]]:
    """Fit and apply the pre-clustering transform (thesis Sec. 4.2).

    Args:
        x: features (N, D).
        pca_dim: output dimension of the PCA; 0 disables PCA.
        whiten: whiten the PCA components.
        l2_norm: apply the L2 normalisation step(s); ``False`` disables all of them.
        order: ``"pca_l2"`` (PCA then L2) or ``"l2_pca"`` (L2, PCA, L2).
        pca_sample_size: rows used to fit the PCA (0 = all), see :meth:`PCAWhitening.fit`.
        seed: seed for the PCA row sample.
        inplace: allow overwriting ``x`` (see :func:`apply_preprocessing`).

    Returns:
        (float32 features, fitted PCA or None when ``pca_dim == 0``).
    """
    _check_order(order)
    x = _as_2d(x, "features")
    check_finite(x)
    if pca_dim < 0:
        raise ValueError(f"pca_dim must be >= 0 (0 disables PCA), got {pca_dim}")
    pca: Optional[PCAWhitening] = None
    if pca_dim > 0:
        pca = PCAWhitening(pca_dim, whiten=whiten)
        if l2_norm and order == "l2_pca":
            x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
            inplace = True  # x is now ours (or was allowed to be overwritten)
        pca.fit(x, sample_size=pca_sample_size, seed=seed)
        x = pca.transform(x)
        inplace = True
    if l2_norm:
        x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
    return np.ascontiguousarray(x, dtype=np.float32), pca


def _writable_f32(x: np.ndarray) -> bool:
    return x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable


def apply_preprocessing(
    x: np.ndarray,
    pca: Optional[PCAWhitening],
    l2_norm: bool,
    order: str,
    inplace: bool = False,
) -> np.ndarray:
    """Apply the transform of :func:`preprocess_features` with an already fitted PCA.

    Used to map a held-out split into the space of the train centroids, so
    it must perform exactly the same steps in the same order.

    Args:
        inplace: allow overwriting ``x`` when it is a C-contiguous float32 array.
            The cluster step owns its freshly extracted features, so it
            L2-normalises them in place: without PCA its peak memory is then
            one feature matrix instead of two. Intermediate arrays (the PCA
            output) are always normalised in place.

    Returns:
        float32 array (N, pca.dim or D).
    """
    _check_order(order)
    x = _as_2d(x, "features")
    check_finite(x)
    if pca is not None and not pca.is_fitted:
        raise ValueError(
            "apply_preprocessing got an unfitted PCAWhitening; fit it first"
        )
    # Without PCA, L2 twice equals L2 once: skip the first pass over the data.
    if order == "l2_pca" and l2_norm and pca is not None:
        x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
    if pca is not None:
        x = pca.transform(x)
        inplace = True
    if l2_norm:
        x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
    return np.ascontiguousarray(x, dtype=np.float32)
