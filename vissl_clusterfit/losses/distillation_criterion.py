"""Knowledge distillation (Hinton et al. 2015) as ClusterFit's distillation baseline
(Yan et al., CVPR 2020, Sec. 4, "Baselines"): "a weighted average of 2 loss functions:
(a) cross-entropy with soft targets computed using N_pre and temperature T and (b)
cross-entropy with image/video labels". With alpha = ``label_weight``:

    L = (1 - alpha) * T^2 * 1/B sum_b H(softmax(z_t[b] / T), softmax(z_s[b] / T))
        + alpha * CE(z_s, y)

z_s: the student's (N_cf's) logits, z_t: the teacher's (N_pre's), y: the pre-training
labels (noisy in the control experiment, Sec. 3.2), H(p, q) = -sum_c p_c log q_c. The
T^2 factor keeps the soft term's gradients comparable across temperatures (Hinton et al.
2015, Sec. 2; the ClusterFit paper does not state it). H(p, q) = KL(p || q) + H(p): the
soft term has the gradients of the KL form, and its minimum is T^2 * H(p), not 0.

Pure torch, no VISSL imports; ``vcf_distillation_loss`` wraps it.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_target_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * 1/B sum_b H(softmax(z_t[b] / T), softmax(z_s[b] / T))`` (term (a))."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student outputs {tuple(student_logits.shape)} but the teacher's logits are "
            f"{tuple(teacher_logits.shape)}: set the N_cf head's last dim to N_pre's"
        )
    t = float(temperature)
    target = F.softmax(teacher_logits.float() / t, dim=1)
    log_pred = F.log_softmax(student_logits.float() / t, dim=1)
    return -(target * log_pred).sum(dim=1).mean() * t * t


def label_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1
) -> torch.Tensor:
    """``CE(z_s, y)`` averaged over the samples whose label is not ``ignore_index``
    (term (b)); a batch with every label ignored gives a zero that stays connected to
    the graph, so DDP's gradient all-reduce does not wait on this rank."""
    labels = labels.reshape(-1).long().to(student_logits.device)
    if labels.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"{labels.shape[0]} labels for {student_logits.shape[0]} student outputs"
        )
    valid = labels != ignore_index
    num_classes = student_logits.shape[1]
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"labels {labels[bad].unique()[:5].tolist()} outside the student's "
            f"{num_classes} classes: the head's last dim must match the label space"
        )
    if not bool(valid.any()):
        return student_logits.sum() * 0.0
    return F.cross_entropy(
        student_logits.float()[valid], labels[valid], reduction="mean"
    )


class DistillationCriterion(nn.Module):
    """The weighted sum of the soft-target and label cross-entropies (module docstring).

    Args:
        temperature: T > 0.
        label_weight: alpha in [0, 1], the weight of the label term; the soft term gets
            1 - alpha. 0 = soft targets only (then no labels are needed).
        ignore_index: label value of samples left out of the label term.
    """

    def __init__(
        self,
        temperature: float = 2.0,
        label_weight: float = 0.0,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        if not 0.0 <= label_weight <= 1.0:
            raise ValueError(
                f"distillation label_weight must lie in [0, 1] (the weight of the "
                f"label cross-entropy; the soft targets get 1 - label_weight), got {label_weight}"
            )
        self.temperature = float(temperature)
        self.label_weight = float(label_weight)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            student_logits: (B, C).
            teacher_logits: (B, C), N_pre's logits for the same samples.
            labels: (B,) the pre-training labels; required when label_weight > 0.
        """
        alpha = self.label_weight
        loss = (1.0 - alpha) * soft_target_cross_entropy(
            student_logits, teacher_logits, self.temperature
        )
        if alpha > 0:
            if labels is None:
                raise ValueError(
                    f"label_weight={alpha} needs the pre-training labels of the batch"
                )
            loss = loss + alpha * label_cross_entropy(
                student_logits, labels, self.ignore_index
            )
        return loss
