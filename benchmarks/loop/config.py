"""The modes of ``benchmarks.train_loop`` and the configs they run: the pipeline's stage
config for a preset on this device, on VISSL's synthetic images, changed per mode."""

import argparse
import dataclasses
from typing import Any, Dict, List

import torch

from benchmarks.plugin import PRESETS, compose_config


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way of running the step; the VISSL modes differ from ``vissl_cached`` in the
    fields set here."""

    loop: str  # plain | torchvision | vissl
    what: str
    data: str = "cached"  # cached (one device batch) | synthetic (VISSL's loader)
    hooks: bool = True  # the plugin's hook_generator (VISSL's defaults + ours)
    meters: bool = True  # the config's training meters
    bench: bool = False  # torch.backends.cudnn.benchmark
    perf_stats: bool = False  # HOOKS.PERF_STATS.MONITOR_PERF_STATS


MODES: Dict[str, Mode] = {
    "plain": Mode(
        "plain", "plain SGD step on VISSL's model, cuDNN autotuning", bench=True
    ),
    "vissl_cached": Mode(
        "vissl", "VISSL's loop as the pipeline's stage runs it, no loader"
    ),
    "vissl_synthetic": Mode(
        "vissl", "as vissl_cached, VISSL's loader on synthetic images", data="synthetic"
    ),
    "vissl_cached_bare": Mode(
        "vissl",
        "VISSL's loop: no hooks, no meters, autotuning",
        hooks=False,
        meters=False,
        bench=True,
    ),
    "plain_nobench": Mode("plain", "plain step, no cuDNN autotuning (VISSL's default)"),
    "vissl_cached_bench": Mode("vissl", "vissl_cached + cuDNN autotuning", bench=True),
    "vissl_cached_nohooks": Mode("vissl", "vissl_cached without any hook", hooks=False),
    "vissl_cached_nometers": Mode("vissl", "vissl_cached without meters", meters=False),
    "vissl_cached_perfstats": Mode(
        "vissl", "vissl_cached + VISSL's PERF_STATS timers", perf_stats=True
    ),
    "vissl_synthetic_perfstats": Mode(
        "vissl",
        "vissl_synthetic + PERF_STATS timers",
        data="synthetic",
        perf_stats=True,
    ),
    "plain_torchvision": Mode(
        "torchvision", "plain step on torchvision's ResNet (--tv-arch)", bench=True
    ),
}


def stage_overrides(
    args: argparse.Namespace, device: torch.device, stage: str
) -> List[str]:
    """The ``stage`` (ncf | npre) config as the pipeline composes it for
    ``args.preset`` on this device (its +vissl_clusterfit_defaults options), on
    VISSL's synthetic images and labels; N_cf without N_pre and clustering, its head
    with ``--num-clusters`` outputs."""
    preset = PRESETS[args.preset]
    scale = "gpu" if device.type == "cuda" else "cpu"
    options = preset.group_options.get(scale, ())
    template = preset.ncf_config if stage == "ncf" else preset.npre_config
    name = template.format(p=args.pretext, scale=scale, target="")
    bf16 = args.precision == "bf16_cl"
    return [
        f"config={name}",
        *([f"+vissl_clusterfit_defaults=[{','.join(options)}]"] if options else []),
        "config.VCF.CLUSTERFIT.ENABLED=false",
        f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={args.num_clusters}",
        "config.DATA.TRAIN.DATA_SOURCES=[synthetic]",
        "config.DATA.TRAIN.LABEL_SOURCES=[synthetic]",
        "config.DATA.TRAIN.DATASET_NAMES=[synthetic]",
        "config.DATA.TRAIN.DATA_PATHS=[]",
        "config.DATA.TRAIN.LABEL_PATHS=[]",
        f"config.DATA.TRAIN.DEFAULT_GRAY_IMG_SIZE={args.synthetic_size}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={args.batch}",
        "config.OPTIMIZER.num_epochs=1",
        # as gpu_check's in1k section: VISSL's multistep schedule refuses 1 epoch
        "config.OPTIMIZER.param_schedulers.lr.name=constant",
        "config.TEST_MODEL=false",
        "config.TRAINER.TRAIN_STEP_NAME=vcf_precision_train_step",
        f"config.VCF.TRAINING.AUTOCAST={'bfloat16' if bf16 else ''}",
        f"config.VCF.TRAINING.CHANNELS_LAST={bf16}",
    ]


def dry_model(args: argparse.Namespace, stage: str) -> List[str]:
    """--dry: the plugin's CIFAR-style ResNet-18 at width 8 (res5: 64-d) in place of
    ResNet-50, so that every mode runs in seconds on a CPU."""
    if not args.dry:
        return []
    classes = args.num_clusters if stage == "ncf" else 4
    return [
        "config.MODEL.TRUNK.NAME=vcf_resnet",
        "config.MODEL.TRUNK.VCF_RESNET.WIDTH=8",
        f"config.MODEL.HEAD.PARAMS=[[mlp,{{dims:[64,{classes}]}}]]",
    ]


def compose(
    args: argparse.Namespace,
    device: torch.device,
    extra: List[str],
    stage: str = "",
) -> Any:
    stage = stage or args.stage
    overrides = [*stage_overrides(args, device, stage), *dry_model(args, stage)]
    _, cfg = compose_config([*overrides, *extra], dump_config=False)
    if args.crop != 224:  # --dry: every crop / resize of the train transforms
        for t in cfg.DATA.TRAIN.TRANSFORMS:
            if "size" in t:
                t["size"] = args.crop
    return cfg


def head_classes(cfg: Any) -> int:
    """Outputs of the config's last head (N_cf: K; RotNet: 4)."""
    return int(cfg.MODEL.HEAD.PARAMS[-1][1]["dims"][-1])


def mode_config(
    args: argparse.Namespace, device: torch.device, mode: Mode, ckpt_dir: str
) -> Any:
    """The stage config of ``mode``, its checkpoints in ``ckpt_dir``."""
    extra = [f"config.CHECKPOINT.DIR={ckpt_dir}"]
    if mode.data == "cached":  # workers would transform batches nobody reads
        extra.append("config.DATA.NUM_DATALOADER_WORKERS=0")
    if not mode.meters:
        extra.append("config.METERS.enable_training_meter=false")
    if mode.perf_stats:
        extra.append("config.HOOKS.PERF_STATS.MONITOR_PERF_STATS=true")
    cfg = compose(args, device, extra)
    if mode.data == "cached":
        # VISSL's loader makes the one batch, in the main process: crop it, no more
        # (colour jitter on 2 x 256 images would add seconds to every cached mode)
        keep = ("RandomResizedCrop", "CenterCrop", "Resize", "ToTensor")
        cfg.DATA.TRAIN.TRANSFORMS = [
            t for t in cfg.DATA.TRAIN.TRANSFORMS if t["name"] in keep
        ]
    return cfg
