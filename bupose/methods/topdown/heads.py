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


class SimCCHead(nn.Module):
    """SimCC's head (Li et al., "SimCC: a Simple Coordinate Classification Perspective for Human Pose Estimation",
    ECCV 2022): features -> K maps (optional deconvolutions and a 1x1 convolution, as :class:`HeatmapHead`) ->
    each map flattened -> two linear layers to ``Wx`` x bins and ``Wy`` y bins.

    ``(B, in_channels, h, w) -> (simcc_x (B, K, Wx), simcc_y (B, K, Wy))`` with ``(w, h) = in_featuremap_size``,
    ``Wx = int(input_size[0] * simcc_split_ratio)``, ``Wy = int(input_size[1] * simcc_split_ratio)``; bin ``i`` is
    input-crop pixel ``i / simcc_split_ratio`` (the :class:`~bupose.codecs.SimCCLabel` convention).

    Argument and parameter names are mmpose 1.x's ``SimCCHead`` (``deconv_type='heatmap'``): with deconvolutions the
    maps come from ``deconv_head`` (a :class:`HeatmapHead`: ``deconv_head.deconv_layers.*``,
    ``deconv_head.final_layer``), without them from ``final_layer``; then ``mlp_head_x`` and ``mlp_head_y``. So
    mmpose SimCC checkpoints (``head.*``) load as they are.

    Args:
        in_channels: channels of the backbone's features. out_channels: K.
        input_size: ``(w, h)`` of the input crop. in_featuremap_size: ``(w, h)`` of the backbone's features.
        simcc_split_ratio: bins per input pixel.
        deconv_out_channels, deconv_kernel_sizes: the transposed convolutions (``None`` / ``()``: none).
        final_layer_kernel_size: the last convolution's kernel, 1 (mmpose's ``final_layer=dict(kernel_size=1)``);
            ``None`` leaves it out (the MLPs then read the deconvolutions' or the backbone's channels).
    """

    #: names of the two outputs, for :class:`~bupose.methods.topdown.model.TopDownModel`
    output_names = ("simcc_x", "simcc_y")

    def __init__(self, *, in_channels: int, out_channels: int, input_size: Sequence[int],
                 in_featuremap_size: Sequence[int], simcc_split_ratio: float = 2.0,
                 deconv_out_channels: Sequence[int] | None = (256, 256, 256),
                 deconv_kernel_sizes: Sequence[int] | None = (4, 4, 4), final_layer_kernel_size: int | None = 1):
        super().__init__()
        if final_layer_kernel_size not in (1, None):
            raise ValueError(f"final_layer_kernel_size must be 1 or None (mmpose's unpadded final convolution would "
                             f"change the map size), got {final_layer_kernel_size!r}")
        deconv_out_channels = tuple(deconv_out_channels or ())
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = tuple(int(v) for v in input_size)
        self.simcc_split_ratio = float(simcc_split_ratio)
        n = len(deconv_out_channels)
        self.heatmap_size = tuple(int(s) * 2 ** n for s in in_featuremap_size)
        has_final = final_layer_kernel_size is not None
        if n:
            self.deconv_head = HeatmapHead(in_channels=in_channels, out_channels=out_channels,
                                           deconv_out_channels=deconv_out_channels,
                                           deconv_kernel_sizes=deconv_kernel_sizes, has_final_layer=has_final)
        else:
            self.final_layer = nn.Conv2d(in_channels, out_channels, 1) if has_final else nn.Identity()
        if not has_final and (deconv_out_channels[-1] if n else in_channels) != out_channels:
            raise ValueError("without a final layer the last feature channels must equal out_channels (K)")
        flatten = self.heatmap_size[0] * self.heatmap_size[1]
        self.mlp_head_x = nn.Linear(flatten, int(self.input_size[0] * self.simcc_split_ratio))
        self.mlp_head_y = nn.Linear(flatten, int(self.input_size[1] * self.simcc_split_ratio))

    def output_layers(self) -> list[nn.Module]:
        """The layers that produce the outputs (initialised small)."""
        return [self.mlp_head_x, self.mlp_head_y]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.deconv_head(x) if hasattr(self, "deconv_head") else self.final_layer(x)
        if tuple(maps.shape[-2:]) != self.heatmap_size[::-1]:
            raise ValueError(f"SimCCHead: maps of {tuple(maps.shape[-2:])} (h, w), expected {self.heatmap_size[::-1]}"
                             f" from in_featuremap_size and the deconvolutions: is the input crop "
                             f"{self.input_size} (w, h)?")
        flat = torch.flatten(maps, 2)
        return self.mlp_head_x(flat), self.mlp_head_y(flat)


class RLEHead(nn.Module):
    """RLE's regression head (Li et al., "Human Pose Regression with Residual Log-likelihood Estimation", ICCV 2021),
    as mmpose 1.x's ``GlobalAveragePooling`` neck and ``RLEHead``: features averaged over space, then one linear
    layer ``fc`` to ``K x 4`` values per crop: ``mu`` (x, y normalised to the input crop, :class:`~bupose.codecs.
    RegressionLabel`'s units) and the logits of ``sigma`` (x, y).

    ``(B, in_channels, h, w) -> (coords (B, K, 4),)`` with ``coords[..., :2] = mu`` and ``coords[..., 2:] =
    sigmoid(sigma logits)``, in training and at test (mmpose applies the sigmoid in its loss and its predict).

    The training loss's flow lives here, as in mmpose: ``loss_module`` is an
    :class:`~bupose.methods.topdown.loss.RLELoss` (``loss_module.flow_model.*``), so mmpose RLE checkpoints
    (``head.fc.*``, ``head.loss_module.flow_model.*``) load as they are and the optimiser trains the flow with the
    model.

    Args:
        in_channels: channels of the backbone's features. num_joints: K.
        use_target_weight: the loss's ``use_target_weight`` (mmpose's RLE configs: True).
    """

    #: name of the output, for :class:`~bupose.methods.topdown.model.TopDownModel`
    output_names = ("coords",)

    def __init__(self, *, in_channels: int, num_joints: int, use_target_weight: bool = True):
        super().__init__()
        from bupose.methods.topdown.loss import RLELoss

        self.in_channels, self.num_joints = int(in_channels), int(num_joints)
        self.fc = nn.Linear(self.in_channels, self.num_joints * 4)
        self.loss_module = RLELoss(use_target_weight=use_target_weight)

    @property
    def out_channels(self) -> int:
        return self.num_joints

    def output_layers(self) -> list[nn.Module]:
        """The layers that produce the outputs (initialised N(0, 0.01), zero bias: mmpose's)."""
        return [self.fc]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = torch.flatten(x.mean(dim=(2, 3)) if x.ndim == 4 else x, 1)
        out = self.fc(x).reshape(-1, self.num_joints, 4)
        return (torch.cat([out[..., :2], out[..., 2:].sigmoid()], dim=-1),)
