"""The checks and choices shared by the cluster step's parameter families
(``params.ClusterFitParams``, ``deepcluster_params.DeepClusterParams``): each bad value
fails with a message naming its key (``config.VCF.<SECTION>.<KEY>=...``).
"""

from typing import Any, Dict, List, Tuple


POOLINGS = ("avg", "max", "flatten")

KMEANS_BACKENDS = ("faiss", "distributed")

# kmeans: ClusterFit (Sec. 3.1); prototype (Sec. 4) and per_label (Sec. 5.2): baselines
# that use D_cf's (possibly noisy) pre-training labels
METHODS = ("kmeans", "prototype", "per_label")

# a label set whose images changed: refuse (naming the first differing sample) or
# re-cluster for the current images (data/dataset_identity.py)
ON_DATASET_CHANGE = ("error", "recluster")

# images that do not decode: stop naming them, or label them -1 (cluster_step/bad_images.py)
ON_BAD_IMAGE = ("error", "skip")


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


def transforms_list(transforms: Tuple[Dict[str, Any], ...]) -> List[Dict[str, Any]]:
    """The transforms as VISSL's dataset config wants them (a list of dicts)."""
    return [dict(t) for t in transforms]
