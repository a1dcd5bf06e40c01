"""``vcf_hierarchical_head``: the linear classifiers of DeeperCluster's hierarchical loss
(Caron et al., ICCV 2019, Sec. 4.2, Eq. 5): a super-class head V and one sub-class head
W_s per super-class.

Output contract (shared with ``vcf_hierarchical_loss``): ``forward`` returns ONE tensor
``(B, S + S * k_sub)`` = ``[super_logits (B, S) | sub_logits (B, S, k_sub) flattened]``,
so it passes VISSL's heads pipeline like any single-output head; ``split`` (or
``hierarchical_criterion.split_output``) gives the two parts back. Column ``S + t`` is the
sub-class logit of the flat target ``t = super * k_sub + sub``.
"""

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head

from vissl_clusterfit.losses.hierarchical_criterion import join_output, split_output


@register_model_head("vcf_hierarchical_head")
class VcfHierarchicalHead(nn.Module):
    """Super-class classifier V (in_dim -> S) and S sub-class classifiers W_s
    (in_dim -> k_sub) of DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2, Eq. 5).

    The S sub-class heads are one ``Linear(in_dim, S * k_sub)``: a single matmul instead of
    S small ones, and row block ``s`` of its weight is exactly W_s. Every sub-head is
    evaluated for every sample (the loss then keeps only the sample's own one); at S * k_sub
    in the tens of thousands this is the cost of one large classifier, as in DeepCluster.

    Used as ``MODEL.HEAD.PARAMS: [["vcf_hierarchical_head", {"in_dim": ...,
    "num_super_classes": ..., "num_sub_classes": ...}]]``.

    Config params:
        in_dim: feature dimension of the trunk output feeding the head.
        num_super_classes: S = 4 * m (m first-level k-means groups x 4 rotations).
        num_sub_classes: k_sub, k-means clusters within each group.
        use_bias: whether the linear layers have a bias (default true).
    """

    def __init__(
        self,
        model_config: AttrDict,
        in_dim: int,
        num_super_classes: int,
        num_sub_classes: int,
        use_bias: bool = True,
    ) -> None:
        """
        Args:
            model_config: ``config.MODEL``; ``HEAD.PARAMS_MULTIPLIER`` scales the initial
                weights as VISSL's own ``mlp`` head does.
            in_dim, num_super_classes, num_sub_classes, use_bias: see Config params.
        """
        super().__init__()
        for key, value in (
            ("in_dim", in_dim),
            ("num_super_classes", num_super_classes),
            ("num_sub_classes", num_sub_classes),
        ):
            if int(value) < 1:
                raise ValueError(
                    f"vcf_hierarchical_head: {key}={value!r} must be a positive integer; set it in "
                    "MODEL.HEAD.PARAMS (and keep LOSS.vcf_hierarchical_loss in sync)"
                )
        self.in_dim = int(in_dim)
        self.num_super_classes = int(num_super_classes)
        self.num_sub_classes = int(num_sub_classes)
        head_cfg = model_config.get("HEAD", None) if model_config is not None else None
        self.params_multiplier = (
            float(head_cfg.get("PARAMS_MULTIPLIER", 1.0)) if head_cfg else 1.0
        )
        self.super_head = nn.Linear(self.in_dim, self.num_super_classes, bias=use_bias)
        self.sub_heads = nn.Linear(
            self.in_dim, self.num_super_classes * self.num_sub_classes, bias=use_bias
        )
        self.reset_parameters()

    @property
    def output_dim(self) -> int:
        """Width of the concatenated output: S + S * k_sub."""
        return self.num_super_classes * (1 + self.num_sub_classes)

    @torch.no_grad()
    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Re-draw V and every W_s, as after a re-clustering: cluster ids are arbitrary
        per clustering, so the old classifiers would start from wrong answers (DeepCluster
        thesis, Sec. 3.2: alternate clustering and training; DeeperCluster Sec. 4.2:
        assignments recomputed every T epochs).

        Uses ``nn.Linear``'s default law, U(-1/sqrt(in_dim), 1/sqrt(in_dim)), times
        ``HEAD.PARAMS_MULTIPLIER``. Under DDP pass the same seeded ``generator`` on every
        rank (or broadcast afterwards) so the replicas stay identical; the optimizer's
        momentum for these parameters is the caller's to clear.

        Args:
            generator: optional RNG for reproducible, rank-consistent draws.
        """
        bound = self.params_multiplier / self.in_dim**0.5
        for layer in (self.super_head, self.sub_heads):
            layer.weight.uniform_(-bound, bound, generator=generator)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, batch: Union[Tensor, List[Tensor]]) -> Tensor:
        """
        Args:
            batch: (B, in_dim) features, (B, in_dim, 1, 1), or a list holding one of those.
        Returns:
            (B, S + S * k_sub): ``[super_logits | sub_logits.flatten(1)]`` (see module doc).
        """
        if isinstance(batch, (list, tuple)):
            if len(batch) != 1:
                raise ValueError(
                    f"vcf_hierarchical_head takes one feature tensor, got a list of {len(batch)}"
                )
            batch = batch[0]
        if batch.dim() > 2:
            if any(d != 1 for d in batch.shape[2:]):
                raise ValueError(
                    f"vcf_hierarchical_head expects (B, C) or (B, C, 1, 1) features, "
                    f"got {tuple(batch.shape)}; "
                    "pool the trunk output first (e.g. a flatten / avgpool feature)"
                )
            batch = batch.reshape(batch.shape[0], batch.shape[1])
        # one cat of two matmuls: the sub part is already laid out as (S, k_sub) blocks
        return torch.cat([self.super_head(batch), self.sub_heads(batch)], dim=1)

    def split(self, output: Tensor) -> Tuple[Tensor, Tensor]:
        """``(super_logits (B, S), sub_logits (B, S, k_sub))`` from :meth:`forward`'s output."""
        return split_output(output, self.num_super_classes, self.num_sub_classes)

    @staticmethod
    def join(super_logits: Tensor, sub_logits: Tensor) -> Tensor:
        """Inverse of :meth:`split`."""
        return join_output(super_logits, sub_logits)
