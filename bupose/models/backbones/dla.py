"""DLA-34 backbone (Yu et al., "Deep Layer Aggregation", CVPR 2018) with the deformable up-sampling path of CenterNet
(Zhou et al., "Objects as Points", arXiv 1904.07850), as the CenterNet-based AdaptivePose (Xiao et al., AAAI 2022)
builds it for its DLA-34 model: ``(B, 3, H, W) -> (B, 64, H/4, W/4)``; ``H`` and ``W`` must be multiples of 32.

* ``base`` (:class:`DLA`): ``base_layer`` (7x7 conv-BN-ReLU, stride 1), ``level0`` and ``level1`` (3x3 conv-BN-ReLU
  stacks, the second one stride 2), ``level2`` .. ``level5`` (:class:`Tree`: hierarchical aggregation of basic
  residual blocks, each level halving the resolution). With ``channels = (16, 32, 64, 128, 256, 512)``, level ``i``
  gives ``(B, channels[i], H / 2^i, W / 2^i)``;
* ``dla_up`` (:class:`DLAUp`): iterative deep aggregation from the deepest level up to level 2: three
  :class:`IDAUp` stages (``ida_0`` .. ``ida_2``) of a projection (modulated 3x3 deformable conv-BN-ReLU), a learnt
  depthwise transposed convolution initialised bilinear (x2) and a node (deformable conv-BN-ReLU) on the sum;
  it returns ``[(B, 64, H/4, W/4), (B, 128, H/8, W/8), (B, 256, H/16, W/16), (B, 512, H/32, W/32)]``;
* ``ida_up`` (:class:`IDAUp`): the first three of those brought to stride 4 (x2 and x4 up-sampling) and aggregated:
  the output, ``(B, 64, H/4, W/4)``.

The deformable convolutions are DCNv2 (:class:`~bupose.models.layers.ModulatedDeformConv2d`, computed by
``grid_sample`` gathering or :func:`torchvision.ops.deform_conv2d`; no compiled extension). Module names equal
those of the official model (``base.*``, ``dla_up.ida_{i}.{proj,up,node}_{j}.*``, ``ida_up.*``), so official
checkpoints and the ImageNet DLA-34 weights (under ``base.``) load by name. Initialisation: PyTorch's defaults
(the official model loads ImageNet weights into ``base``), DCN as :class:`~bupose.models.layers.ModulatedDeformConv2d`,
the transposed convolutions bilinear.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from bupose.errors import ConfigError
from bupose.models.layers import ModulatedDeformConv2d

#: DLA-34: convs of level0/level1, then tree depths of level2..level5; channels of base_layer/level0 .. level5
DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
#: the up-sampling path starts at level 2 (stride 4) and aggregates levels 2..4 into the output
FIRST_LEVEL, LAST_LEVEL = 2, 5


def check_dla_layout(levels: Sequence[int], channels: Sequence[int]) -> None:
    """Raise ConfigError when ``levels`` / ``channels`` are not six positive integers each."""
    for name, values in (("LEVELS", levels), ("CHANNELS", channels)):
        if (not isinstance(values, Sequence) or len(values) != 6
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
            raise ConfigError(f"DLA {name} must be six positive integers (DLA-34: "
                              f"{list(DLA34_LEVELS if name == 'LEVELS' else DLA34_CHANNELS)}), got {values!r}")


class DLABlock(nn.Module):
    """DLA's basic residual block: two 3x3 conv-BN, ``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``. The residual is
    given by the caller (the tree), or is the input when the shapes agree. Keys ``conv1``, ``bn1``, ``conv2``,
    ``bn2``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if residual is None else residual))


class Root(nn.Module):
    """An aggregation node: its inputs concatenated, 1x1 conv-BN-ReLU. Keys ``conv``, ``bn``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(xs, dim=1))))


class Tree(nn.Module):
    """Hierarchical deep aggregation of depth ``levels``: ``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``.

    Depth 1: two :class:`DLABlock` (``tree1`` with the stride, ``tree2``) and a :class:`Root` over both outputs
    plus the ``extra`` features handed down. Depth ``n``: two trees of depth ``n - 1``; the second one's root also
    aggregates the first one's output (and, for a ``level_root`` tree, the down-sampled input). The residual of
    ``tree1`` is the input max-pooled by the stride and, when the channels change, projected (1x1 conv-BN,
    ``project``). Keys as the official ``Tree``.

    Args:
        levels: depth of the tree (>= 1).
        in_channels / out_channels: channels in and out.
        stride: down-sampling of the tree (max-pool of the residual, stride of the first block).
        level_root: aggregate the down-sampled input in the last root (DLA's levels 3 to 5).
        root_channels: input channels of the last root (0: worked out from the structure).
    """

    def __init__(self, *, levels: int, in_channels: int, out_channels: int, stride: int = 1,
                 level_root: bool = False, root_channels: int = 0):
        super().__init__()
        if root_channels == 0:
            root_channels = 2 * out_channels
        if level_root:
            root_channels += in_channels
        self.levels, self.level_root = levels, level_root
        if levels == 1:
            self.tree1 = DLABlock(in_channels, out_channels, stride)
            self.tree2 = DLABlock(out_channels, out_channels, 1)
            self.root = Root(root_channels, out_channels)
        else:
            self.tree1 = Tree(levels=levels - 1, in_channels=in_channels, out_channels=out_channels, stride=stride)
            self.tree2 = Tree(levels=levels - 1, in_channels=out_channels, out_channels=out_channels,
                              root_channels=root_channels + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels)) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, extra: list[torch.Tensor] | None = None) -> torch.Tensor:
        extra = [] if extra is None else extra
        bottom = x if self.downsample is None else self.downsample(x)
        if self.level_root:
            extra = extra + [bottom]
        if self.levels == 1:
            residual = bottom if self.project is None else self.project(bottom)
            x1 = self.tree1(x, residual)
            return self.root(self.tree2(x1), x1, *extra)
        # a deeper tree1 makes its own residual (the official model computes this tree's projection and drops it)
        x1 = self.tree1(x)
        return self.tree2(x1, extra + [x1])


def _conv_level(in_channels: int, out_channels: int, convs: int, stride: int = 1) -> nn.Sequential:
    """``convs`` 3x3 conv-BN-ReLU, the first with ``stride``: keys ``0.weight``, ``1.*``, ``3.weight``, ..."""
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, stride if i == 0 else 1, 1,
                             bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DLA(nn.Module):
    """The DLA base network without its classifier: ``(B, 3, H, W) ->`` the six levels,
    ``[(B, channels[i], H / 2^i, W / 2^i) for i in 0..5]`` (``H``, ``W`` multiples of 32).

    Args:
        levels: convs of ``level0`` and ``level1``, then the depths of the trees ``level2`` .. ``level5``.
        channels: channels of ``base_layer`` / ``level0`` and of ``level1`` .. ``level5``.
        in_channels: input image channels.
    """

    def __init__(self, *, levels: Sequence[int] = DLA34_LEVELS, channels: Sequence[int] = DLA34_CHANNELS,
                 in_channels: int = 3):
        super().__init__()
        check_dla_layout(levels, channels)
        self.channels = tuple(channels)
        c = self.channels
        self.base_layer = nn.Sequential(nn.Conv2d(in_channels, c[0], 7, 1, 3, bias=False), nn.BatchNorm2d(c[0]),
                                        nn.ReLU(inplace=True))
        self.level0 = _conv_level(c[0], c[0], levels[0])
        self.level1 = _conv_level(c[0], c[1], levels[1], stride=2)
        for i in range(2, 6):
            setattr(self, f"level{i}", Tree(levels=levels[i], in_channels=c[i - 1], out_channels=c[i], stride=2,
                                            level_root=i > 2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.base_layer(x)
        out = []
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            out.append(x)
        return out


class DeformConv(nn.Module):
    """Modulated 3x3 deformable conv (with bias), BN, ReLU: ``(B, C_in, H, W) -> (B, C_out, H, W)``. Keys
    ``conv.{weight,bias,conv_offset_mask.*}``, ``actf.0.*`` (the BN), as the official ``DeformConv``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.conv = ModulatedDeformConv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


def bilinear_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a depthwise transposed-convolution weight ``(C, 1, k, k)`` with the bilinear up-sampling kernel (the
    same for every channel), in place; returns it."""
    k = weight.shape[-1]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    taps = 1 - (torch.arange(k, dtype=torch.float64) / f - c).abs()
    with torch.no_grad():
        weight.copy_((taps[:, None] * taps[None, :]).to(weight.dtype).expand_as(weight))
    return weight


class IDAUp(nn.Module):
    """Iterative deep aggregation to the resolution of the first input: ``[x_0 (B, C, h, w), x_1 (B, C_1, h / f_1,
    w / f_1), ...] -> [x_0, y_1, y_2, ...]``, all ``(B, C, h, w)``, with ``y_j = node_j(up_j(proj_j(x_j)) +
    y_{j-1})`` (``y_0 = x_0``).

    ``proj_j`` and ``node_j`` are :class:`DeformConv`; ``up_j`` a depthwise transposed convolution (kernel ``2 f``,
    stride ``f``, padding ``f / 2``, no bias) initialised bilinear. Keys ``proj_j``, ``up_j``, ``node_j``
    (``j >= 1``) as the official ``IDAUp``.

    Args:
        out_channels: ``C``, the channels of ``x_0`` and of the output.
        in_channels: ``[C_0, C_1, ...]`` (``C_0`` is not used: ``x_0`` passes unchanged).
        up_factors: ``[1, f_1, f_2, ...]``, the resolution of ``x_0`` over that of ``x_j``.
    """

    def __init__(self, *, out_channels: int, in_channels: Sequence[int], up_factors: Sequence[int]):
        super().__init__()
        self.num_inputs = len(in_channels)
        for j in range(1, len(in_channels)):
            f = int(up_factors[j])
            setattr(self, f"proj_{j}", DeformConv(in_channels[j], out_channels))
            up = nn.ConvTranspose2d(out_channels, out_channels, 2 * f, stride=f, padding=f // 2, groups=out_channels,
                                    bias=False)
            bilinear_(up.weight)
            setattr(self, f"up_{j}", up)
            setattr(self, f"node_{j}", DeformConv(out_channels, out_channels))

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = [xs[0]]
        for j in range(1, self.num_inputs):
            up = getattr(self, f"up_{j}")(getattr(self, f"proj_{j}")(xs[j]))
            out.append(getattr(self, f"node_{j}")(up + out[-1]))
        return out


class DLAUp(nn.Module):
    """Deep layer aggregation up-sampling over levels ``first .. 5``: ``ida_0`` aggregates the two deepest levels
    at the resolution of the second deepest, ``ida_1`` the three deepest (the deepest already aggregated) one step
    up, and so on to level ``first``. Input: the six levels of :class:`DLA`; output: ``[z_first, ..., z_5]``, ``z_i``
    at the resolution and channels of level ``i``: ``z_5`` is level 5 itself, ``z_i`` the last output of the stage
    that ends at level ``i``.

    Args:
        channels: channels of levels ``first`` .. 5.
        first: the first (highest-resolution) level aggregated.
    """

    def __init__(self, *, channels: Sequence[int], first: int = FIRST_LEVEL):
        super().__init__()
        self.first = first
        n = len(channels)
        in_channels = list(channels)
        scales = [2 ** i for i in range(n)]
        for i in range(n - 1):
            j = n - 2 - i  # this stage ends at level first + j
            setattr(self, f"ida_{i}", IDAUp(out_channels=channels[j], in_channels=in_channels[j:],
                                            up_factors=[s // scales[j] for s in scales[j:]]))
            scales[j + 1:] = [scales[j]] * (n - j - 1)
            in_channels[j + 1:] = [channels[j]] * (n - j - 1)

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        xs = list(levels[self.first:])
        out = [xs[-1]]
        for i in range(len(xs) - 1):
            j = len(xs) - 2 - i
            xs[j:] = getattr(self, f"ida_{i}")(xs[j:])
            out.insert(0, xs[-1])
        return out


class DLAUpBackbone(nn.Module):
    """DLA with CenterNet's deformable up-sampling: ``(B, 3, H, W) -> (B, channels[2], H/4, W/4)`` (64 channels for
    DLA-34); ``H`` and ``W`` must be multiples of 32. Attributes (and keys) ``base``, ``dla_up``, ``ida_up`` as the
    official ``DLASeg``; see the module docstring.

    Args:
        levels: :class:`DLA`'s ``levels`` (DLA-34: ``(1, 1, 1, 2, 2, 1)``).
        channels: :class:`DLA`'s ``channels`` (DLA-34: ``(16, 32, 64, 128, 256, 512)``).
        in_channels: input image channels.
    """

    stride = 2 ** FIRST_LEVEL
    #: the input sides must be multiples of this (the deepest level is at 1/32)
    size_divisor = 32

    def __init__(self, *, levels: Sequence[int] = DLA34_LEVELS, channels: Sequence[int] = DLA34_CHANNELS,
                 in_channels: int = 3):
        super().__init__()
        self.base = DLA(levels=levels, channels=channels, in_channels=in_channels)
        c = list(channels)
        self.dla_up = DLAUp(channels=c[FIRST_LEVEL:], first=FIRST_LEVEL)
        self.ida_up = IDAUp(out_channels=c[FIRST_LEVEL], in_channels=c[FIRST_LEVEL:LAST_LEVEL],
                            up_factors=[2 ** i for i in range(LAST_LEVEL - FIRST_LEVEL)])
        self.out_channels = c[FIRST_LEVEL]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-4 features ``(B, out_channels, H/4, W/4)``."""
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(f"DLA: the input sides must be multiples of {self.size_divisor}, got {h}x{w}")
        up = self.dla_up(self.base(x))
        return self.ida_up(up[:LAST_LEVEL - FIRST_LEVEL])[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
