"""Top-down heads.

:class:`HeatmapHead`: the heatmap head of SimpleBaseline (Xiao et al., "Simple Baselines for Human Pose Estimation
and Tracking", ECCV 2018): stride-2 transposed convolutions (each followed by BN and ReLU), then a convolution to one
heatmap per keypoint. HRNet's top-down head (Sun et al., CVPR 2019) is the final convolution alone (no
deconvolutions). Argument names follow mmpose 1.x's ``HeatmapHead``; parameter names (``deconv_layers.{3i}``
transposed conv, ``.{3i+1}`` BN; ``final_layer``) equal the official deep-high-resolution-net ones.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

#: deconvolution kernel size -> (padding, output_padding): each doubles the resolution exactly
DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class HeatmapHead(nn.Module):
    """Features to heatmaps: ``(B, in_channels, h, w) -> (B, out_channels, h * 2^n, w * 2^n)``, ``n`` =
    ``len(deconv_out_channels)`` (3 in SimpleBaseline: stride 32 -> 4; 0 in HRNet).

    Args:
        in_channels: channels of the backbone's features.
        out_channels: K, the number of keypoints.
        deconv_out_channels: output channels of the transposed convolutions (``None`` or ``()``: none, and
            ``deconv_kernel_sizes`` is not used).
        deconv_kernel_sizes: their kernel sizes, each 2, 3 or 4 (stride 2; padding as :data:`DECONV_PADDING`).
        deconv_with_bias: give the transposed convolutions a bias (official ``DECONV_WITH_BIAS``).
        final_conv_kernel: 1 or 3, the kernel of the last convolution (official ``FINAL_CONV_KERNEL``).
        has_final_layer: ``False`` leaves the last convolution out (the output is then the deconvolutions').
    """

    def __init__(self, *, in_channels: int, out_channels: int,
                 deconv_out_channels: Sequence[int] | None = (256, 256, 256),
                 deconv_kernel_sizes: Sequence[int] | None = (4, 4, 4), deconv_with_bias: bool = False,
                 final_conv_kernel: int = 1, has_final_layer: bool = True):
        super().__init__()
        deconv_out_channels = tuple(deconv_out_channels or ())
        deconv_kernel_sizes = tuple(deconv_kernel_sizes or ()) if deconv_out_channels else ()
        if len(deconv_out_channels) != len(deconv_kernel_sizes):
            raise ValueError(f"deconv_out_channels {deconv_out_channels} and deconv_kernel_sizes "
                             f"{deconv_kernel_sizes} must have the same length")
        bad = [k for k in deconv_kernel_sizes if k not in DECONV_PADDING]
        if bad:
            raise ValueError(f"deconv_kernel_sizes must be 2, 3 or 4, got {deconv_kernel_sizes}")
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"final_conv_kernel must be 1 or 3, got {final_conv_kernel!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        layers, c = [], in_channels
        for planes, k in zip(deconv_out_channels, deconv_kernel_sizes):
            padding, output_padding = DECONV_PADDING[k]
            layers += [nn.ConvTranspose2d(c, planes, k, stride=2, padding=padding, output_padding=output_padding,
                                          bias=deconv_with_bias),
                       nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
            c = planes
        self.deconv_layers = nn.Sequential(*layers) if layers else nn.Identity()
        self.final_layer = (nn.Conv2d(c, out_channels, final_conv_kernel, 1, final_conv_kernel // 2)
                            if has_final_layer else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(x))
