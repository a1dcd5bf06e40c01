"""Typed, frozen parameters of the cluster step, read and validated once from a config.

Everything below ``from_config`` takes these objects (or plain arguments), never the raw
VISSL config, so each key is read in one place and a bad value fails before any work,
with a message naming the key (``config.VCF.CLUSTERFIT.NUM_CLUSTERS=...``).

- ``ClusterFitParams``: ``config.VCF.CLUSTERFIT`` (ClusterFit, Yan et al. 2020, Sec. 3.1).
- ``DeepClusterParams`` (deepcluster_params.py): ``config.VCF.DEEPCLUSTER``.
- ``NpreSpec`` (npre_spec.py): one N_pre; the shared checks: param_checks.py.
The keys and their defaults: configs/vissl_clusterfit_defaults/plugin.yaml.
"""

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from vissl_clusterfit.cluster_step.config_checks import (
    check_assign_test_split,
    check_extraction_transforms,
)
from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.npre_spec import NpreSpec, check_teacher, npre_spec
from vissl_clusterfit.cluster_step.param_checks import (
    KMEANS_BACKENDS,
    METHODS,
    ON_BAD_IMAGE,
    ON_DATASET_CHANGE,
    check_choice,
    check_data_paths,
    check_int,
    check_transforms,
    config_key,
)
from vissl_clusterfit.cluster_step.shard_params import FeatureShardParams
from vissl_clusterfit.clustering import VALID_ORDERS, check_num_clusters
from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir


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
    loader: ExtractionLoader
    output_dir: str
    name: str
    assign_test: bool
    distill: bool
    method: str = "kmeans"
    on_dataset_change: str = "error"
    on_bad_image: str = "error"
    pretrain_label_sources: Tuple[str, ...] = ()
    pretrain_label_paths: Tuple[str, ...] = ()
    shards: FeatureShardParams = FeatureShardParams()

    @classmethod
    def from_config(cls, cfg: Any) -> "ClusterFitParams":
        s, c = "CLUSTERFIT", cfg.VCF.CLUSTERFIT
        main = {
            "CHECKPOINT": c.NPRE_CHECKPOINT,
            "CONFIG": c.NPRE_CONFIG,
            "OVERRIDES": list(c.NPRE_OVERRIDES),
            "FEATURE_LAYER": c.FEATURE_LAYER,
            "POOLING": c.POOLING,
            "WEIGHTS_INIT": c.get("NPRE_WEIGHTS_INIT"),
        }
        shards = FeatureShardParams.from_config(c)
        backend = check_choice(
            s, "KMEANS_BACKEND", c.get("KMEANS_BACKEND", "faiss"), KMEANS_BACKENDS
        )
        distill = bool(c.get("DISTILL", False))
        method = _method(s, c, backend)
        # Precomputed features need no N_pre (nothing is extracted).
        npre = (
            []
            if shards.precomputed
            else [npre_spec(s, "NPRE_CHECKPOINT", main, "NPRE_WEIGHTS_INIT")]
        )
        for i, extra in enumerate([] if shards.precomputed else c.EXTRA_NPRE):
            spec = {"FEATURE_LAYER": c.FEATURE_LAYER, "POOLING": c.POOLING}
            spec.update(dict(extra))
            npre.append(
                npre_spec(
                    s,
                    f"EXTRA_NPRE[{i}].CHECKPOINT",
                    spec,
                    f"EXTRA_NPRE[{i}].WEIGHTS_INIT",
                )
            )
        check_data_paths(cfg, "TRAIN")
        transforms = check_transforms(s, c.TRANSFORMS)
        check_extraction_transforms(cfg, s, transforms)
        if shards.active:
            shards.check_compatible(method["method"], backend, distill)
        if distill:
            check_teacher(npre[0])
        assign_test = bool(c.ASSIGN_TEST)
        if assign_test:
            if "TEST" not in cfg.DATA or not cfg.DATA.TEST.DATA_SOURCES:
                raise ValueError(
                    f"{config_key(s, 'ASSIGN_TEST')}=true but config.DATA.TEST has no "
                    "DATA_SOURCES: set the test split to assign (e.g. your val folder)"
                )
            check_data_paths(cfg, "TEST")
            check_assign_test_split(cfg)
            if shards.precomputed:
                raise ValueError(
                    f"{config_key(s, 'ASSIGN_TEST')}=true needs N_pre to extract DATA.TEST"
                    f": not available with {config_key(s, 'FEATURE_SHARDS.PRECOMPUTED')}"
                )
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
            kmeans_backend=backend,
            transforms=transforms,
            batch_size=check_int(s, "BATCHSIZE", c.BATCHSIZE, 1),
            loader=ExtractionLoader.from_config(cfg, s),
            output_dir=clusterfit_output_dir(c.OUTPUT_DIR, cfg.CHECKPOINT.DIR),
            name=str(c.NAME),
            assign_test=assign_test,
            distill=distill,
            on_dataset_change=check_choice(
                s,
                "ON_DATASET_CHANGE",
                c.get("ON_DATASET_CHANGE", "error"),
                ON_DATASET_CHANGE,
            ),
            on_bad_image=_on_bad_image(s, c, shards, backend),
            **method,
            shards=shards,
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
            # only when set, so label files made before the key existed stay valid
            **({"autocast": self.loader.autocast} if self.loader.autocast else {}),
            "pretrain_labels": {
                "sources": list(self.pretrain_label_sources),
                "paths": list(self.pretrain_label_paths),
            },
            # only when used, so label files made without shards keep their fingerprint
            **(
                {"feature_shards": self.shards.settings()} if self.shards.active else {}
            ),
        }


def _on_bad_image(
    section: str, c: Any, shards: FeatureShardParams, backend: str
) -> str:
    mode = check_choice(
        section, "ON_BAD_IMAGE", c.get("ON_BAD_IMAGE", "error"), ON_BAD_IMAGE
    )
    if mode == "skip" and shards.enabled:
        raise ValueError(
            f"{config_key(section, 'ON_BAD_IMAGE')}=skip is not supported with "
            f"{config_key(section, 'FEATURE_SHARDS.ENABLED')}=true yet (the shards "
            "hold every index): remove the broken images, or turn the shards off"
        )
    if mode == "skip" and backend == "distributed":
        raise ValueError(
            f"{config_key(section, 'ON_BAD_IMAGE')}=skip leaves images out of the "
            f"k-means, which rank 0 does: set {config_key(section, 'KMEANS_BACKEND')}="
            "faiss, or remove the broken images"
        )
    return mode


def _method(section: str, c: Any, backend: str) -> Dict[str, Any]:
    method = check_choice(section, "METHOD", c.get("METHOD", "kmeans"), METHODS)
    labels = c.get("PRETRAIN_LABELS", {}) or {}
    sources = tuple(labels.get("LABEL_SOURCES", []) or [])
    if method != "kmeans" and not sources:
        raise ValueError(
            f"{config_key(section, 'METHOD')}={method} assigns pseudo-labels from D_cf's "
            f"pre-training labels: set {config_key(section, 'PRETRAIN_LABELS.LABEL_SOURCES')}"
            " (e.g. [vcf_fashion_mnist] or [vcf_noisy:vcf_fashion_mnist])"
        )
    if method != "kmeans" and backend == "distributed":
        raise ValueError(
            f"{config_key(section, 'METHOD')}={method} runs on rank 0: set "
            f"{config_key(section, 'KMEANS_BACKEND')}=faiss"
        )
    return {
        "method": method,
        "pretrain_label_sources": sources,
        "pretrain_label_paths": tuple(labels.get("LABEL_PATHS", []) or []),
    }
