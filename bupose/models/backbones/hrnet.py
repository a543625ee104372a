"""HRNet backbone (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019),
shared by the bottom-up and the top-down methods:

* as DEKR uses it (Geng et al., CVPR 2021): all branches are upsampled bilinearly to the highest resolution
  (stride 4) and concatenated;
* as the official top-down HRNet uses it (``multi_scale_output=False``): the last module of the last stage fuses
  into the highest-resolution branch only (its ``fuse_layers`` hold the first row only, as the official weights),
  and that branch is the output.

The structure comes from a dict with the fields of the official experiment files' ``MODEL.SPEC.STAGES``::

    NUM_STAGES: 3                          # stages after the stem (HRNet's stages 2, 3, 4)
    NUM_MODULES: [1, 4, 3]                 # high-resolution modules per stage
    NUM_BRANCHES: [2, 3, 4]
    BLOCK: [BASIC, BASIC, BASIC]           # BASIC or BOTTLENECK
    NUM_BLOCKS: [[4, 4], [4, 4, 4], [4, 4, 4, 4]]
    NUM_CHANNELS: [[32, 64], [32, 64, 128], [32, 64, 128, 256]]   # W32; W48: 48, 96, 192, 384
    FUSE_METHOD: [SUM, SUM, SUM]

The official top-down experiment files describe the stages as ``MODEL.EXTRA.STAGE2`` .. ``STAGE4`` sub-dicts (each
with NUM_MODULES, NUM_BRANCHES, BLOCK, NUM_BLOCKS, NUM_CHANNELS, FUSE_METHOD); :func:`stages_from_extra` turns them
into the layout above.

``NUM_CHANNELS`` are the blocks' planes: with ``BOTTLENECK`` a branch carries 4x as many channels (the transitions
and fuse layers are built for those), as in the official code.

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
#: the fields of one ``STAGEn`` sub-dict of the official top-down ``MODEL.EXTRA``
STAGE_FIELDS = _STAGE_FIELDS[1:]
#: the stage sub-dicts of the official top-down ``MODEL.EXTRA``, in order
EXTRA_STAGES = ("STAGE2", "STAGE3", "STAGE4")


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


def stages_from_extra(extra: Mapping, prefix: str = "MODEL.SPEC") -> dict:
    """The ``STAGES`` layout (see the module docstring) of the official top-down ``MODEL.EXTRA``'s ``STAGE2``,
    ``STAGE3`` and ``STAGE4`` sub-dicts (other fields of ``extra`` are not looked at). Raises ConfigError naming the
    field (``{prefix}.STAGE3.NUM_CHANNELS ...``) when a stage is missing or malformed."""
    out = {"NUM_STAGES": len(EXTRA_STAGES), **{k: [] for k in STAGE_FIELDS}}
    prev_branches = 1
    for name in EXTRA_STAGES:
        where = f"{prefix}.{name}"
        stage = extra.get(name)
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{where} is missing (a dict with the fields {list(STAGE_FIELDS)})")
        missing = [k for k in STAGE_FIELDS if k not in stage]
        unknown = [k for k in stage if k not in STAGE_FIELDS]
        if missing or unknown:
            raise ConfigError(f"{where}: missing fields {missing}, unknown fields {unknown}")
        for key in ("NUM_MODULES", "NUM_BRANCHES"):
            if not isinstance(stage[key], int) or isinstance(stage[key], bool) or stage[key] < 1:
                raise ConfigError(f"{where}.{key} must be a positive integer, got {stage[key]!r}")
        nb = stage["NUM_BRANCHES"]
        if nb < prev_branches:
            raise ConfigError(f"{where}.NUM_BRANCHES is {nb}, fewer than the previous stage's {prev_branches}")
        for key in ("NUM_BLOCKS", "NUM_CHANNELS"):
            v = stage[key]
            if (not isinstance(v, (list, tuple)) or len(v) != nb
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
                raise ConfigError(f"{where}.{key} must be {nb} positive integers (NUM_BRANCHES), got {v!r}")
        if stage["BLOCK"] not in ("BASIC", "BOTTLENECK"):
            raise ConfigError(f"{where}.BLOCK must be BASIC or BOTTLENECK, got {stage['BLOCK']!r}")
        if stage["FUSE_METHOD"] != "SUM":
            raise ConfigError(f"{where}.FUSE_METHOD must be SUM, got {stage['FUSE_METHOD']!r}")
        for key in STAGE_FIELDS:
            v = stage[key]
            out[key].append([int(x) for x in v] if key in ("NUM_BLOCKS", "NUM_CHANNELS") else v)
        prev_branches = nb
    return out


class HighResolutionModule(nn.Module):
    """Parallel branches plus exchange across resolutions: a list of ``(B, C_i, H/2^i, W/2^i)`` in and out.

    ``fuse_layers[i][j]`` brings branch ``j`` to branch ``i``: 1x1 conv-BN then nearest upsampling (``j > i``),
    identity (``j == i``), or ``i - j`` stride-2 3x3 conv-BN(-ReLU) steps (``j < i``); the sums go through ReLU.

    ``channels`` are the blocks' planes (a branch outputs ``channels[i] * block.expansion``). With
    ``multi_scale_output=False`` only the first row of ``fuse_layers`` exists and the output is one tensor list
    ``[(B, C_0, H, W)]`` (the official top-down HRNet's last module).
    """

    def __init__(self, block: type, num_blocks: list[int], in_channels: list[int], channels: list[int],
                 multi_scale_output: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(
            make_layer(block, cin, c, n) for cin, c, n in zip(in_channels, channels, num_blocks))
        self.out_channels = [c * block.expansion for c in channels]
        self.multi_scale_output = multi_scale_output
        rows = len(channels) if multi_scale_output else 1
        self.fuse_layers = self._fuse_layers(self.out_channels, rows) if len(channels) > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse_layers(ch: list[int], rows_out: int) -> nn.ModuleList:
        rows = []
        for i in range(rows_out):
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
            return xs if self.multi_scale_output else xs[:1]
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
    """HRNet: ``(B, 3, H, W) -> (B, out_channels, ceil(H/4), ceil(W/4))``: all branches of the last stage
    concatenated (``out_channels = sum(NUM_CHANNELS[-1]) * expansion``), or with ``multi_scale_output=False`` the
    highest-resolution branch only (``out_channels = NUM_CHANNELS[-1][0] * expansion``).

    Args:
        stages: the ``MODEL.SPEC.STAGES`` dict (see the module docstring; :func:`stages_from_extra` makes it from the
            official top-down ``MODEL.EXTRA``).
        in_channels: input image channels.
        stem_blocks: Bottleneck blocks of ``layer1`` (4 in HRNet; fewer for tiny test models).
        multi_scale_output: ``False`` builds the last module of the last stage with one output branch (the
            official top-down HRNet: its ``fuse_layers`` have one row).
    """

    def __init__(self, *, stages: Mapping, in_channels: int = 3, stem_blocks: int = 4,
                 multi_scale_output: bool = True):
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
            planes = list(stages["NUM_CHANNELS"][s])
            block = BLOCKS[stages["BLOCK"][s]]
            channels = [c * block.expansion for c in planes]
            setattr(self, f"transition{s + 1}", self._transition(prev, channels))
            modules, n = [], stages["NUM_MODULES"][s]
            for m in range(n):
                last = s == self.num_stages - 1 and m == n - 1
                modules.append(HighResolutionModule(block, list(stages["NUM_BLOCKS"][s]), channels, planes,
                                                    multi_scale_output=multi_scale_output or not last))
                channels = modules[-1].out_channels
            setattr(self, f"stage{s + 2}", nn.Sequential(*modules))
            prev = channels
        self.multi_scale_output = multi_scale_output
        self.out_channels = sum(prev if multi_scale_output else prev[:1])

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
        """The last stage's branches, ``[(B, C_i, H/2^(i+2), W/2^(i+2))]`` (the first only with
        ``multi_scale_output=False``)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s + 1}")
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{s + 2}")(xs)
        return ys

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All output branches upsampled to stride 4 and concatenated: ``(B, out_channels, ceil(H/4), ceil(W/4))``
        (the stride-4 branch itself with ``multi_scale_output=False``)."""
        ys = self.forward_branches(x)
        if len(ys) == 1:
            return ys[0]
        size = ys[0].shape[-2:]
        return torch.cat([ys[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                                    for y in ys[1:]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
