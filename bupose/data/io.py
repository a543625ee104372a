"""What the dataset readers share: reading image files and COCO-format JSON files, painting ignore masks, the
per-image annotation record and the index with ``on_error="skip"``.

:mod:`bupose.data.coco_format` and :mod:`bupose.data.yolo_format` both build on this module (and not on each
other). Errors are :class:`~bupose.errors.DataError` naming the file and what was expected.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DataError
from .sample import Sample

logger = logging.getLogger("bupose.data")

#: :func:`read_image` never applies the EXIF orientation tag (COCO-format annotations refer to the stored pixel
#: grid); a reader whose labels refer to the oriented image applies it itself.
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


# --- files ---------------------------------------------------------------------------------------------------
def load_coco_json(path: Path) -> dict:
    """The top level of a COCO-format annotation file, checked to hold 'images' and 'annotations' lists."""
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


# --- ignore masks --------------------------------------------------------------------------------------------
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
