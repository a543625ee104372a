"""ResNet backbone (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), as the SimpleBaseline
pose networks use it (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018).

The stride of a downsampling Bottleneck is on its 3x3 convolution (torchvision's "ResNet v1.5", as the official
pose_resnet). Module names equal torchvision's and the official pose_resnet's (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, blocks ``conv1``/``bn1``/.../``downsample.0``/``downsample.1``), so torchvision's ImageNet weights and
official pose_resnet checkpoints load by name; the classifier (``fc``) is not part of the backbone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bupose.models.layers import BasicBlock, Bottleneck, make_layer

#: depth -> (block, blocks per stage), the official table
RESNET_LAYERS: dict[int, tuple[type, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ResNet without the classifier: ``(B, in_channels, H, W) -> (B, out_channels, H/32, W/32)`` (``layer4``'s
    output; ``out_channels = 8 * base_channels * expansion``: 512 for ResNet-18/34, 2048 for 50/101/152).

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input image channels.
        stem_channels: channels of the 7x7 stride-2 stem convolution (64).
        base_channels: planes of ``layer1`` (64); ``layer{i}`` has ``base_channels * 2^(i-1)`` (smaller for tiny
            test or from-scratch models).
    """

    def __init__(self, *, depth: int = 50, in_channels: int = 3, stem_channels: int = 64, base_channels: int = 64):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth!r}")
        block, blocks = RESNET_LAYERS[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        for i, n in enumerate(blocks):
            planes = base_channels * 2 ** i
            setattr(self, f"layer{i + 1}", make_layer(block, inplanes, planes, n, stride=1 if i == 0 else 2))
            inplanes = planes * block.expansion
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
