"""RTMPose's coordinate-classification head (Jiang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on
MMPose", 2023): a large-kernel convolution to one map per keypoint, each map flattened and projected to a token, a
gated attention unit over the K keypoint tokens (Hua et al., "Transformer Quality in Linear Time", ICML 2022), and
two linear classifiers to SimCC's x and y bins (Li et al., "SimCC", ECCV 2022).

Module and parameter names are mmpose 1.x's (``RTMCCHead``: ``final_layer``, ``mlp.0.g`` (ScaleNorm),
``mlp.1.weight``, ``gau.{uv,o}.weight``, ``gau.gamma``, ``gau.beta``, ``gau.ln.g``, ``gau.res_scale.scale``,
``cls_x.weight``, ``cls_y.weight``), so mmpose RTMPose checkpoints (``head.*``) load unchanged.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

#: GAU activations (mmpose's ``act_fn``)
ACTIVATIONS = {"SiLU": nn.SiLU, "ReLU": nn.ReLU}


class ScaleNorm(nn.Module):
    """Scale norm (Nguyen and Salazar, "Transformers without Tears", 2019): ``g * x / max(||x|| / sqrt(dim), eps)``
    over the last axis, one learnt scalar ``g``: ``(..., dim)`` kept."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    """``x * scale``, a learnt vector (``(..., dim)`` kept); the GAU's residual weight."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016): in training, each sample's ``x`` zeroed with probability ``p``,
    the others divided by ``1 - p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
    return x / keep * mask


class RTMCCBlock(nn.Module):
    """Gated attention unit over tokens: ``(B, N, in_token_dims) -> (B, N, out_token_dims)``.

    ``x' = ScaleNorm(x)``; ``act(uv(x'))`` splits into ``u``, ``v`` ``(B, N, e)`` (``e = in_token_dims *
    expansion_factor``) and a shared ``(B, N, s)`` base; ``q, k = base * gamma[i] + beta[i]``; attention weights
    ``relu(q k^T / sqrt(s))^2`` ``(B, N, N)`` (then dropout); ``o(u * (weights @ v))``, plus ``res_scale * x`` when
    the input and output widths agree (the branch through stochastic depth ``drop_path``).

    Args (mmpose's): num_token: N. in_token_dims, out_token_dims: token widths. expansion_factor: ``e / in``.
        s: width of the queries and keys. eps: of the ScaleNorm. dropout_rate: on the attention weights.
        drop_path: stochastic depth of the branch. act_fn: ``"SiLU"`` or ``"ReLU"``. bias: linear layers' biases.
        use_rel_bias, pos_enc: must be False (the RTMPose configs'; relative position bias and rotary embeddings
        are not implemented). attn_type: ``"self-attn"`` only.
    """

    def __init__(self, num_token: int, in_token_dims: int, out_token_dims: int, *, expansion_factor: float = 2,
                 s: int = 128, eps: float = 1e-5, dropout_rate: float = 0.0, drop_path: float = 0.0,
                 act_fn: str = "SiLU", bias: bool = False, use_rel_bias: bool = False, pos_enc: bool = False,
                 attn_type: str = "self-attn"):
        super().__init__()
        unsupported = [f"{name}={value!r}" for name, value, ok in (
            ("use_rel_bias", use_rel_bias, not use_rel_bias), ("pos_enc", pos_enc, not pos_enc),
            ("attn_type", attn_type, attn_type == "self-attn"), ("act_fn", act_fn, act_fn in ACTIVATIONS))
            if not ok]
        if unsupported:
            raise ValueError(f"RTMCCBlock: {', '.join(unsupported)} is not supported (RTMPose's configs use "
                             f"use_rel_bias=False, pos_enc=False, self-attention, act_fn SiLU or ReLU)")
        if not 0.0 <= dropout_rate < 1.0 or not 0.0 <= drop_path < 1.0:
            raise ValueError(f"RTMCCBlock: dropout_rate and drop_path must be in [0, 1), got {dropout_rate!r}, "
                             f"{drop_path!r}")
        self.num_token, self.s = int(num_token), int(s)
        self.e = int(in_token_dims * expansion_factor)
        self.drop_path_rate, self.dropout_rate = float(drop_path), float(dropout_rate)
        self.uv = nn.Linear(in_token_dims, 2 * self.e + self.s, bias=bias)
        self.gamma = nn.Parameter(torch.rand(2, self.s))
        self.beta = nn.Parameter(torch.rand(2, self.s))
        self.o = nn.Linear(self.e, out_token_dims, bias=bias)
        self.ln = ScaleNorm(in_token_dims, eps=eps)
        self.act_fn = ACTIVATIONS[act_fn](inplace=True)
        self.shortcut = in_token_dims == out_token_dims
        if self.shortcut:
            self.res_scale = Scale(in_token_dims)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.sqrt_s = math.sqrt(self.s)
        nn.init.xavier_uniform_(self.uv.weight)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The gated attention branch: ``(B, N, in) -> (B, N, out)``."""
        u, v, base = torch.split(self.act_fn(self.uv(self.ln(x))), [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(base.unsqueeze(2) * self.gamma[None, None] + self.beta, dim=2)  # (B, N, s) each
        weights = self.dropout(torch.square(torch.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s)))
        return self.o(u * torch.bmm(weights, v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = drop_path(self.attention(x), self.drop_path_rate, self.training)
        return self.res_scale(x) + out if self.shortcut else out


class RTMCCHead(nn.Module):
    """RTMPose's head: ``(B, in_channels, h, w) -> (simcc_x (B, K, Wx), simcc_y (B, K, Wy))`` with ``(w, h) =
    in_featuremap_size``, ``Wx = int(input_size[0] * simcc_split_ratio)``, ``Wy = int(input_size[1] *
    simcc_split_ratio)``: ``final_layer`` (a ``final_layer_kernel_size`` convolution to K maps, same size) ->
    flatten ``(B, K, h * w)`` -> ``mlp`` (ScaleNorm, a linear layer to ``hidden_dims``, no bias) -> ``gau``
    (:class:`RTMCCBlock` over the K tokens) -> ``cls_x`` / ``cls_y`` (linear, no bias).

    Args:
        in_channels: channels of the backbone's features. out_channels: K.
        input_size: ``(w, h)`` of the input crop. in_featuremap_size: ``(w, h)`` of the backbone's features.
        simcc_split_ratio: bins per input pixel. final_layer_kernel_size: RTMPose's 7 (odd; padding ``k // 2``).
        hidden_dims, s, expansion_factor, dropout_rate, drop_path, act_fn, use_rel_bias, pos_enc: mmpose's
            ``gau_cfg`` (RTMPose: 256, 128, 2, 0, 0, ``"SiLU"``, False, False); see :class:`RTMCCBlock`.
    """

    #: names of the two outputs, for :class:`~bupose.methods.topdown.model.TopDownModel`
    output_names = ("simcc_x", "simcc_y")

    def __init__(self, *, in_channels: int, out_channels: int, input_size: Sequence[int],
                 in_featuremap_size: Sequence[int], simcc_split_ratio: float = 2.0, final_layer_kernel_size: int = 7,
                 hidden_dims: int = 256, s: int = 128, expansion_factor: float = 2, dropout_rate: float = 0.0,
                 drop_path: float = 0.0, act_fn: str = "SiLU", use_rel_bias: bool = False, pos_enc: bool = False):
        super().__init__()
        if final_layer_kernel_size < 1 or final_layer_kernel_size % 2 != 1:
            raise ValueError(f"RTMCCHead: final_layer_kernel_size must be a positive odd integer (the maps keep "
                             f"their size), got {final_layer_kernel_size!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.input_size = tuple(int(v) for v in input_size)
        self.in_featuremap_size = tuple(int(v) for v in in_featuremap_size)
        self.simcc_split_ratio = float(simcc_split_ratio)
        flatten = self.in_featuremap_size[0] * self.in_featuremap_size[1]
        self.final_layer = nn.Conv2d(in_channels, out_channels, final_layer_kernel_size, 1,
                                     final_layer_kernel_size // 2)
        self.mlp = nn.Sequential(ScaleNorm(flatten), nn.Linear(flatten, hidden_dims, bias=False))
        self.gau = RTMCCBlock(out_channels, hidden_dims, hidden_dims, expansion_factor=expansion_factor, s=s,
                              dropout_rate=dropout_rate, drop_path=drop_path, act_fn=act_fn,
                              use_rel_bias=use_rel_bias, pos_enc=pos_enc)
        self.cls_x = nn.Linear(hidden_dims, int(self.input_size[0] * self.simcc_split_ratio), bias=False)
        self.cls_y = nn.Linear(hidden_dims, int(self.input_size[1] * self.simcc_split_ratio), bias=False)

    def init_weights(self) -> "RTMCCHead":
        """mmpose's ``default_init_cfg``: convolutions N(0, 0.001), every linear layer (the GAU's too) N(0, 0.01),
        biases 0; ScaleNorm and the GAU's scales and offsets as constructed."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)
        return self

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(x, (tuple, list)):
            x = x[-1]
        if tuple(x.shape[-2:]) != self.in_featuremap_size[::-1]:
            raise ValueError(f"RTMCCHead: features of {tuple(x.shape[-2:])} (h, w), expected "
                             f"{self.in_featuremap_size[::-1]}: is the input crop {self.input_size} (w, h)?")
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(x), 2)))  # (B, K, hidden_dims)
        return self.cls_x(tokens), self.cls_y(tokens)
