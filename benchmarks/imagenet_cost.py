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
import json
import os
from typing import Any, Dict, List, Optional

from benchmarks.common import RESULTS_DIR, machine_info, write_results
from benchmarks.cost.extrapolation import (
    GPU_IMG_PER_S,
    extraction_rows,
    extrapolate,
    fit_backends,
    fit_memory_backends,
    holdout_rows,
    quiet_run_rows,
)
from benchmarks.cost.measure_grid import (
    DEFAULT_GRID,
    QUICK_GRID,
    check_constants,
    measure_extraction,
    measure_point,
    set_threads,
)
from benchmarks.cost.model import IMAGENET_TRAIN_IMAGES, Scale
from benchmarks.cost.render import assumption_notes, result_tables
from benchmarks.report import print_tables


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
    check_constants()
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
    notes = assumption_notes(args, machine, loads, mem_fits, scale)
    tables = result_tables(
        scale, table, ext_rows, fits, holdout, quiet, points, mem_fits
    )
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
