"""The extract-and-cluster step of ClusterFit and the hook that runs it in training.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1): features of N_pre on D_cf are clustered
with k-means into K groups and a new network N_cf is trained from scratch on the cluster
ids with cross-entropy. ``ClusterFitHook.on_start`` does the first half inside the N_cf
training run, before the first iteration: load N_pre, extract (every rank its shard),
cluster on rank 0 (or, with ``KMEANS_BACKEND=distributed``, on every rank's shard:
DeeperCluster Sec. 4.2), write the label files (atomically), point the training dataset at them,
free N_pre. On a re-run or resume, label files whose fingerprint matches the current
config are reused; files made with other settings are refused.

Config params: ``config.VCF.CLUSTERFIT`` (see configs/vissl_clusterfit_defaults/plugin.yaml).
"""

import gc
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from classy_vision.hooks.classy_hook import ClassyHook

from vissl_clusterfit import clustering
from vissl_clusterfit.data.cluster_labels import (
    file_sha256,
    fingerprint,
    label_paths,
    read_meta,
    write_label_files,
)
from vissl_clusterfit.hooks import feature_extraction as fx


def clusterfit_output_dir(cfg: Any) -> str:
    out = cfg.VCF.CLUSTERFIT.OUTPUT_DIR
    return out if out else os.path.join(cfg.CHECKPOINT.DIR, "clusterfit")


def npre_specs(cfg: Any) -> List[Dict[str, Any]]:
    """N_pre models whose features are concatenated: the main one + EXTRA_NPRE."""
    c = cfg.VCF.CLUSTERFIT
    specs = [
        {
            "CHECKPOINT": c.NPRE_CHECKPOINT,
            "CONFIG": c.NPRE_CONFIG,
            "OVERRIDES": list(c.NPRE_OVERRIDES),
            "FEATURE_LAYER": c.FEATURE_LAYER,
            "POOLING": c.POOLING,
        }
    ]
    for extra in c.EXTRA_NPRE:
        spec = {
            "CONFIG": "",
            "OVERRIDES": [],
            "FEATURE_LAYER": c.FEATURE_LAYER,
            "POOLING": c.POOLING,
        }
        spec.update(dict(extra))
        specs.append(spec)
    return specs


def clustering_settings(cfg: Any, dataset_len: int) -> Dict[str, Any]:
    """Everything that determines the labels, for the meta file and the fingerprint."""
    c = cfg.VCF.CLUSTERFIT
    npre = []
    for spec in npre_specs(cfg):
        if not os.path.isfile(spec["CHECKPOINT"] or ""):
            fx.load_checkpoint(spec["CHECKPOINT"])  # raises the user-facing error
        npre.append(dict(spec, CHECKPOINT_SHA256=file_sha256(spec["CHECKPOINT"])))
    train = cfg.DATA.TRAIN
    return {
        "npre": npre,
        "num_clusters": int(c.NUM_CLUSTERS),
        "niter": int(c.NITER),
        "seed": int(c.SEED),
        "max_points_per_centroid": int(c.MAX_POINTS_PER_CENTROID),
        "pca_dim": int(c.PCA_DIM),
        "whiten": bool(c.WHITEN),
        "l2_norm": bool(c.L2_NORM),
        "order": c.ORDER,
        "pca_sample_size": int(c.PCA_SAMPLE_SIZE),
        "kmeans_backend": kmeans_backend(cfg.VCF.CLUSTERFIT, "CLUSTERFIT"),
        "transforms": list(c.TRANSFORMS),
        "batch_size": int(c.BATCHSIZE),
        "distill": bool(c.get("DISTILL", False)),
        "dataset": {
            "sources": list(train.DATA_SOURCES),
            "names": list(train.DATASET_NAMES),
            "paths": list(train.DATA_PATHS),
            "limit": int(train.DATA_LIMIT),
            "limit_sampling": dict(train.get("DATA_LIMIT_SAMPLING", {}) or {}),
            "length": int(dataset_len),
        },
    }


KMEANS_BACKENDS = ("faiss", "distributed")


def kmeans_backend(params: Any, section: str) -> str:
    """``faiss``: rank 0 gathers all features and runs faiss k-means (fast on one
    machine). ``distributed``: the features stay sharded over the ranks, PCA and Lloyd
    k-means all-reduce statistics only (DeeperCluster Sec. 4.2), bounded memory per rank.
    """
    backend = params.get("KMEANS_BACKEND", "faiss")
    if backend not in KMEANS_BACKENDS:
        raise ValueError(
            f"config.VCF.{section}.KMEANS_BACKEND={backend} is not supported: use one of "
            f"{KMEANS_BACKENDS}"
        )
    return backend


def _diff(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, prefix + k + ".")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _extract(
    cfg: Any, dataset: Any, device: torch.device, gather: bool = True
) -> Optional[np.ndarray]:
    specs = npre_specs(cfg)
    trunks: List[Tuple[torch.nn.Module, str, str]] = []
    for spec in specs:
        trunk = fx.build_npre_trunk(
            spec["CHECKPOINT"], spec["CONFIG"], spec["OVERRIDES"]
        )
        fx.check_layer(trunk, spec["FEATURE_LAYER"])
        fx.pool_features(torch.zeros(1, 1, 1, 1), spec["POOLING"])  # validates the name
        trunks.append((trunk, spec["FEATURE_LAYER"], spec["POOLING"]))
    feats = fx.extract_features(
        trunks,
        dataset,
        batch_size=int(cfg.VCF.CLUSTERFIT.BATCHSIZE),
        device=device,
        num_workers=int(cfg.DATA.NUM_DATALOADER_WORKERS),
        gather=gather,
    )
    del trunks  # free N_pre before N_cf trains
    gc.collect()
    return feats


def _teacher_logits(
    cfg: Any, dataset: Any, device: torch.device
) -> Optional[np.ndarray]:
    """N_pre's head outputs on D_cf (distillation baseline, ClusterFit Sec. 4.2)."""
    spec = npre_specs(cfg)[0]
    model = fx.build_npre_model(spec["CHECKPOINT"], spec["CONFIG"], spec["OVERRIDES"])
    try:
        logits = fx.extract_features(
            [(model, "logits", "flatten")],
            dataset,
            int(cfg.VCF.CLUSTERFIT.BATCHSIZE),
            device,
        )
    except RuntimeError as e:
        raise ValueError(
            f"N_pre's heads cannot run on whole images ({e}): distillation needs a "
            "single-view head (e.g. RotNet), not a siamese one (Jigsaw)"
        )
    del model
    gc.collect()
    return logits


def cluster_dataset(
    cfg: Any, device: torch.device = torch.device("cpu")
) -> Dict[str, Any]:
    """Produce (or reuse) the cluster label files of DATA.TRAIN for the current config.

    Runs on every rank (extraction is sharded); rank 0 clusters and writes. Returns the
    meta dict (identical on every rank). Raises ValueError when label files made with
    other settings already exist at the output location.
    """
    c = cfg.VCF.CLUSTERFIT
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    out_dir, name = clusterfit_output_dir(cfg), c.NAME
    dataset = fx.extraction_dataset(cfg, "TRAIN")
    n = len(dataset)
    k = int(c.NUM_CLUSTERS)
    if k > n:
        raise ValueError(
            f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={k} is larger than the number of samples "
            f"of DATA.TRAIN ({n}): lower K or raise DATA.TRAIN.DATA_LIMIT"
        )
    settings = clustering_settings(cfg, n)
    fp = fingerprint(settings)
    meta = read_meta(out_dir, name)
    if meta is not None:
        if meta.get("fingerprint") == fp:
            logging.info(
                f"[vcf] reusing cluster labels {label_paths(out_dir, name)['labels']}"
            )
            return meta
        changes = _diff(meta.get("settings", {}), settings)
        raise ValueError(
            f"cluster label files {os.path.join(out_dir, name)}_* were made with other "
            f"settings ({'; '.join(changes) or 'unknown'}). Delete them to re-cluster, or "
            "set config.VCF.CLUSTERFIT.OUTPUT_DIR / NAME to keep both"
        )

    t0 = time.time()
    distributed = settings["kmeans_backend"] == "distributed"
    feats = _extract(cfg, dataset, device, gather=not distributed)
    teacher = _teacher_logits(cfg, dataset, device) if settings["distill"] else None
    t_extract = time.time() - t0
    result_meta = None
    if distributed:
        result = _cluster_sharded(cfg, feats)
        if rank == 0:
            result_meta = _write(
                cfg, result, dataset, settings, fp, t_extract, device, teacher
            )
    elif rank == 0:
        result = _cluster_on_rank0(cfg, feats)
        result_meta = _write(
            cfg, result, dataset, settings, fp, t_extract, device, teacher
        )
    _barrier()
    return fx.broadcast_from_rank0(result_meta)


def _cluster_on_rank0(cfg: Any, feats: np.ndarray) -> Dict[str, Any]:
    """faiss route: all features on this process (ClusterFit Sec. 3.1)."""
    c = cfg.VCF.CLUSTERFIT
    k = int(c.NUM_CLUSTERS)
    t0 = time.time()
    feature_dim = int(feats.shape[1])
    logging.info(
        f"[vcf] clustering {feats.shape} features into K={k} (k-means, {c.NITER} iterations)"
    )
    # in place: the features are ours, so the cluster step holds one copy of them
    x, pca = clustering.preprocess_features(
        feats,
        pca_dim=int(c.PCA_DIM),
        whiten=bool(c.WHITEN),
        l2_norm=bool(c.L2_NORM),
        order=c.ORDER,
        pca_sample_size=int(c.PCA_SAMPLE_SIZE),
        seed=int(c.SEED),
        inplace=True,
    )
    del feats
    res = clustering.run_kmeans(
        x,
        k,
        niter=int(c.NITER),
        seed=int(c.SEED),
        max_points_per_centroid=int(c.MAX_POINTS_PER_CENTROID),
        verbose=False,
    )
    return {
        "labels": res.labels,
        "centroids": res.centroids,
        "distances": res.distances,
        "pca": pca,
        "n_empty_reseeded": res.n_empty_reseeded,
        "objective": res.objective,
        "feature_dim": feature_dim,
        "clustered_dim": int(x.shape[1]),
        "time": time.time() - t0,
    }


def _cluster_sharded(cfg: Any, feats_local: np.ndarray) -> Optional[Dict[str, Any]]:
    """Distributed route (DeeperCluster Sec. 4.2): every rank keeps its shard; rank 0
    receives only the labels and distances. Returns the result on rank 0, None elsewhere.
    """
    c = cfg.VCF.CLUSTERFIT
    k = int(c.NUM_CLUSTERS)
    t0 = time.time()
    feature_dim = int(feats_local.shape[1])
    logging.info(
        f"[vcf] clustering sharded features ({feats_local.shape} on this rank) into K={k} "
        f"(distributed k-means, {c.NITER} iterations)"
    )
    res = clustering.sharded_kmeans(
        feats_local,
        k,
        pca_dim=int(c.PCA_DIM),
        whiten=bool(c.WHITEN),
        l2_norm=bool(c.L2_NORM),
        order=c.ORDER,
        pca_sample_size=int(c.PCA_SAMPLE_SIZE),
        niter=int(c.NITER),
        seed=int(c.SEED),
        inplace=True,
    )
    del feats_local
    labels = clustering.gather_rows(res.labels)
    distances = clustering.gather_rows(res.distances)
    if labels is None:
        return None
    return {
        "labels": labels,
        "centroids": res.centroids,
        "distances": distances,
        "pca": res.pca,
        "n_empty_reseeded": res.n_empty_reseeded,
        "objective": res.objective,
        "feature_dim": feature_dim,
        "clustered_dim": res.clustered_dim,
        "time": time.time() - t0,
    }


def _write(
    cfg: Any,
    result: Dict[str, Any],
    dataset: Any,
    settings: Dict[str, Any],
    fp: str,
    t_extract: float,
    device: torch.device,
    teacher_logits: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Metrics, meta and the label files (rank 0)."""
    c = cfg.VCF.CLUSTERFIT
    k = int(c.NUM_CLUSTERS)
    labels, pca, t_cluster = result["labels"], result["pca"], result["time"]
    truth = fx.ground_truth(dataset)
    metrics = clustering.cluster_metrics(labels, k, truth=truth)
    metrics["n_empty_reseeded"] = int(result["n_empty_reseeded"])
    metrics["objective"] = float(result["objective"])
    logging.info(f"[vcf] clustered in {t_cluster:.1f}s: {metrics}")
    meta = {
        "num_clusters": k,
        "num_samples": int(len(labels)),
        "feature_dim": result["feature_dim"],
        "clustered_dim": result["clustered_dim"],
        "fingerprint": fp,
        "settings": settings,
        "metrics": metrics,
        "time_s": {"extract": round(t_extract, 3), "cluster": round(t_cluster, 3)},
    }
    out_dir, name = clusterfit_output_dir(cfg), c.NAME
    write_label_files(
        out_dir,
        name,
        labels,
        result["centroids"],
        result["distances"],
        meta,
        pca_state=pca.state_dict() if pca is not None else None,
        extra_arrays=(
            {"teacher_logits": teacher_logits} if teacher_logits is not None else None
        ),
    )
    if c.ASSIGN_TEST and "TEST" in cfg.DATA and cfg.DATA.TEST.DATA_SOURCES:
        _assign_test(cfg, pca, result["centroids"], out_dir, name, device)
    logging.info(f"[vcf] wrote cluster label files {os.path.join(out_dir, name)}_*")
    return read_meta(out_dir, name)


def _assign_test(
    cfg: Any,
    pca: Any,
    centroids: np.ndarray,
    out_dir: str,
    name: str,
    device: torch.device,
) -> None:
    """Assign DATA.TEST to the train centroids (same N_pre, layer, PCA); rank 0 only."""
    from vissl_clusterfit.data.cluster_labels import save_npy

    c = cfg.VCF.CLUSTERFIT
    test = fx.extraction_dataset(cfg, "TEST")
    specs = npre_specs(cfg)
    trunks = [
        (
            fx.build_npre_trunk(s["CHECKPOINT"], s["CONFIG"], s["OVERRIDES"]),
            s["FEATURE_LAYER"],
            s["POOLING"],
        )
        for s in specs
    ]
    feats = fx.extract_features(trunks, test, int(c.BATCHSIZE), device, shard=False)
    x = clustering.apply_preprocessing(feats, pca, bool(c.L2_NORM), c.ORDER)
    labels, dists = clustering.assign_to_centroids(x, centroids)
    paths = label_paths(out_dir, name + "_test")
    save_npy(paths["labels"], labels)
    save_npy(paths["distances"], dists)


class ClusterFitHook(ClassyHook):
    """Runs ``cluster_dataset`` at the start of an N_cf training run (also on resume,
    where matching label files are reused) and hands the labels to the train dataset."""

    on_phase_start = ClassyHook._noop
    on_forward = ClassyHook._noop
    on_loss_and_meter = ClassyHook._noop
    on_backward = ClassyHook._noop
    on_update = ClassyHook._noop
    on_step = ClassyHook._noop
    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def on_start(self, task: Any) -> None:
        from vissl_clusterfit.data.label_sources import (
            CLUSTER_LABEL_SOURCE,
            reload_labels,
        )

        meta = cluster_dataset(self.cfg, device=task.device)
        dataset = task.datasets.get("train") if hasattr(task, "datasets") else None
        if dataset is not None and CLUSTER_LABEL_SOURCE in dataset.label_sources:
            self._check_head(task, int(meta["num_clusters"]))
            reload_labels(dataset)
        elif dataset is not None and not meta["settings"].get("distill"):
            logging.warning(
                "[vcf] DATA.TRAIN.LABEL_SOURCES does not contain vcf_cluster_labels: "
                "the cluster labels were written but training does not use them"
            )

    @staticmethod
    def _check_head(task: Any, k: int) -> None:
        heads = getattr(task.base_model, "heads", None)
        if not heads:
            return
        last = [m for m in heads[-1].modules() if isinstance(m, torch.nn.Linear)]
        if last and last[-1].out_features != k:
            raise ValueError(
                f"the N_cf head outputs {last[-1].out_features} classes but "
                f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={k}: set the head's last dim to K"
            )
