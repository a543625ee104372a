"""The AdaptivePose network (Xiao et al., "AdaptivePose: Human Parts as Adaptive Points", AAAI 2022; AdaptivePose++,
arXiv 2210.04014) on an HRNet backbone (Sun et al., CVPR 2019) or on DLA-34 (Yu et al., CVPR 2018), as the official
HRNet and DLA variants (github.com/buptxyb666/AdaptivePose) build it: :class:`AdaptivePose` and
:class:`DLAAdaptivePose`, the heads shared (:class:`AdaptivePoseHeads`).

A person is its centre plus one *adaptive point* per body part (COCO: face, shoulders, left/right elbow-wrist,
hips, left/right knee-ankle; CrowdPose: the same with head-neck instead of the face). Keypoints are reached in two
hops: centre -> the part's adaptive point -> the part's keypoints.

* backbone: HRNet; only its highest-resolution (stride 4) branch is used: the last module of the last stage fuses
  into that branch alone, as in the official model (so its ``fuse_layers`` has one row). Or DLA-34 with CenterNet's
  deformable up-sampling path (:mod:`bupose.models.backbones.dla`), 64 channels at stride 4;
* ``hm`` and ``hps``: 3x3 conv (with bias) + ReLU from the backbone to ``head_channels`` (256): the centre and the
  keypoint features (two such convs each on DLA-34, as officially);
* ``sampler.searcher``: 3x3 conv, keypoint features -> the adaptive points, ``(dx, dy)`` per part (the first hop);
* Part Perception Module, per part ``p``: ``sampler.feat_trans[p]`` (1x1 conv-BN-ReLU to ``part_channels``, 64),
  ``sampler.feat_agg[p]`` (modulated 3x3 deformable conv, DCNv2), features warped to the adaptive point, and
  ``sampler.pred_kps_list[p]`` (1x1 conv) regressing the part's keypoints from there (the second hop);
* Enhanced Centre-aware Branch: ``sampler.ct_feat_trans`` (1x1 conv) of the centre features warped to every
  adaptive point, concatenated with the centre features, ``sampler.squeeze_ct`` (3x3 conv + ReLU) and
  ``sampler.pred_ct_hm`` (1x1 conv) -> the centre heatmap;
* ``hm_hp`` (training only, optional): 3x3 conv + ReLU (two on DLA-34) + 1x1 conv -> auxiliary keypoint heatmaps.

Parameter names equal the official (master-branch) ones, so official checkpoints load as they are (see
``convert.py``). The official DCNv2 op and the flownet2 ``Resample2d`` warp are replaced by
:func:`~bupose.models.layers.modulated_deform_conv2d` (``grid_sample`` gathering by default, or
:func:`torchvision.ops.deform_conv2d` with mask) and :func:`warp` (``grid_sample``), which compute the same.

Coordinates: output cell ``(i, j)`` (row, column) is the point ``(x, y) = (j, i)`` in output-map pixels (a
stride of 4 input pixels; pixel centres at integers, CenterNet's convention). All offsets are ``(dx, dy)`` in
output-map pixels, relative to the cell that predicts them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from bupose.data.keypoints import KeypointSpec, get_spec
from bupose.errors import ConfigError
from bupose.models.backbones.dla import DLA34_CHANNELS, DLA34_LEVELS, DLAUpBackbone, check_dla_layout
from bupose.models.backbones.hrnet import HRNet
from bupose.models.layers import ModulatedDeformConv2d


@dataclass(frozen=True)
class BodyPart:
    """A body part: its name and the names of its keypoints, in the order its regression head outputs them."""

    name: str
    keypoints: tuple[str, ...]


def _limbs() -> tuple[BodyPart, ...]:
    return (BodyPart("shoulder", ("left_shoulder", "right_shoulder")),
            BodyPart("left_elbow_wrist", ("left_elbow", "left_wrist")),
            BodyPart("right_elbow_wrist", ("right_elbow", "right_wrist")),
            BodyPart("hip", ("left_hip", "right_hip")),
            BodyPart("left_knee_ankle", ("left_knee", "left_ankle")),
            BodyPart("right_knee_ankle", ("right_knee", "right_ankle")))


#: the official part lists per keypoint layout (``KeypointSpec.name``); the order is that of the official modules
PARTS: dict[str, tuple[BodyPart, ...]] = {
    "coco": (BodyPart("face", ("nose", "left_eye", "right_eye", "left_ear", "right_ear")),) + _limbs(),
    "crowdpose": _limbs() + (BodyPart("head", ("head", "neck")),),
}


def body_parts(keypoint_spec: KeypointSpec | str,
               parts: Sequence[BodyPart | Sequence] | None = None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The parts of a keypoint layout as ``((name, keypoint indices), ...)``.

    ``parts`` (optional; ``BodyPart`` or ``[name, [keypoint names]]`` items) overrides the official table
    :data:`PARTS`. Every keypoint of the layout must belong to exactly one part."""
    spec = get_spec(keypoint_spec) if isinstance(keypoint_spec, str) else keypoint_spec
    if parts is None:
        if spec.name not in PARTS:
            raise ConfigError(f"AdaptivePose has no body-part table for the keypoint layout {spec.name!r} (known: "
                              f"{sorted(PARTS)}); give the parts in MODEL.SPEC.PARTS as [name, [keypoint names]]")
        parts = PARTS[spec.name]
    parts = [p if isinstance(p, BodyPart) else BodyPart(str(p[0]), tuple(p[1])) for p in parts]
    out, seen = [], {}
    for part in parts:
        if not part.keypoints:
            raise ConfigError(f"AdaptivePose body part {part.name!r} has no keypoints")
        for name in part.keypoints:
            if name not in spec.names:
                raise ConfigError(f"AdaptivePose body part {part.name!r}: keypoint {name!r} is not in the "
                                  f"{spec.name!r} layout {list(spec.names)}")
            if name in seen:
                raise ConfigError(f"keypoint {name!r} is in two AdaptivePose body parts: {seen[name]!r} and "
                                  f"{part.name!r}")
            seen[name] = part.name
        out.append((part.name, tuple(spec.index(n) for n in part.keypoints)))
    lost = [n for n in spec.names if n not in seen]
    if lost:
        raise ConfigError(f"keypoints {lost} of the {spec.name!r} layout are in no AdaptivePose body part")
    return tuple(out)


def warp(features: torch.Tensor, displacement: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """``features`` sampled at every cell displaced by ``displacement``: the official ``Resample2d`` warp.

    ``features``: ``(B, C, H, W)``; ``displacement``: ``(B, 2, H, W)``, ``(dx, dy)`` in pixels. Output ``(B, C, H,
    W)``: at cell ``(i, j)``, ``features`` bilinearly interpolated at ``(x, y) = (j + dx, i + dy)``, the point clamped
    into ``[0, W - 1] x [0, H - 1]`` (``grid_sample`` with ``align_corners=True`` and border padding); an integer
    point returns that pixel.

    ``align_corners=False`` reproduces the official ``new_ops`` branch run on PyTorch >= 1.3 (it normalises the
    points for ``align_corners=True`` but calls ``grid_sample`` with the new default, ``False``): it samples at
    ``(x W / (W - 1) - 1/2, y H / (H - 1) - 1/2)`` instead, clamped the same way."""
    b, _, h, w = displacement.shape
    # integer ranges cast to the dtype (the same values): ONNX has no float16 Range, so a half export needs this
    xs = torch.arange(w, device=displacement.device).to(displacement.dtype).view(1, 1, w)
    ys = torch.arange(h, device=displacement.device).to(displacement.dtype).view(1, h, 1)
    gx = (xs + displacement[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + displacement[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)


class _ConvBNReLU(nn.Module):
    """conv (bias only without BN), BN or nothing, ReLU; keys ``conv.*``, ``bn.*`` as the official module."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, with_bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2,
                              bias=not with_bn)
        self.bn = nn.BatchNorm2d(out_channels) if with_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class AdaptivePointHead(nn.Module):
    """The Part Perception Module and the Enhanced Centre-aware Branch (the official ``Feat_sampler``).

    ``forward(kps_feat, ct_feat)``, both ``(B, head_channels, H, W)`` -> ``(offset (B, 2K, H, W), centre logits
    (B, 1, H, W), adaptive points (B, 2P, H, W))`` with the layouts of :class:`AdaptivePose`.

    Args:
        parts: ``((name, keypoint indices), ...)``, the body parts in module order (:func:`body_parts`).
        head_channels: channels of the centre and keypoint features.
        part_channels: channels of the per-part features (official: 64).
        warp_align_corners: :func:`warp`'s ``align_corners`` (``True``: the official master branch).
    """

    def __init__(self, *, parts: Sequence[tuple[str, Sequence[int]]], head_channels: int = 256,
                 part_channels: int = 64, warp_align_corners: bool = True):
        super().__init__()
        self.warp_align_corners = warp_align_corners
        self.part_names = tuple(name for name, _ in parts)
        self.part_sizes = tuple(len(kps) for _, kps in parts)
        p = len(parts)
        self.searcher = nn.Conv2d(head_channels, 2 * p, 3, padding=1)
        self.feat_trans = nn.ModuleList(_ConvBNReLU(head_channels, part_channels, 1) for _ in range(p))
        self.feat_agg = nn.ModuleList(ModulatedDeformConv2d(part_channels, part_channels) for _ in range(p))
        self.pred_kps_list = nn.ModuleList(nn.Conv2d(part_channels, 2 * n, 1) for n in self.part_sizes)
        self.ct_feat_trans = nn.Conv2d(head_channels, part_channels, 1)
        self.squeeze_ct = _ConvBNReLU(part_channels * p + head_channels, part_channels, 3, with_bn=False)
        self.pred_ct_hm = nn.Conv2d(part_channels, 1, 1)
        # channel c of the keypoint-ordered offsets is channel order[c] of the part-ordered ones
        part_order = [k for _, kps in parts for k in kps]
        position = {k: i for i, k in enumerate(part_order)}
        order = [2 * position[k] + c for k in range(len(part_order)) for c in (0, 1)]
        self.register_buffer("keypoint_channels", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, kps_feat: torch.Tensor, ct_feat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        points = self.searcher(kps_feat)
        ct_proj = self.ct_feat_trans(ct_feat)
        centre_feats, offsets = [ct_feat], []
        for i, n in enumerate(self.part_sizes):
            point = points[:, 2 * i:2 * i + 2]
            part_feat = warp(self.feat_agg[i](self.feat_trans[i](kps_feat)), point, self.warp_align_corners)
            offsets.append(self.pred_kps_list[i](part_feat) + point.repeat(1, n, 1, 1))
            centre_feats.append(warp(ct_proj, point, self.warp_align_corners))
        offset = torch.cat(offsets, dim=1).index_select(1, self.keypoint_channels)
        centre = self.pred_ct_hm(self.squeeze_ct(torch.cat(centre_feats, dim=1)))
        return offset, centre, points


def _branch(in_channels: int, channels: int, convs: int, out_channels: int = 0) -> nn.Sequential:
    """``convs`` x (3x3 conv with bias, ReLU), then a 1x1 conv to ``out_channels`` when given: keys ``0``, ``2``,
    ... as the official heads."""
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    if out_channels:
        layers.append(nn.Conv2d(channels, out_channels, 1))
    return nn.Sequential(*layers)


class AdaptivePoseHeads:
    """The AdaptivePose heads on a backbone's stride-4 features, shared by :class:`AdaptivePose` (HRNet) and
    :class:`DLAAdaptivePose` (DLA-34); a mixin for an ``nn.Module`` backbone.

    ``hm`` / ``hps``: ``branch_convs`` x (3x3 conv + ReLU) to ``head_channels`` (official: one for HRNet, two for
    DLA-34); ``hm_hp``: the same plus a 1x1 conv to the keypoint heatmaps; ``sampler``: :class:`AdaptivePointHead`.
    """

    backbone = ""  # "hrnet" or "dla34": the official model family, for the checkpoint converter

    def _add_heads(self, *, in_channels: int, parts: Sequence[tuple[str, Sequence[int]]], head_channels: int,
                   part_channels: int, aux_heatmap: bool, branch_convs: int, warp_align_corners: bool) -> None:
        keypoints = sorted(k for _, kps in parts for k in kps)
        if keypoints != list(range(len(keypoints))) or not keypoints:
            raise ConfigError(f"AdaptivePose parts must hold the keypoints 0..K-1 once each, got {list(parts)}")
        self.num_joints = len(keypoints)
        self.hm = _branch(in_channels, head_channels, branch_convs)
        self.hps = _branch(in_channels, head_channels, branch_convs)
        self.hm_hp = _branch(in_channels, head_channels, branch_convs, self.num_joints) if aux_heatmap else None
        self.sampler = AdaptivePointHead(parts=parts, head_channels=head_channels, part_channels=part_channels,
                                         warp_align_corners=warp_align_corners)

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model in a bupose or official AdaptivePose checkpoint of its backbone, checked
        against the model (see :func:`bupose.methods.adaptive_pose.convert.official_to_bupose`); with the class's
        ``method_name``, the checkpoint hook (see :mod:`bupose.methods`) used by
        :func:`bupose.engine.checkpoint.load_checkpoint`."""
        from bupose.methods.adaptive_pose.convert import official_to_bupose

        return official_to_bupose(checkpoint, self)

    @property
    def part_names(self) -> tuple[str, ...]:
        return self.sampler.part_names

    @property
    def num_parts(self) -> int:
        return len(self.sampler.part_names)

    def init_weights(self) -> None:
        """The official training initialisation of the heads (the backbone keeps its own; it is normally loaded
        from ImageNet weights): the adaptive points start at the centre (``searcher`` zero), the heatmap logits at
        -2.19, the keypoint regressors N(0, 0.001) with zero bias, the deformable convs with zero offsets, ``hps``'
        biases zero."""
        for m in self.hps:
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        if self.hm_hp is not None:
            nn.init.constant_(self.hm_hp[-1].bias, -2.19)
        s = self.sampler
        nn.init.zeros_(s.searcher.weight)
        nn.init.zeros_(s.searcher.bias)
        nn.init.constant_(s.pred_ct_hm.bias, -2.19)
        for conv in s.pred_kps_list:
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)
        for dcn in s.feat_agg:
            dcn.reset_parameters()

    def predict(self, feats: torch.Tensor, with_aux: bool | None = None) -> dict[str, torch.Tensor]:
        """The outputs (see :class:`AdaptivePose`) from the backbone's stride-4 features."""
        offset, centre, points = self.sampler(self.hps(feats), self.hm(feats))
        out = {"center": centre, "offset": offset, "part_offset": points}
        if self.hm_hp is not None and (self.training if with_aux is None else with_aux):
            out["aux_heatmap"] = self.hm_hp(feats)
        return out


class AdaptivePose(HRNet, AdaptivePoseHeads):
    """AdaptivePose: ``(B, 3, H, W) ->`` a dict with, at the output stride 4 (``h, w = ceil(H/4), ceil(W/4)``):

    * ``"center"``: ``(B, 1, h, w)`` person-centre heatmap *logits* (the official model's ``hm``; apply a sigmoid);
    * ``"offset"``: ``(B, 2K, h, w)``: channels ``(2k, 2k+1)`` are ``(dx, dy)`` of keypoint ``k`` (the keypoint
      spec's order) from the cell: for a person whose centre is cell ``(i, j)``, keypoint ``k`` is at
      ``(j + dx, i + dy)`` in output-map pixels (official ``hps``);
    * ``"part_offset"``: ``(B, 2P, h, w)``: the adaptive points, ``(dx, dy)`` of part ``p`` (in :attr:`part_names`
      order) from the cell, same units (official ``ap``); each part's keypoint offsets include it;
    * ``"aux_heatmap"``: ``(B, K, h, w)`` keypoint heatmap logits (official ``hm_hp``); only with ``with_aux``
      (default: in training mode) and a model built with ``aux_heatmap=True``.

    Args:
        stages: ``MODEL.SPEC.STAGES`` of the HRNet backbone.
        parts: ``((name, keypoint indices), ...)`` (:func:`body_parts`); K is the number of keypoints in them.
        head_channels: channels of the centre/keypoint feature convs (official: 256).
        part_channels: channels of the per-part features (official: 64).
        aux_heatmap: build the auxiliary keypoint-heatmap head ``hm_hp`` (used for training only).
        stem_blocks: Bottleneck blocks in the stem's ``layer1`` (4 as in HRNet).
        warp_align_corners: ``True`` (default): the official master branch's warp; ``False``: that of the
            ``new_ops`` branch on PyTorch >= 1.3, for models trained with it (see :func:`warp`).
    """

    backbone = "hrnet"
    method_name = "hrnet_adaptive_pose"  # the checkpoint hook (see bupose.methods), with convert_checkpoint

    def __init__(self, *, stages: Mapping, parts: Sequence[tuple[str, Sequence[int]]], head_channels: int = 256,
                 part_channels: int = 64, aux_heatmap: bool = True, stem_blocks: int = 4,
                 warp_align_corners: bool = True):
        super().__init__(stages=stages, stem_blocks=stem_blocks)
        last = getattr(self, f"stage{self.num_stages + 1}")[-1]
        if last.fuse_layers is not None:  # the official last module outputs the highest resolution only
            last.fuse_layers = nn.ModuleList([last.fuse_layers[0]])
        self.out_channels = last.out_channels[0]
        self._add_heads(in_channels=self.out_channels, parts=parts, head_channels=head_channels,
                        part_channels=part_channels, aux_heatmap=aux_heatmap, branch_convs=1,
                        warp_align_corners=warp_align_corners)
        self.init_weights()

    @classmethod
    def from_spec(cls, spec: Mapping, keypoint_spec: KeypointSpec | str) -> "AdaptivePose":
        """Build from a ``MODEL.SPEC`` dict (see :func:`build_adaptive_pose`) and the keypoint layout."""
        _check_spec(spec)
        return cls(stages=spec["STAGES"], parts=body_parts(keypoint_spec, spec.get("PARTS")),
                   head_channels=spec.get("HEAD_CHANNELS", 256), part_channels=spec.get("PART_CHANNELS", 64),
                   aux_heatmap=spec.get("AUX_HEATMAP", True), stem_blocks=spec.get("STEM_BLOCKS", 4),
                   warp_align_corners=spec.get("WARP_ALIGN_CORNERS", True))

    def forward(self, x: torch.Tensor, with_aux: bool | None = None) -> dict[str, torch.Tensor]:
        return self.predict(self.forward_branches(x)[0], with_aux)


class DLAAdaptivePose(DLAUpBackbone, AdaptivePoseHeads):
    """AdaptivePose on DLA-34 (the official ``--arch dla_34`` model): the outputs of :class:`AdaptivePose` from the
    stride-4, 64-channel features of :class:`~bupose.models.backbones.dla.DLAUpBackbone`; ``H`` and ``W`` must be
    multiples of 32 (``h, w = H/4, W/4``). The centre and keypoint branches (and ``hm_hp``) have two 3x3 conv + ReLU
    each, as officially for DLA. Keys as the official model, whose state_dict also holds the ImageNet classifier
    ``base.fc`` (unused; dropped by the checkpoint converter).

    Args:
        parts: ``((name, keypoint indices), ...)`` (:func:`body_parts`).
        levels / channels: the DLA layout (default DLA-34; smaller ones for tests).
        head_channels: channels of the centre/keypoint branches (official ``head_conv``: 256).
        part_channels: channels of the per-part features (official: 64).
        aux_heatmap: build the training-only keypoint-heatmap head ``hm_hp``.
        warp_align_corners: as :class:`AdaptivePose`.
    """

    backbone = "dla34"
    method_name = "dla_adaptive_pose"  # the checkpoint hook (see bupose.methods), with convert_checkpoint

    def __init__(self, *, parts: Sequence[tuple[str, Sequence[int]]], levels: Sequence[int] = DLA34_LEVELS,
                 channels: Sequence[int] = DLA34_CHANNELS, head_channels: int = 256, part_channels: int = 64,
                 aux_heatmap: bool = True, warp_align_corners: bool = True):
        super().__init__(levels=levels, channels=channels)
        self._add_heads(in_channels=self.out_channels, parts=parts, head_channels=head_channels,
                        part_channels=part_channels, aux_heatmap=aux_heatmap, branch_convs=2,
                        warp_align_corners=warp_align_corners)
        self.init_weights()

    @classmethod
    def from_spec(cls, spec: Mapping, keypoint_spec: KeypointSpec | str) -> "DLAAdaptivePose":
        """Build from a ``MODEL.SPEC`` dict (see :func:`build_dla_adaptive_pose`) and the keypoint layout."""
        _check_spec(spec, _DLA_SPEC_FIELDS, required=(), name="dla_adaptive_pose")
        levels, channels = spec.get("LEVELS", list(DLA34_LEVELS)), spec.get("CHANNELS", list(DLA34_CHANNELS))
        check_dla_layout(levels, channels)
        return cls(parts=body_parts(keypoint_spec, spec.get("PARTS")), levels=levels, channels=channels,
                   head_channels=spec.get("HEAD_CHANNELS", 256), part_channels=spec.get("PART_CHANNELS", 64),
                   aux_heatmap=spec.get("AUX_HEATMAP", True),
                   warp_align_corners=spec.get("WARP_ALIGN_CORNERS", True))

    def forward(self, x: torch.Tensor, with_aux: bool | None = None) -> dict[str, torch.Tensor]:
        return self.predict(self.forward_features(x), with_aux)


_SPEC_FIELDS = ("STAGES", "PRETRAINED_LAYERS", "STEM_BLOCKS", "HEAD_CHANNELS", "PART_CHANNELS", "AUX_HEATMAP",
                "WARP_ALIGN_CORNERS", "PARTS")
_DLA_SPEC_FIELDS = ("LEVELS", "CHANNELS", "PRETRAINED_LAYERS", "HEAD_CHANNELS", "PART_CHANNELS", "AUX_HEATMAP",
                    "WARP_ALIGN_CORNERS", "PARTS")


def _check_spec(spec: Mapping, fields: Sequence[str] = _SPEC_FIELDS, required: Sequence[str] = ("STAGES",),
                name: str = "hrnet_adaptive_pose") -> None:
    unknown = [k for k in spec if k not in fields]
    missing = [k for k in required if k not in spec]
    if unknown or missing:
        hint = ""
        if "STAGES" in unknown:
            hint = "; STAGES is the HRNet layout (MODEL.NAME hrnet_adaptive_pose)"
        elif any(k in unknown for k in ("LEVELS", "CHANNELS")):
            hint = "; LEVELS / CHANNELS are the DLA layout (MODEL.NAME dla_adaptive_pose)"
        raise ConfigError(f"MODEL.SPEC for {name}: missing fields {missing}, unknown fields {unknown} "
                          f"(known: {list(fields)}){hint}")
    for key in ("HEAD_CHANNELS", "PART_CHANNELS", "STEM_BLOCKS"):
        value = spec.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"MODEL.SPEC.{key} must be a positive integer, got {value!r}")
    for key in ("AUX_HEATMAP", "WARP_ALIGN_CORNERS"):
        if not isinstance(spec.get(key, True), bool):
            raise ConfigError(f"MODEL.SPEC.{key} must be true or false, got {spec[key]!r}")


def build_adaptive_pose(spec: Mapping, keypoint_spec: KeypointSpec | str) -> AdaptivePose:
    """AdaptivePose from a ``MODEL.SPEC`` dict and the keypoint layout (a :class:`KeypointSpec` or its name).

    ``MODEL.SPEC`` fields: ``STAGES`` (the HRNet layout, as in the DEKR experiment files; official W32: channels
    32/64/128/256, NUM_MODULES [1, 4, 3], 4 blocks per branch); optional ``HEAD_CHANNELS`` (256),
    ``PART_CHANNELS`` (64), ``AUX_HEATMAP`` (true), ``STEM_BLOCKS`` (4), ``WARP_ALIGN_CORNERS`` (true; false for
    models trained with the official ``new_ops`` branch, see :func:`warp`), ``PRETRAINED_LAYERS`` (not used here),
    ``PARTS`` (``[[name, [keypoint names]], ...]``; default: the official parts of the layout, :data:`PARTS`)."""
    return AdaptivePose.from_spec(spec, keypoint_spec)


def build_dla_adaptive_pose(spec: Mapping, keypoint_spec: KeypointSpec | str) -> DLAAdaptivePose:
    """AdaptivePose on DLA-34 from a ``MODEL.SPEC`` dict (every field optional; empty: the official model) and the
    keypoint layout.

    ``MODEL.SPEC`` fields: ``LEVELS`` (``[1, 1, 1, 2, 2, 1]``) and ``CHANNELS`` (``[16, 32, 64, 128, 256, 512]``),
    the DLA layout (DLA-34; change them for small test models only: official weights need DLA-34);
    ``HEAD_CHANNELS`` (256), ``PART_CHANNELS`` (64), ``AUX_HEATMAP`` (true), ``WARP_ALIGN_CORNERS`` (true),
    ``PRETRAINED_LAYERS`` (used by ``MODEL.PRETRAINED`` only) and ``PARTS`` as :func:`build_adaptive_pose`."""
    return DLAAdaptivePose.from_spec(spec, keypoint_spec)
