"""Official AdaptivePose checkpoints (Xiao et al., AAAI 2022; github.com/buptxyb666/AdaptivePose, HRNet and DLA-34
models) to bupose.

bupose's :class:`~bupose.methods.adaptive_pose.model.AdaptivePose` (HRNet) and
:class:`~bupose.methods.adaptive_pose.model.DLAAdaptivePose` (DLA-34) use the official master-branch parameter
names, so conversion is unwrapping (CenterNet's ``{"epoch", "state_dict"}``, bupose's ``{"model": ...}``),
stripping DataParallel's ``module.`` prefix, the renames of :data:`RENAMES` (the ``new_ops`` branch), dropping the
ImageNet classifier ``base.fc`` the official DLA model keeps, dropping the training-only ``hm_hp`` head when the
model has none, and checking that the checkpoint fits the model, with errors that say what does not match (a
checkpoint of the other backbone included).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from bupose.engine.checkpoint import check_same_architecture, has_keys, plain_state_dict, shorten_keys
from bupose.errors import CheckpointError

#: keys every official AdaptivePose HRNet state_dict has (stem, centre/keypoint features, the part head)
SIGNATURE_KEYS = ("conv1.weight", "layer1.0.conv1.weight", "hm.0.weight", "hps.0.weight", "sampler.searcher.weight",
                  "sampler.pred_kps_list.0.weight", "sampler.pred_ct_hm.weight")
#: keys every official AdaptivePose DLA-34 state_dict has (DLA base, up-sampling path, two-conv branches, part head)
DLA_SIGNATURE_KEYS = ("base.base_layer.0.weight", "base.level5.root.conv.weight", "dla_up.ida_0.proj_1.conv.weight",
                      "ida_up.node_1.conv.weight", "hm.2.weight", "hps.2.weight", "sampler.searcher.weight",
                      "sampler.pred_kps_list.0.weight", "sampler.pred_ct_hm.weight")
#: signature keys per backbone (the model's ``backbone`` attribute) and the MODEL.NAME that builds it
BACKBONES = {"hrnet": (SIGNATURE_KEYS, "HRNet", "hrnet_adaptive_pose"),
             "dla34": (DLA_SIGNATURE_KEYS, "DLA-34", "dla_adaptive_pose")}
#: (pattern, replacement) applied to every key: the official ``new_ops`` branch's DCN names its offset/mask conv
#: ``param_generator`` where the master branch (and bupose) has ``conv_offset_mask`` (the part head's DCNs and, in
#: the DLA model, those of the up-sampling path)
RENAMES = ((re.compile(r"^((?:sampler\.feat_agg\.\d+|(?:dla_up\.ida_\d+|ida_up)\.(?:proj|node)_\d+\.conv)\.)"
                       r"param_generator\."), r"\1conv_offset_mask."),)
#: the ImageNet classifier the official DLA model loads with its pretrained base and keeps (unused)
DLA_CLASSIFIER_PREFIX = "base.fc."
AUX_PREFIX = "hm_hp."


def _rename(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = pattern.sub(replacement, key)
    return key


def looks_official(state_dict, backbone: str = "hrnet") -> bool:
    """Whether ``state_dict`` (possibly wrapped or ``module.``-prefixed) has the official AdaptivePose keys of
    ``backbone`` (``"hrnet"`` or ``"dla34"``)."""
    return has_keys(state_dict, BACKBONES[backbone][0])


def _which_backbone(sd: Mapping) -> str | None:
    for name, (keys, _, _) in BACKBONES.items():
        if all(k in sd for k in keys):
            return name
    if any(k.startswith("base.") for k in sd) and "sampler.searcher.weight" in sd:
        return "dla34"
    return None


def checkpoint_parts(state_dict: Mapping) -> tuple[int, ...]:
    """Keypoints per part of an official-layout state_dict, from its per-part regressors ``pred_kps_list``."""
    sizes = {}
    for k, v in state_dict.items():
        m = re.fullmatch(r"sampler\.pred_kps_list\.(\d+)\.weight", k)
        if m:
            sizes[int(m.group(1))] = v.shape[0] // 2
    return tuple(sizes[i] for i in sorted(sizes))


def check_compatible(state_dict: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between ``state_dict`` (converted) and ``model``."""
    ours = model.state_dict()
    parts_ckpt = checkpoint_parts(state_dict)
    parts_model = checkpoint_parts(ours)
    if parts_ckpt != parts_model:
        raise CheckpointError(f"the checkpoint has {sum(parts_ckpt)} keypoints in {len(parts_ckpt)} parts "
                              f"{parts_ckpt}, the model has {sum(parts_model)} in {len(parts_model)} parts "
                              f"{parts_model} (another keypoint layout?)")
    width = "transition1.0.0.weight"
    if width in state_dict and width in ours and state_dict[width].shape[0] != ours[width].shape[0]:
        raise CheckpointError(f"backbone is HRNet-W{state_dict[width].shape[0]} in the checkpoint, the model is "
                              f"HRNet-W{ours[width].shape[0]} (MODEL.SPEC.STAGES.NUM_CHANNELS)")
    if any(k.startswith(AUX_PREFIX) for k in set(ours) - set(state_dict)):
        raise CheckpointError("the checkpoint has no auxiliary keypoint-heatmap head (hm_hp.*), which the model "
                              "has; build the model without it (MODEL.SPEC.AUX_HEATMAP: false)")
    check_same_architecture(state_dict, ours)


def official_to_bupose(checkpoint, model: nn.Module | None = None, backbone: str | None = None
                       ) -> dict[str, torch.Tensor]:
    """An official AdaptivePose checkpoint (master or ``new_ops`` branch), or a bupose one, as a state_dict for
    :class:`~bupose.methods.adaptive_pose.model.AdaptivePose` (``backbone="hrnet"``) or
    :class:`~bupose.methods.adaptive_pose.model.DLAAdaptivePose` (``"dla34"``): a state_dict, a wrapped dict
    (``{"epoch", "state_dict"}``, ``{"model": ...}``, keys possibly ``module.``-prefixed) or a path to one.

    ``backbone`` defaults to the model's (its ``backbone`` attribute), else ``"hrnet"``. With ``model``, the
    training-only ``hm_hp`` head is dropped when the model has none, and the result is checked against the model.
    Raises CheckpointError when it is not such a checkpoint (a checkpoint of the other backbone says so) or does
    not fit."""
    backbone = backbone or getattr(model, "backbone", None) or "hrnet"
    if backbone not in BACKBONES:
        raise CheckpointError(f"unknown AdaptivePose backbone {backbone!r} (known: {sorted(BACKBONES)})")
    keys, label, _ = BACKBONES[backbone]
    sd = {_rename(k): v for k, v in plain_state_dict(checkpoint).items()}
    if backbone == "dla34":
        sd = {k: v for k, v in sd.items() if not k.startswith(DLA_CLASSIFIER_PREFIX)}
    absent = [k for k in keys if k not in sd]
    if absent:
        found = _which_backbone(sd)
        if found is not None and found != backbone:
            other, name = BACKBONES[found][1], BACKBONES[found][2]
            kind = (f"an AdaptivePose {other} checkpoint, but the model is AdaptivePose on {label} (MODEL.NAME "
                    f"{name} builds the {other} model)")
        else:
            kind = f"not an AdaptivePose ({label}) checkpoint"
        raise CheckpointError(f"{kind}: it lacks {absent}; its keys: {shorten_keys(sd, 5)}")
    if model is not None:
        if not any(k.startswith(AUX_PREFIX) for k in model.state_dict()):
            sd = {k: v for k, v in sd.items() if not k.startswith(AUX_PREFIX)}
        check_compatible(sd, model)
    return sd


def load_official(model: nn.Module, checkpoint) -> nn.Module:
    """Load an official AdaptivePose checkpoint (state_dict, wrapped dict or path) into ``model``, checked;
    returns it."""
    model.load_state_dict(official_to_bupose(checkpoint, model))
    return model
