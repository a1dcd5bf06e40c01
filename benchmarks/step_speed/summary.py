"""One row per (N, feature spec, K) of the cluster step benchmark, its tables, notes and
results files."""

import argparse
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks import common
from benchmarks.measure import median, mib
from benchmarks.report import print_table
from benchmarks.step_speed.ours import nmi
from benchmarks.step_speed.specs import SPECS, FeatureSpec


def median_of(runs: List[Dict[str, Any]], key: str) -> Optional[float]:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return median(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _sum(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a + b if a is not None and b is not None else None


def _mib(n_bytes: Optional[float]) -> Optional[float]:
    return None if n_bytes is None else mib(n_bytes)


def _times(m: Dict[str, Any]) -> Dict[str, Any]:
    o, ve_runs = m["ours"]["runs"], m["engine"].get("runs", [])
    km, floor = m["km"], m["floor"]
    ours_s = median_of(o, "total_s")
    floor_s = floor["forward_s"] + km["faiss_floor_s"]
    v_wall, v_loop = median_of(ve_runs, "wall_s"), median_of(ve_runs, "loop_s")
    v_cluster = median_of(m["vissl_cluster"].get("runs", []), "cluster_s")
    vissl_s, vissl_nostart = _sum(v_wall, v_cluster), _sum(v_loop, v_cluster)
    return {
        "ours_s": ours_s,
        "ours_extract_s": median_of(o, "extract_s"),
        "ours_cluster_s": median_of(o, "cluster_s"),
        "ours_other_s": median_of(o, "other_s"),
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
    }


def _kmeans(km: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "n_train": km["n_train"],
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
    }


def _memory(m: Dict[str, Any], f_bytes: int) -> Dict[str, Any]:
    o, vc_runs = m["ours"]["runs"], m["vissl_cluster"].get("runs", [])
    peak = median_of(o, "peak_delta_bytes")
    cluster_extra = median_of(o, "cluster_phase_extra_bytes")
    return {
        "F_MiB": mib(f_bytes),
        "ours_peak_delta_MiB": mib(peak),
        "ours_peak_over_F": peak / f_bytes,
        "ours_extract_peak_delta_MiB": _mib(
            median_of(o, "extract_phase_peak_delta_bytes")
        ),
        "ours_cluster_extra_MiB": _mib(cluster_extra),
        "ours_cluster_peak_over_F": (
            (f_bytes + cluster_extra) / f_bytes if cluster_extra is not None else None
        ),
        "vissl_cluster_peak_delta_MiB": _mib(median_of(vc_runs, "peak_delta_bytes")),
        "vissl_engine_children_maxrss_MiB": (
            mib(m["engine"]["children_max_rss_bytes"])
            if m["engine"].get("runs")
            else None
        ),
        "memory_method": o[0]["memory_method"],
        "memory_split": all(r["memory_split"] for r in o),
    }


def _checks(m: Dict[str, Any]) -> Dict[str, Any]:
    km, vissl_labels = m["km"], m["vissl_cluster"].get("labels")
    ours_labels = m["ours"]["labels"]
    return {
        "max_abs_diff_ours_vs_floor_feats": m["ours_diff"],
        "max_abs_diff_vissl_vs_floor_feats": m["vissl_diff"],
        "nmi_run_kmeans_vs_faiss_floor": nmi(km["ours_labels"], km["floor_labels"]),
        "nmi_ours_step_vs_run_kmeans": nmi(ours_labels, km["ours_labels"]),
        "nmi_ours_vs_vissl_labels": (
            nmi(ours_labels, vissl_labels) if vissl_labels is not None else None
        ),
        "ours_num_empty": m["ours"]["runs"][0]["num_empty"],
    }


def summarise(
    n: int,
    spec: FeatureSpec,
    feats: np.ndarray,
    k: int,
    args: argparse.Namespace,
    m: Dict[str, Any],
) -> Dict[str, Any]:
    """One result row from the measurements ``m`` of one (N, spec, K): ``floor``,
    ``ours``, ``km``, ``engine``, ``vissl_cluster``, ``ours_diff``, ``vissl_diff``."""
    return {
        "N": n,
        "D": int(feats.shape[1]),
        "feature": spec.name,
        "K": k,
        "niter": args.niter,
        **_times(m),
        **_kmeans(m["km"]),
        **_memory(m, feats.nbytes),
        **_checks(m),
        "ours_runs": m["ours"]["runs"],
        "vissl_engine_runs": m["engine"].get("runs", []),
        "vissl_engine_command": m["engine"].get("command"),
        "vissl_cluster_runs": m["vissl_cluster"].get("runs", []),
        "floor_forward_runs_s": m["floor"]["forward_runs_s"],
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
    "ours_extract_s",
    "ours_cluster_s",
    "ours_other_s",
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
    "nmi_ours_step_vs_run_kmeans",
    "nmi_ours_vs_vissl_labels",
    "ours_num_empty",
    "vissl_shard_files",
]

NOTES = [
    "Targets: ours_over_floor <= 1.2, vissl_over_ours >= 2, ours_cluster_peak_over_F <= 1.5. "
    "Reported, not asserted.",
    "ours_s: the cluster step in-process (vissl_clusterfit's run_cluster_step(cfg), as the "
    "ClusterFit hook runs it) = build the dataset and hash N_pre's checkpoint + build N_pre "
    "and extract (data loader with the PIL transforms, batch {batch}) + L2-normalise + faiss "
    "k-means ({niter} iterations, at most {mppc} points per centroid) + metrics and label "
    "files. It runs inside the already started N_cf training, so it pays no interpreter "
    "start-up. ours_extract_s and ours_cluster_s are the phase times the step writes into its "
    "meta file (time_s.extract: N_pre build + extraction; time_s.cluster: pre-processing + "
    "k-means); ours_other_s is the rest of ours_s (dataset, checkpoint hash, metrics, files).",
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
    "malloc_trim) around each call. ours_peak_delta: whole step over the RSS before it; "
    "ours_cluster_extra: peak of the part from the step's '[vcf] clustering ...' log record "
    "(features extracted, N_pre freed) to its end over the RSS at that record (which already "
    "holds F); ours_cluster_peak_over_F = (F + cluster_extra) / F. The split comes from a "
    "logging handler, nothing of the step is patched; '-' when the record did not come. "
    "vissl_engine_children_maxrss: getrusage(RUSAGE_CHILDREN) max RSS of the engine "
    "subprocesses so far.",
    "Checks: max_abs_diff_ours_vs_floor_feats compares the floor's features with those of the "
    "step's extraction functions called directly (same trunk build, dataset, batch and loader; "
    "one extra extraction per N and spec, skipped with --no-feature-check); "
    "nmi_ours_step_vs_run_kmeans compares the step's labels with run_kmeans on the floor's "
    "L2-normalised features (1.00: the step clustered the same features).",
    "Feature dims on 2 CPU cores: w64avg (512-d) costs ~16x the forward of width 16; r50res3 "
    "(VISSL resnet-50 res3, 512-d) is a cheaper 512-d option; r50avg gives 2048-d res5 "
    "features, w16flat a 2048-d flattened map.",
]

TABLES = [
    (
        "End to end: ours vs floor vs VISSL's route (seconds; ratios from this run)",
        E2E_COLS,
    ),
    ("Breakdown (seconds)", BREAKDOWN_COLS),
    ("k-means alone on the same L2-normalised matrix (seconds)", KMEANS_COLS),
    (
        "Memory (peak RSS deltas, MiB; F = the N x D float32 feature matrix)",
        MEM_COLS,
    ),
    ("Checks (same features, label agreement)", CHECK_COLS),
]


def _notes(
    args: argparse.Namespace,
    machine: Dict[str, Any],
    results: List[Dict[str, Any]],
    errors: List[str],
) -> List[str]:
    notes = [
        n.format(
            batch=args.batch_size, niter=args.niter, mppc=args.max_points_per_centroid
        )
        for n in NOTES
    ]
    used = sorted({r["feature"] for r in results})
    notes.append(
        f"N_pre is untrained (random init, seed {args.seed}): the cost of the cluster step "
        "does not depend on the weights. Features: "
        + "; ".join(f"{s}: {SPECS[s].about}" for s in used)
        + "."
    )
    notes.append(
        f"Machine check: faiss k-means probe (4000x128, K=50, 20 iterations) "
        f"{machine.get('faiss_kmeans_probe')}, threading env "
        f"{machine.get('threading_env')}. When the default-threads time is far above the "
        "1-thread time, faiss' OpenMP threads are spin-waiting against other load on the "
        "machine and the k-means numbers are inflated: re-run on a quiet machine."
    )
    flags = [
        r["labels_file_in_dataset_order"]
        for res in results
        for r in res["vissl_cluster_runs"]
    ]
    if flags and not all(flags):
        notes.append(
            "VISSL's <prefix>_labels.npy is written in shard-listing order, not dataset "
            "order, when there are several shards (its .pkl holds the sample indices, "
            "used here)."
        )
    return notes + ["ERROR: " + e.replace("\n", " | ") for e in errors]


def report(
    args: argparse.Namespace,
    machine: Dict[str, Any],
    results: List[Dict[str, Any]],
    errors: List[str],
) -> None:
    tables = [
        {"title": title, "columns": cols, "rows": results} for title, cols in TABLES
    ]
    for t in tables:
        print_table(t["rows"], t["columns"], title=t["title"])
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
        notes=_notes(args, machine, results, errors),
        title="ClusterFit cluster step: ours vs VISSL's route vs the floor",
    )
    if errors:
        print("\nERRORS:\n" + "\n".join(errors))
    print(
        f"\nwrote {paths['md']} and {paths['json']} "
        f"(benchmark wall time {common.elapsed_s():.0f} s)"
    )
