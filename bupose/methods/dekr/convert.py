"""Official DEKR checkpoints (Geng et al., CVPR 2021; github.com/HRNet/DEKR) to bupose.

bupose's :class:`~bupose.methods.dekr.model.DEKR` uses the official parameter names, so conversion is unwrapping
(``{"state_dict": ...}``, ``{"model": ...}``), stripping DataParallel's ``module.`` prefix, and checking that the
checkpoint fits the model, with errors that say what does not match.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from bupose.engine.checkpoint import check_same_architecture, has_keys, plain_state_dict, shorten_keys
from bupose.errors import CheckpointError

#: keys every official DEKR state_dict has (stem, backbone stage, both heads)
SIGNATURE_KEYS = ("conv1.weight", "layer1.0.conv1.weight", "transition1.0.0.weight", "transition_heatmap.0.weight",
                  "head_heatmap.1.weight", "transition_offset.0.weight", "offset_final_layer.0.weight")


def looks_official(state_dict) -> bool:
    """Whether ``state_dict`` (possibly wrapped or ``module.``-prefixed) has the official DEKR key layout."""
    return has_keys(state_dict, SIGNATURE_KEYS)


def checkpoint_num_joints(state_dict: Mapping) -> int:
    """K of an official-layout state_dict, from its per-joint offset branches."""
    return len({m.group(1) for k in state_dict if (m := re.match(r"offset_final_layer\.(\d+)\.", k))})


def check_compatible(state_dict: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between ``state_dict`` (converted) and ``model``."""
    ours = model.state_dict()
    k_ckpt, k_model = checkpoint_num_joints(state_dict), getattr(model, "num_joints", None)
    if k_model is not None and k_ckpt != k_model:
        raise CheckpointError(f"offset head has {k_ckpt} joints in the checkpoint, the model has {k_model}")
    hm = state_dict.get("head_heatmap.1.weight")
    if hm is not None and k_model is not None and hm.shape[0] != k_model + 1:
        raise CheckpointError(f"heatmap head has {hm.shape[0]} channels in the checkpoint, the model has "
                              f"{k_model + 1} (K keypoints + centre)")
    width = "transition1.0.0.weight"
    if width in state_dict and width in ours and state_dict[width].shape[0] != ours[width].shape[0]:
        raise CheckpointError(f"backbone is HRNet-W{state_dict[width].shape[0]} in the checkpoint, the model is "
                              f"HRNet-W{ours[width].shape[0]} (MODEL.SPEC.STAGES.NUM_CHANNELS)")
    check_same_architecture(state_dict, ours)


def official_to_bupose(state_dict, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """An official DEKR state_dict (or a path to one; possibly ``{"state_dict": ...}``-wrapped or with the
    ``module.`` prefix) as a state_dict for :class:`~bupose.methods.dekr.model.DEKR`. With ``model``, it is
    also checked against it. Raises CheckpointError when it is not a DEKR checkpoint or does not fit."""
    sd = plain_state_dict(state_dict)
    absent = [k for k in SIGNATURE_KEYS if k not in sd]
    if absent:
        raise CheckpointError(f"not a DEKR (hrnet_dekr) checkpoint: it lacks {absent}; "
                              f"its keys: {shorten_keys(sd, 5)}")
    # bupose's names equal the official ones: the mapping is the identity
    if model is not None:
        check_compatible(sd, model)
    return sd


def load_official(model: nn.Module, checkpoint) -> nn.Module:
    """Load an official DEKR checkpoint (state_dict, wrapped dict or path) into ``model``, checked; returns it."""
    model.load_state_dict(official_to_bupose(checkpoint, model))
    return model
