"""``vcf_resnet``: a ResNet-18/34 trunk for small images (28-64 px).

VISSL's ``resnet`` trunk starts at depth 50 with a 7x7/2 stem and a max-pool, made for
224 px ImageNet crops: at 32 px res5 would be 1x1. This trunk keeps VISSL's feature names
(conv1, res1, res2..res5, res5avg, flatten) so that VISSL's linear-evaluation settings
(``LINEAR_EVAL_FEAT_POOL_OPS_MAP``, ``eval_mlp`` heads) work unchanged, with a CIFAR-style
3x3/1 stem and no max-pool (He et al. 2016, Sec. 4.2). Blocks come from torchvision.

Optional Sobel input (DeepCluster thesis Sec. 4.1, DeeperCluster Sec. 5): grayscale then
the two fixed Sobel filters, so the network cannot cluster on colour.

Config params (MODEL.TRUNK.VCF_RESNET):
    DEPTH: 18 or 34
    WIDTH: channels of conv1 and res2 (res3..res5: x2, x4, x8)
    SOBEL: prepend the fixed grayscale + Sobel layer (the stem then takes 2 channels)
"""

from typing import List, Optional

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet
from vissl.models.model_helpers import Flatten, get_trunk_forward_outputs
from vissl.models.trunks import register_model_trunk


_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class SobelFilter(nn.Module):
    """Fixed RGB -> grayscale -> (Sobel x, Sobel y); no trainable parameters."""

    def __init__(self) -> None:
        super().__init__()
        gray = torch.full((1, 3, 1, 1), 1.0 / 3.0)
        sobel = torch.tensor(
            [
                [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
                [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
            ],
            dtype=torch.float32,
        ).unsqueeze(1)
        self.register_buffer("gray", gray)
        self.register_buffer("sobel", sobel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv2d(x, self.gray)
        return nn.functional.conv2d(x, self.sobel, padding=1)


@register_model_trunk("vcf_resnet")
class VcfResNet(nn.Module):
    def __init__(self, model_config, model_name: str) -> None:
        super().__init__()
        params = model_config.TRUNK.VCF_RESNET
        depth, width = int(params.DEPTH), int(params.WIDTH)
        if depth not in _LAYERS:
            raise ValueError(
                f"MODEL.TRUNK.VCF_RESNET.DEPTH={depth} is not supported: use one of "
                f"{sorted(_LAYERS)} (or VISSL's 'resnet' trunk for 50/101/152/200)"
            )
        self.sobel = bool(params.get("SOBEL", False))
        layers = _LAYERS[depth]
        # torchvision's ResNet provides _make_layer and the weight init; we take the
        # pieces we need and build a small-image stem in front of them.
        tv = ResNet(BasicBlock, list(layers), width_per_group=64)
        tv.inplanes = width
        in_channels = 2 if self.sobel else 3
        stem: List[nn.Module] = [SobelFilter()] if self.sobel else []
        stem.append(nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False))
        blocks = [
            ("conv1", nn.Sequential(*stem)),
            ("bn1", nn.BatchNorm2d(width)),
            ("conv1_relu", nn.ReLU(inplace=True)),
            ("maxpool", nn.Identity()),
            ("layer1", tv._make_layer(BasicBlock, width, layers[0])),
            ("layer2", tv._make_layer(BasicBlock, width * 2, layers[1], stride=2)),
            ("layer3", tv._make_layer(BasicBlock, width * 4, layers[2], stride=2)),
            ("layer4", tv._make_layer(BasicBlock, width * 8, layers[3], stride=2)),
            ("avgpool", nn.AdaptiveAvgPool2d((1, 1))),
            ("flatten", Flatten(1)),
        ]
        self._feature_blocks = nn.ModuleDict(blocks)
        self.feat_eval_mapping = {
            "conv1": "conv1_relu",
            "res1": "maxpool",
            "res2": "layer1",
            "res3": "layer2",
            "res4": "layer3",
            "res5": "layer4",
            "res5avg": "avgpool",
            "flatten": "flatten",
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim = width * 8

    def forward(
        self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None
    ) -> List[torch.Tensor]:
        # VISSL's helper maps names before checking for None: without keys the last
        # block (flatten) is returned and no mapping is needed
        return get_trunk_forward_outputs(
            feat=x,
            out_feat_keys=out_feat_keys or None,
            feature_blocks=self._feature_blocks,
            feature_mapping=self.feat_eval_mapping if out_feat_keys else None,
        )
