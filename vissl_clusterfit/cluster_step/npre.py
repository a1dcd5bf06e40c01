"""Load N_pre: the pre-trained network whose features ClusterFit clusters.

N_pre may have another architecture than the N_cf being trained (ClusterFit Sec. 3.1
and Table 6), so its trunk is built from its own config: a config name (``NPRE_CONFIG``,
composed like ``config=...``) or, by default, the ``train_config.yaml`` that VISSL writes
next to the checkpoint.
"""

import copy
import os
from typing import Any, List, Optional

import torch
import yaml
from vissl.config import AttrDict

from vissl_clusterfit.cluster_step.checkpoint_files import read_checkpoint_file
from vissl_clusterfit.cluster_step.checkpoint_formats import load_trunk_weights
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk
from vissl_clusterfit.cluster_step.weights_init import WeightsInit
from vissl_clusterfit.config import compose_config


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


def build_npre_trunk(
    checkpoint_path: str,
    config_name: str = "",
    overrides: Optional[List[str]] = None,
    weights_init: WeightsInit = WeightsInit(),
    key: str = "config.VCF.CLUSTERFIT.NPRE_WEIGHTS_INIT",
    checkpoint_key: str = "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT",
) -> torch.nn.Module:
    """N_pre's trunk (architecture from its config) with the checkpoint's weights, in
    eval mode. The file may be any layout ``checkpoint_formats`` reads (VISSL,
    torchvision, timm, MoCo, DINO, SwAV, safetensors); ``weights_init`` pins the
    mapping (VISSL's WEIGHTS_INIT keys); ``key`` is its config key and
    ``checkpoint_key`` that of ``checkpoint_path``, for messages."""
    from vissl.models.trunks import get_model_trunk

    checkpoint = read_checkpoint_file(
        checkpoint_path, weights_init.weights_only, key, checkpoint_key
    )
    model_cfg = npre_model_config(checkpoint_path, config_name, list(overrides or []))
    trunk = get_model_trunk(model_cfg.TRUNK.NAME)(model_cfg, model_cfg.TRUNK.NAME)
    load_trunk_weights(trunk, checkpoint_path, weights_init, key, checkpoint)
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

    checkpoint = read_checkpoint_file(checkpoint_path)
    model_cfg = npre_model_config(checkpoint_path, config_name, list(overrides or []))
    model = build_model(model_cfg, AttrDict({"name": "sgd"}))
    try:
        model.set_classy_state(checkpoint["classy_state_dict"]["base_model"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} has no trunk+heads matching its config "
            f"({e}); distillation needs a checkpoint written by VISSL's training (trunk and heads; a torchvision/timm/SSL file has no VISSL heads)"
        ) from None
    return TeacherLogits(model).eval()
