"""One DeepCluster round: features of the network being trained -> clusters -> labels.

DeepCluster (Caron 2018, KTH thesis Ch. 3-4; Caron et al. ECCV 2018): every T epochs
the features of the whole training set are extracted (eval mode, sharded over ranks),
PCA-whitened to 256 dims and L2-normalised (thesis Sec. 4.2), and clustered with
k-means (empty clusters re-seeded by splitting, Sec. 4.2) or Power Iteration Clustering
(Sec. 2.4/3.2). DeeperCluster (Caron et al. ICCV 2019, Sec. 4) clusters with a two-level
k-means (m groups x k sub-clusters); the label is the code ``group * k + sub``.
Each round's metrics go to the log and to ``deepcluster_rounds.jsonl``.
"""

import json
import logging
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import extraction, runtime_checks
from vissl_clusterfit.cluster_step.deepcluster_params import DeepClusterParams
from vissl_clusterfit.cluster_step.rng import preserved_rng
from vissl_clusterfit.clustering.comm import run_on_rank0


def recluster(
    params: DeepClusterParams,
    trunk: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    epoch: int,
    round_index: int,
    previous: Optional[np.ndarray],
) -> np.ndarray:
    """The labels of round ``round_index`` (same array on every rank)."""
    with preserved_rng():
        was_training = trunk.training
        t0 = time.time()
        runtime_checks.check_layer(
            trunk, params.feature_layer, "config.VCF.DEEPCLUSTER.FEATURE_LAYER"
        )
        feats = extraction.extract_features(
            [(trunk, params.feature_layer, params.pooling)],
            dataset,
            params.batch_size,
            device,
            gather=not params.distributed,
            preactivation=params.preactivation,
        )
        trunk.train(was_training)
        t_extract = time.time() - t0
        sharded = None
        if params.distributed:
            sharded = cluster_features_sharded(params, feats, epoch)

        def cluster_and_log() -> np.ndarray:
            if params.distributed:
                record = sharded
            else:
                record = cluster_features(params, feats, epoch)
            record.update(round=round_index, epoch=epoch, extract_s=round(t_extract, 2))
            truth = extraction.ground_truth(dataset)
            return log_round(params, record, truth, previous)

        return run_on_rank0(cluster_and_log, f"clustering round {round_index}")


def cluster_features_sharded(
    params: DeepClusterParams, feats_local: np.ndarray, epoch: int
) -> Optional[Dict[str, Any]]:
    """DeeperCluster Sec. 4.2: PCA and (two-level) k-means on every rank's shard,
    sharing counts and sums only; the labels on rank 0 (None elsewhere)."""
    t0 = time.time()
    common = dict(
        pca_dim=min(params.pca_dim, feats_local.shape[1]),
        whiten=params.whiten,
        l2_norm=True,
        niter=params.niter,
        seed=params.seed + epoch,
        inplace=True,
    )
    if params.deeper:
        res = clustering.sharded_hierarchical_kmeans(
            feats_local, params.num_groups, params.num_sub, **common
        )
        codes, reseeded = res.group * params.num_sub + res.sub, 0
        algorithm, backend = "distributed two-level kmeans", "torch-cpu"
    else:
        # On a GPU without faiss-gpu the Lloyd iterations run there (clustering.backend).
        device = clustering.torch_device(feats_local.nbytes)
        res = clustering.sharded_kmeans(
            feats_local, params.num_clusters, device=device, **common
        )
        codes, reseeded = res.labels, int(res.n_empty_reseeded)
        algorithm, backend = "distributed kmeans", f"torch-{device.type}"
    labels = clustering.gather_rows(codes)
    if labels is None:
        return None
    return {
        "labels": labels,
        "k": params.head_classes,
        "algorithm": algorithm,
        "kmeans_backend": backend,
        "n_empty_reseeded": reseeded,
        "cluster_s": round(time.time() - t0, 2),
    }


def cluster_features(
    params: DeepClusterParams, feats: np.ndarray, epoch: int
) -> Dict[str, Any]:
    k, seed = params.num_clusters, params.seed + epoch
    if not params.deeper:
        clustering.check_num_clusters(
            k, len(feats), "config.VCF.DEEPCLUSTER.NUM_CLUSTERS"
        )
    t0 = time.time()
    pca_dim = min(params.pca_dim, feats.shape[1], len(feats))
    x, _ = clustering.preprocess_features(
        feats,
        pca_dim=pca_dim,
        whiten=params.whiten,
        l2_norm=True,
        seed=seed,
        inplace=True,
    )
    reseeded = 0
    if params.deeper:
        # DeeperCluster: cluster code = group * k + sub; the collator adds rotations
        group, sub = clustering.hierarchical_kmeans(
            x, params.num_groups, params.num_sub, niter=params.niter, seed=seed
        )
        labels, k = group * params.num_sub + sub, params.head_classes
        algorithm = "two-level kmeans"
    elif params.algorithm == "pic":
        # the head keeps NUM_CLUSTERS outputs: VISSL wraps the model in DDP and builds
        # the optimizer once, so instead of resizing the top layer each round (the
        # authors' code) PIC's clusters are bounded to K (smallest merge first) and
        # fewer clusters leave head outputs unused
        labels = clustering.run_pic(
            x,
            n_neighbors=params.pic_neighbors,
            sigma=params.pic_sigma,
            seed=seed,
            max_clusters=k,
        )
        algorithm = "pic"
    else:
        res = clustering.run_kmeans(x, k, niter=params.niter, seed=seed)
        labels, reseeded, algorithm = res.labels, res.n_empty_reseeded, "kmeans"
    return {
        "labels": labels,
        "k": k,
        "algorithm": algorithm,
        "n_empty_reseeded": int(reseeded),
        "cluster_s": round(time.time() - t0, 2),
    }


def log_round(
    params: DeepClusterParams,
    record: Dict[str, Any],
    truth: Optional[np.ndarray],
    previous: Optional[np.ndarray],
) -> np.ndarray:
    """Cluster metrics of the round -> log and the rounds file (rank 0)."""
    labels = record.pop("labels")
    metrics = clustering.cluster_metrics(
        labels,
        record.pop("k"),
        truth=truth,
        previous=np.asarray(previous) if previous is not None else None,
    )
    record.update(metrics, unix_time=round(time.time(), 2))
    logging.info(
        f"[vcf] DeepCluster round {record['round']} (epoch {record['epoch']}): {record}"
    )
    with open(params.rounds_file, "a") as f:
        f.write(json.dumps(record) + "\n")
    return labels.astype(np.int64)
