"""What the cluster step leaves on disk (rank 0): the cluster metrics, the meta file and
the label files of DATA.TRAIN (``write_labels``), and with ``ASSIGN_TEST`` DATA.TEST
assigned to the train centroids (``assign_test``).
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import bad_images, extraction
from vissl_clusterfit.cluster_step.npre_features import extract_npre_features
from vissl_clusterfit.cluster_step.param_checks import transforms_list
from vissl_clusterfit.cluster_step.params import ClusterFitParams
from vissl_clusterfit.cluster_step.routes import ClusterResult
from vissl_clusterfit.data.cluster_labels import (
    TEST_SUFFIX,
    label_paths,
    read_meta,
    save_npy,
    write_label_files,
)
from vissl_clusterfit.data.dataset_identity import write_sample_list
from vissl_clusterfit.io import atomic_write


def write_labels(
    cfg: Any,
    params: ClusterFitParams,
    result: ClusterResult,
    dataset: Any,
    settings: Dict[str, Any],
    fp: str,
    t_extract: float,
    teacher_logits: Optional[np.ndarray],
    bad: Optional[List[Dict[str, Any]]] = None,
    extra_meta: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Metrics, meta and the label files (rank 0)."""
    k = params.num_clusters
    labelled = result.labels >= 0  # skipped images (ON_BAD_IMAGE=skip): -1
    truth = extraction.ground_truth(dataset)
    metrics = clustering.cluster_metrics(
        result.labels[labelled], k, truth=truth[labelled] if truth is not None else None
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
        **({"kmeans_backend": result.backend} if result.backend else {}),
        **(extra_meta or {}),
    }
    if bad:
        meta["bad_images"] = bad_images.meta_entry(bad)
        logging.warning(
            f"[vcf] {len(bad)} images do not decode and got label -1 "
            f"({bad_images.KEY}=skip): {[x['path'] for x in bad[:5]]}"
        )
    extra = {"teacher_logits": teacher_logits} if teacher_logits is not None else None
    pca = result.pca
    write_label_files(
        params.output_dir,
        params.name,
        result.labels,
        result.centroids,
        result.distances,
        meta,
        pca_state=clustering.pca_state_dict(pca) if pca is not None else None,
        extra_arrays=extra,
        sample_list=lambda path: write_sample_list(path, dataset),
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
    with bad_images.watch(test, params.on_bad_image, "TEST") as watched:
        feats = extract_npre_features(params, watched.dataset, device, shard=False)
    mask = bad_images.valid_mask(len(test), watched.found)
    feats = feats[mask] if mask is not None else feats
    x = clustering.apply_preprocessing(feats, result.pca, params.l2_norm, params.order)
    labels, dists = bad_images.expand(
        clustering.assign_to_centroids(x, result.centroids), mask
    )
    paths = label_paths(params.output_dir, params.name + TEST_SUFFIX)
    save_npy(paths["labels"], labels)
    save_npy(paths["distances"], dists)
    write_sample_list(paths["images"], test)
    if watched.found:  # -1 labels are valid only where a meta lists them
        entry = bad_images.meta_entry(watched.found)
        test_meta = {"num_clusters": params.num_clusters, "bad_images": entry}
        atomic_write(paths["meta"], lambda f: f.write(json.dumps(test_meta).encode()))
