"""Time and memory models of ``run_kmeans`` (faiss) and ``distributed_kmeans`` (Lloyd)
and their non-negative fits on relative errors; pure, nothing is measured here."""

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import numpy as np


#: ImageNet-1k training images (ILSVRC-2012 train split).
IMAGENET_TRAIN_IMAGES = 1_281_167
GiB = float(2**30)

#: Elements per temporary row block of the torch k-means passes; must equal
#: ``vissl_clusterfit.clustering.blocks.BLOCK_ELEMENTS`` (checked when measuring).
BLOCK_ELEMENTS = 1 << 24
#: faiss' exhaustive L2 search tile (``faiss.cvar.distance_compute_blas_query_bs`` x
#: ``distance_compute_blas_database_bs``; read from faiss when measuring).
FAISS_BLAS_TILE = (4096, 1024)
#: Rows per faiss search call of ``assign_to_centroids``.
ASSIGN_BATCH = 65536

TIME_TERMS = ("s_per_nKD", "s_per_nK", "s_per_nD", "s_const")


# --------------------------------------------------------------------------- fits


def time_features(n: float, k: float, d: float) -> Tuple[float, float, float, float]:
    """Terms of the time model: the assignment GEMM (n K D), the passes over the n x K
    scores (argmin / top-2), the per-row passes (n D: norms, float64 re-ranking,
    per-cluster sums) and a constant."""
    return (float(n) * k * d, float(n) * k, float(n) * d, 1.0)


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """``y = sum(coef_i * x_i)`` with non-negative coefficients, fitted on relative
    errors; ``rel_residuals`` = (fit - measured) / measured per point."""

    terms: Tuple[str, ...]
    coef: Tuple[float, ...]
    rel_residuals: Tuple[float, ...]

    def predict(self, x: Sequence[float]) -> float:
        if len(x) != len(self.coef):
            raise ValueError(f"expected {len(self.coef)} terms, got {len(x)}")
        return float(sum(c * v for c, v in zip(self.coef, x)))

    @property
    def max_abs_rel_residual(self) -> float:
        return max((abs(r) for r in self.rel_residuals), default=float("nan"))

    def as_dict(self) -> Dict[str, Any]:
        return {
            "terms": list(self.terms),
            "coef": list(self.coef),
            "rel_residuals": [round(r, 4) for r in self.rel_residuals],
            "max_abs_rel_residual": round(self.max_abs_rel_residual, 4),
        }


def fit_nonneg_relative(
    xs: Sequence[Sequence[float]], ys: Sequence[float], terms: Sequence[str]
) -> LinearFit:
    """Non-negative least squares of ``ys ~ xs @ coef`` minimising the relative errors
    ``(fit - y) / y`` (times span orders of magnitude across the grid).

    Raises ``ValueError`` when there are fewer points than terms or a ``y <= 0``.
    """
    from scipy.optimize import nnls

    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(terms):
        raise ValueError(
            f"xs must be (points, {len(terms)}) and ys (points,), got {x.shape} and "
            f"{y.shape}"
        )
    if x.shape[0] < x.shape[1]:
        raise ValueError(
            f"{x.shape[0]} points cannot fit {x.shape[1]} terms; measure more points"
        )
    if not (y > 0).all():
        raise ValueError(f"every measured value must be > 0 to fit, got {y.tolist()}")
    # Columns scaled to unit norm so nnls is well conditioned (n K D ~ 1e10 vs 1).
    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(a / scale, np.ones_like(y))
    coef = c / scale
    fitted = x @ coef
    return LinearFit(
        terms=tuple(terms),
        coef=tuple(float(v) for v in coef),
        rel_residuals=tuple(float(v) for v in (fitted - y) / y),
    )


MEMORY_TERMS = ("model_scale", "bytes_const")


def fit_memory(
    model_bytes: Sequence[float], measured_bytes: Sequence[float]
) -> LinearFit:
    """Calibration of a memory model: ``measured = s * model + c`` (allocator slack,
    library buffers), non-negative, on relative errors."""
    return fit_nonneg_relative(
        [(float(m), 1.0) for m in model_bytes], measured_bytes, MEMORY_TERMS
    )


def fit_time(
    points: Sequence[Tuple[float, float, float]], ys: Sequence[float]
) -> LinearFit:
    """``fit_nonneg_relative`` on ``time_features`` of (n, K, D) points."""
    return fit_nonneg_relative([time_features(*p) for p in points], ys, TIME_TERMS)


def fit_time_nkd_only(
    points: Sequence[Tuple[float, float, float]], ys: Sequence[float]
) -> LinearFit:
    """The one-term model ``time = a * n K D`` (no overhead), for comparison."""
    return fit_nonneg_relative(
        [(float(n) * k * d,) for n, k, d in points], ys, ("s_per_nKD",)
    )


# --------------------------------------------------------------------------- time


@dataclasses.dataclass(frozen=True)
class Scale:
    """The clustering problem to extrapolate to."""

    n: int = IMAGENET_TRAIN_IMAGES
    d: int = 2048
    k: int = 16000
    niter: int = 50
    max_points_per_centroid: int = 256

    @property
    def faiss_train_rows(self) -> int:
        return min(self.n, self.k * self.max_points_per_centroid)


def allreduce_s(k: int, d: int, world: int, gbps: float, latency_us: float) -> float:
    """One ring all-reduce of the k-means statistics, ``K + K*D + 1`` float64 (counts,
    sums, changed-label count: ``distributed_kmeans``' one collective per iteration):
    every rank sends and receives ``2 (W - 1) / W`` times the buffer, in ``2 (W - 1)``
    steps of ``latency_us``. ``gbps``: bus bandwidth in GB/s (1e9 bytes), an assumption.
    """
    if world <= 1:
        return 0.0
    if gbps <= 0:
        raise ValueError(f"all-reduce bandwidth must be > 0 GB/s, got {gbps}")
    nbytes = (k * d + k + 1) * 8.0
    steps = 2.0 * (world - 1)
    return steps / world * nbytes / (gbps * 1e9) + steps * latency_us * 1e-6


def faiss_kmeans_s(
    per_iter: LinearFit, fixed: LinearFit, scale: Scale, threads: int = 1
) -> float:
    """``run_kmeans`` on one process: the ``niter=0`` call at N rows (initialisation +
    assignment of all rows) + ``niter`` iterations on faiss' training rows; ``threads``
    > 1 divides by the thread count (ideal linear scaling, an assumption)."""
    s = scale
    total = fixed.predict(time_features(s.n, s.k, s.d)) + s.niter * per_iter.predict(
        time_features(s.faiss_train_rows, s.k, s.d)
    )
    return total / max(1, threads)


def lloyd_kmeans_s(
    per_iter: LinearFit,
    fixed: LinearFit,
    scale: Scale,
    world: int,
    gbps: float,
    latency_us: float,
) -> Tuple[float, float]:
    """``distributed_kmeans`` over ``world`` processes of one thread: (total seconds,
    of which all-reduce). Every rank computes on ceil(N / W) rows; each of the
    ``niter + 1`` assignments ends with one all-reduce (no early stop assumed)."""
    s = scale
    n_local = math.ceil(s.n / world)
    compute = fixed.predict(
        time_features(n_local, s.k, s.d)
    ) + s.niter * per_iter.predict(time_features(n_local, s.k, s.d))
    comm = (s.niter + 1) * allreduce_s(s.k, s.d, world, gbps, latency_us)
    return compute + comm, comm


# --------------------------------------------------------------------------- memory


def lloyd_extra_bytes(n: int, k: int, d: int, block: int = BLOCK_ELEMENTS) -> int:
    """Peak bytes ``distributed_kmeans`` allocates on top of its (n, D) float32 shard,
    read from the code (``assign.nearest_centroids``, ``reseed.local_stats``, the
    iteration loop); the largest of three moments of an iteration:

    - in ``nearest_centroids``: centroids (f64), last iteration's sums and all-reduce
      buffer (f64), the float32 centroid copy, old and new labels and distances (8 bytes
      each per row), and the temporaries of a row block of ``rows = block // max(K,
      2 D)`` rows: the scores (rows x K float32: the GEMM and its scaled copy, then
      the scores) and the float64 re-ranking (the block in f64, the 2 candidate
      centroids of each row and their difference: 5 x rows x D x 8 bytes). While the
      second block is computed, the first block's scores and difference are still
      bound (the second block has ``min(rows, n - rows)`` rows);
    - in ``local_stats``: centroids, last sums, last buffer, new sums, a float64 row
      block of ``block // D`` rows, labels (2) and distances;
    - at the centroid update: centroids, sums, buffer and two K x D temporaries.
    """
    kd = float(k) * d
    r1 = min(n, block // max(k, 2 * d, 1))
    r2 = min(r1, n - r1)

    def scores(rows: int) -> float:
        return rows * k * 4.0

    def unit(rows: int) -> float:  # one float64 row block
        return rows * d * 8.0

    blocks = max(2 * scores(r1), scores(r1) + 5 * unit(r1))
    if r2 > 0:
        prev = 2 * unit(r1)  # the first block's difference, still bound
        blocks = max(
            blocks,
            prev + scores(r1) + 2 * scores(r2),
            prev + scores(r2) + 5 * unit(r2),
        )
    assign = kd * (8 + 8 + 8 + 4) + n * 32.0 + blocks
    rows_ls = min(n, max(1, block // d))
    stats = kd * 32 + n * 24.0 + rows_ls * d * 8.0
    update = kd * 40 + n * 24.0
    return int(max(assign, stats, update))


def faiss_extra_bytes(
    n: int,
    k: int,
    d: int,
    max_points_per_centroid: int = 256,
    blas_tile: Tuple[int, int] = FAISS_BLAS_TILE,
    assign_batch: int = ASSIGN_BATCH,
) -> int:
    """Peak bytes ``run_kmeans`` allocates on top of the (n, D) float32 features it
    receives (no copy: they are already C-contiguous float32), read from the code and
    faiss' ``Clustering::train``: the larger of

    - training: a copy of the training sample when faiss subsamples, per training row
      a distance (4), an assignment (8) and a norm (4) , the centroids, the index'
      copy, the best-run copy and the Python copy (4 x K x D float32), one BLAS tile;
    - assignment: the centroids (run_kmeans' copy, faiss' Python object and its index,
      the search index: 4 x K x D float32), labels int64 + distances float32 per row, one search batch
      (distances, ids, norms) and one BLAS tile.

    A BLAS tile holds ``min(rows, tile[0]) x min(K, tile[1])`` float32 that are
    written (pages never written do not count in the resident memory).

    Empty-cluster re-seeding (float64 copies of labels, distances and centroids) is not
    counted: faiss splits empty clusters itself during training, so it rarely runs.
    """
    kd = float(k) * d
    n_train = min(n, k * max_points_per_centroid)
    sample = n_train * d * 4.0 if n_train < n else 0.0
    tile = min(n_train, blas_tile[0]) * min(k, blas_tile[1]) * 4.0
    train = sample + n_train * 16.0 + 4 * kd * 4 + tile
    batch = min(n, assign_batch)
    tile = min(batch, blas_tile[0]) * min(k, blas_tile[1]) * 4.0
    assign = 4 * kd * 4 + n * 12.0 + batch * 16.0 + tile
    return int(max(train, assign))


def faiss_gather_peak_bytes(n: int, d: int, world: int) -> int:
    """Rank 0's peak while ``extract_features`` gathers the features of ``world`` ranks
    for the faiss route, from the code (``cluster_step.extraction._gather_in_order`` and
    torch's ``gather_object``), not measured: its own rows (F / W) and their pickle
    (F / W), the coalesced receive buffer (F), the unpickled arrays (up to F) and the
    bytes copies of the chunk being unpickled (2 F / W); afterwards the unpickled list
    and the ordered output (2 F). With W = 1 nothing is gathered: F."""
    f = float(n) * d * 4
    if world <= 1:
        return int(f)
    return int(max(2 * f + 4 * f / world, 2 * f + f / world))
