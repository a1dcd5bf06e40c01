"""ClusterFit's cluster step: N_pre features of D_cf -> k-means -> label files.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1): the features of a pre-trained N_pre on
D_cf are clustered into K groups; N_cf is then trained from scratch on the cluster ids.
``run_cluster_step`` runs on every rank (extraction is sharded); rank 0 clusters (or,
with ``KMEANS_BACKEND=distributed``, every rank clusters its shard: DeeperCluster Sec.
4.2) and writes the label files atomically. Label files whose fingerprint (a hash of
everything that determines the labels) matches the current settings are reused;
files made with other settings are refused with the list of differences
(:mod:`.label_reuse`). The networks are :mod:`.npre_features`, the files
:mod:`.label_writing`.
"""

import logging
import time
from typing import Any, Dict

import torch

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import (
    bad_images,
    disk_route,
    extraction,
    folder_checks,
)
from vissl_clusterfit.cluster_step.label_reuse import label_settings, reusable_meta
from vissl_clusterfit.cluster_step.label_writing import assign_test, write_labels
from vissl_clusterfit.cluster_step.npre_features import (
    extract_npre_features,
    npre_trunks,
    pretrain_labels,
    teacher_logits,
)
from vissl_clusterfit.cluster_step.param_checks import transforms_list
from vissl_clusterfit.cluster_step.params import ClusterFitParams
from vissl_clusterfit.cluster_step.rng import preserved_rng
from vissl_clusterfit.cluster_step.routes import (
    cluster_on_rank0,
    cluster_sharded,
    cluster_with_labels,
)
from vissl_clusterfit.clustering.comm import run_on_rank0
from vissl_clusterfit.data.cluster_labels import fingerprint, label_paths


def run_cluster_step(
    cfg: Any, params: ClusterFitParams, device: torch.device = torch.device("cpu")
) -> Dict[str, Any]:
    """Produce (or reuse) the cluster label files of DATA.TRAIN; returns the meta dict
    (identical on every rank). The global random generators are left untouched."""
    with preserved_rng():
        return _run(cfg, params, device)


def _run(cfg: Any, params: ClusterFitParams, device: torch.device) -> Dict[str, Any]:
    transforms = transforms_list(params.transforms)
    try:
        dataset = extraction.extraction_dataset(
            cfg, transforms, "TRAIN", "config.VCF.CLUSTERFIT.TRANSFORMS"
        )
    except FileNotFoundError as e:
        train = cfg.DATA.TRAIN
        explained = folder_checks.explain_empty_classes(
            train.DATA_SOURCES, train.DATA_PATHS, "TRAIN", e
        )
        raise explained or e
    n = len(dataset)
    clustering.check_num_clusters(
        params.num_clusters, n, "config.VCF.CLUSTERFIT.NUM_CLUSTERS"
    )
    folder_checks.check_enough_images(
        n, params.pca_dim, "config.VCF.CLUSTERFIT.PCA_DIM"
    )
    folder_checks.check_no_duplicate_paths(dataset, "TRAIN")
    settings = label_settings(cfg, params, n)
    fp = fingerprint(settings)
    meta = reusable_meta(params, settings, fp, dataset)
    if meta is not None:
        paths = label_paths(params.output_dir, params.name)
        logging.info(f"[vcf] reusing cluster labels {paths['labels']}")
        return meta

    if params.shards.active:
        return _run_from_disk(cfg, params, dataset, device, settings, fp)
    t0 = time.time()
    with bad_images.watch(dataset, params.on_bad_image) as watched:
        feats = extract_npre_features(
            params, watched.dataset, device, gather=not params.distributed
        )
    bad = watched.found
    teacher = teacher_logits(params, dataset, device) if params.distill else None
    t_extract = time.time() - t0
    mask = bad_images.valid_mask(n, bad)
    if mask is not None:  # ON_BAD_IMAGE=skip (rank 0 clusters: checked in params)
        clustering.check_num_clusters(
            params.num_clusters, int(mask.sum()), "config.VCF.CLUSTERFIT.NUM_CLUSTERS"
        )
        feats = feats[mask] if feats is not None else None
    result = cluster_sharded(params, feats) if params.distributed else None

    def cluster_and_write() -> Dict[str, Any]:
        nonlocal feats, result
        if params.uses_pretrain_labels:
            pretrain = pretrain_labels(cfg, params, n)
            pretrain = pretrain[mask] if mask is not None else pretrain
            result = cluster_with_labels(params, feats, pretrain)
        elif not params.distributed:
            result = cluster_on_rank0(params, feats)
        feats = None
        result = bad_images.with_skipped(result, mask)
        written = write_labels(
            cfg, params, result, dataset, settings, fp, t_extract, teacher, bad
        )
        if params.assign_test:
            assign_test(cfg, params, result, device)
        return written

    return run_on_rank0(cluster_and_write, "clustering and writing the label files")


def _run_from_disk(
    cfg: Any,
    params: ClusterFitParams,
    dataset: Any,
    device: torch.device,
    settings: Dict[str, Any],
    fp: str,
) -> Dict[str, Any]:
    """FEATURE_SHARDS: features on disk, bounded-memory k-means (disk_route)."""
    t0 = time.time()
    store, folder = disk_route.open_features(
        params, dataset, device, settings, lambda: npre_trunks(params)
    )
    t_extract = time.time() - t0
    scratch = disk_route.scratch_dir(params, folder)
    result, extra = disk_route.cluster_from_disk(params, store, scratch)

    def write_and_clean_up() -> Dict[str, Any]:
        nonlocal result
        written = write_labels(
            cfg,
            params,
            result,
            dataset,
            settings,
            fp,
            t_extract,
            None,
            extra_meta=extra,
        )
        if params.assign_test:
            assign_test(cfg, params, result, device)
        result = None  # its label arrays are memory-mapped in scratch
        disk_route.clean_up(folder, scratch, params.shards.keep)
        return written

    return run_on_rank0(write_and_clean_up, "writing the label files")
