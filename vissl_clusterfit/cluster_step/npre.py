"""Load N_pre: the pre-trained network whose features ClusterFit clusters.

N_pre may have another architecture than the N_cf being trained (ClusterFit Sec. 3.1
and Table 6), so its trunk is built from its own config: a config name (``NPRE_CONFIG``,
composed like ``config=...``) or, by default, the ``train_config.yaml`` that VISSL writes
next to the checkpoint.
"""

import copy
import os
from typing import Any, Dict, List, Optional

import torch
import yaml
from vissl.config import AttrDict

from vissl_clusterfit.cluster_step.extraction import SingleFeatureTrunk
from vissl_clusterfit.config import compose_config


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a VISSL checkpoint on CPU with clear errors for missing or corrupt files."""
    if os.path.isdir(path):
        raise ValueError(
            f"N_pre checkpoint {path} is a directory: point NPRE_CHECKPOINT at a "
            "checkpoint file in it (e.g. model_final_checkpoint_phaseN.torch)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"N_pre checkpoint {path} does not exist: check "
            "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT (pre-train N_pre first)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(
            f"N_pre checkpoint {path} is corrupt or not a torch file "
            f"({type(e).__name__}: {e}): re-run the pre-training or point "
            "NPRE_CHECKPOINT at a good checkpoint"
        ) from e


def trunk_state_dict(checkpoint: Dict[str, Any], path: str) -> Dict[str, torch.Tensor]:
    """The trunk weights of a VISSL training checkpoint (or of a plain trunk state)."""
    try:
        return checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]
    except (KeyError, TypeError):
        pass
    if "trunk" in checkpoint:
        return checkpoint["trunk"]
    raise ValueError(
        f"N_pre checkpoint {path} has no trunk weights (expected "
        "classy_state_dict.base_model.model.trunk, as VISSL's training writes)"
    )


def npre_train_config(
    checkpoint_path: str, config_name: str, overrides: List[str]
) -> Any:
    """N_pre's training config: ``config_name`` composed, or the train_config.yaml
    beside the checkpoint (an AttrDict either way)."""
    if config_name:
        _, cfg = compose_config(
            [f"config={config_name}", *overrides], dump_config=False
        )
        return cfg
    yaml_path = os.path.join(
        os.path.dirname(os.path.abspath(checkpoint_path)), "train_config.yaml"
    )
    if not os.path.isfile(yaml_path):
        raise FileNotFoundError(
            f"N_pre's model config: {yaml_path} does not exist. Set "
            "config.VCF.CLUSTERFIT.NPRE_CONFIG to the config N_pre was trained with "
            "(e.g. vissl_clusterfit/pretrain/rotnet_fmnist_cpu)"
        )
    with open(yaml_path) as f:
        return AttrDict(yaml.safe_load(f))


def npre_model_config(
    checkpoint_path: str, config_name: str, overrides: List[str]
) -> Any:
    """N_pre's MODEL config, set up for feature extraction on the plain trunk."""
    train_cfg = npre_train_config(checkpoint_path, config_name, overrides)
    model_cfg = copy.deepcopy(train_cfg.MODEL)
    # extraction runs on the plain trunk: no eval-mode feature pooling from the config
    model_cfg.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON = False
    return model_cfg


def _mismatch_summary(error: RuntimeError, limit: int = 3) -> str:
    """The first lines of load_state_dict's (often 100+ line) size-mismatch error."""
    lines = [ln.strip() for ln in str(error).splitlines() if "size mismatch" in ln]
    head = "; ".join(lines[:limit])
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return f"{len(lines)} tensors differ in shape: {head}{more}"


def build_npre_trunk(
    checkpoint_path: str, config_name: str = "", overrides: Optional[List[str]] = None
) -> torch.nn.Module:
    """N_pre's trunk with the checkpoint's weights, in eval mode."""
    from vissl.models.trunks import get_model_trunk

    checkpoint = load_checkpoint(checkpoint_path)
    model_cfg = npre_model_config(checkpoint_path, config_name, list(overrides or []))
    trunk = get_model_trunk(model_cfg.TRUNK.NAME)(model_cfg, model_cfg.TRUNK.NAME)
    state = trunk_state_dict(checkpoint, checkpoint_path)
    fix = "Set NPRE_CONFIG to the config it was trained with"
    try:
        missing, _ = trunk.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} does not match its model config "
            f"({model_cfg.TRUNK.NAME}): {_mismatch_summary(e)}. {fix}"
        ) from None
    if missing:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} does not match its model config "
            f"({model_cfg.TRUNK.NAME}): missing {missing[:5]}... {fix}"
        )
    return trunk.eval()


class TeacherLogits(SingleFeatureTrunk):
    """N_pre's whole model (trunk + heads) with one feature, ``logits``: the last
    head's output. Used for the distillation baseline."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, "logits")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        while isinstance(out, (list, tuple)):
            out = out[-1]
        return out


def build_npre_model(
    checkpoint_path: str, config_name: str = "", overrides: Optional[List[str]] = None
) -> TeacherLogits:
    """N_pre's full VISSL model (trunk and heads) with the checkpoint's weights, eval
    mode."""
    from vissl.models import build_model

    checkpoint = load_checkpoint(checkpoint_path)
    model_cfg = npre_model_config(checkpoint_path, config_name, list(overrides or []))
    model = build_model(model_cfg, AttrDict({"name": "sgd"}))
    try:
        model.set_classy_state(checkpoint["classy_state_dict"]["base_model"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} has no trunk+heads matching its config "
            f"({e}); distillation needs a checkpoint written by VISSL's training"
        ) from None
    return TeacherLogits(model).eval()
