"""Fits of the measured grid, their checks and the rows of the extrapolated tables;
pure, nothing is measured here."""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.cost.model import (
    TIME_TERMS,
    GiB,
    LinearFit,
    Scale,
    faiss_extra_bytes,
    faiss_gather_peak_bytes,
    faiss_kmeans_s,
    fit_memory,
    fit_time,
    fit_time_nkd_only,
    lloyd_extra_bytes,
    lloyd_kmeans_s,
    time_features,
)


#: Published, not measured here: ResNet-50 v1.5 FP32 inference, 1x V100 16GB, batch
#: 256 (NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5
#: README, "Inference performance: NVIDIA DGX-1 (1x V100 16GB)", pytorch-21.03 NGC).
GPU_IMG_PER_S = 1261.0
GPU_SOURCE = (
    "published ResNet-50 v1.5 FP32 inference, 1x V100 16GB, batch 256: 1261 img/s "
    "(NVIDIA DeepLearningExamples resnet50v1.5 README); an assumption, not measured"
)


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


# --------------------------------------------------------------------------- grid


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
