"""HRNet backbone (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019)
in the form DEKR uses it (Geng et al., CVPR 2021): all branches are upsampled bilinearly to the highest resolution
(stride 4) and concatenated.

The structure comes from a dict with the fields of the official experiment files' ``MODEL.SPEC.STAGES``::

    NUM_STAGES: 3                          # stages after the stem (HRNet's stages 2, 3, 4)
    NUM_MODULES: [1, 4, 3]                 # high-resolution modules per stage
    NUM_BRANCHES: [2, 3, 4]
    BLOCK: [BASIC, BASIC, BASIC]           # BASIC or BOTTLENECK
    NUM_BLOCKS: [[4, 4], [4, 4, 4], [4, 4, 4, 4]]
    NUM_CHANNELS: [[32, 64], [32, 64, 128], [32, 64, 128, 256]]   # W32; W48: 48, 96, 192, 384
    FUSE_METHOD: [SUM, SUM, SUM]

Module names (``conv1``, ``layer1``, ``transition1``, ``stage2``, ``...branches``, ``...fuse_layers``) equal the
official ones, so official and ImageNet-pretrained HRNet weights load by name.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from bupose.errors import ConfigError
from bupose.models.layers import BLOCKS, Bottleneck, conv_bn_relu, make_layer

_STAGE_FIELDS = ("NUM_STAGES", "NUM_MODULES", "NUM_BRANCHES", "BLOCK", "NUM_BLOCKS", "NUM_CHANNELS", "FUSE_METHOD")


def check_stages(stages: Mapping) -> None:
    """Raise ConfigError naming the field when ``stages`` (``MODEL.SPEC.STAGES``) is not a valid HRNet layout."""
    missing = [k for k in _STAGE_FIELDS if k not in stages]
    unknown = [k for k in stages if k not in _STAGE_FIELDS]
    if missing or unknown:
        raise ConfigError(f"MODEL.SPEC.STAGES: missing fields {missing}, unknown fields {unknown}")
    n = stages["NUM_STAGES"]
    for key in _STAGE_FIELDS[1:]:
        if len(stages[key]) != n:
            raise ConfigError(f"MODEL.SPEC.STAGES.{key} has {len(stages[key])} entries, NUM_STAGES is {n}")
    for i in range(n):
        nb = stages["NUM_BRANCHES"][i]
        for key in ("NUM_BLOCKS", "NUM_CHANNELS"):
            if len(stages[key][i]) != nb:
                raise ConfigError(f"MODEL.SPEC.STAGES.{key}[{i}] has {len(stages[key][i])} entries, "
                                  f"NUM_BRANCHES[{i}] is {nb}")
        if i and nb < stages["NUM_BRANCHES"][i - 1]:
            raise ConfigError(f"MODEL.SPEC.STAGES.NUM_BRANCHES must not decrease, got {stages['NUM_BRANCHES']}")
        if stages["BLOCK"][i] not in ("BASIC", "BOTTLENECK"):
            raise ConfigError(f"MODEL.SPEC.STAGES.BLOCK[{i}] must be BASIC or BOTTLENECK, got {stages['BLOCK'][i]!r}")
        if stages["FUSE_METHOD"][i] != "SUM":
            raise ConfigError(f"MODEL.SPEC.STAGES.FUSE_METHOD[{i}] must be SUM, got {stages['FUSE_METHOD'][i]!r}")


class HighResolutionModule(nn.Module):
    """Parallel branches plus exchange across resolutions: a list of ``(B, C_i, H/2^i, W/2^i)`` in and out.

    ``fuse_layers[i][j]`` brings branch ``j`` to branch ``i``: 1x1 conv-BN then nearest upsampling (``j > i``),
    identity (``j == i``), or ``i - j`` stride-2 3x3 conv-BN(-ReLU) steps (``j < i``); the sums go through ReLU.
    """

    def __init__(self, block: type, num_blocks: list[int], in_channels: list[int], channels: list[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            make_layer(block, cin, c, n) for cin, c, n in zip(in_channels, channels, num_blocks))
        self.out_channels = [c * block.expansion for c in channels]
        self.fuse_layers = self._fuse_layers(self.out_channels) if len(channels) > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse_layers(ch: list[int]) -> nn.ModuleList:
        rows = []
        for i in range(len(ch)):
            row = []
            for j in range(len(ch)):
                if j > i:
                    row.append(conv_bn_relu(ch[j], ch[i], 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [conv_bn_relu(ch[j], ch[j], 3, 2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, conv_bn_relu(ch[j], ch[i], 3, 2, relu=False)))
            rows.append(nn.ModuleList(row))
        return nn.ModuleList(rows)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = None
            for j, (layer, x) in enumerate(zip(row, xs)):
                z = layer(x)
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="nearest")
                y = z if y is None else y + z
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet: ``(B, 3, H, W) -> (B, sum(NUM_CHANNELS[-1]), ceil(H/4), ceil(W/4))`` (all branches, concatenated).

    Args:
        stages: the ``MODEL.SPEC.STAGES`` dict (see the module docstring).
        in_channels: input image channels.
        stem_blocks: Bottleneck blocks of ``layer1`` (4 in HRNet; fewer for tiny test models).
    """

    def __init__(self, *, stages: Mapping, in_channels: int = 3, stem_blocks: int = 4):
        super().__init__()
        check_stages(stages)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, 64, 64, stem_blocks)
        self.num_stages = stages["NUM_STAGES"]
        prev = [64 * Bottleneck.expansion]
        for s in range(self.num_stages):
            channels = list(stages["NUM_CHANNELS"][s])
            block = BLOCKS[stages["BLOCK"][s]]
            setattr(self, f"transition{s + 1}", self._transition(prev, channels))
            modules = []
            for _ in range(stages["NUM_MODULES"][s]):
                modules.append(HighResolutionModule(block, list(stages["NUM_BLOCKS"][s]), channels, channels))
                channels = modules[-1].out_channels
            setattr(self, f"stage{s + 2}", nn.Sequential(*modules))
            prev = channels
        self.out_channels = sum(prev)

    @staticmethod
    def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
        """Per new branch: identity, a 3x3 conv-BN-ReLU (channel change), or stride-2 steps from the last branch."""
        layers = []
        for i, c in enumerate(cur):
            if i < len(prev):
                layers.append(nn.Identity() if c == prev[i] else conv_bn_relu(prev[i], c, 3))
            else:
                steps = [conv_bn_relu(prev[-1], c if k == i - len(prev) else prev[-1], 3, 2)
                         for k in range(i + 1 - len(prev))]
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last stage's branches, ``[(B, C_i, H/2^(i+2), W/2^(i+2))]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s + 1}")
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{s + 2}")(xs)
        return ys

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All branches upsampled to stride 4 and concatenated: ``(B, out_channels, ceil(H/4), ceil(W/4))``."""
        ys = self.forward_branches(x)
        size = ys[0].shape[-2:]
        return torch.cat([ys[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                                    for y in ys[1:]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
