"""Float64 first and second moments of feature rows, accumulated chunk by chunk.

The PCA-whitening of the features (DeepCluster thesis, Caron 2018, Sec. 4.2) needs their
mean and covariance; :class:`.pca.PCAWhitening` computes them from one array and the
sharded pre-processing (:mod:`.sharded`, DeeperCluster Sec. 4.2) all-reduces them over
ranks. Float64 sums over fixed row chunks make both give the same transform.
"""

from typing import Iterator, Tuple

import numpy as np
import torch


__all__ = [
    "CHUNK_ROWS",
    "device_chunks",
    "device_moments",
    "device_transform_bytes",
    "row_chunks",
    "row_sum",
    "sample_rows",
    "scatter",
]

#: Rows per chunk for the streaming passes: large enough for BLAS efficiency, small
#: enough that a float64 copy of a chunk of 4096-d features stays ~130 MB.
CHUNK_ROWS = 4096


def row_chunks(num_rows: int) -> Iterator[slice]:
    """Consecutive row slices of ``CHUNK_ROWS`` (read at call time) covering
    ``num_rows``."""
    for start in range(0, num_rows, CHUNK_ROWS):
        yield slice(start, start + CHUNK_ROWS)


def row_sum(x: np.ndarray) -> np.ndarray:
    """Float64 sum of the rows of ``x`` (D,), chunk by chunk."""
    out = np.zeros(x.shape[1], dtype=np.float64)
    for rows in row_chunks(x.shape[0]):
        out += x[rows].sum(axis=0, dtype=np.float64)
    return out


def scatter(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Float64 scatter matrix sum_i (x_i - mean)(x_i - mean)^T (D, D), chunk by chunk."""
    out = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
    for rows in row_chunks(x.shape[0]):
        centered = x[rows].astype(np.float64) - mean
        out += centered.T @ centered
    return out


def sample_rows(x: np.ndarray, sample_size: int, seed: int) -> np.ndarray:
    """``x``, or ``sample_size`` of its rows drawn without replacement by
    ``numpy.random.default_rng(seed)`` when 0 < sample_size < len(x).

    Raises:
        ValueError: if ``sample_size`` is negative.
    """
    if sample_size < 0:
        raise ValueError(
            f"sample_size must be >= 0 (0 = use all rows), got {sample_size}"
        )
    if 0 < sample_size < x.shape[0]:
        rng = np.random.default_rng(seed)
        # Sorted so the accumulation order, hence the rounding, only depends on the sample.
        rows = np.sort(rng.choice(x.shape[0], size=sample_size, replace=False))
        return x[rows]
    return x


def device_chunks(x: np.ndarray, device: torch.device) -> Iterator[torch.Tensor]:
    """float64 copies of ``x``'s row chunks on ``device``, one at a time (device
    memory: one chunk, whatever N)."""
    for rows in row_chunks(x.shape[0]):
        chunk = torch.from_numpy(np.ascontiguousarray(x[rows]))
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
    for chunk in device_chunks(x, device):
        total += chunk.sum(dim=0)
    mean = total / x.shape[0]
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=device)
    for chunk in device_chunks(x, device):
        chunk -= mean
        cov.addmm_(chunk.T, chunk)
    return mean.cpu().numpy(), (cov / x.shape[0]).cpu().numpy()


def device_transform_bytes(dim_in: int, dim_out: int) -> int:
    """Device memory of :meth:`.pca.PCAWhitening.transform` with a ``device``: one chunk
    (float32 and float64), its float64 and float32 projections, the mean and the
    projection matrix, whatever N."""
    chunk = CHUNK_ROWS * (12 * dim_in + 12 * dim_out)
    return chunk + 8 * dim_in * (dim_out + 1)
