"""Feature pre-processing before clustering.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) clusters the
penultimate-layer features of N_pre with k-means. The paper does not spell out
the pre-processing; it inherits it from DeepCluster: the thesis (Caron 2018,
Sec. 4.2 "The descriptors") applies PCA-whitening down to 256
dimensions followed by an L2 normalisation, and DeeperCluster (Caron et al.,
ICCV 2019, Sec. 4.3) whitens and L2-normalises every activation before
clustering. VISSL's ``cluster_features_and_label.py`` instead L2-normalises,
applies PCA and L2-normalises again; both orders are offered here. The PCA itself
is :class:`.pca.PCAWhitening`, the input checks live in :mod:`.validation`.
"""

from typing import Optional, Tuple

import numpy as np
import torch

from .pca import PCAWhitening
from .validation import VALID_ORDERS, as_real_2d, check_finite, check_order


__all__ = [
    "VALID_ORDERS",
    "check_finite",
    "l2_normalize",
    "PCAWhitening",
    "preprocess_features",
    "apply_preprocessing",
]

# Rows per chunk of the L2 pass (see the PCA module for the same choice).
_CHUNK_ROWS = 4096


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
    x = as_real_2d(x, "features")
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


def preprocess_features(
    x: np.ndarray,
    pca_dim: int = 0,
    whiten: bool = True,
    l2_norm: bool = True,
    order: str = "pca_l2",
    pca_sample_size: int = 0,
    seed: int = 0,
    inplace: bool = False,
    device: Optional[torch.device] = None,
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
        device: fit and apply the PCA with torch on this device, chunk by chunk
            (e.g. the GPU of the bounded route); None = numpy.

    Returns:
        (float32 features, fitted PCA or None when ``pca_dim == 0``).
    """
    check_order(order)
    x = as_real_2d(x, "features")
    check_finite(x)
    if pca_dim < 0:
        raise ValueError(f"pca_dim must be >= 0 (0 disables PCA), got {pca_dim}")
    pca: Optional[PCAWhitening] = None
    if pca_dim > 0:
        pca = PCAWhitening(pca_dim, whiten=whiten)
        if l2_norm and order == "l2_pca":
            x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
            inplace = True  # x is now ours (or was allowed to be overwritten)
        pca.fit(x, sample_size=pca_sample_size, seed=seed, device=device)
        x = pca.transform(x, device)
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
    device: Optional[torch.device] = None,
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
        device: apply the PCA with torch on this device (see
            :meth:`PCAWhitening.transform`); None = numpy.

    Returns:
        float32 array (N, pca.dim or D).
    """
    check_order(order)
    x = as_real_2d(x, "features")
    check_finite(x)
    if pca is not None and not pca.is_fitted:
        raise ValueError(
            "apply_preprocessing got an unfitted PCAWhitening; fit it first"
        )
    # Without PCA, L2 twice equals L2 once: skip the first pass over the data.
    if order == "l2_pca" and l2_norm and pca is not None:
        x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
    if pca is not None:
        x = pca.transform(x, device)
        inplace = True
    if l2_norm:
        x = l2_normalize(x, out=x if _writable_f32(x) and inplace else None)
    return np.ascontiguousarray(x, dtype=np.float32)
