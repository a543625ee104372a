"""Readers for COCO-format keypoint files: COCO, CrowdPose, OCHuman and the synthetic crowds.

A :class:`CocoKeypointDataset` turns one annotation file plus an image folder into :class:`~bupose.data.sample.Sample`
objects: the image (BGR uint8), every person with labelled keypoints ``(N, K, 3)``, their boxes (``xyxy``), areas and
annotation ids, CrowdPose's crowd index, and an ignore mask ``(H, W)`` that is 1 on crowd regions and on people
without labelled keypoints. :func:`dataset_files` maps a dataset name and split to the standard layout under a
``datasets/`` folder (documented in ``datasets/README.md``).

Conventions and choices (the rest of bupose relies on them):

* **Who is a person and who is ignored.** An annotation is *ignored* when ``iscrowd`` is set or its ``num_keypoints``
  field is 0; otherwise it is a *person*. The field is read, never recomputed (in CrowdPose files it counts labelled
  joints among the first 12 only, so people with only head and neck labelled have ``num_keypoints == 0`` and are
  ignored, exactly as the CrowdPose evaluator ignores them). Only where a file has no ``num_keypoints`` field is it
  computed as the number of keypoints with visibility > 0. Ignored annotations are not in ``Sample.keypoints``; they
  are painted into ``Sample.ignore_mask``: their segmentation (polygons, uncompressed RLE or compressed RLE) where
  they have one, else their box (every pixel the box touches).
* **Areas.** ``Sample.areas`` is the annotation's ``area`` field. Where an annotation has none (all of CrowdPose),
  it is ``0.53 * w * h`` of its box, the OKS scale that the CrowdPose evaluator uses.
* **Which images are in the index.** ``min_people=0`` (the default, for evaluation) keeps every image of the file,
  with or without people, in file order, as COCO evaluation does; ``min_people=1`` (for training) keeps the images
  with at least one person with labelled keypoints.
* **Images** are decoded with ``cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION``: the EXIF orientation tag is not
  applied, because COCO-format annotations refer to the stored pixel grid.
* **Bad data.** Errors are :class:`~bupose.errors.DataError` naming the file, the image id / annotation id and what
  was expected. Problems with the file as a whole (missing file, not JSON, no ``images``/``annotations`` list,
  entries without ids, duplicate ids, a keypoint layout that does not match ``spec``) always raise. Annotations are
  validated eagerly at construction (keypoint count ``3*K``, finite numbers, visibility in {0, 1, 2}, a finite box
  with non-negative size, segmentation structure of ignored annotations); images lazily in ``__getitem__`` (missing
  file, undecodable, truncated JPEG/PNG, size different from the file's ``width``/``height``). With
  ``on_error="raise"`` these raise; with ``on_error="skip"`` a warning is logged on the ``bupose.data`` logger and:

  - an image with a bad annotation is dropped from the index at construction (an annotation whose ``image_id``
    names no image is dropped);
  - an image that cannot be used at ``__getitem__`` time is remembered as bad and the next usable index (wrapping
    around) is returned instead, so ``len()`` stays fixed for samplers; the returned sample's ``image_id`` shows
    which image it is. Only if no image is usable does it raise.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..errors import DataError
from .keypoints import KeypointSpec, get_spec
from .synthetic import preset_folder
from .sample import Sample

logger = logging.getLogger("bupose.data")

#: The CrowdPose evaluator's OKS scale for a ground truth without ``area``: ``0.53 * bbox_w * bbox_h``.
CROWDPOSE_AREA_FACTOR = 0.53

_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


@dataclass
class ImageAnnotations:
    """The parsed, validated annotations of one image (no pixels).

    Attributes:
        image_id: the image's id in the file.
        file_name: ``file_name`` as written in the file (relative to the image folder).
        width, height: the image size the file states.
        keypoints: ``(N, K, 3)`` float32, x, y, visibility of the N people with labelled keypoints.
        boxes: ``(N, 4)`` float32, ``xyxy``.
        areas: ``(N,)`` float32 (``area`` field, else ``0.53 * w * h`` of the box).
        ann_ids: ``(N,)`` int64.
        crowd_index: ``images[*].crowdIndex`` (CrowdPose), else ``None``.
        ignored: the raw annotation dicts painted into the ignore mask (crowd regions, people without keypoints).
    """

    image_id: int
    file_name: str
    width: int
    height: int
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    ann_ids: np.ndarray
    crowd_index: float | None = None
    ignored: list[dict] = field(default_factory=list)

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])


class SkippingIndex:
    """Index checks and ``on_error="skip"`` for the readers: a subclass sets ``source`` (what to name in messages),
    ``image_ids``, ``_bad`` (a set) and implements ``load_sample(index)`` and ``__len__``."""

    source: str

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images of {self.source}")
        return index % n

    def _load_or_next(self, index: int) -> Sample:
        """``load_sample(index)``, or the next loadable sample (wrapping around) when it fails; failures are logged
        once and remembered."""
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                sample = self.load_sample(i)
            except DataError as e:
                self._bad.add(i)
                logger.warning("skipping image (index %d): %s", i, e)
                continue
            if i != index:
                logger.warning("%s: index %d (image %s) is unusable; returning index %d (image %s) instead",
                               self.source, index, self.image_ids[index], i, self.image_ids[i])
            return sample
        raise DataError(f"{self.source}: none of the {n} images in the index could be loaded (see the warnings "
                        f"on the 'bupose.data' logger)")


class CocoKeypointDataset(SkippingIndex):
    """A COCO-format keypoint file and its images, as a sequence of :class:`Sample`.

    Args:
        ann_file: the JSON annotation file.
        image_root: folder that ``images[*].file_name`` is relative to.
        spec: the keypoint layout (a :class:`KeypointSpec` or a name for :func:`get_spec`); each annotation must
            have ``3 * spec.num_keypoints`` keypoint values.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring for what skipping does).
        check_image_size: raise/skip when the decoded image's size differs from the file's ``width``/``height``
            (CrowdPose has images with the two swapped). When False, the decoded size is trusted and the ignore
            mask is made at that size.
        min_people: keep only images with at least this many people with labelled keypoints (0: all images).
        transform: optional callable applied to each :class:`Sample` in ``__getitem__``; its result is returned.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` index of the whole file.
        image_ids: the ids of the images in the index, in file order; ``dataset[i]`` is ``image_ids[i]``.
        ann_file, image_root, spec, on_error, check_image_size, min_people, transform: as given.
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path, spec: KeypointSpec | str,
                 on_error: str = "raise", check_image_size: bool = True, min_people: int = 0,
                 transform: Callable[[Sample], Any] | None = None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.ann_file = Path(ann_file)
        self.source = str(self.ann_file)
        self.image_root = Path(image_root)
        self.spec = get_spec(spec) if isinstance(spec, str) else spec
        self.on_error = on_error
        self.check_image_size = bool(check_image_size)
        self.min_people = int(min_people)
        self.transform = transform

        data = _load_coco_json(self.ann_file)
        self._check_categories(data)
        self._check_ids(data)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()

        self._records: list[ImageAnnotations] = []
        self._bad: set[int] = set()
        self._build_index(data)
        self.image_ids: list[int] = [r.image_id for r in self._records]

    # --- construction ------------------------------------------------------------------------------------------
    def _check_categories(self, data: dict) -> None:
        """File-level check: the keypoint categories must have the spec's number of keypoints."""
        self._cat_ids: set | None = None
        cats = data.get("categories") or []
        if not isinstance(cats, list):
            raise DataError(f"{self.ann_file}: 'categories' must be a list, got {type(cats).__name__}")
        kp_cats = [c for c in cats if isinstance(c, dict) and "keypoints" in c]
        if not kp_cats:
            return  # no keypoint categories declared: every annotation is a person
        self._cat_ids = {c.get("id") for c in kp_cats}
        for c in kp_cats:
            names = tuple(c["keypoints"])
            if len(names) != self.spec.num_keypoints:
                raise DataError(
                    f"{self.ann_file}: category {c.get('id')} ({c.get('name')!r}) declares {len(names)} keypoints, "
                    f"expected {self.spec.num_keypoints} for keypoint layout {self.spec.name!r} "
                    f"({', '.join(self.spec.names)}); is this the right spec for this file?")
            if names != self.spec.names:
                logger.warning("%s: category %s keypoint names %s differ from layout %r names %s; assuming the "
                               "same order", self.ann_file, c.get("id"), list(names), self.spec.name,
                               list(self.spec.names))

    def _check_ids(self, data: dict) -> None:
        """File-level check: every image and annotation has an id, ids are unique, annotations name an image."""
        seen: set = set()
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img:
                raise DataError(f"{self.ann_file}: images[{i}] has no 'id' (expected an object with id, file_name, "
                                f"width, height)")
            if img["id"] in seen:
                raise DataError(f"{self.ann_file}: image id {img['id']} appears more than once in 'images'")
            seen.add(img["id"])
        ann_seen: set = set()
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann:
                raise DataError(f"{self.ann_file}: annotations[{i}] has no 'id' or no 'image_id' (expected an object "
                                f"with id, image_id, keypoints, bbox)")
            if ann["id"] in ann_seen:
                raise DataError(f"{self.ann_file}: annotation id {ann['id']} appears more than once")
            ann_seen.add(ann["id"])
        orphans = [a for a in data["annotations"] if a["image_id"] not in seen]
        if orphans:
            a = orphans[0]
            msg = (f"{self.ann_file}: annotation {a['id']} refers to image id {a['image_id']}, which is not in "
                   f"'images' ({len(orphans)} such annotation(s))")
            if self.on_error == "raise":
                raise DataError(msg)
            logger.warning("%s; ignoring them", msg)

    def _build_index(self, data: dict) -> None:
        dropped = 0
        for img in data["images"]:
            try:
                record = self._parse_image(img)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping image: %s", e)
                dropped += 1
                continue
            if record.num_people >= self.min_people:
                self._records.append(record)
        if dropped:
            logger.warning("%s: dropped %d of %d images with bad annotations", self.ann_file, dropped,
                           len(data["images"]))

    def _parse_image(self, img: dict) -> ImageAnnotations:
        image_id = img["id"]
        where = f"{self.ann_file}: image {image_id}"
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DataError(f"{where}: 'file_name' is {file_name!r}, expected a non-empty string")
        width, height = img.get("width"), img.get("height")
        for key, v in (("width", width), ("height", height)):
            if not _is_number(v) or not math.isfinite(v) or v <= 0 or v != int(v):
                raise DataError(f"{where}: '{key}' is {v!r}, expected a positive integer")
        crowd_index = img.get("crowdIndex")
        if crowd_index is not None:
            if not _is_number(crowd_index) or not math.isfinite(crowd_index):
                raise DataError(f"{where}: 'crowdIndex' is {crowd_index!r}, expected a finite number")
            crowd_index = float(crowd_index)

        k = self.spec.num_keypoints
        kps, boxes, areas, ids, ignored = [], [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self._cat_ids is not None and ann.get("category_id") not in self._cat_ids:
                continue
            person = self._parse_annotation(ann, f"{where}, annotation {ann['id']}")
            if person is None:
                ignored.append(ann)
                continue
            kp, box, area = person
            kps.append(kp)
            boxes.append(box)
            areas.append(area)
            ids.append(ann["id"])
        return ImageAnnotations(
            image_id=image_id, file_name=file_name, width=int(width), height=int(height),
            keypoints=np.asarray(kps, np.float32).reshape(-1, k, 3),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            areas=np.asarray(areas, np.float32).reshape(-1),
            ann_ids=np.asarray(ids, np.int64).reshape(-1),
            crowd_index=crowd_index, ignored=ignored)

    def _parse_annotation(self, ann: dict, where: str):
        """Validate one annotation; return ``(keypoints (K, 3), box xyxy, area)`` for a person, None if ignored."""
        k = self.spec.num_keypoints
        crowd = bool(ann.get("iscrowd", 0))

        bbox = _float_array(ann.get("bbox"), "bbox", where)
        if bbox.shape != (4,):
            raise DataError(f"{where}: 'bbox' has {bbox.size} values, expected 4 (x, y, w, h)")
        if not np.isfinite(bbox).all():
            raise DataError(f"{where}: 'bbox' {ann.get('bbox')} has non-finite values, expected 4 finite numbers")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{where}: 'bbox' {ann.get('bbox')} has negative width or height")

        kp = None
        if ann.get("keypoints") is not None:
            kp = _float_array(ann["keypoints"], "keypoints", where)
            if kp.shape != (3 * k,):
                raise DataError(f"{where}: 'keypoints' has {kp.size} values, expected {3 * k} (x, y, visibility for "
                                f"each of the {k} keypoints of layout {self.spec.name!r})")
            if not np.isfinite(kp).all():
                bad = int(np.flatnonzero(~np.isfinite(kp))[0])
                raise DataError(f"{where}: 'keypoints' has a non-finite value at position {bad} "
                                f"(keypoint {bad // 3}), expected finite numbers")
            kp = kp.reshape(k, 3)
            vis = kp[:, 2]
            if not ((vis == 0) | (vis == 1) | (vis == 2)).all():
                raise DataError(f"{where}: keypoint visibilities {kp[:, 2].tolist()} must each be 0, 1 or 2")
        elif not crowd:
            raise DataError(f"{where}: no 'keypoints' field (expected {3 * k} numbers for layout "
                            f"{self.spec.name!r})")

        num_kp = ann.get("num_keypoints")
        if num_kp is None:
            num_kp = int((kp[:, 2] > 0).sum()) if kp is not None else 0
        elif not _is_number(num_kp) or not math.isfinite(num_kp) or num_kp < 0 or num_kp != int(num_kp):
            raise DataError(f"{where}: 'num_keypoints' is {num_kp!r}, expected a non-negative integer")

        if crowd or num_kp == 0:
            _check_segmentation(ann.get("segmentation"), where)
            return None
        if not (kp[:, 2] > 0).any():
            raise DataError(f"{where}: 'num_keypoints' is {num_kp} but no keypoint has visibility > 0")

        area = ann.get("area")
        if area is None:
            area = CROWDPOSE_AREA_FACTOR * float(bbox[2]) * float(bbox[3])
        elif not _is_number(area) or not math.isfinite(area) or area < 0:
            raise DataError(f"{where}: 'area' is {area!r}, expected a finite non-negative number")
        box = np.array([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]])
        return kp, box, float(area)

    # --- access ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int):
        index = self._check_index(index)
        if self.on_error == "raise":
            sample = self.load_sample(index)
        else:
            sample = self._load_or_next(index)
        return self.transform(sample) if self.transform is not None else sample

    def get_annotations(self, index: int) -> ImageAnnotations:
        """The validated annotations of ``dataset[index]``, without reading the image."""
        return self._records[self._check_index(index)]

    def image_path(self, index: int) -> Path:
        return self.image_root / self._records[self._check_index(index)].file_name

    def load_image(self, index: int) -> np.ndarray:
        """Read and check the image of ``dataset[index]``: ``(H, W, 3)`` uint8 BGR. Raises :class:`DataError`."""
        rec = self._records[self._check_index(index)]
        where = f"{self.ann_file}: image {rec.image_id} ({rec.file_name!r})"
        image = read_image(self.image_root / rec.file_name, where)
        h, w = image.shape[:2]
        if self.check_image_size and (h, w) != (rec.height, rec.width):
            hint = (" (width and height swapped, a known quirk of the CrowdPose files; pass "
                    "check_image_size=False to trust the image)") if (h, w) == (rec.width, rec.height) else ""
            raise DataError(f"{where}: the image is {w}x{h} (width x height) but the annotation file says "
                            f"width={rec.width}, height={rec.height}{hint}")
        return image

    def get_ignore_mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """The ignore mask of ``dataset[index]``: ``(H, W)`` uint8, 1 on crowd regions and on people without
        labelled keypoints. ``size`` is ``(H, W)``; by default the size the file states (no image is read)."""
        rec = self._records[self._check_index(index)]
        h, w = size if size is not None else (rec.height, rec.width)
        return ignore_mask(rec.ignored, h, w, f"{self.ann_file}: image {rec.image_id}")

    def load_sample(self, index: int) -> Sample:
        """``dataset[index]`` without the skip strategy or transform: raises :class:`DataError` on a bad image."""
        rec = self.get_annotations(index)
        image = self.load_image(index)
        return Sample(
            image=image,
            keypoints=rec.keypoints.copy(),
            boxes=rec.boxes.copy(),
            ignore_mask=self.get_ignore_mask(index, image.shape[:2]),
            image_id=rec.image_id,
            file_name=str(self.image_root / rec.file_name),
            areas=rec.areas.copy(),
            ann_ids=rec.ann_ids.copy(),
            crowd_index=rec.crowd_index,
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.ann_file)!r}, images={len(self)}, spec={self.spec.name!r}, "
                f"on_error={self.on_error!r})")


# --- helpers ---------------------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float_array(value, key: str, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: '{key}' is {type(value).__name__}, expected a list of numbers")
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)  # None -> nan, caught by the finiteness checks
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' is not a flat list of numbers: {str(value)[:80]}") from None


def _load_coco_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO-format annotation file: the top level is a {type(data).__name__}, "
                        f"expected an object with 'images' and 'annotations' lists")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{path}: not a COCO-format annotation file: missing key {key!r} (expected top-level "
                            f"keys 'images', 'annotations' and 'categories'; found {sorted(data)})")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} is a {type(data[key]).__name__}, expected a list")
    return data


def _check_segmentation(seg, where: str) -> None:
    """Structure of an ignored annotation's segmentation: None/[] (box used), polygons, or an RLE dict."""
    if seg is None or (isinstance(seg, list) and not seg):
        return
    if isinstance(seg, list):
        for poly in seg:
            arr = _float_array(poly, "segmentation", where)
            if arr.size % 2 or not np.isfinite(arr).all():
                raise DataError(f"{where}: a segmentation polygon has {arr.size} values or non-finite values, "
                                f"expected an even number of finite coordinates x1, y1, x2, y2, ...")
        return
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_number(s) for s in size)
                or not isinstance(counts, (list, str, bytes))):
            raise DataError(f"{where}: RLE segmentation must have 'size' [height, width] and 'counts' (a list of "
                            f"run lengths or a compressed string)")
        return
    raise DataError(f"{where}: 'segmentation' is a {type(seg).__name__}, expected polygons (list) or RLE (dict)")


def _region_mask(ann: dict, height: int, width: int, where: str) -> np.ndarray:
    """Pixels of one ignored annotation: its segmentation where it has one, else every pixel its box touches."""
    seg = ann.get("segmentation")
    where = f"{where}, annotation {ann.get('id')}" if where else f"annotation {ann.get('id')}"
    if isinstance(seg, dict):
        if [int(s) for s in seg["size"]] != [height, width]:
            raise DataError(f"{where}: RLE segmentation size {list(seg['size'])} differs from the image size "
                            f"[{height}, {width}] (height, width)")
        try:
            if isinstance(seg["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, height, width)
            else:  # compressed RLE
                counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
                rle = {"size": [height, width], "counts": counts}
            return mask_utils.decode(rle).astype(bool)
        except Exception as e:  # pycocotools raises assorted errors on malformed RLE
            raise DataError(f"{where}: RLE segmentation cannot be decoded ({e})") from None
    polys = [p for p in seg if len(p) >= 6] if isinstance(seg, list) else []
    if polys:
        rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    x, y, w, h = (float(v) for v in ann["bbox"])
    m = np.zeros((height, width), bool)
    x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
    x1, y1 = min(math.ceil(x + w), width), min(math.ceil(y + h), height)
    if x1 > x0 and y1 > y0:
        m[y0:y1, x0:x1] = True
    return m


def ignore_mask(annotations: list[dict], height: int, width: int, where: str = "") -> np.ndarray:
    """Paint annotations (crowd regions, people without keypoints) into an ``(height, width)`` uint8 0/1 mask.

    Each annotation contributes its ``segmentation`` (polygon list, uncompressed RLE with a ``counts`` list, or
    compressed RLE with a ``counts`` string), or, where it has none, every pixel its ``bbox`` (x, y, w, h) touches.
    """
    mask = np.zeros((height, width), np.uint8)
    for ann in annotations:
        mask[_region_mask(ann, height, width, where)] = 1
    return mask


# Inside JPEG entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a restart marker 0xD0-0xD7 or a fill
# 0xFF; anything else is the next marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_file_problem(data: bytes) -> str | None:
    """Why the bytes of a JPEG or PNG file are incomplete, or None. Other formats are left to the decoder.

    OpenCV can decode a truncated JPEG without an error, filling the missing part with grey; so the JPEG marker
    structure is walked explicitly (segments by their lengths, entropy-coded data up to the next marker) and the
    end-of-image marker must be reached. Bytes after it are allowed.
    """
    if data.startswith(_PNG_SIGNATURE):
        return None if data.rfind(b"IEND") >= len(_PNG_SIGNATURE) else "PNG without its IEND chunk (truncated)"
    if not data.startswith(b"\xff\xd8"):
        return None
    n, pos = len(data), 2
    while True:
        pos = data.find(b"\xff", pos)  # libjpeg also tolerates stray bytes between segments
        while 0 <= pos < n - 1 and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos < 0 or pos >= n - 1:
            return "JPEG ends before its end-of-image marker (truncated)"
        marker = data[pos + 1]
        if marker == 0xD9:
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        if pos + 4 > n:
            return "JPEG ends inside a segment header (truncated)"
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > n:
            return "JPEG ends inside a segment (truncated)"
        if end < pos + 4:
            return f"JPEG segment with an invalid length at byte {pos}"
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            m = _JPEG_MARKER.search(data, end)
            if m is None:
                return "JPEG ends inside the image data (truncated)"
            pos = m.start()
        else:
            pos = end


def read_image(path: str | Path, where: str = "") -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 BGR (EXIF orientation not applied), checking it is complete.

    Raises :class:`DataError` (prefixed with ``where``) when the file is missing, unreadable, truncated or
    undecodable.
    """
    path = Path(path)
    prefix = f"{where}: " if where else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{prefix}image file not found: {path}") from None
    except OSError as e:
        raise DataError(f"{prefix}cannot read image file {path} ({e})") from None
    if not data:
        raise DataError(f"{prefix}image file {path} is empty")
    problem = image_file_problem(data)
    if problem:
        raise DataError(f"{prefix}corrupt image file {path}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    if image is None:
        raise DataError(f"{prefix}image file {path} cannot be decoded (not an image format OpenCV reads, or corrupt)")
    return image


# --- standard layouts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetLayout:
    """Where a dataset's files live under the datasets root: ``splits[split] = (annotation file, image folder)``,
    both relative to the root, and the name of its keypoint layout. ``synthetic`` is ``(folder, generator preset)``
    for the datasets that bupose generates (:mod:`bupose.data.synthetic`), else None."""

    name: str
    spec: str
    splits: dict[str, tuple[str, str]]
    synthetic: tuple[str, str] | None = None


def _synthetic(layout: str, preset: str = "crowds") -> DatasetLayout:
    folder = preset_folder(preset)
    return DatasetLayout(f"{folder}_{layout}", layout, {
        s: (f"{folder}/annotations/{layout}_{s}.json", f"{folder}/images/{s}") for s in ("train", "val")},
        synthetic=(folder, preset))


DATASET_LAYOUTS: dict[str, DatasetLayout] = {
    "coco": DatasetLayout("coco", "coco", {
        s: (f"coco/annotations/person_keypoints_{s}2017.json", f"coco/images/{s}2017") for s in ("train", "val")}),
    "crowdpose": DatasetLayout("crowdpose", "crowdpose", {
        s: (f"crowdpose/json/crowdpose_{s}.json", "crowdpose/images") for s in ("train", "val", "trainval", "test")}),
    "ochuman": DatasetLayout("ochuman", "ochuman", {
        s: (f"ochuman/ochuman_coco_format_{s}_range_0.00_1.00.json", "ochuman/images") for s in ("val", "test")}),
    "synthetic_crowdpose": _synthetic("crowdpose"),
    "synthetic_coco": _synthetic("coco"),
    "synthetic_simple_crowdpose": _synthetic("crowdpose", "simple"),
    "synthetic_simple_coco": _synthetic("coco", "simple"),
}
_SPLIT_ALIASES = {"train2017": "train", "val2017": "val"}


def _layout(name: str) -> DatasetLayout:
    try:
        return DATASET_LAYOUTS[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(DATASET_LAYOUTS) + ['yolo']}") from None


def dataset_files(name: str, root: str | Path = "datasets", split: str = "val",
                  check: bool = True) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of a dataset split in the standard layout under ``root``.

    Names: ``coco`` (train, val), ``crowdpose`` (train, val, trainval, test), ``ochuman`` (val, test),
    ``synthetic_crowdpose`` and ``synthetic_coco`` (train, val); see ``datasets/README.md``. With ``check``, a
    missing file or folder raises :class:`DataError` naming the expected path.

    ``yolo`` (an Ultralytics YOLO-pose dataset, :mod:`bupose.data.yolo_format`): ``root`` is the data YAML and the
    result is ``(data YAML, the split's image folder or list file)``; ``check`` also reads the YAML and checks that
    it has the split.
    """
    if name.lower() == "yolo":
        from .yolo_format import yolo_dataset_files

        return yolo_dataset_files(root, split, check)
    layout = _layout(name)
    key = _SPLIT_ALIASES.get(split, split)
    if key not in layout.splits:
        raise DataError(f"dataset {layout.name!r} has no split {split!r}; splits: {list(layout.splits)}")
    ann_rel, img_rel = layout.splits[key]
    root = Path(root)
    ann_file, image_root = root / ann_rel, root / img_rel
    if check:
        for path, what, ok in ((ann_file, "annotation file", ann_file.is_file()),
                               (image_root, "image folder", image_root.is_dir())):
            if not ok:
                raise DataError(f"dataset {layout.name!r} split {key!r}: {what} not found at {path}\n"
                                f"expected layout under {root}:\n  {ann_rel}\n  {img_rel}/<file_name>\n"
                                f"(see datasets/README.md for where the files come from)")
    return ann_file, image_root


def dataset_spec(name: str, root: str | Path | None = None) -> KeypointSpec:
    """The keypoint layout of a dataset name of :data:`DATASET_LAYOUTS` (``root`` is not needed), or, for
    ``yolo``, the layout that the data YAML ``root`` declares."""
    if name.lower() == "yolo":
        from .yolo_format import yolo_spec

        return yolo_spec(root)
    return get_spec(_layout(name).spec)


def build_dataset(name: str, root: str | Path = "datasets", split: str = "val", **kwargs):
    """:class:`CocoKeypointDataset` for a dataset split in the standard layout; ``kwargs`` go to the constructor.

    For ``yolo``, ``root`` is the data YAML and the reader is a :class:`~bupose.data.yolo_format.YoloPoseDataset`
    (same interface; ``kwargs``: ``on_error``, ``min_people``, ``transform``, ``area_factor``).
    """
    if name.lower() == "yolo":
        from .yolo_format import YoloPoseDataset

        return YoloPoseDataset(root, split, **kwargs)
    ann_file, image_root = dataset_files(name, root, split)
    kwargs.setdefault("spec", dataset_spec(name))
    return CocoKeypointDataset(ann_file, image_root, **kwargs)
