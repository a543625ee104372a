"""ViTPose in the top-down family (Xu et al., "ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation",
NeurIPS 2022): a plain ViT (:class:`~bupose.models.backbones.vit.ViT`, stride 16) and one of two decoders to
stride-4 heatmaps, ``(B, 3, H, W) -> {"heatmaps": (B, K, H / 4, W / 4)}``:

* ``classic``: two stride-2 4x4 transposed convolutions (256 channels, BN, ReLU) and a 1x1 convolution
  (:class:`~bupose.methods.topdown.heads.HeatmapHead`);
* ``simple``: :class:`ViTPoseSimpleHead`, ReLU, bilinear upsampling x4 and a 3x3 convolution.

``MODEL.NAME: topdown_vit``; ``MODEL.SPEC`` (all fields optional but the size):

=====================  =========================================================================================
``ARCH``               ``small``, ``base``, ``large`` or ``huge`` (:data:`~bupose.models.backbones.vit.VIT_ARCHS`),
                       or instead all three of ``EMBED_DIM``, ``DEPTH``, ``NUM_HEADS``
``MLP_RATIO``          4; ``QKV_BIAS``: true; ``PATCH_SIZE``: 16
``DROP_PATH_RATE``     stochastic depth of the last block, 0 (official configs: S 0.1, B 0.3, L 0.5, H 0.55)
``DECODER``            ``classic`` (default) or ``simple``
``NUM_DECONV_FILTERS`` classic: ``[256, 256]``; ``NUM_DECONV_KERNELS``: ``[4, 4]`` (one per halving from
                       ``PATCH_SIZE`` to stride 4)
``FINAL_CONV_KERNEL``  1 (classic) or 3 (simple) by default
``INIT``               the head's initialisation, ``official`` (N(0, 0.001)) or ``kaiming``; the ViT is always
                       initialised as the official one
``PRETRAINED_LAYERS``  ``['*']``: backbone modules (``patch_embed``, ``pos_embed``, ``blocks``, ``last_norm``)
                       that ``MODEL.PRETRAINED`` (MAE / ImageNet ViT weights) fills
=====================  =========================================================================================

The position embedding is made for the codec's ``input_size`` (``MODEL.IMAGE_SIZE``; 192x256 without a codec).
The codec is a heatmap codec: the official configs train with UDP (``UDPHeatmap``, sigma 2, UDP crops).
Checkpoints: :mod:`bupose.methods.topdown.vitpose_convert`.
"""
from __future__ import annotations

import difflib
import logging
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from bupose.errors import ConfigError
from bupose.methods.topdown.heads import HeatmapHead
from bupose.methods.topdown.method import TopDownMethod
from bupose.methods.topdown.model import TopDownModel
from bupose.methods.topdown.vitpose_convert import OFFICIAL_KEYS
from bupose.models.backbones.vit import VIT_ARCHS, ViT
from bupose.models.layers import INITS, init_conv_bn

log = logging.getLogger("bupose")

HEATMAP_STRIDE = 4
DECODERS = ("classic", "simple")
#: optional MODEL.SPEC fields and their defaults (None: derived, see the module docstring)
VIT_DEFAULTS = {"ARCH": None, "EMBED_DIM": None, "DEPTH": None, "NUM_HEADS": None, "MLP_RATIO": 4.0,
                "QKV_BIAS": True, "PATCH_SIZE": 16, "DROP_PATH_RATE": 0.0, "DECODER": "classic",
                "NUM_DECONV_FILTERS": None, "NUM_DECONV_KERNELS": None, "FINAL_CONV_KERNEL": None,
                "INIT": "official", "PRETRAINED_LAYERS": ["*"]}
_SIZE_FIELDS = ("EMBED_DIM", "DEPTH", "NUM_HEADS")


class ViTPoseSimpleHead(nn.Module):
    """ViTPose's simple decoder: ``(B, C, h, w) -> (B, K, h * s, w * s)`` as ``final_layer(upsample(relu(x)))``,
    the upsampling bilinear with ``align_corners=False`` by the factor ``s`` (4), the last layer a 3x3 convolution
    (padding 1, with bias). The order is the official ``TopdownHeatmapSimpleHead`` with ``upsample=4``
    (``_transform_inputs``: ``resize(relu(x))``; no deconvolutions) and mmpose 1.x's ``FeatureMapProcessor(
    scale_factor=4, apply_relu=True)`` neck before its ``HeatmapHead``; its one parameter name, ``final_layer``, is
    theirs.

    Args:
        in_channels: C. out_channels: K. scale_factor: s. final_conv_kernel: 3 (official) or 1.
    """

    def __init__(self, *, in_channels: int, out_channels: int, scale_factor: int = 4, final_conv_kernel: int = 3):
        super().__init__()
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"final_conv_kernel must be 1 or 3, got {final_conv_kernel!r}")
        self.in_channels, self.out_channels, self.scale_factor = in_channels, out_channels, int(scale_factor)
        self.final_layer = nn.Conv2d(in_channels, out_channels, final_conv_kernel, 1, final_conv_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(F.relu(x), scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return self.final_layer(x)


class TopDownViT(TopDownModel):
    """:class:`TopDownModel` with a :class:`~bupose.models.backbones.vit.ViT` backbone, ViTPose (``MODEL.NAME``
    ``topdown_vit``; built by :func:`build_topdown_vit`)."""

    method_name = "topdown_vit"

    def init_weights(self, init: str = "official") -> "TopDownViT":
        """The ViT as the official ``ViT.init_weights`` (see :meth:`ViT.init_weights`); the head as
        :meth:`TopDownModel.init_weights` (``init`` for its convolutions, the last one N(0, 0.001))."""
        self.backbone.init_weights()
        init_conv_bn(self.head, init, keep_small=[self.head.final_layer])
        return self

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model from a bupose, official ViTPose or mmpose 1.x ViTPose checkpoint (position
        embedding resized to this model's grid), checked against the model (CheckpointError saying what differs)."""
        from bupose.methods.topdown.vitpose_convert import vitpose_to_bupose

        return vitpose_to_bupose(checkpoint, self)


def _fail(key: str, want: str, got) -> ConfigError:
    return ConfigError(f"MODEL.SPEC.{key} must be {want}, got {got!r}")


def _int(spec: Mapping, key: str, minimum: int = 1) -> int:
    v = spec[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise _fail(key, f"an integer >= {minimum}", v)
    return v


def _number(spec: Mapping, key: str, low: float, high: float | None, what: str) -> float:
    v = spec[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < low or (high is not None and v >= high):
        raise _fail(key, what, v)
    return float(v)


def _choice(spec: Mapping, key: str, allowed) -> str:
    v = spec[key]
    if v not in allowed:
        hint = difflib.get_close_matches(str(v), [str(a) for a in allowed], n=1)
        raise ConfigError(f"MODEL.SPEC.{key} must be one of {list(allowed)}, got {v!r}"
                          + (f"; did you mean {hint[0]!r}?" if hint else ""))
    return v


def check_vit_spec(spec: Mapping) -> dict:
    """``MODEL.SPEC`` of ``topdown_vit`` with the defaults filled in and the derived values resolved (the size from
    ``ARCH``, the decoder's fields); ConfigError naming a bad, unknown or missing field and what it should be."""
    from bupose.methods.topdown.model import _check_fields

    spec = _check_fields(spec, "topdown_vit", (), VIT_DEFAULTS)
    given = [k for k in _SIZE_FIELDS if spec[k] is not None]
    if spec["ARCH"] is not None:
        _choice(spec, "ARCH", list(VIT_ARCHS))
        if given:
            raise ConfigError(f"MODEL.SPEC.{given[0]} and MODEL.SPEC.ARCH both give the ViT's size; give ARCH "
                              f"({list(VIT_ARCHS)}) or all of {list(_SIZE_FIELDS)}")
        spec.update({k.upper(): v for k, v in VIT_ARCHS[spec["ARCH"]].items()})
    elif len(given) < len(_SIZE_FIELDS):
        missing = next(k for k in _SIZE_FIELDS if spec[k] is None)
        raise ConfigError(f"MODEL.SPEC.{missing} is missing: give MODEL.SPEC.ARCH ({list(VIT_ARCHS)}) or all of "
                          f"{list(_SIZE_FIELDS)}")
    for key in _SIZE_FIELDS:
        _int(spec, key)
    if spec["EMBED_DIM"] % spec["NUM_HEADS"]:
        raise _fail("EMBED_DIM", f"a multiple of NUM_HEADS ({spec['NUM_HEADS']})", spec["EMBED_DIM"])
    _number(spec, "MLP_RATIO", 1e-9, None, "a number > 0")
    _number(spec, "DROP_PATH_RATE", 0.0, 1.0, "a number in [0, 1)")
    if not isinstance(spec["QKV_BIAS"], bool):
        raise _fail("QKV_BIAS", "true or false", spec["QKV_BIAS"])
    patch = _int(spec, "PATCH_SIZE", minimum=8)
    decoder = _choice(spec, "DECODER", DECODERS)
    _choice(spec, "INIT", INITS)
    layers = spec["PRETRAINED_LAYERS"]
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(x, str) for x in layers):
        raise _fail("PRETRAINED_LAYERS", "a list of backbone module names (or ['*'])", layers)
    if spec["FINAL_CONV_KERNEL"] is None:
        spec["FINAL_CONV_KERNEL"] = 1 if decoder == "classic" else 3
    _choice(spec, "FINAL_CONV_KERNEL", (1, 3))
    if decoder == "simple":
        for key in ("NUM_DECONV_FILTERS", "NUM_DECONV_KERNELS"):
            if spec[key] not in (None, [], ()):
                raise ConfigError(f"MODEL.SPEC.{key} is a field of the classic decoder; the simple decoder "
                                  f"(MODEL.SPEC.DECODER simple) has no deconvolutions: leave it out")
        if patch % HEATMAP_STRIDE:
            raise _fail("PATCH_SIZE", f"a multiple of {HEATMAP_STRIDE} (the simple decoder upsamples by "
                                      f"PATCH_SIZE / {HEATMAP_STRIDE})", patch)
        return spec
    n = (patch // HEATMAP_STRIDE).bit_length() - 1
    if patch != HEATMAP_STRIDE << n:
        raise _fail("PATCH_SIZE", f"{HEATMAP_STRIDE} x a power of 2 (the classic decoder's stride-2 "
                                  f"deconvolutions go from PATCH_SIZE to stride {HEATMAP_STRIDE})", patch)
    for key, default, allowed in (("NUM_DECONV_FILTERS", 256, None), ("NUM_DECONV_KERNELS", 4, (2, 3, 4))):
        if spec[key] is None:
            spec[key] = [default] * n
        v = spec[key]
        if (not isinstance(v, (list, tuple)) or len(v) != n
                or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
                or (allowed is not None and not all(x in allowed for x in v))):
            what = "positive integers" if allowed is None else f"of {list(allowed)}"
            raise _fail(key, f"{n} values {what} (one stride-2 deconvolution per halving from PATCH_SIZE {patch} to "
                             f"stride {HEATMAP_STRIDE})", v)
    return spec


def _input_size(codec) -> tuple[int, int]:
    if codec is None:
        return 192, 256
    from bupose.codecs import MSRAHeatmap, UDPHeatmap

    if not isinstance(codec, (MSRAHeatmap, UDPHeatmap)):
        raise ConfigError(f"topdown_vit (ViTPose) predicts heatmaps: MODEL.CODEC must be MSRAHeatmap or UDPHeatmap "
                          f"(the official configs: UDPHeatmap), got {type(codec).__name__}")
    return tuple(int(v) for v in codec.input_size)


def build_topdown_vit(spec: Mapping, num_joints: int, codec=None) -> TopDownViT:
    """ViTPose from ``MODEL.SPEC`` (:func:`check_vit_spec`) and K; ``codec``: the heatmap codec, whose
    ``input_size`` (w, h) sizes the position embedding (192x256 without one)."""
    spec = check_vit_spec(spec)
    input_size = _input_size(codec)
    patch = spec["PATCH_SIZE"]
    if input_size[0] % patch or input_size[1] % patch:
        raise ConfigError(f"MODEL.IMAGE_SIZE {list(input_size)} must be a multiple of MODEL.SPEC.PATCH_SIZE {patch} "
                          f"for topdown_vit")
    backbone = ViT(img_size=input_size, patch_size=patch, embed_dim=spec["EMBED_DIM"], depth=spec["DEPTH"],
                   num_heads=spec["NUM_HEADS"], mlp_ratio=spec["MLP_RATIO"], qkv_bias=spec["QKV_BIAS"],
                   drop_path_rate=spec["DROP_PATH_RATE"])
    if spec["DECODER"] == "simple":
        head = ViTPoseSimpleHead(in_channels=backbone.out_channels, out_channels=num_joints,
                                 scale_factor=patch // HEATMAP_STRIDE, final_conv_kernel=spec["FINAL_CONV_KERNEL"])
    else:
        head = HeatmapHead(in_channels=backbone.out_channels, out_channels=num_joints,
                           deconv_out_channels=spec["NUM_DECONV_FILTERS"],
                           deconv_kernel_sizes=spec["NUM_DECONV_KERNELS"],
                           final_conv_kernel=spec["FINAL_CONV_KERNEL"])
    return TopDownViT(backbone=backbone, head=head, pretrained_layers=spec["PRETRAINED_LAYERS"]).init_weights(
        spec["INIT"])


class TopDownViTMethod(TopDownMethod):
    """``MODEL.NAME: topdown_vit`` (ViTPose); ``MODEL.SPEC`` as :mod:`bupose.methods.topdown.vitpose` describes."""

    name = "topdown_vit"
    title = "ViTPose"
    official_keys = OFFICIAL_KEYS  # the checkpoint hook (bupose.methods): recognises official ViTPose checkpoints

    def load_pretrained(self, model, path) -> None:
        """``MODEL.PRETRAINED``: MAE / ImageNet ViT weights (timm / official names, or mmpretrain's) into the
        backbone (``MODEL.SPEC.PRETRAINED_LAYERS``), the position embedding resized to the model's grid, as the
        official ``load_checkpoint``; the head keeps its initialisation."""
        from bupose.methods.topdown.vitpose_convert import load_pretrained_vit

        got = load_pretrained_vit(getattr(model, "module", model), path)
        log.info("MODEL.PRETRAINED: %d ViT entries loaded from %s (%d of the file unused: %s)", len(got["loaded"]),
                 path, len(got["unused"]), ", ".join(got["unused"][:6]))
