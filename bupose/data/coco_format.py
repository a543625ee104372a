"""Readers for COCO-format keypoint files: COCO, CrowdPose, OCHuman and the synthetic crowds.

A :class:`CocoKeypointDataset` turns one annotation file plus an image folder into :class:`~bupose.data.sample.Sample`
objects: the image (BGR uint8), every person with labelled keypoints ``(N, K, 3)``, their boxes (``xyxy``), areas and
annotation ids, CrowdPose's crowd index, and an ignore mask ``(H, W)`` that is 1 on crowd regions and on people
without labelled keypoints. Which file and folder a dataset name and split stand for is the catalogue's business
(:mod:`bupose.data.catalogue`, :func:`bupose.data.build.build_dataset`), not this module's.

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
* **Images** are read with :func:`bupose.data.io.read_image`: the EXIF orientation tag is not applied, because
  COCO-format annotations refer to the stored pixel grid.
* **Bad data.** Errors are :class:`~bupose.errors.DataError` naming the file, the image id / annotation id and what
  was expected. Problems with the file as a whole (missing file, not JSON, no ``images``/``annotations`` list,
  entries without ids, duplicate ids, a keypoint layout that does not match ``spec``: another number of keypoints,
  or the layout's names in another order unless ``allow_keypoint_order``) always raise. Annotations are
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
import logging
import math
from io import StringIO
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools.coco import COCO

from ..errors import DataError
from .io import ImageAnnotations, SkippingIndex, ignore_mask, load_coco_json, read_image
from .keypoints import KeypointSpec, get_spec
from .sample import Sample

logger = logging.getLogger("bupose.data")

#: The CrowdPose evaluator's OKS scale for a ground truth without ``area``: ``0.53 * bbox_w * bbox_h``.
CROWDPOSE_AREA_FACTOR = 0.53


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
        allow_keypoint_order: accept a keypoint category that lists the layout's names in another order (e.g.
            ``left_shoulder`` and ``right_shoulder`` exchanged) and read the values in the layout's order anyway,
            with a warning. By default that is a DataError: the labels would be read swapped.
        transform: optional callable applied to each :class:`Sample` in ``__getitem__``; its result is returned.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` index of the whole file.
        image_ids: the ids of the images in the index, in file order; ``dataset[i]`` is ``image_ids[i]``.
        ann_file, image_root, spec, on_error, check_image_size, min_people, allow_keypoint_order, transform: as
            given.
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path, spec: KeypointSpec | str,
                 on_error: str = "raise", check_image_size: bool = True, min_people: int = 0,
                 transform: Callable[[Sample], Any] | None = None, allow_keypoint_order: bool = False):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.ann_file = Path(ann_file)
        self.source = str(self.ann_file)
        self.image_root = Path(image_root)
        self.spec = get_spec(spec) if isinstance(spec, str) else spec
        self.on_error = on_error
        self.check_image_size = bool(check_image_size)
        self.min_people = int(min_people)
        self.allow_keypoint_order = bool(allow_keypoint_order)
        self.transform = transform

        data = load_coco_json(self.ann_file)
        self._check_categories(data)
        self._check_ids(data)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(StringIO()):  # pycocotools prints progress
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
            if not isinstance(c["keypoints"], list) or not all(isinstance(n, str) for n in c["keypoints"]):
                raise DataError(f"{self.ann_file}: category {c.get('id')} 'keypoints' is {c['keypoints']!r}, "
                                f"expected a list of keypoint names")
            names = tuple(c["keypoints"])
            if len(names) != self.spec.num_keypoints:
                raise DataError(
                    f"{self.ann_file}: category {c.get('id')} ({c.get('name')!r}) declares {len(names)} keypoints, "
                    f"expected {self.spec.num_keypoints} for keypoint layout {self.spec.name!r} "
                    f"({', '.join(self.spec.names)}); is this the right spec for this file?")
            moved = _moved_names(names, self.spec.names)
            if moved and not self.allow_keypoint_order:
                where = ", ".join(f"{n!r} at index {i} (layout: {j})" for n, i, j in moved)
                raise DataError(
                    f"{self.ann_file}: category {c.get('id')} ({c.get('name')!r}) lists the keypoint names of layout "
                    f"{self.spec.name!r} in another order: {where}; the annotations would be read with these labels "
                    f"swapped. Fix the file's categories[].keypoints, or, if the keypoint values do follow the "
                    f"layout's order, set DATASET.ALLOW_KEYPOINT_ORDER True (reader: allow_keypoint_order=True)")
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
def _moved_names(names: tuple[str, ...], layout: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """``(name, index in names, index in layout)`` of the layout's names that ``names`` lists at another index."""
    return [(n, i, layout.index(n)) for i, n in enumerate(names) if n in layout and layout.index(n) != i]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float_array(value, key: str, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: '{key}' is {type(value).__name__}, expected a list of numbers")
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)  # None -> nan, caught by the finiteness checks
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' is not a flat list of numbers: {str(value)[:80]}") from None


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
