"""``vcf_distillation_loss``: the ClusterFit distillation baseline as a VISSL loss.

The targets VISSL passes are sample indices (``DATA.TRAIN.LABEL_TYPE: sample_index``);
the loss looks up N_pre's logits for those samples in the file the extract-and-cluster
step writes with ``VCF.CLUSTERFIT.DISTILL: True`` (loaded on first use, since the hook
writes it at the start of training, after the loss is built).

Config params (``config.LOSS.vcf_distillation_loss``):
    teacher_logits_file: path of <NAME>_teacher_logits.npy
    temperature: softmax temperature T
"""

import os
from typing import Any, Dict, List, Union

import numpy as np
import torch
from classy_vision.losses import ClassyLoss, register_loss

from vissl_clusterfit.losses.distillation_criterion import DistillationCriterion


@register_loss("vcf_distillation_loss")
class VcfDistillationLoss(ClassyLoss):
    def __init__(self, teacher_logits_file: str, temperature: float = 2.0) -> None:
        super().__init__()
        self.teacher_logits_file = teacher_logits_file
        self.criterion = DistillationCriterion(temperature)
        self._teacher: Union[torch.Tensor, None] = None

    @classmethod
    def from_config(cls, loss_config: Dict[str, Any]) -> "VcfDistillationLoss":
        return cls(
            loss_config["teacher_logits_file"],
            float(loss_config.get("temperature", 2.0)),
        )

    def teacher(self) -> torch.Tensor:
        if self._teacher is None:
            if not os.path.isfile(self.teacher_logits_file):
                raise FileNotFoundError(
                    f"teacher logits {self.teacher_logits_file} do not exist: enable "
                    "config.VCF.CLUSTERFIT.DISTILL=true (the hook writes them) or fix "
                    "LOSS.vcf_distillation_loss.teacher_logits_file"
                )
            self._teacher = torch.from_numpy(np.load(self.teacher_logits_file))
        return self._teacher

    def forward(
        self, output: Union[torch.Tensor, List[torch.Tensor]], target: Any
    ) -> torch.Tensor:
        if isinstance(output, (list, tuple)):
            output = output[0]
        if isinstance(target, (list, tuple)):
            target = target[0]
        index = target.long().view(-1).cpu()
        teacher = self.teacher()
        if index.max() >= len(teacher) or index.min() < 0:
            raise ValueError(
                f"sample index {int(index.max())} outside the {len(teacher)} teacher logits: "
                "set DATA.TRAIN.LABEL_TYPE: sample_index and the same DATA_LIMIT as the hook"
            )
        return self.criterion(output, teacher[index].to(output.device))
