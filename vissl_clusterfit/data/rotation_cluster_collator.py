"""``vcf_rotation_cluster_collator``: DeeperCluster's rotation x cluster targets
(Caron et al. ICCV 2019, Sec. 4.1).

The dataset label of an image is its cluster code ``group * num_sub + sub`` (installed
by the DeepCluster hook in DeeperCluster mode). The collator rotates every image by a
random multiple of 90 degrees r and emits the flat target of the hierarchical loss:
``(group * 4 + r) * num_sub + sub`` (super-class = group x rotation; see
losses/hierarchical_criterion.py). Rotating after ToTensor/Normalize is exact for
square images (rot90 permutes pixels).

Config: ``COLLATE_FUNCTION: vcf_rotation_cluster_collator``,
``COLLATE_FUNCTION_PARAMS: {num_sub_classes: k}``.
"""

from typing import Any, Dict, List

import torch
from vissl.data.collators import register_collator


NUM_ROTATIONS = 4


def rotation_cluster_targets(
    codes: torch.Tensor, rotations: torch.Tensor, num_sub: int
) -> torch.Tensor:
    group, sub = codes // num_sub, codes % num_sub
    target = (group * NUM_ROTATIONS + rotations) * num_sub + sub
    return torch.where(codes < 0, torch.full_like(codes, -1), target)


@register_collator("vcf_rotation_cluster_collator")
def rotation_cluster_collator(
    batch: List[Dict[str, Any]], num_sub_classes: int
) -> Dict[str, Any]:
    images = torch.stack([sample["data"][0] for sample in batch])
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"rotation targets need square images, got {tuple(images.shape[-2:])}"
        )
    codes = torch.tensor(
        [int(sample["label"][0]) for sample in batch], dtype=torch.long
    )
    rotations = torch.randint(NUM_ROTATIONS, (len(batch),))
    rotated = torch.stack(
        [torch.rot90(img, int(r), dims=(1, 2)) for img, r in zip(images, rotations)]
    )
    return {
        "data": [rotated],
        "label": [rotation_cluster_targets(codes, rotations, int(num_sub_classes))],
        "data_valid": [torch.tensor([sample["data_valid"][0] for sample in batch])],
        "data_idx": [torch.tensor([sample["data_idx"][0] for sample in batch])],
    }
