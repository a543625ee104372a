"""The one in-memory form of an annotated image that readers produce and pipelines consume.

Coordinates are pixels of ``image``; pixel centres are at integer coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """An image with all its people.

    Attributes:
        image: ``(H, W, 3)`` uint8, BGR (as OpenCV reads it).
        keypoints: ``(N, K, 3)`` float32: x, y, visibility (0 unlabelled, 1 labelled but occluded, 2 visible).
        boxes: ``(N, 4)`` float32 person boxes, ``xyxy``.
        ignore_mask: ``(H, W)`` uint8, 1 where the image must be ignored by losses (crowd regions and people
            without labelled keypoints), else 0.
        image_id: the dataset's image id.
        file_name: path of the image file.
        areas: ``(N,)`` float32 person areas (segmentation area for COCO; box area * 0.53 where a file has none).
        ann_ids: ``(N,)`` int64 annotation ids.
        crowd_index: CrowdPose's crowd index of the image, or ``None``.
    """

    image: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    ignore_mask: np.ndarray
    image_id: int = 0
    file_name: str = ""
    areas: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    ann_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    crowd_index: float | None = None

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])
