"""Shared building blocks: conv-BN-ReLU helpers, HRNet's residual blocks, DEKR's adaptive convolution and the
modulated deformable convolution (DCNv2) of the CenterNet-based models, both with the same two implementations
(``deform_conv2d`` or gathering with ``grid_sample``).

The residual blocks follow HRNet (Sun et al., "Deep High-Resolution Representation Learning for Human Pose
Estimation", CVPR 2019); the adaptive convolution and :class:`AdaptBlock` follow DEKR (Geng et al., "Bottom-Up Human
Pose Estimation Via Disentangled Keypoint Regression", CVPR 2021). Attribute names equal those of the official DEKR
code so that its checkpoints load without renaming.

Adaptive convolution: a 3x3 convolution whose nine sampling points are moved per output pixel. At pixel ``p`` a
2x2 matrix ``T`` (4 channels, row-major: ``[[t00, t01], [t10, t11]]``) and a translation ``t = (ty, tx)`` (2 channels)
put kernel point ``r = (ry, rx)`` of the regular grid ``{-1, 0, 1}^2`` at ``p + (d - 1) r + T r + t`` (``d``: the
dilation); with ``T = I`` and ``t = 0`` it is a plain (dilated) 3x3 convolution. Two implementations give the same
result:

* ``"deform_conv2d"``: :func:`torchvision.ops.deform_conv2d` with the offsets ``T r - r + t``;
* ``"grid_sample"``: the nine points are gathered with :func:`torch.nn.functional.grid_sample` (bilinear, zero
  padding, which is exactly deform_conv2d's treatment of points outside the image) into a ``(B, C*9, H, W)`` tensor
  and reduced with one 1x1 convolution. It is faster on CPU and exports to ONNX (opset >= 16).

Both take ``groups``: G independent adaptive convolutions on the G channel groups of the input, each with its own
transform, translation and weight (G joints of DEKR's offset head in one call). :func:`fused_block` runs G
same-shaped residual blocks (one per group) that way, as grouped convolutions and one batch norm over all channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ADAPTIVE_IMPLS = ("grid_sample", "deform_conv2d")
#: on CPU the adaptive convolutions sample in chunks of about this many bytes of sampled columns
SAMPLING_CHUNK_BYTES = 16 << 20


def check_adaptive_impl(impl: str, name: str = "adaptive convolution: impl") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``impl`` is one of :data:`ADAPTIVE_IMPLS`."""
    if impl not in ADAPTIVE_IMPLS:
        raise ValueError(f"{name} must be one of {ADAPTIVE_IMPLS}, got {impl!r}")


def _sampling_dtype(x: torch.Tensor) -> torch.dtype:
    """Sampling positions (up to the map size) need float32 at least: in float16 / bfloat16 they would be off by up
    to a pixel, so half-precision inputs are sampled in float32 (also under autocast)."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _samples_per_chunk(bytes_per_sample: int, device: torch.device) -> int | None:
    """How many samples to gather at once: on CPU (eager) about :data:`SAMPLING_CHUNK_BYTES` of sampled columns, so
    that the intermediate stays cache- and allocator-friendly (a fresh, page-faulted multi-100-MB tensor per call
    otherwise); ``None`` (all at once) on a GPU and when tracing or exporting."""
    if device.type == "cpu" and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        return max(1, SAMPLING_CHUNK_BYTES // bytes_per_sample)
    return None


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 relu: bool = True) -> nn.Sequential:
    """``Sequential(conv (no bias, 'same' padding), BN[, ReLU])``: keys ``0.weight``, ``1.*``."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


INITS = ("official", "kaiming")


def init_conv_bn(module: nn.Module, init: str = "official", keep_small=()) -> None:
    """The HRNet family's training initialisation of every (transposed) convolution and BatchNorm in ``module``:
    weights N(0, 0.001) with zero bias, BN (1, 0). ``init="kaiming"`` draws the convolutions He-normal (fan-out)
    instead, except those in ``keep_small`` (the output layers, which should start near zero)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    small = {id(m) for m in keep_small}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if init == "kaiming" and id(m) not in small:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual connection: ``(B, inplanes, H, W) -> (B, planes, H/s, W/s)``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with a residual: ``(B, inplanes, H, W) -> (B, 4 planes, H/s, W/s)``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 (Zhu et al., "Deformable ConvNets v2", CVPR 2019) with its own offset/mask predictor, ``(B, C, H, W) ->
    (B, C', H', W')`` (``H' = H / stride`` for the usual ``padding = dilation (k - 1) / 2``), computed by
    :func:`modulated_deform_conv2d` (no compiled extension). Keys as the ``DCN`` module of the CenterNet-based
    official code (CenterNet, AdaptivePose): ``weight``, ``bias``, ``conv_offset_mask.{weight,bias}``.

    ``conv_offset_mask`` (same kernel, stride, padding and dilation) gives ``3 k k`` channels: the first ``2 k k``
    are the offsets in deform_conv2d's layout (``[dy0, dx0, dy1, dx1, ...]``, kernel points row-major), the last
    ``k k`` the mask logits (through a sigmoid). ``impl``: one of :data:`ADAPTIVE_IMPLS` (see
    :func:`set_adaptive_impl`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, impl: str = "grid_sample"):
        super().__init__()
        check_adaptive_impl(impl, "deformable convolution: impl")
        self.stride, self.padding, self.dilation, self.impl = stride, padding, dilation, impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size, stride,
                                          padding, dilation=dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: weight U(+-1/sqrt(fan_in)), zero bias, zero offsets and mask logits."""
        bound = (self.weight[0].numel()) ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.conv_offset_mask(x)
        n = params.shape[1] // 3
        return modulated_deform_conv2d(x, params[:, :2 * n], params[:, 2 * n:].sigmoid(), self.weight, self.bias,
                                       stride=self.stride, padding=self.padding, dilation=self.dilation,
                                       impl=self.impl)


def modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0, dilation: int = 1,
                            impl: str = "grid_sample") -> torch.Tensor:
    """Modulated deformable convolution, the arguments and result of :func:`torchvision.ops.deform_conv2d` with a
    mask (one offset group): ``x (B, C, H, W)``, ``offset (B, 2 k k, H', W')`` (``[dy0, dx0, ...]``), ``mask (B, k k,
    H', W')``, ``weight (O, C, k, k)``, ``bias (O,)`` -> ``(B, O, H', W')``.

    ``impl="grid_sample"`` gathers the ``k k`` points of every output pixel with :func:`F.grid_sample` (bilinear,
    zero padding: deform_conv2d's treatment of points outside the input), weights them by the mask and reduces them
    with one matrix product; on CPU it trains several times faster than torchvision's kernel and it exports to ONNX.
    Kernel point ``(u, v)`` of output pixel ``(i, j)`` samples ``(i s - p + u d + dy, j s - p + v d + dx)``.
    """
    check_adaptive_impl(impl, "deformable convolution: impl")
    if impl == "deform_conv2d":
        from torchvision.ops import deform_conv2d

        return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    dtype = _sampling_dtype(x)
    k = kh * kw
    u = torch.arange(kh, dtype=dtype, device=x.device).repeat_interleave(kw) * dilation  # (k,) kernel rows
    v = torch.arange(kw, dtype=dtype, device=x.device).repeat(kh) * dilation
    rows = torch.arange(ho, dtype=dtype, device=x.device) * stride - padding
    cols = torch.arange(wo, dtype=dtype, device=x.device) * stride - padding
    off = offset.to(dtype).view(b, k, 2, ho, wo)
    py = off[:, :, 0] + (u.view(k, 1, 1) + rows.view(1, ho, 1))  # (B, k, H', W')
    px = off[:, :, 1] + (v.view(k, 1, 1) + cols.view(1, 1, wo))
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1).view(b, k * ho, wo, 2)
    weight = weight.reshape(o, c * k).to(x.dtype)
    mask = mask.reshape(b, 1, k, ho * wo)
    xs = x.to(dtype)
    chunks = [(xs, grid, mask)]
    step = _samples_per_chunk(c * k * ho * wo * xs.element_size(), x.device)
    if step is not None and step < b:
        chunks = list(zip(xs.split(step), grid.split(step), mask.split(step)))
    outs = []
    for xi, gi, mi in chunks:
        sampled = F.grid_sample(xi, gi, mode="bilinear", padding_mode="zeros", align_corners=False)  # (b', C, kH', W')
        sampled = (sampled.view(-1, c, k, ho * wo) * mi).to(x.dtype).view(-1, c * k, ho * wo)
        outs.append(torch.matmul(weight, sampled))  # (b', O, H' W')
    out = torch.cat(outs).view(b, o, ho, wo)
    return out if bias is None else out + bias.view(1, o, 1, 1)


def regular_grid() -> torch.Tensor:
    """The 3x3 kernel's points as a ``(2, 9)`` float tensor: row 0 is y, row 1 is x, points in row-major order."""
    ys, xs = torch.meshgrid(torch.arange(-1.0, 2.0), torch.arange(-1.0, 2.0), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)])


def _displacements(transform: torch.Tensor, translation: torch.Tensor, regular: torch.Tensor,
                   dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point, where it samples relative to the output pixel: ``(dy, dx)``, each ``(B, 9, H, W)``."""
    ry, rx = (regular[i].to(transform.dtype).view(1, 9, 1, 1) for i in range(2))
    t00, t01, t10, t11 = transform.unbind(1)
    dy = t00.unsqueeze(1) * ry + t01.unsqueeze(1) * rx + translation[:, 0:1] + (dilation - 1) * ry
    dx = t10.unsqueeze(1) * ry + t11.unsqueeze(1) * rx + translation[:, 1:2] + (dilation - 1) * rx
    return dy, dx


def adaptive_offsets(transform: torch.Tensor, translation: torch.Tensor, regular: torch.Tensor | None = None,
                     dilation: int = 1) -> torch.Tensor:
    """deform_conv2d offsets ``(B, 18, H, W)`` (``[dy0, dx0, dy1, dx1, ...]``) of the adaptive convolution.

    ``transform``: ``(B, 4, H, W)``, ``translation``: ``(B, 2, H, W)`` as (y, x), ``regular``: ``(2, 9)``.
    """
    regular = regular_grid().to(transform.device) if regular is None else regular
    dy, dx = _displacements(transform, translation, regular, dilation)
    ry, rx = (dilation * regular[i].to(transform.dtype).view(1, 9, 1, 1) for i in range(2))
    b, _, h, w = transform.shape
    return torch.stack([dy - ry, dx - rx], dim=2).reshape(b, 18, h, w)


def sampling_grid(params: torch.Tensor, regular: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """grid_sample's grid ``(N, 9 H, W, 2)`` (normalised (x, y), align_corners=False) of the adaptive convolution.

    ``params``: ``(N, 6, H, W)``, the transform ``(t00, t01, t10, t11)`` then the translation ``(ty, tx)``. The
    normalised positions are affine in ``params`` (``gy = (2 py + 1) / H - 1`` with ``py = i + (d - 1) ry + t00 ry +
    t01 rx + ty``, ``gx`` alike), so they are one batched ``(18, 6) @ (6, H W)`` product plus a constant map: much
    less memory traffic than elementwise arithmetic on nine-fold broadcast tensors, forward and backward. The
    product runs in ``params``' dtype (float32 or float64), also under autocast.
    """
    n, _, h, w = params.shape
    reg = regular.to(params)
    ry, rx = reg[0], reg[1]
    zero, sy, sx = torch.zeros_like(ry), torch.full_like(ry, 2 / h), torch.full_like(ry, 2 / w)
    # rows (x, point k) then (y, point k); columns t00, t01, t10, t11, ty, tx
    mat = torch.stack([torch.stack([zero, zero, sx * ry, sx * rx, zero, sx], 1),
                       torch.stack([sy * ry, sy * rx, zero, zero, sy, zero], 1)]).reshape(18, 6)
    i = torch.arange(h, dtype=params.dtype, device=params.device).view(1, h, 1)
    j = torch.arange(w, dtype=params.dtype, device=params.device).view(1, 1, w)
    base_x = ((2 * (j + (dilation - 1) * rx.view(9, 1, 1)) + 1) / w - 1).expand(9, h, w)
    base_y = ((2 * (i + (dilation - 1) * ry.view(9, 1, 1)) + 1) / h - 1).expand(9, h, w)
    base = torch.stack([base_x, base_y]).reshape(1, 18, h * w)
    with torch.autocast(params.device.type, enabled=False):
        grid = torch.baddbmm(base.expand(n, -1, -1), mat.expand(n, -1, -1), params.reshape(n, 6, h * w))
    return grid.view(n, 2, 9, h, w).permute(0, 2, 3, 4, 1).reshape(n, 9 * h, w, 2)


def grouped_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Grouped 1x1 convolution as one batched matrix product: ``x (B, G*C, H, W)``, ``weight (G*O, C[, 1, 1])``,
    ``bias (G*O)`` -> ``(B, G*O, H, W)`` (steadier and faster on CPU than oneDNN's grouped convolution)."""
    b, gc, h, w = x.shape
    out = torch.matmul(weight.reshape(groups, -1, gc // groups), x.reshape(b, groups, gc // groups, h * w))
    if bias is not None:
        out = out + bias.view(groups, -1, 1)
    return out.view(b, -1, h, w)


def _adaptive_conv(x: torch.Tensor, weight: torch.Tensor, params: torch.Tensor, regular: torch.Tensor,
                   dilation: int, impl: str, groups: int) -> torch.Tensor:
    """:func:`adaptive_conv2d` with the transform and translation of each (batch item, group) in one tensor:
    ``x (B, G*C, H, W)``, ``weight (G*O, C, 3, 3)``, ``params (B*G, 6, H, W)`` -> ``(B, G*O, H, W)``."""
    check_adaptive_impl(impl)
    b, gc, h, w = x.shape
    dtype = _sampling_dtype(x)
    params, xs = params.to(dtype), x.to(dtype)
    if impl == "deform_conv2d":
        from torchvision.ops import deform_conv2d

        # offset group g (18 channels) moves the points of input channel group g; weight groups: G*C / C = G
        offset = adaptive_offsets(params[:, :4], params[:, 4:], regular, dilation).reshape(b, groups * 18, h, w)
        out = deform_conv2d(xs, offset, weight.to(dtype), padding=(dilation, dilation), dilation=(dilation, dilation))
        return out.to(x.dtype)
    # the groups go to the batch dimension for the sampling: (B, G*C, H, W) -> (B*G, C, H, W) is a view, and sample
    # b * G + g is reduced with the weight of group g; on CPU in chunks of samples (_samples_per_chunk)
    n, c = b * groups, gc // groups
    chunks = [(xs.reshape(n, c, h, w), params, torch.arange(n, device=x.device) % groups)]
    step = _samples_per_chunk(c * 9 * h * w * xs.element_size(), x.device)
    if step is not None and step < n:
        chunks = list(zip(*(t.split(step) for t in chunks[0])))
    weight = weight.reshape(groups, -1, c * 9)
    outs = []
    for xi, pi, gi in chunks:  # (n', C, H, W), (n', 6, H, W), the samples' groups (n',)
        cols = F.grid_sample(xi, sampling_grid(pi, regular, dilation), mode="bilinear", padding_mode="zeros",
                             align_corners=False)  # (n', C, 9H, W): channel c, point k at row k H + i
        cols = cols.reshape(cols.shape[0], c * 9, h * w).to(x.dtype)
        outs.append(torch.bmm(weight.index_select(0, gi), cols))  # (n', O, H W)
    return torch.cat(outs).view(b, -1, h, w)


def adaptive_conv2d(x: torch.Tensor, weight: torch.Tensor, transform: torch.Tensor, translation: torch.Tensor,
                    regular: torch.Tensor | None = None, dilation: int = 1, impl: str = "grid_sample",
                    groups: int = 1) -> torch.Tensor:
    """Adaptive 3x3 convolution (stride 1, no bias): ``x (B, C, H, W) -> (B, O, H, W)``.

    ``weight``: ``(O, C, 3, 3)``; ``transform``: ``(B, 4, H, W)``; ``translation``: ``(B, 2, H, W)`` (y, x);
    ``regular``: the ``(2, 9)`` grid (default :func:`regular_grid`); ``impl``: one of :data:`ADAPTIVE_IMPLS`.
    With ``groups`` G: ``x (B, G*C, H, W)``, ``weight (G*O, C, 3, 3)``, ``transform (B, G*4, H, W)``,
    ``translation (B, G*2, H, W)`` -> ``(B, G*O, H, W)``, G independent adaptive convolutions.
    """
    regular = regular_grid().to(x.device) if regular is None else regular
    b, _, h, w = x.shape
    params = torch.cat([transform.reshape(b * groups, 4, h, w), translation.reshape(b * groups, 2, h, w)], 1)
    return _adaptive_conv(x, weight, params, regular, dilation, impl, groups)


class AdaptiveConv2d(nn.Module):
    """The adaptive 3x3 convolution's weight (``weight``: ``(O, C, 3, 3)``, no bias) and implementation choice.

    ``forward(x (B, C, H, W), transform (B, 4, H, W), translation (B, 2, H, W), regular (2, 9)) -> (B, O, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1, impl: str = "grid_sample"):
        super().__init__()
        check_adaptive_impl(impl)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dilation = dilation
        self.impl = impl
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x, transform, translation, regular=None):
        return adaptive_conv2d(x, self.weight, transform, translation, regular, self.dilation, self.impl)

    def extra_repr(self) -> str:
        o, c = self.weight.shape[:2]
        return f"{c}, {o}, kernel_size=3, dilation={self.dilation}, impl={self.impl!r}"


class AdaptBlock(nn.Module):
    """DEKR's adaptive residual block: ``(B, inplanes, H, W) -> (B, outplanes, H, W)``.

    ``transform_matrix_conv`` (3x3 -> 4 channels) and ``translation_conv`` (3x3 -> 2 channels) predict the per-pixel
    ``T`` and ``t``; ``adapt_conv`` applies the adaptive convolution, then BN, the residual and ReLU. The
    ``regular_matrix`` buffer is the (2, 9) kernel grid, kept in the state_dict as in the official checkpoints.
    """

    expansion = 1

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, impl: str = "grid_sample"):
        super().__init__()
        if stride != 1:
            raise ValueError("AdaptBlock supports stride 1 only")
        self.register_buffer("regular_matrix", regular_grid())
        self.downsample = downsample
        self.transform_matrix_conv = nn.Conv2d(inplanes, 4, 3, 1, 1, bias=True)
        self.translation_conv = nn.Conv2d(inplanes, 2, 3, 1, 1, bias=True)
        self.adapt_conv = AdaptiveConv2d(inplanes, outplanes, dilation=dilation, impl=impl)
        self.bn = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.adapt_conv(x, self.transform_matrix_conv(x), self.translation_conv(x), self.regular_matrix)
        out = self.bn(out)
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck, "ADAPTIVE": AdaptBlock}


def grouped_conv2d(x: torch.Tensor, convs, groups: int | None = None) -> torch.Tensor:
    """Same-shaped ``nn.Conv2d`` s (groups 1) as one grouped convolution, their weights concatenated in forward (so
    gradients reach each module's own parameters): ``(B, G*C, H, W) -> (B, sum of out_channels, H', W')``.
    ``groups`` (default ``len(convs)``): G, the input channel groups; with ``2 G`` convs, convs ``2g`` and ``2g+1``
    both read group g."""
    c, g = convs[0], groups or len(convs)
    weight = torch.cat([m.weight for m in convs])
    bias = None if c.bias is None else torch.cat([m.bias for m in convs])
    if c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding == (0, 0):
        return grouped_pointwise(x, weight, bias, g)
    if x.device.type == "cpu":  # oneDNN's grouped convolutions are slow in NCHW (erratically so), not in NHWC
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, g).contiguous()


def grouped_batch_norm(x: torch.Tensor, bns) -> torch.Tensor:
    """G ``nn.BatchNorm2d(C)`` (same settings) on the G channel groups of ``x (B, G*C, H, W)`` as one batch norm
    over G*C channels. Statistics are per channel, so this is exact also in training mode, where each module's
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` are updated as if it had run alone."""
    first, g = bns[0], len(bns)
    update = first.training and first.track_running_stats
    if update and first.momentum is None and len({int(m.num_batches_tracked) for m in bns}) > 1:
        return torch.cat([m(xg) for m, xg in zip(bns, x.chunk(g, 1))], 1)  # cumulative averages of other lengths

    def cat(name):
        return torch.cat([getattr(m, name) for m in bns]) if getattr(first, name) is not None else None

    mean, var, factor = cat("running_mean"), cat("running_var"), 0.0
    if update:
        factor = first.momentum if first.momentum is not None else 1.0 / (int(first.num_batches_tracked) + 1)
    out = F.batch_norm(x, mean, var, cat("weight"), cat("bias"), first.training or mean is None, factor, first.eps)
    if update:  # F.batch_norm updated the concatenated copies: back to the modules' buffers
        with torch.no_grad():
            for m, m_mean, m_var in zip(bns, mean.chunk(g), var.chunk(g)):
                m.running_mean.copy_(m_mean)
                m.running_var.copy_(m_var)
                m.num_batches_tracked.add_(1)
    return out


def has_hooks(m: nn.Module) -> bool:
    """Whether ``m`` itself has forward or backward (pre-)hooks (which fused execution would bypass)."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _signature(block: nn.Module) -> list:
    """Types, parameter names and settings (public scalar attributes: channels, kernel, stride, eps, momentum, impl,
    training...) of ``block`` and its submodules."""
    return [(type(m), [k for k, v in m._parameters.items() if v is not None],
             sorted((k, v) for k, v in vars(m).items()
                    if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None)))))
            for m in block.modules()]


def can_fuse(modules) -> bool:
    """Whether :func:`fused_block` (or, for ``Conv2d`` s, :func:`grouped_conv2d`) computes exactly what running
    ``modules`` one by one computes: modules of one kind (:class:`BasicBlock`, :class:`Bottleneck`,
    :class:`AdaptBlock`, ``nn.Conv2d``) with equal settings and shapes, made of plain ``Conv2d`` (zero padding,
    groups 1) and ``BatchNorm2d``, with a conv-BN ``downsample`` or none, and without hooks."""
    first = modules[0]
    if type(first) not in (nn.Conv2d, BasicBlock, Bottleneck, AdaptBlock):
        return False
    for m in first.modules():
        if isinstance(m, nn.Conv2d) and (type(m) is not nn.Conv2d or m.groups != 1 or m.padding_mode != "zeros"):
            return False
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) is not nn.BatchNorm2d:
            return False
    ds = getattr(first, "downsample", None)
    if ds is not None and [type(m) for m in ds] != [nn.Conv2d, nn.BatchNorm2d]:
        return False
    sig = _signature(first)
    return not any(has_hooks(m) for b in modules for m in b.modules()) and all(_signature(b) == sig
                                                                                for b in modules[1:])


def fused_block(x: torch.Tensor, blocks) -> torch.Tensor:
    """G blocks (:func:`can_fuse`) at once, block g on channel group g: ``(B, G*C, H, W) -> (B, G*C', H', W')``.

    Same function and parameters as ``torch.cat([blocks[g](x_g) for g ...], 1)``, but each convolution runs once as
    a grouped convolution, each batch norm once over G*C' channels and, for :class:`AdaptBlock`, the sampling once
    with the groups in the batch dimension (``regular_matrix`` is taken from the first block: it is a constant).
    """
    def conv_bn(inp, conv, bn, blks=blocks):
        return grouped_batch_norm(grouped_conv2d(inp, [getattr(b, conv) for b in blks]), [getattr(b, bn) for b in blks])

    first, g = blocks[0], len(blocks)
    if isinstance(first, AdaptBlock):
        b, _, h, w = x.shape
        convs = [c for blk in blocks for c in (blk.transform_matrix_conv, blk.translation_conv)]
        params = grouped_conv2d(x, convs, groups=g).view(b * g, 6, h, w)  # per group: t00, t01, t10, t11, ty, tx
        ac = first.adapt_conv
        out = _adaptive_conv(x, torch.cat([blk.adapt_conv.weight for blk in blocks]), params, first.regular_matrix,
                             ac.dilation, ac.impl, g)
        out = grouped_batch_norm(out, [blk.bn for blk in blocks])
    else:
        n = 2 if isinstance(first, BasicBlock) else 3
        out = x
        for i in range(1, n + 1):
            out = conv_bn(out, f"conv{i}", f"bn{i}")
            out = F.relu(out, inplace=True) if i < n else out
    residual = x
    if first.downsample is not None:
        residual = conv_bn(x, "0", "1", [blk.downsample for blk in blocks])
    return F.relu(out + residual, inplace=True)


def make_layer(block: type, inplanes: int, planes: int, num_blocks: int, stride: int = 1, dilation: int = 1,
               **block_kwargs) -> nn.Sequential:
    """``num_blocks`` blocks in a Sequential (keys ``0.*``, ``1.*``, ...); the first gets a 1x1 conv-BN
    ``downsample`` when the stride or the channel count changes. Output: ``planes * block.expansion`` channels."""
    out = planes * block.expansion
    layers = [block(inplanes, planes, stride, _downsample(inplanes, out, stride), dilation=dilation, **block_kwargs)]
    layers += [block(out, planes, dilation=dilation, **block_kwargs) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def set_adaptive_impl(module: nn.Module, impl: str) -> nn.Module:
    """Switch every :class:`AdaptiveConv2d` and :class:`ModulatedDeformConv2d` in ``module`` to ``impl``
    (``"grid_sample"`` or ``"deform_conv2d"``)."""
    check_adaptive_impl(impl)
    for m in module.modules():
        if isinstance(m, (AdaptiveConv2d, ModulatedDeformConv2d)):
            m.impl = impl
    return module
