"""k-means on one GPU at ImageNet scale: the torch route, no faiss-gpu.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1/4) clusters N = 1,281,167 ImageNet features
of D = 2048 into K = 16,000 clusters; DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2)
runs Lloyd's k-means with the features left on the GPUs. faiss-gpu wheels need CUDA 12
libraries, so on a CUDA 13 machine the package's torch route
(``vissl_clusterfit.clustering.distributed_kmeans``, single process here) is what runs
on the GPU. This script measures it as the library is written: the input tensor on the
GPU, the float32 GEMM search in row blocks (``batch_size``; 0 = the library's automatic
block of about 2**24 elements), float64 re-ranking and float64 per-cluster sums.

Per setting (float32 matmul precision "highest" = TF32 off, torch's default, and "high"
= TF32 on; the automatic block and ``--big-block`` rows):

- assign: ``nearest_centroids`` of all N rows to K centroids (the cluster step's final
  assignment), mean of ``--assign-repeats`` runs after a warm-up;
- per iteration: (T(niter=``--iters``) - T(niter=0)) / iters of ``distributed_kmeans``,
  each T a full call (validation, seeded initialisation, final empty-cluster re-seeding
  cancel out in the difference), after a warm-up call on a subset;
- GPU peak memory (``torch.cuda.max_memory_allocated``) during the k-means call;
- before that, on a subset, the GPU route against the same call on the CPU (label
  agreement, centroid difference), and at full size the share of equal labels between
  TF32 off and on.

Data: synthetic, generated on the GPU: a mixture of K unit-norm centres plus Gaussian
noise, rows L2-normalised as the cluster step does (thesis Sec. 4.2). Timings are read
with ``torch.cuda.synchronize()`` around each call. A time guard (``--budget-s``,
measured from the start of the process) skips settings that would not fit and, as a
last resort, a SIGALRM stops the run and writes what was measured.

Examples (from the repository root)::

    python -m benchmarks.kmeans_gpu                 # CUDA: N=1,281,167 D=2048 K=16,000
    python -m benchmarks.kmeans_gpu --quick         # tiny, on the CPU (the tests run it)
    python -m benchmarks.kmeans_gpu --out /tmp/res  # results elsewhere

Without CUDA (and without ``--quick``) it prints that no GPU is present and exits 0.
Writes ``<out>/kmeans_gpu.{json,md}`` (``--quick``: ``kmeans_gpu_quick.*``).
"""

import time


_START = time.perf_counter()  # the time guard counts from here, imports included

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common, plugin  # noqa: E402
from benchmarks.report import format_table, print_table  # noqa: E402


# The package's torch k-means route, through the benchmarks' one import point.
distributed_kmeans = plugin.clustering.distributed_kmeans
nearest_centroids = plugin.clustering.nearest_centroids
nearest_centroids_bytes = plugin.clustering.nearest_centroids_bytes


IMAGENET_N = 1_281_167
COLUMNS = [
    "setting",
    "tf32",
    "block_rows",
    "assign_s",
    "iter_s",
    "update_s",
    "iters",
    "kmeans_s",
    "peak_gib",
    "assign_tflops",
    "status",
]


_NOTES = [
    "iter_s = (T(niter=iters) - T(niter=0)) / iters of one distributed_kmeans call "
    "each (single process): one Lloyd update = assign + float64 sums + centroids; "
    "update_s = iter_s - assign_s",
    "assign_s = nearest_centroids over all N rows (float32 GEMM in blocks, top-2 "
    "re-ranked in float64); assign_tflops = 2NKD / assign_s",
    "peak_gib = torch.cuda.max_memory_allocated during the niter=iters call, the "
    "feature matrix included",
    "tf32 = torch.set_float32_matmul_precision('high'); fp32 = 'highest' (torch's "
    "default, what the library gets unless the user changes it)",
    "the whole cluster step from shards is not measured by this script",
]


class _OutOfTime(Exception):
    """Raised by the SIGALRM handler when the time guard's hard limit is reached."""


_T_ZERO = _START  # reset by main(); the CLI passes the process start


def _elapsed() -> float:
    return time.perf_counter() - _T_ZERO


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.kmeans_gpu",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--n", type=int, default=IMAGENET_N, help="rows (ImageNet train)")
    p.add_argument("--d", type=int, default=2048, help="feature dimension")
    p.add_argument("--k", type=int, default=16000, help="clusters (ClusterFit's K)")
    p.add_argument("--iters", type=int, default=5, help="timed k-means iterations")
    p.add_argument("--assign-repeats", type=int, default=2)
    p.add_argument(
        "--big-block",
        type=int,
        default=16384,
        help="rows per block of the second block setting (0 = skip it)",
    )
    p.add_argument(
        "--noise", type=float, default=1.0, help="noise norm around each centre"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--budget-s",
        type=float,
        default=135.0,
        help="wall-clock guard from process start: settings that would not fit are "
        "skipped, and at this time the run stops and writes what it measured",
    )
    p.add_argument("--check-rows", type=int, default=20000, help="GPU vs CPU subset")
    p.add_argument("--check-k", type=int, default=100)
    p.add_argument(
        "--device",
        default="",
        help="torch device (default: cuda:0 when CUDA is present; --quick: cpu)",
    )
    p.add_argument("--out", default=common.RESULTS_DIR, help="results directory")
    p.add_argument("--name", default="", help="results name (default kmeans_gpu)")
    p.add_argument(
        "--commit",
        default="",
        help="commit to record when the checkout has no .git (default: git HEAD)",
    )
    p.add_argument("--quick", action="store_true", help="tiny CPU run (seconds)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    if args.quick:
        args.n, args.d, args.k, args.iters = 4000, 64, 20, 3
        args.big_block, args.check_rows, args.check_k = 512, 0, 0
    args.assign_repeats = max(1, args.assign_repeats)
    args.name = args.name or ("kmeans_gpu_quick" if args.quick else "kmeans_gpu")
    return args


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], Any]) -> Tuple[float, Any]:
    """(seconds, result) of ``fn()``, with the device synchronised on both sides."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _peak_gib(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _fit_rows(args: argparse.Namespace, device: torch.device) -> Tuple[int, str]:
    """Rows that fit the free GPU memory (features + about 25% working space)."""
    if device.type != "cuda":
        return args.n, ""
    free, _ = torch.cuda.mem_get_info(device)
    per_row = args.d * 4 * 1.25
    # float64 centroids, sums and their all-reduce buffer; the assignment's blocks.
    fixed = 3 * args.k * args.d * 8 + nearest_centroids_bytes(args.n, args.d, args.k)
    fit = int((free - fixed) / per_row)
    if fit >= args.n:
        return args.n, ""
    return max(fit, 2 * args.k), (
        f"N reduced from {args.n} to {max(fit, 2 * args.k)}: "
        f"{free / 2**30:.1f} GiB free on the GPU"
    )


def synthetic_features(
    n: int, d: int, centres: int, noise: float, seed: int, device: torch.device
) -> torch.Tensor:
    """(n, d) float32 rows: unit-norm centre + noise, L2-normalised, made in chunks."""
    gen = torch.Generator(device=device).manual_seed(seed)
    c = torch.randn(centres, d, generator=gen, device=device)
    c /= c.norm(dim=1, keepdim=True)
    x = torch.empty(n, d, dtype=torch.float32, device=device)
    step = max(1, (1 << 27) // d)
    for start in range(0, n, step):
        rows = min(step, n - start)
        idx = torch.randint(centres, (rows,), generator=gen, device=device)
        block = torch.randn(rows, d, generator=gen, device=device)
        block.mul_(noise / math.sqrt(d)).add_(c[idx])
        x[start : start + rows] = block / block.norm(dim=1, keepdim=True)
    return x


def _precision(tf32: bool) -> str:
    name = "high" if tf32 else "highest"
    torch.set_float32_matmul_precision(name)
    return name


# --------------------------------------------------------------------------- phases


def gpu_vs_cpu(x: torch.Tensor, rows: int, k: int, seed: int) -> Dict[str, Any]:
    """The same ``distributed_kmeans`` call on a subset on the GPU and on the CPU."""
    _precision(tf32=False)
    sub = x[:rows]
    kw = dict(k=k, niter=3, seed=seed, single_process=True)
    t_gpu, on_gpu = _timed(x.device, lambda: distributed_kmeans(sub, **kw))
    t_cpu, on_cpu = _timed(
        torch.device("cpu"), lambda: distributed_kmeans(sub.cpu(), **kw)
    )
    return {
        "rows": rows,
        "k": k,
        "niter": 3,
        "labels_equal_fraction": float(np.mean(on_gpu.labels == on_cpu.labels)),
        "centroid_max_abs_diff": float(
            np.abs(on_gpu.centroids - on_cpu.centroids).max()
        ),
        "objective_rel_diff": abs(on_gpu.objective - on_cpu.objective)
        / max(abs(on_cpu.objective), 1e-30),
        "gpu_s": t_gpu,
        "cpu_s": t_cpu,
    }


class Run:
    """Measures the settings one after the other under the time guard."""

    def __init__(self, args: argparse.Namespace, x: torch.Tensor) -> None:
        self.args = args
        self.x = x
        self.device = x.device
        self.rows: List[Dict[str, Any]] = []
        self.assign_labels: Dict[Tuple[bool, int], np.ndarray] = {}
        self.assign_s: Optional[float] = None  # last measured, for the estimates
        n, k, d = x.shape[0], args.k, args.d
        self.flops = 2.0 * n * k * d
        ids = np.random.default_rng(args.seed).choice(n, size=k, replace=False)
        self.centroids = x[torch.from_numpy(ids).to(self.device)].to(torch.float64)

    def _left(self) -> float:
        return self.args.budget_s - _elapsed()

    def _estimate_assign(self) -> float:
        if self.assign_s is not None:
            return self.assign_s
        # Before any measurement: a pessimistic 10 TFLOP/s (CPU: 50 GFLOP/s).
        rate = 10e12 if self.device.type == "cuda" else 50e9
        return self.flops / rate

    def setting(self, tf32: bool, block: int) -> None:
        args, row = self.args, {"tf32": tf32, "block_rows": block or "auto"}
        row["setting"] = f"{'tf32' if tf32 else 'fp32'}/{block or 'auto'}"
        row["status"] = "interrupted by the time guard"  # until it completes
        self.rows.append(row)
        row["precision"] = _precision(tf32)
        # torch >= 2.9 also reports the setting per backend ("tf32" / "ieee").
        row["cuda_matmul"] = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
        est = self._estimate_assign()
        if self._left() < (args.assign_repeats + 1.5) * est + 2:
            row["status"] = f"skipped: {self._left():.0f} s left, assign ~{est:.1f} s"
            return
        # Warm-up: cuBLAS handles, kernels and the caching allocator, on a subset.
        warm = self.x[: min(self.x.shape[0], max(4 * args.k, 65536))]
        nearest_centroids(warm, self.centroids, block)
        times = []
        for _ in range(args.assign_repeats):
            t, (labels, _) = _timed(
                self.device, lambda: nearest_centroids(self.x, self.centroids, block)
            )
            times.append(t)
            row["assign_s"] = self.assign_s = float(np.mean(times))
        self.assign_labels[(tf32, block)] = labels.cpu().numpy()
        del labels
        row["assign_tflops"] = self.flops / self.assign_s / 1e12
        # k-means: niter=0 and niter=iters, each a full call; ~ (2 + 2 * iters) assigns.
        if self._left() < (2.5 + 2 * args.iters) * self.assign_s + 2:
            row["status"] = f"k-means skipped: {self._left():.0f} s left"
            return
        kw = dict(k=args.k, seed=args.seed, batch_size=block, single_process=True)
        distributed_kmeans(warm, niter=1, **dict(kw, k=min(args.k, warm.shape[0])))
        t0, _ = _timed(self.device, lambda: distributed_kmeans(self.x, niter=0, **kw))
        _reset_peak(self.device)
        t1, res = _timed(
            self.device, lambda: distributed_kmeans(self.x, niter=args.iters, **kw)
        )
        row["peak_gib"] = _peak_gib(self.device)
        row["iters"] = res.iterations
        row["kmeans_s"] = t1
        row["kmeans_niter0_s"] = t0
        row["iter_s"] = (t1 - t0) / max(1, res.iterations)
        # The rest of an iteration: float64 per-cluster sums (index_add_), centroids.
        row["update_s"] = row["iter_s"] - self.assign_s
        row["objective"] = res.objective
        row["n_empty_reseeded"] = res.n_empty_reseeded
        row["status"] = "ok"

    def tf32_agreement(self) -> Dict[str, float]:
        """Share of equal assign labels between TF32 off and on, per block setting."""
        out = {}
        for (tf32, block), labels in self.assign_labels.items():
            other = self.assign_labels.get((True, block))
            if not tf32 and other is not None:
                out[f"block_{block or 'auto'}"] = float(np.mean(labels == other))
        return out


def _settings(args: argparse.Namespace, device: torch.device) -> List[Tuple[bool, int]]:
    """(TF32, block rows) to measure, in order of importance (0 = automatic blocks)."""
    tf32 = [False, True] if device.type == "cuda" else [False]
    big = [(tf32[-1], args.big_block)] if args.big_block > 0 else []
    return [(t, 0) for t in tf32] + big


def _hard_exit() -> None:
    print("kmeans_gpu: hard time limit reached; exiting without results", flush=True)
    os._exit(3)


def _raise_out_of_time(signum: int, frame: Any) -> None:
    raise _OutOfTime()


def _write(args: argparse.Namespace, payload: Dict[str, Any], notes: List[str]) -> None:
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"{args.name}.json")
    common.write_json(json_path, payload)
    m = payload["machine"]
    extra = [
        f"GPU: {payload['gpu']}, CUDA {torch.version.cuda}, torch {torch.__version__}",
        f"N = {payload['n']}, D = {payload['d']}, K = {payload['k']}, "
        f"wall time {payload['wall_time_s']:.1f} s",
    ]
    body = format_table(payload["rows"], COLUMNS, markdown=True)
    text = [f"# k-means on the GPU, torch route ({args.name})", ""]
    text += common.header_lines(m, extra) + ["", body, "", "## Notes", ""]
    text += [f"- {n}" for n in notes]
    common.write_text(os.path.join(args.out, f"{args.name}.md"), "\n".join(text) + "\n")
    print(f"wrote {json_path} and {args.name}.md")


def _measure(
    args: argparse.Namespace, device: torch.device, payload: Dict[str, Any]
) -> List[str]:
    """Fill ``payload`` with what was measured before the end or the time guard."""
    notes: List[str] = []
    run: Optional[Run] = None
    try:
        n, note = _fit_rows(args, device)
        notes += [note] if note else []
        t_data, x = _timed(
            device,
            lambda: synthetic_features(
                n, args.d, args.k, args.noise, args.seed, device
            ),
        )
        payload.update(n=n, d=args.d, k=args.k, data_s=t_data)
        print(f"features {n} x {args.d} on {device}: {t_data:.1f} s")
        if args.check_rows > 0:
            payload["gpu_vs_cpu"] = gpu_vs_cpu(
                x, min(args.check_rows, n), args.check_k, args.seed
            )
            print("GPU vs CPU on a subset:", payload["gpu_vs_cpu"])
        run = Run(args, x)
        payload["rows"] = run.rows
        for tf32, block in _settings(args, device):
            run.setting(tf32, block)
            print_table(run.rows[-1:], COLUMNS)
        payload["status"] = "complete"
    except _OutOfTime:
        payload["status"] = f"stopped by the time guard at {_elapsed():.0f} s"
        notes.append(payload["status"] + "; the rows show what was measured before")
    if run is not None:
        payload["tf32_label_agreement"] = run.tf32_agreement()
    return notes


def main(argv: Optional[Sequence[str]] = None, started: Optional[float] = None) -> int:
    """Run the benchmark; the time guard counts from ``started`` (default: now)."""
    global _T_ZERO
    _T_ZERO = time.perf_counter() if started is None else started
    args = parse_args(argv)
    if not args.quick and not args.device and not torch.cuda.is_available():
        print(
            "kmeans_gpu: no GPU present (torch.cuda.is_available() is False); nothing "
            "measured. Use --quick for the tiny CPU run."
        )
        return 0
    device = torch.device(args.device or ("cpu" if args.quick else "cuda:0"))
    machine = common.machine_info()
    if args.commit:
        machine["git_commit"] = args.commit
    payload: Dict[str, Any] = {
        "benchmark": args.name,
        "machine": machine,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "args": vars(args),
        "rows": [],
    }
    previous_precision = torch.get_float32_matmul_precision()
    old_handler = signal.signal(signal.SIGALRM, _raise_out_of_time)
    # Last resort if the process is stuck where SIGALRM cannot interrupt (inside C).
    watchdog = threading.Timer(args.budget_s + 12 - _elapsed(), _hard_exit)
    watchdog.daemon = True
    watchdog.start()
    try:
        signal.alarm(max(1, int(args.budget_s - _elapsed())))
        notes = _measure(args, device, payload)
        signal.alarm(0)
        payload["wall_time_s"] = _elapsed()
        notes += _NOTES + [
            f"feature matrix: {payload.get('n', 0) * args.d * 4 / 2**30:.1f} GiB",
            f"TF32 label agreement (assign, same centroids): "
            f"{payload.get('tf32_label_agreement')}",
        ]
        print_table(payload["rows"], COLUMNS, title=f"k-means, torch route, {device}")
        _write(args, payload, notes)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        watchdog.cancel()
        torch.set_float32_matmul_precision(previous_precision)
    return 0


if __name__ == "__main__":
    sys.exit(main(started=_START))
