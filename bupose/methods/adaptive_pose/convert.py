"""Official AdaptivePose checkpoints (Xiao et al., AAAI 2022; github.com/buptxyb666/AdaptivePose, HRNet models) to
bupose.

bupose's :class:`~bupose.methods.adaptive_pose.model.AdaptivePose` uses the official master-branch parameter names,
so conversion is unwrapping (CenterNet's ``{"epoch", "state_dict"}``, bupose's ``{"model": ...}``), stripping
DataParallel's ``module.`` prefix, the renames of :data:`RENAMES` (the ``new_ops`` branch), dropping the
training-only ``hm_hp`` head when the model has none, and checking that the checkpoint fits the model, with errors
that say what does not match. The official DLA-34 models are not supported.
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
#: (pattern, replacement) applied to every key: the official ``new_ops`` branch's DCN names its offset/mask conv
#: ``param_generator`` where the master branch (and bupose) has ``conv_offset_mask``
RENAMES = ((re.compile(r"^(sampler\.feat_agg\.\d+\.)param_generator\."), r"\1conv_offset_mask."),)
AUX_PREFIX = "hm_hp."


def _rename(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = pattern.sub(replacement, key)
    return key


def looks_official(state_dict) -> bool:
    """Whether ``state_dict`` (possibly wrapped or ``module.``-prefixed) has the official AdaptivePose HRNet keys."""
    return has_keys(state_dict, SIGNATURE_KEYS)


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


def official_to_bupose(checkpoint, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """An official AdaptivePose HRNet checkpoint (master or ``new_ops`` branch), or a bupose one, as a state_dict
    for :class:`~bupose.methods.adaptive_pose.model.AdaptivePose`: a state_dict, a wrapped dict
    (``{"epoch", "state_dict"}``, ``{"model": ...}``, keys possibly ``module.``-prefixed) or a path to one.

    With ``model``, the training-only ``hm_hp`` head is dropped when the model has none, and the result is checked
    against the model. Raises CheckpointError when it is not such a checkpoint or does not fit."""
    sd = {_rename(k): v for k, v in plain_state_dict(checkpoint).items()}
    absent = [k for k in SIGNATURE_KEYS if k not in sd]
    if absent:
        kind = "an AdaptivePose DLA-34 checkpoint (only the HRNet models are supported)" \
            if any(k.startswith("base.") for k in sd) and "sampler.searcher.weight" in sd \
            else "not an AdaptivePose (HRNet) checkpoint"
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
