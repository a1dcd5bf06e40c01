"""Pre-processing of features sharded over ``torch.distributed`` ranks (DeeperCluster,
Caron et al., ICCV 2019, Sec. 4.2; DeepCluster thesis Sec. 4.2: PCA-whitening, then L2):
the PCA is fitted from an all-reduced float64 mean and covariance (D + D x D numbers,
whatever N is) and applied by every rank to its own rows; L2 normalisation is per row,
so it is local. :mod:`.sharded` runs k-means on the result.
"""

import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .comm import Comm
from .moments import row_sum, scatter
from .pca import PCAWhitening
from .preprocess import apply_preprocessing, l2_normalize
from .validation import check_finite, check_order


logger = logging.getLogger(__name__)

__all__ = [
    "PREPROCESSING_DEFAULTS",
    "check_shards",
    "fit_pca_sharded",
    "preprocess_shards",
    "preprocessing_options",
]


def check_shards(x_local: np.ndarray, comm: Comm) -> List[int]:
    """Validate every rank's shard with one small all_gather; the shard sizes.

    A bad shard raises on every rank (with the same message) instead of leaving the
    healthy ranks waiting in the next collective.
    """
    ok = isinstance(x_local, np.ndarray) and x_local.ndim == 2 and x_local.shape[1] > 0
    finite = False
    if ok:
        try:
            check_finite(x_local)  # chunked: no N x D mask
            finite = True
        except ValueError as e:
            logger.error(f"rank {comm.rank}: {e}")
    info = comm.all_gather(
        torch.tensor(
            [
                x_local.shape[0] if ok else -1,
                x_local.shape[1] if ok else -1,
                int(ok and finite),
            ],
            dtype=torch.int64,
        )
    )
    bad = [r for r in range(comm.world_size) if int(info[r, 2]) == 0]
    if bad:
        raise ValueError(
            f"features of rank(s) {bad} are not a finite 2-D (rows, dim) float array: check "
            "the N_pre checkpoint and the layer the features were extracted from"
        )
    dims = sorted({int(v) for v in info[:, 1].tolist()})
    if len(dims) > 1:
        raise ValueError(
            f"feature dimensions differ across ranks: {info[:, 1].tolist()}; every rank must "
            "extract the same layer"
        )
    return [int(v) for v in info[:, 0].tolist()]


def fit_pca_sharded(
    x_local: np.ndarray,
    dim: int,
    whiten: bool = True,
    sample_size: int = 0,
    seed: int = 0,
    process_group: Optional[object] = None,
) -> PCAWhitening:
    """:meth:`PCAWhitening.fit` over the union of every rank's rows.

    The mean and the covariance are accumulated in float64 per rank and all-reduced,
    so every rank ends up with the same PCA (the all-reduced sums are identical on all
    ranks). ``sample_size`` rows are drawn by ``default_rng(seed)`` in the global row
    order, as :meth:`PCAWhitening.fit` draws them from the concatenated array.
    """
    comm = Comm(process_group)
    return fit_pca_on_shards(
        x_local, check_shards(x_local, comm), comm, dim, whiten, sample_size, seed
    )


def fit_pca_on_shards(
    x_local: np.ndarray,
    sizes: List[int],
    comm: Comm,
    dim: int,
    whiten: bool,
    sample_size: int,
    seed: int,
) -> PCAWhitening:
    """:func:`fit_pca_sharded` on shards already validated (``sizes``: rows per rank)."""
    total, offset = sum(sizes), sum(sizes[: comm.rank])
    x = x_local
    n_fit = total
    if 0 < sample_size < total:
        rows = np.sort(
            np.random.default_rng(seed).choice(total, size=sample_size, replace=False)
        )
        mine = rows[(rows >= offset) & (rows < offset + x.shape[0])] - offset
        x = x_local[mine]
        n_fit = sample_size
    d = x_local.shape[1]
    if dim > min(n_fit, d):
        raise ValueError(
            f"PCA dim={dim} must be <= min(num_rows={n_fit}, feature_dim={d}) of the data it "
            "is fitted on; lower the PCA dimension or fit on more rows"
        )
    mean = comm.all_reduce_sum(torch.from_numpy(row_sum(x))).numpy() / n_fit
    cov = comm.all_reduce_sum(torch.from_numpy(scatter(x, mean))).numpy() / n_fit
    return PCAWhitening(dim, whiten=whiten).fit_moments(mean, cov)


PREPROCESSING_DEFAULTS = {
    "pca_dim": 0,
    "whiten": True,
    "l2_norm": True,
    "order": "pca_l2",
    "pca_sample_size": 0,
}


def preprocessing_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """The pre-processing keywords of the sharded routes, defaults filled in."""
    unknown = sorted(set(options) - set(PREPROCESSING_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown pre-processing arguments {unknown}; valid: "
            f"{sorted(PREPROCESSING_DEFAULTS)}"
        )
    return {**PREPROCESSING_DEFAULTS, **options}


def preprocess_shards(
    x_local: np.ndarray,
    pca_dim: int,
    whiten: bool,
    l2_norm: bool,
    order: str,
    pca_sample_size: int,
    seed: int,
    inplace: bool,
    process_group: Optional[object],
) -> Tuple[np.ndarray, Optional[PCAWhitening], List[int]]:
    """Validate the shards, fit the PCA over all ranks and transform the local rows.

    Returns:
        (pre-processed local rows, PCA or None, rows per rank).
    """
    check_order(order)
    comm = Comm(process_group)
    sizes = check_shards(x_local, comm)
    pca = None
    x = x_local
    if pca_dim > 0:
        if l2_norm and order == "l2_pca":
            x = l2_normalize(x, out=x if inplace and x.dtype == np.float32 else None)
            inplace = True
        pca = fit_pca_on_shards(x, sizes, comm, pca_dim, whiten, pca_sample_size, seed)
    x = apply_preprocessing(x, pca, l2_norm=l2_norm, order="pca_l2", inplace=inplace)
    return x, pca, sizes
