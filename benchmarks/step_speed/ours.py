"""Our cluster step, the floor it is compared with, and k-means alone.

Our step is timed as a whole around the public call; its phases come from the meta file
it writes (``time_s: {extract, cluster}``). Its memory is split into extraction and
clustering at the log record the step emits when clustering starts
(``plugin.marked_clustering_start``): nothing of the step is patched or wrapped.
"""

import argparse
import gc
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import faiss
import numpy as np
import torch

from benchmarks import plugin
from benchmarks.measure import PeakRSS, Timer, median, repeat_times
from benchmarks.step_speed.specs import FeatureSpec, fresh_dir, ours_config


CPU = torch.device("cpu")


def max_abs_diff(a: np.ndarray, b: np.ndarray, rows: int = 4096) -> float:
    """max |a - b| in row chunks (no N x D temporary); NaN when the shapes differ."""
    if a.shape != b.shape:
        return float("nan")
    return max(
        (
            float(np.abs(a[i : i + rows] - b[i : i + rows]).max())
            for i in range(0, len(a), rows)
        ),
        default=0.0,
    )


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))


def faiss_thread_probe() -> Dict[str, float]:
    """Seconds of one small faiss k-means with faiss' default threads and with 1 thread.
    Default >> 1 thread means OpenMP threads are spin-waiting against other load on the
    machine: its timings are then not representative."""
    x = np.random.default_rng(0).standard_normal((4000, 128), dtype=np.float32)
    default = faiss.omp_get_max_threads()
    out = {}
    for threads in (default, 1):
        faiss.omp_set_num_threads(threads)
        km = faiss.Kmeans(128, 50, niter=20, seed=0)
        with Timer() as t:
            km.train(x)
        out[f"{threads}_threads_s"] = round(t.s, 4)
    faiss.omp_set_num_threads(default)
    return out


# --------------------------------------------------------------------------- the floor


def measure_floor_forward(
    cfg: Any, ckpt: str, spec: FeatureSpec, args: argparse.Namespace
) -> Dict[str, Any]:
    """The trunk's forward pass alone over images transformed beforehand (same trunk,
    batch and threads; no data loader, no file I/O); returns its features too."""
    dataset = plugin.extraction_dataset(cfg, "TRAIN")
    n = len(dataset)
    with Timer() as prep:
        images = torch.stack([dataset[i]["data"][0] for i in range(n)])
    trunk = plugin.build_npre_trunk(ckpt).to(CPU).eval()
    times, feats = [], None
    for _ in range(args.repeats):
        chunks = []
        with torch.no_grad(), Timer() as t:
            for s in range(0, n, args.batch_size):
                out = trunk(
                    images[s : s + args.batch_size], out_feat_keys=[spec.layer]
                )[0]
                chunks.append(plugin.pool_features(out, spec.pooling).float().numpy())
            feats = np.concatenate(chunks)
        times.append(t.s)
    del images, trunk
    gc.collect()
    return {
        "forward_s": median(times),
        "forward_runs_s": times,
        "image_prep_s": prep.s,
        "feats": feats,
    }


def faiss_kmeans_floor(x: np.ndarray, k: int, args: argparse.Namespace) -> np.ndarray:
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=args.niter,
        seed=args.seed,
        max_points_per_centroid=args.max_points_per_centroid,
        verbose=False,
    )
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0]


# --------------------------------------------------------------------------- ours


def _ours_run(t_s: float, meta: Dict[str, Any], mem: PeakRSS, split: bool) -> Dict:
    phase_s = meta.get("time_s", {})
    extract_s, cluster_s = phase_s.get("extract"), phase_s.get("cluster")
    other_s = (
        t_s - extract_s - cluster_s
        if extract_s is not None and cluster_s is not None
        else None
    )
    extract_phase, cluster_phase = mem.phases[0], mem.phases[-1]
    return {
        "total_s": t_s,
        "extract_s": extract_s,
        "cluster_s": cluster_s,
        "other_s": other_s,
        "peak_delta_bytes": mem.delta,
        "cluster_phase_extra_bytes": (
            cluster_phase["peak"] - cluster_phase["start"] if split else None
        ),
        "extract_phase_peak_delta_bytes": (
            extract_phase["peak"] - mem.start if split else None
        ),
        "memory_method": mem.method,
        "memory_split": split,
        "num_empty": meta.get("metrics", {}).get("num_empty"),
    }


def measure_ours(
    n: int,
    spec: FeatureSpec,
    k: int,
    args: argparse.Namespace,
    ckpt: str,
    run_dir: str,
) -> Dict[str, Any]:
    """Our cluster step in-process, as the hook runs it, in a fresh output dir per run:
    wall time around the call, phase times from the meta file it writes, peak memory
    of the whole call and of the part after extraction."""
    runs, labels = [], None
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"ours_K{k}_r{r}"))
        cfg = ours_config(n, spec, k, args, ckpt, out_dir)
        with PeakRSS() as mem:
            with plugin.marked_clustering_start(mem.mark) as marker, Timer() as t:
                plugin.run_cluster_step(cfg, CPU)
        meta = plugin.read_step_meta(cfg)
        labels = plugin.step_labels(cfg)
        runs.append(_ours_run(t.s, meta, mem, marker.t is not None))
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs, "labels": labels}


def ours_features_diff(
    cfg: Any, ckpt: str, spec: FeatureSpec, reference: np.ndarray
) -> float:
    """max |difference| between the features our step clusters (its extraction
    functions called directly: the step itself normalises its copy in place) and
    ``reference`` (the floor's)."""
    feats = plugin.step_features(cfg, ckpt, spec.layer, spec.pooling, CPU)
    diff = max_abs_diff(feats, reference)
    del feats
    gc.collect()
    return diff


# --------------------------------------------------------------------------- k-means


def gemm_gflops(rows: int, d: int, k: int, repeats: int = 3) -> float:
    """Best sgemm rate (GFLOP/s) of numpy and torch on this machine for the k-means
    assignment product (rows x d) @ (d x k)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, d), dtype=np.float32)
    b = rng.standard_normal((d, k), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    best = float("inf")
    for fn in (lambda: a @ b, lambda: torch.mm(ta, tb)):
        fn()
        best = min(best, min(repeat_times(fn, repeats)))
    return 2.0 * rows * d * k / best / 1e9


def sklearn_kmeans(
    x: np.ndarray, k: int, n_train: int, args: argparse.Namespace
) -> Tuple[np.ndarray, int]:
    from sklearn.cluster import KMeans

    rows = None
    if n_train < len(x):
        rows = np.random.default_rng(args.seed).choice(len(x), n_train, replace=False)
    km = KMeans(
        n_clusters=k,
        init="random",
        n_init=1,
        max_iter=args.niter,
        tol=0.0,
        algorithm="lloyd",
        random_state=args.seed,
    )
    km.fit(x if rows is None else x[rows])
    return km.predict(x), int(km.n_iter_)


def measure_kmeans_alone(
    x: np.ndarray, k: int, args: argparse.Namespace
) -> Dict[str, Any]:
    """faiss.Kmeans, our run_kmeans and scikit-learn on the same normalised matrix, and
    the GEMM floor of the assignment products."""
    n, d = x.shape
    n_train = min(n, k * args.max_points_per_centroid)
    floor_t: List[float] = []
    ours_t: List[float] = []
    sk_t: List[float] = []
    floor_labels = ours_labels = None
    sk_iters: Optional[int] = None
    for _ in range(args.repeats):
        with Timer() as t:
            floor_labels = faiss_kmeans_floor(x, k, args)
        floor_t.append(t.s)
        with Timer() as t:
            res = plugin.clustering.run_kmeans(
                x,
                k,
                niter=args.niter,
                seed=args.seed,
                max_points_per_centroid=args.max_points_per_centroid,
            )
        ours_t.append(t.s)
        ours_labels = res.labels
        if not args.no_sklearn:
            with Timer() as t:
                _, sk_iters = sklearn_kmeans(x, k, n_train, args)
            sk_t.append(t.s)
    gflops = gemm_gflops(n_train, d, k)
    # niter assignment GEMMs on the rows faiss trains on + the final assignment of all N
    flops = 2.0 * k * d * (n_train * args.niter + n)
    return {
        "n_train": n_train,
        "faiss_floor_s": median(floor_t),
        "ours_run_kmeans_s": median(ours_t),
        "sklearn_s": median(sk_t) if sk_t else None,
        "sklearn_iters": sk_iters,
        "gemm_gflops": gflops,
        "kmeans_gflop": flops / 1e9,
        "kmeans_gflop_naive_2NKDniter": 2.0 * n * k * d * args.niter / 1e9,
        "gemm_floor_s": flops / gflops / 1e9,
        "floor_labels": floor_labels,
        "ours_labels": ours_labels,
    }
