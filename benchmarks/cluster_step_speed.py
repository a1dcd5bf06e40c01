"""Speed and memory of the ClusterFit cluster step: ours vs VISSL's route vs the floor.

On the same data (Fashion-MNIST train subset), the same N_pre checkpoint and the same
features, for every (N, feature spec, K):

a. ours: the plugin's cluster step in-process, as the ClusterFit hook runs it at the start
   of N_cf training (build N_pre, extract, L2-normalise, faiss k-means, write the label
   files), a fresh ``VCF.CLUSTERFIT.OUTPUT_DIR`` each run; its phase times (extraction,
   clustering) are read from the meta file it writes there;
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

Example (from the repository root)::

    .venv/bin/python -m benchmarks.cluster_step_speed --quick
    .venv/bin/python -m benchmarks.cluster_step_speed \\
        --sizes 10000,60000 --dims 512,2048 --ks 100,1000

``--dims`` takes feature dims (128, 512, 2048: the default spec for that dim) or spec names
(see ``benchmarks.step_speed.specs.SPECS``). Writes
benchmarks/results/cluster_step_speed.{json,md} (``--quick``: cluster_step_speed_quick.*).
Scratch files go to benchmarks/_work/. The pieces are in ``benchmarks.step_speed``.
"""

import argparse
import gc
import os
import shutil
from typing import Any, Dict, List, Optional

from benchmarks import common, plugin
from benchmarks.report import print_table
from benchmarks.step_speed import ours as ours_mod, vissl_route
from benchmarks.step_speed.specs import (
    DEFAULT_DATA,
    DEFAULT_SPEC,
    SPECS,
    FeatureSpec,
    fresh_dir,
    ours_config,
    save_npre,
)
from benchmarks.step_speed.summary import E2E_COLS, report, summarise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_step_speed",
        description=__doc__.split("\n\n")[0],
    )
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
        "--no-feature-check",
        action="store_true",
        help="skip comparing the step's features with the floor's (one extraction "
        "per N and spec)",
    )
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
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
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


def _vissl_features(
    n: int,
    spec: FeatureSpec,
    ckpt: str,
    args: argparse.Namespace,
    run_dir: str,
    cfg0: Any,
    floor_feats: Any,
    errors: List[str],
) -> Dict[str, Any]:
    """VISSL's engine on the group's images; its features compared with the floor's."""
    group = f"N={n} {spec.name}"
    print(f"[{group}] VISSL extract_features engine (subprocess) ...", flush=True)
    transforms = [dict(t) for t in cfg0.VCF.CLUSTERFIT.TRANSFORMS]
    engine = vissl_route.measure_vissl_engine(n, spec, args, ckpt, run_dir, transforms)
    if "error" in engine:
        errors.append(f"{group}: VISSL engine failed: {engine['error']}")
        print(errors[-1], flush=True)
        return {"engine": engine, "diff": None, "vcfg": None}
    diff = vissl_route.vissl_features_diff(engine, spec, floor_feats)
    if diff is None:
        errors.append(f"{group}: VISSL features' shape != ours {floor_feats.shape}")
    vcfg = vissl_route.vissl_cluster_config(engine)
    return {"engine": engine, "diff": diff, "vcfg": vcfg}


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
    print(f"[{group}] floor: forward pass alone ...", flush=True)
    floor = ours_mod.measure_floor_forward(cfg0, ckpt, spec, args)
    feats_floor = floor.pop("feats")
    x, _ = plugin.clustering.preprocess_features(feats_floor, pca_dim=0, l2_norm=True)
    ours_diff = None
    if not args.no_feature_check:
        print(f"[{group}] check: the step's features vs the floor's ...", flush=True)
        ours_diff = ours_mod.ours_features_diff(cfg0, ckpt, spec, feats_floor)
    vissl: Dict[str, Any] = {"engine": {}, "diff": None, "vcfg": None}
    if tool is not None:
        vissl = _vissl_features(n, spec, ckpt, args, run_dir, cfg0, feats_floor, errors)
    for k in args.k_list:
        if k > n:
            continue
        tag = f"[{group} K={k}]"
        print(f"{tag} ours: the cluster step ...", flush=True)
        ours = ours_mod.measure_ours(n, spec, k, args, ckpt, run_dir)
        print(
            f"{tag} k-means alone: faiss floor / run_kmeans / scikit-learn ...",
            flush=True,
        )
        km = ours_mod.measure_kmeans_alone(x, k, args)
        vissl_cluster: Dict[str, Any] = {}
        if vissl["vcfg"] is not None:
            print(f"{tag} VISSL cluster_features_and_label ...", flush=True)
            try:
                vissl_cluster = vissl_route.measure_vissl_cluster(
                    tool,
                    vissl["vcfg"],
                    n,
                    k,
                    spec,
                    args,
                    vissl["engine"]["features_dir"],
                    run_dir,
                )
            except Exception as e:  # report it and go on with the other measurements
                errors.append(
                    f"{tag} VISSL cluster tool failed: {type(e).__name__}: {e}"
                )
                print(errors[-1], flush=True)
        measured = {
            "floor": floor,
            "ours": ours,
            "km": km,
            "engine": vissl["engine"],
            "vissl_cluster": vissl_cluster,
            "ours_diff": ours_diff,
            "vissl_diff": vissl["diff"],
        }
        results.append(summarise(n, spec, feats_floor, k, args, measured))
        print_table([results[-1]], E2E_COLS)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    machine = common.machine_info()
    machine["faiss_kmeans_probe"] = ours_mod.faiss_thread_probe()
    os.makedirs(args.workdir, exist_ok=True)
    tool = None if args.no_vissl else vissl_route.load_vissl_cluster_tool()
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


if __name__ == "__main__":
    main()
