"""Checkpoints of top-down heatmap models (HRNet, Sun et al., CVPR 2019; SimpleBaseline, Xiao et al., ECCV 2018)
to bupose's :class:`~bupose.methods.topdown.model.TopDownModel` keys (``backbone.*``, ``head.*``).

Layouts read (plain state_dicts, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers, ``module.`` prefixes):

* official deep-high-resolution-net (``pose_hrnet_w32_256x192.pth``, ``pose_resnet_50_256x192.pth``): flat names;
  ``deconv_layers.*`` and ``final_layer.*`` are the head, everything else the backbone;
* mmpose 0.x (``backbone.*``, ``keypoint_head.*``) and mmpose 1.x / bupose (``backbone.*``, ``head.*``; the
  ``HeatmapHead`` names ``deconv_layers`` and ``final_layer``; the ``SimCCHead`` names ``deconv_head.*`` or
  ``final_layer``, and ``mlp_head_x`` / ``mlp_head_y``: SimCC, Li et al., ECCV 2022; the ``RLEHead`` names ``fc``
  and ``loss_module.flow_model.*``, mmpose 0.x ``keypoint_head.loss.flow_model.*``: RLE, Li et al., ICCV 2021).

The backbone and head module names are those of the official code, so the mapping is a prefix. A checkpoint of
another structure is refused with a CheckpointError that says what differs (backbone, depth or width, keypoint
count, deconvolutions). ImageNet classification weights (torchvision ResNet, the official HRNet ImageNet models;
``MODEL.PRETRAINED``) load into the backbone only, with :func:`load_pretrained_backbone`.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from bupose.engine.checkpoint import check_same_architecture, plain_state_dict, shorten_keys
from bupose.errors import CheckpointError

#: the last convolution of the heatmap head, per layout (official, mmpose 0.x, mmpose 1.x / bupose)
FINAL_KEYS = {"official": "final_layer.weight", "mmpose0": "keypoint_head.final_layer.weight",
              "bupose": "head.final_layer.weight"}
#: keys every official deep-high-resolution-net state_dict has (stem and the final convolution)
SIGNATURE_KEYS = ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "final_layer.weight")
#: keys of every official top-down HRNet / SimpleBaseline state_dict (for the method classes' ``official_keys``)
HRNET_SIGNATURE_KEYS = SIGNATURE_KEYS + ("stage4.0.branches.0.0.conv1.weight",)
RESNET_SIGNATURE_KEYS = SIGNATURE_KEYS + ("layer4.0.conv1.weight", "deconv_layers.0.weight")
_HEAD_PREFIXES = ("deconv_layers.", "final_layer.")
#: a SimCC head's x classifier (mmpose 1.x / bupose keys)
SIMCC_KEY = "head.mlp_head_x.weight"
_CLASSIFIER_KEYS = ("fc.weight", "classifier.weight")
#: an RLE head's linear layer (mmpose 1.x / bupose keys; mmpose 0.x: ``keypoint_head.fc.weight``)
RLE_KEY = "head.fc.weight"
RLE_KEY_MMPOSE0 = "keypoint_head.fc.weight"


def checkpoint_layout(state_dict: Mapping) -> str | None:
    """``"official"``, ``"mmpose0"`` or ``"bupose"`` (also mmpose 1.x): which top-down layout ``state_dict`` (plain)
    has; ``None`` for anything else (ImageNet classification weights included)."""
    if any(k in state_dict for k in _CLASSIFIER_KEYS) or any(k.startswith("incre_modules.") for k in state_dict):
        return None
    if (FINAL_KEYS["bupose"] in state_dict or SIMCC_KEY in state_dict or RLE_KEY in state_dict) \
            and "backbone.conv1.weight" in state_dict:
        return "bupose"
    if (FINAL_KEYS["mmpose0"] in state_dict or RLE_KEY_MMPOSE0 in state_dict) \
            and "backbone.conv1.weight" in state_dict:
        return "mmpose0"
    if all(k in state_dict for k in SIGNATURE_KEYS):
        return "official"
    return None


def to_bupose_keys(state_dict: Mapping, layout: str) -> dict[str, torch.Tensor]:
    """``state_dict`` of ``layout`` (:func:`checkpoint_layout`) with bupose's keys (no checks)."""
    if layout == "bupose":
        return dict(state_dict)
    if layout == "mmpose0":  # RLE's flow: keypoint_head.loss.* -> head.loss_module.* (mmpose 1.x's renaming)
        return {("head." + re.sub(r"^loss\.", "loss_module.", k[len("keypoint_head."):])
                 if k.startswith("keypoint_head.") else k): v for k, v in state_dict.items()}
    return {("head." if k.startswith(_HEAD_PREFIXES) else "backbone.") + k: v for k, v in state_dict.items()}


def _num_blocks(state_dict: Mapping, prefix: str, layer: str) -> int:
    pattern = re.compile(re.escape(f"{prefix}{layer}.") + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in state_dict if (m := pattern.match(k))), default=-1)


def backbone_name(state_dict: Mapping, prefix: str = "backbone.") -> str | None:
    """``"HRNet-W32"``, ``"ResNet-50"`` (with ``" (base width 8)"`` when ``layer1`` is not 64 wide), or ``None``:
    the backbone of a state_dict whose backbone keys start with ``prefix``."""
    hr = state_dict.get(f"{prefix}stage2.0.branches.0.0.conv1.weight")
    if hr is not None:
        return f"HRNet-W{hr.shape[0]}"
    if f"{prefix}layer4.0.conv1.weight" not in state_dict:
        return None
    blocks = [_num_blocks(state_dict, prefix, f"layer{i}") for i in range(1, 5)]
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    name = f"ResNet-{sum(blocks) * (3 if bottleneck else 2) + 2}"
    width = state_dict[f"{prefix}layer1.0.conv1.weight"].shape[0]
    return name + (f" (base width {width})" if width != 64 else "")


def deconv_shapes(state_dict: Mapping) -> list[tuple[int, int]]:
    """``[(out_channels, kernel), ...]`` of the head's transposed convolutions (bupose keys; a SimCC head's under
    ``head.deconv_head.``)."""
    prefix = "head.deconv_head." if SIMCC_KEY in state_dict else "head."
    n = _num_blocks(state_dict, prefix, "deconv_layers")
    return [(w.shape[1], w.shape[-1]) for i in range(0, n, 3)
            if (w := state_dict.get(f"{prefix}deconv_layers.{i}.weight")) is not None]


def _final_key(state_dict: Mapping) -> str:
    return "head.deconv_head.final_layer.weight" if "head.deconv_head.final_layer.weight" in state_dict \
        else "head.final_layer.weight"


def describe(state_dict: Mapping) -> str:
    """A name for a bupose-keyed top-down state_dict: ``"HRNet-W32"``, ``"ResNet-50 SimpleBaseline"``,
    ``"ResNet-50 SimCC"``, ..."""
    name = backbone_name(state_dict) or "unknown backbone"
    if SIMCC_KEY in state_dict:
        name += " SimCC"
    elif RLE_KEY in state_dict:
        name += " RLE"
    elif name.startswith("ResNet") and deconv_shapes(state_dict):
        name += " SimpleBaseline"
    return name


def _a(name: str) -> str:
    return ("an " if name[:1] in "AEHIOUu" else "a ") + name


def check_compatible(state_dict: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between ``state_dict`` (bupose keys) and ``model``."""
    ours = model.state_dict()
    ckpt_bb, model_bb = backbone_name(state_dict), backbone_name(ours)
    if ckpt_bb != model_bb:
        if ckpt_bb and model_bb and ckpt_bb.startswith("HRNet") and model_bb.startswith("HRNet"):
            raise CheckpointError(f"backbone is {ckpt_bb} in the checkpoint, the model is {model_bb}")
        raise CheckpointError(f"checkpoint is {_a(describe(state_dict))}, the model is {_a(describe(ours))}")
    if (SIMCC_KEY in state_dict) != (SIMCC_KEY in ours):
        kinds = ["a SimCC head" if SIMCC_KEY in d else "a heatmap head" for d in (state_dict, ours)]
        raise CheckpointError(f"checkpoint has {kinds[0]}, the model has {kinds[1]} (MODEL.CODEC type SimCCLabel "
                              f"selects the SimCC head)")
    if (RLE_KEY in state_dict) != (RLE_KEY in ours):
        kinds = ["an RLE regression head" if RLE_KEY in d else "no RLE head" for d in (state_dict, ours)]
        raise CheckpointError(f"checkpoint has {kinds[0]}, the model has {kinds[1]} (MODEL.CODEC type "
                              f"RegressionLabel selects the RLE head)")
    if RLE_KEY in state_dict and state_dict[RLE_KEY].shape != ours[RLE_KEY].shape:
        (co, ci), (mo, mi) = state_dict[RLE_KEY].shape, ours[RLE_KEY].shape
        raise CheckpointError(f"RLE head maps {ci} features to {co // 4} joints x 4 in the checkpoint, {mi} to "
                              f"{mo // 4} x 4 in the model")
    final = _final_key(state_dict)
    if final in state_dict and final in ours and state_dict[final].shape[0] != ours[final].shape[0]:
        raise CheckpointError(f"final layer has {state_dict[final].shape[0]} joints in the checkpoint, the model "
                              f"has {ours[final].shape[0]}")
    ckpt_dc, model_dc = deconv_shapes(state_dict), deconv_shapes(ours)
    if ckpt_dc != model_dc:
        raise CheckpointError(f"heatmap head deconvolutions (out channels, kernel) are {ckpt_dc} in the checkpoint, "
                              f"{model_dc} in the model (MODEL.SPEC.NUM_DECONV_FILTERS / NUM_DECONV_KERNELS)")
    for axis in ("x", "y"):
        key = f"head.mlp_head_{axis}.weight"
        if key in state_dict and key in ours and state_dict[key].shape != ours[key].shape:
            (cb, cf), (mb, mf) = state_dict[key].shape, ours[key].shape
            raise CheckpointError(f"SimCC {axis} classifier maps {cf} features to {cb} bins in the checkpoint, {mf} to "
                                  f"{mb} in the model (MODEL.IMAGE_SIZE x simcc_split_ratio, and the feature map "
                                  f"size)")
    check_same_architecture(state_dict, ours)


def official_to_bupose(checkpoint, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A top-down checkpoint (official deep-high-resolution-net, mmpose 0.x / 1.x or bupose; a path or a loaded
    object) as a state_dict for :class:`~bupose.methods.topdown.model.TopDownModel`; with ``model``, checked against
    it. Raises CheckpointError when it is not a top-down heatmap checkpoint or does not fit."""
    sd = plain_state_dict(checkpoint)
    layout = checkpoint_layout(sd)
    if layout is None:
        hint = ""
        if "head_heatmap.1.weight" in sd or "offset_final_layer.0.weight" in sd:
            hint = "; it looks like a DEKR (hrnet_dekr) checkpoint"
        elif any(k in sd for k in _CLASSIFIER_KEYS) or any(k.startswith("incre_modules.") for k in sd):
            hint = ("; it looks like ImageNet classification weights: load them into the backbone with "
                    "load_pretrained_backbone (MODEL.PRETRAINED)")
        raise CheckpointError(f"not a top-down heatmap checkpoint (official deep-high-resolution-net, mmpose or "
                              f"bupose layout: none of {sorted(FINAL_KEYS.values())} with its backbone){hint}; "
                              f"its keys: {shorten_keys(sd, 5)}")
    sd = to_bupose_keys(sd, layout)
    if model is not None:
        check_compatible(sd, model)
    return sd


def load_official(model: nn.Module, checkpoint) -> nn.Module:
    """Load a top-down checkpoint (any layout of :func:`official_to_bupose`) into ``model``, checked; returns it."""
    model.load_state_dict(official_to_bupose(checkpoint, model))
    return model


def load_pretrained_backbone(model: nn.Module, checkpoint, pretrained_layers: Sequence[str] | None = None, *,
                             name_of=None, what: str = "ImageNet weights", prepare=None,
                             required=None) -> dict[str, list[str]]:
    """Load ImageNet weights (``MODEL.PRETRAINED``: torchvision's ``resnet50-19c8e357.pth``, the official
    ``hrnet_w32-36af842e.pth``; flat or ``backbone.``-prefixed names) into ``model.backbone``, as the official
    ``init_weights``: the entries whose first name component is in ``pretrained_layers`` (default: the model's
    ``PRETRAINED_LAYERS``; ``"*"``: all) and that the backbone has; the classifier and HRNet's classification
    modules are left out. The head keeps its initialisation.

    Raises CheckpointError when a taken entry has another shape (``"backbone is HRNet-W48 in the checkpoint, the
    model is HRNet-W32"``), when a backbone entry of those layers is absent from the checkpoint (another depth),
    or when nothing fits. Returns ``{"loaded", "missing", "unused"}`` key lists (``missing``: BN
    ``num_batches_tracked`` counters absent from old files).

    A file with ``backbone.``-prefixed entries gives only those (mmpose's ``Pretrained`` init with
    ``prefix='backbone.'``: a whole pose model's head is not used). ``name_of(state_dict) -> str`` names a backbone
    in the messages (default: HRNet / ResNet names), ``what`` the kind of file. ``prepare(state_dict) -> state_dict``
    maps the file's backbone entries onto the model's names (e.g. renames, resized position embeddings);
    ``required(key) -> bool`` says which model entries must be in the file (default: all but BN counters)."""
    sd = plain_state_dict(checkpoint)
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if prepare is not None:
        sd = prepare(sd)
    required = required or (lambda k: not k.endswith("num_batches_tracked"))
    layers = tuple(pretrained_layers if pretrained_layers is not None else getattr(model, "pretrained_layers", "*"))
    backbone = model.backbone
    ours = backbone.state_dict()
    name_of = name_of or (lambda state_dict: backbone_name(state_dict, ""))

    def taken(k: str) -> bool:
        return "*" in layers or k.split(".")[0] in layers

    loaded = {k: v for k, v in sd.items() if taken(k) and k in ours}
    what = f"{what}: backbone is {name_of(sd)} in the checkpoint, the model is {name_of(ours)}"
    bad = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}" for k, v in loaded.items()
           if v.shape != ours[k].shape]
    if bad:
        raise CheckpointError(f"{what}; {len(bad)} shape mismatches: " + "; ".join(bad[:3]))
    missing = [k for k in ours if taken(k) and k not in loaded]
    absent = [k for k in missing if required(k)]
    if not loaded or absent:
        raise CheckpointError(f"{what}; backbone entries not in the checkpoint: {shorten_keys(absent or missing)}; "
                              f"its keys: {shorten_keys(sd, 5)}")
    backbone.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "missing": sorted(missing), "unused": sorted(set(sd) - set(loaded))}
