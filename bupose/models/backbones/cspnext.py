"""CSPNeXt: the backbone of RTMDet (Lyu et al., "RTMDet: An Empirical Study of Designing Real-Time Object
Detectors", 2022), used by RTMPose (Jiang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on MMPose",
2023).

A stem of three 3x3 convolutions (stride 2, then 1, 1), then four stages (arch ``P5``); each stage is a stride-2 3x3
convolution, in the last stage a spatial pyramid pooling block, and a cross-stage-partial layer: two 1x1 branches,
one through ``n`` CSPNeXt blocks (a 3x3 convolution and a depthwise-separable 5x5 one, with a residual connection
in the first three stages), concatenated, weighted by channel attention (global average pooling, a 1x1 convolution,
a hard sigmoid) and mixed by a 1x1 convolution. Every convolution is conv -> BN -> SiLU.

Shapes (``w = widen_factor``): ``(B, 3, H, W)`` -> stem ``(B, 64w, H/2, W/2)`` -> stage ``i`` (1..4)
``(B, C_i, H/2^(i+1), W/2^(i+1))`` with ``C = (128w, 256w, 512w, 1024w)``; sizes round up (``ceil(n / 2)`` per
stride-2 step). ``out_indices`` picks the outputs (0: stem, 1..4: stages); RTMPose takes the last stage (stride 32).

Module and parameter names are those of mmpose 1.x / mmdet 3.x (``stem.0.conv.weight``, ``stem.0.bn.running_mean``,
``stage1.0.conv.weight``, ``stage4.1.conv1.conv.weight``, ``stage4.2.blocks.0.conv2.depthwise_conv.bn.weight``,
``stage4.2.attention.fc.bias``, ...), so their state_dicts load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

#: arch -> per stage (in_channels, out_channels, num_blocks, add_identity, use_spp) before widening / deepening
ARCH_SETTINGS = {"P5": ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
                        (512, 1024, 3, False, True))}
#: RTMPose sizes -> (deepen_factor, widen_factor), as mmpose's rtmpose-{t,s,m,l,x} configs
CSPNEXT_SIZES = {"t": (0.167, 0.375), "s": (0.33, 0.5), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
#: BN of the RTMPose configs (``norm_cfg=dict(type='SyncBN')``: PyTorch's defaults; the CSPNeXt class default, that
#: of RTMDet, is eps 1e-3, momentum 0.03)
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


class ConvBNAct(nn.Module):
    """``conv`` (no bias) -> ``bn`` -> SiLU, mmcv's ``ConvModule`` order and names: ``(B, C_in, H, W) -> (B, C_out,
    H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                 eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """A ``depthwise_conv`` (k x k, one filter per channel) and a ``pointwise_conv`` (1x1), each conv-BN-SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **bn):
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, kernel_size, groups=in_channels, **bn)
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(fc(mean over space of x))``, ``fc`` a 1x1 convolution with bias: ``(B, C, H, W)`` kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPNeXtBlock(nn.Module):
    """``conv1`` (3x3) and ``conv2`` (depthwise-separable ``kernel_size``), plus the input when ``add_identity`` and
    the channels agree: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, *, expansion: float = 0.5, add_identity: bool = True,
                 kernel_size: int = 5, **bn):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvBNAct(in_channels, hidden, 3, **bn)
        self.conv2 = DepthwiseSeparableConv(hidden, out_channels, kernel_size, **bn)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross stage partial layer with CSPNeXt blocks: ``main_conv`` (1x1) -> ``blocks``, beside ``short_conv``
    (1x1); concatenated (main first), ``attention`` (optional), ``final_conv`` (1x1): ``(B, C_in, H, W) -> (B, C_out,
    H, W)``; the branches are ``int(C_out * expand_ratio)`` wide."""

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: float = 0.5, num_blocks: int = 1,
                 add_identity: bool = True, channel_attention: bool = True, **bn):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.short_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, **bn)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, expansion=1.0, add_identity=add_identity, **bn)
                                      for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            out = self.attention(out)
        return self.final_conv(out)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: ``conv1`` (1x1 to half the channels), its max-pools of each kernel size (stride 1,
    same size), all concatenated, ``conv2`` (1x1): ``(B, C_in, H, W) -> (B, C_out, H, W)``. With kernels (5, 9, 13)
    this equals YOLOv5's SPPF (three chained 5x5 pools); the pools are parallel here, as in mmpose."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_sizes: Sequence[int] = (5, 9, 13), **bn):
        super().__init__()
        mid = in_channels // 2
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.conv1 = ConvBNAct(in_channels, mid, 1, **bn)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in self.kernel_sizes])
        self.conv2 = ConvBNAct(mid * (len(self.kernel_sizes) + 1), out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class CSPNeXt(nn.Module):
    """CSPNeXt (see the module docstring): ``(B, 3, H, W) ->`` the ``out_indices`` outputs (a tensor for one index,
    else a tuple); RTMPose's default ``(4,)``: ``(B, 1024 * widen_factor, ceil(H / 32), ceil(W / 32))``.

    Args:
        arch: ``"P5"`` (four stages; P6 is not supported).
        deepen_factor: blocks per stage ``max(round(n * deepen_factor), 1)`` of (3, 6, 6, 3).
        widen_factor: channels ``int(c * widen_factor)`` of (64, 128, 256, 512, 1024).
        expand_ratio: width of the CSP layers' branches relative to their output.
        channel_attention: channel attention in every CSP layer.
        out_indices: which outputs to return (0: stem, 1..4: stages).
        spp_kernel_sizes: the max-pool kernels of the last stage's SPP block.
        norm_eps, norm_momentum: of every BN (RTMPose's configs: PyTorch's defaults, :data:`BN_EPS`).
    """

    def __init__(self, *, arch: str = "P5", deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 expand_ratio: float = 0.5, channel_attention: bool = True, out_indices: Sequence[int] = (4,),
                 spp_kernel_sizes: Sequence[int] = (5, 9, 13), norm_eps: float = BN_EPS,
                 norm_momentum: float = BN_MOMENTUM):
        super().__init__()
        if arch not in ARCH_SETTINGS:
            raise ValueError(f"CSPNeXt: arch must be one of {sorted(ARCH_SETTINGS)}, got {arch!r}")
        settings = ARCH_SETTINGS[arch]
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or not all(0 <= i <= len(settings) for i in self.out_indices):
            raise ValueError(f"CSPNeXt: out_indices must be in [0, {len(settings)}], got {out_indices!r}")
        self.arch, self.deepen_factor, self.widen_factor = arch, float(deepen_factor), float(widen_factor)
        bn = {"eps": norm_eps, "momentum": norm_momentum}
        stem = int(settings[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(ConvBNAct(3, stem, 3, stride=2, **bn), ConvBNAct(stem, stem, 3, **bn),
                                  ConvBNAct(stem, int(settings[0][0] * widen_factor), 3, **bn))
        self.layers = ["stem"]
        channels = [int(settings[0][0] * widen_factor)]
        for i, (c_in, c_out, blocks, add_identity, use_spp) in enumerate(settings):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            stage = [ConvBNAct(c_in, c_out, 3, stride=2, **bn)]
            if use_spp:
                stage.append(SPPBottleneck(c_out, c_out, kernel_sizes=spp_kernel_sizes, **bn))
            stage.append(CSPLayer(c_out, c_out, expand_ratio=expand_ratio,
                                  num_blocks=max(round(blocks * deepen_factor), 1), add_identity=add_identity,
                                  channel_attention=channel_attention, **bn))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")
            channels.append(c_out)
        #: channels of each output (0: stem, 1..4: stages)
        self.channels = tuple(channels)
        self.out_channels = channels[self.out_indices[-1]]
        #: stride-2 steps up to the last output (5 for stage 4: stride 32)
        self.halvings = self.out_indices[-1] + 1

    def forward(self, x: torch.Tensor):
        outs = []
        for i, name in enumerate(self.layers[:max(self.out_indices) + 1]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)
