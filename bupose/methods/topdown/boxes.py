"""Person boxes for the top-down test, from one of three sources behind one interface::

    source = build_box_source(cfg, reader, spec)
    boxes = source(image_id, image)         # PersonBoxes(xywh (N, 4) float64, scores (N,) float64)

* ground truth (``TEST.USE_GT_BBOX``), cleaned as the official HRNet / SimpleBaseline test does
  (``_load_coco_keypoint_annotation_kernal``: crowd annotations and those of other categories skipped, boxes clipped
  to the image as :func:`bupose.methods.topdown.crops.clean_boxes`, zero-area annotations and people without any
  labelled keypoint dropped), score 1;
* a COCO detection results file (``TEST.COCO_BBOX_FILE``; ``[{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}, ...]``), person category (1) only, scores below ``TEST.IMAGE_THRE`` dropped, as the official
  ``_load_coco_person_detection_results``;
* any bupose bottom-up / one-stage model as the person detector (``TEST.DETECTOR_CFG`` + ``TEST.DETECTOR_MODEL_FILE``),
  run through :class:`bupose.Predictor`: its people's :attr:`~bupose.inference.people.People.boxes` (YOLO-Pose's
  detection boxes, the keypoint extent of DEKR's / AdaptivePose's people) and scores, those below
  ``TEST.IMAGE_THRE`` dropped.

Boxes are ``[x, y, w, h]`` in image pixels, in the order the source gives them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from bupose.errors import ConfigError, DataError
from bupose.methods.topdown.crops import clean_boxes

#: the COCO person category: detection files list other categories too
PERSON_CATEGORY_ID = 1


class PersonBoxes(NamedTuple):
    """The person boxes of one image: ``xywh`` ``(N, 4)`` float64 ``[x, y, w, h]`` and ``scores`` ``(N,)`` float64."""

    xywh: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "PersonBoxes":
        return cls(np.zeros((0, 4)), np.zeros((0,)))


def as_person_boxes(boxes, where: str = "boxes") -> PersonBoxes:
    """``boxes`` as :class:`PersonBoxes`: a PersonBoxes, an ``(xywh, scores)`` pair, or an ``(N, 4)`` array (score 1
    each); DataError for anything else."""
    if isinstance(boxes, PersonBoxes):
        return boxes
    if isinstance(boxes, tuple) and len(boxes) == 2:
        xywh, scores = boxes
    else:
        xywh, scores = boxes, None
    xywh = np.asarray(xywh, np.float64)
    if xywh.size == 0:
        xywh = xywh.reshape(0, 4)
    if xywh.ndim != 2 or xywh.shape[1] != 4 or not np.isfinite(xywh).all():
        raise DataError(f"{where}: expected person boxes as finite (N, 4) [x, y, w, h], got shape {xywh.shape}")
    scores = np.ones(len(xywh)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if scores.shape != (len(xywh),):
        raise DataError(f"{where}: {len(xywh)} boxes but {scores.size} scores")
    return PersonBoxes(xywh, scores)


# --- ground truth ------------------------------------------------------------------------------------------------
class GroundTruthBoxes:
    """The cleaned ground-truth boxes of a COCO-format keypoint file (see the module docstring), score 1.

    Args:
        coco: the file's content (``images``, ``annotations``, ``categories``).
        source: the file, for messages. num_keypoints: K; an annotation with another keypoint count is an error.
    """

    def __init__(self, coco: dict, source: str = "ground truth", num_keypoints: int | None = None):
        self.source = source
        cats = [c for c in coco.get("categories") or [] if isinstance(c, dict) and "keypoints" in c]
        person = {c.get("id") for c in cats} if cats else None  # no keypoint category declared: every annotation
        sizes = {im["id"]: (im.get("width"), im.get("height")) for im in coco["images"]}
        found: dict = {image_id: ([], []) for image_id in sizes}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0) or (person is not None and ann.get("category_id") not in person) \
                    or ann.get("image_id") not in sizes:
                continue
            kp = ann.get("keypoints")
            if not kp:
                continue
            if num_keypoints is not None and len(kp) != 3 * num_keypoints:
                raise DataError(f"{source}: annotation {ann.get('id')} has {len(kp)} keypoint values, expected "
                                f"{3 * num_keypoints}")
            width, height = sizes[ann["image_id"]]
            box, valid = clean_boxes(ann["bbox"], (width, height))
            area = ann.get("area", box[0, 2] * box[0, 3])  # CrowdPose files have no area
            if area > 0 and valid[0] and max(kp) != 0:
                found[ann["image_id"]][0].append(box[0])
                found[ann["image_id"]][1].append(ann.get("id"))
        self.boxes = {i: PersonBoxes(np.asarray(b, np.float64).reshape(-1, 4), np.ones(len(b)))
                      for i, (b, _) in found.items()}
        #: image id -> the annotation ids of its boxes, in order
        self.ann_ids = {i: ids for i, (_, ids) in found.items()}

    def __call__(self, image_id, image=None) -> PersonBoxes:
        if image_id not in self.boxes:
            raise DataError(f"{self.source}: no image with id {image_id!r}")
        return self.boxes[image_id]


def coco_dict(reader) -> dict:
    """A reader's annotations as a COCO-format dict (its pycocotools index, or ``coco_gt()`` for YOLO sets)."""
    if hasattr(reader, "coco"):
        return reader.coco.dataset
    if hasattr(reader, "coco_gt"):
        return reader.coco_gt()
    raise DataError(f"{reader!r} offers no COCO-format ground truth (TEST.USE_GT_BBOX needs one)")


def split_image_ids(reader) -> list:
    """Every image id of a reader's split (its file's images, also those the reader skips)."""
    if hasattr(reader, "coco"):
        return list(reader.coco.getImgIds())
    return list(reader.image_ids)


# --- detection results file ------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class DetectionFileBoxes:
    """Person boxes from a COCO detection results file.

    Args:
        path: the JSON file, a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        image_ids: the split's image ids; boxes for any other image are an error naming them (None: no check).
        image_thre: boxes scoring below this are dropped. category_id: the person category.
    """

    def __init__(self, path: str | Path, *, image_ids: Sequence | None = None, image_thre: float = 0.0,
                 category_id: int = PERSON_CATEGORY_ID):
        self.path = Path(path)
        entries = self._read()
        per_image: dict = {}
        for i, e in enumerate(entries):
            self._check(i, e)
            if e["category_id"] != category_id or e["score"] < image_thre:
                continue
            per_image.setdefault(e["image_id"], []).append((e["bbox"], e["score"]))
        if image_ids is not None:
            known = set(image_ids)
            unknown = sorted({e["image_id"] for e in entries} - known, key=str)
            if unknown:
                raise DataError(f"{self.path}: boxes for {len(unknown)} image id(s) that are not in the split: "
                                f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''} (is this the detection file "
                                f"of another split?)")
        self.boxes = {k: PersonBoxes(np.array([b for b, _ in v], np.float64), np.array([s for _, s in v], np.float64))
                      for k, v in per_image.items()}

    def _read(self) -> list:
        if not self.path.is_file():
            raise DataError(f"person box file not found: {self.path} (TEST.COCO_BBOX_FILE)")
        try:
            with open(self.path, "rb") as f:
                entries = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.path}: not valid JSON ({e}); expected a COCO detection results list") from None
        if not isinstance(entries, list):
            raise DataError(f"{self.path}: the top level is a {type(entries).__name__}, expected a COCO detection "
                            f"results list [{{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}}, ...]")
        return entries

    def _check(self, i: int, e) -> None:
        where = f"{self.path}: entry {i}"
        if not isinstance(e, dict):
            raise DataError(f"{where} is a {type(e).__name__}, expected an object with image_id, category_id, bbox, "
                            f"score")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in e]
        if missing:
            raise DataError(f"{where} ({e}) has no {', '.join(map(repr, missing))}")
        bbox = e["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)) \
                or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{where} (image {e['image_id']}): 'bbox' is {bbox!r}, expected [x, y, w, h], 4 finite "
                            f"numbers with w, h >= 0")
        if not _is_number(e["score"]):
            raise DataError(f"{where} (image {e['image_id']}): 'score' is {e['score']!r}, expected a finite number")

    def __call__(self, image_id, image=None) -> PersonBoxes:
        return self.boxes.get(image_id, PersonBoxes.empty())


# --- a bupose model as the detector ----------------------------------------------------------------------------
class DetectorBoxes:
    """The boxes and scores of the people a bottom-up / one-stage :class:`bupose.Predictor` finds, those below
    ``image_thre`` dropped."""

    def __init__(self, predictor, *, image_thre: float = 0.0):
        self.predictor, self.image_thre = predictor, image_thre

    def __call__(self, image_id, image) -> PersonBoxes:
        if image is None:
            raise DataError("the detector box source needs the image")
        people = self.predictor.people(image)
        keep = np.asarray(people.scores, np.float64) >= self.image_thre
        return PersonBoxes(np.asarray(people.boxes, np.float64).reshape(-1, 4)[keep],
                           np.asarray(people.scores, np.float64)[keep])


def is_topdown_method(cls, name: str) -> bool:
    """Whether a method class (``MODEL.NAME`` ``name``) is top-down, i.e. itself needs person boxes."""
    return hasattr(cls, "box_source") or getattr(cls, "family", None) == "topdown" or name.startswith("topdown")


def build_detector(cfg, device=None):
    """The :class:`bupose.Predictor` of ``TEST.DETECTOR_CFG`` (a bottom-up / one-stage experiment file) with the
    weights ``TEST.DETECTOR_MODEL_FILE``, on ``device`` (default: ``cfg.DEVICE``)."""
    from bupose import build_model, load_checkpoint
    from bupose.config import load_config
    from bupose.inference.predictor import Predictor, resolve_device
    from bupose.methods import method_class

    t = cfg.TEST
    path = Path(t.DETECTOR_CFG)
    if not path.is_file():
        raise ConfigError(f"TEST.DETECTOR_CFG {str(path)!r}: file not found (a bottom-up / one-stage experiment "
                          f"file)")
    det_cfg = load_config(path)
    name = det_cfg.MODEL.NAME
    try:
        cls = method_class(name)
    except ConfigError as e:
        raise ConfigError(f"TEST.DETECTOR_CFG {str(path)!r}: {e}") from None
    if is_topdown_method(cls, name):
        raise ConfigError(f"TEST.DETECTOR_CFG {str(path)!r} is the top-down method {name!r}, which needs boxes "
                          f"itself; the detector must be a bottom-up / one-stage method (e.g. hrnet_dekr, yolo_pose)")
    if not t.DETECTOR_MODEL_FILE:
        raise ConfigError(f"TEST.DETECTOR_CFG {str(path)!r} is set but TEST.DETECTOR_MODEL_FILE is empty: the "
                          f"detector needs its weights")
    model = build_model(det_cfg)
    load_checkpoint(model, t.DETECTOR_MODEL_FILE)
    return Predictor(det_cfg, model, device=resolve_device(cfg.DEVICE) if device is None else device)


def build_box_source(cfg, reader, spec):
    """The box source of ``cfg``: ``TEST.USE_GT_BBOX`` (``reader``'s ground truth), else ``TEST.COCO_BBOX_FILE``
    (checked against ``reader``'s image ids when a reader is given), else ``TEST.DETECTOR_CFG``; ConfigError when
    none is set. ``spec`` (the KeypointSpec) checks the ground truth's keypoint count."""
    t = cfg.TEST
    if t.USE_GT_BBOX:
        if reader is None:
            raise ConfigError("TEST.USE_GT_BBOX needs a dataset split (the boxes come from its annotations); "
                              "pass boxes, or set TEST.COCO_BBOX_FILE or TEST.DETECTOR_CFG")
        return GroundTruthBoxes(coco_dict(reader), getattr(reader, "source", "ground truth"),
                                num_keypoints=spec.num_keypoints if spec is not None else None)
    if t.COCO_BBOX_FILE:
        return DetectionFileBoxes(t.COCO_BBOX_FILE, image_ids=split_image_ids(reader) if reader is not None else None,
                                  image_thre=t.IMAGE_THRE)
    if t.DETECTOR_CFG:
        return DetectorBoxes(build_detector(cfg), image_thre=t.IMAGE_THRE)
    raise ConfigError("a top-down method needs person boxes at test time: set TEST.USE_GT_BBOX True, "
                      "TEST.COCO_BBOX_FILE (a COCO detection results file) or TEST.DETECTOR_CFG with "
                      "TEST.DETECTOR_MODEL_FILE (a bottom-up / one-stage model)")
