"""The YOLO-Pose network (Maji et al., "YOLO-Pose: Enhancing YOLO for Multi Person Pose Estimation Using Object
Keypoint Similarity Loss", CVPRW 2022): a YOLOv5-P6 backbone (CSP blocks, SPP) with a PAN neck (Jocher et al.,
Ultralytics YOLOv5) and an anchor-based head that predicts, per anchor and cell of 4 levels (strides 8, 16, 32, 64),
a box, an objectness, class scores and K keypoints with confidences.

Layer numbering and parameter names follow the official model (TexasInstruments/edgeai-yolov5, branch ``yolo-pose``,
``models/yolo.py``), so official state_dicts load with ``strict=True``: ``model.<i>`` is layer ``i`` of the
official ``yolov5{s6,m6,l6}_kpts*.yaml`` (0-11 backbone, 12-32 neck, 33 the head with ``m`` (box/obj/cls convs),
``m_kpt`` (keypoint branches) and the ``anchors`` / ``anchor_grid`` buffers).

**Head channel layout (as official).** At each level the box/obj/cls conv (``A * (5 + nc)`` channels) and the
keypoint branch (``A * 3K`` channels) are concatenated and the result is *viewed* as ``(A, 5 + nc + 3K)``: anchor
``a`` reads channels ``a * no ... (a + 1) * no - 1`` of the concatenation (``no = 5 + nc + 3K``), so for ``a > 0``
its box and objectness come from keypoint-branch channels. The weights are trained for this layout; it is kept
exactly (:meth:`YOLOPose.forward`), and so is the official bias prior, which therefore lands on the objectness of
anchor 0 only (and on keypoint channels of the others).

Variants: ``lite=True`` is the official "ti_lite" model (``*_kpts_ti_lite.yaml``): a 3x3 stride-2 convolution
(``conv_slice``) instead of the Focus space-to-depth stem, and ReLU instead of SiLU (the official s6 ti_lite yaml;
its m6 / l6 files keep SiLU: ``activation="silu"``). In the official code the SPP's two convolutions and the
keypoint branch keep SiLU in every variant; so do they here. The released models use the depthwise keypoint branch
(``dw_conv_kpt=True``: six 3x3 depthwise + 1x1 blocks, then a 1x1 conv) -- the ti_lite ones a single 1x1 conv.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from bupose.errors import ConfigError, DataError
from bupose.methods.yolo_pose.decode import decode_levels

#: official anchors (pixels), one row per level (strides 8, 16, 32, 64): (w, h) pairs of its 3 anchors
DEFAULT_ANCHORS = ((19, 27, 44, 40, 38, 94), (96, 68, 86, 152, 180, 137), (140, 301, 303, 264, 238, 542),
                   (436, 615, 739, 380, 925, 792))
STRIDES = (8, 16, 32, 64)
#: official model sizes: name -> (depth_multiple, width_multiple)
VARIANTS = {"s6": (0.33, 0.5), "m6": (0.67, 0.75), "l6": (1.0, 1.0)}
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # the official initialize_weights()
ACTIVATIONS = ("silu", "relu")


def _activation(name: str) -> nn.Module:
    return nn.SiLU() if name == "silu" else nn.ReLU(inplace=True)


class ConvBNAct(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm -> activation: the official ``Conv`` (``conv``, ``bn``,
    ``act``). After :meth:`fuse` the batch norm is folded into ``conv`` (which then has a bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 activation: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        conv, bn = self.conv, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True).to(conv.weight)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        self.conv, self.bn = fused.requires_grad_(conv.weight.requires_grad), nn.Identity()


class Bottleneck(nn.Module):
    """1x1 -> 3x3 ``ConvBNAct`` with a residual connection when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool = True, activation: str = "silu"):
        super().__init__()
        self.cv1 = ConvBNAct(channels, channels, 1, activation=activation)
        self.cv2 = ConvBNAct(channels, channels, 3, activation=activation)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convolutions: ``cv3(cat(m(cv1(x)), cv2(x)))``, hidden width ``out_channels // 2``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1, shortcut: bool = True,
                 activation: str = "silu"):
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = ConvBNAct(in_channels, hidden, 1, activation=activation)
        self.cv2 = ConvBNAct(in_channels, hidden, 1, activation=activation)
        self.cv3 = ConvBNAct(2 * hidden, out_channels, 1, activation=activation)
        self.m = nn.Sequential(*[Bottleneck(hidden, shortcut, activation) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling: ``cv1`` halves the channels, max pools of each size in ``kernels`` (stride 1,
    'same') run side by side, ``cv2`` mixes the concatenation. As official, a k x k pool is built from
    ``(k - 1) / 2`` chained 3x3 pools (equal results), and both convolutions use SiLU in every variant."""

    def __init__(self, in_channels: int, out_channels: int, kernels: Sequence[int] = (3, 5, 7)):
        super().__init__()
        hidden = in_channels // 2
        if any(k < 3 or k % 2 == 0 for k in kernels):
            raise ConfigError(f"SPP kernels must be odd and >= 3, got {list(kernels)}")
        self.cv1 = ConvBNAct(in_channels, hidden, 1)
        self.cv2 = ConvBNAct(hidden * (len(kernels) + 1), out_channels, 1)
        self.m = nn.ModuleList(nn.Sequential(*[nn.MaxPool2d(3, 1, 1) for _ in range((k - 1) // 2)]) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``; output channel ``(2 * dy + dx) * C + c`` is ``x[:, c, dy::2, dx::2]``
    (the official ``Contract(gain=2)`` order)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


class Focus(nn.Module):
    """Stem of the regular model: :func:`space_to_depth`, then a 3x3 ``ConvBNAct`` (``conv``)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "silu"):
        super().__init__()
        self.conv = ConvBNAct(4 * in_channels, out_channels, 3, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(space_to_depth(x))


class ConvFocus(nn.Module):
    """Stem of the lite model: a 3x3 stride-2 ``ConvBNAct`` to 4x the input channels (``conv_slice``), then a
    3x3 ``ConvBNAct`` (``conv``)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "relu"):
        super().__init__()
        self.conv_slice = ConvBNAct(in_channels, 4 * in_channels, 3, 2, activation=activation)
        self.conv = ConvBNAct(4 * in_channels, out_channels, 3, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_slice(x))


class Concat(nn.Module):
    """Channel concatenation (the official layer, kept so that layer indices match)."""

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), 1)


def keypoint_branch(channels: int, out_channels: int, depthwise: bool) -> nn.Module:
    """The keypoint branch of one level: a 1x1 conv, or (``depthwise``) 6 x [3x3 depthwise ``ConvBNAct``] with a
    1x1 ``ConvBNAct`` between consecutive ones, then the 1x1 conv (all SiLU, as official)."""
    if not depthwise:
        return nn.Conv2d(channels, out_channels, 1)
    layers = []
    for i in range(6):
        layers.append(ConvBNAct(channels, channels, 3, groups=channels))
        if i < 5:
            layers.append(ConvBNAct(channels, channels, 1))
    return nn.Sequential(*layers, nn.Conv2d(channels, out_channels, 1))


class PoseHead(nn.Module):
    """Per level ``l``: ``cat(m[l](x), m_kpt[l](x))`` viewed as ``(B, A, 5 + nc + 3K, H, W)`` and permuted to
    ``(B, A, H, W, 5 + nc + 3K)`` (the official ``Detect`` with keypoints).

    Buffers (as official): ``anchors`` ``(L, A, 2)`` anchor sizes in grid units of their level (pixels / stride),
    ``anchor_grid`` ``(L, 1, A, 1, 1, 2)`` the same in input pixels.
    """

    def __init__(self, in_channels: Sequence[int], anchors_px: torch.Tensor, strides: Sequence[int],
                 num_keypoints: int, num_classes: int = 1, dw_conv_kpt: bool = True):
        super().__init__()
        levels, num_anchors = anchors_px.shape[:2]
        self.num_anchors, self.num_keypoints, self.num_classes = num_anchors, num_keypoints, num_classes
        self.num_outputs = 5 + num_classes + 3 * num_keypoints
        anchors_px = anchors_px.to(torch.get_default_device())  # e.g. meta inside `with torch.device("meta")`
        stride = torch.tensor([float(s) for s in strides], device=anchors_px.device).view(-1, 1, 1)
        self.register_buffer("anchors", anchors_px / stride)
        self.register_buffer("anchor_grid", anchors_px.clone().view(levels, 1, num_anchors, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, num_anchors * (5 + num_classes), 1) for c in in_channels)
        self.m_kpt = nn.ModuleList(keypoint_branch(c, num_anchors * 3 * num_keypoints, dw_conv_kpt)
                                   for c in in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for x, det, kpt in zip(features, self.m, self.m_kpt):
            y = torch.cat((det(x), kpt(x)), 1)
            b, _, h, w = y.shape
            out.append(y.view(b, self.num_anchors, self.num_outputs, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out


def _anchor_tensor(anchors) -> torch.Tensor:
    """Anchors as ``(L, A, 2)`` pixels from rows of ``w, h`` pairs (the official yaml) or an ``(L, A, 2)`` array."""
    expected = (f"anchors must be {len(STRIDES)} rows (one per stride {STRIDES}) of the same number of positive "
                f"(w, h) pixel pairs")
    try:
        a = torch.as_tensor(anchors, dtype=torch.float32, device="cpu").clone()  # CPU: checkable under meta
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{expected}, got {anchors!r}") from None
    if a.ndim == 2 and a.shape[1] % 2 == 0:
        a = a.view(a.shape[0], -1, 2)
    if a.ndim != 3 or a.shape[0] != len(STRIDES) or a.shape[1] < 1 or a.shape[2] != 2 or not bool((a > 0).all()):
        raise ConfigError(f"{expected}, got {anchors!r}")
    area = a.prod(-1).flatten()
    if float(area[-1]) < float(area[0]):
        raise ConfigError("anchors must grow with the stride (the first row is for stride 8, the last for 64)")
    return a


class YOLOPose(nn.Module):
    """YOLO-Pose: ``(B, 3, H, W)`` RGB in [0, 1], ``H`` and ``W`` multiples of 64 -> ``{"levels": [t_l]}``.

    ``t_l``: ``(B, A, H / s_l, W / s_l, 5 + nc + 3K)`` raw head outputs of level ``l`` (strides 8, 16, 32, 64),
    equal to the official training-mode output: channels ``tx, ty, tw, th, obj, cls_1..nc`` then per keypoint
    ``kx, ky, kconf`` (logits / raw offsets; :meth:`decode` turns them into pixels and probabilities). The same in
    training and eval mode (only batch norm differs).

    Args:
        num_keypoints: K.
        num_classes: nc (1 for person).
        depth_multiple, width_multiple: the official model size (:data:`VARIANTS`): a CSP block of ``n`` bottlenecks
            gets ``max(round(n * depth_multiple), 1)``, a layer of ``c`` channels ``ceil(c * width_multiple / 8) * 8``.
        lite: the official "ti_lite" stem (3x3 stride-2 conv instead of Focus).
        activation: ``"silu"`` or ``"relu"`` of the backbone and neck; ``None``: ReLU when ``lite``, else SiLU.
        dw_conv_kpt: the depthwise keypoint branch (released models) instead of one 1x1 conv.
        anchors: 4 rows (strides 8 .. 64) of ``w, h`` pixel pairs, the same number of anchors per row.
        spp_kernels: the SPP's max-pool sizes.

    Attributes: ``strides`` (8, 16, 32, 64); ``anchors`` ``(L, A, 2)`` in input pixels (read from the head's
    ``anchor_grid`` buffer, so a loaded checkpoint's anchors are used); ``num_keypoints``; ``num_classes``.
    """

    def __init__(self, *, num_keypoints: int = 17, num_classes: int = 1, depth_multiple: float = 0.33,
                 width_multiple: float = 0.5, lite: bool = False, activation: str | None = None,
                 dw_conv_kpt: bool = True, anchors=DEFAULT_ANCHORS, spp_kernels: Sequence[int] = (3, 5, 7)):
        super().__init__()
        if int(num_keypoints) != num_keypoints or num_keypoints < 1:
            raise ConfigError(f"num_keypoints must be a positive integer, got {num_keypoints!r}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not (0 < depth_multiple <= 4 and 0 < width_multiple <= 4):
            raise ConfigError(f"depth_multiple and width_multiple must be in (0, 4], got {depth_multiple}, "
                              f"{width_multiple}")
        act = activation if activation is not None else ("relu" if lite else "silu")
        if act not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS} (or None), got {activation!r}")
        anchors_px = _anchor_tensor(anchors)
        self.num_keypoints, self.num_classes = int(num_keypoints), int(num_classes)
        self.depth_multiple, self.width_multiple = float(depth_multiple), float(width_multiple)
        self.lite, self.activation, self.dw_conv_kpt = bool(lite), act, bool(dw_conv_kpt)
        self.strides = STRIDES

        def w(c: int) -> int:
            return math.ceil(c * width_multiple / 8) * 8

        def d(n: int) -> int:
            return max(round(n * depth_multiple), 1) if n > 1 else n

        def conv(c1, c2, k=1, s=1):
            return ConvBNAct(c1, c2, k, s, activation=act)

        def c3(c1, c2, n, shortcut=True):
            return C3(c1, c2, d(n), shortcut, act)

        c64, c128, c256, c512, c768, c1024 = (w(c) for c in (64, 128, 256, 512, 768, 1024))
        stem = ConvFocus(3, c64, act) if lite else Focus(3, c64, act)
        up = nn.Upsample(scale_factor=2.0, mode="nearest")
        layers = [
            stem, conv(c64, c128, 3, 2), c3(c128, c128, 3),  # 0-2: stride 4
            conv(c128, c256, 3, 2), c3(c256, c256, 9),  # 3-4: P3/8
            conv(c256, c512, 3, 2), c3(c512, c512, 9),  # 5-6: P4/16
            conv(c512, c768, 3, 2), c3(c768, c768, 3),  # 7-8: P5/32
            conv(c768, c1024, 3, 2), SPP(c1024, c1024, spp_kernels), c3(c1024, c1024, 3, False),  # 9-11: P6/64
            conv(c1024, c768), up, Concat(), c3(2 * c768, c768, 3, False),  # 12-15: top-down to /32
            conv(c768, c512), up, Concat(), c3(2 * c512, c512, 3, False),  # 16-19: /16
            conv(c512, c256), up, Concat(), c3(2 * c256, c256, 3, False),  # 20-23: /8 (output P3)
            conv(c256, c256, 3, 2), Concat(), c3(2 * c256, c512, 3, False),  # 24-26: bottom-up /16 (P4)
            conv(c512, c512, 3, 2), Concat(), c3(2 * c512, c768, 3, False),  # 27-29: /32 (P5)
            conv(c768, c768, 3, 2), Concat(), c3(2 * c768, c1024, 3, False),  # 30-32: /64 (P6)
            PoseHead((c256, c512, c768, c1024), anchors_px, STRIDES, self.num_keypoints, self.num_classes,
                     self.dw_conv_kpt),  # 33
        ]
        self.model = nn.ModuleList(layers)
        self._initialize_biases()

    # -- construction -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _initialize_biases(self) -> None:
        """The official prior on the box/obj/cls conv biases: objectness ``+log(8 / (640 / s)^2)`` (8 objects per
        640 image), classes ``+log(0.6 / (nc - 0.99))``, added to PyTorch's default initialisation."""
        head = self.head
        for conv, s in zip(head.m, self.strides):
            b = conv.bias.view(head.num_anchors, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    @property
    def head(self) -> PoseHead:
        return self.model[-1]

    @property
    def anchors(self) -> torch.Tensor:
        """``(L, A, 2)`` anchor sizes ``(w, h)`` in input pixels (the head's ``anchor_grid`` buffer)."""
        return self.head.anchor_grid.view(len(self.strides), -1, 2)

    @property
    def num_anchors(self) -> int:
        return self.head.num_anchors

    @property
    def num_outputs(self) -> int:
        """``5 + nc + 3K``: channels per anchor."""
        return self.head.num_outputs

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 64 or x.shape[3] % 64:
            raise DataError(f"YOLOPose needs a (B, 3, H, W) input with H and W multiples of 64, got "
                             f"{tuple(x.shape)}")
        m = self.model
        x = m[2](m[1](m[0](x)))
        p3 = m[4](m[3](x))
        p4 = m[6](m[5](p3))
        p5 = m[8](m[7](p4))
        x = m[11](m[10](m[9](p5)))
        t12 = m[12](x)  # top-down path
        t16 = m[16](m[15](m[14]([m[13](t12), p5])))
        t20 = m[20](m[19](m[18]([m[17](t16), p4])))
        o3 = m[23](m[22]([m[21](t20), p3]))
        o4 = m[26](m[25]([m[24](o3), t20]))  # bottom-up path
        o5 = m[29](m[28]([m[27](o4), t16]))
        o6 = m[32](m[31]([m[30](o5), t12]))
        return {"levels": m[33]([o3, o4, o5, o6])}

    def decode(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw head outputs -> ``(B, N, 5 + nc + 3K)`` candidates in input pixels, as the official inference.

        Levels are concatenated finest first, each flattened in ``(anchor, row, column)`` order. Per candidate of
        level ``l`` (stride ``s``), anchor ``a`` and cell at column ``j``, row ``i``:

        * ``cx, cy = (2 * sigmoid(tx, ty) - 0.5 + (j, i)) * s`` -- the box centre, within ``(j - 0.5, j + 1.5) * s``
          (``(j + 0.5) * s`` at ``t = 0``);
        * ``w, h = (2 * sigmoid(tw, th))^2 * anchor_a`` -- up to 4x the anchor (pixels);
        * ``obj``, ``cls_1..nc`` = sigmoid;
        * per keypoint ``x, y = (2 * (kx, ky) - 0.5 + (j, i)) * s`` (no sigmoid: unbounded) and
          ``conf = sigmoid(kconf)``.

        Coordinates are the official ones: cell ``j`` spans input pixels ``[j * s, (j + 1) * s)`` with pixel ``x``
        covering ``[x, x + 1)`` (its centre at ``x + 0.5``); subtract 0.5 for bupose's convention (pixel centres at
        integers). The box is ``(cx, cy, w, h)``; the order of the output columns is that of the input channels.
        """
        if len(levels) != len(self.strides):
            raise DataError(f"decode needs {len(self.strides)} levels (strides {self.strides}), got {len(levels)}")
        for t, s in zip(levels, self.strides):
            if t.shape[-1] != self.num_outputs or t.shape[1] != self.num_anchors:
                raise DataError(f"level of stride {s} has shape {tuple(t.shape)}; expected (B, {self.num_anchors}, "
                                f"H, W, {self.num_outputs})")
        return decode_levels(levels, self.anchors, self.strides, self.num_keypoints)

    @torch.no_grad()
    def fuse(self) -> "YOLOPose":
        """Fold every batch norm into the convolution before it (inference; the state_dict then has conv biases
        and no batch-norm entries). Returns ``self``."""
        for module in self.modules():
            if isinstance(module, ConvBNAct):
                module.fuse()
        return self

    # -- the checkpoint hook (see bupose.methods) / config -------------------------------------------------------
    method_name = "yolo_pose"

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model in a bupose or official checkpoint (checked; see
        :func:`bupose.methods.yolo_pose.convert.official_to_bupose`), used by
        :func:`bupose.engine.checkpoint.load_checkpoint`."""
        from bupose.methods.yolo_pose.convert import official_to_bupose

        return official_to_bupose(checkpoint, self)

    @classmethod
    def from_spec(cls, spec: Mapping | None, num_keypoints: int) -> "YOLOPose":
        return cls(num_keypoints=num_keypoints, **spec_to_kwargs(spec))


#: MODEL.SPEC fields -> constructor keywords
_SPEC_FIELDS = {"VARIANT": None, "DEPTH_MULTIPLE": "depth_multiple", "WIDTH_MULTIPLE": "width_multiple",
                "LITE": "lite", "ACTIVATION": "activation", "DW_CONV_KPT": "dw_conv_kpt", "ANCHORS": "anchors",
                "NUM_CLASSES": "num_classes", "SPP_KERNELS": "spp_kernels"}


def spec_to_kwargs(spec: Mapping | None) -> dict:
    """``MODEL.SPEC`` of ``yolo_pose`` -> :class:`YOLOPose` keywords. Fields (all optional): ``VARIANT`` (a key of
    :data:`VARIANTS`; default ``s6``), ``DEPTH_MULTIPLE`` / ``WIDTH_MULTIPLE`` (override the variant's), ``LITE``
    (false), ``ACTIVATION`` (``silu`` / ``relu``; default ReLU when LITE, else SiLU), ``DW_CONV_KPT`` (true),
    ``ANCHORS`` (the official ones), ``NUM_CLASSES`` (1), ``SPP_KERNELS`` ([3, 5, 7])."""
    spec = dict(spec or {})
    unknown = sorted(k for k in spec if k not in _SPEC_FIELDS)
    if unknown:
        raise ConfigError(f"MODEL.SPEC for yolo_pose: unknown fields {unknown}; known: {sorted(_SPEC_FIELDS)}")
    variant = spec.pop("VARIANT", "s6")
    if variant not in VARIANTS:
        raise ConfigError(f"MODEL.SPEC.VARIANT must be one of {sorted(VARIANTS)}, got {variant!r}")
    kwargs = dict(zip(("depth_multiple", "width_multiple"), VARIANTS[variant]))
    for key, value in spec.items():
        if key in ("DEPTH_MULTIPLE", "WIDTH_MULTIPLE") and (isinstance(value, bool) or
                                                            not isinstance(value, (int, float))):
            raise ConfigError(f"MODEL.SPEC.{key} must be a number, got {value!r}")
        if key in ("LITE", "DW_CONV_KPT") and not isinstance(value, bool):
            raise ConfigError(f"MODEL.SPEC.{key} must be true or false, got {value!r}")
        if key == "NUM_CLASSES" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"MODEL.SPEC.NUM_CLASSES must be an integer, got {value!r}")
        if key == "ACTIVATION" and value is not None:
            value = str(value).lower()
        kwargs[_SPEC_FIELDS[key]] = value
    return kwargs


def build_yolo_pose(spec: Mapping | None, num_keypoints: int) -> YOLOPose:
    """YOLO-Pose from ``MODEL.SPEC`` (see :func:`spec_to_kwargs`) and K (``DATASET.NUM_JOINTS``)."""
    return YOLOPose.from_spec(spec, num_keypoints)
