"""The plain Vision Transformer of ViTPose (Xu et al., "ViTPose: Simple Vision Transformer Baselines for Human Pose
Estimation", NeurIPS 2022), after Dosovitskiy et al. (ICLR 2021), as an encoder of person crops.

``(B, 3, H, W) -> (B, C, H / P, W / P)``: a P x P patch embedding (a stride-P convolution, P = 16), the learned
absolute position embedding, ``depth`` pre-norm blocks (multi-head self-attention with a qkv bias, an MLP of ratio 4
with exact GELU, stochastic depth rising linearly from 0 to ``drop_path_rate``), a final LayerNorm, and the tokens
laid back out as a map (token ``(i, j)`` is feature pixel ``(i, j)``, row-major).

Details that follow the official ViTPose ``ViT`` (``mmpose/models/backbones/vit.py``) and are visible in outputs or
state_dicts:

* the patch convolution pads the crop by 2 pixels on each side (the official ``4 + 2 * (ratio // 2 - 1)`` with
  ``ratio = 1``; mmpose 1.x: ``patch_cfg=dict(padding=2)``), so a 256x192 crop gives 16x12 tokens and token ``(i,
  j)`` sees crop pixels ``[16 i - 2, 16 i + 14)`` x ``[16 j - 2, 16 j + 14)``;
* there is no class token, but the position embedding keeps the ``1 + h * w`` entries of the pre-training
  checkpoints: entry 0 (the class token's) is added to every patch token together with the patch's own entry;
* LayerNorm eps 1e-6; parameter names ``patch_embed.proj``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj,
  norm2, mlp.fc1, mlp.fc2}``, ``last_norm``.

A crop of another size than ``img_size`` gets the position embedding resized bicubically at run time (as mmpretrain's
``VisionTransformer``; the official model only takes ``img_size``). :func:`resize_pos_embed` is the same resizing for
checkpoints made at another input size (the official ``load_checkpoint`` and mmpretrain's loading hook).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

#: ViTPose's backbone sizes (official configs ViTPose_{small,base,large,huge}_coco_256x192.py): embedding width,
#: depth and heads; the MLP ratio is 4 for all
VIT_ARCHS = {
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 12},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
}
PATCH_PADDING = 2  # pixels of zero padding around the crop before the patch convolution (official, ratio 1)
LN_EPS = 1e-6


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int],
                     num_extra_tokens: int = 1) -> torch.Tensor:
    """``(1, E + hs * ws, C) -> (1, E + hd * wd, C)``: the first ``E`` (extra-token) entries kept, the patch entries
    laid out as the ``(hs, ws)`` grid (row-major) and resized to ``(hd, wd)`` with bicubic interpolation,
    ``align_corners=False`` (in float32), as the official ViTPose and mmpretrain loaders do."""
    src_grid, dst_grid = tuple(int(v) for v in src_grid), tuple(int(v) for v in dst_grid)
    if src_grid == dst_grid:
        return pos_embed
    _, n, c = pos_embed.shape
    if n != num_extra_tokens + src_grid[0] * src_grid[1]:
        raise ValueError(f"position embedding of {n} entries is not {num_extra_tokens} + {src_grid[0]} x "
                         f"{src_grid[1]}")
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    grid = grid.reshape(1, src_grid[0], src_grid[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=dst_grid, mode="bicubic", align_corners=False).to(pos_embed.dtype)
    return torch.cat([extra, grid.permute(0, 2, 3, 1).reshape(1, -1, c)], dim=1)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, each sample's branch ``x`` is zeroed with probability ``p`` and the kept ones
    scaled by ``1 / (1 - p)``; the identity otherwise."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    """``(B, 3, H, W) -> (B, h * w, C), (h, w)``: a ``patch_size`` convolution of stride ``patch_size`` over the crop
    padded by ``padding`` pixels; ``h = (H + 2 padding - P) // P + 1``."""

    def __init__(self, *, patch_size: int, embed_dim: int, padding: int = PATCH_PADDING, in_channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size, padding=padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, N, C)`` tokens: one ``qkv`` projection, softmax(q k^T / sqrt(d)) v per
    head (d = C / heads), the heads concatenated and projected by ``proj``."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # scale 1 / sqrt(head width), as the official q * scale
        return self.proj(x.transpose(1, 2).reshape(b, n, c))

    def matmul_macs(self, inputs, output) -> int:
        """MACs of ``q k^T`` and ``attn v`` (``2 N^2 C`` per image), for :mod:`bupose.models.complexity`."""
        b, n, c = inputs[0].shape
        return 2 * b * n * n * c


class Mlp(nn.Module):
    """``fc1`` (C -> hidden), exact GELU, ``fc2`` (hidden -> C)."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.drop_path = float(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class ViT(nn.Module):
    """ViTPose's plain ViT: ``(B, 3, H, W) -> (B, embed_dim, H / P, W / P)`` (see the module docstring).

    Args:
        img_size: ``(w, h)`` of the crops the position embedding is made for (each a multiple of ``patch_size``).
        patch_size: P (16).
        embed_dim, depth, num_heads, mlp_ratio: the transformer's width, blocks, heads and MLP ratio
            (:data:`VIT_ARCHS`).
        qkv_bias: biases in the qkv projections (True in all ViTPose configs).
        drop_path_rate: stochastic depth of the last block (block ``i`` of N: ``rate * i / (N - 1)``).

    ``num_layers`` (= depth) and :meth:`layer_id` number the parameters for layer-wise learning-rate decay.
    """

    def __init__(self, *, img_size: Sequence[int] = (192, 256), patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0):
        super().__init__()
        w, h = (int(v) for v in img_size)
        if w % patch_size or h % patch_size or patch_size <= 2 * PATCH_PADDING:
            raise ValueError(f"img_size {(w, h)} (w, h) must be multiples of patch_size {patch_size}, and "
                             f"patch_size > {2 * PATCH_PADDING}")
        self.img_size, self.patch_size = (w, h), int(patch_size)
        self.grid = (h // patch_size, w // patch_size)  # (rows, columns) of tokens for img_size
        self.embed_dim = self.out_channels = int(embed_dim)
        self.num_layers = int(depth)
        self.patch_embed = PatchEmbed(patch_size=patch_size, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # the official float32 values
        self.blocks = nn.ModuleList(Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                          qkv_bias=qkv_bias, drop_path=r) for r in rates)
        self.last_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.init_weights()

    def init_weights(self) -> "ViT":
        """The official initialisation from scratch: linear weights and the position embedding truncated N(0, 0.02)
        (cut at +-2, not +-2 sigma, as timm's ``trunc_normal_``), zero linear biases, LayerNorms (1, 0); the patch
        convolution keeps PyTorch's default."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        return self

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name`` (relative to the backbone) for layer-wise learning-rate decay, numbered as
        the official ViTPose ``get_num_layer_for_vit`` (``mmcv_custom/layer_decay_optimizer_constructor.py``; mmpose
        1.x's ``LayerDecayOptimWrapperConstructor`` is the same): 0 for the patch embedding, the position embedding
        (and a class / mask token), ``i + 1`` for block ``i``, ``num_layers + 1`` for the rest (``last_norm``; the
        head gets ``num_layers + 1`` too)."""
        first = name.split(".")[0]
        if first in ("patch_embed", "pos_embed", "cls_token", "mask_token"):
            return 0
        if first == "blocks":
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x, (h, w) = self.patch_embed(x)
        pos = self.pos_embed
        if (h, w) != self.grid:
            pos = resize_pos_embed(pos, self.grid, (h, w))
        x = x + pos[:, 1:] + pos[:, :1]  # the class token's entry is added to every token (official)
        for block in self.blocks:
            x = block(x)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, -1, h, w)
