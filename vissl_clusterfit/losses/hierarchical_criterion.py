"""DeeperCluster's two-level hierarchical loss (Caron et al., ICCV 2019, Sec. 4.2, Eq. 5).

Pure torch, no VISSL imports, so it can be tested alone; ``vcf_hierarchical_loss`` wraps
it for VISSL.

Label encoding (DeeperCluster, Sec. 4.2 "Choice of super-classes"): the data set is split
into ``m`` groups by k-means, and each group is split again by k-means into ``k_sub``
sub-clusters. A super-class is a (group, rotation) pair, so there are ``S = 4 * m``
super-classes; the sub-classes of super-class ``s`` are the ``k_sub`` sub-clusters of its
group. Every index is zero-based:

    super  = group * 4 + rotation                  in [0, S)
    sub    = sub_cluster (index within its group)  in [0, k_sub)
    flat t = super * k_sub + sub = (group * 4 + rotation) * k_sub + sub_cluster

``-1`` means "ignore" at every level (a flat ``-1`` splits into ``(-1, -1)``).

Model output contract (shared with the ``vcf_hierarchical_head``): one tensor of shape
``(B, S + S * k_sub)`` = ``[super_logits (B, S) | sub_logits (B, S, k_sub) flattened]``.
Column ``S + t`` of that tensor is the sub-class logit of flat target ``t``.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


#: Number of rotation classes in DeeperCluster ({0, 90, 180, 270} degrees, Sec. 3).
NUM_ROTATIONS = 4


def encode_targets(
    super_target: Tensor, sub_target: Tensor, num_sub: int, ignore_index: int = -1
) -> Tensor:
    """Flat target ``t = super * num_sub + sub`` (DeeperCluster Sec. 4.2); ``ignore_index``
    where either level is ignored.

    Args:
        super_target: (B,) integer super-class ids in [0, S), or ``ignore_index``.
        sub_target: (B,) integer sub-class ids in [0, num_sub), or ``ignore_index``.
        num_sub: number of sub-classes per super-class (``k_sub``).
        ignore_index: the "ignore" marker, kept as is in the output.
    """
    if num_sub < 1:
        raise ValueError(f"num_sub must be >= 1, got {num_sub}")
    super_target, sub_target = torch.as_tensor(super_target), torch.as_tensor(
        sub_target
    )
    if super_target.shape != sub_target.shape:
        raise ValueError(
            f"super_target {tuple(super_target.shape)} and sub_target "
            f"{tuple(sub_target.shape)} differ in shape"
        )
    ignored = (super_target == ignore_index) | (sub_target == ignore_index)
    if bool(((sub_target >= num_sub) | (sub_target < 0))[~ignored].any()):
        raise ValueError(
            f"sub_target has values outside [0, {num_sub}): "
            f"{sub_target[~ignored].unique().tolist()}"
        )
    flat = super_target.long() * num_sub + sub_target.long()
    return torch.where(ignored, torch.full_like(flat, ignore_index), flat)


def split_targets(
    target: Tensor, num_sub: int, ignore_index: int = -1
) -> Tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_targets`: ``(target // num_sub, target % num_sub)``, with
    ``ignore_index`` kept at both levels.

    Args:
        target: (B,) flat integer targets (see the module docstring), or ``ignore_index``.
        num_sub: number of sub-classes per super-class (``k_sub``).
        ignore_index: the "ignore" marker.
    """
    if num_sub < 1:
        raise ValueError(f"num_sub must be >= 1, got {num_sub}")
    target = torch.as_tensor(target).long()
    ignored = target == ignore_index
    # clamp before dividing so a negative marker never turns into a valid-looking id
    safe = target.clamp(min=0)
    fill = torch.full_like(target, ignore_index)
    return torch.where(ignored, fill, safe // num_sub), torch.where(
        ignored, fill, safe % num_sub
    )


def deepercluster_super_class(
    group: Tensor, rotation: Tensor, num_rotations: int = NUM_ROTATIONS
) -> Tensor:
    """Super-class id of a (k-means group, rotation) pair: ``group * num_rotations + rotation``
    (DeeperCluster Sec. 4.2, "Choice of super-classes": ``S = 4m`` super-classes).

    Args:
        group: (B,) index of the sample's first-level k-means cluster in [0, m).
        rotation: (B,) rotation class in [0, num_rotations) (0, 90, 180, 270 degrees).
        num_rotations: number of rotation classes (4 in the paper).
    """
    group, rotation = torch.as_tensor(group).long(), torch.as_tensor(rotation).long()
    if bool(((rotation < 0) | (rotation >= num_rotations)).any()):
        raise ValueError(
            f"rotation must lie in [0, {num_rotations}), got {rotation.unique().tolist()}"
        )
    return group * num_rotations + rotation


def split_output(output: Tensor, num_super: int, num_sub: int) -> Tuple[Tensor, Tensor]:
    """Split the head's single output tensor ``(B, S + S * k_sub)`` into
    ``super_logits (B, S)`` and ``sub_logits (B, S, k_sub)`` (views, no copy).

    Args:
        output: the concatenated logits written by the ``vcf_hierarchical_head``.
        num_super: S, the number of super-classes.
        num_sub: k_sub, the number of sub-classes per super-class.
    """
    expected = num_super + num_super * num_sub
    if output.dim() != 2 or output.shape[1] != expected:
        raise ValueError(
            f"hierarchical output must have shape (B, S + S*k_sub) = (B, {expected}) for "
            f"num_super_classes={num_super}, num_sub_classes={num_sub}; got {tuple(output.shape)}. "
            "Make the loss's num_super_classes/num_sub_classes match the head's."
        )
    return output[:, :num_super], output[:, num_super:].reshape(
        output.shape[0], num_super, num_sub
    )


def join_output(super_logits: Tensor, sub_logits: Tensor) -> Tensor:
    """Inverse of :func:`split_output`: ``cat([super (B, S), sub (B, S, k_sub).flatten(1)], 1)``."""
    return torch.cat([super_logits, sub_logits.reshape(sub_logits.shape[0], -1)], dim=1)


class HierarchicalCriterion(nn.Module):
    """DeeperCluster's hierarchical loss (Caron et al., ICCV 2019, Sec. 4.2, Eq. 5):

        1/N sum_n [ l(V f(x_n), y_n) + sum_s y_ns l(W_s f(x_n), z_n^s) ]

    with ``l`` the negative log-softmax. ``y_n`` is one-hot over super-classes, so only the
    sub-class head of the sample's own super-class contributes (and only it gets gradient).

    Ignoring: samples whose super target is ``ignore_index`` contribute to neither term;
    samples whose sub target alone is ignored contribute to the super term only. Each term
    is averaged over its own non-ignored samples (as ``F.cross_entropy`` does), which is
    exactly Eq. 5 when nothing is ignored. A batch with nothing to learn returns a zero that
    is still connected to the graph, so DDP's gradient all-reduce does not hang.

    Args:
        num_super_classes: S; when given, input shapes are checked against it.
        num_sub_classes: k_sub; when given, input shapes are checked against it.
        ignore_index: target value that marks an ignored sample (``-1``: VISSL's default).
    """

    def __init__(
        self,
        num_super_classes: Optional[int] = None,
        num_sub_classes: Optional[int] = None,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_super_classes", num_super_classes),
            ("num_sub_classes", num_sub_classes),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_super_classes = num_super_classes
        self.num_sub_classes = num_sub_classes
        self.ignore_index = ignore_index

    def forward(
        self,
        super_logits: Tensor,
        sub_logits: Union[Tensor, Sequence[Tensor]],
        super_target: Tensor,
        sub_target: Tensor,
    ) -> Tensor:
        """
        Args:
            super_logits: (B, S) logits of the super-class head V.
            sub_logits: (B, S, k_sub) logits of all sub-class heads W_s stacked along dim 1,
                or a list of S tensors of shape (B, k_sub).
            super_target: (B,) long in [0, S), or ``ignore_index``.
            sub_target: (B,) long in [0, k_sub) (index within the super-class), or
                ``ignore_index``.
        Returns:
            the scalar loss.
        """
        if isinstance(sub_logits, (list, tuple)):
            sub_logits = torch.stack(list(sub_logits), dim=1)
        super_target, sub_target = (
            super_target.reshape(-1).long(),
            sub_target.reshape(-1).long(),
        )
        self._check_shapes(super_logits, sub_logits, super_target, sub_target)
        num_super, num_sub = sub_logits.shape[1], sub_logits.shape[2]

        valid_super = super_target != self.ignore_index
        valid_sub = valid_super & (sub_target != self.ignore_index)
        self._check_range(
            super_target[valid_super], num_super, "super_target", "num_super_classes"
        )
        self._check_range(
            sub_target[valid_sub], num_sub, "sub_target", "num_sub_classes"
        )

        if not bool(valid_super.any()):
            # nothing to learn: a zero still connected to the graph, so DDP's all-reduce
            # of the head's gradients does not wait forever on this rank
            return super_logits.sum() * 0.0 + sub_logits.sum() * 0.0
        loss = F.cross_entropy(super_logits[valid_super], super_target[valid_super])
        if bool(valid_sub.any()):
            rows = valid_sub.nonzero(as_tuple=True)[0]
            # advanced indexing picks only the own-super-class head per sample: the other
            # S-1 heads never enter the loss, so their logits get exactly zero gradient
            own_head = sub_logits[rows, super_target[rows]]
            loss = loss + F.cross_entropy(own_head, sub_target[rows])
        return loss

    def _check_shapes(
        self,
        super_logits: Tensor,
        sub_logits: Tensor,
        super_target: Tensor,
        sub_target: Tensor,
    ) -> None:
        if super_logits.dim() != 2 or sub_logits.dim() != 3:
            raise ValueError(
                f"expected super_logits (B, S) and sub_logits (B, S, k_sub); got "
                f"{tuple(super_logits.shape)} and {tuple(sub_logits.shape)}"
            )
        batch, num_super = super_logits.shape
        if sub_logits.shape[:2] != (batch, num_super):
            raise ValueError(
                f"sub_logits {tuple(sub_logits.shape)} must be (B, S, k_sub) with B, S from "
                f"super_logits {tuple(super_logits.shape)}"
            )
        if super_target.shape[0] != batch or sub_target.shape[0] != batch:
            raise ValueError(
                f"targets have {super_target.shape[0]} and {sub_target.shape[0]} entries "
                f"for a batch of {batch}"
            )
        if self.num_super_classes is not None and num_super != self.num_super_classes:
            raise ValueError(
                f"got {num_super} super-class logits but num_super_classes={self.num_super_classes}"
            )
        if (
            self.num_sub_classes is not None
            and sub_logits.shape[2] != self.num_sub_classes
        ):
            raise ValueError(
                f"got {sub_logits.shape[2]} sub-class logits but "
                f"num_sub_classes={self.num_sub_classes}"
            )

    @staticmethod
    def _check_range(target: Tensor, size: int, what: str, key: str) -> None:
        # out-of-range ids come from labels built for another S / k_sub: say which key to fix
        if target.numel() and bool(((target < 0) | (target >= size)).any()):
            bad: List[int] = (
                target[(target < 0) | (target >= size)].unique()[:5].tolist()
            )
            raise ValueError(
                f"{what} has values {bad} outside [0, {size}); the labels were built for a "
                f"different {key} than the model's {size}, or use -1 to ignore a sample"
            )
