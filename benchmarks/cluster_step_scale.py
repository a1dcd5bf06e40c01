"""The cluster step at ImageNet size from shards on disk, in bounded memory (CPU or GPU).

ClusterFit (Yan et al., CVPR 2020, Sec. 4) clusters N = 1,281,167 ImageNet features of
D = 2048 into K = 16,000 clusters. This benchmark writes that many synthetic 2048-d
features as the cluster step's shards (``FEATURE_SHARDS``: ``shard_*.npy`` +
``manifest.json``, written by ``--workers`` processes, once, and reused), then runs the
step's clustering on them, ``clustering.bounded_kmeans`` (seeded K x rows-per-centroid
training sample read from the memory-mapped shards, PCA fitted on it, k-means,
assignment streamed chunk by chunk over the shards) and the label files
(``write_label_files``), in fresh processes: W = 1, then W = 2 gloo ranks (each
assigns its shards), whose labels must equal W = 1's.

``--backend``/``--device`` go to the package's own choice (``clustering.choose_backend``):
``--backend torch --device cuda`` (backend ``torch-cuda``) fits the PCA on the sample,
trains with the torch Lloyd route and projects and assigns each streamed chunk on the
GPU (no faiss-gpu needed); reading the shards (float16 -> float32) and the L2
normalisation stay on the CPU. The backend chosen is recorded.

Reported per phase (rank 0): wall time, peak RSS (``measure.PeakRSS``) and on CUDA the
peak GPU memory (``torch.cuda.max_memory_allocated``, reset at every phase end), marked
at the phase ends the step reports through ``on_phase``. Target (issue 22): rank 0's
peak RSS <= 1.5 GiB + 1.2 x the training sample, whatever N. Phases: ``read_shards`` (a
separate pass reading every shard, the I/O alone), ``read_sample``, ``pca`` (fit on the
sample + transform it), ``train``, ``broadcast``, ``assign`` (read + PCA + nearest
centroid for all rows), ``fixup`` (empty clusters, objective), ``write``. The GPU bound
of the assignment (``clustering.nearest_centroids_bytes`` for one chunk, plus the chunk
and the centroids) is reported beside the measured peak.

``--max-s`` (seconds from the start, shard writing included): shards not written by
then and a cluster run still going are stopped; every phase that ended is in the
results, with a status saying where it stopped.

Synthetic features: a mixture of 1,000 unit-norm centres plus Gaussian noise, made
per shard with ``default_rng([seed, shard])`` (the same rows whatever ``--workers``).

GPU setting, fixed before running (issue 22; one H200, the whole command <= 4 min):
N = 1,281,167, D = 2048, float16 shards of 16,384 rows (5.2 GB), K = 16,000, 64 rows
per centroid (training sample 1,024,000 rows), PCA 2048 -> 256 whitened + L2 fitted on
the whole sample, 20 k-means iterations, torch route on CUDA (fp32 matmul, TF32 off:
the library default), W = 1, ``--max-s 240``::

    python -m benchmarks.cluster_step_scale --backend torch --device cuda \\
        --n 1281167 --k 16000 --rows-per-centroid 64 --niter 20 --pca-dim 256 \\
        --dtype float16 --worlds 1 --max-s 240 --name cluster_step_scale_gpu \\
        --out benchmarks/results

Examples (from the repository root)::

    nice -n 19 python -m benchmarks.cluster_step_scale    # CPU: N=1,281,167 K=1000 faiss
    python -m benchmarks.cluster_step_scale --quick       # N=20,000 D=256 K=50
    python -m benchmarks.cluster_step_scale --quick --backend torch --device cpu \\
        --dtype float16 --worlds 1 --max-s 240            # the GPU command, dry, on a CPU

Writes ``<out>/<name>.{json,md}`` (default benchmarks/results/cluster_step_scale,
``--quick``: ``_quick``); shards and label files go to ``--workdir`` (default
benchmarks/_work/cluster_step_scale/, kept for reuse; ``--clean`` deletes them).
"""

import argparse
import json
import os
import shutil
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks import common, plugin
from benchmarks.measure import PeakRSS
from benchmarks.report import print_table


COLUMNS = ["W", "phase", "time_s", "peak_rss_gib", "start_rss_gib", "gpu_peak_gib"]
GIB = 2**30
# The options passed to clustering.bounded_kmeans as they are, and the fields of its
# result each rank reports.
BOUNDED_ARGS = (
    "niter",
    "seed",
    "rows_per_centroid",
    "pca_dim",
    "pca_sample_size",
    "backend",
    "device",
)
RESULT_FIELDS = (
    "backend",
    "sample_rows",
    "clustered_dim",
    "objective",
    "n_empty_reseeded",
)
_STARTED = time.time()  # the command's --max-s counts from here (imports included)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_step_scale",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--n", type=int, default=1_281_167)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--rows-per-centroid", type=int, default=256)
    p.add_argument("--pca-dim", type=int, default=256, help="0 = no PCA")
    p.add_argument("--pca-sample-size", type=int, default=0, help="0 = the sample")
    p.add_argument("--niter", type=int, default=20)
    p.add_argument("--backend", default="faiss", choices=["auto", "faiss", "torch"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--worlds", default="1,2", help="process counts, W=1 first")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch and faiss threads per rank (0 = all cores / W). faiss' results "
        "depend on its thread count (BLAS rounding), so compare W with equal threads",
    )
    p.add_argument(
        "--reference",
        default="",
        help="compare the labels with this run directory's scale_labels.npy instead "
        "of the first W's (e.g. a W=1 run of an earlier invocation)",
    )
    p.add_argument("--shard-rows", type=int, default=16384)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--workers", type=int, default=0, help="shard writers (0 = cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-s", type=float, default=0, help="time guard (0 = none)")
    p.add_argument(
        "--workdir", default=os.path.join(common.WORK_DIR, "cluster_step_scale")
    )
    p.add_argument("--out", default=common.RESULTS_DIR, help="results directory")
    p.add_argument(
        "--commit",
        default=os.environ.get("VCF_GIT_COMMIT", ""),
        help="commit to record where the copy has no .git (default: $VCF_GIT_COMMIT, "
        "as scripts/gpu_env.sh documents, else git HEAD)",
    )
    p.add_argument("--clean", action="store_true", help="delete shards at the end")
    p.add_argument("--quick", action="store_true", help="N=20,000 D=256 K=50")
    p.add_argument("--name", default="")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    if args.quick:
        args.n, args.d, args.k, args.pca_dim, args.shard_rows = 20000, 256, 50, 32, 4096
    args.world_list = [int(w) for w in args.worlds.split(",") if w]
    args.name = args.name or (
        "cluster_step_scale_quick" if args.quick else "cluster_step_scale"
    )
    args.shards = os.path.join(
        args.workdir, f"shards_n{args.n}_d{args.d}_{args.dtype}_s{args.seed}"
    )
    return args


def _left(args: argparse.Namespace) -> float:
    """Seconds left under ``--max-s`` (infinite without it)."""
    return args.max_s - (time.time() - args.t0) if args.max_s > 0 else float("inf")


# --------------------------------------------------------------------------- shards


_BUFFERS: Dict[str, np.ndarray] = {}  # per writer process, reused across its shards


def _buffer(name: str, shape: Tuple[int, int], dtype: Any) -> np.ndarray:
    """A (rows, D) view of this process' buffer ``name``: fresh pages cost more than
    the random numbers (first-touch faults), so each writer allocates once."""
    buf = _BUFFERS.get(name)
    if buf is None or buf.shape[0] < shape[0] or buf.shape[1] != shape[1]:
        buf = _BUFFERS[name] = np.empty(shape, dtype=dtype)
    return buf[: shape[0]]


def _write_one(args: argparse.Namespace, index: int, start: int, stop: int) -> int:
    """Shard ``index`` (rows start..stop): seeded by (seed, index) alone."""
    fs = plugin.feature_store
    path = fs.shard_path(args.shards, index)
    if fs.shard_complete(path, stop - start):
        return index
    centres = np.random.default_rng(args.seed).standard_normal((1000, args.d))
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(
        np.float32
    )
    rng = np.random.default_rng([args.seed, index])
    shape = (stop - start, args.d)
    x = np.take(
        centres,
        rng.integers(0, len(centres), shape[0]),
        axis=0,
        out=_buffer("x", shape, np.float32),
    )
    noise = rng.standard_normal(
        dtype=np.float32, out=_buffer("noise", shape, np.float32)
    )
    noise *= np.float32(1 / np.sqrt(args.d))
    x += noise
    if args.dtype != "float32":
        x = _buffer("cast", shape, args.dtype)
        np.copyto(x, _BUFFERS["x"][: shape[0]], casting="same_kind")
    fs.write_shard(path, x, args.dtype)
    return index


def write_synthetic_shards(args: argparse.Namespace) -> Dict[str, Any]:
    """The shards as the extraction writes them (reused when already complete), by
    ``--workers`` forked processes (numpy's generator is one core per process)."""
    fs = plugin.feature_store
    if os.path.isfile(os.path.join(args.shards, fs.MANIFEST)):
        store = fs.FeatureStore.open(args.shards)
        if (store.num_rows, store.dim) == (args.n, args.d):
            return {"reused": True, "time_s": 0.0, "complete": True}
    os.makedirs(args.shards, exist_ok=True)
    ranges = fs.shard_ranges(args.n, args.shard_rows)
    workers = min(args.workers or os.cpu_count() or 1, len(ranges))
    t0, done = time.time(), 0
    # fork: the workers need no imports and touch no CUDA (the parent has none yet).
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        futures = [
            pool.submit(_write_one, args, i, a, b) for i, (a, b) in enumerate(ranges)
        ]
        for future in as_completed(futures):
            future.result()
            done += 1
            if done % 10 == 0 or done == len(ranges):
                print(f"shards: {done}/{len(ranges)} ({time.time() - t0:.0f} s)")
            if _left(args) <= 0:
                for f in futures:
                    f.cancel()
                break
    out = {"reused": False, "time_s": time.time() - t0, "workers": workers}
    out["complete"] = done == len(ranges)
    if out["complete"]:
        fs.write_manifest(args.shards, args.n, args.shard_rows, args.dtype)
    return out


# --------------------------------------------------------------------------- ranks


def _run_dir(args: argparse.Namespace, world: int) -> str:
    return os.path.join(args.workdir, f"run_{args.name}_w{world}")


class PhaseRecorder:
    """Rank 0's phase records, written to ``rank0.json`` at every phase end so a run
    stopped by the time guard leaves the phases it finished."""

    def __init__(self, path: str, peak: PeakRSS, report: Dict[str, Any]) -> None:
        self.path, self.peak, self.report = path, peak, report
        self.report["phases"] = []
        self._t = time.time()

    def __call__(self, name: str) -> None:
        now = time.time()
        self.peak.mark()
        phase = dict(self.peak.phases[-1], phase=name, time_s=now - self._t)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            phase["gpu_peak"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self.report["phases"].append(phase)
        self.save()
        self._t = time.time()

    def save(self) -> None:
        if self.path:
            common.write_json(self.path, self.report)


def _cluster(rank: int, world: int, args: argparse.Namespace, port: int) -> None:
    """One rank: the clustering of the cluster step over the shards, phases marked."""
    import torch.distributed as dist

    threads = args.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # the torch route needs no faiss
        pass
    if args.device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        torch.cuda.init()
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    out = _run_dir(args, world)
    store = plugin.feature_store.FeatureStore.open(args.shards)
    labels, distances = plugin.disk_route.label_arrays(out, args.n)
    report: Dict[str, Any] = {"rank": rank, "threads": threads, "status": "running"}
    if torch.cuda.is_available() and args.device != "cpu":
        report["gpu"] = torch.cuda.get_device_name()
    kw = {name: getattr(args, name) for name in BOUNDED_ARGS}
    with PeakRSS() as peak:
        report["rss_start"], report["rss_method"] = peak.start, peak.method
        marked = PhaseRecorder(
            os.path.join(out, "rank0.json") if rank == 0 else "", peak, report
        )
        report["rows_read"] = sum(len(ids) for ids, _ in store.chunks(rank, world))
        marked("read_shards")
        res = plugin.clustering.bounded_kmeans(
            store, args.k, labels, distances, on_phase=marked, **kw
        )
        if rank == 0:
            meta = {"num_clusters": args.k, "num_samples": args.n}
            plugin.write_label_files(
                out, "scale", res.labels, res.centroids, res.distances, meta
            )
        marked("write")
    report.update({name: getattr(res, name) for name in RESULT_FIELDS})
    report.update(status="complete", chunk_rows=store.chunk_rows)
    marked.save()
    if rank == 0:
        plugin.disk_route.clean_up(None, out, keep=True)
    if world > 1:
        dist.destroy_process_group()


def run_world(args: argparse.Namespace, world: int) -> Dict[str, Any]:
    """W fresh processes (gloo when W > 1), stopped at ``--max-s``: rank 0's report
    (what it finished) and, when complete, its labels."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run_dir(args, world)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    ctx = torch.multiprocessing.spawn(
        _cluster, args=(world, args, port), nprocs=world, join=False
    )
    status = "complete"
    try:
        while not ctx.join(timeout=max(0.1, min(5.0, _left(args)))):
            if _left(args) <= 0:
                status = f"stopped by --max-s {args.max_s:.0f} s"
                break
    except Exception as e:  # a rank failed: keep what it recorded, say why
        status = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[-1]}"
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
            p.join()
    report: Dict[str, Any] = {"phases": []}
    path = os.path.join(out, "rank0.json")
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
    report["wall_s"] = time.time() - t0
    if status != "complete" or report.get("status") != "complete":
        last = report["phases"][-1]["phase"] if report["phases"] else "start"
        report["status"] = f"{status}; last phase finished: {last}"
        return report
    report["labels"] = np.load(os.path.join(out, "scale_labels.npy"), mmap_mode="r")
    return report


# --------------------------------------------------------------------------- main


def gpu_bound_gib(args: argparse.Namespace, run: Dict[str, Any]) -> Optional[float]:
    """Device memory of the streamed assignment: one chunk of pre-processed rows, the
    float64 centroids and :func:`nearest_centroids_bytes` for that chunk, plus the
    chunked PCA projection on torch-cuda (:func:`moments.device_transform_bytes`)."""
    dim, chunk = run.get("clustered_dim"), run.get("chunk_rows")
    if dim is None or chunk is None:
        return None
    work = plugin.clustering.nearest_centroids_bytes(chunk, dim, args.k)
    if run.get("backend") == "torch-cuda" and args.pca_dim:
        work += plugin.clustering.moments.device_transform_bytes(args.d, dim)
    return (4 * chunk * dim + 8 * args.k * dim + work) / GIB


def _rows(world: int, run: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [
        {
            "W": world,
            "phase": p["phase"],
            "time_s": p["time_s"],
            "peak_rss_gib": p["peak"] / GIB,
            "start_rss_gib": p["start"] / GIB,
            "gpu_peak_gib": p["gpu_peak"] / GIB if "gpu_peak" in p else None,
        }
        for p in run["phases"]
    ]


def _summary(
    args: argparse.Namespace, runs: Dict[int, Dict[str, Any]], target: float
) -> List[Dict[str, Any]]:
    first = runs[args.world_list[0]]
    reference = first.get("labels")
    if args.reference:
        reference = np.load(os.path.join(args.reference, "scale_labels.npy"))
    out = []
    for world, run in runs.items():
        labels = run.get("labels")
        # A run is not compared with itself (the first W without --reference).
        itself = labels is reference
        compare = labels is not None and reference is not None and not itself
        phases = run["phases"]
        gpu = [p["gpu_peak"] for p in phases if "gpu_peak" in p]
        peak = max((p["peak"] for p in phases), default=0) / GIB
        out.append(
            {
                "W": world,
                "status": run["status"],
                "wall_s": run["wall_s"],
                "rank0_peak_rss_gib": peak,
                "target_gib": target,
                "within_target": peak <= target,
                "gpu_peak_gib": max(gpu) / GIB if gpu else None,
                "assign_gpu_bound_gib": gpu_bound_gib(args, run),
                "threads_per_rank": run.get("threads"),
                "labels_equal_reference": (
                    bool(np.array_equal(labels, reference)) if compare else None
                ),
                "labels_differing": (
                    int(np.count_nonzero(np.asarray(labels) != reference))
                    if compare
                    else None
                ),
                "backend": run.get("backend"),
                "gpu": run.get("gpu"),
                "sample_rows": run.get("sample_rows"),
                "objective": run.get("objective"),
            }
        )
    return out


def _compared_with(args: argparse.Namespace) -> str:
    if args.reference:
        return f"labels compared with {args.reference}"
    if len(args.world_list) == 1:
        return "labels not compared (one W and no --reference)"
    return f"labels compared with the W = {args.world_list[0]} run of this invocation"


def _notes(
    args: argparse.Namespace, shards: Dict[str, Any], sample_rows: int
) -> List[str]:
    sample_gib = sample_rows * args.d * 4 / GIB
    made = (
        "reused"
        if shards["reused"]
        else (f"written in {shards['time_s']:.1f} s by {shards['workers']} processes")
    )
    return [
        f"N = {args.n}, D = {args.d}, K = {args.k}, rows per centroid "
        f"{args.rows_per_centroid} (training sample {sample_rows} rows = "
        f"{sample_gib:.2f} GiB float32), PCA {args.pca_dim or 'none'} (fit on "
        f"{args.pca_sample_size or 'the whole sample'}), {args.niter} k-means "
        f"iterations, --backend {args.backend} --device {args.device}; shards "
        f"{args.dtype}, {args.shard_rows} rows each, "
        f"{shards['bytes'] / GIB:.2f} GiB on disk ({made})",
        "peak RSS: rank 0's, per phase (PeakRSS); start_rss = resident at the phase "
        "start (after imports: torch, VISSL, faiss); gpu_peak = "
        "torch.cuda.max_memory_allocated in the phase (reset at every phase end)",
        "assign_gpu_bound_gib: one chunk of pre-processed rows + float64 centroids + "
        "clustering.nearest_centroids_bytes(chunk, D', K); the training phase holds "
        "the pre-processed sample on the device besides",
        "PCA fit and projection: torch float64 on the GPU, chunked, for torch-cuda; "
        "numpy on the CPU for the other backends; reading and L2 on the CPU always",
        "target (issue 22): rank-0 peak RSS <= 1.5 GiB + 1.2 x the training sample",
        "read_shards is a separate pass over this rank's shards (the I/O alone); "
        "assign reads them again (page cache may serve part of it)",
        "one run per W (no repeats): times are one observation",
        _compared_with(args),
    ]


def main(
    argv: Optional[Sequence[str]] = None, started: Optional[float] = None
) -> Dict[str, Any]:
    """Run the benchmark; ``--max-s`` counts from ``started`` (default: now)."""
    args = parse_args(argv)
    args.t0 = time.time() if started is None else started
    # Shards first: their writers are forked, before anything here touches CUDA
    # (machine_info asks the GPU its name).
    shards = write_synthetic_shards(args)
    machine = common.machine_info()
    if args.commit:
        machine["git_commit"] = args.commit
    shards["bytes"] = sum(
        os.path.getsize(os.path.join(args.shards, f)) for f in os.listdir(args.shards)
    )
    if shards["time_s"]:
        shards["write_gib_per_s"] = shards["bytes"] / GIB / shards["time_s"]
    print(f"shards: {shards['bytes'] / GIB:.2f} GiB, {shards}", flush=True)
    rows: List[Dict[str, Any]] = []
    runs: Dict[int, Dict[str, Any]] = {}
    for world in args.world_list:
        if not shards["complete"] or _left(args) <= 0:
            runs[world] = {
                "status": "not run: --max-s reached",
                "phases": [],
                "wall_s": 0,
            }
            continue
        runs[world] = run = run_world(args, world)
        rows += _rows(world, run)
        print_table([r for r in rows if r["W"] == world], COLUMNS, f"W = {world}")
    sample_rows = min(args.n, args.k * args.rows_per_centroid)
    target = 1.5 + 1.2 * sample_rows * args.d * 4 / GIB
    summary = _summary(args, runs, target)
    print_table(summary, list(summary[0]), "summary")
    payload = {
        "args": {k: v for k, v in vars(args).items() if k != "world_list"},
        "shards": shards,
        "summary": summary,
    }
    tables = [
        {"title": "Phases (rank 0)", "columns": COLUMNS, "rows": rows},
        {"title": "Summary", "columns": list(summary[0]), "rows": summary},
    ]
    notes = _notes(args, shards, sample_rows)
    common.write_results(
        args.name, machine, tables, payload, notes, title=args.name, out_dir=args.out
    )
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return payload


if __name__ == "__main__":
    main(started=_STARTED)
