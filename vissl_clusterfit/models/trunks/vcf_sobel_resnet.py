"""``vcf_sobel_resnet``: VISSL's ``resnet`` trunk (ResNet-50/101/...) behind a fixed
Sobel layer, for DeepCluster and DeeperCluster at ImageNet scale.

DeepCluster (Caron 2018 thesis, Sec. 4.1) and DeeperCluster (Caron et al. ICCV 2019,
Sec. 5) feed the network the two Sobel gradients of the grayscale image instead of RGB,
so that k-means cannot group images by colour. VISSL's ``resnet`` trunk has no such
input; this one is VISSL's trunk (same blocks, feature names conv1, res1..res5,
res5avg, flatten, so VISSL's linear and k-NN benchmark settings apply unchanged) with
the fixed ``SobelFilter`` of ``vcf_resnet`` as its first feature block and a 2-channel
conv1. Its state dict is VISSL's plus the Sobel buffers, so a checkpoint of this trunk
loads only into this trunk: pre-train the RotNet that DeeperCluster starts from with
``config.MODEL.TRUNK.NAME=vcf_sobel_resnet`` too, and probe with the same override.

Config params: MODEL.TRUNK.RESNETS (VISSL's: DEPTH, WIDTH_MULTIPLIER, ...);
MODEL.INPUT_TYPE must be rgb.
"""

from collections import OrderedDict

import torch.nn as nn
from vissl.models.trunks import register_model_trunk
from vissl.models.trunks.resnext import ResNeXt

from vissl_clusterfit.models.trunks.vcf_resnet import SobelFilter


@register_model_trunk("vcf_sobel_resnet")
class VcfSobelResNet(ResNeXt):
    def __init__(self, model_config, model_name: str) -> None:
        if model_config.INPUT_TYPE != "rgb":
            raise ValueError(
                f"MODEL.TRUNK.NAME=vcf_sobel_resnet computes its own input from RGB: "
                f"set MODEL.INPUT_TYPE=rgb (got {model_config.INPUT_TYPE})"
            )
        super().__init__(model_config, model_name)
        old = self._feature_blocks["conv1"]
        conv1 = nn.Conv2d(
            2,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
        blocks = OrderedDict([("sobel", SobelFilter()), ("conv1", conv1)])
        blocks.update((k, v) for k, v in self._feature_blocks.items() if k != "conv1")
        self._feature_blocks = nn.ModuleDict(blocks)
