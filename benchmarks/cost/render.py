"""The tables and the notes (assumptions) of the imagenet_cost results files."""

import argparse
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.cost.extrapolation import GPU_IMG_PER_S, GPU_SOURCE
from benchmarks.cost.model import GiB, LinearFit, Scale


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


def assumption_notes(
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


def result_tables(
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
