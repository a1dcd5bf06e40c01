"""The cluster step at ImageNet size on the CPU: from shards on disk, in bounded memory.

ClusterFit (Yan et al., CVPR 2020, Sec. 4) clusters N = 1,281,167 ImageNet features of
D = 2048. This benchmark writes that many synthetic 2048-d features as the cluster
step's shards (``FEATURE_SHARDS``: ``shard_*.npy`` + ``manifest.json``, written once
and reused), then runs the step's clustering on them, ``clustering.bounded_kmeans``
(seeded K x rows-per-centroid training sample, PCA fitted on it, k-means, assignment
streamed over the memory-mapped shards) and the label files
(``write_label_files``), in fresh processes: W = 1, then W = 2 gloo ranks (each
assigns its shards), whose labels must equal W = 1's.

Reported per phase (rank 0): wall time and peak RSS (``measure.PeakRSS``, marked at
the phase ends the step reports through ``on_phase``). Target (issue 22): rank 0's
peak <= 1.5 GiB + 1.2 x the training sample, whatever N. Phases: ``read_shards`` (a
separate pass reading every shard, the I/O alone), ``read_sample``, ``pca`` (fit on
the sample + transform it), ``train``, ``broadcast``, ``assign`` (read + PCA +
nearest centroid for all rows), ``fixup`` (empty clusters, objective), ``write``.

Synthetic features: a mixture of 1,000 unit-norm centres plus Gaussian noise, made
per shard with ``default_rng([seed, shard])``.

Examples (from the repository root)::

    nice -n 19 python -m benchmarks.cluster_step_scale    # N=1,281,167 D=2048 K=1000
    python -m benchmarks.cluster_step_scale --quick       # N=20,000 D=256 K=50

Writes benchmarks/results/cluster_step_scale.{json,md} (``--quick``: ``_quick``);
shards and label files go to benchmarks/_work/cluster_step_scale/ (kept for reuse;
``--clean`` deletes them at the end).
"""

import argparse
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from benchmarks import common, plugin
from benchmarks.measure import PeakRSS
from benchmarks.report import print_table


PHASES = [
    "read_shards",
    "read_sample",
    "pca",
    "train",
    "broadcast",
    "assign",
    "fixup",
    "write",
]
COLUMNS = ["W", "phase", "time_s", "peak_rss_gib", "start_rss_gib"]
GIB = 2**30


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
    p.add_argument("--niter", type=int, default=20)
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workdir", default=os.path.join(common.WORK_DIR, "cluster_step_scale")
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


# --------------------------------------------------------------------------- shards


def write_synthetic_shards(args: argparse.Namespace) -> Dict[str, Any]:
    """The shards as the extraction writes them (reused when already complete)."""
    fs = plugin.feature_store
    if os.path.isfile(os.path.join(args.shards, fs.MANIFEST)):
        store = fs.FeatureStore.open(args.shards)
        if (store.num_rows, store.dim) == (args.n, args.d):
            return {"reused": True, "time_s": 0.0}
    os.makedirs(args.shards, exist_ok=True)
    centres = np.random.default_rng(args.seed).standard_normal((1000, args.d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.time()
    ranges = fs.shard_ranges(args.n, args.shard_rows)
    for i, (a, b) in enumerate(ranges):
        path = fs.shard_path(args.shards, i)
        if fs.shard_complete(path, b - a):
            continue
        rng = np.random.default_rng([args.seed, i])
        x = centres[rng.integers(0, len(centres), b - a)].astype(np.float32)
        x += rng.standard_normal(x.shape, dtype=np.float32) / np.sqrt(args.d)
        fs.write_shard(path, x, args.dtype)
        if i % 10 == 0:
            print(
                f"shards: {i + 1}/{len(ranges)} ({time.time() - t0:.0f} s)", flush=True
            )
    fs.write_manifest(args.shards, args.n, args.shard_rows, args.dtype)
    return {"reused": False, "time_s": time.time() - t0}


# --------------------------------------------------------------------------- ranks


def _run_dir(args: argparse.Namespace, world: int) -> str:
    return os.path.join(args.workdir, f"run_{args.name}_w{world}")


def _cluster(rank: int, world: int, args: argparse.Namespace, port: int) -> None:
    """One rank: the clustering of the cluster step over the shards, phases marked."""
    import faiss
    import torch.distributed as dist

    threads = args.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    out = _run_dir(args, world)
    store = plugin.feature_store.FeatureStore.open(args.shards)
    paths = [os.path.join(out, f"assign_{k}.npy") for k in ("labels", "dist")]
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        for path, dtype in zip(paths, (np.int64, np.float32)):
            np.lib.format.open_memmap(path, "w+", dtype, (args.n,)).flush()
    if world > 1:
        dist.barrier()
    labels, distances = (np.lib.format.open_memmap(p, "r+") for p in paths)
    names: List[str] = []
    with PeakRSS() as peak:
        t0 = time.time()
        rows = sum(len(ids) for ids, _ in store.chunks(rank, world))
        read_s = time.time() - t0
        names.append("read_shards")
        peak.mark()

        def marked(name: str) -> None:
            names.append(name)
            peak.mark()

        res = plugin.clustering.bounded_kmeans(
            store,
            args.k,
            labels,
            distances,
            niter=args.niter,
            seed=args.seed,
            rows_per_centroid=args.rows_per_centroid,
            pca_dim=args.pca_dim,
            backend="faiss",
            on_phase=marked,
        )
        t0 = time.time()
        if rank == 0:
            meta = {"num_clusters": args.k, "num_samples": args.n}
            plugin.write_label_files(
                out, "scale", res.labels, res.centroids, res.distances, meta
            )
        write_s = time.time() - t0
        names.append("write")
    times = dict(res.time_s, read_shards=read_s, write=write_s)
    report = {
        "rank": rank,
        "rows_read": rows,
        "rss_start": peak.start,
        "phases": [
            dict(p, phase=n, time_s=times.get(n)) for n, p in zip(names, peak.phases)
        ],
        "rss_method": peak.method,
        "threads": threads,
        "backend": res.backend,
        "sample_rows": res.sample_rows,
        "objective": res.objective,
        "n_empty_reseeded": res.n_empty_reseeded,
    }
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    for path in paths:
        if rank == 0 and os.path.exists(path):
            os.unlink(path)
    if world > 1:
        dist.destroy_process_group()


def run_world(args: argparse.Namespace, world: int) -> Dict[str, Any]:
    """W fresh processes (gloo when W > 1); rank 0's report and labels."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run_dir(args, world)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    torch.multiprocessing.spawn(
        _cluster, args=(world, args, port), nprocs=world, join=True
    )
    with open(os.path.join(out, "rank0.json")) as f:
        report = json.load(f)
    report["wall_s"] = time.time() - t0
    report["labels"] = np.load(os.path.join(out, "scale_labels.npy"), mmap_mode="r")
    return report


# --------------------------------------------------------------------------- main


def _shard_origin(shards: Dict[str, Any]) -> str:
    return "reused" if shards["reused"] else f"written in {shards['time_s']:.0f} s"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    machine = common.machine_info()
    shards = write_synthetic_shards(args)
    shard_bytes = sum(
        os.path.getsize(os.path.join(args.shards, f)) for f in os.listdir(args.shards)
    )
    print(f"shards: {shard_bytes / GIB:.2f} GiB, {shards}", flush=True)
    rows: List[Dict[str, Any]] = []
    runs: Dict[int, Dict[str, Any]] = {}
    for world in args.world_list:
        runs[world] = run = run_world(args, world)
        for p in run["phases"]:
            rows.append(
                {
                    "W": world,
                    "phase": p["phase"],
                    "time_s": p["time_s"],
                    "peak_rss_gib": p["peak"] / GIB,
                    "start_rss_gib": p["start"] / GIB,
                }
            )
        print_table([r for r in rows if r["W"] == world], COLUMNS, f"W = {world}")
    first = runs[args.world_list[0]]
    reference = first["labels"]
    if args.reference:
        reference = np.load(os.path.join(args.reference, "scale_labels.npy"))
    sample_gib = first["sample_rows"] * args.d * 4 / GIB
    target = 1.5 + 1.2 * sample_gib
    summary = []
    for world, run in runs.items():
        peak = max(p["peak"] for p in run["phases"]) / GIB
        same = bool(np.array_equal(run["labels"], reference))
        differ = int(np.count_nonzero(np.asarray(run["labels"]) != reference))
        summary.append(
            {
                "W": world,
                "wall_s": run["wall_s"],
                "rank0_peak_rss_gib": peak,
                "target_gib": target,
                "within_target": peak <= target,
                "threads_per_rank": run["threads"],
                "labels_equal_reference": same,
                "labels_differing": differ,
                "backend": run["backend"],
                "sample_rows": run["sample_rows"],
                "objective": run["objective"],
            }
        )
    scols = list(summary[0])
    print_table(summary, scols, "summary")
    notes = [
        f"N = {args.n}, D = {args.d}, K = {args.k}, rows per centroid "
        f"{args.rows_per_centroid} (training sample {first['sample_rows']} rows = "
        f"{sample_gib:.2f} GiB float32), PCA {args.pca_dim or 'none'}, {args.niter} "
        f"k-means iterations (faiss, CPU), shards {args.dtype}, {args.shard_rows} rows "
        f"each, {shard_bytes / GIB:.2f} GiB on disk "
        f"({_shard_origin(shards)})",
        "peak RSS: rank 0's, per phase (PeakRSS, " + first["rss_method"] + "); "
        "start_rss = resident at the phase start (after imports: torch, VISSL, faiss)",
        "target (issue 22): rank-0 peak <= 1.5 GiB + 1.2 x the training sample",
        "read_shards is a separate pass over this rank's shards (the I/O alone); "
        "assign reads them again (page cache may serve part of it)",
        "one run per W (no repeats): times are one observation on a shared machine",
        "labels compared with "
        + (args.reference or f"the W = {args.world_list[0]} run of this invocation"),
    ]
    payload = {
        "args": {k: v for k, v in vars(args).items() if k != "world_list"},
        "shards": dict(shards, bytes=shard_bytes),
        "summary": summary,
    }
    tables = [
        {"title": "Phases (rank 0)", "columns": COLUMNS, "rows": rows},
        {"title": "Summary", "columns": scols, "rows": summary},
    ]
    common.write_results(args.name, machine, tables, payload, notes, title=args.name)
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return payload


if __name__ == "__main__":
    main()
