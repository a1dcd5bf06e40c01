"""One N_pre whose features the cluster step clusters (ClusterFit, Yan et al. 2020,
Sec. 3.1; several = multi-task ClusterFit, supplementary), read from its config keys
(``NPRE_CHECKPOINT``, ``EXTRA_NPRE[i]``) and checked before any work.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from vissl_clusterfit.cluster_step.param_checks import (
    POOLINGS,
    check_choice,
    config_key,
)
from vissl_clusterfit.cluster_step.weights_init import WeightsInit


@dataclass(frozen=True)
class NpreSpec:
    """One N_pre whose features are clustered (several = multi-task ClusterFit)."""

    checkpoint: str
    config: str = ""
    overrides: Tuple[str, ...] = ()
    feature_layer: str = "res5"
    pooling: str = "avg"
    weights_init: WeightsInit = WeightsInit()
    # the config keys of weights_init and of checkpoint, named in error messages
    weights_key: str = "config.VCF.CLUSTERFIT.NPRE_WEIGHTS_INIT"
    checkpoint_key: str = "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT"

    def as_dict(self) -> Dict[str, Any]:
        out = {
            "CHECKPOINT": self.checkpoint,
            "CONFIG": self.config,
            "OVERRIDES": list(self.overrides),
            "FEATURE_LAYER": self.feature_layer,
            "POOLING": self.pooling,
        }
        # only when set: label sets made before the key existed keep their fingerprint
        if not self.weights_init.is_default():
            out["WEIGHTS_INIT"] = self.weights_init.as_dict()
        return out


def npre_spec(
    section: str, name: str, value: Dict[str, Any], weights_name: str
) -> NpreSpec:
    weights_key = config_key(section, weights_name)
    spec = NpreSpec(
        checkpoint=str(value.get("CHECKPOINT") or ""),
        config=str(value.get("CONFIG") or ""),
        overrides=tuple(value.get("OVERRIDES") or ()),
        feature_layer=str(value["FEATURE_LAYER"]),
        pooling=check_choice(section, "POOLING", value["POOLING"], POOLINGS),
        weights_init=WeightsInit.from_mapping(value.get("WEIGHTS_INIT"), weights_key),
        weights_key=weights_key,
        checkpoint_key=config_key(section, name),
    )
    if not spec.checkpoint:
        raise ValueError(
            f"{spec.checkpoint_key} is empty: set it to the N_pre checkpoint (e.g. "
            "<pretrain CHECKPOINT.DIR>/model_final_checkpoint_phaseN.torch)"
        )
    if os.path.isdir(spec.checkpoint):
        raise ValueError(
            f"{spec.checkpoint_key}={spec.checkpoint} is a directory: point it at a "
            "checkpoint file in it (e.g. model_final_checkpoint_phaseN.torch)"
        )
    if not os.path.isfile(spec.checkpoint):
        raise FileNotFoundError(
            f"N_pre checkpoint {spec.checkpoint} does not exist: check "
            f"{spec.checkpoint_key} (pre-train N_pre first)"
        )
    return spec


def check_teacher(spec: NpreSpec) -> None:
    """Distillation needs a supervised teacher (ClusterFit Sec. 4): refused otherwise."""
    from vissl_clusterfit.cluster_step.npre import npre_train_config
    from vissl_clusterfit.losses.distillation_teacher import check_distillation_teacher

    check_distillation_teacher(
        npre_train_config(spec.checkpoint, spec.config, list(spec.overrides))
    )
