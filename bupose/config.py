"""Configuration: every key with its default, type and a one-line doc, in one table (:data:`SCHEMA`).

Experiment files are YAML with the HRNet/DEKR layout (``MODEL.*``, ``DATASET.*``, ``TRAIN.*``, ``TEST.*``)::

    _BASE_: ../base.yaml          # optional; a path relative to this file, or a list of them
    DATASET:
      DATASET: crowdpose
    TRAIN:
      END_EPOCH: 140

and command lines override single keys as ``KEY VALUE`` pairs (``TRAIN.END_EPOCH 10 TEST.FLIP_TEST False
TEST.SCALE_FACTOR [0.5,1,2]``); values are parsed as YAML. An unknown key is an error naming the closest valid
key; a value of the wrong type is an error naming key, expected type and value.

``python -m bupose.config [--cfg FILE [KEY VALUE ...]]`` prints every key with its type, value and doc.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from bupose.errors import ConfigError


@dataclass(frozen=True)
class Option:
    key: str
    default: Any
    type: str  # int, float, bool, str, list[int], list[float], list[str], list, dict
    doc: str


def _opt(key: str, default: Any, doc: str, type: str | None = None) -> Option:
    if type is None:
        type = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(default.__class__)
        if isinstance(default, list):
            kinds = {("float" if isinstance(v, float) else "int" if isinstance(v, int) else "str") for v in default}
            type = f"list[{kinds.pop()}]" if len(kinds) == 1 else "list"
    if type is None:
        raise TypeError(f"option {key}: give an explicit type for default {default!r}")
    return Option(key, default, type, doc)


SCHEMA: tuple[Option, ...] = (
    # --- run --------------------------------------------------------------------------------------------------
    _opt("OUTPUT_DIR", "output", "root folder of runs; a run writes to OUTPUT_DIR/<dataset>/<config name>/"),
    _opt("SEED", 0, "random seed of the run (data order, augmentation, initialisation)"),
    _opt("WORKERS", 2, "data-loading worker processes"),
    _opt("PRINT_FREQ", 20, "log every this many iterations"),
    _opt("DEVICE", "auto", "auto (cuda when available), cpu, or cuda[:N]"),
    # --- data -------------------------------------------------------------------------------------------------
    _opt("DATASET.DATASET", "synthetic_crowdpose",
         "dataset: a name of bupose.data.catalogue.DATASETS (coco, crowdpose, ochuman, synthetic_crowdpose, "
         "synthetic_coco, synthetic_simple_crowdpose, synthetic_simple_coco) or yolo (an ultralytics YOLO-pose set; "
         "layouts in datasets/README.md)"),
    _opt("DATASET.ROOT", "datasets", "folder holding the datasets (relative paths are taken from the repo root); "
         "for yolo: the data yaml"),
    _opt("DATASET.TRAIN_SET", "train", "split used for training (coco: train2017; crowdpose: train/trainval)"),
    _opt("DATASET.TEST_SET", "val", "split used for validation and testing"),
    _opt("DATASET.NUM_JOINTS", 14, "keypoints per person; must match the dataset's layout"),
    _opt("DATASET.ON_ERROR", "raise", "bad image or annotation: raise (stop with an error) or skip (log and skip)"),
    _opt("DATASET.PIPELINE", "affine", "training input pipeline: affine (square crops, DEKR) or letterbox (YOLO)"),
    _opt("DATASET.INPUT_SIZE", 512, "network input side in pixels (affine: square crop; letterbox: long side)"),
    _opt("DATASET.OUTPUT_STRIDE", 4, "input pixels per output-map cell for dense heads"),
    _opt("DATASET.MAX_ROTATION", 30.0, "affine pipeline: maximum rotation in degrees"),
    _opt("DATASET.MIN_SCALE", 0.75, "affine pipeline: smallest random scale"),
    _opt("DATASET.MAX_SCALE", 1.5, "affine pipeline: largest random scale"),
    _opt("DATASET.MAX_TRANSLATE", 40, "affine pipeline: maximum translation in input pixels"),
    _opt("DATASET.FLIP", 0.5, "probability of a horizontal flip (with left/right keypoint swap)"),
    _opt("DATASET.MOSAIC", 1.0, "letterbox pipeline: probability of a 4-image mosaic"),
    _opt("DATASET.SCALE_JITTER", 0.5, "letterbox pipeline: random scale factor U(1 - s, 1 + s)"),
    _opt("DATASET.TRANSLATE", 0.1, "letterbox pipeline: random translation as a fraction of the input size"),
    _opt("DATASET.SHEAR", 0.0, "letterbox pipeline: maximum shear in degrees"),
    _opt("DATASET.HSV", [0.015, 0.7, 0.4], "letterbox pipeline: YOLO HSV gains (hue, saturation, value); "
         "[0, 0, 0]: off"),
    _opt("DATASET.PHOTOMETRIC", True, "photometric augmentation (colour, blur, noise) during training"),
    _opt("DATASET.SCALE_FACTOR", 0.35, "top-down training: random scale 1 + N(0, s) clipped to [1 - s, 1 + s]"),
    _opt("DATASET.ROT_FACTOR", 45.0, "top-down training: random rotation N(0, r) clipped to [-2r, 2r] degrees, "
         "applied with probability 0.6"),
    _opt("DATASET.PROB_HALF_BODY", 0.3, "top-down training: probability of a half-body crop"),
    _opt("DATASET.NUM_JOINTS_HALF_BODY", 8, "top-down training: half-body crops need more than this many labelled "
         "keypoints"),
    _opt("DATASET.COLOR_RGB", True, "top-down: the network takes RGB (True, the official models) or BGR input"),
    _opt("DATASET.SYNTHETIC_TRAIN_IMAGES", 1600, "synthetic dataset: training images to generate"),
    _opt("DATASET.SYNTHETIC_VAL_IMAGES", 400, "synthetic dataset: validation images to generate"),
    _opt("DATASET.SIGMA", 2.0, "Gaussian sigma of keypoint heatmaps, in output pixels"),
    _opt("DATASET.CENTER_SIGMA", 4.0, "Gaussian sigma of the person-centre heatmap, in output pixels"),
    _opt("DATASET.BG_WEIGHT", 0.1, "heatmap loss weight away from keypoints"),
    _opt("DATASET.OFFSET_RADIUS", 4, "offsets are regressed within this many output pixels of a person's centre"),
    _opt("DATASET.MAX_TRAIN_IMAGES", 0, "use only the first N training images (0: all); for quick experiments"),
    _opt("DATASET.MAX_TEST_IMAGES", 0, "evaluate only the first N test images (0: all); for quick experiments"),
    # --- model ------------------------------------------------------------------------------------------------
    _opt("MODEL.NAME", "", "method and backbone, e.g. hrnet_dekr"),
    _opt("MODEL.PRETRAINED", "", "backbone weights to start from (a file path); empty for none"),
    _opt("MODEL.SPEC", {}, "method-specific structure as in the official experiment files (checked by the model)"),
    _opt("MODEL.IMAGE_SIZE", [192, 256], "top-down: crop (network input) size [width, height]"),
    _opt("MODEL.HEATMAP_SIZE", [48, 64], "top-down: heatmap size [width, height]"),
    _opt("MODEL.SIGMA", 2.0, "top-down: Gaussian sigma of the heatmap targets, in heatmap pixels"),
    _opt("MODEL.CODEC", {}, "top-down: the codec as in an mmpose 1.x config, e.g. {type: UDPHeatmap, sigma: 2} or "
         "{type: MSRAHeatmap, sigma: 2, unbiased: true} (DARK); input_size / heatmap_size default to MODEL.IMAGE_SIZE "
         "/ HEATMAP_SIZE; empty: MSRAHeatmap with MODEL.SIGMA"),
    _opt("MODEL.ADAPTIVE_CONV", "grid_sample",
         "DEKR's adaptive and AdaptivePose's deformable convolutions: grid_sample (fast, exports) or deform_conv2d"),
    # --- losses -----------------------------------------------------------------------------------------------
    _opt("LOSS.HEATMAPS_LOSS_FACTOR", 1.0, "weight of the heatmap loss"),
    _opt("LOSS.OFFSETS_LOSS_FACTOR", 0.03, "weight of the offset regression loss"),
    _opt("LOSS.USE_TARGET_WEIGHT", True, "top-down: weight each keypoint's heatmap loss by its target weight "
         "(0 for unlabelled keypoints)"),
    _opt("LOSS.USE_OHKM", False, "top-down: online hard keypoint mining (average of the TOPK largest keypoint losses)"),
    _opt("LOSS.TOPK", 8, "top-down: keypoints kept by LOSS.USE_OHKM"),
    _opt("LOSS.GAINS", {}, "YOLO-Pose: overrides of the official loss gains, e.g. {KPT: 0.1, OBJ: 0.75} (keys: BOX, "
         "OBJ, CLS, KPT, KPT_CONF, L1_KPT)"),
    # --- training ---------------------------------------------------------------------------------------------
    _opt("TRAIN.BEGIN_EPOCH", 0, "first epoch (resume sets it from the checkpoint)"),
    _opt("TRAIN.END_EPOCH", 140, "number of epochs"),
    _opt("TRAIN.OPTIMIZER", "adam", "adam, adamw or sgd"),
    _opt("TRAIN.LR", 0.001, "base learning rate"),
    _opt("TRAIN.LR_FACTOR", 0.1, "learning-rate multiplier at each step of TRAIN.LR_STEP"),
    _opt("TRAIN.LR_STEP", [90, 120], "epochs at which the learning rate is multiplied by TRAIN.LR_FACTOR"),
    _opt("TRAIN.WD", 0.0, "weight decay"),
    _opt("TRAIN.MOMENTUM", 0.9, "SGD momentum"),
    _opt("TRAIN.IMAGES_PER_GPU", 10, "batch size per process"),
    _opt("TRAIN.SHUFFLE", True, "shuffle the training set every epoch"),
    _opt("TRAIN.AUTO_RESUME", True, "continue from OUTPUT_DIR's last checkpoint when there is one"),
    _opt("TRAIN.VAL_FREQ", 10, "validate (and keep the best checkpoint) every this many epochs"),
    _opt("TRAIN.CLIP_GRAD", 0.0, "clip the gradient norm to this value (0: no clipping)"),
    _opt("TRAIN.AMP", True, "automatic mixed precision on CUDA"),
    _opt("TRAIN.SYNC_BN", False, "synchronised batch norm across processes (CUDA DDP only)"),
    _opt("TRAIN.NESTEROV", False, "SGD with Nesterov momentum"),
    _opt("TRAIN.DECAY_NORM_AND_BIAS", True, "weight decay on every parameter (False: not on norm weights and biases, "
         "as YOLOv5's three parameter groups)"),
    _opt("TRAIN.LR_SCHEDULE", "step", "step (TRAIN.LR_STEP / LR_FACTOR), cosine or linear (to TRAIN.LR * LR_FINAL)"),
    _opt("TRAIN.LR_FINAL", 0.01, "cosine / linear schedules: final learning rate as a fraction of TRAIN.LR"),
    _opt("TRAIN.WARMUP_EPOCHS", 0.0, "linear warm-up length in epochs (0: none)"),
    _opt("TRAIN.WARMUP_MIN_ITERS", 0, "warm-up lasts at least this many iterations (YOLOv5: 1000)"),
    _opt("TRAIN.WARMUP_BIAS_LR", 0.0, "warm-up: biases start from this learning rate (YOLOv5: 0.1), the rest from 0"),
    _opt("TRAIN.WARMUP_MOMENTUM", 0.8, "warm-up: SGD momentum starts from this value"),
    _opt("TRAIN.NOMINAL_BATCH", 0, "accumulate gradients up to this global batch and scale TRAIN.WD by it "
         "(YOLOv5: 64; 0: off)"),
    _opt("TRAIN.EMA", False, "keep an exponential moving average of the weights; validate and export it"),
    _opt("TRAIN.EMA_DECAY", 0.9999, "EMA decay (ramped up as decay * (1 - exp(-updates / TRAIN.EMA_TAU)))"),
    _opt("TRAIN.EMA_TAU", 2000.0, "EMA ramp-up, in optimiser steps"),
    _opt("LOSS.CENTER_FOCAL_FACTOR", 1.0, "AdaptivePose: weight of the centre-heatmap focal loss"),
    _opt("LOSS.POSE_L1_FACTOR", 1.0, "AdaptivePose: weight of the L1 loss on the keypoint offsets at person centres"),
    _opt("LOSS.AUX_FOCAL_FACTOR", 1.0, "AdaptivePose: weight of the auxiliary keypoint-heatmap focal loss (0: off)"),
    _opt("LOSS.OKS_FACTOR", 5.0, "AdaptivePose: weight of the linear OKS loss on the regressed poses (official: 5 on "
         "COCO, 0 on CrowdPose)"),
    _opt("LOSS.BONE_L1", False, "AdaptivePose: average the offset L1 with an L1 on bone vectors (AdaptivePose++; "
         "official on CrowdPose)"),
    # --- testing ----------------------------------------------------------------------------------------------
    _opt("TEST.MODEL_FILE", "", "weights to test (bupose or official checkpoint)"),
    _opt("TEST.FLIP_TEST", True, "average the mirrored image's outputs in"),
    _opt("TEST.SCALE_FACTOR", [1.0], "test scales (multiples of DATASET.INPUT_SIZE for the short image side)"),
    _opt("TEST.IMAGES_PER_GPU", 1, "test batch size"),
    _opt("TEST.MAX_NUM_PEOPLE", 30, "at most this many people per image"),
    _opt("TEST.KEYPOINT_THRESHOLD", 0.01, "candidates (DEKR: centre peaks) below this score are dropped"),
    _opt("TEST.NMS_THRE", 0.15, "DEKR pose NMS: keypoint distance threshold relative to the pose size"),
    _opt("TEST.NMS_NUM_THRE", 10, "DEKR pose NMS: more than this many close keypoints make a duplicate"),
    _opt("TEST.DECREASE", 1.0, "DEKR: score factor of poses from scales other than 1"),
    _opt("TEST.POOL_THRESHOLD1", 300, "DEKR: centre max-pool kernel 7 above this map size"),
    _opt("TEST.POOL_THRESHOLD2", 200, "DEKR: centre max-pool kernel 5 above this map size (else 3)"),
    _opt("TEST.FLIP_SHIFT", 3, "DEKR: input pixels the mirrored image is shifted left (aligns it to stride 4)"),
    _opt("TEST.IOU_THRESHOLD", 0.65, "YOLO-Pose: box NMS IoU (also groups candidates for TEST.FUSE_KEYPOINTS)"),
    _opt("TEST.NMS_KIND", "box", "YOLO-Pose: box (official) or oks (pose NMS with TEST.OKS_THRESHOLD)"),
    _opt("TEST.OKS_THRESHOLD", 0.7, "OKS NMS: a candidate with OKS above this to a kept pose is a duplicate"),
    _opt("TEST.SCORE_KIND", "box", "YOLO-Pose person score: box (objectness x class) or box_x_keypoint (times the "
         "mean keypoint confidence)"),
    _opt("TEST.FUSE_KEYPOINTS", False, "YOLO-Pose: keypoints of a kept person = confidence-weighted average over "
         "the candidates it suppressed"),
    _opt("TEST.OFFICIAL_COORDINATES", False, "YOLO-Pose: map back as the official scale_coords (pixel-corner "
         "convention, 0.5 px from bupose's pixel centres)"),
    _opt("TEST.FLIP_MODE", "fuse", "AdaptivePose flip test: official (average the centre heatmaps only; keypoints "
         "of the plain pass) or fuse (decode both passes, fuse each person's two poses by centre)"),
    _opt("TEST.POSE_NMS", "soft", "AdaptivePose: merge of the people of several scales: soft (official Gaussian "
         "soft-NMS on keypoint boxes), oks (OKS NMS at TEST.OKS_THRESHOLD) or none"),
    # top-down family (official HRNet key names)
    _opt("TEST.USE_GT_BBOX", False, "top-down: person boxes from the ground truth (with the official HRNet clean-up)"),
    _opt("TEST.COCO_BBOX_FILE", "", "top-down: person boxes from a COCO detection results file (person category)"),
    _opt("TEST.IMAGE_THRE", 0.0, "top-down: detections below this score are dropped"),
    _opt("TEST.DETECTOR_CFG", "", "top-down: a bupose bottom-up / one-stage experiment file whose model finds the "
         "person boxes"),
    _opt("TEST.DETECTOR_MODEL_FILE", "", "top-down: weights of the TEST.DETECTOR_CFG model"),
    _opt("TEST.SHIFT_HEATMAP", True, "top-down flip test: shift the flipped-back heatmaps one pixel right (official)"),
    _opt("TEST.POST_PROCESS", True, "top-down: refine the heatmap maximum (quarter-pixel offset; DARK with "
         "MODEL.CODEC unbiased)"),
    _opt("TEST.IN_VIS_THRE", 0.2, "top-down rescoring: mean of the keypoint maxima above this, times the box score"),
    _opt("TEST.OKS_THRE", 0.9, "top-down: OKS NMS threshold over an image's people"),
    _opt("TEST.SOFT_NMS", False, "top-down: soft OKS NMS instead of OKS NMS"),
    _opt("TEST.RESCORE_FILE", "", "DEKR rescoring-net weights (empty: scores as decoded)"),
)

_BY_KEY = {o.key: o for o in SCHEMA}
_SECTIONS = {k.rsplit(".", 1)[0] for k in _BY_KEY if "." in k}


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


def _unknown(key: str, where: str) -> ConfigError:
    hint = closest_key(key)
    return ConfigError(f"{where}: unknown config key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))


def check_value(key: str, value, where: str = "config"):
    """``value`` converted to ``key``'s type, or a ConfigError naming key, expected type and value."""
    opt = _BY_KEY.get(key)
    if opt is None:
        raise _unknown(key, where)

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
        elif isinstance(v, dict) and key in _SECTIONS | {s.split(".")[0] for s in _SECTIONS}:
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
    return cfg


def _merge(cfg: Config, key: str, value, where: str) -> None:
    value = check_value(key, value, where)
    if _BY_KEY[key].type == "dict":
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


def describe(cfg: Config | None = None) -> str:
    """Every key with type, value (the default unless ``cfg`` says otherwise) and doc."""
    cfg = cfg or default_config()
    rows = [(o.key, o.type, repr(cfg.get_key(o.key)), o.doc) for o in SCHEMA]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{k:<{w[0]}}  {t:<{w[1]}}  {v:<{w[2]}}  {d}" for k, t, v, d in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description="print every config key with its type, value and doc")
    parser.add_argument("--cfg", help="experiment file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    print(describe(load_config(args.cfg, args.opts)))


if __name__ == "__main__":
    main()
