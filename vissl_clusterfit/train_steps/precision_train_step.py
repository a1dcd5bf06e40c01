"""``vcf_precision_train_step``: VISSL's standard train step in bf16 autocast and/or
with a channels_last model, for training at the model's speed on one GPU.

VISSL 0.1.6's own AMP (``MODEL.AMP_PARAMS.USE_AMP: True, AMP_TYPE: pytorch``) is fp16
only: its ``standard_train_step`` enters ``torch.cuda.amp.autocast()`` (float16) with
a GradScaler, and ``SelfSupervisionTask`` refuses it off CUDA. It still runs on
today's torch (``torch.cuda.amp`` only warns that it is deprecated). bfloat16 keeps
float32's exponent range, so it needs no loss scaling; this step wraps VISSL's step
(one copy of the training logic) in ``torch.autocast(dtype=bfloat16)``. Keep
``USE_AMP: False`` with it: VISSL's inner float16 autocast would override ours.

On CUDA the backward pass runs in autograd's device thread, outside this (thread-
local) autocast, as PyTorch recommends; on a CPU it runs in the calling thread, under
autocast. Measured against a plain PyTorch step by ``benchmarks/gpu_check.py``.

Config params (``config.VCF.TRAINING``): ``AUTOCAST`` ("" or bfloat16),
``CHANNELS_LAST`` (convert the model to NHWC once, at the first step: the same
Parameter objects, so DDP and the optimizer keep theirs).
"""

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from vissl.trainer.train_steps import register_train_step
from vissl.trainer.train_steps.standard_train_step import standard_train_step

from vissl_clusterfit.runtime.precision import autocast_context, checked_autocast


STEP_NAME = "vcf_precision_train_step"


@dataclass(frozen=True)
class PrecisionSettings:
    """``config.VCF.TRAINING``, read once per run.

    Args:
        autocast: "" (float32) or "bfloat16" (``torch.autocast`` around the step).
        channels_last: convert the model to NHWC once, before its first step.
    """

    autocast: str = ""
    channels_last: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "PrecisionSettings":
        t = cfg.VCF.get("TRAINING", {}) or {}
        return cls(
            autocast=checked_autocast(
                t.get("AUTOCAST", ""), "config.VCF.TRAINING.AUTOCAST"
            ),
            channels_last=bool(t.get("CHANNELS_LAST", False)),
        )


def check_precision_config(cfg: Any) -> None:
    """Refuse precision settings that would be silently ignored or overridden."""
    settings = PrecisionSettings.from_config(cfg)
    step = cfg.TRAINER.TRAIN_STEP_NAME
    if (settings.autocast or settings.channels_last) and step != STEP_NAME:
        raise ValueError(
            f"config.VCF.TRAINING (AUTOCAST / CHANNELS_LAST) needs "
            f"config.TRAINER.TRAIN_STEP_NAME={STEP_NAME} (it is {step})"
        )
    if settings.autocast and cfg.MODEL.AMP_PARAMS.USE_AMP:
        raise ValueError(
            "config.VCF.TRAINING.AUTOCAST is set together with "
            "config.MODEL.AMP_PARAMS.USE_AMP=True, whose float16 autocast would "
            "override it: set config.MODEL.AMP_PARAMS.USE_AMP=False"
        )


# Each run's settings, read at its first step (VISSL calls a train step with the task
# alone, at every step); nothing is stored on VISSL's task.
_RUNS: "weakref.WeakKeyDictionary[Any, PrecisionSettings]" = weakref.WeakKeyDictionary()


@register_train_step(STEP_NAME)
def vcf_precision_train_step(task: Any) -> Any:
    settings = _RUNS.get(task)
    if settings is None:
        settings = _RUNS[task] = PrecisionSettings.from_config(task.config)
        if settings.channels_last:
            task.base_model.to(memory_format=torch.channels_last)
    with autocast_context(settings.autocast, task.device):
        return standard_train_step(task)
