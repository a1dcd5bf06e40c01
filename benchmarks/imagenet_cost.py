"""Cost of the cluster step at ImageNet scale, extrapolated from small measurements.

The question (issue "The real user's path ...", item 7): what do the time and the peak
memory of ClusterFit's cluster step (Yan et al., CVPR 2020, Sec. 3.1: k-means of N_pre's
features of the whole data set) come to for ImageNet-1k, N = 1,281,167 images, D = 2048
(ResNet-50 res5 average pool), K = 16,000 (the paper's Table 6 setting and our
``ncf`` defaults), 50 iterations (VISSL's ClusterFit ``NUM_ITER`` and our ``NITER``), per
k-means backend:

- ``faiss``: rank 0 holds all N x D features and runs ``run_kmeans`` (faiss trains on at
  most ``max_points_per_centroid * K`` = 256 * 16,000 = 4.1M rows, so on all 1.28M);
- ``distributed``: Lloyd k-means (DeeperCluster, Caron et al., ICCV 2019, Sec. 4.2) over
  W = 8 or 16 processes, each on N / W rows, all-reducing K counts and K x D float64 sums
  per iteration.

Nothing here runs at that scale. The script

1. times ``run_kmeans`` and ``distributed_kmeans`` (one process, no process group) on a
   small grid of (N, D, K), each with ``niter=0`` (set-up + one assignment of all rows)
   and ``niter=--niter``; the per-iteration time is the difference over the iterations
   done. Wall and CPU time (``time.process_time``) are both recorded: with one thread,
   CPU time is much less sensitive to the other load on the machine than wall time;
2. fits ``time = a nKD + b nK + c nD + d`` (non-negative least squares on relative
   errors; the GEMM, the passes over the n x K scores, the per-row passes, a constant)
   per backend and clock, for the per-iteration time (n = faiss' training rows
   ``min(N, 256 K)``, resp. the rows of the shard) and for the ``niter=0`` call; it
   reports every point's residual, a one-term ``a nKD`` fit for comparison, the error
   on the largest point when it is left out of the fit, and the fit against
   ``run_kmeans`` as timed by ``cluster_step_speed`` on a quiet machine (its results
   file, when present);
3. measures the peak RSS (VmHWM) of each ``niter=--niter`` call over the features it
   received, compares it with a per-backend memory model written from the code
   (``faiss_extra_bytes``, ``lloyd_extra_bytes``) and calibrates it as
   ``measured = s * model + c`` (non-negative fit, residuals reported);
4. times ResNet-50 (torchvision, random weights, eval, no grad, 224 px) forward batches
   and the decode + resize of a synthetic 500x375 JPEG on this CPU;
5. extrapolates: faiss on one process (1 thread measured; W threads only under the
   labelled assumption of linear scaling), distributed over W processes of one thread
   each (per-rank compute at N / W rows + ``niter + 1`` ring all-reduces of
   ``(K*D + K + 1)`` float64 at ``--allreduce-gbps``, an assumption), the peak memory
   per process, and the extraction time (measured CPU rate; GPU only as a labelled,
   published figure, ``--gpu-img-per-s``).

Example (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.imagenet_cost   # ~2-3 min, 2 cores
    .venv/bin/python -m benchmarks.imagenet_cost --quick              # ~30 s, small grid
    .venv/bin/python -m benchmarks.imagenet_cost --allreduce-gbps 25 --worlds 8,16,32

Writes results/imagenet_cost.{json,md} (``--quick``: imagenet_cost_quick.*).
"""

import argparse
import dataclasses
import io
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import RESULTS_DIR, machine_info, write_results
from benchmarks.measure import PeakRSS, Timer, median
from benchmarks.report import print_tables


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

#: Published, not measured here: ResNet-50 v1.5 FP32 inference, 1x V100 16GB, batch
#: 256 (NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5
#: README, "Inference performance: NVIDIA DGX-1 (1x V100 16GB)", pytorch-21.03 NGC).
GPU_IMG_PER_S = 1261.0
GPU_SOURCE = (
    "published ResNet-50 v1.5 FP32 inference, 1x V100 16GB, batch 256: 1261 img/s "
    "(NVIDIA DeepLearningExamples resnet50v1.5 README); an assumption, not measured"
)

DEFAULT_GRID: Tuple[Tuple[int, int, int], ...] = (  # (N, D, K)
    (10000, 256, 100),
    (10000, 256, 1000),
    (40000, 256, 500),
    (40000, 256, 50),  # faiss subsamples: 256 * 50 = 12,800 training rows
    (40000, 256, 2000),
    (5000, 2048, 100),
    (10000, 2048, 500),
    (20000, 2048, 200),
    (20000, 2048, 1000),
    # the largest K x D (memory calibration of the K x D terms; also held out below)
    (12000, 2048, 4000),
)
QUICK_GRID: Tuple[Tuple[int, int, int], ...] = (
    (4000, 256, 100),
    (8000, 256, 400),
    (8000, 512, 100),
    (4000, 1024, 200),
    (6000, 2048, 100),
    (4000, 2048, 400),
)

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


# --------------------------------------------------------------------------- table


def extrapolate(
    fits: Dict[str, Dict[str, LinearFit]],
    mem_fits: Dict[str, LinearFit],
    scale: Scale,
    worlds: Sequence[int],
    gbps: float,
    latency_us: float,
    clock: str = "cpu",
) -> List[Dict[str, Any]]:
    """Rows of the extrapolated table: faiss on one process (1 thread; W threads under
    ideal scaling), distributed over 1 and each W of ``worlds`` (one thread each).

    ``fits[backend][f"{clock}_per_iter"|f"{clock}_fixed"]``; the peak memory per
    process is the features it holds + the backend's memory model (``model``), or +
    ``mem_fits[backend]`` applied to the model (``calibrated``).
    """
    s = scale
    f_bytes = float(s.n) * s.d * 4
    rows: List[Dict[str, Any]] = []

    def memory(f_local: float, extra: float, fit: LinearFit) -> Dict[str, float]:
        calibrated = f_local + fit.predict((extra, 1.0))
        return {
            "F_local_GiB": f_local / GiB,
            "peak_GiB_model": (f_local + extra) / GiB,
            "peak_GiB_calibrated": calibrated / GiB,
            "peak_over_F_local": calibrated / f_local,
        }

    fp, ff = fits["faiss"][f"{clock}_per_iter"], fits["faiss"][f"{clock}_fixed"]
    extra = faiss_extra_bytes(s.n, s.k, s.d, s.max_points_per_centroid)
    for w in [1, *worlds]:
        rows.append(
            {
                "backend": "faiss on rank 0",
                "processes": w,
                "threads_per_process": 1 if w == 1 else f"{w} (ideal scaling, assumed)",
                "kmeans_h": faiss_kmeans_s(fp, ff, s, threads=w) / 3600.0,
                "allreduce_s": None,
                **memory(f_bytes, extra, mem_fits["faiss"]),
                "rank0_gather_GiB_code": faiss_gather_peak_bytes(s.n, s.d, w) / GiB,
            }
        )
    lp = fits["distributed"][f"{clock}_per_iter"]
    lf = fits["distributed"][f"{clock}_fixed"]
    for w in [1, *worlds]:
        t, comm = lloyd_kmeans_s(lp, lf, s, w, gbps, latency_us)
        n_local = math.ceil(s.n / w)
        f_local = float(n_local) * s.d * 4
        extra = lloyd_extra_bytes(n_local, s.k, s.d)
        rows.append(
            {
                "backend": "distributed (Lloyd)",
                "processes": w,
                "threads_per_process": 1,
                "kmeans_h": t / 3600.0,
                "allreduce_s": comm,
                **memory(f_local, extra, mem_fits["distributed"]),
                # its shard + labels and distances (12 B per image) gathered by
                # gather_object: pickles, receive buffer, unpickled, concatenated
                "rank0_gather_GiB_code": (f_local + 4 * 12.0 * s.n) / GiB,
            }
        )
    return rows


def extraction_rows(
    cpu_img_per_s: float,
    cpu_decode_img_per_s: Optional[float],
    n: int,
    worlds: Sequence[int],
    gpu_img_per_s: float,
) -> List[Dict[str, Any]]:
    """Hours to extract ``n`` images: the measured CPU forward rate (and forward +
    JPEG decode/resize, one core doing both) on 1 and W processes (ideal scaling,
    one core each), and ``gpu_img_per_s`` per GPU (assumption) on 1 and W GPUs."""
    rows: List[Dict[str, Any]] = []
    both = None
    if cpu_decode_img_per_s:
        both = 1.0 / (1.0 / cpu_img_per_s + 1.0 / cpu_decode_img_per_s)
    for w in [1, *worlds]:
        rows.append(
            {
                "device": "this CPU, 1 core per process (measured rate)",
                "processes": w,
                "img_per_s_per_process": cpu_img_per_s,
                "forward_h": n / cpu_img_per_s / w / 3600.0,
                "forward_plus_decode_h": (
                    None if both is None else n / both / w / 3600.0
                ),
            }
        )
    for w in [1, *worlds]:
        rows.append(
            {
                "device": "GPU, ASSUMED published rate (not measured)",
                "processes": w,
                "img_per_s_per_process": gpu_img_per_s,
                "forward_h": n / gpu_img_per_s / w / 3600.0,
                "forward_plus_decode_h": None,
            }
        )
    return rows


# --------------------------------------------------------------------------- measuring


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def synthetic_features(n: int, d: int, seed: int = 0) -> np.ndarray:
    """L2-normalised rows near a 16-dimensional subspace plus noise: on isotropic random
    rows Lloyd's k-means stops after one update (no label changes), which would hide the
    per-iteration cost; here labels keep changing for many iterations."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16), dtype=np.float32)
    basis = rng.standard_normal((16, d), dtype=np.float32)
    x = z @ basis
    x += 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _timed(fn: Any) -> Tuple[float, float, Any]:
    c0 = time.process_time()
    with Timer() as t:
        out = fn()
    return t.s, time.process_time() - c0, out


def measure_point(
    backend: str, n: int, d: int, k: int, niter: int, seed: int
) -> Dict[str, Any]:
    """Wall/CPU seconds of the ``niter=0`` and ``niter`` calls of one backend on fresh
    synthetic features, and the peak RSS of the ``niter`` call over the features."""
    from benchmarks import plugin

    clustering = plugin.clustering
    if backend == "faiss":

        def run(it: int) -> Any:
            return clustering.run_kmeans(x, k, niter=it, seed=seed)

    else:

        def run(it: int) -> Any:
            return clustering.distributed_kmeans(x, k, niter=it, seed=seed)

    x = synthetic_features(n, d, seed)
    load_before = _load1()
    fixed_wall, fixed_cpu, _ = _timed(lambda: run(0))
    with PeakRSS() as mem:
        run_wall, run_cpu, res = _timed(lambda: run(niter))
    iters = int(res.iterations)
    n_iter_rows = min(n, 256 * k) if backend == "faiss" else n
    f_bytes = n * d * 4
    model = (
        faiss_extra_bytes(n, k, d)
        if backend == "faiss"
        else lloyd_extra_bytes(n, k, d, plugin.clustering.blocks.BLOCK_ELEMENTS)
    )
    return {
        "backend": backend,
        "N": n,
        "D": d,
        "K": k,
        "n_iter_rows": n_iter_rows,
        "iterations": iters,
        "fixed_wall_s": fixed_wall,
        "fixed_cpu_s": fixed_cpu,
        "run_wall_s": run_wall,
        "run_cpu_s": run_cpu,
        "per_iter_wall_s": (run_wall - fixed_wall) / iters if iters else None,
        "per_iter_cpu_s": (run_cpu - fixed_cpu) / iters if iters else None,
        "F_MiB": f_bytes / 2**20,
        "peak_extra_MiB": mem.delta / 2**20,
        "model_extra_MiB": model / 2**20,
        "measured_over_model": mem.delta / model,
        "peak_over_F": (f_bytes + mem.delta) / f_bytes,
        "rss_method": mem.method,
        "load1_before": load_before,
        "load1_after": _load1(),
    }


def _jpeg_bytes(width: int = 500, height: int = 375, quality: int = 90) -> bytes:
    """A smooth synthetic photo-like JPEG (gradients + low-frequency noise), about the
    average ImageNet image size; random pixels would compress unrealistically badly."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    low = rng.standard_normal((height // 25 + 1, width // 25 + 1, 3))
    low = np.kron(low, np.ones((25, 25, 1)))[:height, :width]
    img = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=2)
    img = np.clip(200 * img + 30 * low, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def measure_extraction(batch: int, batches: int, decode_images: int) -> Dict[str, Any]:
    """ResNet-50 forward (torchvision, random weights, eval, no grad, 224 px, float32)
    on this CPU, the first batch a warm-up; and decode + Resize(256) + CenterCrop(224)
    + ToTensor + Normalize of a synthetic 500x375 JPEG."""
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    walls: List[float] = []
    cpus: List[float] = []
    load_before = _load1()
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(batches):
            w, c, _ = _timed(lambda: model(x))
            walls.append(w)
            cpus.append(c)
    jpeg = _jpeg_bytes()
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    def decode() -> None:
        for _ in range(decode_images):
            tf(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    decode()  # warm-up
    dec_wall, dec_cpu, _ = _timed(decode)
    return {
        "batch": batch,
        "batches": batches,
        "batch_wall_s": walls,
        "batch_cpu_s": cpus,
        "img_per_s_wall": batch / median(walls),
        "img_per_s_cpu": batch / median(cpus),
        "jpeg_bytes": len(jpeg),
        "decode_images": decode_images,
        "decode_img_per_s_wall": decode_images / dec_wall,
        "decode_img_per_s_cpu": decode_images / dec_cpu,
        "load1_before": load_before,
        "load1_after": _load1(),
    }


def set_threads(threads: int) -> Dict[str, Any]:
    """faiss' OpenMP, torch and every BLAS/OpenMP pool threadpoolctl finds, to
    ``threads``; returns what was set (the threadpoolctl limiter is kept alive)."""
    import faiss
    import torch

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    info: Dict[str, Any] = {"faiss_omp": faiss.omp_get_max_threads()}
    info["torch"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits

        global _LIMITER
        _LIMITER = threadpool_limits(limits=threads)
        info["threadpoolctl"] = "all BLAS/OpenMP pools limited"
    except ImportError:
        info["threadpoolctl"] = "not installed: only faiss and torch limited"
    return info


_LIMITER: Any = None


# --------------------------------------------------------------------------- main


def _fit_inputs(
    points: Sequence[Dict[str, Any]], clock: str, part: str
) -> Tuple[List[Tuple[float, float, float]], List[float]]:
    """(n, K, D) and seconds of the measured points for ``part`` = per_iter (n = the
    rows an iteration works on) or fixed (n = N)."""
    n_key = "n_iter_rows" if part == "per_iter" else "N"
    xs = [(p[n_key], p["K"], p["D"]) for p in points]
    return xs, [p[f"{part}_{clock}_s"] for p in points]


def fit_backends(points: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, LinearFit]]:
    """Per backend and clock (cpu, wall): the per-iteration and fixed-cost fits, and
    the one-term n K D fit of the per-iteration time."""
    fits: Dict[str, Dict[str, LinearFit]] = {}
    for backend in ("faiss", "distributed"):
        pts = [p for p in points if p["backend"] == backend and p["iterations"]]
        fits[backend] = {}
        for clock in ("cpu", "wall"):
            xs, ys = _fit_inputs(pts, clock, "per_iter")
            fits[backend][f"{clock}_per_iter"] = fit_time(xs, ys)
            fits[backend][f"{clock}_per_iter_nKD_only"] = fit_time_nkd_only(xs, ys)
            xs, ys = _fit_inputs(pts, clock, "fixed")
            fits[backend][f"{clock}_fixed"] = fit_time(xs, ys)
    return fits


def fit_memory_backends(points: Sequence[Dict[str, Any]]) -> Dict[str, LinearFit]:
    """Per backend: ``fit_memory`` of the measured peaks (over F) on the model."""
    fits = {}
    for backend in ("faiss", "distributed"):
        pts = [p for p in points if p["backend"] == backend]
        fits[backend] = fit_memory(
            [p["model_extra_MiB"] * 2**20 for p in pts],
            [p["peak_extra_MiB"] * 2**20 for p in pts],
        )
    return fits


def holdout_rows(points: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Extrapolation check: per backend and clock, fit the per-iteration time without
    the point of largest n K D and predict that point."""
    rows = []
    for backend in ("faiss", "distributed"):
        pts = [p for p in points if p["backend"] == backend and p["iterations"]]
        pts = sorted(pts, key=lambda p: p["n_iter_rows"] * p["K"] * p["D"])
        if len(pts) <= len(TIME_TERMS):
            continue
        for clock in ("cpu", "wall"):
            fit = fit_time(*_fit_inputs(pts[:-1], clock, "per_iter"))
            last = pts[-1]
            pred = fit.predict(time_features(last["n_iter_rows"], last["K"], last["D"]))
            meas = last[f"per_iter_{clock}_s"]
            rows.append(
                {
                    "backend": backend,
                    "clock": clock,
                    "held_out": f"N={last['N']} D={last['D']} K={last['K']}",
                    "measured_s": meas,
                    "predicted_s": pred,
                    "error_pct": 100.0 * (pred - meas) / meas,
                }
            )
    return rows


def quiet_run_rows(
    fits: Dict[str, Dict[str, LinearFit]], results: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """The faiss CPU-time fit against ``run_kmeans`` as measured by cluster_step_speed
    (its results file ``results``: table "k-means alone ...", ``data.args.niter``)."""
    niter = int(results["data"]["args"]["niter"])
    threads = results["machine"].get("faiss_omp_threads")
    table = next(t for t in results["tables"] if t["title"].startswith("k-means alone"))
    per_iter, fixed = fits["faiss"]["cpu_per_iter"], fits["faiss"]["cpu_fixed"]
    rows = []
    for r in table["rows"]:
        n, d, k = int(r["N"]), int(r["D"]), int(r["K"])
        pred = fixed.predict(time_features(n, k, d)) + niter * per_iter.predict(
            time_features(int(r["n_train"]), k, d)
        )
        meas = float(r["ours_run_kmeans_s"])
        rows.append(
            {
                "N": n,
                "D": d,
                "K": k,
                "niter": niter,
                "measured_s": meas,
                "measured_threads": threads,
                "predicted_1_thread_s": pred,
                "predicted_over_measured": pred / meas,
            }
        )
    return rows


def _fit_rows(fits: Dict[str, Dict[str, LinearFit]]) -> List[Dict[str, Any]]:
    rows = []
    for backend, per in fits.items():
        for name, fit in per.items():
            coef = dict(zip(fit.terms, fit.coef))
            nkd = coef.get("s_per_nKD", 0.0)

            def ns(term: str) -> Optional[float]:
                return 1e9 * coef[term] if term in coef else None

            rows.append(
                {
                    "backend": backend,
                    "model": name,
                    "ps_per_nKD": 1e12 * nkd,
                    "GFLOP_per_s_eff": 2.0 / nkd / 1e9 if nkd > 0 else None,
                    "ns_per_nK": ns("s_per_nK"),
                    "ns_per_nD": ns("s_per_nD"),
                    "const_ms": 1e3 * coef["s_const"] if "s_const" in coef else None,
                    "max_abs_residual_pct": 100 * fit.max_abs_rel_residual,
                    "residuals_pct": " ".join(
                        f"{100 * r:+.0f}" for r in fit.rel_residuals
                    ),
                }
            )
    return rows


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="ImageNet-scale time and memory of the cluster step, extrapolated "
        "from small measurements on this machine."
    )
    ap.add_argument("--quick", action="store_true", help="small grid, results *_quick")
    ap.add_argument("--threads", type=int, default=1, help="faiss/torch/BLAS threads")
    ap.add_argument("--niter", type=int, default=3, help="iterations per timed call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worlds", default="8,16", help="process counts to extrapolate to")
    ap.add_argument("--n", type=int, default=IMAGENET_TRAIN_IMAGES)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=16000)
    ap.add_argument("--target-niter", type=int, default=50)
    ap.add_argument(
        "--allreduce-gbps",
        type=float,
        default=10.0,
        help="ASSUMED ring all-reduce bus bandwidth, GB/s (NVLink/InfiniBand-class)",
    )
    ap.add_argument("--allreduce-latency-us", type=float, default=20.0)
    ap.add_argument(
        "--gpu-img-per-s",
        type=float,
        default=GPU_IMG_PER_S,
        help="ASSUMED ResNet-50 images/s per GPU (default: published V100 FP32)",
    )
    ap.add_argument("--resnet-batch", type=int, default=8)
    ap.add_argument("--resnet-batches", type=int, default=3)
    ap.add_argument("--decode-images", type=int, default=40)
    ap.add_argument("--name", default="")
    return ap.parse_args(argv)


def _check_constants() -> None:
    """Warn when the package's block size or faiss' BLAS tile differ from the ones the
    memory models were written for."""
    import faiss

    from benchmarks import plugin

    block = plugin.clustering.blocks.BLOCK_ELEMENTS
    if block != BLOCK_ELEMENTS:
        print(f"WARNING: clustering BLOCK_ELEMENTS is {block}, the model assumes 2**24")
    tile = (
        int(faiss.cvar.distance_compute_blas_query_bs),
        int(faiss.cvar.distance_compute_blas_database_bs),
    )
    if tile != FAISS_BLAS_TILE:
        print(
            f"WARNING: faiss BLAS tile is {tile}, the model assumes {FAISS_BLAS_TILE}"
        )


def _assumptions(
    args: argparse.Namespace,
    machine: Dict[str, Any],
    loads: Sequence[float],
    mem_fits: Dict[str, LinearFit],
    scale: Scale,
) -> List[str]:
    gpu = (
        GPU_SOURCE
        if args.gpu_img_per_s == GPU_IMG_PER_S
        else f"{args.gpu_img_per_s} img/s per GPU, ASSUMED (--gpu-img-per-s)"
    )
    return [
        "no GPU was lent to this run: everything measured is CPU; GPU figures are "
        "assumptions, labelled as such",
        f"threads: {args.threads} per process (faiss OpenMP, torch, BLAS pools); load "
        f"average (1 min) during the measurements {min(loads)}-{max(loads)} on "
        f"{machine.get('cores')} cores (the machine was shared with other jobs)",
        "kmeans_h: from the CPU-time fit (time.process_time of the 1-thread process), "
        "close to what a quiet core of this machine takes; kmeans_h_wall_fit_under_load:"
        " from the wall-clock fit, inflated by the other load",
        f"all-reduce: ring, {args.allreduce_gbps} GB/s bus bandwidth, "
        f"{args.allreduce_latency_us} us per step, ASSUMED (--allreduce-gbps, "
        "--allreduce-latency-us); (K*D + K + 1) float64 per iteration, niter + 1 times",
        "faiss with W threads: the 1-thread time divided by W (ideal linear scaling, "
        "ASSUMED, not measured); distributed: W processes of 1 thread, each on its own "
        "core at the measured rate",
        f"memory: features held (F_local; F = N x D float32 = "
        f"{scale.n * scale.d * 4 / GiB:.2f} GiB) + the backend's memory model from the "
        "code; calibrated = s x model + c fitted on the grid's peaks (faiss s="
        f"{mem_fits['faiss'].coef[0]:.2f}, c={mem_fits['faiss'].coef[1] / 2**20:.0f} MiB;"
        f" distributed s={mem_fits['distributed'].coef[0]:.2f}, "
        f"c={mem_fits['distributed'].coef[1] / 2**20:.0f} MiB)",
        "rank0_gather_GiB_code: rank 0's peak while gathering, from the code, NOT "
        "measured: faiss route = all features through gather_object (pickles, receive "
        "buffer, unpickled arrays, ordered copy; about 2 F + 4 F / W); distributed "
        "route = its shard + labels and distances (12 bytes per image)",
        f"GPU extraction: {gpu}",
        "extraction on the CPU: forward only (forward_h) and forward + JPEG decode and "
        "resize of a synthetic 500x375 JPEG on the same core (forward_plus_decode_h); "
        "file reading, real JPEG sizes and the data loader are not measured",
    ]


def _tables(
    scale: Scale,
    table: List[Dict[str, Any]],
    ext_rows: List[Dict[str, Any]],
    fits: Dict[str, Dict[str, LinearFit]],
    holdout: List[Dict[str, Any]],
    quiet: List[Dict[str, Any]],
    points: List[Dict[str, Any]],
    mem_fits: Dict[str, LinearFit],
) -> List[Dict[str, Any]]:
    tables = [
        {
            "title": (
                f"Extrapolated: k-means of N={scale.n:,} x D={scale.d} at K={scale.k:,}, "
                f"{scale.niter} iterations"
            ),
            "columns": [
                "backend",
                "processes",
                "threads_per_process",
                "kmeans_h",
                "kmeans_h_wall_fit_under_load",
                "allreduce_s",
                "F_local_GiB",
                "peak_GiB_model",
                "peak_GiB_calibrated",
                "peak_over_F_local",
                "rank0_gather_GiB_code",
            ],
            "rows": table,
        },
        {
            "title": f"Extrapolated: ResNet-50 feature extraction of {scale.n:,} images",
            "columns": [
                "device",
                "processes",
                "img_per_s_per_process",
                "forward_h",
                "forward_plus_decode_h",
            ],
            "rows": ext_rows,
        },
        {
            "title": "Fits: time = a nKD + b nK + c nD + d (non-negative, relative errors)",
            "columns": [
                "backend",
                "model",
                "ps_per_nKD",
                "GFLOP_per_s_eff",
                "ns_per_nK",
                "ns_per_nD",
                "const_ms",
                "max_abs_residual_pct",
                "residuals_pct",
            ],
            "rows": _fit_rows(fits),
        },
        {
            "title": "Extrapolation check: per-iteration time of the largest point, "
            "fitted without it",
            "columns": [
                "backend",
                "clock",
                "held_out",
                "measured_s",
                "predicted_s",
                "error_pct",
            ],
            "rows": holdout,
        },
        {
            "title": "Memory model calibration: peak over F = s x model + c",
            "columns": [
                "backend",
                "s",
                "c_MiB",
                "max_abs_residual_pct",
                "residuals_pct",
            ],
            "rows": [
                {
                    "backend": b,
                    "s": f.coef[0],
                    "c_MiB": f.coef[1] / 2**20,
                    "max_abs_residual_pct": 100 * f.max_abs_rel_residual,
                    "residuals_pct": " ".join(
                        f"{100 * r:+.0f}" for r in f.rel_residuals
                    ),
                }
                for b, f in mem_fits.items()
            ],
        },
    ]
    if quiet:
        tables.append(
            {
                "title": "Check against cluster_step_speed_quiet (run_kmeans, quiet "
                "machine, 2 threads, wall) vs this fit (1 thread, CPU time)",
                "columns": list(quiet[0]),
                "rows": quiet,
            }
        )
    tables.append(
        {
            "title": "Measured grid (one call each; per iteration = (run - fixed) / it)",
            "columns": [
                "backend",
                "N",
                "D",
                "K",
                "n_iter_rows",
                "iterations",
                "fixed_cpu_s",
                "per_iter_cpu_s",
                "fixed_wall_s",
                "per_iter_wall_s",
                "F_MiB",
                "peak_extra_MiB",
                "model_extra_MiB",
                "measured_over_model",
                "load1_after",
            ],
            "rows": points,
        }
    )
    return tables


def _quiet_results() -> Optional[Dict[str, Any]]:
    path = os.path.join(RESULTS_DIR, "cluster_step_speed_quiet.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = _parse(argv)
    threads = set_threads(args.threads)
    machine = machine_info()
    machine["threads_set"] = threads
    _check_constants()
    worlds = [int(w) for w in args.worlds.split(",") if w]
    scale = Scale(args.n, args.d, args.k, args.target_niter)
    grid = QUICK_GRID if args.quick else DEFAULT_GRID
    niter = 2 if args.quick else args.niter

    points: List[Dict[str, Any]] = []
    for n, d, k in grid:
        for backend in ("faiss", "distributed"):
            p = measure_point(backend, n, d, k, niter, args.seed)
            points.append(p)
            print(
                f"{backend:11s} N={n:6d} D={d:4d} K={k:5d}: {p['iterations']} it, "
                f"per iteration {p['per_iter_cpu_s']:.4f} s CPU / "
                f"{p['per_iter_wall_s']:.4f} s wall, peak {p['peak_extra_MiB']:.0f} MiB "
                f"over F ({p['measured_over_model']:.2f}x model), load "
                f"{p['load1_after']}",
                flush=True,
            )
    fits = fit_backends(points)
    mem_fits = fit_memory_backends(points)
    extraction = measure_extraction(
        args.resnet_batch, args.resnet_batches, args.decode_images
    )
    print(
        f"ResNet-50 forward: {extraction['img_per_s_cpu']:.2f} img/s per CPU second, "
        f"{extraction['img_per_s_wall']:.2f} img/s wall; JPEG decode+resize: "
        f"{extraction['decode_img_per_s_cpu']:.0f} img/s per CPU second",
        flush=True,
    )

    common: Dict[str, Any] = dict(
        fits=fits,
        mem_fits=mem_fits,
        scale=scale,
        worlds=worlds,
        gbps=args.allreduce_gbps,
        latency_us=args.allreduce_latency_us,
    )
    table = extrapolate(clock="cpu", **common)
    for row, wall in zip(table, extrapolate(clock="wall", **common)):
        row["kmeans_h_wall_fit_under_load"] = wall["kmeans_h"]
    ext_rows = extraction_rows(
        extraction["img_per_s_cpu"],
        extraction["decode_img_per_s_cpu"],
        scale.n,
        worlds,
        args.gpu_img_per_s,
    )
    holdout = holdout_rows(points)
    quiet_results = _quiet_results()
    quiet = quiet_run_rows(fits, quiet_results) if quiet_results else []
    loads = [p["load1_after"] for p in points] + [extraction["load1_after"]]
    notes = _assumptions(args, machine, loads, mem_fits, scale)
    tables = _tables(scale, table, ext_rows, fits, holdout, quiet, points, mem_fits)
    print_tables(tables)
    print("\nAssumptions:\n" + "\n".join(f"- {a}" for a in notes))
    name = args.name or ("imagenet_cost_quick" if args.quick else "imagenet_cost")
    paths = write_results(
        name,
        machine,
        tables,
        data={
            "scale": dataclasses.asdict(scale),
            "worlds": worlds,
            "points": points,
            "fits": {
                b: {k: f.as_dict() for k, f in v.items()} for b, v in fits.items()
            },
            "memory_fits": {b: f.as_dict() for b, f in mem_fits.items()},
            "extraction": extraction,
            "allreduce_gbps": args.allreduce_gbps,
            "allreduce_latency_us": args.allreduce_latency_us,
            "gpu_img_per_s": args.gpu_img_per_s,
            "niter_measured": niter,
            "threads": args.threads,
        },
        notes=notes,
        title="ImageNet-scale cost of the cluster step (extrapolated)",
    )
    print(f"\nwrote {paths['md']} and {paths['json']}")
    return {"points": points, "fits": fits, "table": table, "extraction": extraction}


if __name__ == "__main__":
    main()
