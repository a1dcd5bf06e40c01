"""``vcf_hierarchical_loss``: VISSL wrapper of DeeperCluster's hierarchical loss
(Caron et al., ICCV 2019, Sec. 4.2, Eq. 5); the numerics live in
:mod:`vissl_clusterfit.losses.hierarchical_criterion`.

Contract with the ``vcf_hierarchical_head``: the model output is ONE tensor
``(B, S + S * k_sub)`` = ``[super_logits (B, S) | sub_logits (B, S, k_sub) flattened]``,
which is how it passes VISSL's heads pipeline unchanged; this loss splits it back. The
target is the flat id ``t = super * k_sub + sub = (group * 4 + rotation) * k_sub +
sub_cluster`` (``-1`` ignores the sample at both levels), one per sample, as a label file
would hold it.
"""

from typing import Any, List, Union

from classy_vision.losses import ClassyLoss, register_loss
from torch import Tensor
from vissl.config import AttrDict

from vissl_clusterfit.losses.hierarchical_criterion import (
    HierarchicalCriterion,
    split_output,
    split_targets,
)


LOSS_NAME = "vcf_hierarchical_loss"


def _single_tensor(value: Union[Tensor, List[Any]], what: str) -> Tensor:
    # VISSL hands over a list per head (and the trainer unwraps only length-1 lists of
    # model outputs); this loss serves exactly one head and one target
    while isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(
                f"{LOSS_NAME} expects a single {what} tensor (one vcf_hierarchical_head, one "
                f"label source) but got a list of {len(value)}; use one head in MODEL.HEAD.PARAMS"
            )
        value = value[0]
    if not isinstance(value, Tensor):
        raise ValueError(
            f"{LOSS_NAME} expects the {what} as a tensor, got {type(value).__name__}"
        )
    return value


@register_loss(LOSS_NAME)
class VcfHierarchicalLoss(ClassyLoss):
    """DeeperCluster hierarchical loss (Caron et al., ICCV 2019, Sec. 4.2, Eq. 5) on the
    concatenated output of the ``vcf_hierarchical_head`` and flat cluster targets.

    Config params (under ``config.LOSS.vcf_hierarchical_loss``):
        num_super_classes: S = 4 * m (m first-level k-means groups x 4 rotations);
            must equal the head's ``num_super_classes``.
        num_sub_classes: k_sub, k-means clusters within each group; must equal the head's.
        ignore_index: target value of ignored samples (default -1).
    """

    def __init__(
        self, num_super_classes: int, num_sub_classes: int, ignore_index: int = -1
    ) -> None:
        super().__init__()
        self.num_super_classes = int(num_super_classes)
        self.num_sub_classes = int(num_sub_classes)
        self.ignore_index = int(ignore_index)
        self.criterion = HierarchicalCriterion(
            self.num_super_classes, self.num_sub_classes, self.ignore_index
        )

    @classmethod
    def from_config(cls, loss_config: AttrDict) -> "VcfHierarchicalLoss":
        """Build from ``config.LOSS.vcf_hierarchical_loss``.

        Args:
            loss_config: the loss's param dict (VISSL adds a ``name`` key, ignored here).
        """
        values = {}
        for key in ("num_super_classes", "num_sub_classes"):
            value = loss_config.get(key, None)
            if value is None or int(value) < 1:
                raise ValueError(
                    f"config.LOSS.{LOSS_NAME}.{key} is {value!r}; set it to a positive integer "
                    f"matching the vcf_hierarchical_head's {key} "
                    f"(e.g. +config.LOSS.{LOSS_NAME}.{key}=...)"
                )
            values[key] = int(value)
        return cls(ignore_index=int(loss_config.get("ignore_index", -1)), **values)

    def forward(
        self, output: Union[Tensor, List[Tensor]], target: Union[Tensor, List[Tensor]]
    ) -> Tensor:
        """
        Args:
            output: the head's (B, S + S * k_sub) tensor, or a list holding only it.
            target: (B,) (or (B, 1)) flat targets, or a list holding only them.
        Returns:
            the scalar loss.
        """
        output = _single_tensor(output, "model output")
        target = _single_tensor(target, "target").reshape(-1)
        super_logits, sub_logits = split_output(
            output, self.num_super_classes, self.num_sub_classes
        )
        super_target, sub_target = split_targets(
            target, self.num_sub_classes, self.ignore_index
        )
        return self.criterion(super_logits, sub_logits, super_target, sub_target)
