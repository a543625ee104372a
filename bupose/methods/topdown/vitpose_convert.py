"""Checkpoints of ViTPose (Xu et al., "ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation", NeurIPS
2022) to bupose's :class:`~bupose.methods.topdown.vitpose.TopDownViT` keys.

bupose keeps the official ViTPose names for the backbone (``backbone.patch_embed.proj``, ``backbone.pos_embed`` of
``1 + h * w`` entries, ``backbone.blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``backbone.last_norm``) and ``head.*`` for the decoder (``deconv_layers.*`` / ``final_layer``). Layouts read (plain
state_dicts, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers, ``module.`` prefixes):

* official ViTPose (``vitpose-b.pth``, ...): the backbone names above and ``keypoint_head.*``;
* mmpose 1.x (``td-hm_ViTPose-base_8xb64-210e_coco-256x192-*.pth``): mmpretrain's ``VisionTransformer`` names
  (``backbone.patch_embed.projection``, ``backbone.layers.N.{ln1, attn.qkv, attn.proj, ln2, ffn.layers.0.0,
  ffn.layers.1}``, ``backbone.ln1``) and ``head.*``. Its ViT has no class token (``with_cls_token=False``): the
  position embedding has ``h * w`` entries and nothing is added to all tokens, which is bupose's model with a zero
  class entry; a file with ``1 + h * w`` entries loses the first, as mmpretrain's loading hook does;
* bupose's own.

A position embedding made for another input size is resized to the model's token grid (bicubic, as the official
``load_checkpoint`` and mmpretrain's ``resize_pos_embed``); its grid is the model's aspect ratio, else square (the
official loader only knows square ones). Another ViT (width, depth, MLP, patch), decoder (classic / simple,
deconvolutions, final kernel) or keypoint count is refused with a CheckpointError saying what differs; the number of
attention heads leaves no trace in the weights and cannot be checked.

MAE / ImageNet ViT weights (``MODEL.PRETRAINED``: the official ``mae_pretrain_vit_base.pth``, timm names with
``cls_token``, ``pos_embed`` of 1 + 14 x 14 entries and ``norm.*``; or mmpretrain names) load into the backbone with
:func:`load_pretrained_vit`.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from bupose.engine.checkpoint import check_same_architecture, plain_state_dict, shorten_keys
from bupose.errors import CheckpointError
from bupose.methods.topdown.convert import load_pretrained_backbone
from bupose.models.backbones.vit import resize_pos_embed

log = logging.getLogger("bupose")

#: keys every official ViTPose state_dict has (for the method class's ``official_keys``)
OFFICIAL_KEYS = ("backbone.patch_embed.proj.weight", "backbone.pos_embed", "backbone.blocks.0.attn.qkv.weight",
                 "backbone.last_norm.weight", "keypoint_head.final_layer.weight")
#: mmpretrain VisionTransformer name -> bupose / official name (backbone-relative, as regular expressions)
_MMPRETRAIN_NAMES = ((r"^patch_embed\.projection\.", "patch_embed.proj."),
                     (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
                     (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
                     (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
                     (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
                     (r"^layers\.(\d+)\.attn\.", r"blocks.\1.attn."), (r"^ln1\.", "last_norm."))
_UNUSED_TOKENS = ("cls_token", "mask_token")  # no class token in ViTPose (the official loader ignores them too)


def is_mmpretrain(backbone_sd: Mapping) -> bool:
    """Whether backbone-relative names are mmpretrain's (``layers.N``, ``patch_embed.projection``)."""
    return any(k.startswith(("layers.", "patch_embed.projection.")) for k in backbone_sd)


def from_mmpretrain(backbone_sd: Mapping) -> dict[str, torch.Tensor]:
    """mmpretrain ``VisionTransformer`` names -> bupose / official ViTPose names (backbone-relative); names without a
    counterpart (a layer scale, ``pre_norm``) are kept, for the architecture check to report."""
    out = {}
    for k, v in backbone_sd.items():
        for pattern, repl in _MMPRETRAIN_NAMES:
            new = re.sub(pattern, repl, k)
            if new != k:
                k = new
                break
        out[k] = v
    return out


def _grid_and_rank(num_patches: int, model_grid: Sequence[int]) -> tuple[tuple[int, int] | None, int]:
    """The grid :func:`pos_grid` picks and how it was found: 0 the model's, 1 its aspect ratio, 2 square, 3 none."""
    gh, gw = (int(v) for v in model_grid)
    if num_patches == gh * gw:
        return (gh, gw), 0
    if num_patches <= 0:
        return None, 3
    a, b = gh // math.gcd(gh, gw), gw // math.gcd(gh, gw)
    k = math.isqrt(num_patches // (a * b))
    if k > 0 and k * k * a * b == num_patches:
        return (k * a, k * b), 1
    s = math.isqrt(num_patches)
    return ((s, s), 2) if s * s == num_patches else (None, 3)


def pos_grid(num_patches: int, model_grid: Sequence[int]) -> tuple[int, int] | None:
    """The ``(rows, columns)`` token grid of a position embedding with ``num_patches`` patch entries: the model's
    grid, else the grid of the model's aspect ratio, else a square one; None when none fits."""
    return _grid_and_rank(num_patches, model_grid)[0]


def pos_to_model(pos: torch.Tensor, model_grid: Sequence[int] | None, has_cls: bool | None, where: str,
                 keep_cls: bool = True) -> torch.Tensor:
    """A checkpoint's position embedding ``(1, [1 +] n, C)`` as the model's ``(1, 1 + gh * gw, C)``. ``has_cls``:
    whether it starts with a class entry; ``None``: when ``n - 1`` is a better grid than ``n`` (the model's, then its
    aspect ratio, then square; mmpretrain files; without a model: no). The class entry is kept with ``keep_cls``,
    else (and when there is none) zero, which adds nothing to the tokens; the patch entries are resized to
    ``model_grid`` (``(rows, columns)``; None: kept)."""
    n = pos.shape[1]
    if has_cls is None:
        has_cls = model_grid is not None and _grid_and_rank(n - 1, model_grid)[1] < _grid_and_rank(n, model_grid)[1]
    patches = pos[:, 1:] if has_cls else pos
    cls = pos[:, :1] if has_cls and keep_cls else pos.new_zeros(1, 1, pos.shape[2])
    pos = torch.cat([cls, patches], dim=1)
    if model_grid is None:
        return pos
    model_grid = tuple(int(v) for v in model_grid)
    grid = pos_grid(patches.shape[1], model_grid)
    if grid is None:
        raise CheckpointError(f"{where}: position embedding of {patches.shape[1]} patch entries fits neither the "
                              f"model's {model_grid} token grid (rows, columns), its aspect ratio nor a square")
    if grid != model_grid:
        log.info("%s: position embedding resized from %dx%d to %dx%d tokens (bicubic)", where, *grid, *model_grid)
    return resize_pos_embed(pos, grid, model_grid)


def checkpoint_layout(sd: Mapping) -> str | None:
    """``"official"``, ``"mmpose1"`` or ``"bupose"``: the ViTPose layout of a plain state_dict; None otherwise."""
    backbone = {k[len("backbone."):] for k in sd if k.startswith("backbone.")}
    if not any(k.startswith(("blocks.", "layers.")) for k in backbone) or "pos_embed" not in backbone:
        return None
    if is_mmpretrain(backbone):
        return "mmpose1" if any(k.startswith("head.") for k in sd) else None
    if any(k.startswith("keypoint_head.") for k in sd):
        return "official"
    return "bupose" if any(k.startswith("head.") for k in sd) else None


def to_bupose_keys(sd: Mapping, layout: str, model_grid: Sequence[int] | None, where: str = "checkpoint") -> dict:
    """A ViTPose state_dict of ``layout`` with bupose's keys, the position embedding resized to ``model_grid``
    (``(rows, columns)``; None: kept)."""
    backbone = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    head_prefix = "keypoint_head." if layout == "official" else "head."
    rest = {"head." + k[len(head_prefix):] if k.startswith(head_prefix) else k: v for k, v in sd.items()
            if not k.startswith("backbone.")}
    if layout == "mmpose1":
        backbone = from_mmpretrain(backbone)
    for token in _UNUSED_TOKENS:
        backbone.pop(token, None)
    mmpose1 = layout == "mmpose1"  # mmpretrain's with_cls_token=False model drops a class entry (its loading hook)
    backbone["pos_embed"] = pos_to_model(backbone["pos_embed"], model_grid, None if mmpose1 else True, where,
                                         keep_cls=not mmpose1)
    return {**{"backbone." + k: v for k, v in backbone.items()}, **rest}


def vit_name(sd: Mapping, prefix: str = "backbone.") -> str:
    """``"ViT-B (width 768, 12 blocks, MLP 3072, patch 16)"`` for bupose-named weights under ``prefix``."""
    proj = sd.get(f"{prefix}patch_embed.proj.weight")
    if proj is None:
        return "no ViT"
    width, patch = proj.shape[0], proj.shape[-1]
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := pattern.match(k))), default=-1)
    fc1 = sd.get(f"{prefix}blocks.0.mlp.fc1.weight")
    mlp = fc1.shape[0] if fc1 is not None else 0
    from bupose.models.backbones.vit import VIT_ARCHS

    size = next((a[0].upper() for a, s in VIT_ARCHS.items()
                 if (s["embed_dim"], s["depth"]) == (width, depth) and mlp == 4 * width), None)
    return f"ViT{'-' + size if size else ''} (width {width}, {depth} blocks, MLP {mlp}, patch {patch})"


def decoder_name(sd: Mapping) -> str:
    """``"the classic decoder (deconvolutions [(256, 4), (256, 4)])"`` or ``"the simple decoder"`` (bupose keys)."""
    deconvs = [(w.shape[1], w.shape[-1]) for i in range(0, 30, 3)
               if (w := sd.get(f"head.deconv_layers.{i}.weight")) is not None]
    return f"the classic decoder (deconvolutions {deconvs})" if deconvs else "the simple decoder"


def check_compatible(sd: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between a bupose-keyed ViTPose state_dict and ``model``."""
    ours = model.state_dict()
    if vit_name(sd) != vit_name(ours):
        raise CheckpointError(f"backbone is {vit_name(sd)} in the checkpoint, the model is {vit_name(ours)} "
                              f"(MODEL.SPEC.ARCH, or EMBED_DIM / DEPTH / MLP_RATIO / PATCH_SIZE)")
    bias = ["with" if "backbone.blocks.0.attn.qkv.bias" in d else "without" for d in (sd, ours)]
    if bias[0] != bias[1]:
        raise CheckpointError(f"qkv projections are {bias[0]} biases in the checkpoint, {bias[1]} in the model "
                              f"(MODEL.SPEC.QKV_BIAS)")
    if decoder_name(sd) != decoder_name(ours):
        raise CheckpointError(f"checkpoint has {decoder_name(sd)}, the model has {decoder_name(ours)} "
                              f"(MODEL.SPEC.DECODER, NUM_DECONV_FILTERS, NUM_DECONV_KERNELS)")
    final, mine = sd.get("head.final_layer.weight"), ours["head.final_layer.weight"]
    if final is not None and final.shape[0] != mine.shape[0]:
        raise CheckpointError(f"final layer has {final.shape[0]} joints in the checkpoint, the model has "
                              f"{mine.shape[0]}")
    if final is not None and final.shape[-1] != mine.shape[-1]:
        raise CheckpointError(f"final layer is a {final.shape[-1]}x{final.shape[-1]} convolution in the checkpoint, "
                              f"{mine.shape[-1]}x{mine.shape[-1]} in the model (MODEL.SPEC.FINAL_CONV_KERNEL)")
    check_same_architecture(sd, ours)


def _not_vitpose(sd: Mapping) -> CheckpointError:
    from bupose.methods.topdown import convert

    hint = ""
    layout = convert.checkpoint_layout(sd)
    if layout is not None:
        hint = f"; it is {convert._a(convert.describe(convert.to_bupose_keys(sd, layout)))} top-down checkpoint"
    elif any(k.startswith(("blocks.", "layers.", "backbone.")) for k in sd) and not any(
            k.startswith(("keypoint_head.", "head.")) for k in sd):
        hint = "; it looks like ViT backbone weights (MAE / ImageNet): load them with MODEL.PRETRAINED"
    return CheckpointError(f"not a ViTPose checkpoint (official: backbone.blocks.* with keypoint_head.*; mmpose 1.x: "
                           f"backbone.layers.* with head.*){hint}; its keys: {shorten_keys(sd, 5)}")


def vitpose_to_bupose(checkpoint, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A ViTPose checkpoint (official, mmpose 1.x or bupose; a path or a loaded object) as a state_dict for
    :class:`~bupose.methods.topdown.vitpose.TopDownViT`; with ``model`` the position embedding is resized to its
    grid and the result checked against it (CheckpointError saying what differs); without ``model`` the file's grid
    is kept (an mmpose 1.x embedding then gets a zero class entry in front)."""
    sd = plain_state_dict(checkpoint)
    layout = checkpoint_layout(sd)
    if layout is None:
        raise _not_vitpose(sd)
    out = to_bupose_keys(sd, layout, None if model is None else model.backbone.grid)
    if model is not None:
        check_compatible(out, model)
    return out


def load_pretrained_vit(model: nn.Module, checkpoint,
                        pretrained_layers: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Load MAE / ImageNet ViT weights (``MODEL.PRETRAINED``) into ``model.backbone`` as the official ViTPose
    ``init_weights(pretrained)`` (``mmcv_custom/checkpoint.py``): timm / official names, or mmpretrain's (converted),
    with or without a ``backbone.`` prefix (a full pose checkpoint: its backbone only); the position embedding's
    patch entries resized to the model's grid (bicubic), its class entry kept; ``cls_token``, a final ``norm.*``
    (``last_norm`` keeps its initialisation, as officially: the names differ), decoders and heads unused. Only the
    backbone modules named in ``pretrained_layers`` (default: the model's ``PRETRAINED_LAYERS``; ``"*"``: all) are
    taken.

    Raises CheckpointError when a taken entry has another shape (another width, MLP or patch size), when a block of
    the model is absent (another depth), or when nothing fits. Returns ``{"loaded", "missing", "unused"}`` key
    lists (``missing``: backbone entries left as initialised)."""
    grid = model.backbone.grid

    def prepare(sd: dict) -> dict:
        mmpretrain = is_mmpretrain(sd)
        sd = from_mmpretrain(sd) if mmpretrain else dict(sd)
        if "pos_embed" in sd:
            sd["pos_embed"] = pos_to_model(sd["pos_embed"], grid, None if mmpretrain else True, "MODEL.PRETRAINED")
        return sd

    return load_pretrained_backbone(model, checkpoint, pretrained_layers, what="ViT weights", prepare=prepare,
                                    name_of=lambda sd: vit_name(sd, ""), required=lambda k: k.startswith("blocks."))
