"""Typed, frozen parameters of the cluster step, read and validated once from a config.

Everything below ``from_config`` takes these objects (or plain arguments), never the raw
VISSL config, so each key is read in one place and a bad value fails before any work,
with a message naming the key (``config.VCF.CLUSTERFIT.NUM_CLUSTERS=...``).

- ``ClusterFitParams``: ``config.VCF.CLUSTERFIT`` (ClusterFit, Yan et al. 2020, Sec. 3.1).
- ``DeepClusterParams`` (deepcluster_params.py): ``config.VCF.DEEPCLUSTER``.
The keys and their defaults: configs/vissl_clusterfit_defaults/plugin.yaml.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from vissl_clusterfit.cluster_step.config_checks import (
    check_assign_test_split,
    check_extraction_transforms,
)
from vissl_clusterfit.clustering import VALID_ORDERS, check_num_clusters
from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir


POOLINGS = ("avg", "max", "flatten")
KMEANS_BACKENDS = ("faiss", "distributed")
# kmeans: ClusterFit (Sec. 3.1); prototype (Sec. 4) and per_label (Sec. 5.2): baselines
# that use D_cf's (possibly noisy) pre-training labels
METHODS = ("kmeans", "prototype", "per_label")


def config_key(section: str, name: str) -> str:
    return f"config.VCF.{section}.{name}"


def check_choice(section: str, name: str, value: Any, valid: Tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(
            f"{config_key(section, name)}={value} is not supported: use one of {valid}"
        )
    return str(value)


def check_int(section: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{config_key(section, name)}={value!r} must be an integer >= {minimum}"
        )
    return int(value)


def check_transforms(section: str, value: Any) -> Tuple[Dict[str, Any], ...]:
    transforms = tuple(dict(t) for t in (value or []))
    if not transforms or any("name" not in t for t in transforms):
        raise ValueError(
            f"{config_key(section, 'TRANSFORMS')} must be a non-empty list of VISSL "
            "transforms ({name: ..., ...}), applied to every image before extraction"
        )
    return transforms


def check_data_paths(cfg: Any, split: str) -> None:
    paths = cfg.DATA[split].get("DATA_PATHS", [])
    if isinstance(paths, str):
        raise ValueError(
            f"config.DATA.{split}.DATA_PATHS={paths!r} must be a list, one entry per "
            f"data source: write config.DATA.{split}.DATA_PATHS=[{paths}]"
        )


@dataclass(frozen=True)
class NpreSpec:
    """One N_pre whose features are clustered (several = multi-task ClusterFit)."""

    checkpoint: str
    config: str = ""
    overrides: Tuple[str, ...] = ()
    feature_layer: str = "res5"
    pooling: str = "avg"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "CHECKPOINT": self.checkpoint,
            "CONFIG": self.config,
            "OVERRIDES": list(self.overrides),
            "FEATURE_LAYER": self.feature_layer,
            "POOLING": self.pooling,
        }


def _npre_spec(section: str, name: str, value: Dict[str, Any]) -> NpreSpec:
    spec = NpreSpec(
        checkpoint=str(value.get("CHECKPOINT") or ""),
        config=str(value.get("CONFIG") or ""),
        overrides=tuple(value.get("OVERRIDES") or ()),
        feature_layer=str(value["FEATURE_LAYER"]),
        pooling=check_choice(section, "POOLING", value["POOLING"], POOLINGS),
    )
    if not spec.checkpoint:
        raise ValueError(
            f"{config_key(section, name)} is empty: set it to the N_pre checkpoint (e.g. "
            "<pretrain CHECKPOINT.DIR>/model_final_checkpoint_phaseN.torch)"
        )
    if os.path.isdir(spec.checkpoint):
        raise ValueError(
            f"{config_key(section, name)}={spec.checkpoint} is a directory: point it at a "
            "checkpoint file in it (e.g. model_final_checkpoint_phaseN.torch)"
        )
    if not os.path.isfile(spec.checkpoint):
        raise FileNotFoundError(
            f"N_pre checkpoint {spec.checkpoint} does not exist: check "
            f"{config_key(section, name)} (pre-train N_pre first)"
        )
    return spec


@dataclass(frozen=True)
class ClusterFitParams:
    """``config.VCF.CLUSTERFIT``: N_pre, layer, pre-processing, k-means and outputs."""

    npre: Tuple[NpreSpec, ...]
    num_clusters: int
    niter: int
    seed: int
    max_points_per_centroid: int
    pca_dim: int
    whiten: bool
    l2_norm: bool
    order: str
    pca_sample_size: int
    kmeans_backend: str
    transforms: Tuple[Dict[str, Any], ...]
    batch_size: int
    num_workers: int
    output_dir: str
    name: str
    assign_test: bool
    distill: bool
    method: str = "kmeans"
    pretrain_label_sources: Tuple[str, ...] = ()
    pretrain_label_paths: Tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Any) -> "ClusterFitParams":
        s, c = "CLUSTERFIT", cfg.VCF.CLUSTERFIT
        main = {
            "CHECKPOINT": c.NPRE_CHECKPOINT,
            "CONFIG": c.NPRE_CONFIG,
            "OVERRIDES": list(c.NPRE_OVERRIDES),
            "FEATURE_LAYER": c.FEATURE_LAYER,
            "POOLING": c.POOLING,
        }
        npre = [_npre_spec(s, "NPRE_CHECKPOINT", main)]
        for i, extra in enumerate(c.EXTRA_NPRE):
            spec = {"FEATURE_LAYER": c.FEATURE_LAYER, "POOLING": c.POOLING}
            spec.update(dict(extra))
            npre.append(_npre_spec(s, f"EXTRA_NPRE[{i}].CHECKPOINT", spec))
        check_data_paths(cfg, "TRAIN")
        check_extraction_transforms(cfg, s, c.TRANSFORMS)
        if c.get("DISTILL", False):
            _check_teacher(npre[0])
        assign_test = bool(c.ASSIGN_TEST)
        if assign_test:
            if "TEST" not in cfg.DATA or not cfg.DATA.TEST.DATA_SOURCES:
                raise ValueError(
                    f"{config_key(s, 'ASSIGN_TEST')}=true but config.DATA.TEST has no "
                    "DATA_SOURCES: set the test split to assign (e.g. your val folder)"
                )
            check_data_paths(cfg, "TEST")
            check_assign_test_split(cfg)
        return cls(
            npre=tuple(npre),
            num_clusters=check_num_clusters(
                c.NUM_CLUSTERS, None, config_key(s, "NUM_CLUSTERS")
            ),
            niter=check_int(s, "NITER", c.NITER, 1),
            seed=check_int(s, "SEED", c.SEED, 0),
            max_points_per_centroid=check_int(
                s, "MAX_POINTS_PER_CENTROID", c.MAX_POINTS_PER_CENTROID, 1
            ),
            pca_dim=check_int(s, "PCA_DIM", c.PCA_DIM, 0),
            whiten=bool(c.WHITEN),
            l2_norm=bool(c.L2_NORM),
            order=check_choice(s, "ORDER", c.ORDER, tuple(VALID_ORDERS)),
            pca_sample_size=check_int(s, "PCA_SAMPLE_SIZE", c.PCA_SAMPLE_SIZE, 0),
            kmeans_backend=check_choice(
                s, "KMEANS_BACKEND", c.get("KMEANS_BACKEND", "faiss"), KMEANS_BACKENDS
            ),
            transforms=check_transforms(s, c.TRANSFORMS),
            batch_size=check_int(s, "BATCHSIZE", c.BATCHSIZE, 1),
            num_workers=int(cfg.DATA.NUM_DATALOADER_WORKERS),
            output_dir=clusterfit_output_dir(c.OUTPUT_DIR, cfg.CHECKPOINT.DIR),
            name=str(c.NAME),
            assign_test=assign_test,
            distill=bool(c.get("DISTILL", False)),
            **_method(s, c),
        )

    @property
    def distributed(self) -> bool:
        return self.kmeans_backend == "distributed"

    @property
    def uses_pretrain_labels(self) -> bool:
        return self.method != "kmeans"

    def preprocessing(self) -> Dict[str, Any]:
        """Keyword arguments of clustering.preprocess_features / sharded_kmeans."""
        return {
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "l2_norm": self.l2_norm,
            "order": self.order,
            "pca_sample_size": self.pca_sample_size,
            "seed": self.seed,
        }

    def settings(self) -> Dict[str, Any]:
        """The label-determining settings (without the data set and checkpoint hashes),
        in the meta file's layout."""
        return {
            "num_clusters": self.num_clusters,
            "niter": self.niter,
            "seed": self.seed,
            "max_points_per_centroid": self.max_points_per_centroid,
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "l2_norm": self.l2_norm,
            "order": self.order,
            "pca_sample_size": self.pca_sample_size,
            "kmeans_backend": self.kmeans_backend,
            "transforms": [dict(t) for t in self.transforms],
            "batch_size": self.batch_size,
            "distill": self.distill,
            "assign_test": self.assign_test,
            "method": self.method,
            "pretrain_labels": {
                "sources": list(self.pretrain_label_sources),
                "paths": list(self.pretrain_label_paths),
            },
        }


def _check_teacher(spec: NpreSpec) -> None:
    """Distillation needs a supervised teacher (ClusterFit Sec. 4): refused otherwise."""
    from vissl_clusterfit.cluster_step.npre import npre_train_config
    from vissl_clusterfit.losses.distillation_teacher import check_distillation_teacher

    check_distillation_teacher(
        npre_train_config(spec.checkpoint, spec.config, list(spec.overrides))
    )


def _method(section: str, c: Any) -> Dict[str, Any]:
    method = check_choice(section, "METHOD", c.get("METHOD", "kmeans"), METHODS)
    labels = c.get("PRETRAIN_LABELS", {}) or {}
    sources = tuple(labels.get("LABEL_SOURCES", []) or [])
    if method != "kmeans" and not sources:
        raise ValueError(
            f"{config_key(section, 'METHOD')}={method} assigns pseudo-labels from D_cf's "
            f"pre-training labels: set {config_key(section, 'PRETRAIN_LABELS.LABEL_SOURCES')}"
            " (e.g. [vcf_fashion_mnist] or [vcf_noisy:vcf_fashion_mnist])"
        )
    if method != "kmeans" and c.get("KMEANS_BACKEND", "faiss") == "distributed":
        raise ValueError(
            f"{config_key(section, 'METHOD')}={method} runs on rank 0: set "
            f"{config_key(section, 'KMEANS_BACKEND')}=faiss"
        )
    return {
        "method": method,
        "pretrain_label_sources": sources,
        "pretrain_label_paths": tuple(labels.get("LABEL_PATHS", []) or []),
    }


def transforms_list(transforms: Tuple[Dict[str, Any], ...]) -> List[Dict[str, Any]]:
    """The transforms as VISSL's dataset config wants them (a list of dicts)."""
    return [dict(t) for t in transforms]
