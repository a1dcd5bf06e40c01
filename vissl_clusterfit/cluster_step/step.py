"""ClusterFit's cluster step: N_pre features of D_cf -> k-means -> label files.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1): the features of a pre-trained N_pre on
D_cf are clustered into K groups; N_cf is then trained from scratch on the cluster ids.
``run_cluster_step`` runs on every rank (extraction is sharded); rank 0 clusters (or,
with ``KMEANS_BACKEND=distributed``, every rank clusters its shard: DeeperCluster Sec.
4.2) and writes the label files atomically. Label files whose fingerprint (a hash of
everything that determines the labels) matches the current settings are reused;
files made with other settings are refused with the list of differences.
"""

import copy
import gc
import logging
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import extraction, npre, runtime_checks
from vissl_clusterfit.cluster_step.params import ClusterFitParams, transforms_list
from vissl_clusterfit.cluster_step.rng import preserved_rng
from vissl_clusterfit.cluster_step.routes import (
    ClusterResult,
    cluster_on_rank0,
    cluster_sharded,
    cluster_with_labels,
)
from vissl_clusterfit.clustering.comm import (
    barrier,
    broadcast_from_rank0,
    rank_and_world,
)
from vissl_clusterfit.data.cluster_labels import (
    TEST_SUFFIX,
    file_sha256,
    fingerprint,
    label_paths,
    read_meta,
    save_npy,
    verify_label_set,
    write_label_files,
)


def _dataset_settings(split_cfg: Any, length: int) -> Dict[str, Any]:
    return {
        "sources": list(split_cfg.DATA_SOURCES),
        "names": list(split_cfg.DATASET_NAMES),
        "paths": list(split_cfg.DATA_PATHS),
        "limit": int(split_cfg.DATA_LIMIT),
        "limit_sampling": dict(split_cfg.get("DATA_LIMIT_SAMPLING", {}) or {}),
        "length": int(length),
    }


def label_settings(cfg: Any, params: ClusterFitParams, length: int) -> Dict[str, Any]:
    """Everything that determines the labels, for the meta file and the fingerprint."""
    npre_specs = [
        dict(spec.as_dict(), CHECKPOINT_SHA256=file_sha256(spec.checkpoint))
        for spec in params.npre
    ]
    settings = {
        "npre": npre_specs,
        **params.settings(),
        "dataset": _dataset_settings(cfg.DATA.TRAIN, length),
    }
    if len(npre_specs) > 1:
        # label files made before each N_pre was L2-normalised are not reused
        settings["npre_features"] = "l2_each_then_concat"
    return settings


def _diff(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, prefix + k + ".")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _reusable(
    params: ClusterFitParams, settings: Dict[str, Any], fp: str
) -> Optional[Dict]:
    """The meta of matching label files, None when there are none; raises when files
    made with other settings (or tampered ones) are in the way."""
    meta = read_meta(params.output_dir, params.name)
    if meta is None:
        return None
    prefix = os.path.join(params.output_dir, params.name)
    if meta.get("fingerprint") != fp:
        changes = _diff(meta.get("settings", {}), settings)
        raise ValueError(
            f"cluster label files {prefix}_* were made with other settings "
            f"({'; '.join(changes) or 'unknown'}). Delete them to re-cluster, or set "
            "config.VCF.CLUSTERFIT.OUTPUT_DIR / NAME to keep both"
        )
    verify_label_set(params.output_dir, params.name, meta)
    return meta


def _npre_trunks(params: ClusterFitParams) -> List[extraction.TrunkLayer]:
    return [
        (
            npre.build_npre_trunk(spec.checkpoint, spec.config, list(spec.overrides)),
            spec.feature_layer,
            spec.pooling,
        )
        for spec in params.npre
    ]


def _extract(
    params: ClusterFitParams, dataset: Any, device: torch.device, **kwargs: Any
) -> Optional[np.ndarray]:
    trunks = _npre_trunks(params)
    for i, (trunk, layer, _) in enumerate(trunks):
        key = "FEATURE_LAYER" if i == 0 else f"EXTRA_NPRE[{i - 1}].FEATURE_LAYER"
        runtime_checks.check_layer(trunk, layer, f"config.VCF.CLUSTERFIT.{key}")
    feats = extraction.extract_features(
        trunks, dataset, params.batch_size, device, params.num_workers, **kwargs
    )
    del trunks  # free N_pre before N_cf trains
    gc.collect()
    return feats


def _teacher_logits(
    params: ClusterFitParams, dataset: Any, device: torch.device
) -> Optional[np.ndarray]:
    """N_pre's head outputs on D_cf (distillation baseline, ClusterFit Sec. 4), on the
    deterministic extraction transforms."""
    spec = params.npre[0]
    model = npre.build_npre_model(spec.checkpoint, spec.config, list(spec.overrides))
    try:
        logits = extraction.extract_features(
            [(model, "logits", "flatten")], dataset, params.batch_size, device
        )
    except RuntimeError as e:
        raise ValueError(
            f"N_pre's heads cannot run on whole images ({e}): distillation needs a "
            "single-view classification head"
        ) from None
    del model
    gc.collect()
    return logits


def pretrain_labels(cfg: Any, params: ClusterFitParams, length: int) -> np.ndarray:
    """D_cf's pre-training labels (``PRETRAIN_LABELS``, noise included), one per
    position of the extraction dataset, for the label-using baselines."""
    from vissl.data import build_dataset

    from vissl_clusterfit.data.label_sources import served_labels

    lcfg = copy.deepcopy(cfg)
    lcfg.DATA.TRAIN.LABEL_SOURCES = list(params.pretrain_label_sources)
    lcfg.DATA.TRAIN.LABEL_PATHS = list(params.pretrain_label_paths)
    lcfg.DATA.TRAIN.LABEL_TYPE = "standard"
    labels = served_labels(build_dataset(lcfg, "TRAIN"))
    if len(labels) != length or labels.min() < 0:
        raise ValueError(
            f"config.VCF.CLUSTERFIT.PRETRAIN_LABELS gave {len(labels)} labels in "
            f"[{labels.min()}, {labels.max()}] for {length} images of DATA.TRAIN: it "
            "must label every image of D_cf"
        )
    return labels


def run_cluster_step(
    cfg: Any, params: ClusterFitParams, device: torch.device = torch.device("cpu")
) -> Dict[str, Any]:
    """Produce (or reuse) the cluster label files of DATA.TRAIN; returns the meta dict
    (identical on every rank). The global random generators are left untouched."""
    with preserved_rng():
        return _run(cfg, params, device)


def _run(cfg: Any, params: ClusterFitParams, device: torch.device) -> Dict[str, Any]:
    rank, _ = rank_and_world()
    transforms = transforms_list(params.transforms)
    dataset = extraction.extraction_dataset(
        cfg, transforms, "TRAIN", "config.VCF.CLUSTERFIT.TRANSFORMS"
    )
    n = len(dataset)
    clustering.check_num_clusters(
        params.num_clusters, n, "config.VCF.CLUSTERFIT.NUM_CLUSTERS"
    )
    settings = label_settings(cfg, params, n)
    fp = fingerprint(settings)
    meta = _reusable(params, settings, fp)
    if meta is not None:
        paths = label_paths(params.output_dir, params.name)
        logging.info(f"[vcf] reusing cluster labels {paths['labels']}")
        return meta

    t0 = time.time()
    feats = _extract(params, dataset, device, gather=not params.distributed)
    teacher = _teacher_logits(params, dataset, device) if params.distill else None
    t_extract = time.time() - t0
    result = cluster_sharded(params, feats) if params.distributed else None
    if params.uses_pretrain_labels and rank == 0:
        result = cluster_with_labels(params, feats, pretrain_labels(cfg, params, n))
    elif not params.distributed and rank == 0:
        result = cluster_on_rank0(params, feats)
    del feats
    written = None
    if rank == 0:
        written = _write(cfg, params, result, dataset, settings, fp, t_extract, teacher)
        if params.assign_test:
            assign_test(cfg, params, result, device)
    barrier()
    return broadcast_from_rank0(written)


def _write(
    cfg: Any,
    params: ClusterFitParams,
    result: ClusterResult,
    dataset: Any,
    settings: Dict[str, Any],
    fp: str,
    t_extract: float,
    teacher_logits: Optional[np.ndarray],
) -> Dict[str, Any]:
    """Metrics, meta and the label files (rank 0)."""
    k = params.num_clusters
    metrics = clustering.cluster_metrics(
        result.labels, k, truth=extraction.ground_truth(dataset)
    )
    metrics["n_empty_reseeded"] = int(result.n_empty_reseeded)
    metrics["objective"] = float(result.objective)
    logging.info(f"[vcf] clustered in {result.time_s:.1f}s: {metrics}")
    meta = {
        "num_clusters": k,
        "num_samples": int(len(result.labels)),
        "feature_dim": result.feature_dim,
        "clustered_dim": result.clustered_dim,
        "fingerprint": fp,
        "settings": settings,
        "metrics": metrics,
        "time_s": {"extract": round(t_extract, 3), "cluster": round(result.time_s, 3)},
    }
    extra = {"teacher_logits": teacher_logits} if teacher_logits is not None else None
    pca = result.pca
    write_label_files(
        params.output_dir,
        params.name,
        result.labels,
        result.centroids,
        result.distances,
        meta,
        pca_state=pca.state_dict() if pca is not None else None,
        extra_arrays=extra,
    )
    logging.info(
        f"[vcf] wrote cluster label files {os.path.join(params.output_dir, params.name)}_*"
    )
    return read_meta(params.output_dir, params.name)


def assign_test(
    cfg: Any, params: ClusterFitParams, result: ClusterResult, device: torch.device
) -> None:
    """Assign DATA.TEST to the train centroids (same N_pre, layer, PCA); rank 0 only."""
    test = extraction.extraction_dataset(
        cfg,
        transforms_list(params.transforms),
        "TEST",
        "config.VCF.CLUSTERFIT.TRANSFORMS",
    )
    logging.info(
        f"[vcf] assigning DATA.TEST ({list(cfg.DATA.TEST.DATA_SOURCES)} "
        f"{list(cfg.DATA.TEST.DATA_PATHS)}, {len(test)} images) to the train centroids"
    )
    feats = _extract(params, test, device, shard=False)
    x = clustering.apply_preprocessing(feats, result.pca, params.l2_norm, params.order)
    labels, dists = clustering.assign_to_centroids(x, result.centroids)
    paths = label_paths(params.output_dir, params.name + TEST_SUFFIX)
    save_npy(paths["labels"], labels)
    save_npy(paths["distances"], dists)
