"""Top-down pose networks: a backbone and a head, one person crop in, keypoint maps out.

* ``topdown_hrnet``: HRNet (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation",
  CVPR 2019); the highest-resolution branch (stride 4) and a final convolution.
* ``topdown_resnet``: SimpleBaseline (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV
  2018); ResNet, three stride-2 deconvolutions back to stride 4, and a final convolution.

Keys are ``backbone.*`` and ``head.*`` (as mmpose 1.x); the official deep-high-resolution-net checkpoints (flat
names) convert with :mod:`bupose.methods.topdown.convert`. Both factories take the official experiment file's
``MODEL.EXTRA`` block unchanged as ``MODEL.SPEC``; fields left out take the official defaults
(``lib/config/models.py``), except the structure (HRNet's ``STAGE2``..``STAGE4``, ResNet's ``NUM_LAYERS``).
bupose adds optional fields for small from-scratch models: ``INIT: kaiming`` (He-normal convolutions instead of the
official N(0, 0.001), much faster to train without ImageNet weights), HRNet's ``STEM_BLOCKS`` (Bottlenecks in
``layer1``, 4) and ResNet's ``BASE_CHANNELS`` (planes of ``layer1``, 64).

With a :class:`~bupose.codecs.SimCCLabel` codec (``codec=``) the same backbones get a
:class:`~bupose.methods.topdown.heads.SimCCHead` instead (SimCC, Li et al., ECCV 2022; mmpose's
``simcc_res50``: the SimpleBaseline deconvolutions, a 1x1 convolution, two linear layers), and the model returns
``{"simcc_x": (B, K, Wx), "simcc_y": (B, K, Wy)}``.

With a :class:`~bupose.codecs.RegressionLabel` codec they get RLE's
:class:`~bupose.methods.topdown.heads.RLEHead` (Li et al., "Human Pose Regression with Residual Log-likelihood
Estimation", ICCV 2021; mmpose's ``td-reg_res50_rle``: global average pooling, one linear layer; the deconvolution
fields of ``MODEL.SPEC`` are not used), and the model returns ``{"coords": (B, K, 4)}`` (mu normalised to the crop,
sigma).
"""
from __future__ import annotations

import difflib
from typing import Callable, Mapping

import torch
import torch.nn as nn

from bupose.errors import ConfigError
from bupose.methods.topdown.heads import DECONV_PADDING, HeatmapHead, RLEHead, SimCCHead
from bupose.models.backbones.hrnet import EXTRA_STAGES, HRNet, stages_from_extra
from bupose.models.backbones.resnet import RESNET_LAYERS, ResNet
from bupose.models.layers import INITS, init_conv_bn

#: optional fields and their defaults (the official ones, plus bupose's INIT / STEM_BLOCKS / BASE_CHANNELS)
HRNET_DEFAULTS = {"FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": ["*"], "STEM_INPLANES": 64, "STEM_BLOCKS": 4,
                  "INIT": "official"}
RESNET_DEFAULTS = {"DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3, "NUM_DECONV_FILTERS": [256, 256, 256],
                   "NUM_DECONV_KERNELS": [4, 4, 4], "FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": ["*"],
                   "BASE_CHANNELS": 64, "INIT": "official"}


class TopDownModel(nn.Module):
    """``backbone`` then ``head``: ``(B, 3, H, W) -> {"heatmaps": (B, K, H/4, W/4)}`` for the heatmap heads; a head
    returning a tuple names its outputs by its ``output_names`` (SimCC: ``{"simcc_x": (B, K, Wx), "simcc_y": (B, K,
    Wy)}``).

    Args:
        backbone: ``(B, 3, H, W) -> (B, C, h, w)`` features.
        head: features to K keypoint maps (its ``out_channels`` is K).
        pretrained_layers: the official ``PRETRAINED_LAYERS``: which backbone modules (first name component, or
            ``"*"``) :func:`~bupose.methods.topdown.convert.load_pretrained_backbone` takes from ImageNet weights.
    """

    method_name = "topdown"  # the checkpoint hook (see bupose.methods), with convert_checkpoint; the subclasses
    # built by the factories carry their MODEL.NAME, the name a bupose training checkpoint records

    def __init__(self, *, backbone: nn.Module, head: nn.Module, pretrained_layers=("*",)):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pretrained_layers = tuple(pretrained_layers)

    @property
    def num_joints(self) -> int:
        return self.head.out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.backbone(x))
        if isinstance(out, tuple):
            return dict(zip(self.head.output_names, out))
        return {"heatmaps": out}

    def init_weights(self, init: str = "official") -> "TopDownModel":
        """The official initialisation: convolutions and deconvolutions N(0, 0.001) with zero bias, BN (1, 0).
        ``init="kaiming"``: all but the head's last convolution He-normal (fan-out) instead. A head with
        ``output_layers()`` (SimCC's linear layers) has those N(0, 0.01) with zero bias (mmpose's) and its
        convolutions follow ``init``."""
        outputs = getattr(self.head, "output_layers", None)
        final = getattr(self.head, "final_layer", None)
        init_conv_bn(self, init, keep_small=[final] if final is not None and outputs is None else [])
        for layer in outputs() if outputs is not None else ():
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        return self

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model from a bupose, official deep-high-resolution-net or mmpose checkpoint,
        checked against the model (CheckpointError saying what differs)."""
        from bupose.methods.topdown.convert import official_to_bupose

        return official_to_bupose(checkpoint, self)


class TopDownHRNet(TopDownModel):
    """:class:`TopDownModel` with an :class:`~bupose.models.backbones.HRNet` backbone (``MODEL.NAME``
    ``topdown_hrnet``; built by :func:`build_topdown_hrnet`)."""

    method_name = "topdown_hrnet"


class TopDownResNet(TopDownModel):
    """:class:`TopDownModel` with a :class:`~bupose.models.backbones.ResNet` backbone, SimpleBaseline
    (``MODEL.NAME`` ``topdown_resnet``; built by :func:`build_topdown_resnet`)."""

    method_name = "topdown_resnet"


def _check_fields(spec: Mapping, name: str, required: tuple, defaults: Mapping) -> dict:
    """``spec`` with the defaults filled in; ConfigError naming an unknown or missing field."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"MODEL.SPEC for {name} must be a dict (the official MODEL.EXTRA), got {type(spec).__name__}")
    known = list(required) + list(defaults)
    for key in spec:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(f"MODEL.SPEC.{key} is not a field of {name}" + (f"; did you mean {hint[0]}?" if hint
                                                                                 else f"; known: {known}"))
    missing = [k for k in required if k not in spec]
    if missing:
        raise ConfigError(f"MODEL.SPEC.{missing[0]} is missing (required by {name})")
    return {**defaults, **spec}


def _check_int(spec: Mapping, key: str, allowed=None, minimum: int = 1) -> int:
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or (allowed is not None and v not in allowed) or (
            allowed is None and v < minimum):
        want = f"one of {sorted(allowed)}" if allowed is not None else f"an integer >= {minimum}"
        raise ConfigError(f"MODEL.SPEC.{key} must be {want}, got {v!r}")
    return v


def _check_common(spec: Mapping) -> None:
    _check_int(spec, "FINAL_CONV_KERNEL", (1, 3))
    if spec["INIT"] not in INITS:
        raise ConfigError(f"MODEL.SPEC.INIT must be one of {list(INITS)}, got {spec['INIT']!r}")
    layers = spec["PRETRAINED_LAYERS"]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(x, str) for x in layers) or not layers:
        raise ConfigError(f"MODEL.SPEC.PRETRAINED_LAYERS must be a list of module names (or ['*']), got {layers!r}")


def is_simcc(codec) -> bool:
    """Whether ``codec`` is a SimCC codec (the model then needs a SimCC head)."""
    from bupose.codecs.simcc import SimCCLabel

    return isinstance(codec, SimCCLabel)


def is_regression(codec) -> bool:
    """Whether ``codec`` is a coordinate-regression codec (the model then needs RLE's regression head)."""
    from bupose.codecs.regression import RegressionLabel

    return isinstance(codec, RegressionLabel)


def feature_size(input_size, halvings: int) -> tuple[int, int]:
    """``(w, h)`` of a backbone's features after ``halvings`` stride-2 steps (each ``ceil(n / 2)``, as a 3x3 / 7x7
    convolution or max-pool with the usual padding)."""
    out = []
    for n in input_size:
        for _ in range(halvings):
            n = (int(n) + 1) // 2
        out.append(n)
    return tuple(out)


def _simcc_head(codec, spec: Mapping, in_channels: int, num_joints: int, halvings: int, deconv_out_channels=None,
                deconv_kernel_sizes=None) -> SimCCHead:
    if spec["FINAL_CONV_KERNEL"] != 1:
        raise ConfigError(f"MODEL.SPEC.FINAL_CONV_KERNEL must be 1 with a SimCC codec (mmpose's SimCC head), got "
                          f"{spec['FINAL_CONV_KERNEL']!r}")
    return SimCCHead(in_channels=in_channels, out_channels=num_joints, input_size=codec.input_size,
                     in_featuremap_size=feature_size(codec.input_size, halvings),
                     simcc_split_ratio=codec.simcc_split_ratio, deconv_out_channels=deconv_out_channels,
                     deconv_kernel_sizes=deconv_kernel_sizes, final_layer_kernel_size=1)


def build_topdown_hrnet(spec: Mapping, num_joints: int, codec=None) -> TopDownHRNet:
    """Top-down HRNet from the official ``MODEL.EXTRA`` (``STAGE2``..``STAGE4``, ``FINAL_CONV_KERNEL``,
    ``PRETRAINED_LAYERS``, ``STEM_INPLANES``; bupose: ``STEM_BLOCKS``, ``INIT``) and K; with a SimCC ``codec`` a
    :class:`SimCCHead` on the stride-4 features (a 1x1 convolution, no deconvolutions)."""
    spec = _check_fields(spec, "topdown_hrnet", EXTRA_STAGES, HRNET_DEFAULTS)
    _check_common(spec)
    if spec["STEM_INPLANES"] != 64:
        raise ConfigError(f"MODEL.SPEC.STEM_INPLANES must be 64 (the official model's fixed stem), "
                          f"got {spec['STEM_INPLANES']!r}")
    backbone = HRNet(stages=stages_from_extra(spec), stem_blocks=_check_int(spec, "STEM_BLOCKS"),
                     multi_scale_output=False)
    if is_simcc(codec):
        head = _simcc_head(codec, spec, backbone.out_channels, num_joints, halvings=2)
    elif is_regression(codec):
        head = RLEHead(in_channels=backbone.out_channels, num_joints=num_joints)
    else:
        head = HeatmapHead(in_channels=backbone.out_channels, out_channels=num_joints, deconv_out_channels=None,
                           deconv_kernel_sizes=None, final_conv_kernel=spec["FINAL_CONV_KERNEL"])
    return TopDownHRNet(backbone=backbone, head=head, pretrained_layers=spec["PRETRAINED_LAYERS"]).init_weights(
        spec["INIT"])


def build_topdown_resnet(spec: Mapping, num_joints: int, codec=None) -> TopDownResNet:
    """SimpleBaseline from the official pose_resnet ``MODEL.EXTRA`` (``NUM_LAYERS``, ``DECONV_WITH_BIAS``,
    ``NUM_DECONV_LAYERS``, ``NUM_DECONV_FILTERS``, ``NUM_DECONV_KERNELS``, ``FINAL_CONV_KERNEL``,
    ``PRETRAINED_LAYERS``; bupose: ``BASE_CHANNELS``, ``INIT``) and K; with a SimCC ``codec`` a
    :class:`SimCCHead` with the same deconvolutions (mmpose's ``simcc_res50``)."""
    spec = _check_fields(spec, "topdown_resnet", ("NUM_LAYERS",), RESNET_DEFAULTS)
    _check_common(spec)
    depth = _check_int(spec, "NUM_LAYERS", RESNET_LAYERS)
    n = _check_int(spec, "NUM_DECONV_LAYERS", minimum=0)
    for key, allowed in (("NUM_DECONV_FILTERS", None), ("NUM_DECONV_KERNELS", DECONV_PADDING)):
        v = spec[key]
        if (not isinstance(v, (list, tuple)) or len(v) != n
                or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
                or (allowed is not None and not all(x in allowed for x in v))):
            what = "positive integers" if allowed is None else f"of {sorted(allowed)}"
            raise ConfigError(f"MODEL.SPEC.{key} must be {n} (NUM_DECONV_LAYERS) values {what}, got {v!r}")
    if not isinstance(spec["DECONV_WITH_BIAS"], bool):
        raise ConfigError(f"MODEL.SPEC.DECONV_WITH_BIAS must be true or false, got {spec['DECONV_WITH_BIAS']!r}")
    backbone = ResNet(depth=depth, base_channels=_check_int(spec, "BASE_CHANNELS"))
    if is_regression(codec):  # mmpose's td-reg_res50_rle: global average pooling and RLEHead, no deconvolutions
        head = RLEHead(in_channels=backbone.out_channels, num_joints=num_joints)
    elif is_simcc(codec):
        if spec["DECONV_WITH_BIAS"]:
            raise ConfigError("MODEL.SPEC.DECONV_WITH_BIAS must be false with a SimCC codec (mmpose's SimCC head)")
        head = _simcc_head(codec, spec, backbone.out_channels, num_joints, halvings=5,
                           deconv_out_channels=spec["NUM_DECONV_FILTERS"],
                           deconv_kernel_sizes=spec["NUM_DECONV_KERNELS"])
    else:
        head = HeatmapHead(in_channels=backbone.out_channels, out_channels=num_joints,
                           deconv_out_channels=spec["NUM_DECONV_FILTERS"],
                           deconv_kernel_sizes=spec["NUM_DECONV_KERNELS"], deconv_with_bias=spec["DECONV_WITH_BIAS"],
                           final_conv_kernel=spec["FINAL_CONV_KERNEL"])
    return TopDownResNet(backbone=backbone, head=head, pretrained_layers=spec["PRETRAINED_LAYERS"]).init_weights(
        spec["INIT"])


def _build_topdown_cspnext(spec: Mapping, num_joints: int, codec=None) -> TopDownModel:
    from bupose.methods.topdown.rtmpose import build_topdown_cspnext  # RTMPose's module imports this one

    return build_topdown_cspnext(spec, num_joints, codec=codec)


def _build_topdown_vit(spec: Mapping, num_joints: int, codec=None) -> TopDownModel:
    from bupose.methods.topdown.vitpose import build_topdown_vit  # imported here: vitpose imports this module

    return build_topdown_vit(spec, num_joints, codec=codec)


#: ``MODEL.NAME`` -> factory ``(spec, num_joints, codec=None) -> TopDownModel``
FACTORIES: dict[str, Callable[..., TopDownModel]] = {
    "topdown_hrnet": build_topdown_hrnet,
    "topdown_resnet": build_topdown_resnet,
    "topdown_vit": _build_topdown_vit,
    "topdown_cspnext": _build_topdown_cspnext,
}


def build_topdown_model(name: str, spec: Mapping, num_joints: int, codec=None) -> TopDownModel:
    """The top-down model ``name`` (a key of :data:`FACTORIES`) from ``MODEL.SPEC`` (the official ``MODEL.EXTRA``,
    unchanged) and K (``MODEL.NUM_JOINTS``); ``codec``: a :class:`~bupose.codecs.SimCCLabel` selects the SimCC head
    (its ``input_size`` and ``simcc_split_ratio`` size the head), a :class:`~bupose.codecs.RegressionLabel` RLE's
    regression head, anything else (or None) the heatmap head."""
    if name not in FACTORIES:
        raise ConfigError(f"unknown top-down model {name!r}; known: {list(FACTORIES)}")
    if not isinstance(num_joints, int) or isinstance(num_joints, bool) or num_joints < 1:
        raise ConfigError(f"MODEL.NUM_JOINTS must be a positive integer, got {num_joints!r}")
    return FACTORIES[name](spec, num_joints, codec=codec)
