"""``config.VCF.DEEPCLUSTER`` read once into ``DeepClusterParams``: periodic
re-clustering of the trained network (DeepCluster thesis Ch. 3-4) and DeeperCluster
(Caron et al. ICCV 2019, Sec. 4), with the DeeperCluster start-up checks.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from vissl_clusterfit.cluster_step.config_checks import check_extraction_transforms
from vissl_clusterfit.cluster_step.param_checks import (
    KMEANS_BACKENDS,
    ON_DATASET_CHANGE,
    POOLINGS,
    check_choice,
    check_data_paths,
    check_int,
    check_transforms,
    config_key,
)
from vissl_clusterfit.clustering import check_num_clusters


DEEPCLUSTER_ALGORITHMS = ("kmeans", "pic")
NUM_ROTATIONS = 4  # DeeperCluster's super-classes: m groups x 4 rotations


@dataclass(frozen=True)
class DeepClusterParams:
    """``config.VCF.DEEPCLUSTER``: periodic re-clustering of the trained network."""

    recluster_every: int
    num_clusters: int
    algorithm: str
    feature_layer: str
    pooling: str
    pca_dim: int
    whiten: bool
    niter: int
    seed: int
    kmeans_backend: str
    pic_neighbors: int
    pic_sigma: float
    uniform_sampling: bool
    reset_head: bool
    batch_size: int
    transforms: Tuple[Dict[str, Any], ...]
    deeper: bool
    num_groups: int
    num_sub: int
    num_workers: int
    rounds_file: str
    preactivation: bool = True
    # the sample list the current labels belong to (checked on resume)
    images_file: str = ""
    on_dataset_change: str = "error"

    @classmethod
    def from_config(cls, cfg: Any) -> "DeepClusterParams":
        s, p = "DEEPCLUSTER", cfg.VCF.DEEPCLUSTER
        deeper = p.get("DEEPER", {}) or {}
        params = cls(
            recluster_every=check_int(s, "RECLUSTER_EVERY", p.RECLUSTER_EVERY, 1),
            num_clusters=check_num_clusters(
                p.NUM_CLUSTERS, None, config_key(s, "NUM_CLUSTERS")
            ),
            algorithm=check_choice(s, "ALGORITHM", p.ALGORITHM, DEEPCLUSTER_ALGORITHMS),
            feature_layer=str(p.FEATURE_LAYER),
            pooling=check_choice(s, "POOLING", p.POOLING, POOLINGS),
            pca_dim=check_int(s, "PCA_DIM", p.PCA_DIM, 0),
            whiten=bool(p.WHITEN),
            niter=check_int(s, "NITER", p.NITER, 1),
            seed=check_int(s, "SEED", p.SEED, 0),
            kmeans_backend=check_choice(
                s, "KMEANS_BACKEND", p.get("KMEANS_BACKEND", "faiss"), KMEANS_BACKENDS
            ),
            pic_neighbors=check_int(s, "PIC_NEIGHBORS", p.PIC_NEIGHBORS, 1),
            pic_sigma=float(p.PIC_SIGMA),
            uniform_sampling=bool(p.UNIFORM_SAMPLING),
            reset_head=bool(p.RESET_HEAD),
            batch_size=check_int(s, "BATCHSIZE", p.BATCHSIZE, 1),
            transforms=check_transforms(s, p.TRANSFORMS),
            deeper=bool(deeper.get("ENABLED", False)),
            num_groups=check_int(
                s, "DEEPER.NUM_GROUPS", deeper.get("NUM_GROUPS", 4), 1
            ),
            num_sub=check_int(s, "DEEPER.NUM_SUB", deeper.get("NUM_SUB", 10), 1),
            num_workers=int(cfg.DATA.NUM_DATALOADER_WORKERS),
            rounds_file=os.path.join(cfg.CHECKPOINT.DIR, "deepcluster_rounds.jsonl"),
            preactivation=bool(p.get("PREACTIVATION", True)),
            images_file=os.path.join(cfg.CHECKPOINT.DIR, "deepcluster_images.txt"),
            on_dataset_change=check_choice(
                s,
                "ON_DATASET_CHANGE",
                p.get("ON_DATASET_CHANGE", "error"),
                ON_DATASET_CHANGE,
            ),
        )
        check_data_paths(cfg, "TRAIN")
        check_extraction_transforms(cfg, s, params.transforms)
        if params.deeper:
            check_deeper_setup(cfg, params.num_groups, params.num_sub)
        if params.distributed and params.algorithm != "kmeans":
            raise ValueError(
                f"{config_key(s, 'KMEANS_BACKEND')}=distributed clusters with k-means "
                "(and DeeperCluster's two-level k-means); PIC needs the whole k-NN graph "
                "on one process: set KMEANS_BACKEND=faiss for ALGORITHM=pic"
            )
        return params

    @property
    def distributed(self) -> bool:
        return self.kmeans_backend == "distributed"

    @property
    def head_classes(self) -> int:
        """Outputs of the cluster head: K, or m * k cluster codes for DeeperCluster."""
        return self.num_groups * self.num_sub if self.deeper else self.num_clusters


def _head_entry(cfg: Any, name: str) -> Dict[str, Any]:
    for entry in cfg.MODEL.HEAD.PARAMS:
        if entry and entry[0] == name:
            return dict(entry[1]) if len(entry) > 1 else {}
    return {}


def deeper_mismatches(cfg: Any, num_groups: int, num_sub: int) -> List[str]:
    """Where the collator, head and loss disagree with ``VCF.DEEPCLUSTER.DEEPER``
    (their one source of truth: m groups x 4 rotations super-classes, k sub-classes)."""
    supers = NUM_ROTATIONS * num_groups
    train = cfg.DATA.TRAIN
    head = _head_entry(cfg, "vcf_hierarchical_head")
    loss = dict(cfg.LOSS.get("vcf_hierarchical_loss", {}) or {})
    checks = [
        (
            "DATA.TRAIN.COLLATE_FUNCTION",
            train.COLLATE_FUNCTION,
            "vcf_rotation_cluster_collator",
        ),
        (
            "DATA.TRAIN.COLLATE_FUNCTION_PARAMS.num_sub_classes",
            dict(train.get("COLLATE_FUNCTION_PARAMS", {}) or {}).get("num_sub_classes"),
            num_sub,
        ),
        (
            "MODEL.HEAD.PARAMS vcf_hierarchical_head num_super_classes",
            head.get("num_super_classes"),
            supers,
        ),
        (
            "MODEL.HEAD.PARAMS vcf_hierarchical_head num_sub_classes",
            head.get("num_sub_classes"),
            num_sub,
        ),
        ("LOSS.name", cfg.LOSS.name, "vcf_hierarchical_loss"),
        (
            "LOSS.vcf_hierarchical_loss.num_super_classes",
            loss.get("num_super_classes"),
            supers,
        ),
        (
            "LOSS.vcf_hierarchical_loss.num_sub_classes",
            loss.get("num_sub_classes"),
            num_sub,
        ),
    ]
    return [f"{key}={got} (needs {want})" for key, got, want in checks if got != want]


def check_deeper_setup(cfg: Any, num_groups: int, num_sub: int) -> None:
    """DeeperCluster start-up checks: collator/head/loss agree with DEEPER, and the
    initialisation is the RotNet the paper starts from (Sec. 4.3) unless random init
    is asked for explicitly."""
    wrong = deeper_mismatches(cfg, num_groups, num_sub)
    if wrong:
        raise ValueError(
            f"DeeperCluster with config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS={num_groups}, "
            f"NUM_SUB={num_sub}: {'; '.join(wrong)}. The shipped configs derive these "
            "from DEEPER; set them to match"
        )
    deeper = cfg.VCF.DEEPCLUSTER.DEEPER
    params_file = cfg.MODEL.WEIGHTS_INIT.get("PARAMS_FILE", "")
    if not params_file and not deeper.get("RANDOM_INIT", False):
        raise ValueError(
            "DeeperCluster starts from a RotNet network (Caron et al. 2019, Sec. 4.3): "
            "set config.MODEL.WEIGHTS_INIT.PARAMS_FILE=<RotNet checkpoint> (trained with "
            "the same MODEL.TRUNK, Sobel included), or "
            "config.VCF.DEEPCLUSTER.DEEPER.RANDOM_INIT=true to train from random init"
        )
    if params_file and not os.path.isfile(params_file):
        raise FileNotFoundError(
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={params_file} does not exist"
        )
