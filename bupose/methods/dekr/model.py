"""The DEKR network (Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled Keypoint Regression", CVPR 2021)
on an HRNet backbone (Sun et al., CVPR 2019).

Two heads read the backbone's concatenated stride-4 features:

* heatmap head: 1x1 conv-BN-ReLU to ``HEAD_HEATMAP.NUM_CHANNELS``, ``NUM_BLOCKS`` residual blocks, a
  ``FINAL_CONV_KERNEL`` conv to K + 1 maps (the K keypoints, then the person centre);
* disentangled offset head: 1x1 conv-BN-ReLU to ``K * NUM_CHANNELS_PERKPT`` channels, split into K groups; each
  joint has its own ``NUM_BLOCKS`` adaptive blocks and a conv to its (x, y) offset from the person centre.

The K offset branches are kept as K modules (the official parameter names), but by default they run fused: each
stage once for all joints, with the branches' weights concatenated in forward into grouped convolutions, one batch
norm over all K * C channels and the adaptive convolutions' sampling with the joints in the batch dimension
(:func:`~bupose.models.layers.fused_block`). That is the same function with the same parameters, gradients and
batch-norm statistics as the per-branch loop (kept: ``fused_offset_head=False`` /
:meth:`DEKR.set_fused_offset_head`), with K times fewer, larger operations. By default (``None``) the fused path is
used with the ``grid_sample`` adaptive convolution; with ``deform_conv2d`` (whose CPU kernel gained nothing from
fusion, measured) it needs ``True``. Modules with hooks, or branches that differ in kind or settings, run in the loop.

Parameter names equal the official ones (the model subclasses :class:`~bupose.models.backbones.HRNet`, so the
backbone's keys are not prefixed), hence official checkpoints load as they are.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from bupose.errors import ConfigError
from bupose.models.backbones.hrnet import HRNet
from bupose.models.layers import (BLOCKS, can_fuse, check_adaptive_impl, conv_bn_relu, fused_block, grouped_conv2d,
                                  has_hooks, init_conv_bn, make_layer, set_adaptive_impl)

_SPEC_FIELDS = {
    "STAGES": None, "FINAL_CONV_KERNEL": None, "PRETRAINED_LAYERS": None,
    "STEM_BLOCKS": None,  # bupose extension (optional, default 4): Bottlenecks in the stem, for small models
    "INIT": None,  # bupose extension (optional, default official): "kaiming" for training from scratch
    "OFFSET_SCALE": None,  # bupose extension (optional, default 1): offsets = offset head output x this
    "HEAD_HEATMAP": ("BLOCK", "NUM_BLOCKS", "NUM_CHANNELS", "DILATION_RATE"),
    "HEAD_OFFSET": ("BLOCK", "NUM_BLOCKS", "NUM_CHANNELS_PERKPT", "DILATION_RATE"),
}


def _check_spec(spec: Mapping) -> None:
    unknown = [k for k in spec if k not in _SPEC_FIELDS]
    missing = [k for k in _SPEC_FIELDS if k not in ("PRETRAINED_LAYERS", "STEM_BLOCKS", "INIT", "OFFSET_SCALE") and k not in spec]
    if unknown or missing:
        raise ConfigError(f"MODEL.SPEC for hrnet_dekr: missing fields {missing}, unknown fields {unknown}")
    for head, fields in _SPEC_FIELDS.items():
        if fields is None:
            continue
        if set(spec[head]) != set(fields):
            raise ConfigError(f"MODEL.SPEC.{head} must have exactly the fields {list(fields)}, got {list(spec[head])}")
        if spec[head]["BLOCK"] not in BLOCKS:
            raise ConfigError(f"MODEL.SPEC.{head}.BLOCK must be one of {list(BLOCKS)}, got {spec[head]['BLOCK']!r}")
    if spec["FINAL_CONV_KERNEL"] not in (1, 3):
        raise ConfigError(f"MODEL.SPEC.FINAL_CONV_KERNEL must be 1 or 3, got {spec['FINAL_CONV_KERNEL']!r}")


class DEKR(HRNet):
    """DEKR: ``(B, 3, H, W) -> {"heatmap": (B, K+1, H/4, W/4), "offset": (B, 2K, H/4, W/4)}``.

    ``heatmap`` channels are the K keypoints then the person centre; ``offset`` channels are ``(x, y)`` pairs per
    joint k, as in the official model: at output cell ``p`` near a person's centre, ``p - joint_k`` in output-map
    cells (so the regressed joint is ``p - offset``).

    Args:
        stages: ``MODEL.SPEC.STAGES`` of the HRNet backbone.
        num_joints: K.
        heatmap_channels, heatmap_blocks, heatmap_block, heatmap_dilation: ``MODEL.SPEC.HEAD_HEATMAP``'s
            NUM_CHANNELS, NUM_BLOCKS, BLOCK, DILATION_RATE.
        offset_channels_per_joint, offset_blocks, offset_block, offset_dilation: ``MODEL.SPEC.HEAD_OFFSET``'s
            NUM_CHANNELS_PERKPT, NUM_BLOCKS, BLOCK, DILATION_RATE.
        final_conv_kernel: 1 or 3, the heads' last convolutions.
        adaptive_impl: ``"grid_sample"`` (default; ONNX-exportable) or ``"deform_conv2d"``.
        stem_blocks: Bottleneck blocks in the stem's ``layer1`` (4 as in HRNet).
        fused_offset_head: run the K offset branches fused (``True``) or one by one (``False``), same results;
            ``None`` (default): fused with ``grid_sample``, one by one with ``deform_conv2d``.
        init: ``"official"`` (every conv N(0, 0.001), as the official code before it loads ImageNet weights) or
            ``"kaiming"`` (He-normal convs, the heads' last convs N(0, 0.001)), much faster when training from
            scratch (the synthetic quick start).
        offset_scale: the offset head's output is multiplied by this (1 as the official model). Offsets are
            several output cells long while the last convolution starts near zero and Adam moves each weight by
            about the learning rate per step, so a larger scale lets a from-scratch model reach the offsets'
            range in fewer iterations (``MODEL.SPEC.OFFSET_SCALE``, a bupose field).
    """

    def __init__(self, *, stages: Mapping, num_joints: int, heatmap_channels: int = 32, heatmap_blocks: int = 1,
                 heatmap_block: str = "BASIC", heatmap_dilation: int = 1, offset_channels_per_joint: int = 15,
                 offset_blocks: int = 2, offset_block: str = "ADAPTIVE", offset_dilation: int = 1,
                 final_conv_kernel: int = 1, adaptive_impl: str = "grid_sample", stem_blocks: int = 4,
                 fused_offset_head: bool | None = None, init: str = "official", offset_scale: float = 1.0):
        super().__init__(stages=stages, stem_blocks=stem_blocks)
        check_adaptive_impl(adaptive_impl, "adaptive_impl")
        self.num_joints = num_joints
        self.fused_offset_head = fused_offset_head
        self.offset_prekpt = offset_channels_per_joint
        self.offset_scale = float(offset_scale)
        k, pad = final_conv_kernel, final_conv_kernel // 2

        def head_layer(block_name, channels, n, dilation):
            block = BLOCKS[block_name]
            extra = {"impl": adaptive_impl} if block_name == "ADAPTIVE" else {}
            return make_layer(block, channels, channels, n, dilation=dilation, **extra), channels * block.expansion

        self.transition_heatmap = conv_bn_relu(self.out_channels, heatmap_channels, 1)
        layer, c = head_layer(heatmap_block, heatmap_channels, heatmap_blocks, heatmap_dilation)
        self.head_heatmap = nn.ModuleList([layer, nn.Conv2d(c, num_joints + 1, k, 1, pad)])

        self.transition_offset = conv_bn_relu(self.out_channels, num_joints * offset_channels_per_joint, 1)
        features, finals = [], []
        for _ in range(num_joints):
            layer, c = head_layer(offset_block, offset_channels_per_joint, offset_blocks, offset_dilation)
            features.append(layer)
            finals.append(nn.Conv2d(c, 2, k, 1, pad))
        self.offset_feature_layers = nn.ModuleList(features)
        self.offset_final_layer = nn.ModuleList(finals)
        self.init_weights(init)

    # -- the checkpoint hook (see bupose.methods) -----------------------------------------------------------------
    method_name = "hrnet_dekr"

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model in a bupose or official DEKR checkpoint, checked against the model (see
        :func:`bupose.methods.dekr.convert.official_to_bupose`); used by
        :func:`bupose.engine.checkpoint.load_checkpoint`."""
        from bupose.methods.dekr.convert import official_to_bupose

        return official_to_bupose(checkpoint, self)

    @classmethod
    def from_spec(cls, spec: Mapping, num_joints: int, adaptive_impl: str = "grid_sample") -> "DEKR":
        """Build from an official experiment file's ``MODEL.SPEC`` dict (unchanged) and the keypoint count.
        ``PRETRAINED_LAYERS`` is accepted and not used here (pretrained weights are loaded separately)."""
        _check_spec(spec)
        hm, off = spec["HEAD_HEATMAP"], spec["HEAD_OFFSET"]
        return cls(stages=spec["STAGES"], num_joints=num_joints, heatmap_channels=hm["NUM_CHANNELS"],
                   heatmap_blocks=hm["NUM_BLOCKS"], heatmap_block=hm["BLOCK"], heatmap_dilation=hm["DILATION_RATE"],
                   offset_channels_per_joint=off["NUM_CHANNELS_PERKPT"], offset_blocks=off["NUM_BLOCKS"],
                   offset_block=off["BLOCK"], offset_dilation=off["DILATION_RATE"],
                   final_conv_kernel=spec["FINAL_CONV_KERNEL"], adaptive_impl=adaptive_impl,
                   stem_blocks=spec.get("STEM_BLOCKS", 4), init=spec.get("INIT", "official"),
                   offset_scale=spec.get("OFFSET_SCALE", 1.0))

    def init_weights(self, init: str = "official") -> None:
        """The official training initialisation: convs N(0, 0.001) with zero bias, BN (1, 0), and the adaptive
        blocks' transform and translation convs zero (each adaptive conv starts by sampling its centre 9 times).
        ``init="kaiming"`` draws the convs before the last ones He-normal (fan-out) instead."""
        init_conv_bn(self, init, keep_small=[self.head_heatmap[-1], *self.offset_final_layer])
        for name, p in self.named_parameters():
            if ".transform_matrix_conv." in name or ".translation_conv." in name:
                nn.init.zeros_(p)

    @property
    def adaptive_impl(self) -> str:
        impls = {m.adapt_conv.impl for m in self.modules() if hasattr(m, "adapt_conv")}
        return impls.pop() if len(impls) == 1 else "mixed" if impls else "none"

    def set_adaptive_impl(self, impl: str) -> "DEKR":
        """Switch the adaptive convolutions to ``"grid_sample"`` or ``"deform_conv2d"`` (same weights)."""
        return set_adaptive_impl(self, impl)

    def set_fused_offset_head(self, fused: bool | None = True) -> "DEKR":
        """Run the K offset branches fused (one grouped call per stage), one by one (``False``; same results) or
        as the default (``None``: fused with ``grid_sample`` only)."""
        self.fused_offset_head = None if fused is None else bool(fused)
        return self

    @property
    def offset_head_is_fused(self) -> bool:
        """Whether :meth:`offset_head` runs the fused path now (the setting, and the branches allow it)."""
        layers, finals = self.offset_feature_layers, self.offset_final_layer
        fused = self.fused_offset_head
        if fused is None:  # the blocks' impl (can_fuse below checks that all branches agree)
            fused = getattr(getattr(layers[0][0] if len(layers[0]) else None, "adapt_conv", None), "impl", "") \
                != "deform_conv2d"
        return (fused and not any(has_hooks(m) for m in (layers, finals, *layers))
                and all(can_fuse([layer[i] for layer in layers]) for i in range(len(layers[0])))
                and can_fuse(list(finals)))

    def offset_head(self, offset_feats: torch.Tensor) -> torch.Tensor:
        """The K branches: ``(B, K*C, H, W)`` (``transition_offset``'s output) -> offsets ``(B, 2K, H, W)``."""
        layers, finals = self.offset_feature_layers, self.offset_final_layer
        if self.offset_head_is_fused:
            x = offset_feats
            for i in range(len(layers[0])):  # block i of every joint at once: (B, K*C, H, W) -> (B, K*C', H, W)
                x = fused_block(x, [layer[i] for layer in layers])
            return grouped_conv2d(x, list(finals))
        c = self.offset_prekpt
        return torch.cat([final(layer(offset_feats[:, j * c:(j + 1) * c]))
                          for j, (layer, final) in enumerate(zip(layers, finals))], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.forward_features(x)
        heatmap = self.head_heatmap[1](self.head_heatmap[0](self.transition_heatmap(feats)))
        offset = self.offset_head(self.transition_offset(feats))
        if self.offset_scale != 1.0:
            offset = offset * self.offset_scale
        return {"heatmap": heatmap, "offset": offset}


def build_dekr(spec: Mapping, num_joints: int, adaptive_impl: str = "grid_sample") -> DEKR:
    """DEKR from an official experiment file's ``MODEL.SPEC`` dict (unchanged) and K (``DATASET.NUM_JOINTS``)."""
    return DEKR.from_spec(spec, num_joints, adaptive_impl)
