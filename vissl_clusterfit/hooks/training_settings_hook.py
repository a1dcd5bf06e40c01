"""``TrainingSettingsHook``: the process-wide torch settings of ``config.VCF.TRAINING``,
applied in every training process when training starts (``on_start``, before the
ClusterFit / DeepCluster hooks extract features and before the first step), whatever
the train step.

Config params (``config.VCF.TRAINING``): ``CUDNN_BENCHMARK`` (bool): sets
``torch.backends.cudnn.benchmark``: cuDNN times its convolution algorithms at the first
batch of each input shape and keeps the fastest (PyTorch's default is False; neither
VISSL 0.1.6 nor classy-vision sets it). Worth it when the shapes repeat, as with a
fixed crop size and ``DROP_LAST``; ``vissl_clusterfit_defaults/gpu.yaml`` and
``one_gpu.yaml`` turn it on. No effect without CUDA.
"""

import dataclasses
import logging
from typing import Any

import torch

from vissl_clusterfit.hooks.base import VcfHook


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    cudnn_benchmark: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainingSettings":
        t = cfg.VCF.get("TRAINING", {}) or {}
        value = t.get("CUDNN_BENCHMARK", False)
        if not isinstance(value, bool):
            raise ValueError(
                f"config.VCF.TRAINING.CUDNN_BENCHMARK={value!r}: set it to true or false"
            )
        return cls(cudnn_benchmark=value)


class TrainingSettingsHook(VcfHook):
    def __init__(self, settings: TrainingSettings) -> None:
        super().__init__(params=settings)

    def on_start(self, task: Any) -> None:
        torch.backends.cudnn.benchmark = self.params.cudnn_benchmark
        logging.info(
            f"[vcf] torch.backends.cudnn.benchmark = {self.params.cudnn_benchmark} "
            "(config.VCF.TRAINING.CUDNN_BENCHMARK)"
        )
