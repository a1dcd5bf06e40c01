"""``vcf_distillation_loss``: ClusterFit's distillation baseline (Yan et al., CVPR 2020,
Sec. 4, "Baselines") as a VISSL loss: ``(1 - alpha) * T^2 * H(teacher_T, student_T) +
alpha * CE(student, label)`` (see ``distillation_criterion.py``). The teacher is a
*supervised* N_pre (``check_distillation_teacher``: distillation is no baseline for a
self-supervised one, Sec. 4.2).

Teacher outputs are cached, not computed on the fly: the cluster step writes N_pre's
head outputs for every sample of DATA.TRAIN, computed once before training on the
deterministic extraction transforms (``VCF.CLUSTERFIT.TRANSFORMS``: no augmentation),
to ``<NAME>_teacher_logits.npy`` when ``VCF.CLUSTERFIT.DISTILL: True``. So the student
sees augmented views while its soft targets are those of the un-augmented image. The
file is loaded on first use (it is written at the start of training, after the loss is
built) and indexed by the sample's position in DATA.TRAIN, which must therefore have
the same DATA_LIMIT / sampling as the cluster step's.

Targets, per sample:

- ``(B, 2)`` long ``[sample index, label]``, as ``vcf_index_label_collator`` packs them
  (``DATA.TRAIN.COLLATE_FUNCTION: vcf_index_label_collator`` and the pre-training label
  source, e.g. ``vcf_noisy:vcf_fashion_mnist``);
- ``(B,)`` sample indices (``LABEL_TYPE: sample_index``, no label sources): only with
  ``label_weight: 0`` (soft targets alone).

Config params (``config.LOSS.vcf_distillation_loss``):
    teacher_logits_file: path of <NAME>_teacher_logits.npy
    temperature: softmax temperature T of the soft targets (default 2.0)
    label_weight: alpha in [0, 1], weight of the label cross-entropy (default 0.5);
        the soft-target cross-entropy gets 1 - alpha
    ignore_index: label of samples left out of the label term (default -1)
"""

import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from classy_vision.losses import ClassyLoss, register_loss

from vissl_clusterfit.losses.distillation_criterion import DistillationCriterion


LOSS_NAME = "vcf_distillation_loss"


@register_loss(LOSS_NAME)
class VcfDistillationLoss(ClassyLoss):
    def __init__(
        self,
        teacher_logits_file: str,
        temperature: float = 2.0,
        label_weight: float = 0.5,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        self.teacher_logits_file = teacher_logits_file
        self.criterion = DistillationCriterion(temperature, label_weight, ignore_index)
        self._teacher: Optional[torch.Tensor] = None

    @classmethod
    def from_config(cls, loss_config: Dict[str, Any]) -> "VcfDistillationLoss":
        return cls(
            loss_config["teacher_logits_file"],
            float(loss_config.get("temperature", 2.0)),
            float(loss_config.get("label_weight", 0.5)),
            int(loss_config.get("ignore_index", -1)),
        )

    def teacher(self) -> torch.Tensor:
        if self._teacher is None:
            if not os.path.isfile(self.teacher_logits_file):
                raise FileNotFoundError(
                    f"teacher logits {self.teacher_logits_file} do not exist: enable "
                    "config.VCF.CLUSTERFIT.DISTILL=true (the cluster step writes them) or "
                    f"fix LOSS.{LOSS_NAME}.teacher_logits_file"
                )
            self._teacher = torch.from_numpy(np.load(self.teacher_logits_file))
        return self._teacher

    def split_target(self, target: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(sample indices (B,), labels (B,) or None) from VISSL's target."""
        if isinstance(target, (list, tuple)):
            if len(target) != 1:
                raise ValueError(
                    f"{LOSS_NAME} expects one target tensor, got a list of {len(target)}"
                )
            target = target[0]
        target = torch.as_tensor(target).long()
        if target.dim() == 2 and target.shape[1] == 2:
            return target[:, 0], target[:, 1]
        if target.dim() == 1 or (target.dim() == 2 and target.shape[1] == 1):
            if self.criterion.label_weight > 0:
                raise ValueError(
                    f"{LOSS_NAME} with label_weight={self.criterion.label_weight} needs "
                    "each sample's index and label: set DATA.TRAIN.COLLATE_FUNCTION: "
                    "vcf_index_label_collator and the pre-training LABEL_SOURCES (or "
                    "label_weight: 0 for soft targets alone)"
                )
            return target.reshape(-1), None
        raise ValueError(
            f"{LOSS_NAME} targets must be (B, 2) [index, label] or (B,) indices, got "
            f"{tuple(target.shape)}"
        )

    def forward(
        self, output: Union[torch.Tensor, List[torch.Tensor]], target: Any
    ) -> torch.Tensor:
        if isinstance(output, (list, tuple)):
            output = output[0]
        index, labels = self.split_target(target)
        index = index.cpu()
        teacher = self.teacher()
        if index.max() >= len(teacher) or index.min() < 0:
            raise ValueError(
                f"sample index {int(index.max())} outside the {len(teacher)} teacher "
                "logits: the training split must have the same DATA_LIMIT as the "
                "cluster step that wrote them"
            )
        return self.criterion(output, teacher[index].to(output.device), labels)
