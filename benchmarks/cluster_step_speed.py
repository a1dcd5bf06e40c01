"""Speed and memory of the ClusterFit cluster step: ours vs VISSL's route vs the floor.

On the same data (Fashion-MNIST train subset), the same N_pre checkpoint and the same
features, for every (N, feature spec, K):

a. ours: ``cluster_dataset(cfg)`` in-process, as ``ClusterFitHook.on_start`` runs it
   (build N_pre, extract, L2-normalise, faiss k-means, write the label files), a fresh
   ``VCF.CLUSTERFIT.OUTPUT_DIR`` each run;
b. VISSL's route: VISSL's ``extract_features`` engine as a subprocess
   (``tools/run_distributed_engines.py engine_name=extract_features``; the plugin's compat
   patch lets it run on CPU), which writes ``rank*_chunk*_features.npy`` shards; then VISSL
   0.1.6's own ``tools/cluster_features_and_label.py:cluster_features`` in-process (reload
   with ``ExtractedFeaturesLoader``, L2-normalise, ``faiss.Kmeans``, re-read the shards to
   assign, save .pkl + labels .npy);
c. the floor: the trunk's forward pass alone on images transformed beforehand (same trunk,
   batch size and threads, no data loader, no file I/O) + ``faiss.Kmeans`` train + assign
   alone on the same normalised matrix.

Plus k-means alone: ours (``run_kmeans``), scikit-learn ``KMeans`` (lloyd, random init,
n_init=1, tol=0, same iterations and number of training rows as faiss) and the GEMM floor
(FLOPs of the assignment products / this machine's measured sgemm GFLOP/s).

Example::

    .venv/bin/python benchmarks/cluster_step_speed.py --quick
    .venv/bin/python benchmarks/cluster_step_speed.py \\
        --sizes 10000,60000 --dims 512,2048 --ks 100,1000

``--dims`` takes feature dims (128, 512, 2048: the default spec for that dim) or spec names
(see ``SPECS``). Writes benchmarks/results/cluster_step_speed.{json,md}
(``--quick``: cluster_step_speed_quick.*). Scratch files go to benchmarks/_work/.
"""

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import faiss  # noqa: E402

import vissl_clusterfit  # noqa: E402,F401  registers the plugin, applies the compat patches
from vissl_clusterfit import clustering  # noqa: E402
from vissl_clusterfit.data.cluster_labels import label_paths  # noqa: E402
from vissl_clusterfit.hooks import (  # noqa: E402
    clusterfit_hook as ch,
    feature_extraction as fx,
)
from vissl_clusterfit.launcher import compose_config  # noqa: E402


NCF_CONFIG = "vissl_clusterfit/clusterfit/ncf_fmnist_cpu"
NPRE_CONFIG = "vissl_clusterfit/pretrain/rotnet_fmnist_cpu"
ENGINE_TOOL = os.path.join(common.ROOT, "tools", "run_distributed_engines.py")
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class FeatureSpec:
    """Which N_pre trunk and layer give a D-dim feature, for ours and for VISSL's engine."""

    name: str
    dim: int  # nominal; the measured dim is reported
    trunk_overrides: Tuple[str, ...]
    layer: str
    pooling: str  # ours: VCF.CLUSTERFIT.POOLING
    vissl_pool_op: Tuple[
        Any, ...
    ]  # VISSL: LINEAR_EVAL_FEAT_POOL_OPS_MAP op, then flattened
    about: str


_W = "config.MODEL.TRUNK.VCF_RESNET.WIDTH="
_R50 = ("config.MODEL.TRUNK.NAME=resnet", "config.MODEL.TRUNK.RESNETS.DEPTH=50")
_AVG = ("AdaptiveAvgPool2d", [[1, 1]])
SPECS: Dict[str, FeatureSpec] = {
    s.name: s
    for s in (
        FeatureSpec(
            "w16avg",
            128,
            (_W + "16",),
            "res5",
            "avg",
            _AVG,
            "vcf_resnet-18 width 16, res5 global avg (cheap)",
        ),
        FeatureSpec(
            "w64avg",
            512,
            (_W + "64",),
            "res5",
            "avg",
            _AVG,
            "vcf_resnet-18 width 64, res5 global avg (~16x the forward of width 16)",
        ),
        FeatureSpec(
            "r50res3",
            512,
            _R50,
            "res3",
            "avg",
            _AVG,
            "VISSL resnet-50 (7x7/2 stem + max-pool) on 28-32 px, res3 global avg",
        ),
        FeatureSpec(
            "r50avg",
            2048,
            _R50,
            "res5",
            "avg",
            _AVG,
            "VISSL resnet-50 on 28-32 px, res5 (2048x1x1) global avg",
        ),
        FeatureSpec(
            "w16flat",
            2048,
            (_W + "16",),
            "res5",
            "flatten",
            ("Identity", []),
            "vcf_resnet-18 width 16, res5 map (128x4x4) flattened",
        ),
    )
}
DEFAULT_SPEC = {128: "w16avg", 512: "w64avg", 2048: "r50avg"}


# --------------------------------------------------------------------------- helpers


def hydra_value(v: Any) -> str:
    """A Python value as a Hydra command-line override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return repr(v) if isinstance(v, float) else str(v)


def fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


@contextlib.contextmanager
def stdout_to(path: str) -> Iterator[None]:
    """Send fd 1 (C printf included: faiss' verbose k-means) to ``path`` for a while."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


def save_npre(folder: str, spec: FeatureSpec, seed: int = 0) -> str:
    """An untrained N_pre in VISSL's checkpoint layout + its train_config.yaml (as the
    plugin's tests do): the cluster step's cost does not depend on training."""
    from vissl.models.trunks import get_model_trunk

    fresh_dir(folder)
    overrides = [f"config={NPRE_CONFIG}", f"config.CHECKPOINT.DIR={folder}"]
    _, cfg = compose_config(
        overrides + list(spec.trunk_overrides)
    )  # dumps train_config.yaml
    torch.manual_seed(seed)
    name = cfg.MODEL.TRUNK.NAME
    trunk = get_model_trunk(name)(cfg.MODEL, name)
    path = os.path.join(folder, "model_final_checkpoint_phase0.torch")
    model_state = {"trunk": trunk.state_dict(), "heads": {}}
    torch.save({"classy_state_dict": {"base_model": {"model": model_state}}}, path)
    return path


def ours_config(
    n: int, spec: FeatureSpec, k: int, args: argparse.Namespace, ckpt: str, out_dir: str
) -> Any:
    c = "config.VCF.CLUSTERFIT."
    _, cfg = compose_config(
        [
            f"config={NCF_CONFIG}",
            f"config.CHECKPOINT.DIR={out_dir}",
            f"config.DATA.TRAIN.DATA_PATHS=[{args.data_path}]",
            f"config.DATA.TRAIN.DATA_LIMIT={n}",
            f"{c}NPRE_CHECKPOINT={ckpt}",
            f"{c}OUTPUT_DIR={out_dir}",
            f"{c}NUM_CLUSTERS={k}",
            f"{c}NITER={args.niter}",
            f"{c}SEED={args.seed}",
            f"{c}MAX_POINTS_PER_CENTROID={args.max_points_per_centroid}",
            f"{c}FEATURE_LAYER={spec.layer}",
            f"{c}POOLING={spec.pooling}",
            f"{c}BATCHSIZE={args.batch_size}",
        ],
        dump_config=False,
    )
    return cfg


def vissl_overrides(
    n: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    ckpt: str,
    out_dir: str,
    transforms: List[Dict[str, Any]],
) -> List[str]:
    """VISSL's extract_features engine on the same images, trunk, layer and batch size:
    trunk features only (EXTRACT_TRUNK_FEATURES_ONLY), pooled by VISSL's own
    LINEAR_EVAL_FEAT_POOL_OPS_MAP and flattened, weights from MODEL.WEIGHTS_INIT."""
    s = "config.MODEL.FEATURE_EVAL_SETTINGS."
    pool_map = hydra_value([[spec.layer, list(spec.vissl_pool_op)]])
    return [
        f"config={NPRE_CONFIG}",
        *spec.trunk_overrides,
        s + "EVAL_MODE_ON=True",
        s + "FREEZE_TRUNK_ONLY=True",
        s + "EXTRACT_TRUNK_FEATURES_ONLY=True",
        s + "SHOULD_FLATTEN_FEATS=True",
        s + "LINEAR_EVAL_FEAT_POOL_OPS_MAP=" + pool_map,
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={ckpt}",
        "config.MODEL.WEIGHTS_INIT.STATE_DICT_KEY_NAME=classy_state_dict",
        f"config.EXTRACT_FEATURES.OUTPUT_DIR={out_dir}",
        f"config.CHECKPOINT.DIR={out_dir}",
        f"config.DATA.TRAIN.DATA_PATHS=[{args.data_path}]",
        f"config.DATA.TRAIN.DATA_LIMIT={n}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={args.batch_size}",
        "config.DATA.TRAIN.DROP_LAST=False",
        "config.DATA.TRAIN.TRANSFORMS=" + hydra_value(transforms),
        "config.TEST_MODEL=False",
    ]


_LOG_LINE = re.compile(
    r"^(?:INFO|WARNING|ERROR|DEBUG) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+):\s*\d+: (.*)"
)


def parse_engine_log(path: str) -> Dict[str, float]:
    """Wall-clock stamps of VISSL's log: first line, start and end of the extraction loop."""
    stamps: Dict[str, float] = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = _LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(
                m.group(1), "%Y-%m-%d %H:%M:%S,%f"
            ).timestamp()
            stamps.setdefault("first_log", t)
            if "Extracting features" in m.group(3):
                stamps.setdefault("loop_start", t)
            if m.group(2) == "extract_features.py" and "All Done" in m.group(3):
                stamps["loop_end"] = t
    return stamps


def load_vissl_cluster_tool() -> Any:
    """VISSL 0.1.6's tools/cluster_features_and_label.py (ships in the vissl wheel)."""
    import vissl

    site = os.path.dirname(os.path.dirname(vissl.__file__))
    path = os.path.join(site, "tools", "cluster_features_and_label.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VISSL's {path} is missing: reinstall vissl==0.1.6")
    spec = importlib.util.spec_from_file_location(
        "vissl_tools_cluster_features_and_label", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if torch.cuda.device_count() > 0 and faiss.get_num_gpus() == 0:
        # the tool asks faiss for a GPU whenever torch sees one; faiss-cpu has none
        class _TorchWithoutCuda:
            def __getattr__(self, name: str) -> Any:
                return getattr(torch, name)

            class cuda:  # noqa: N801
                @staticmethod
                def device_count() -> int:
                    return 0

        module.torch = _TorchWithoutCuda()
    return module


@contextlib.contextmanager
def watch_extraction(
    mem: common.PeakRSS,
    captured: Dict[str, Any],
    reference: Optional[np.ndarray] = None,
) -> Iterator[None]:
    """Instrument (not change) ``fx.extract_features`` during one ``cluster_dataset``:
    compare the features it returns with ``reference`` right away (the cluster step
    L2-normalises them in place afterwards; chunked, so no N x D temporary), and start a
    new memory phase when it returns, so the clustering part's peak is separated from
    the extraction's."""
    real = fx.extract_features

    def wrapped(*a: Any, **kw: Any) -> Any:
        out = real(*a, **kw)
        if "t_return" not in captured:
            captured["t_return"] = time.perf_counter()
            if reference is not None:
                captured["max_abs_diff"] = (
                    max_abs_diff(out, reference)
                    if out.shape == reference.shape
                    else float("nan")
                )
            mem.mark()
        return out

    fx.extract_features = wrapped
    try:
        yield
    finally:
        fx.extract_features = real


def max_abs_diff(a: np.ndarray, b: np.ndarray, rows: int = 4096) -> float:
    return max(
        (
            float(np.abs(a[i : i + rows] - b[i : i + rows]).max())
            for i in range(0, len(a), rows)
        ),
        default=0.0,
    )


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
        best = min(best, min(common.repeat_times(fn, repeats)))
    return 2.0 * rows * d * k / best / 1e9


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
        with common.Timer() as t:
            km.train(x)
        out[f"{threads}_threads_s"] = round(t.s, 4)
    faiss.omp_set_num_threads(default)
    return out


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))


def median_of(runs: List[Dict[str, Any]], key: str) -> Optional[float]:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return common.median(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


# --------------------------------------------------------------------------- measurements


def measure_floor_forward(
    cfg: Any, ckpt: str, spec: FeatureSpec, args: argparse.Namespace
) -> Dict[str, Any]:
    dataset = fx.extraction_dataset(cfg, "TRAIN")
    n = len(dataset)
    with common.Timer() as prep:
        images = torch.stack([dataset[i]["data"][0] for i in range(n)])
    trunk = fx.build_npre_trunk(ckpt).to(CPU).eval()
    times, feats = [], None
    for _ in range(args.repeats):
        chunks = []
        with torch.no_grad(), common.Timer() as t:
            for s in range(0, n, args.batch_size):
                out = trunk(
                    images[s : s + args.batch_size], out_feat_keys=[spec.layer]
                )[0]
                chunks.append(fx.pool_features(out, spec.pooling).float().numpy())
            feats = np.concatenate(chunks)
        times.append(t.s)
    del images, trunk
    gc.collect()
    return {
        "forward_s": common.median(times),
        "forward_runs_s": times,
        "image_prep_s": prep.s,
        "feats": feats,
    }


def measure_ours(
    n: int,
    spec: FeatureSpec,
    k: int,
    args: argparse.Namespace,
    ckpt: str,
    run_dir: str,
    reference: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    runs, diff, labels = [], float("nan"), None
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"ours_K{k}_r{r}"))
        cfg = ours_config(n, spec, k, args, ckpt, out_dir)
        captured: Dict[str, Any] = {}
        with common.PeakRSS() as mem:
            with watch_extraction(mem, captured, reference):
                t0 = time.perf_counter()
                meta = ch.cluster_dataset(cfg, CPU)
                t1 = time.perf_counter()
        diff = captured.get("max_abs_diff", float("nan"))
        labels = np.load(label_paths(out_dir, cfg.VCF.CLUSTERFIT.NAME)["labels"])
        extract_phase, cluster_phase = mem.phases[0], mem.phases[-1]
        runs.append(
            {
                "total_s": t1 - t0,
                "until_features_s": captured["t_return"] - t0,
                "after_features_s": t1 - captured["t_return"],
                "meta_time_s": meta.get("time_s"),
                "peak_delta_bytes": mem.delta,
                "cluster_phase_extra_bytes": cluster_phase["peak"]
                - cluster_phase["start"],
                "extract_phase_peak_delta_bytes": extract_phase["peak"] - mem.start,
                "memory_method": mem.method,
                "num_empty": meta.get("metrics", {}).get("num_empty"),
            }
        )
        del captured, meta
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs, "max_abs_diff": diff, "labels": labels}


def measure_vissl_engine(
    n: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    ckpt: str,
    run_dir: str,
    transforms: List[Dict[str, Any]],
) -> Dict[str, Any]:
    runs: List[Dict[str, Any]] = []
    out_dir, cmd = "", []
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"vissl_features_r{r}"))
        overrides = vissl_overrides(n, spec, args, ckpt, out_dir, transforms)
        cmd = [sys.executable, ENGINE_TOOL, "engine_name=extract_features", *overrides]
        log = os.path.join(run_dir, f"vissl_engine_r{r}.log")
        with open(log, "w") as f:
            t_launch = time.time()
            proc = subprocess.run(
                cmd,
                cwd=common.ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
            t_exit = time.time()
        if proc.returncode != 0:
            with open(log, errors="replace") as f:
                tail = "".join(f.readlines()[-25:])
            return {
                "error": f"exit code {proc.returncode}; log {log}; last lines:\n{tail}",
                "command": shlex.join(cmd),
            }
        st = parse_engine_log(log)
        loop = None
        if {"loop_start", "loop_end"} <= st.keys():
            loop = st["loop_end"] - st["loop_start"]
        runs.append(
            {
                "wall_s": t_exit - t_launch,
                "startup_s": (
                    st["loop_start"] - t_launch if "loop_start" in st else None
                ),
                "loop_s": loop,
                "launch_to_first_log_s": (
                    st["first_log"] - t_launch if "first_log" in st else None
                ),
                "num_shard_files": len(
                    [p for p in os.listdir(out_dir) if p.endswith("_features.npy")]
                ),
                "log": log,
            }
        )
        if not args.keep and r < args.repeats - 1:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "runs": runs,
        "features_dir": out_dir,
        "overrides": cmd[3:],
        "command": shlex.join(cmd),
        "children_max_rss_bytes": common.children_max_rss_bytes(),
    }


def measure_vissl_cluster(
    tool: Any,
    vcfg: Any,
    n: int,
    k: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    features_dir: str,
    run_dir: str,
) -> Dict[str, Any]:
    from vissl.utils.io import load_file

    runs, labels = [], None
    # our in-memory data source has no image paths; the tool only stores them
    tool.get_image_paths = lambda cfg, split: [f"{split.lower()}/{i}" for i in range(n)]
    for r in range(args.repeats):
        out_dir = fresh_dir(os.path.join(run_dir, f"vissl_cluster_K{k}_r{r}"))
        c = vcfg.CLUSTERFIT
        c.NUM_CLUSTERS, c.NUM_ITER, c.OUTPUT_DIR, c.DATA_LIMIT = (
            k,
            args.niter,
            out_dir,
            -1,
        )
        c.FEATURES.PATH, c.FEATURES.LAYER_NAME = features_dir, spec.layer
        c.FEATURES.DATA_PARTITION, c.FEATURES.TEST_PARTITION = "TRAIN", ""
        c.FEATURES.DATASET_NAME, c.FEATURES.DIMENSIONALITY_REDUCTION = (
            "fashion_mnist",
            0,
        )
        with stdout_to(os.path.join(run_dir, f"vissl_cluster_K{k}_r{r}.log")):
            with common.PeakRSS() as mem, common.Timer() as t:
                tool.cluster_features(vcfg)
        # the tool's _labels.npy follows the order in which the shards were listed; its
        # .pkl has the sample indices to put the labels back in dataset order
        pkl = [p for p in os.listdir(out_dir) if p.endswith(".pkl")][0]
        out = load_file(os.path.join(out_dir, pkl))
        order = np.asarray(out["sample_indices"], dtype=np.int64)
        labels = np.empty(n, dtype=np.int64)
        labels[order] = np.asarray(out["hard_labels"]).reshape(-1)
        runs.append(
            {
                "cluster_s": t.s,
                "peak_delta_bytes": mem.delta,
                "labels_file_in_dataset_order": bool((np.diff(order) > 0).all()),
            }
        )
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs, "labels": labels}


def measure_kmeans_alone(
    x: np.ndarray, k: int, args: argparse.Namespace
) -> Dict[str, Any]:
    n, d = x.shape
    n_train = min(n, k * args.max_points_per_centroid)
    floor_t, ours_t, sk_t = [], [], []
    floor_labels = ours_labels = None
    sk_iters = None
    for _ in range(args.repeats):
        with common.Timer() as t:
            floor_labels = faiss_kmeans_floor(x, k, args)
        floor_t.append(t.s)
        with common.Timer() as t:
            res = clustering.run_kmeans(
                x,
                k,
                niter=args.niter,
                seed=args.seed,
                max_points_per_centroid=args.max_points_per_centroid,
            )
        ours_t.append(t.s)
        ours_labels = res.labels
        if not args.no_sklearn:
            with common.Timer() as t:
                _, sk_iters = sklearn_kmeans(x, k, n_train, args)
            sk_t.append(t.s)
    gflops = gemm_gflops(n_train, d, k)
    # niter assignment GEMMs on the rows faiss trains on + the final assignment of all N
    flops = 2.0 * k * d * (n_train * args.niter + n)
    return {
        "n_train": n_train,
        "faiss_floor_s": common.median(floor_t),
        "ours_run_kmeans_s": common.median(ours_t),
        "sklearn_s": common.median(sk_t) if sk_t else None,
        "sklearn_iters": sk_iters,
        "gemm_gflops": gflops,
        "kmeans_gflop": flops / 1e9,
        "kmeans_gflop_naive_2NKDniter": 2.0 * n * k * d * args.niter / 1e9,
        "gemm_floor_s": flops / gflops / 1e9,
        "floor_labels": floor_labels,
        "ours_labels": ours_labels,
    }


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        default="10000,60000",
        help="N, comma-separated (Fashion-MNIST train: <= 60000)",
    )
    p.add_argument(
        "--dims",
        default="512,2048",
        help=f"feature dims {sorted(DEFAULT_SPEC)} or spec names {sorted(SPECS)}",
    )
    p.add_argument("--ks", default="100,1000", help="K, comma-separated")
    p.add_argument(
        "--niter", type=int, default=20, help="k-means iterations (all methods)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-points-per-centroid",
        type=int,
        default=256,
        help="faiss sub-sampling (ours' default; VISSL's tool: faiss' default, 256)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="extraction batch (ours, VISSL, floor)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per measurement; the median is reported",
    )
    p.add_argument("--data-path", default=DEFAULT_DATA)
    p.add_argument(
        "--workdir", default=os.path.join(common.WORK_DIR, "cluster_step_speed")
    )
    p.add_argument("--no-vissl", action="store_true", help="skip VISSL's route")
    p.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn KMeans")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep label files and VISSL's feature shards in --workdir",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="N=2000, D=128 (w16avg), K=50: about a minute",
    )
    p.add_argument(
        "--name",
        default="",
        help="results file name (default cluster_step_speed[_quick])",
    )
    args = p.parse_args()
    if args.quick:
        args.sizes, args.dims, args.ks = "2000", "w16avg", "50"
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    args.spec_list = []
    for item in (s.strip() for s in args.dims.split(",") if s.strip()):
        name = DEFAULT_SPEC.get(int(item)) if item.isdigit() else item
        if name not in SPECS:
            p.error(
                f"--dims {item}: use one of {sorted(DEFAULT_SPEC)} or {sorted(SPECS)}"
            )
        args.spec_list.append(SPECS[name])
    args.k_list = [int(k) for k in args.ks.split(",") if k]
    return args


def run_group(
    n: int,
    spec: FeatureSpec,
    ckpt: str,
    tool: Any,
    args: argparse.Namespace,
    results: List[Dict[str, Any]],
    errors: List[str],
) -> None:
    """Every measurement of one (N, feature spec), for every K."""
    group = f"N={n} {spec.name}"
    run_dir = fresh_dir(os.path.join(args.workdir, f"N{n}_{spec.name}"))
    cfg0 = ours_config(
        n, spec, args.k_list[0], args, ckpt, os.path.join(run_dir, "unused")
    )
    transforms = [dict(t) for t in cfg0.VCF.CLUSTERFIT.TRANSFORMS]

    print(f"[{group}] floor: forward pass alone ...", flush=True)
    floor = measure_floor_forward(cfg0, ckpt, spec, args)
    feats_floor = floor.pop("feats")
    x, _ = clustering.preprocess_features(feats_floor, pca_dim=0, l2_norm=True)

    engine: Dict[str, Any] = {}
    vissl_diff, vcfg = None, None
    if tool is not None:
        print(f"[{group}] VISSL extract_features engine (subprocess) ...", flush=True)
        engine = measure_vissl_engine(n, spec, args, ckpt, run_dir, transforms)
        if "error" in engine:
            errors.append(f"{group}: VISSL engine failed: {engine['error']}")
            print(errors[-1], flush=True)
        else:
            from vissl.utils.extract_features_utils import ExtractedFeaturesLoader

            vf = ExtractedFeaturesLoader.load_features(
                engine["features_dir"], "train", spec.layer, flatten_features=True
            )["features"]
            if vf.shape == feats_floor.shape:
                vissl_diff = float(np.abs(vf - feats_floor).max())
            else:
                errors.append(
                    f"{group}: VISSL features {vf.shape} != ours {feats_floor.shape}"
                )
            del vf
            _, vcfg = compose_config(engine["overrides"], dump_config=False)

    for k in args.k_list:
        if k > n:
            continue
        tag = f"[{group} K={k}]"
        print(f"{tag} ours: cluster_dataset ...", flush=True)
        ours = measure_ours(n, spec, k, args, ckpt, run_dir, reference=feats_floor)
        ours_diff = ours.pop("max_abs_diff")
        print(
            f"{tag} k-means alone: faiss floor / run_kmeans / scikit-learn ...",
            flush=True,
        )
        km = measure_kmeans_alone(x, k, args)
        vissl_cluster: Dict[str, Any] = {}
        if vcfg is not None:
            print(f"{tag} VISSL cluster_features_and_label ...", flush=True)
            try:
                vissl_cluster = measure_vissl_cluster(
                    tool, vcfg, n, k, spec, args, engine["features_dir"], run_dir
                )
            except Exception as e:  # report it and go on with the other measurements
                errors.append(
                    f"{tag} VISSL cluster tool failed: {type(e).__name__}: {e}"
                )
                print(errors[-1], flush=True)
        results.append(
            summarise(
                n,
                spec,
                feats_floor,
                k,
                args,
                floor,
                ours,
                km,
                engine,
                vissl_cluster,
                ours_diff,
                vissl_diff,
            )
        )
        common.print_table([results[-1]], E2E_COLS)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    args = parse_args()
    machine = common.machine_info()
    machine["faiss_kmeans_probe"] = faiss_thread_probe()
    os.makedirs(args.workdir, exist_ok=True)
    tool = None if args.no_vissl else load_vissl_cluster_tool()
    results: List[Dict[str, Any]] = []
    errors: List[str] = []
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, "
        f"torch {machine['torch_threads']} threads, faiss {machine.get('faiss')} "
        f"({machine.get('faiss_omp_threads')} threads), GPU {machine['gpu']}; "
        f"load avg {machine['load_avg_at_start']}; faiss k-means probe "
        f"{machine['faiss_kmeans_probe']}",
        flush=True,
    )
    for spec in args.spec_list:
        ckpt = save_npre(
            os.path.join(args.workdir, f"npre_{spec.name}"), spec, seed=args.seed
        )
        for n in args.size_list:
            run_group(n, spec, ckpt, tool, args, results, errors)
            gc.collect()
    report(args, machine, results, errors)


def summarise(
    n: int,
    spec: FeatureSpec,
    feats: np.ndarray,
    k: int,
    args: argparse.Namespace,
    floor: Dict[str, Any],
    ours: Dict[str, Any],
    km: Dict[str, Any],
    ve: Dict[str, Any],
    vc: Dict[str, Any],
    ours_diff: float,
    vissl_diff: Optional[float],
) -> Dict[str, Any]:
    o, ve_runs, vc_runs = ours["runs"], ve.get("runs", []), vc.get("runs", [])
    f_bytes = feats.nbytes
    ours_s = median_of(o, "total_s")
    floor_s = floor["forward_s"] + km["faiss_floor_s"]
    v_wall, v_loop = median_of(ve_runs, "wall_s"), median_of(ve_runs, "loop_s")
    v_cluster = median_of(vc_runs, "cluster_s")
    vissl_s = (
        v_wall + v_cluster if v_wall is not None and v_cluster is not None else None
    )
    vissl_nostart = (
        v_loop + v_cluster if v_loop is not None and v_cluster is not None else None
    )
    peak = median_of(o, "peak_delta_bytes")
    cluster_extra = median_of(o, "cluster_phase_extra_bytes")
    vissl_labels = vc.get("labels")
    return {
        "N": n,
        "D": int(feats.shape[1]),
        "feature": spec.name,
        "K": k,
        "niter": args.niter,
        "n_train": km["n_train"],
        "ours_s": ours_s,
        "ours_until_features_s": median_of(o, "until_features_s"),
        "ours_after_features_s": median_of(o, "after_features_s"),
        "floor_forward_s": floor["forward_s"],
        "floor_image_prep_s": floor["image_prep_s"],
        "floor_kmeans_s": km["faiss_floor_s"],
        "floor_s": floor_s,
        "ours_over_floor": ours_s / floor_s,
        "vissl_s": vissl_s,
        "vissl_engine_wall_s": v_wall,
        "vissl_engine_startup_s": median_of(ve_runs, "startup_s"),
        "vissl_engine_loop_s": v_loop,
        "vissl_cluster_s": v_cluster,
        "vissl_nostartup_s": vissl_nostart,
        "vissl_over_ours": ratio(vissl_s, ours_s),
        "vissl_nostartup_over_ours": ratio(vissl_nostart, ours_s),
        "vissl_shard_files": ve_runs[0]["num_shard_files"] if ve_runs else None,
        "ours_run_kmeans_s": km["ours_run_kmeans_s"],
        "sklearn_s": km["sklearn_s"],
        "sklearn_iters": km["sklearn_iters"],
        "gemm_gflops": km["gemm_gflops"],
        "kmeans_gflop": km["kmeans_gflop"],
        "kmeans_gflop_naive": km["kmeans_gflop_naive_2NKDniter"],
        "gemm_floor_s": km["gemm_floor_s"],
        "run_kmeans_over_gemm_floor": ratio(
            km["ours_run_kmeans_s"], km["gemm_floor_s"]
        ),
        "sklearn_over_run_kmeans": ratio(km["sklearn_s"], km["ours_run_kmeans_s"]),
        "F_MiB": common.mib(f_bytes),
        "ours_peak_delta_MiB": common.mib(peak),
        "ours_peak_over_F": peak / f_bytes,
        "ours_extract_peak_delta_MiB": common.mib(
            median_of(o, "extract_phase_peak_delta_bytes")
        ),
        "ours_cluster_extra_MiB": common.mib(cluster_extra),
        "ours_cluster_peak_over_F": (f_bytes + cluster_extra) / f_bytes,
        "vissl_cluster_peak_delta_MiB": (
            common.mib(median_of(vc_runs, "peak_delta_bytes")) if vc_runs else None
        ),
        "vissl_engine_children_maxrss_MiB": (
            common.mib(ve["children_max_rss_bytes"]) if ve_runs else None
        ),
        "memory_method": o[0]["memory_method"],
        "max_abs_diff_ours_vs_floor_feats": ours_diff,
        "max_abs_diff_vissl_vs_floor_feats": vissl_diff,
        "nmi_run_kmeans_vs_faiss_floor": nmi(km["ours_labels"], km["floor_labels"]),
        "nmi_ours_vs_vissl_labels": (
            nmi(ours["labels"], vissl_labels) if vissl_labels is not None else None
        ),
        "ours_num_empty": o[0]["num_empty"],
        "ours_runs": o,
        "vissl_engine_runs": ve_runs,
        "vissl_engine_command": ve.get("command"),
        "vissl_cluster_runs": vc_runs,
        "floor_forward_runs_s": floor["forward_runs_s"],
        "spec": asdict(spec),
    }


E2E_COLS = [
    "N",
    "D",
    "feature",
    "K",
    "ours_s",
    "floor_s",
    "ours_over_floor",
    "vissl_s",
    "vissl_over_ours",
    "vissl_nostartup_over_ours",
]
BREAKDOWN_COLS = [
    "N",
    "D",
    "K",
    "ours_until_features_s",
    "ours_after_features_s",
    "floor_forward_s",
    "floor_image_prep_s",
    "floor_kmeans_s",
    "vissl_engine_wall_s",
    "vissl_engine_startup_s",
    "vissl_engine_loop_s",
    "vissl_cluster_s",
]
KMEANS_COLS = [
    "N",
    "D",
    "K",
    "n_train",
    "ours_run_kmeans_s",
    "floor_kmeans_s",
    "sklearn_s",
    "sklearn_iters",
    "gemm_gflops",
    "kmeans_gflop",
    "gemm_floor_s",
    "run_kmeans_over_gemm_floor",
    "sklearn_over_run_kmeans",
]
MEM_COLS = [
    "N",
    "D",
    "K",
    "F_MiB",
    "ours_peak_delta_MiB",
    "ours_peak_over_F",
    "ours_cluster_extra_MiB",
    "ours_cluster_peak_over_F",
    "vissl_cluster_peak_delta_MiB",
    "vissl_engine_children_maxrss_MiB",
]
CHECK_COLS = [
    "N",
    "D",
    "K",
    "max_abs_diff_ours_vs_floor_feats",
    "max_abs_diff_vissl_vs_floor_feats",
    "nmi_run_kmeans_vs_faiss_floor",
    "nmi_ours_vs_vissl_labels",
    "ours_num_empty",
    "vissl_shard_files",
]

NOTES = [
    "Targets: ours_over_floor <= 1.2, vissl_over_ours >= 2, ours_cluster_peak_over_F <= 1.5. "
    "Reported, not asserted.",
    "ours_s: cluster_dataset(cfg) in-process = build N_pre from its checkpoint + extract (data "
    "loader with the PIL transforms, batch {batch}) + L2-normalise + faiss k-means ({niter} "
    "iterations, at most {mppc} points per centroid) + write the label files. It runs inside the "
    "already started N_cf training, so it pays no interpreter start-up.",
    "vissl_s: VISSL's extract_features engine as a subprocess (wall time including interpreter "
    "start, imports, config composition, model build and weight loading, as a user pays it) + "
    "VISSL 0.1.6's tools/cluster_features_and_label.py:cluster_features in-process (reload the "
    "shards with ExtractedFeaturesLoader, L2-normalise, faiss.Kmeans with the same niter, re-read "
    "the shards to assign, save .pkl + labels .npy). Its image-path lookup is stubbed with index "
    "strings: our in-memory data source has no file paths. vissl_nostartup: the engine's "
    "extraction loop (from its 'Extracting features' log line to 'All Done!') + the cluster tool. "
    "VISSL's default EXTRACT_FEATURES.CHUNK_THRESHOLD=0 is kept (one shard per batch).",
    "floor_s: forward pass alone over images transformed beforehand (floor_image_prep_s, not "
    "counted) with the same trunk, batch and threads, no file I/O + faiss.Kmeans train + assign "
    "alone on the same matrix.",
    "gemm_floor_s: FLOPs of the k-means assignment products, 2*K*D*(n_train*niter + N) with "
    "n_train = min(N, K*max_points_per_centroid) rows faiss trains on, divided by the best "
    "numpy/torch sgemm GFLOP/s measured here on the (n_train x D) @ (D x K) shape; a lower bound "
    "that ignores argmin and centroid updates. kmeans_gflop_naive (2*N*K*D*niter, no "
    "sub-sampling) is in the JSON.",
    "scikit-learn KMeans: lloyd, init=random, n_init=1, tol=0, max_iter=niter, fitted on n_train "
    "random rows then predict on all N (the same work as faiss); sklearn_iters < niter means it "
    "stopped early on unchanged labels.",
    "Memory: the kernel's peak RSS (VmHWM, reset through /proc/self/clear_refs, after "
    "malloc_trim) around each call. ours_peak_delta: whole cluster_dataset over the RSS before "
    "it; ours_cluster_extra: peak of the part after extraction over the RSS when the features "
    "were returned (which already holds F); ours_cluster_peak_over_F = (F + cluster_extra) / F. "
    "vissl_engine_children_maxrss: getrusage(RUSAGE_CHILDREN) max RSS of the engine "
    "subprocesses so far.",
    "Feature dims on 2 CPU cores: w64avg (512-d) costs ~16x the forward of width 16; r50res3 "
    "(VISSL resnet-50 res3, 512-d) is a cheaper 512-d option; r50avg gives 2048-d res5 "
    "features, w16flat a 2048-d flattened map.",
]


def report(
    args: argparse.Namespace,
    machine: Dict[str, Any],
    results: List[Dict[str, Any]],
    errors: List[str],
) -> None:
    tables = [
        {
            "title": "End to end: ours vs floor vs VISSL's route (seconds; ratios from this run)",
            "columns": E2E_COLS,
            "rows": results,
        },
        {"title": "Breakdown (seconds)", "columns": BREAKDOWN_COLS, "rows": results},
        {
            "title": "k-means alone on the same L2-normalised matrix (seconds)",
            "columns": KMEANS_COLS,
            "rows": results,
        },
        {
            "title": "Memory (peak RSS deltas, MiB; F = the N x D float32 feature matrix)",
            "columns": MEM_COLS,
            "rows": results,
        },
        {
            "title": "Checks (same features, label agreement)",
            "columns": CHECK_COLS,
            "rows": results,
        },
    ]
    for t in tables:
        common.print_table(t["rows"], t["columns"], title=t["title"])
    used = sorted({r["feature"] for r in results})
    notes = [
        n.format(
            batch=args.batch_size, niter=args.niter, mppc=args.max_points_per_centroid
        )
        for n in NOTES
    ]
    notes.append(
        f"N_pre is untrained (random init, seed {args.seed}): the cost of the cluster step does "
        "not depend on the weights. Features: "
        + "; ".join(f"{s}: {SPECS[s].about}" for s in used)
        + "."
    )
    notes.append(
        f"Machine check: faiss k-means probe (4000x128, K=50, 20 iterations) "
        f"{machine.get('faiss_kmeans_probe')}, threading env {machine.get('threading_env')}. "
        "When the default-threads time is far above the 1-thread time, faiss' OpenMP threads are "
        "spin-waiting against other load on the machine and the k-means numbers are inflated: "
        "re-run on a quiet machine."
    )
    flags = [
        r["labels_file_in_dataset_order"]
        for res in results
        for r in res["vissl_cluster_runs"]
    ]
    if flags and not all(flags):
        notes.append(
            "VISSL's <prefix>_labels.npy is written in shard-listing order, not dataset order, "
            "when there are several shards (its .pkl holds the sample indices, used here)."
        )
    notes += ["ERROR: " + e.replace("\n", " | ") for e in errors]
    name = args.name or (
        "cluster_step_speed_quick" if args.quick else "cluster_step_speed"
    )
    slim_args = {k: v for k, v in vars(args).items() if k != "spec_list"}
    slim_args["specs"] = [s.name for s in args.spec_list]
    paths = common.write_results(
        name,
        machine,
        tables=tables,
        data={"args": slim_args, "results": results, "errors": errors},
        notes=notes,
        title="ClusterFit cluster step: ours vs VISSL's route vs the floor",
    )
    if errors:
        print("\nERRORS:\n" + "\n".join(errors))
    print(
        f"\nwrote {paths['md']} and {paths['json']} "
        f"(benchmark wall time {common.elapsed_s():.0f} s)"
    )


if __name__ == "__main__":
    main()
