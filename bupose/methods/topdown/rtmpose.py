"""RTMPose (Jiang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on MMPose", 2023) as a member of the
top-down family, ``MODEL.NAME: topdown_cspnext``: a CSPNeXt backbone (RTMDet's, Lyu et al., 2022; its last stage,
stride 32) and the RTMCC head (a 7x7 convolution, a gated attention unit over the keypoint tokens, SimCC
classifiers), trained with SimCC labels (``MODEL.CODEC: {type: SimCCLabel, sigma: [4.9, 5.66], normalize: false}``)
and ``KLDiscretLoss(beta=10, label_softmax=True)``; decoded and flip-tested as SimCC (x vectors reversed, no shift).

``MODEL.SPEC`` (checked; a bad field is a ConfigError naming it):

* ``ARCH``: ``t``, ``s``, ``m``, ``l`` or ``x`` (mmpose's rtmpose-* sizes), or instead ``DEEPEN_FACTOR`` and
  ``WIDEN_FACTOR`` (both; with ``ARCH`` they may be given only with the arch's values);
* ``EXPAND_RATIO`` (0.5), ``CHANNEL_ATTENTION`` (true), ``FINAL_LAYER_KERNEL_SIZE`` (7);
* ``GAU``: ``HIDDEN_DIMS`` (256), ``S`` (128), ``EXPANSION_FACTOR`` (2), ``DROPOUT_RATE`` (0), ``DROP_PATH`` (0),
  ``ACT_FN`` (``SiLU``; or ``ReLU``), ``USE_REL_BIAS`` and ``POS_ENC`` (false: the only supported value);
* ``INIT``: ``official`` (mmpose's: backbone convolutions Kaiming-uniform ``a = sqrt(5)``, the head's convolution
  N(0, 0.001), its linear layers N(0, 0.01)) or ``kaiming`` (backbone convolutions He-normal fan-out);
  ``PRETRAINED_LAYERS`` (``["*"]``): the backbone modules taken from ``MODEL.PRETRAINED``.

Checkpoints: mmpose 1.x RTMPose files (``{"meta", "state_dict": {"backbone.*", "head.*"}}``) have bupose's keys;
``data_preprocessor.*`` and mmdet 2.x style ``ema_*`` entries are dropped. Another size, K, input size or model is
refused saying what differs. ``MODEL.PRETRAINED`` takes the ``backbone.`` entries of a file (as mmpose's
``init_cfg=dict(type='Pretrained', prefix='backbone.')``: a CSPNeXt ImageNet or UDP heatmap checkpoint) or a plain
backbone state_dict.
"""
from __future__ import annotations

import difflib
import logging
import math
import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from bupose.engine.checkpoint import check_same_architecture, plain_state_dict, shorten_keys
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.topdown.convert import load_pretrained_backbone
from bupose.methods.topdown.loss import KLDiscretLoss, TopDownSimCCLoss
from bupose.methods.topdown.method import TopDownMethod
from bupose.methods.topdown.model import TopDownModel, _check_fields, feature_size, is_simcc
from bupose.methods.topdown.rtmcc import ACTIVATIONS, RTMCCHead
from bupose.models.backbones.cspnext import ARCH_SETTINGS, CSPNEXT_SIZES, CSPNeXt
from bupose.models.layers import INITS

log = logging.getLogger("bupose")

#: optional MODEL.SPEC fields and their defaults (mmpose's RTMPose configs)
RTMPOSE_DEFAULTS = {"ARCH": None, "DEEPEN_FACTOR": None, "WIDEN_FACTOR": None, "EXPAND_RATIO": 0.5,
                    "CHANNEL_ATTENTION": True, "FINAL_LAYER_KERNEL_SIZE": 7, "GAU": {}, "INIT": "official",
                    "PRETRAINED_LAYERS": ["*"]}
#: MODEL.SPEC.GAU fields and their defaults (mmpose's ``gau_cfg`` in the RTMPose configs)
GAU_DEFAULTS = {"HIDDEN_DIMS": 256, "S": 128, "EXPANSION_FACTOR": 2, "DROPOUT_RATE": 0.0, "DROP_PATH": 0.0,
                "ACT_FN": "SiLU", "USE_REL_BIAS": False, "POS_ENC": False}
#: keys every mmpose 1.x RTMPose state_dict has (the method's ``official_keys``)
RTMPOSE_SIGNATURE_KEYS = ("backbone.stem.0.conv.weight", "backbone.stage4.1.conv1.conv.weight",
                          "head.final_layer.weight", "head.mlp.1.weight", "head.gau.uv.weight", "head.cls_x.weight",
                          "head.cls_y.weight")
#: the KLDiscretLoss of mmpose's RTMPose configs
LOSS_BETA, LOSS_LABEL_SOFTMAX = 10.0, True
_DROPPED_PREFIXES = ("data_preprocessor.", "ema_")


class TopDownCSPNeXt(TopDownModel):
    """RTMPose: :class:`~bupose.models.backbones.cspnext.CSPNeXt` then :class:`~bupose.methods.topdown.rtmcc.
    RTMCCHead`; ``(B, 3, H, W) -> {"simcc_x": (B, K, Wx), "simcc_y": (B, K, Wy)}`` (``MODEL.NAME``
    ``topdown_cspnext``; built by :func:`build_topdown_cspnext`)."""

    method_name = "topdown_cspnext"

    def init_weights(self, init: str = "official") -> "TopDownCSPNeXt":
        """mmpose's initialisation: backbone convolutions Kaiming-uniform (``a = sqrt(5)``, fan-in, leaky ReLU: the
        CSPNeXt ``init_cfg``) with zero bias, BN (1, 0); the head's :meth:`~RTMCCHead.init_weights`.
        ``init="kaiming"``: backbone convolutions He-normal (fan-out) instead."""
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                if init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.head.init_weights()
        return self

    def convert_checkpoint(self, checkpoint) -> dict[str, torch.Tensor]:
        """The state_dict for this model from an mmpose 1.x RTMPose or bupose checkpoint (a loaded object or a path),
        checked against the model (CheckpointError saying what differs)."""
        sd = plain_state_dict(checkpoint)
        sd = {k: v for k, v in sd.items() if not k.startswith(_DROPPED_PREFIXES)}
        check_compatible(sd, self)
        return sd


# --- MODEL.SPEC ------------------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(value, ok: bool, key: str, want: str):
    if not ok:
        raise ConfigError(f"MODEL.SPEC.{key} must be {want}, got {value!r}")
    return value


def _positive_int(spec: Mapping, key: str, prefix: str = "") -> int:
    v = spec[key]
    return _check(v, isinstance(v, int) and not isinstance(v, bool) and v >= 1, prefix + key, "an integer >= 1")


def _gau_fields(gau) -> dict:
    """``MODEL.SPEC.GAU`` with the defaults filled in, checked."""
    if not isinstance(gau, Mapping):
        raise ConfigError(f"MODEL.SPEC.GAU must be a dict of {list(GAU_DEFAULTS)}, got {type(gau).__name__}")
    for key in gau:
        if key not in GAU_DEFAULTS:
            hint = difflib.get_close_matches(str(key), list(GAU_DEFAULTS), n=1)
            raise ConfigError(f"MODEL.SPEC.GAU.{key} is not a field of the RTMCC head's gated attention unit"
                              + (f"; did you mean {hint[0]}?" if hint else f"; known: {list(GAU_DEFAULTS)}"))
    g = {**GAU_DEFAULTS, **gau}
    for key in ("HIDDEN_DIMS", "S"):
        _positive_int(g, key, "GAU.")
    v = g["EXPANSION_FACTOR"]
    _check(v, _is_number(v) and v > 0 and int(g["HIDDEN_DIMS"] * v) >= 1, "GAU.EXPANSION_FACTOR",
           "a positive number")
    for key in ("DROPOUT_RATE", "DROP_PATH"):
        _check(g[key], _is_number(g[key]) and 0 <= g[key] < 1, f"GAU.{key}", "a number in [0, 1)")
    _check(g["ACT_FN"], g["ACT_FN"] in ACTIVATIONS, "GAU.ACT_FN", f"one of {list(ACTIVATIONS)}")
    for key in ("USE_REL_BIAS", "POS_ENC"):
        _check(g[key], g[key] is False, f"GAU.{key}", "false (RTMPose's configs; relative position bias and rotary "
                                                      "position encoding are not implemented)")
    return g


def cspnext_factors(spec: Mapping) -> tuple[float, float]:
    """``(deepen_factor, widen_factor)`` from ``ARCH`` or ``DEEPEN_FACTOR`` / ``WIDEN_FACTOR`` (defaults filled)."""
    arch, deepen, widen = spec["ARCH"], spec["DEEPEN_FACTOR"], spec["WIDEN_FACTOR"]
    for key, v in (("DEEPEN_FACTOR", deepen), ("WIDEN_FACTOR", widen)):
        _check(v, v is None or (_is_number(v) and v > 0), key, "a positive number")
    if arch is None:
        if deepen is None or widen is None:
            missing = "DEEPEN_FACTOR" if deepen is None else "WIDEN_FACTOR"
            raise ConfigError(f"MODEL.SPEC.{missing} is missing: topdown_cspnext needs ARCH (one of "
                              f"{list(CSPNEXT_SIZES)}) or both DEEPEN_FACTOR and WIDEN_FACTOR")
        if int(ARCH_SETTINGS["P5"][0][0] * widen // 2) < 1:
            raise ConfigError(f"MODEL.SPEC.WIDEN_FACTOR {widen!r} leaves the stem without channels (at least "
                              f"{2 / ARCH_SETTINGS['P5'][0][0]})")
        return float(deepen), float(widen)
    if arch not in CSPNEXT_SIZES:
        hint = difflib.get_close_matches(str(arch), list(CSPNEXT_SIZES), n=1)
        raise ConfigError(f"MODEL.SPEC.ARCH must be one of {list(CSPNEXT_SIZES)} (RTMPose-t/s/m/l/x), got {arch!r}"
                          + (f"; did you mean {hint[0]!r}?" if hint else ""))
    sizes = CSPNEXT_SIZES[arch]
    for key, v, want in (("DEEPEN_FACTOR", deepen, sizes[0]), ("WIDEN_FACTOR", widen, sizes[1])):
        if v is not None and v != want:
            raise ConfigError(f"MODEL.SPEC.{key} {v!r} contradicts ARCH {arch!r} ({key} {want}); give ARCH or the "
                              f"two factors")
    return sizes


def build_topdown_cspnext(spec: Mapping, num_joints: int, codec=None) -> TopDownCSPNeXt:
    """RTMPose from ``MODEL.SPEC`` (see the module docstring), K and a :class:`~bupose.codecs.SimCCLabel` codec
    (its ``input_size`` and ``simcc_split_ratio`` size the head; ConfigError without one)."""
    spec = _check_fields(spec, "topdown_cspnext", (), RTMPOSE_DEFAULTS)
    deepen, widen = cspnext_factors(spec)
    v = spec["EXPAND_RATIO"]
    _check(v, _is_number(v) and 0 < v <= 1 and int(64 * widen * v) >= 1, "EXPAND_RATIO", "a number in (0, 1]")
    _check(spec["CHANNEL_ATTENTION"], isinstance(spec["CHANNEL_ATTENTION"], bool), "CHANNEL_ATTENTION",
           "true or false")
    k = spec["FINAL_LAYER_KERNEL_SIZE"]
    _check(k, isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1, "FINAL_LAYER_KERNEL_SIZE",
           "a positive odd integer (RTMPose: 7)")
    _check(spec["INIT"], spec["INIT"] in INITS, "INIT", f"one of {list(INITS)}")
    layers = spec["PRETRAINED_LAYERS"]
    _check(layers, isinstance(layers, (list, tuple)) and bool(layers) and all(isinstance(x, str) for x in layers),
           "PRETRAINED_LAYERS", "a list of backbone module names (stem, stage1..stage4) or ['*']")
    gau = _gau_fields(spec["GAU"])
    if not is_simcc(codec):
        raise ConfigError(f"topdown_cspnext (RTMPose) needs a SimCC codec: MODEL.CODEC {{type: SimCCLabel, sigma: "
                          f"[4.9, 5.66], simcc_split_ratio: 2.0, normalize: false}} (mmpose's), got "
                          f"{type(codec).__name__ if codec is not None else 'none'}")
    backbone = CSPNeXt(deepen_factor=deepen, widen_factor=widen, expand_ratio=float(spec["EXPAND_RATIO"]),
                       channel_attention=spec["CHANNEL_ATTENTION"], out_indices=(4,))
    head = RTMCCHead(in_channels=backbone.out_channels, out_channels=num_joints, input_size=codec.input_size,
                     in_featuremap_size=feature_size(codec.input_size, backbone.halvings),
                     simcc_split_ratio=codec.simcc_split_ratio, final_layer_kernel_size=k,
                     hidden_dims=gau["HIDDEN_DIMS"], s=gau["S"], expansion_factor=gau["EXPANSION_FACTOR"],
                     dropout_rate=float(gau["DROPOUT_RATE"]), drop_path=float(gau["DROP_PATH"]),
                     act_fn=gau["ACT_FN"])
    return TopDownCSPNeXt(backbone=backbone, head=head, pretrained_layers=layers).init_weights(spec["INIT"])


# --- checkpoints -----------------------------------------------------------------------------------------------
_BLOCK = re.compile(r"stage(\d+)\.\d+\.blocks\.(\d+)\.")


def cspnext_name(state_dict: Mapping, prefix: str = "backbone.") -> str | None:
    """``"CSPNeXt-m"`` (an RTMPose size), ``"CSPNeXt (stem 16 channels, blocks [1, 1, 1, 1])"`` (another), or
    ``None`` (no CSPNeXt): the backbone of a state_dict whose backbone keys start with ``prefix``."""
    stem = state_dict.get(f"{prefix}stem.2.conv.weight")
    if stem is None:
        return None
    blocks = [0, 0, 0, 0]
    for key in state_dict:
        found = _BLOCK.match(key[len(prefix):]) if key.startswith(prefix) else None
        if found and 1 <= int(found.group(1)) <= 4:
            i = int(found.group(1)) - 1
            blocks[i] = max(blocks[i], int(found.group(2)) + 1)
    for name, (deepen, widen) in CSPNEXT_SIZES.items():
        depths = [max(round(n * deepen), 1) for _, _, n, _, _ in ARCH_SETTINGS["P5"]]
        if stem.shape[0] == int(ARCH_SETTINGS["P5"][0][0] * widen) and blocks == depths:
            return f"CSPNeXt-{name}"
    return f"CSPNeXt (stem {stem.shape[0]} channels, blocks {blocks})"


def _other_model(sd: Mapping) -> str:
    """What a state_dict without the RTMPose layout is, for a refusal."""
    from bupose.methods.topdown.convert import checkpoint_layout, describe, to_bupose_keys

    layout = checkpoint_layout(sd)
    if layout is not None:
        return f"a top-down {describe(to_bupose_keys(sd, layout))} checkpoint"
    if cspnext_name(sd) is not None:
        return (f"a {cspnext_name(sd)} checkpoint without the RTMCC head (head.gau.*): an RTMDet, ImageNet or "
                f"heatmap model? Its backbone loads with MODEL.PRETRAINED")
    return "not an RTMPose checkpoint"


def check_compatible(state_dict: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between ``state_dict`` (bupose / mmpose keys) and ``model``."""
    ours = model.state_dict()
    if not all(k in state_dict for k in ("backbone.stem.0.conv.weight", "head.gau.uv.weight")):
        raise CheckpointError(f"{_other_model(state_dict)}, the model is RTMPose {cspnext_name(ours)} "
                              f"(topdown_cspnext); its keys: {shorten_keys(state_dict, 5)}")
    ckpt_bb, model_bb = cspnext_name(state_dict), cspnext_name(ours)
    if ckpt_bb != model_bb:
        raise CheckpointError(f"backbone is {ckpt_bb} in the checkpoint, the model is {model_bb} "
                              f"(MODEL.SPEC.ARCH or DEEPEN_FACTOR / WIDEN_FACTOR)")

    def shape(sd, key):
        return tuple(sd[key].shape) if key in sd else None

    final = "head.final_layer.weight"
    if shape(state_dict, final) and shape(ours, final) and shape(state_dict, final) != shape(ours, final):
        (ck, cc, ckh, _), (mk, mc, mkh, _) = shape(state_dict, final), shape(ours, final)
        if ck != mk:
            raise CheckpointError(f"final layer has {ck} joints in the checkpoint, the model has {mk} "
                                  f"(MODEL.NUM_JOINTS)")
        raise CheckpointError(f"final layer is a {ckh}x{ckh} convolution from {cc} channels in the checkpoint, "
                              f"{mkh}x{mkh} from {mc} in the model (MODEL.SPEC.FINAL_LAYER_KERNEL_SIZE)")
    for axis in ("x", "y"):
        key = f"head.cls_{axis}.weight"
        if shape(state_dict, key) != shape(ours, key) and shape(state_dict, key) and shape(ours, key):
            (cb, ch), (mb, mh) = shape(state_dict, key), shape(ours, key)
            raise CheckpointError(f"SimCC {axis} classifier maps {ch} features to {cb} bins in the checkpoint, "
                                  f"{mh} to {mb} in the model (MODEL.IMAGE_SIZE x simcc_split_ratio, "
                                  f"MODEL.SPEC.GAU.HIDDEN_DIMS)")
    mlp = "head.mlp.1.weight"
    if shape(state_dict, mlp) and shape(ours, mlp) and shape(state_dict, mlp) != shape(ours, mlp):
        (ch, cf), (mh, mf) = shape(state_dict, mlp), shape(ours, mlp)
        raise CheckpointError(f"RTMCC head flattens maps of {cf} pixels to {ch} features in the checkpoint, {mf} to "
                              f"{mh} in the model (the feature map size from MODEL.IMAGE_SIZE; GAU.HIDDEN_DIMS)")
    uv = "head.gau.uv.weight"
    if shape(state_dict, uv) != shape(ours, uv):
        raise CheckpointError(f"gated attention unit's uv layer is {shape(state_dict, uv)} in the checkpoint, "
                              f"{shape(ours, uv)} in the model (2 x GAU.HIDDEN_DIMS x GAU.EXPANSION_FACTOR + GAU.S)")
    check_same_architecture(state_dict, ours)


def load_pretrained_cspnext(model: nn.Module, checkpoint,
                            pretrained_layers: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Load CSPNeXt weights (``MODEL.PRETRAINED``) into ``model.backbone``: the ``backbone.``-prefixed entries of
    a file when it has any (mmpose's ``Pretrained`` init with ``prefix='backbone.'``; the rest, e.g. a classifier or
    a heatmap head, unused), else all of a plain backbone state_dict; only the modules in ``pretrained_layers``
    (default: the model's ``PRETRAINED_LAYERS``; ``"*"``: all). The head keeps its initialisation.

    Raises CheckpointError when the widths or depths differ (``"backbone is CSPNeXt-s in the checkpoint, the model
    is CSPNeXt-m"``) or a taken module's entries are absent. Returns ``{"loaded", "missing", "unused"}`` key
    lists."""
    return load_pretrained_backbone(model, checkpoint, pretrained_layers, what="CSPNeXt weights",
                                    name_of=lambda sd: cspnext_name(sd, "") or "not a CSPNeXt")


# --- the method --------------------------------------------------------------------------------------------------
class TopDownCSPNeXtMethod(TopDownMethod):
    """``MODEL.NAME: topdown_cspnext`` (RTMPose); ``MODEL.SPEC`` as the module docstring, ``MODEL.CODEC`` a
    SimCCLabel. The loss is mmpose's RTMPose ``KLDiscretLoss(use_target_weight=LOSS.USE_TARGET_WEIGHT, beta=10,
    label_softmax=True)``."""

    name = "topdown_cspnext"
    title = "RTMPose (CSPNeXt + RTMCC)"
    official_keys = RTMPOSE_SIGNATURE_KEYS

    def __init__(self, cfg):
        super().__init__(cfg)
        if not self.simcc:
            raise ConfigError(f"topdown_cspnext (RTMPose) needs MODEL.CODEC {{type: SimCCLabel, ...}} (mmpose's: "
                              f"sigma [4.9, 5.66], simcc_split_ratio 2.0, normalize false), got "
                              f"{type(self.codec).__name__}")

    def loss_module(self) -> TopDownSimCCLoss:
        return TopDownSimCCLoss(KLDiscretLoss(use_target_weight=self.cfg.LOSS.USE_TARGET_WEIGHT, beta=LOSS_BETA,
                                              label_softmax=LOSS_LABEL_SOFTMAX))

    def load_pretrained(self, model, path) -> None:
        """``MODEL.PRETRAINED``: CSPNeXt weights into the backbone (:func:`load_pretrained_cspnext`)."""
        got = load_pretrained_cspnext(getattr(model, "module", model), path)
        log.info("MODEL.PRETRAINED: %d backbone entries loaded from %s (%d of the file unused)", len(got["loaded"]),
                 path, len(got["unused"]))
