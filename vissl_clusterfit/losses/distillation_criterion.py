"""Knowledge distillation (Hinton et al. 2015), the baseline of ClusterFit Sec. 4.2:
N_cf is trained to match N_pre's softened predictions instead of cluster ids."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class DistillationCriterion(nn.Module):
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch.

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton
    et al. 2015, Sec. 2).

    Args:
        temperature: T > 0.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student outputs {tuple(student_logits.shape)} but the teacher's logits are "
                f"{tuple(teacher_logits.shape)}: set the N_cf head's last dim to N_pre's"
            )
        t = self.temperature
        target = F.softmax(teacher_logits.float() / t, dim=1)
        log_pred = F.log_softmax(student_logits.float() / t, dim=1)
        return F.kl_div(log_pred, target, reduction="batchmean") * t * t
