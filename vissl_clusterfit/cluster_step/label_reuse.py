"""Which label files the cluster step may reuse: everything that determines the labels
(``label_settings``, hashed into the fingerprint of the meta file) and the check of
existing files against it (``reusable_meta``): same settings and same images are
reused, other settings are refused with the list of differences.
"""

import os
from typing import Any, Dict, List, Optional

from vissl_clusterfit.cluster_step.params import ClusterFitParams
from vissl_clusterfit.data.cluster_labels import (
    file_sha256,
    label_paths,
    read_meta,
    verify_label_set,
)
from vissl_clusterfit.data.dataset_identity import images_match


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


def reusable_meta(
    params: ClusterFitParams, settings: Dict[str, Any], fp: str, dataset: Any
) -> Optional[Dict]:
    """The meta of matching label files, None when there are none (or when the images
    changed and ON_DATASET_CHANGE=recluster); raises when files made with other
    settings or for other images (or tampered ones) are in the way."""
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
    # same settings: are these still the images the labels were made for?
    if not images_match(
        dataset,
        meta.get("dataset_identity"),
        label_paths(params.output_dir, params.name)["images"],
        f"cluster label files {prefix}_* and DATA.TRAIN",
        "restore the images, or set config.VCF.CLUSTERFIT.OUTPUT_DIR / NAME to keep both",
        params.on_dataset_change,
        "config.VCF.CLUSTERFIT.ON_DATASET_CHANGE",
    ):
        return None
    verify_label_set(params.output_dir, params.name, meta)
    return meta
