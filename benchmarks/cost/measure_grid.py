"""The measurements on this machine: ``run_kmeans`` and ``distributed_kmeans`` on a
grid of (N, D, K), ResNet-50 forward and JPEG decode; the thread settings."""

import io
import os
import time
from typing import Any, Dict, List, Tuple

import numpy as np

from benchmarks.cost.model import (
    BLOCK_ELEMENTS,
    FAISS_BLAS_TILE,
    faiss_extra_bytes,
    lloyd_extra_bytes,
)
from benchmarks.measure import PeakRSS, Timer, median


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


def check_constants() -> None:
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
