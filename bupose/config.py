"""Configuration: every key with its default, type and a one-line doc, in one table (:data:`SCHEMA`).

Experiment files are YAML with the HRNet/DEKR layout (``MODEL.*``, ``DATASET.*``, ``TRAIN.*``, ``TEST.*``)::

    _BASE_: ../base.yaml          # optional; a path relative to this file, or a list of them
    DATASET:
      DATASET: crowdpose
    TRAIN:
      END_EPOCH: 140

and command lines override single keys as ``KEY VALUE`` pairs (``TRAIN.END_EPOCH 10 TEST.FLIP_TEST False
TEST.SCALE_FACTOR [0.5,1,2]``); values are parsed as YAML. A dict value (``MODEL.SPEC``, ``DATASET.STAGE2``) merges
into the one there, key by key; an empty dict ``{}`` clears it. An unknown key is an error naming the closest valid
key (for a misspelt section, the closest section and the closest key in it); a value of the wrong type is an error
naming key, expected type and value. Each :class:`Option` also carries its checks as data (``min``/``max``/``gt``/
``lt``, ``choices``, ``pattern``, ``nonempty``, ``length``); :func:`check_value` applies them to every value read,
and :func:`check_config` to a whole config (also one changed in code) together with :data:`RELATIONS`.

``python -m bupose.config [--cfg FILE] [--width N] [KEY VALUE ...]`` prints every key with its type, allowed values,
value and doc (a table wrapped at 120 columns); a bad config prints ``error: ...`` and exits with status 2.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import itertools
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from bupose.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One config key: its default, type, one-line doc and the checks its values must pass.

    Numeric bounds (``min``/``max`` inclusive, ``gt``/``lt`` exclusive) apply to a number, or to every element of a
    numeric list. ``choices`` lists the allowed values of a str; ``pattern`` (a full-match regex, described to the
    user by ``pattern_doc``) constrains a str the same way. ``nonempty`` refuses an empty str or list; ``length``
    fixes a list's length.
    """

    key: str
    default: Any
    type: str  # int, float, bool, str, list[int], list[float], list[str], list, dict
    doc: str
    min: float | None = None
    gt: float | None = None
    max: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_doc: str = ""
    nonempty: bool = False
    length: int | None = None

    def expectation(self) -> str:
        """The checks in words (``>= 1``, ``one of ['raise', 'skip']``, ``non-empty, each > 0``); empty for none."""
        bounds = [f"{op} {_num(v)}" for op, v in ((">=", self.min), (">", self.gt), ("<=", self.max),
                                                  ("<", self.lt)) if v is not None]
        parts = []
        if self.choices:
            parts.append(f"one of {list(self.choices)}")
        if self.pattern:
            parts.append(self.pattern_doc)
        if self.nonempty:
            parts.append("non-empty")
        if self.length is not None:
            parts.append(f"{self.length} values")
        if bounds:
            each = "each " if self.type.startswith("list") else ""
            parts.append(each + " and ".join(bounds))
        return ", ".join(parts)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _opt(key: str, default: Any, doc: str, type: str | None = None, **checks) -> Option:
    """An :class:`Option`; the type is taken from the default unless given. ``checks``: the Option's check fields."""
    if type is None:
        type = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(default.__class__)
        if isinstance(default, list):
            kinds = {("float" if isinstance(v, float) else "int" if isinstance(v, int) else "str") for v in default}
            type = f"list[{kinds.pop()}]" if len(kinds) == 1 else "list"
    if type is None:
        raise TypeError(f"option {key}: give an explicit type for default {default!r}")
    return Option(key=key, default=default, type=type, doc=doc, **checks)


# shorthands for the checks that many keys share
_PROB = {"min": 0.0, "max": 1.0}  # a probability or a score threshold in [0, 1]
_NONNEG = {"min": 0}
_POS = {"gt": 0}

SCHEMA: tuple[Option, ...] = (
    # --- run --------------------------------------------------------------------------------------------------
    _opt("OUTPUT_DIR", "output", "root folder of runs; a run writes to OUTPUT_DIR/<dataset>/<config name>/",
         nonempty=True),
    _opt("SEED", 0, "random seed of the run (data order, augmentation, initialisation)", **_NONNEG),
    _opt("WORKERS", 2, "data-loading worker processes", **_NONNEG),
    _opt("PRINT_FREQ", 20, "log every this many iterations", min=1),
    _opt("DEVICE", "auto", "auto (cuda when available), cpu, cuda or cuda:N; cuda needs a visible GPU",
         pattern=r"auto|cpu|cuda(:\d+)?", pattern_doc="auto, cpu, cuda or cuda:N"),
    # --- data -------------------------------------------------------------------------------------------------
    _opt("DATASET.DATASET", "synthetic_crowdpose",
         "dataset: a name of bupose.data.catalogue.DATASETS (coco, crowdpose, ochuman, synthetic_crowdpose, "
         "synthetic_coco, synthetic_simple_crowdpose, synthetic_simple_coco) or yolo (an ultralytics YOLO-pose set; "
         "layouts in datasets/README.md)", nonempty=True),
    _opt("DATASET.ROOT", "datasets", "folder holding the datasets (relative paths are taken from the repo root); "
         "for yolo: the data yaml", nonempty=True),
    _opt("DATASET.TRAIN_SET", "train", "split used for training (coco: train2017; crowdpose: train/trainval)",
         nonempty=True),
    _opt("DATASET.TEST_SET", "val", "split used for validation and testing", nonempty=True),
    _opt("DATASET.NUM_JOINTS", 14, "keypoints per person; must match the dataset's layout", min=1),
    _opt("DATASET.ON_ERROR", "raise", "bad image or annotation: raise (stop with an error) or skip (log and skip)",
         choices=("raise", "skip")),
    _opt("DATASET.ALLOW_KEYPOINT_ORDER", False, "COCO-format files: accept a category whose keypoint names are the "
         "layout's in another order (by default an error: the labels would be read swapped)"),
    _opt("DATASET.PIPELINE", "affine", "training input pipeline: affine (square crops, DEKR) or letterbox (YOLO)",
         choices=("affine", "letterbox")),
    _opt("DATASET.INPUT_SIZE", 512, "network input side in pixels (affine: square crop; letterbox: long side)", min=1),
    _opt("DATASET.OUTPUT_STRIDE", 4, "input pixels per output-map cell for dense heads", min=1),
    _opt("DATASET.MAX_ROTATION", 30.0, "affine pipeline: maximum rotation in degrees", min=0, max=180),
    _opt("DATASET.MIN_SCALE", 0.75, "affine pipeline: smallest random scale", **_POS),
    _opt("DATASET.MAX_SCALE", 1.5, "affine pipeline: largest random scale", **_POS),
    _opt("DATASET.MAX_TRANSLATE", 40, "affine pipeline: maximum translation in input pixels", **_NONNEG),
    _opt("DATASET.FLIP", 0.5, "probability of a horizontal flip (with left/right keypoint swap)", **_PROB),
    _opt("DATASET.MOSAIC", 1.0, "letterbox pipeline: probability of a 4-image mosaic", **_PROB),
    _opt("DATASET.SCALE_JITTER", 0.5, "letterbox pipeline: random scale factor U(1 - s, 1 + s)", min=0, lt=1),
    _opt("DATASET.TRANSLATE", 0.1, "letterbox pipeline: random translation as a fraction of the input size", **_PROB),
    _opt("DATASET.SHEAR", 0.0, "letterbox pipeline: maximum shear in degrees", min=0, lt=90),
    _opt("DATASET.HSV", [0.015, 0.7, 0.4], "letterbox pipeline: YOLO HSV gains (hue, saturation, value); "
         "[0, 0, 0]: off", length=3, **_PROB),
    _opt("DATASET.PHOTOMETRIC", True, "photometric augmentation (colour, blur, noise) during training"),
    _opt("DATASET.SCALE_FACTOR", 0.35, "top-down training: random scale in [1 - s, 1 + s] (hrnet: 1 + N(0, s) "
         "clipped; rtmpose: 1 + s * a normal truncated to [-1, 1])", min=0, lt=1),
    _opt("DATASET.ROT_FACTOR", 45.0, "top-down training: random rotation, with probability 0.6 (hrnet: N(0, r) "
         "clipped to [-2r, 2r] degrees; rtmpose: r * a normal truncated to [-1, 1])", min=0, max=90),
    _opt("DATASET.AUGMENTATION", "hrnet", "top-down training: hrnet (the official SimpleBaseline / HRNet draws) or "
         "rtmpose (RTMPose's: truncated-normal box jitter, YOLOX HSV, blur, median blur and a coarse dropout with "
         "DATASET.DROPOUT_PROB; DATASET.PHOTOMETRIC is then not used)", choices=("hrnet", "rtmpose")),
    _opt("DATASET.SHIFT_FACTOR", 0.0, "top-down training: random box shift of up to this fraction of the box size "
         "(hrnet: N(0, s) clipped to [-s, s]; rtmpose: truncated normal; RTMPose: 0.16)", min=0, lt=1),
    _opt("DATASET.SHIFT_PROB", 0.3, "top-down training: probability of the box shift", **_PROB),
    _opt("DATASET.DROPOUT_PROB", 1.0, "top-down training, rtmpose augmentation: probability of one coarse dropout "
         "hole (0.2 to 0.4 of the crop's sides) in the crop", **_PROB),
    _opt("DATASET.STAGE2", {}, "top-down training: DATASET keys that change for the last TRAIN.STAGE2_EPOCHS epochs "
         "(RTMPose's two-stage switch), e.g. {SCALE_FACTOR: 0.25, ROT_FACTOR: 60, SHIFT_FACTOR: 0, DROPOUT_PROB: "
         "0.5}; keys: SCALE_FACTOR, ROT_FACTOR, SHIFT_FACTOR, SHIFT_PROB, DROPOUT_PROB, PROB_HALF_BODY, FLIP"),
    _opt("DATASET.PROB_HALF_BODY", 0.3, "top-down training: probability of a half-body crop", **_PROB),
    _opt("DATASET.NUM_JOINTS_HALF_BODY", 8, "top-down training: half-body crops need more than this many labelled "
         "keypoints", **_NONNEG),
    _opt("DATASET.COLOR_RGB", True, "top-down: the network takes RGB (True, the official models) or BGR input"),
    _opt("DATASET.SYNTHETIC_TRAIN_IMAGES", 1600, "synthetic dataset: training images to generate", min=1),
    _opt("DATASET.SYNTHETIC_VAL_IMAGES", 400, "synthetic dataset: validation images to generate", min=1),
    _opt("DATASET.SIGMA", 2.0, "Gaussian sigma of keypoint heatmaps, in output pixels", **_POS),
    _opt("DATASET.CENTER_SIGMA", 4.0, "Gaussian sigma of the person-centre heatmap, in output pixels", **_POS),
    _opt("DATASET.BG_WEIGHT", 0.1, "heatmap loss weight away from keypoints", **_NONNEG),
    _opt("DATASET.OFFSET_RADIUS", 4, "offsets are regressed within this many output pixels of a person's centre",
         **_NONNEG),
    _opt("DATASET.MAX_TRAIN_IMAGES", 0, "use only the first N training images (0: all); for quick experiments",
         **_NONNEG),
    _opt("DATASET.MAX_TEST_IMAGES", 0, "evaluate only the first N test images (0: all); for quick experiments",
         **_NONNEG),
    # --- model ------------------------------------------------------------------------------------------------
    _opt("MODEL.NAME", "", "method and backbone, e.g. hrnet_dekr"),
    _opt("MODEL.PRETRAINED", "", "backbone weights to start from (a file path); empty for none"),
    _opt("MODEL.SPEC", {}, "method-specific structure as in the official experiment files (checked by the model)"),
    _opt("MODEL.IMAGE_SIZE", [192, 256], "top-down: crop (network input) size [width, height]", length=2, min=1),
    _opt("MODEL.HEATMAP_SIZE", [48, 64], "top-down: heatmap size [width, height]", length=2, min=1),
    _opt("MODEL.SIGMA", 2.0, "top-down: Gaussian sigma of the heatmap targets, in heatmap pixels", **_POS),
    _opt("MODEL.CODEC", {}, "top-down: the codec as in an mmpose 1.x config, e.g. {type: UDPHeatmap, sigma: 2} or "
         "{type: MSRAHeatmap, sigma: 2, unbiased: true} (DARK); input_size / heatmap_size default to MODEL.IMAGE_SIZE "
         "/ HEATMAP_SIZE; empty: MSRAHeatmap with MODEL.SIGMA"),
    _opt("MODEL.ADAPTIVE_CONV", "grid_sample",
         "DEKR's adaptive and AdaptivePose's deformable convolutions: grid_sample (fast, exports) or deform_conv2d",
         choices=("grid_sample", "deform_conv2d")),
    # --- losses -----------------------------------------------------------------------------------------------
    _opt("LOSS.HEATMAPS_LOSS_FACTOR", 1.0, "weight of the heatmap loss", **_NONNEG),
    _opt("LOSS.OFFSETS_LOSS_FACTOR", 0.03, "weight of the offset regression loss", **_NONNEG),
    _opt("LOSS.USE_TARGET_WEIGHT", True, "top-down: weight each keypoint's heatmap loss by its target weight "
         "(0 for unlabelled keypoints)"),
    _opt("LOSS.USE_OHKM", False, "top-down: online hard keypoint mining (average of the TOPK largest keypoint losses)"),
    _opt("LOSS.TOPK", 8, "top-down: keypoints kept by LOSS.USE_OHKM", min=1),
    _opt("LOSS.GAINS", {}, "YOLO-Pose: overrides of the official loss gains, e.g. {KPT: 0.1, OBJ: 0.75} (keys: BOX, "
         "OBJ, CLS, KPT, KPT_CONF, L1_KPT)"),
    # --- training ---------------------------------------------------------------------------------------------
    _opt("TRAIN.BEGIN_EPOCH", 0, "first epoch (resume sets it from the checkpoint)", **_NONNEG),
    _opt("TRAIN.END_EPOCH", 140, "number of epochs", min=1),
    _opt("TRAIN.OPTIMIZER", "adam", "adam, adamw or sgd", choices=("adam", "adamw", "sgd")),
    _opt("TRAIN.LR", 0.001, "base learning rate", **_POS),
    _opt("TRAIN.LR_FACTOR", 0.1, "learning-rate multiplier at each step of TRAIN.LR_STEP", **_POS),
    _opt("TRAIN.LR_STEP", [90, 120], "epochs at which the learning rate is multiplied by TRAIN.LR_FACTOR", **_NONNEG),
    _opt("TRAIN.WD", 0.0, "weight decay", **_NONNEG),
    _opt("TRAIN.MOMENTUM", 0.9, "SGD momentum", min=0, lt=1),
    _opt("TRAIN.IMAGES_PER_GPU", 10, "batch size per process", min=1),
    _opt("TRAIN.SHUFFLE", True, "shuffle the training set every epoch"),
    _opt("TRAIN.AUTO_RESUME", True, "continue from OUTPUT_DIR's last checkpoint when there is one"),
    _opt("TRAIN.VAL_FREQ", 10, "validate (and keep the best checkpoint) every this many epochs", **_NONNEG),
    _opt("TRAIN.VAL_IMAGES", 0, "validation during training uses the first N test images (0: as tools/test.py, "
         "DATASET.MAX_TEST_IMAGES)", **_NONNEG),
    _opt("TRAIN.VAL_TTA", True, "validation during training with the config's test scales and flip (False: scale 1 "
         "without flip, faster)"),
    _opt("TRAIN.CLIP_GRAD", 0.0, "clip the gradient norm to this value (0: no clipping)", **_NONNEG),
    _opt("TRAIN.AMP", True, "automatic mixed precision on CUDA"),
    _opt("TRAIN.SYNC_BN", False, "synchronised batch norm across processes (CUDA DDP only)"),
    _opt("TRAIN.NESTEROV", False, "SGD with Nesterov momentum"),
    _opt("TRAIN.DECAY_NORM_AND_BIAS", True, "weight decay on every parameter (False: not on norm weights and biases, "
         "as YOLOv5's three parameter groups)"),
    _opt("TRAIN.LR_SCHEDULE", "step", "step (TRAIN.LR_STEP / LR_FACTOR), cosine or linear (to TRAIN.LR * LR_FINAL), "
         "or flat_cosine (RTMPose: TRAIN.LR for TRAIN.FLAT_EPOCHS, then a per-iteration cosine to LR * LR_FINAL)",
         choices=("step", "cosine", "linear", "flat_cosine")),
    _opt("TRAIN.FLAT_EPOCHS", 0, "flat_cosine schedule: epochs at TRAIN.LR before the cosine (RTMPose: half of "
         "TRAIN.END_EPOCH)", **_NONNEG),
    _opt("TRAIN.LAYER_DECAY", 1.0, "layer-wise learning-rate decay (ViTPose: 0.75): a ViT block i of N trains at LR "
         "* d ** (N - i), embeddings at LR * d ** (N + 1); no weight decay on biases, norms and position embeddings; "
         "1: off", gt=0, max=1),
    _opt("TRAIN.STAGE2_EPOCHS", 0, "the last this many epochs train with DATASET.STAGE2's augmentation (RTMPose: "
         "30); 0: one stage", **_NONNEG),
    _opt("TRAIN.LR_FINAL", 0.01, "cosine / linear schedules: final learning rate as a fraction of TRAIN.LR", **_NONNEG),
    _opt("TRAIN.WARMUP_EPOCHS", 0.0, "linear warm-up length in epochs (0: none)", **_NONNEG),
    _opt("TRAIN.WARMUP_MIN_ITERS", 0, "warm-up lasts at least this many iterations (YOLOv5: 1000)", **_NONNEG),
    _opt("TRAIN.WARMUP_BIAS_LR", 0.0, "warm-up: biases start from this learning rate (YOLOv5: 0.1), the rest from 0",
         **_NONNEG),
    _opt("TRAIN.WARMUP_MOMENTUM", 0.8, "warm-up: SGD momentum starts from this value", min=0, lt=1),
    _opt("TRAIN.NOMINAL_BATCH", 0, "accumulate gradients up to this global batch and scale TRAIN.WD by it "
         "(YOLOv5: 64; 0: off)", **_NONNEG),
    _opt("TRAIN.EMA", False, "keep an exponential moving average of the weights; validate and export it"),
    _opt("TRAIN.EMA_DECAY", 0.9999, "EMA decay (ramped up as decay * (1 - exp(-updates / TRAIN.EMA_TAU)))",
         min=0, lt=1),
    _opt("TRAIN.EMA_TAU", 2000.0, "EMA ramp-up, in optimiser steps", **_POS),
    _opt("LOSS.CENTER_FOCAL_FACTOR", 1.0, "AdaptivePose: weight of the centre-heatmap focal loss", **_NONNEG),
    _opt("LOSS.POSE_L1_FACTOR", 1.0, "AdaptivePose: weight of the L1 loss on the keypoint offsets at person centres",
         **_NONNEG),
    _opt("LOSS.AUX_FOCAL_FACTOR", 1.0, "AdaptivePose: weight of the auxiliary keypoint-heatmap focal loss (0: off)",
         **_NONNEG),
    _opt("LOSS.OKS_FACTOR", 5.0, "AdaptivePose: weight of the linear OKS loss on the regressed poses (official: 5 on "
         "COCO, 0 on CrowdPose)", **_NONNEG),
    _opt("LOSS.BONE_L1", False, "AdaptivePose: average the offset L1 with an L1 on bone vectors (AdaptivePose++; "
         "official on CrowdPose)"),
    # --- testing ----------------------------------------------------------------------------------------------
    _opt("TEST.MODEL_FILE", "", "weights to test (bupose or official checkpoint)"),
    _opt("TEST.FLIP_TEST", True, "average the mirrored image's outputs in"),
    _opt("TEST.SCALE_FACTOR", [1.0], "test scales (multiples of DATASET.INPUT_SIZE for the short image side)",
         nonempty=True, **_POS),
    _opt("TEST.IMAGES_PER_GPU", 1, "test batch size", min=1),
    _opt("TEST.MAX_NUM_PEOPLE", 30, "at most this many people per image", min=1),
    _opt("TEST.SCORE_THRESHOLD", 0.0, "bupose.Predictor and the demo drop people scoring below this (evaluation keeps "
         "everyone)", **_NONNEG),
    _opt("TEST.KEYPOINT_THRESHOLD", 0.01, "candidates (DEKR: centre peaks) below this score are dropped (negative: "
         "keep all)"),
    _opt("TEST.NMS_THRE", 0.15, "DEKR pose NMS: keypoint distance threshold relative to the pose size", **_NONNEG),
    _opt("TEST.NMS_NUM_THRE", 10, "DEKR pose NMS: more than this many close keypoints make a duplicate", **_NONNEG),
    _opt("TEST.DECREASE", 1.0, "DEKR: score factor of poses from scales other than 1", **_NONNEG),
    _opt("TEST.POOL_THRESHOLD1", 300, "DEKR: centre max-pool kernel 7 above this map size", **_NONNEG),
    _opt("TEST.POOL_THRESHOLD2", 200, "DEKR: centre max-pool kernel 5 above this map size (else 3)", **_NONNEG),
    _opt("TEST.FLIP_SHIFT", 3, "DEKR: input pixels the mirrored image is shifted left (aligns it to stride 4)",
         **_NONNEG),
    _opt("TEST.IOU_THRESHOLD", 0.65, "YOLO-Pose: box NMS IoU (also groups candidates for TEST.FUSE_KEYPOINTS)",
         **_NONNEG),
    _opt("TEST.NMS_KIND", "box", "YOLO-Pose: box (official) or oks (pose NMS with TEST.OKS_THRESHOLD)",
         choices=("box", "oks")),
    _opt("TEST.OKS_THRESHOLD", 0.7, "OKS NMS: a candidate with OKS above this to a kept pose is a duplicate",
         **_NONNEG),
    _opt("TEST.SCORE_KIND", "box", "YOLO-Pose person score: box (objectness x class) or box_x_keypoint (times the "
         "mean keypoint confidence)", choices=("box", "box_x_keypoint")),
    _opt("TEST.FUSE_KEYPOINTS", False, "YOLO-Pose: keypoints of a kept person = confidence-weighted average over "
         "the candidates it suppressed"),
    _opt("TEST.OFFICIAL_COORDINATES", False, "YOLO-Pose: letterbox and map back as the official code (pixel-corner "
         "convention, 0.5 px from bupose's pixel centres), the path of TEST.OFFICIAL_PATH"),
    _opt("TEST.OFFICIAL_PATH", "test", "YOLO-Pose with TEST.OFFICIAL_COORDINATES: test (the official test.py that "
         "gives the published numbers: int() resize, scale_coords with the height ratio) or detect (detect.py)",
         choices=("test", "detect")),
    _opt("TEST.FLIP_MODE", "fuse", "AdaptivePose flip test: official (average the centre heatmaps only; keypoints "
         "of the plain pass) or fuse (decode both passes, fuse each person's two poses by centre)",
         choices=("official", "fuse")),
    _opt("TEST.POSE_NMS", "soft", "AdaptivePose: merge of the people of several scales: soft (official Gaussian "
         "soft-NMS on keypoint boxes), oks (OKS NMS at TEST.OKS_THRESHOLD) or none", choices=("soft", "oks", "none")),
    # top-down family (official HRNet key names)
    _opt("TEST.USE_GT_BBOX", False, "top-down: person boxes from the ground truth (with the official HRNet clean-up)"),
    _opt("TEST.COCO_BBOX_FILE", "", "top-down: person boxes from a COCO detection results file (person category)"),
    _opt("TEST.IMAGE_THRE", 0.0, "top-down: detections below this score are dropped (negative: keep all)"),
    _opt("TEST.DETECTOR_CFG", "", "top-down: a bupose bottom-up / one-stage experiment file whose model finds the "
         "person boxes"),
    _opt("TEST.DETECTOR_MODEL_FILE", "", "top-down: weights of the TEST.DETECTOR_CFG model"),
    _opt("TEST.SHIFT_HEATMAP", True, "top-down flip test: shift the flipped-back heatmaps one pixel right (official)"),
    _opt("TEST.POST_PROCESS", True, "top-down: refine the heatmap maximum (quarter-pixel offset; DARK with "
         "MODEL.CODEC unbiased)"),
    _opt("TEST.IN_VIS_THRE", 0.2, "top-down rescoring: mean of the keypoint maxima above this, times the box score"),
    _opt("TEST.OKS_THRE", 0.9, "top-down: OKS NMS threshold over an image's people (above 1: no suppression)",
         **_NONNEG),
    _opt("TEST.SOFT_NMS", False, "top-down: soft OKS NMS instead of OKS NMS"),
    _opt("TEST.MAX_INPUT_PIXELS", 8388608, "most network-input pixels (batch x h x w) of one forward pass at test "
         "time: larger passes get a smaller input (mapped back exactly), top-down crops run in chunks, images that "
         "cannot fit are refused", min=4096),
    _opt("TEST.RESCORE_FILE", "", "DEKR rescoring-net weights (empty: scores as decoded)"),
)

_BY_KEY = {o.key: o for o in SCHEMA}
#: dict-valued keys whose entries are other keys of a section: key -> (section, the keys it may set)
NESTED_KEYS = {"DATASET.STAGE2": ("DATASET", ("SCALE_FACTOR", "ROT_FACTOR", "SHIFT_FACTOR", "SHIFT_PROB",
                                              "DROPOUT_PROB", "PROB_HALF_BODY", "FLIP"))}
_SECTIONS = {k.rsplit(".", 1)[0] for k in _BY_KEY if "." in k}
_TOP_SECTIONS = {s.split(".")[0] for s in _SECTIONS}


class Config(dict):
    """A nested dict with attribute access (``cfg.TRAIN.LR``), as yacs' CfgNode in the HRNet family.

    ``source`` is the experiment file it was loaded from (empty for defaults).
    """

    source = ""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name, value):
        # cfg.TRAIN.LR = x sets the key (a plain attribute would be missed by get_key, to_dict and save_config)
        if name == "source":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def get_key(self, key: str):
        node = self
        for part in key.split("."):
            node = node[part]
        return node

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def default_config() -> Config:
    """A new config holding every default."""
    cfg = Config()
    for opt in SCHEMA:
        _set(cfg, opt.key, copy.deepcopy(opt.default))
    return cfg


def _set(cfg: Config, key: str, value) -> None:
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, Config())
    node[leaf] = value


def closest_key(key: str) -> str | None:
    """The valid key most like ``key`` (for 'did you mean' messages)."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in _BY_KEY if k.rsplit(".", 1)[-1] == leaf]  # right name, wrong section
    matches = same_leaf[:1] or difflib.get_close_matches(key, list(_BY_KEY), n=1, cutoff=0.0)
    return matches[0] if matches else None


def closest_section(name: str) -> str | None:
    """The section (``TRAIN``, ``TEST``, ...) most like ``name``, or None when none is close."""
    matches = difflib.get_close_matches(name, sorted(_TOP_SECTIONS), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _unknown(key: str, where: str) -> ConfigError:
    if key in _SECTIONS | _TOP_SECTIONS:
        example = next(k for k in _BY_KEY if k.startswith(key + "."))
        return ConfigError(f"{where}: '{key}' is a section, not a key; set its keys (e.g. '{example}')")
    section, _, rest = key.partition(".")
    if not rest:  # one word: a top-level key or a section name with nothing under it
        top = [k for k in _BY_KEY if "." not in k] + sorted(_TOP_SECTIONS)
        hint = difflib.get_close_matches(key, top, n=1, cutoff=0.0)[0]
        what = "the section " if hint in _TOP_SECTIONS else ""
        return ConfigError(f"{where}: unknown config key '{key}'; did you mean {what}'{hint}'?")
    guess = closest_section(section) if section not in _TOP_SECTIONS else None
    if guess:  # TRIAN.LR: name the section first, then the closest key within it
        inside = [k for k in _BY_KEY if k.startswith(guess + ".")]
        hint = difflib.get_close_matches(f"{guess}.{rest}", inside, n=1, cutoff=0.0)[0]
        return ConfigError(f"{where}: unknown section '{section}' in config key '{key}'; did you mean '{guess}'? "
                           f"(closest key there: '{hint}')")
    hint = closest_key(key)
    return ConfigError(f"{where}: unknown config key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))


def check_value(key: str, value, where: str = "config"):
    """``value`` converted to ``key``'s type and checked against its Option's checks (range, choices, non-empty,
    length); otherwise a ConfigError naming where, the key, the value and what is expected."""
    opt = _BY_KEY.get(key)
    if opt is None:
        raise _unknown(key, where)
    value = _convert(opt, value, where)
    if key in NESTED_KEYS:  # a dict of other keys of a section: each checked as that key
        section, allowed = NESTED_KEYS[key]
        for k, v in value.items():
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                raise ConfigError(f"{where}: {key} cannot set {k!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                                  + f" (it takes {', '.join(allowed)})")
            value[k] = check_value(f"{section}.{k}", v, f"{where}: {key}")
    problem = _violation(opt, value)
    if problem is not None:
        expected = " and ".join(p for p in (opt.expectation(), problem) if p)
        raise ConfigError(f"{where}: {key} is {value!r}; expected {expected}")
    return value


def _violation(opt: Option, value) -> str | None:
    """None when ``value`` (already of ``opt``'s type) passes ``opt``'s checks; else what else is expected beyond
    :meth:`Option.expectation` (usually nothing: an empty string)."""
    if opt.choices and value not in opt.choices:
        return ""
    if opt.pattern and not re.fullmatch(opt.pattern, value):
        return ""
    if (opt.nonempty and len(value) == 0) or (opt.length is not None and len(value) != opt.length):
        return ""
    numbers = value if opt.type in ("list[int]", "list[float]") else [value] if opt.type in ("int", "float") else []
    for v in numbers:
        if isinstance(v, float) and not math.isfinite(v):
            return "finite numbers" if opt.type.startswith("list") else "a finite number"
        if ((opt.min is not None and v < opt.min) or (opt.gt is not None and v <= opt.gt)
                or (opt.max is not None and v > opt.max) or (opt.lt is not None and v >= opt.lt)):
            return ""
    return None


def _convert(opt: Option, value, where: str):
    """``value`` converted to ``opt``'s type, or a ConfigError naming key, expected type and value."""
    key = opt.key

    def fail():
        return ConfigError(f"{where}: {key} expects {opt.type}, got {value!r} ({type(value).__name__})")

    t = opt.type
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail()
    if t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if t == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except (TypeError, ValueError):
            raise fail() from None
    if t == "str":
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise fail()
    if t == "dict":
        if isinstance(value, dict):
            return value
        raise fail()
    if t.startswith("list"):
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and t in ("list[int]", "list[float]"):
            value = [value]  # TEST.SCALE_FACTOR 1 -> [1.0]
        if not isinstance(value, list):
            raise fail()
        elem = t[5:-1] if t != "list" else None
        out = []
        for v in value:
            if elem == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
            elif elem == "int" and isinstance(v, int) and not isinstance(v, bool):
                out.append(v)
            elif elem == "str" and isinstance(v, str):
                out.append(v)
            elif elem is None:
                out.append(v)
            else:
                raise fail()
        return out
    raise AssertionError(f"unhandled type {t}")


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in _BY_KEY:
            yield key, v
        elif isinstance(v, dict) and key in _SECTIONS | _TOP_SECTIONS:
            yield from _flatten(v, key + ".")
        elif v is None and key in _SECTIONS | _TOP_SECTIONS:
            continue  # an empty section (``TEST:`` with nothing under it)
        elif isinstance(v, dict) and v and not prefix:  # a misspelt section (TRIAN:): report its first key
            yield from _flatten(v, key + ".")
        else:
            yield key, v  # unknown: reported by check_value


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, Any, str]]:
    """(key, value, file) triples of a file and its bases, bases first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ cycle through {' -> '.join(str(p) for p in seen + (path,))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    items: list[tuple[str, Any, str]] = []
    bases = data.pop("_BASE_", [])
    for base in [bases] if isinstance(bases, str) else bases:
        items += _read_yaml(path.parent / base, seen + (path,))
    items += [(k, v, str(path)) for k, v in _flatten(data)]
    return items


def parse_overrides(opts: Sequence[str]) -> list[tuple[str, Any]]:
    """``["TRAIN.LR", "0.01", ...]`` -> ``[("TRAIN.LR", 0.01), ...]`` (values parsed as YAML)."""
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides come as KEY VALUE pairs; '{opts[-1]}' has no value")
    out = []
    for key, text in zip(opts[0::2], opts[1::2]):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        out.append((key, text if value is None and text not in ("null", "~", "") else value))
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the experiment file (and its ``_BASE_`` files), then ``KEY VALUE`` overrides."""
    cfg = default_config()
    if path is not None:
        for key, value, where in _read_yaml(Path(path)):
            _merge(cfg, key, value, where)
        cfg.source = str(path)
    for key, value in parse_overrides(list(overrides)):
        _merge(cfg, key, value, "command line")
    check_config(cfg, where=str(path) if path is not None else "command line")
    return cfg


#: Checks between two keys: (key, operator, other key); both numbers.
RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("DATASET.MIN_SCALE", "<=", "DATASET.MAX_SCALE"),
)


def check_config(cfg: Config, where: str = "config") -> None:
    """Check every key of ``cfg`` as :func:`check_value` does, and :data:`RELATIONS`; a ConfigError names the first
    problem. For configs changed in code after loading (``cfg.TRAIN.IMAGES_PER_GPU = 0``)."""
    for key, value in _flatten(cfg.to_dict()):
        check_value(key, value, where)  # a key set in code that is not in SCHEMA: 'did you mean'
    for opt in SCHEMA:
        try:
            value = cfg.get_key(opt.key)
        except (KeyError, TypeError):
            raise ConfigError(f"{where}: config has no key {opt.key} (expected every key of bupose.config.SCHEMA; "
                              f"start from default_config() or load_config())") from None
        check_value(opt.key, value, where)
    for left, op, right in RELATIONS:
        a, b = cfg.get_key(left), cfg.get_key(right)
        if not {"<=": a <= b, "<": a < b}[op]:
            raise ConfigError(f"{where}: {left} is {a!r} and {right} is {b!r}; expected {left} {op} {right}")


def _merge(cfg: Config, key: str, value, where: str) -> None:
    value = check_value(key, value, where)
    if _BY_KEY[key].type == "dict" and value:  # a dict merges into the one there; an empty one clears it
        value = _deep_merge(cfg.get_key(key), value)
    _set(cfg, key, value)


def _deep_merge(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically); it loads back with :func:`load_config`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")
    os.replace(tmp, path)
    return path


def describe(cfg: Config | None = None, width: int = 120) -> str:
    """Every key with type, checks, value (the default unless ``cfg`` says otherwise) and doc, as a table within
    ``width`` columns: ALLOWED, VALUE and DOC are wrapped in their columns, and a key too long for its column gets a
    line of its own above its row."""
    cfg = cfg or default_config()
    rows = [(o.key, o.type, o.expectation() or "-", repr(cfg.get_key(o.key)), o.doc) for o in SCHEMA]
    header = ("KEY", "TYPE", "ALLOWED", "VALUE", "DOC")
    w = [min(max(len(r[i]) for r in rows + [header]), cap) for i, cap in enumerate((24, 12, 24, 20))]
    w.append(max(width - sum(w) - 2 * len(w), 16))
    lines = []
    for row in [header] + rows:
        if len(row[0]) > w[0]:
            lines.append(row[0])
            row = ("",) + row[1:]
        cells = [textwrap.wrap(text, n, break_on_hyphens=False) or [""] for text, n in zip(row, w)]
        for parts in itertools.zip_longest(*cells, fillvalue=""):
            lines.append("  ".join(f"{p:<{n}}" for p, n in zip(parts, w)).rstrip())
    return "\n".join(lines)


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare a tool's ``KEY VALUE`` overrides (``args.opts``); parse with :func:`parse_tool_args` so that the
    tool's options (``--output-dir``, ...) may come before, between or after the overrides."""
    parser.set_defaults(opts=[])
    note = "KEY VALUE ...: config overrides, e.g. TRAIN.END_EPOCH 10 (python -m bupose.config lists every key)"
    parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note


def parse_tool_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser``'s options, wherever they are, and the other words as ``args.opts`` (the KEY VALUE overrides, in
    order). A word in a KEY position that starts with '-' is an unknown option: a usage error (exit 2)."""
    args, rest = parser.parse_known_args(argv)
    for i in range(0, len(rest), 2):  # odd positions are values, which may be negative numbers
        if rest[i].startswith("-"):
            parser.error(f"unrecognized option: {rest[i]}")
    args.opts = list(args.opts) + rest
    return args


def main(argv=None) -> int:
    """``python -m bupose.config``: print the table; a ConfigError is printed as one line (exit code 2)."""
    parser = argparse.ArgumentParser(description="print every config key with its type, allowed values, value "
                                                 "and doc")
    parser.add_argument("--cfg", help="experiment file")
    parser.add_argument("--width", type=int, default=120, help="wrap the table at this many columns (default 120)")
    add_override_arguments(parser)
    args = parse_tool_args(parser, argv)
    try:
        text = describe(load_config(args.cfg, args.opts), args.width)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
