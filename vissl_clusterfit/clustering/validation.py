"""Input checks shared by every clustering step.

ClusterFit (Yan et al., CVPR 2020, arXiv 1912.03330, Sec. 3.1) clusters all of
the N_pre features of D_cf into K groups at once, so a malformed array, a single
NaN or a K that cannot be filled spoils the whole pseudo-labelling. These are the
package's only validators for features, the pre-processing order and K; each
raises ``ValueError`` with a message that says how to fix the input.
"""

from typing import Optional, Tuple

import numpy as np


__all__ = [
    "VALID_ORDERS",
    "as_real_2d",
    "check_finite",
    "check_num_clusters",
    "check_order",
    "validate_features",
]

#: Orders accepted by ``preprocess_features`` / ``apply_preprocessing``.
VALID_ORDERS: Tuple[str, ...] = ("pca_l2", "l2_pca")

# Rows per chunk of the NaN scan: no full x.shape boolean mask is ever formed.
_CHUNK_ROWS = 4096


def as_real_2d(x: np.ndarray, name: str) -> np.ndarray:
    """``np.asarray(x)``, checked to be a 2-D array of real (float or int) numbers."""
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
    x = as_real_2d(x, name)
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


def validate_features(x: np.ndarray, name: str = "features") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (N, D) array, or raise ValueError.

    The form faiss takes (k-means, k-NN graph); reuses the buffer when ``x``
    already is one.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (num_samples, feature_dim), got shape "
            f"{x.shape}; reshape the features first"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} must be a floating point array, got dtype {x.dtype}; "
            "convert it with .astype(np.float32)"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} have feature dimension 0; nothing to cluster")
    check_finite(x, name)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_order(order: str) -> None:
    """Raise ``ValueError`` unless ``order`` is one of :data:`VALID_ORDERS`."""
    if order not in VALID_ORDERS:
        raise ValueError(
            f"unknown pre-processing order {order!r}; valid values are {list(VALID_ORDERS)} "
            "('pca_l2': PCA(-whitening) then L2 as in the DeepCluster thesis Sec. 4.2, "
            "'l2_pca': L2, PCA, L2 as in VISSL's cluster_features_and_label.py)"
        )


def check_num_clusters(k: object, n: Optional[int], key: str = "NUM_CLUSTERS") -> int:
    """Validate a number of clusters and return it as an ``int``.

    Every k-means of the package (ClusterFit Sec. 3.1, DeepCluster thesis
    Sec. 3.2, DeeperCluster Sec. 4.1) needs 1 <= K <= N: with K > N some
    cluster must stay empty, and the empty-cluster re-seeding cannot fill it.

    Args:
        k: the requested number of clusters (an int, or an integral float).
        n: the number of samples to be clustered; None = only check ``k`` itself
            (e.g. when reading a config, before the data is known).
        key: how the message names ``k``: the full config key (e.g.
            ``"config.VCF.CLUSTERFIT.NUM_CLUSTERS"``) or an argument name.

    Raises:
        ValueError: ``k`` is not an integer >= 1, or ``k > n``.
    """
    is_number = isinstance(k, (int, float, np.integer, np.floating)) and not isinstance(
        k, (bool, np.bool_)
    )
    if not is_number or not np.isfinite(k) or int(k) != k or k < 1:  # type: ignore
        raise ValueError(f"{key}={k!r} must be a positive integer")
    k = int(k)  # type: ignore
    if n is not None and k > n:
        raise ValueError(
            f"{key}={k} is larger than the number of samples ({n}): lower K or use "
            "more data"
        )
    return k
