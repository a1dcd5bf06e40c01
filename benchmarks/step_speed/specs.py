"""Feature specs, N_pre checkpoints and the configs of both routes of the cluster step
benchmark (same images, trunk, layer, pooling and batch for ours and VISSL's engine)."""

import argparse
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from benchmarks import plugin


NCF_CONFIG = "vissl_clusterfit/clusterfit/ncf_fmnist_cpu"
NPRE_CONFIG = "vissl_clusterfit/pretrain/rotnet_fmnist_cpu"
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class FeatureSpec:
    """Which N_pre trunk and layer give a D-dim feature, for ours and for VISSL's engine."""

    name: str
    dim: int  # nominal; the measured dim is reported
    trunk_overrides: Tuple[str, ...]
    layer: str
    pooling: str  # ours: VCF.CLUSTERFIT.POOLING
    # VISSL: LINEAR_EVAL_FEAT_POOL_OPS_MAP op, then flattened
    vissl_pool_op: Tuple[Any, ...]
    about: str


_W = "config.MODEL.TRUNK.VCF_RESNET.WIDTH="
_R50 = ("config.MODEL.TRUNK.NAME=resnet", "config.MODEL.TRUNK.RESNETS.DEPTH=50")
_AVG = ("AdaptiveAvgPool2d", [[1, 1]])
SPECS: Dict[str, FeatureSpec] = {
    s.name: s
    for s in (
        FeatureSpec(
            "w16avg",
            128,
            (_W + "16",),
            "res5",
            "avg",
            _AVG,
            "vcf_resnet-18 width 16, res5 global avg (cheap)",
        ),
        FeatureSpec(
            "w64avg",
            512,
            (_W + "64",),
            "res5",
            "avg",
            _AVG,
            "vcf_resnet-18 width 64, res5 global avg (~16x the forward of width 16)",
        ),
        FeatureSpec(
            "r50res3",
            512,
            _R50,
            "res3",
            "avg",
            _AVG,
            "VISSL resnet-50 (7x7/2 stem + max-pool) on 28-32 px, res3 global avg",
        ),
        FeatureSpec(
            "r50avg",
            2048,
            _R50,
            "res5",
            "avg",
            _AVG,
            "VISSL resnet-50 on 28-32 px, res5 (2048x1x1) global avg",
        ),
        FeatureSpec(
            "w16flat",
            2048,
            (_W + "16",),
            "res5",
            "flatten",
            ("Identity", []),
            "vcf_resnet-18 width 16, res5 map (128x4x4) flattened",
        ),
    )
}
DEFAULT_SPEC = {128: "w16avg", 512: "w64avg", 2048: "r50avg"}


def hydra_value(v: Any) -> str:
    """A Python value as a Hydra command-line override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return repr(v) if isinstance(v, float) else str(v)


def fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def save_npre(folder: str, spec: FeatureSpec, seed: int = 0) -> str:
    """An untrained N_pre in VISSL's checkpoint layout + its train_config.yaml (as the
    plugin's tests do): the cluster step's cost does not depend on training."""
    from vissl.models.trunks import get_model_trunk

    fresh_dir(folder)
    overrides = [f"config={NPRE_CONFIG}", f"config.CHECKPOINT.DIR={folder}"]
    # dumps train_config.yaml next to the checkpoint
    _, cfg = plugin.compose_config(overrides + list(spec.trunk_overrides))
    torch.manual_seed(seed)
    name = cfg.MODEL.TRUNK.NAME
    trunk = get_model_trunk(name)(cfg.MODEL, name)
    path = os.path.join(folder, "model_final_checkpoint_phase0.torch")
    model_state = {"trunk": trunk.state_dict(), "heads": {}}
    torch.save({"classy_state_dict": {"base_model": {"model": model_state}}}, path)
    return path


def ours_config(
    n: int, spec: FeatureSpec, k: int, args: argparse.Namespace, ckpt: str, out_dir: str
) -> Any:
    """The N_cf config whose cluster step we run: N images, ``spec``'s layer and
    pooling, K, and label files (with the meta file) in ``out_dir``."""
    c = "config.VCF.CLUSTERFIT."
    _, cfg = plugin.compose_config(
        [
            f"config={NCF_CONFIG}",
            f"config.CHECKPOINT.DIR={out_dir}",
            f"config.DATA.TRAIN.DATA_PATHS=[{args.data_path}]",
            f"config.DATA.TRAIN.DATA_LIMIT={n}",
            f"{c}NPRE_CHECKPOINT={ckpt}",
            f"{c}OUTPUT_DIR={out_dir}",
            f"{c}NUM_CLUSTERS={k}",
            f"{c}NITER={args.niter}",
            f"{c}SEED={args.seed}",
            f"{c}MAX_POINTS_PER_CENTROID={args.max_points_per_centroid}",
            f"{c}FEATURE_LAYER={spec.layer}",
            f"{c}POOLING={spec.pooling}",
            f"{c}BATCHSIZE={args.batch_size}",
        ],
        dump_config=False,
    )
    return cfg


def vissl_overrides(
    n: int,
    spec: FeatureSpec,
    args: argparse.Namespace,
    ckpt: str,
    out_dir: str,
    transforms: List[Dict[str, Any]],
) -> List[str]:
    """VISSL's extract_features engine on the same images, trunk, layer and batch size:
    trunk features only (EXTRACT_TRUNK_FEATURES_ONLY), pooled by VISSL's own
    LINEAR_EVAL_FEAT_POOL_OPS_MAP and flattened, weights from MODEL.WEIGHTS_INIT."""
    s = "config.MODEL.FEATURE_EVAL_SETTINGS."
    pool_map = hydra_value([[spec.layer, list(spec.vissl_pool_op)]])
    return [
        f"config={NPRE_CONFIG}",
        *spec.trunk_overrides,
        s + "EVAL_MODE_ON=True",
        s + "FREEZE_TRUNK_ONLY=True",
        s + "EXTRACT_TRUNK_FEATURES_ONLY=True",
        s + "SHOULD_FLATTEN_FEATS=True",
        s + "LINEAR_EVAL_FEAT_POOL_OPS_MAP=" + pool_map,
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={ckpt}",
        "config.MODEL.WEIGHTS_INIT.STATE_DICT_KEY_NAME=classy_state_dict",
        f"config.EXTRACT_FEATURES.OUTPUT_DIR={out_dir}",
        f"config.CHECKPOINT.DIR={out_dir}",
        f"config.DATA.TRAIN.DATA_PATHS=[{args.data_path}]",
        f"config.DATA.TRAIN.DATA_LIMIT={n}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={args.batch_size}",
        "config.DATA.TRAIN.DROP_LAST=False",
        "config.DATA.TRAIN.TRANSFORMS=" + hydra_value(transforms),
        "config.TEST_MODEL=False",
    ]
